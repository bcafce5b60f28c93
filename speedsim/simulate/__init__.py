"""One decode on one device: SPEED and its baselines driven by exit traces (torch-free)."""

from speedsim.simulate.core import first_exit_miss, simulate, step_points, summarise
from speedsim.simulate.phases import BASELINES, Phase, build_phases, check_fits
from speedsim.simulate.result import MethodResult, ScheduleSummary, SimulationResult
from speedsim.simulate.scenario import Scenario, build_scenario, run_scenario
from speedsim.trace.workload import parse_synthetic, synthetic_traces

__all__ = [
    "BASELINES",
    "MethodResult",
    "Phase",
    "Scenario",
    "ScheduleSummary",
    "SimulationResult",
    "build_phases",
    "build_scenario",
    "check_fits",
    "first_exit_miss",
    "parse_synthetic",
    "run_scenario",
    "simulate",
    "step_points",
    "summarise",
    "synthetic_traces",
]
