"""Whole decodes of the static-buffer decoder (`impl=static`), as `speedsim measure --parts loop` times them.

What one sequence costs, part by part (`speedsim.workload.static` has the programs):

- **prefill**: the functional decoder's, eager whatever the step mode, as programs that each end
  with the host reading a result (one per repeat's exit, then the copy into the buffers and a
  synchronisation);
- **per step**, in the loop's order: the host's own work (`host.loop_us`: the controller, the
  index tensor, the calls), the copy of the step's indices to the device (a small pageable
  copy, synchronous: `d2h_copy_us + sync_us`), the graph launch (graph mode) or each op's
  launch (eager), the step's kernels on the device, and the prediction's way back to the host
  (`d2h_copy_us + sync_us`); nothing overlaps, since each step needs the last one's result.

Steps come from the exit traces: SPEED's from replaying them through the pipeline controller
(the same schedule the measured decoder ran), greedy's one per emitted token after the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from speedsim.engine import Engine, Mode
from speedsim.engine.core import EngineRun
from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline import replay
from speedsim.run import check_trace_repeats
from speedsim.sharing import Sharing
from speedsim.simulate.core import effective_mode
from speedsim.simulate.phases import source_len
from speedsim.trace.schema import ExitTrace
from speedsim.workload import KernelRules, Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.static import (
    BUCKET,
    bucket_length,
    buffer_length,
    greedy_step,
    prefill_passes,
    speed_step,
)
from speedsim.workload.steps import StepContext, with_source

METHODS = ("greedy", "speed")


@dataclass(frozen=True)
class LoopResult:
    """One method's whole decodes, in the fields `speedsim measure --parts loop` records (us)."""

    method: str
    sequences: int
    tokens: int                 # emitted, every sequence
    steps: int                  # decode steps, every sequence
    prefill_us_per_seq: float   # the eager prefill and the copy into the buffers
    step_us: float              # one step from the end of the last to the end of its own, mean
    device_us_per_step: float   # the step's kernels on the device (a graph replay), mean
    host_us_per_step: float     # the loop's own host work per step (`host.loop_us`)

    @property
    def total_us(self) -> float:
        return self.sequences * self.prefill_us_per_seq + self.steps * self.step_us

    @property
    def per_token_us(self) -> float:
        """As a measured row's `us_median`: the whole decode, prefill included, per emitted token."""
        return self.total_us / self.tokens

    @property
    def per_token_no_prefill_us(self) -> float:
        return self.steps * self.step_us / self.tokens


def _between_steps_us(profile: HardwareProfile) -> float:
    """Everything the host does between two steps of the loop: the prediction's copy back and the
    sync, the controller's and the loop's own work (the next step's input copy is in its program)."""
    host = profile.host
    return host.round_trip_us + host.loop_us


def static_loop(profile: HardwareProfile, spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace],
                mode: Mode, method: str, bucket: int = BUCKET) -> LoopResult:
    """Whole `method` decodes ("greedy" or "speed") of `traces` by the static decoder on `profile`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method}")
    check_trace_repeats(traces, sharing)
    mode = effective_mode(profile, mode)[0]
    rules = KernelRules.from_profile(profile)
    between = _between_steps_us(profile)
    stepping = Engine(profile, mode, round_trip_us=between)
    # the engine puts the host's work between steps; a whole decode also reads its last step's result
    last_read = between
    prefilling = Engine(profile, "eager")
    longest = max(len(t.exits) for t in traces)
    prefill_us = steps_us = device_us = 0.0
    tokens = steps = 0
    for trace in traces:
        n_src = source_len(spec, trace, None)
        ctx = StepContext(with_source(spec, n_src), sharing, n_src, profile.default_dtype, rules)
        offset = ctx.kv_before(0)
        kv_len = buffer_length(offset, longest, None, bucket)
        prefill_us += prefilling.run(prefill_passes(ctx), round_trip=True).total_us
        programs = _steps(ctx, trace, method, offset, kv_len, bucket)
        run = stepping.run(programs, round_trip=True)
        steps_us += run.total_us + (last_read if programs else 0.0)
        device_us += sum(e - s for s, e in zip(_device_starts(run, stepping), run.program_end_us, strict=True))
        tokens += len(trace.exits)
        steps += len(programs)
    n = len(traces)
    return LoopResult(method=method, sequences=n, tokens=tokens, steps=steps, prefill_us_per_seq=prefill_us / n,
                      step_us=steps_us / max(steps, 1), device_us_per_step=device_us / max(steps, 1),
                      host_us_per_step=profile.host.controller_us + profile.host.loop_us)


def _device_starts(run: EngineRun, engine: Engine) -> list[float]:
    """When each program's work could begin on the device: its issue, after the graph launch."""
    launch = engine.model.host.graph_launch_us
    return [s + launch for s in run.program_start_us]


def _steps(ctx: StepContext, trace: ExitTrace, method: str, offset: int, kv_len: int, bucket: int) -> list[Program]:
    if method == "greedy":
        return [greedy_step(ctx, bucket_length(offset + pos, kv_len, bucket)) for pos in range(1, len(trace.exits))]
    return [speed_step(ctx, [r for _, r, _ in step.in_flight],
                       bucket_length(offset + max(p for p, _, _ in step.in_flight), kv_len, bucket))
            for step in replay(trace, None) if step.in_flight]
