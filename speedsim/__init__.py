"""speedsim: SPEED decoding (Hooper et al. 2023, arXiv 2310.12072), functional and simulated."""

__version__ = "0.1.0"
