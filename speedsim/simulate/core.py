"""Trace-driven simulation of SPEED and its baselines on one hardware profile.

exit traces --(pipeline replay)--> schedule --(workload.steps)--> step programs --(engine)-->
`SimulationResult`: latency, traffic and utilisation of SPEED and each baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from speedsim.engine import CAUSES, ClassTotals, Engine, Mode, Recorder
from speedsim.engine.core import ProgramTotals
from speedsim.engine.recorder import merged_chrome_trace
from speedsim.fileio import write_text
from speedsim.hardware import HardwareProfile
from speedsim.hardware.bounds import at_end
from speedsim.pipeline import Policy
from speedsim.run import check_decodable
from speedsim.sharing import Sharing
from speedsim.simulate.phases import BASELINES, Phase, build_phases, check_fits, check_memory
from speedsim.simulate.result import MethodResult, ScheduleSummary, SimulationResult
from speedsim.simulate.speculative import (
    Speculation,
    check_speculation,
    simulate_speculative,
    speculative_memory,
)
from speedsim.trace.schema import ExitTrace
from speedsim.workload.models import ModelSpec, check_devices


def effective_mode(profile: HardwareProfile, mode: Mode) -> tuple[Mode, tuple[str, ...]]:
    """The mode a run simulates, and a note when it is not the one asked for.

    A synchronous host (a CPU that runs each op itself, `host.synchronous`) has no graph mode:
    there is no device queue to capture a graph of kernels for, and PyTorch on a CPU runs eager.
    Graph mode on such a profile is simulated, and labelled, as eager, with a note saying so.
    """
    if mode == "graph" and profile.host.synchronous:
        return "eager", (f"{profile.name} has no graph mode (its host runs each op itself): simulated in eager "
                         "mode, the only one it has",)
    if mode == "graph" and not profile.host.graph_capture:
        return mode, (f"{profile.name} has no graph capture: its graph mode is a compiled program that issues each "
                      f"op in turn ({profile.host.launch_overhead_us.graph:g} us per op, nothing per graph), "
                      "labelled compiled-program mode",)
    return mode, ()


def _gaps(phase: Phase, durations: list[float], ends: list[float]) -> tuple[float, float, int, list[float]]:
    """(prefill us, decode us, decoded tokens, per-token gaps) of one method's programs."""
    decode_us = prefill_us = 0.0
    gaps: list[float] = []
    last_emit = 0.0
    tokens = 0
    for i, dur in enumerate(durations):
        if phase.prefill[i]:
            prefill_us += dur
            last_emit = ends[i]
            continue
        decode_us += dur
        if phase.emits[i]:
            gap = ends[i] - last_emit
            gaps.extend([gap / phase.emits[i]] * phase.emits[i])
            tokens += phase.emits[i]
            last_emit = ends[i]
    return prefill_us, decode_us, tokens, gaps


def summarise(method: str, phase: Phase, profile: HardwareProfile, mode: Mode,
              recorder: Recorder | None = None, round_trip: bool = True,
              memory: Mapping[str, float] | None = None) -> MethodResult:
    """Run one method's programs on a cold engine; its `MethodResult` (speedup still 1).

    `round_trip`: each step's results reach the host (copy, sync, controller: the profile's
    `host` fields) before the next step is issued, as in every real decode loop; False is the
    what-if of control on the device. `memory`: the method's device-memory footprint by part,
    with its `total` (`speedsim.simulate.phases.check_fits`).
    """
    memory = dict(memory or {})
    memory_total = memory.pop("total", math.nan)
    result = Engine(profile, mode, recorder=recorder, detail=True).run(phase.programs, round_trip=round_trip)
    prefill_us, decode_us, tokens, gaps = _gaps(phase, result.program_us(), result.program_end_us)
    total = result.total_us
    per = max(tokens, 1)
    # per-token traffic, FLOPs and roofline cover the decode steps only; the prefill is reported apart
    decode = [t for t, is_prefill in zip(result.per_program, phase.prefill, strict=True) if not is_prefill]
    prefill = [t for t, is_prefill in zip(result.per_program, phase.prefill, strict=True) if is_prefill]
    by = {c: sum(t.dram_bytes_by_class[c] for t in decode) for c in result.dram_bytes_by_class}
    peak = profile.matrix_peak(profile.default_dtype, False)
    sequences = sum(phase.prefill)
    return MethodResult(
        method=method,
        per_token_us=decode_us / tokens if tokens else math.nan,
        p50_token_us=float(np.percentile(gaps, 50)) if gaps else math.nan,
        p99_token_us=float(np.percentile(gaps, 99)) if gaps else math.nan,
        prefill_us=prefill_us, decode_us=decode_us, total_us=total, tokens=tokens,
        e2e_per_token_us=total / (tokens + sequences) if tokens + sequences else math.nan,
        kernels=result.kernels,
        dram_bytes_per_token=sum(t.dram_bytes for t in decode) / per,
        dram_weights_bytes_per_token=by["weights"] / per,
        dram_kv_bytes_per_token=by["kv"] / per,
        dram_activations_bytes_per_token=by["activations"] / per,
        dram_embeddings_bytes_per_token=by["embeddings"] / per,
        onchip_bytes_per_token=sum(t.onchip_bytes for t in decode) / per,
        flops_per_token=sum(t.flops for t in decode) / per,
        util_compute=result.flops / (total * 1e-6 * peak) if total else 0.0,
        util_dram=result.busy_us["dram"] / total if total else 0.0,
        util_device_busy=result.busy_us["device"] / total if total else 0.0,
        util_host=result.busy_us["host"] / total if total else 0.0,
        roofline_us_per_token=sum(t.roofline_us for t in decode) / per,
        prefill_dram_bytes=sum(t.dram_bytes for t in prefill),
        prefill_flops=sum(t.flops for t in prefill),
        host_us_per_token=(profile.host.round_trip_us * (len(phase.programs) - sequences) / tokens
                           if round_trip and tokens else 0.0),
        speedup=1.0,
        memory_bytes=memory_total,
        memory_bytes_by_part=memory,
        time_by_cause_us_per_token=time_by_cause(decode, per),
        by_kernel_class=kernel_classes(decode, per),
    )


