"""One simulation run from names: the command line and sweeps build their runs here.

`build_scenario` resolves a profile, a model, a sharing and a workload (an exit-trace file or a
`--synthetic` text) into loaded, checked inputs; `run_scenario` simulates them. Loads are
cached per process (sweeps run many scenarios over the same files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from speedsim.errors import UserError
from speedsim.hardware import load_profile
from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline import Policy
from speedsim.sharing import Sharing
from speedsim.simulate.core import MODES, simulate
from speedsim.simulate.phases import BASELINES
from speedsim.simulate.result import SimulationResult
from speedsim.trace.io import read_traces, resolve_trace
from speedsim.trace.schema import ExitTrace
from speedsim.trace.synthetic import synthetic_traces
from speedsim.workload import get_model, resolve_models
from speedsim.workload.models import ModelSpec


@dataclass(frozen=True)
class Scenario:
    """Everything one simulation needs, loaded and checked."""

    profile: HardwareProfile
    spec: ModelSpec
    sharing: Sharing
    traces: tuple[ExitTrace, ...]
    workload: str                   # trace:PATH or synthetic:TEXT
    mode: str = "graph"
    baselines: tuple[str, ...] = BASELINES
    policy: Policy | None = None
    src_len: int | None = None      # source length override (None: each trace's own)
    device_control: bool = False    # what-if: the controller runs on the device (no host round trip)
    bounds: bool = False            # also run the profile's ranges at both ends


@lru_cache(maxsize=32)
def cached_profile(name: str) -> HardwareProfile:
    return load_profile(name)


@lru_cache(maxsize=16)
def cached_models(spec_files: tuple[str, ...]) -> dict[str, ModelSpec]:
    return resolve_models([Path(p) for p in spec_files])


@lru_cache(maxsize=16)
def cached_traces(path: str) -> tuple[ExitTrace, ...]:
    return tuple(read_traces(path))


@lru_cache(maxsize=256)
def cached_synthetic(text: str, repeats: int) -> tuple[ExitTrace, ...]:
    return tuple(synthetic_traces(text, repeats))


def build_scenario(profile: str, model: str, sharing: str | Sharing, *, trace: Path | str | None = None,
                   synthetic: str | None = None, limit: int | None = None, mode: str = "graph",
                   baselines: Sequence[str] = BASELINES, launch_exit: int = 0, max_in_flight: int | None = None,
                   src_len: int | None = None, model_specs: Sequence[Path | str] = (),
                   device_control: bool = False, bounds: bool = False) -> Scenario:
    """Load and check one run's inputs; a `UserError` naming the flag for anything off."""
    shared = sharing if isinstance(sharing, Sharing) else Sharing.parse(sharing)
    if (trace is None) == (synthetic is None):
        raise UserError("give exactly one of --trace FILE or --synthetic SPEC", where="--trace/--synthetic")
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}' (known: {', '.join(MODES)})", where="--mode")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(BASELINES)})",
                        where="--baseline")
    hw = cached_profile(profile)
    spec = get_model(model, cached_models(tuple(str(p) for p in model_specs)))
    if trace is not None:
        traces = cached_traces(str(resolve_trace(trace)))
        workload = f"trace:{trace}"
    else:
        traces = cached_synthetic(synthetic or "", shared.repeats)
        workload = f"synthetic:{synthetic}"
    if limit:
        traces = traces[:limit]
    policy = Policy(launch_exit=launch_exit, max_in_flight=max_in_flight)
    if launch_exit >= shared.repeats:  # named by its flag here (Policy.check names the field)
        raise UserError(f"{launch_exit} is not an exit of an R={shared.repeats} model (exits 0..{shared.repeats - 1})",
                        where="--launch-exit")
    policy.check(shared.repeats)
    return Scenario(hw, spec, shared, traces, workload, mode, tuple(baselines), policy, src_len, device_control,
                    bounds)


def run_scenario(s: Scenario, timeline: Path | None = None) -> SimulationResult:
    """Simulate a scenario."""
    return simulate(s.profile, s.spec, s.sharing, list(s.traces), s.mode, s.baselines, s.policy, s.src_len,
                    timeline, device_control=s.device_control, bounds=s.bounds)
