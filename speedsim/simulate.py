"""Trace-driven simulation of SPEED and its baselines on one hardware profile.

exit traces --(pipeline controller: replay)--> schedule --(workload.steps)--> step programs
--(engine)--> latency, traffic, utilisation. The baselines run the same emitted tokens:
`sequential` (the same shared model without pipelining: U layers R times per token) and
`unshared` (an unshared decoder of the same depth, U*R distinct layers).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedsim.engine import Engine, Recorder
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline import Policy, replay, schedule_stats
from speedsim.sharing import Sharing
from speedsim.trace.schema import ExitTrace
from speedsim.workload.kernels import TENSOR_CLASSES, KernelRules, Program
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

BASELINES = ("unshared", "sequential")
MAX_SYNTHETIC_LEN = 65536     # tokens per synthetic sequence (output or source)
MAX_SYNTHETIC_SEQS = 10000


# ------------------------------------------------------------------------------ synthetic specs

def parse_synthetic(text: str, repeats: int):
    """`perfect`, `mispredict=P`, `agree=A0/A1/...`, plus optional `len=N`, `seqs=K`, `src=N`,
    `burst=B`, `seed=S` (comma-separated), into a `SyntheticSpec` and (sequences, seed)."""
    from pydantic import ValidationError

    from speedsim.trace.synthetic import SyntheticSpec

    fields: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if item == "perfect":
            fields["mispredict"] = "0"
            continue
        m = re.fullmatch(r"([a-z_]+)=(.+)", item)
        if not m:
            raise UserError(f"'{item}' is not perfect, KEY=VALUE", where="--synthetic")
        fields[m.group(1)] = m.group(2)
    known = {"mispredict", "agree", "len", "seqs", "src", "burst", "seed"}
    unknown = set(fields) - known
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})",
                        where="--synthetic")
    if "agree" in fields and "mispredict" in fields:
        raise UserError("give agree=... or mispredict=..., not both", where="--synthetic")
    try:
        if "agree" in fields:
            agreement = [float(v) for v in fields["agree"].split("/")]
        else:
            miss = float(fields.get("mispredict", "0"))
            if not 0.0 <= miss <= 1.0:
                raise UserError(f"mispredict={miss} is outside [0, 1]", where="--synthetic")
            agreement = [1.0 - miss] + [1.0] * (repeats - 1)
        lengths = [int(fields.get("len", "128"))]
        src = [int(fields.get("src", "128"))]
        seqs = int(fields.get("seqs", "1"))
        seed = int(fields.get("seed", "0"))
        burst = float(fields["burst"]) if "burst" in fields else None
    except ValueError as err:
        raise UserError(f"not a number: {err}", where="--synthetic") from None
    if not 1 <= seqs <= MAX_SYNTHETIC_SEQS:
        raise UserError(f"seqs must be in 1..{MAX_SYNTHETIC_SEQS}", where="--synthetic")
    if not 1 <= lengths[0] <= MAX_SYNTHETIC_LEN or not 0 <= src[0] <= MAX_SYNTHETIC_LEN:
        raise UserError(f"len and src must be in 1..{MAX_SYNTHETIC_LEN}", where="--synthetic")
    try:
        spec = SyntheticSpec(repeats=repeats, agreement=agreement, burst=burst, lengths=lengths, src_lens=src)
    except ValidationError as err:
        raise UserError(err.errors()[0]["msg"].removeprefix("Value error, "), where="--synthetic") from None
    return spec, seqs, seed


def synthetic_traces(text: str, repeats: int) -> list[ExitTrace]:
    from speedsim.trace.synthetic import generate

    spec, seqs, seed = parse_synthetic(text, repeats)
    return generate(spec, seqs, seed=seed, name=f"synthetic:{text}")


# ------------------------------------------------------------------------------ the simulation

@dataclass
class Phase:
    """Programs of one method for all sequences, with which program ends which token."""

    programs: list[Program]
    emits: list[int]        # tokens emitted by each program
    prefill: list[bool]     # whether each program is a prefill

    def add(self, program: Program, emits: int, is_prefill: bool = False) -> None:
        self.programs.append(program)
        self.emits.append(emits)
        self.prefill.append(is_prefill)


def _spec_for(spec: ModelSpec, trace: ExitTrace, src_len: int | None) -> tuple[ModelSpec, int]:
    n = src_len if src_len is not None else (trace.src_len or spec.cross_attention_len or 1)
    return with_source(spec, n), n


def build_phases(spec: ModelSpec, sharing: Sharing, traces: list[ExitTrace], profile: HardwareProfile,
                 methods: tuple[str, ...], policy: Policy | None, src_len: int | None):
    """Programs of SPEED and each requested baseline for every trace, plus SPEED's schedule stats."""
    rules = KernelRules.from_profile(profile)
    dtype = profile.default_dtype
    phases = {m: Phase([], [], []) for m in ("speed", *methods)}
    schedules = []
    for trace in traces:
        if trace.repeats != sharing.repeats:
            raise UserError(f"trace '{trace.seq_id}' has R={trace.repeats} exits but --sharing is {sharing}",
                            where="--trace")
        seq_spec, n_src = _spec_for(spec, trace, src_len)
        ctx = StepContext(seq_spec, sharing, n_src, dtype, rules)
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
    return phases, schedule_stats(schedules)