def decode_per_token_us(phase: Phase, profile: HardwareProfile, mode: Mode, round_trip: bool = True) -> float:
    """`summarise`'s per_token_us alone (one engine run, no per-class totals): the inner loop of
    `speedsim.design.sensitivity`. `mode` is the mode simulated (`effective_mode`)."""
    result = Engine(profile, mode).run(phase.programs, round_trip=round_trip)
    _, decode_us, tokens, _ = _gaps(phase, result.program_us(), result.program_end_us)
    return decode_us / tokens if tokens else math.nan


def time_by_cause(programs: Sequence[ProgramTotals], per: int) -> dict[str, float]:
    """The programs' time by cause (`speedsim.engine.CAUSES`, the engine's own charging), divided by
    `per`: per token, it sums to per_token_us (within rounding)."""
    return {c: sum(t.time_by_cause[c] for t in programs) / per for c in CAUSES}


def bounding_cause(by_cause: Mapping[str, float]) -> str:
    """The cause that carries the most of a time (the first of `CAUSES` on a tie)."""
    return max(CAUSES, key=lambda c: by_cause[c])


def kernel_classes(programs: Sequence[ProgramTotals], per: int) -> dict[str, dict[str, object]]:
    """The programs' kernels by class (`speedsim.workload.kernels.KERNEL_CLASSES`), the most time first:
    per token (divided by `per`) their count, time (the node rule included), DRAM bytes, bytes moved
    (every byte through the on-chip level, DRAM's included), FLOPs; the arithmetic intensity (FLOPs per
    byte moved: the operator's own, whatever the cache serves; 0 where it moves none); the time by
    cause and the cause that bounds the class (the one carrying the most of its time)."""
    totals: dict[str, ClassTotals] = {}
    for program in programs:
        for name, c in program.by_class.items():
            totals[name] = totals[name].plus(c) if name in totals else c
    out: dict[str, dict[str, object]] = {}
    for name, c in sorted(totals.items(), key=lambda kv: -kv[1].time_us):
        causes = {k: v / per for k, v in c.by_cause().items()}
        out[name] = {"kernels_per_token": c.kernels / per, "time_us_per_token": c.time_us / per,
                     "dram_bytes_per_token": c.dram_bytes / per, "bytes_per_token": c.onchip_bytes / per,
                     "flops_per_token": c.flops / per,
                     "arithmetic_intensity": c.flops / c.onchip_bytes if c.onchip_bytes else 0.0,
                     "bound": bounding_cause(causes), "time_by_cause_us_per_token": causes}
    return out


def first_exit_miss(traces: Sequence[ExitTrace]) -> float:
    """Fraction of generated positions whose first exit differs from the final one."""
    n = sum(len(t.exits) for t in traces)
    return sum(row[0] != row[-1] for t in traces for row in t.exits) / n if n else math.nan


