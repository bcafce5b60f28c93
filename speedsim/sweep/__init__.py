"""Sweeps: declarative specs (`spec`), one run (`execute`), the results table (`store`), execution (`runner`)."""

from speedsim.sweep.runner import SweepSummary, run_sweep
from speedsim.sweep.spec import RunParams, SweepSpec, load_spec, plan
from speedsim.sweep.store import ResultStore, read_results

__all__ = ["ResultStore", "RunParams", "SweepSpec", "SweepSummary", "load_spec", "plan", "read_results",
           "run_sweep"]
