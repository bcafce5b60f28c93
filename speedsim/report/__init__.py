"""Tables, plots and the markdown report."""