def simulate(profile: HardwareProfile, spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace],
             mode: Mode = "graph", baselines: Sequence[str] = BASELINES, policy: Policy | None = None,
             src_len: int | None = None, timeline: Path | None = None,
             device_control: bool = False, bounds: bool = False,
             speculative: Sequence[Speculation] = ()) -> SimulationResult:
    """Simulate SPEED (and `baselines`, and the `speculative` methods) decoding `traces` on `profile`.

    `device_control`: the what-if of a controller on the device (no host round trip per step).
    `bounds`: also run the profile's ranges at their fast and slow ends (`speedsim.hardware.bounds`)
    and report per_token_us_low/high for every method.
    """
    if bounds:
        mid = simulate(profile, spec, sharing, traces, mode, baselines, policy, src_len, timeline, device_control,
                       speculative=speculative)
        # the ends at the window the profile's own values chose (auto), so the band is of one configuration
        chosen = [replace(s, gamma=int(mid.baselines[s.method].gamma)) for s in speculative]
        runs = [simulate(p, spec, sharing, traces, mode, baselines, policy, src_len, None, device_control,
                         speculative=chosen) for p in (at_end(profile, "fast"), at_end(profile, "slow"))]
        return replace(mid, speed=mid.speed.with_bounds(*(r.speed for r in runs)),
                       baselines={m: b.with_bounds(*(r.baselines[m] for r in runs)) for m, b in mid.baselines.items()})
    check_decodable([len(t.exits) for t in traces])
    check_devices(profile, spec.tp, spec.pp)  # (a what-if of the node may leave fewer devices than the deployment's)
    for s in speculative:
        check_speculation(s, spec, sharing)
    mode, mode_notes = effective_mode(profile, mode)
    # each method's own footprint (the unshared baseline holds every layer), the largest checked first
    need = {m: check_fits(spec, sharing, traces, profile, (m,) if m == "unshared" else (), src_len, baselines)
            for m in sorted(("speed", *baselines), key=lambda m: m != "unshared")}
    phases, stats = build_phases(spec, sharing, traces, profile, baselines, policy, src_len)
    rt = not device_control
    recorders = {m: Recorder() for m in ("speed", *baselines)} if timeline else {}
    speed = summarise("speed", phases["speed"], profile, mode, recorders.get("speed"), round_trip=rt,
                      memory=need["speed"])
    others = {m: summarise(m, phases[m], profile, mode, recorders.get(m), round_trip=rt, memory=need[m])
              .with_speedup(speed.per_token_us) for m in baselines}
    for s in speculative:
        memory = speculative_memory(s, need["speed"], spec, traces, src_len, profile.default_dtype)
        check_memory(memory, profile, f"{s.method} ({spec.name} {sharing} with its draft model)", "--draft-model")
        others[s.method] = simulate_speculative(s, profile, spec, sharing, traces, mode, src_len, rt, memory,
                                                ).with_speedup(speed.per_token_us)
    if timeline is not None:  # every method's timeline, side by side
        write_text(timeline, json.dumps(merged_chrome_trace(recorders)))
    schedule = ScheduleSummary(steps=stats.steps, flushes=stats.flushes, wasted_token_passes=stats.wasted_passes,
                               mean_in_flight=stats.mean_in_flight, first_exit_miss=first_exit_miss(traces))
    return SimulationResult(profile=profile.name, model=spec.name, sharing=sharing, mode=mode,
                            sequences=len(traces), speed=speed, baselines=others,
                            schedule=schedule, notes=mode_notes + run_notes(profile, spec, sharing),
                            mode_label=profile.host.mode_label(mode))


def run_notes(profile: HardwareProfile, spec: ModelSpec, sharing: Sharing) -> tuple[str, ...]:
    """Notes for the output: a scratchpad accelerator whose on-chip memory cannot hold the shared
    group's weights streams them from DRAM every step (sharing then saves DRAM traffic, not reuse on-chip)."""
    if profile.kind != "accelerator":
        return ()
    onchip = profile.l2
    group = sharing.unique * spec.layer_weight_bytes(profile.default_dtype)
    if group <= onchip.usable_bytes:
        return ()
    return (f"the {sharing.unique} shared decoder layers' weights ({group / 1e6:.1f} MB) do not fit "
            f"{profile.name}'s {onchip.name} ({onchip.usable_bytes / 1e6:.2f} MB usable): they stream from "
            "DRAM every step",)


def step_points(profile: HardwareProfile, spec: ModelSpec, sharing: Sharing, traces: Sequence[ExitTrace],
                methods: Sequence[str] = ("speed", *BASELINES), mode: Mode = "graph") -> list[dict[str, float | str]]:
    """Every decode step of every method, simulated one at a time in graph mode, for a roofline.

    Each step runs alone (no overlap with its neighbours), with the on-chip state its
    predecessors left, as it would find it in a decode loop. Prefills are left out, and so are
    steps that move no DRAM bytes (no arithmetic intensity). Rows: method, flops, dram_bytes, us.
    """
    phases, _ = build_phases(spec, sharing, traces, profile, [m for m in methods if m != "speed"], None, None)
    mode = effective_mode(profile, mode)[0]
    rows: list[dict[str, float | str]] = []
    for method in methods:
        phase = phases[method]
        engine = Engine(profile, mode)
        state = None  # cold at the method's first program, then what the previous step left
        for program, is_prefill in zip(phase.programs, phase.prefill, strict=True):
            r = engine.run([program], onchip=state)
            state = r.onchip
            if not is_prefill and r.dram_bytes > 0:
                rows.append({"method": method, "flops": r.flops, "dram_bytes": r.dram_bytes, "us": r.total_us})
    return rows
