"""The typed run model: what one simulation or serving run is, declared once for the CLI, sweeps and the report."""

from speedsim.run.checks import check_decodable, check_trace_file, check_trace_repeats
from speedsim.run.options import serve_run, simulate_run
from speedsim.run.params import RunParams, TraceWorkload, run_from_options
from speedsim.trace.workload import SyntheticWorkload

__all__ = ["RunParams", "SyntheticWorkload", "TraceWorkload", "check_decodable",
           "check_trace_file", "check_trace_repeats", "run_from_options", "serve_run", "simulate_run"]
