"""Exit traces: schema, JSON Lines I/O, synthetic generators and statistics."""

from speedsim.trace.io import iter_traces, read_traces, write_traces
from speedsim.trace.schema import TRACE_VERSION, ExitTrace
from speedsim.trace.stats import exit_agreement, length_stats, trace_schedule_stats, trace_stats
from speedsim.trace.synthetic import SyntheticSpec, fit, generate, settle_exit

__all__ = [
    "TRACE_VERSION",
    "ExitTrace",
    "SyntheticSpec",
    "exit_agreement",
    "fit",
    "generate",
    "iter_traces",
    "length_stats",
    "read_traces",
    "settle_exit",
    "trace_schedule_stats",
    "trace_stats",
    "write_traces",
]
