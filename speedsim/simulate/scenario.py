"""One simulation run from its typed parameters: the command line and sweeps build their runs here.

`build_scenario` resolves a `RunParams` (a profile, a model, a sharing, a workload: an exit-trace
file or synthetic traces) into loaded, checked inputs; `run_scenario` simulates them. Loads are
cached per process (sweeps run many scenarios over the same files).

A run's paths (its profile, trace, fitted trace, model specs) are checked as they are loaded, and a
malformed, unusable or absent one is a `UserError` naming its `Sources` entry: the command line's flag
(`COMMAND_LINE`), or, for a sweep's run, the path itself (the sweep's check names the spec's key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from speedsim.engine import check_profile, open_profile
from speedsim.errors import UserError
from speedsim.hardware.files import SET_FLAG, whatif_checked
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, overrides_dict
from speedsim.pipeline import Policy
from speedsim.pipeline.speculation import AcceptanceModel, self_spec_matches
from speedsim.run import RunParams, SyntheticWorkload, TraceWorkload
from speedsim.sharing import Sharing
from speedsim.simulate.core import simulate
from speedsim.simulate.result import SimulationResult
from speedsim.simulate.speculative import Speculation, check_draft_trace, check_speculation
from speedsim.trace.io import read_traces, resolve_trace
from speedsim.trace.schema import ExitTrace
from speedsim.trace.workload import FIT_WHERE
from speedsim.workload import get_model, resolve_models
from speedsim.workload.models import ModelSpec, check_devices, shard, staged, with_precision


@dataclass(frozen=True)
class Sources:
    """Where a run's input paths came from, as messages name them: a flag, or None for a path that names
    itself (a sweep's run). The profile is always `--profile` (a sweep's check names its key instead)."""

    trace: str | None = None         # the run's `trace`
    fit: str | None = None           # the run's `fit` (a synthetic workload's fitted trace)
    model_specs: str | None = None   # each of the model spec files
    draft_trace: str | None = None   # the run's `draft_trace` (specdec)
    draft_fit: str | None = None     # the run's `draft_fit` (specdec)


COMMAND_LINE = Sources(trace="--trace", fit=FIT_WHERE, model_specs="--model-spec", draft_trace="--draft-trace",
                       draft_fit="--draft-fit")
NAMED_BY_PATH = Sources()  # a sweep's run: each path names itself


@dataclass(frozen=True)
class Scenario:
    """Everything one simulation needs, loaded and checked."""

    run: RunParams
    profile: HardwareProfile
    spec: ModelSpec
    sharing: Sharing
    traces: tuple[ExitTrace, ...]
    policy: Policy
    src_len: int | None = None      # source length override of a trace's sequences (None: each one's own)
    overrides: tuple[Override, ...] = ()  # the what-ifs set on the profile (`run.overrides`, resolved)
    speculative: tuple[Speculation, ...] = ()  # speculative methods beside SPEED (`run.methods`)


Settings = tuple[tuple[str, str], ...]  # a run's `overrides`: (PATH, VALUE as given)


@lru_cache(maxsize=32)
def cached_profile(name: str) -> HardwareProfile:
    """The profile `name` (a name or YAML path) as `speedsim.engine.open_profile` loads and checks it."""
    return open_profile(name)


def cached_whatif(name: str, settings: Settings = ()) -> tuple[HardwareProfile, tuple[Override, ...]]:
    """A run's profile: `name` (`cached_profile`) with the what-if `settings` applied, and the overrides made.
    The changed profile is validated and checked by the engine's cost model as a loaded one
    (`speedsim.hardware.files.whatif_checked`, as `load_whatif` does); a bad setting is a `UserError` at
    `--set`. Without settings: the profile as loaded, no overrides."""
    if not settings:
        return cached_profile(name), ()
    return _whatif(name, settings)


@lru_cache(maxsize=256)
def _whatif(name: str, settings: Settings) -> tuple[HardwareProfile, tuple[Override, ...]]:
    return whatif_checked(cached_profile(name), [f"{path}={value}" for path, value in settings], check_profile,
                          SET_FLAG)


@lru_cache(maxsize=16)
def cached_models(spec_files: tuple[str, ...], where: str | None = None) -> dict[str, ModelSpec]:
    return resolve_models(spec_files, where)


@lru_cache(maxsize=16)
def cached_traces(path: str, where: str | None = None) -> tuple[ExitTrace, ...]:
    return tuple(read_traces(path, where))


@lru_cache(maxsize=256)
def cached_synthetic(workload: SyntheticWorkload, repeats: int,
                     fit_where: str | None = None) -> tuple[ExitTrace, ...]:
    return tuple(workload.traces(repeats, fit_where))


def run_workload(run: RunParams, repeats: int, base_dir: str | Path, sources: Sources
                 ) -> TraceWorkload | SyntheticWorkload:
    """`run.workload(repeats, base_dir)`, its trace's path checked first where it came from (`sources.trace`):
    a malformed one, or an operating-system error on it, names that source."""
    if run.trace is not None:
        resolve_trace(run.trace, base_dir, sources.trace)
    return run.workload(repeats, base_dir)


def build_scenario(run: RunParams, base_dir: str | Path = "", model_specs: Sequence[Path | str] = (),
                   sources: Sources = NAMED_BY_PATH) -> Scenario:
    """Load and check one run's inputs; a `UserError` naming the flag for anything off. `base_dir`:
    the directory relative trace paths are read from (a sweep spec's); `sources`: where the paths came
    from (`COMMAND_LINE` for simulate's flags)."""
    sharing = Sharing.parse(run.sharing)
    hw, overrides = cached_whatif(run.profile, run.overrides)
    spec = deployed(get_model(run.model, cached_models(tuple(str(p) for p in model_specs), sources.model_specs)),
                    run, hw)
    workload = run_workload(run, sharing.repeats, base_dir, sources)
    if isinstance(workload, TraceWorkload):
        traces = cached_traces(str(workload.path), sources.trace)[: workload.limit]
        src_len = workload.src_len
    else:
        traces, src_len = cached_synthetic(workload, sharing.repeats, sources.fit), None
    policy = Policy(launch_exit=run.launch_exit, max_in_flight=run.max_in_flight)
    if run.launch_exit >= sharing.repeats:  # named by its flag here (Policy.check names the field)
        raise UserError(f"{run.launch_exit} is not an exit of an R={sharing.repeats} model "
                        f"(exits 0..{sharing.repeats - 1})", where="--launch-exit")
    policy.check(sharing.repeats)
    speculative = tuple(speculation_of(run, m, spec, sharing, base_dir, model_specs, sources) for m in run.methods)
    return Scenario(run, hw, spec, sharing, traces, policy, src_len, overrides, speculative)


def deployed(spec: ModelSpec, run: RunParams, profile: HardwareProfile | None) -> ModelSpec:
    """`spec` as the run deploys it: stored in its precision (`weight_dtype`, `kv_dtype`), one device's shard
    of it under tensor parallelism (`tp`; the profile's interconnect must join that many devices: checked when
    `profile` is given)."""
    if profile is not None:
        check_devices(profile, run.tp, run.pp)
    if run.pp > 1:
        sharing = Sharing.parse(run.sharing)
        if run.pp_over == "repeats" and run.pp != sharing.repeats:
            raise UserError(f"the pipeline over repeats runs one repeat per device: pp {sharing.repeats} for "
                            f"{sharing} (got {run.pp})", where="--pp")
        if run.pp_over == "layers" and run.pp > sharing.unique:
            raise UserError(f"{run.pp} stages for the {sharing.unique} shared layers of {sharing}: at most "
                            f"{sharing.unique} (or the pipeline over repeats)", where="--pp")
    return staged(shard(with_precision(spec, run.weight_dtype, run.kv_dtype, run.weight_group), run.tp), run.pp,
                  run.pp_over == "repeats")


@lru_cache(maxsize=16)
def fitted_acceptance(path: str, where: str) -> AcceptanceModel:
    """The two-state acceptance model of a draft trace's matches (`speedsim trace --draft-checkpoint`)."""
    drafts = cached_traces(path, where)
    check_draft_trace(drafts, where)
    try:
        return AcceptanceModel.fit([self_spec_matches(d.exits, 0) for d in drafts])
    except ValueError as err:
        raise UserError(f"cannot fit an acceptance model: {err}", where=where) from None


def speculation_of(run: RunParams, method: str, spec: ModelSpec, sharing: Sharing, base_dir: str | Path,
                 model_specs: Sequence[Path | str], sources: Sources) -> Speculation:
    """The run's speculative `method`, loaded and checked (a `UserError` naming the flag)."""
    gamma = None if run.gamma == "auto" else int(run.gamma)
    if method == "selfspec":
        s = Speculation("selfspec", gamma, draft_exit=run.draft_exit)
    else:
        try:
            draft = get_model(run.draft_model or run.model,
                              cached_models(tuple(str(p) for p in model_specs), sources.model_specs))
        except UserError as err:
            if run.draft_model is None or err.where != "--model":
                raise
            raise UserError(str(err).removeprefix("--model: "), where="--draft-model") from None
        draft = deployed(draft, run, None)
        drafts, fitted = None, None
        if run.draft_trace is not None:
            where = sources.draft_trace
            drafts = cached_traces(str(resolve_trace(run.draft_trace, base_dir, where)), where)
        if run.draft_fit is not None:
            where = sources.draft_fit
            fitted = fitted_acceptance(str(resolve_trace(run.draft_fit, base_dir, where)), where or run.draft_fit)
        s = Speculation("specdec", gamma, draft_spec=draft, draft_depth=run.draft_depth or 0, draft_traces=drafts,
                        alpha=run.draft_accept, fitted=fitted, where=sources.draft_trace or str(run.draft_trace))
    check_speculation(s, spec, sharing)
    return s


def run_scenario(s: Scenario, timeline: Path | None = None) -> SimulationResult:
    """Simulate a scenario; the result records the what-ifs set on its profile (`overrides`)."""
    r = s.run
    result = simulate(s.profile, s.spec, s.sharing, list(s.traces), r.mode, r.baselines, s.policy, s.src_len,
                      timeline, device_control=r.device_control, bounds=r.bounds, speculative=s.speculative)
    return replace(result, overrides=overrides_dict(s.overrides)) if s.overrides else result