def _summarise(phase: Phase, profile: HardwareProfile, mode: str, timeline: Path | None = None) -> dict:
    recorder = Recorder() if timeline else None
    result = Engine(profile, mode, recorder=recorder).run(phase.programs)  # type: ignore[arg-type]
    if recorder is not None and timeline is not None:
        recorder.write_chrome_trace(timeline)
    durations = result.program_us()
    ends = result.program_end_us
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
    per_token = decode_us / tokens if tokens else math.nan
    sequences = sum(phase.prefill)
    total_time = result.total_us
    return {
        "per_token_us": per_token,
        "p50_token_us": float(np.percentile(gaps, 50)) if gaps else math.nan,
        "p99_token_us": float(np.percentile(gaps, 99)) if gaps else math.nan,
        "decode_us": decode_us,
        "prefill_us": prefill_us,
        "total_us": total_time,
        "tokens": tokens,
        # the whole decode (prefill included) over every emitted token (position 0 included)
        "e2e_per_token_us": total_time / (tokens + sequences) if tokens + sequences else math.nan,
        "kernels": result.kernels,
        "events": result.events,
        "dram_bytes_per_token": result.dram_bytes / max(tokens, 1),
        "dram_bytes_by_class": {k: result.dram_bytes_by_class[k] / max(tokens, 1) for k in TENSOR_CLASSES},
        "onchip_bytes_per_token": result.onchip_bytes / max(tokens, 1),
        "flops_per_token": result.flops / max(tokens, 1),
        # compute: achieved FLOP/s over the datasheet matrix peak; dram: time DRAM was streaming at
        # its achievable rate; device_busy / host: time a kernel ran / the host was issuing
        "utilization": {
            "compute": result.flops / (total_time * 1e-6 * profile.matrix_peak(profile.default_dtype, False))
            if total_time else 0.0,
            "dram": result.busy_us["dram"] / total_time if total_time else 0.0,
            "device_busy": result.busy_us["device"] / total_time if total_time else 0.0,
            "host": result.busy_us["host"] / total_time if total_time else 0.0,
        },
        "roofline_us_per_token": result.roofline_us / max(tokens, 1),
    }


def check_fits(spec: ModelSpec, sharing: Sharing, traces: list[ExitTrace], profile: HardwareProfile,
               methods: tuple[str, ...], src_len: int | None) -> dict[str, float]:
    """Raise a `UserError` (exit 2) with the sizes if the model does not fit the device memory."""
    longest = max((len(t.exits) for t in traces), default=1)
    src = max((_spec_for(spec, t, src_len)[1] for t in traces), default=1)
    positions = longest + (0 if spec.cross_attention_len else src)
    need = memory_footprint(spec, sharing, positions, src, profile.default_dtype, unshared="unshared" in methods)
    have = profile.memory_capacity_GiB * 2**30
    if need["total"] > have:
        parts = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in need.items() if k != "total")
        raise UserError(f"model {spec.name} {sharing} needs {need['total'] / 2**30:.2f} GiB ({parts}) but "
                        f"{profile.name} has {profile.memory_capacity_GiB:.2f} GiB", where="--model")
    return need


def simulate(profile: HardwareProfile, spec: ModelSpec, sharing: Sharing, traces: list[ExitTrace],
             mode: str = "graph", baselines: tuple[str, ...] = BASELINES, policy: Policy | None = None,
             src_len: int | None = None, timeline: Path | None = None) -> dict:
    """Simulate SPEED (and `baselines`) decoding `traces`; one JSON-ready dict."""
    if not traces:
        raise UserError("no sequences to simulate", where="--trace")
    if mode not in ("graph", "eager"):
        raise UserError(f"unknown mode '{mode}'", where="--mode")
    need = check_fits(spec, sharing, traces, profile, baselines, src_len)
    phases, stats = build_phases(spec, sharing, traces, profile, baselines, policy, src_len)
    out = {"profile": profile.name, "model": spec.name, "sharing": str(sharing), "mode": mode,
           "sequences": len(traces), "memory_bytes": need}
    speed = _summarise(phases["speed"], profile, mode, timeline)
    out.update(speed)
    out.update({"steps": stats.steps, "flushes": stats.flushes, "wasted_token_passes": stats.wasted_passes,
                "mean_in_flight": stats.mean_in_flight})
    out["baselines"] = {}
    for method in baselines:
        base = _summarise(phases[method], profile, mode)
        base["speedup"] = base["per_token_us"] / speed["per_token_us"] if speed["per_token_us"] else math.nan
        out["baselines"][method] = base
    return out
