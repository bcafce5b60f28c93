"""Programs of one simulation: SPEED's pipelined steps and each baseline's tokens, per sequence.

exit traces --(pipeline controller: replay)--> schedule --(workload.steps)--> step programs.
The baselines run the same emitted tokens: `sequential` (the same shared model without
pipelining: U layers R times per token) and `unshared` (an unshared decoder of the same
depth, U*R distinct layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from speedsim import defaults
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline import Policy, ScheduleStats, Step, replay, schedule_stats
from speedsim.run import check_trace_repeats
from speedsim.sharing import Sharing
from speedsim.trace.schema import ExitTrace
from speedsim.workload import KernelRules, Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.steps import (
    StepContext,
    memory_footprint,
    pipelined_step,
    prefill,
    sequential_token,
    unshared_token,
    with_source,
)

BASELINES = defaults.BASELINES  # what SPEED is simulated beside


@dataclass
class Phase:
    """Programs of one method for all sequences, with which program ends which token."""

    programs: list[Program] = field(default_factory=list)
    emits: list[int] = field(default_factory=list)       # tokens emitted by each program
    prefill: list[bool] = field(default_factory=list)    # whether each program is a prefill

    def add(self, program: Program, emits: int, is_prefill: bool = False) -> None:
        self.programs.append(program)
        self.emits.append(emits)
        self.prefill.append(is_prefill)


def source_len(spec: ModelSpec, trace: ExitTrace, src_len: int | None) -> int:
    """Source tokens of a sequence: the override, else the trace's own, else the model's cross length."""
    return src_len if src_len is not None else (trace.src_len or spec.cross_attention_len or 1)


def build_phases(spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace], profile: HardwareProfile,
                 methods: Sequence[str], policy: Policy | None,
                 src_len: int | None) -> tuple[dict[str, Phase], ScheduleStats]:
    """Programs of SPEED and each requested baseline for every trace, plus SPEED's schedule stats."""
    check_trace_repeats(traces, sharing)
    rules = KernelRules.from_profile(profile)
    phases = {m: Phase() for m in ("speed", *methods)}
    schedules: list[list[Step]] = []
    for trace in traces:
        n_src = source_len(spec, trace, src_len)
        ctx = StepContext(with_source(spec, n_src), sharing, n_src, profile.default_dtype, rules)
        steps = replay(trace, policy)
        schedules.append(steps)
        speed = phases["speed"]
        speed.add(prefill(ctx), 1, is_prefill=True)
        for step in steps:
            speed.add(pipelined_step(ctx, [(p, r) for p, r, _ in step.in_flight], len(step.launched)),
                      len(step.emitted))
        emitted = 1 + sum(len(s.emitted) for s in steps)
        for method in methods:
            unshared = method == "unshared"
            phases[method].add(prefill(ctx, unshared=unshared), 1, is_prefill=True)
            token = unshared_token if unshared else sequential_token
            for pos in range(1, emitted):
                phases[method].add(token(ctx, pos), 1)
    return phases, schedule_stats(schedules, output_tokens=sum(len(t.exits) for t in traces))


def check_fits(spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace], profile: HardwareProfile,
               methods: Sequence[str], src_len: int | None, baselines: Sequence[str] = ()) -> dict[str, float]:
    """Device memory the decode needs; a `UserError` (exit 2) with the sizes if it does not fit: the shared
    model's first, then the unshared baseline's (in `methods`), named as such with how to leave it out
    (`baselines`: the run's, for the hint)."""
    longest = max((len(t.exits) for t in traces), default=1)
    src = max((source_len(spec, t, src_len) for t in traces), default=1)
    positions = longest + (0 if spec.cross_attention_len else src)
    sources = f" with {src}-token sources" if spec.cross_attention_len or src_len is not None else ""
    if spec.tp > 1 or spec.pp > 1:  # one device's share: say so, and of how many
        sources += f" on each of {spec.tp * spec.pp} GPUs (tp {spec.tp}, pp {spec.pp})"
    need = memory_footprint(spec, sharing, positions, src, profile.default_dtype)
    check_memory(need, profile, f"model {spec.name} {sharing}{sources}",
                 "--src-len" if src_len is not None else "--model")
    if "unshared" not in methods:
        return need
    # the unshared baseline holds every layer's weights: named on its own, with how to leave it out
    need = memory_footprint(spec, sharing, positions, src, profile.default_dtype, unshared=True)
    others = [m for m in baselines if m != "unshared"]
    check_memory(need, profile, f"the unshared baseline ({spec.name} {sharing.depth}x1{sources}), beside which "
                 f"{spec.name} {sharing} fits,", "--baseline",
                 hint=f"leave it out with --baseline {others[0] if others else 'none'} (a sweep: baselines: "
                      f"[{', '.join(others)}])")
    return need


def check_memory(need: dict[str, float], profile: HardwareProfile, what: str, where: str, hint: str = "") -> None:
    """A `UserError` at `where` with the sizes by part when `what`'s footprint `need` exceeds the device's memory
    (`hint`: what to do about it, after the sizes)."""
    if need["total"] > profile.memory_capacity_GiB * 2**30:
        parts = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in need.items() if k != "total")
        raise UserError(f"{what} needs {need['total'] / 2**30:.2f} GiB ({parts}) but {profile.name} has "
                        f"{profile.memory_capacity_GiB:.2f} GiB" + (f": {hint}" if hint else ""), where=where)
