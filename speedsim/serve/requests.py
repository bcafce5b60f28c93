"""The requests of a serving simulation: each an exit trace, a source length and an arrival time.

A request's work depends only on its own trace: SPEED's schedule is the trace replayed through
the pipeline controller (a flush touches only the request whose exit changed); the baselines
decode one token per step. `Request` keeps where the request is in that work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from speedsim.hardware.profile import HardwareProfile
from speedsim.pipeline import Policy, Step, replay
from speedsim.pipeline.speculation import iterations
from speedsim.run import check_trace_repeats
from speedsim.sharing import Sharing
from speedsim.simulate.phases import source_len
from speedsim.simulate.speculative import SPECULATIVE, SpecItem, Speculation, spec_items, speculative_memory
from speedsim.trace.schema import ExitTrace
from speedsim.workload import KernelRules
from speedsim.workload.models import ModelSpec
from speedsim.workload.steps import Seq, StepContext, memory_footprint, with_source


@dataclass(eq=False)
class Request:
    """One request and its progress. Times in us since the simulation start (NaN until they happen)."""

    rid: int
    arrival_us: float
    trace: ExitTrace
    seq: Seq                      # its step context and the prefix of its cache ids
    kv_bytes: float               # KV (and encoder K/V) it holds while admitted, at full length
    steps: list[Step] = field(default_factory=list)  # SPEED: its schedule; baselines: unused
    next_step: int = 0            # SPEED: index into `steps` (speculative: `items`); baselines: the next position
    items: list[SpecItem] = field(default_factory=list)  # speculative: its draft and verify steps, in order
    dseq: Seq | None = None       # specdec: the draft model's context and cache ids
    admitted_us: float = math.nan
    first_token_us: float = math.nan
    done_us: float = math.nan

    @property
    def tokens(self) -> int:
        """Output tokens, the prefill's first one included."""
        return len(self.trace.exits)

    @property
    def src_len(self) -> int:
        return self.seq.ctx.src_len

    def finished(self, method: str) -> bool:
        if method == "speed":
            return self.next_step >= len(self.steps)
        if method in SPECULATIVE:
            return self.next_step >= len(self.items)
        return self.next_step >= self.tokens


def make_requests(traces: list[ExitTrace], arrivals: np.ndarray, spec: ModelSpec, sharing: Sharing,
                  profile: HardwareProfile, method: str, policy: Policy | None,
                  src_len: int | None = None, speculation: Speculation | None = None,
                  gamma: int = 1) -> list[Request]:
    """One request per arrival, its trace taken in order from `traces` (already sampled); `src_len`
    overrides each trace's source length; `speculation` and its window `gamma` for a speculative method
    (each request's iterations from its own trace's draft matches)."""
    matches = speculation.matches(traces) if speculation is not None else []
    check_trace_repeats(traces, sharing)
    rules = KernelRules.from_profile(profile)
    dtype = profile.default_dtype
    out = []
    for rid, (trace, t) in enumerate(zip(traces, arrivals, strict=True)):
        n_src = source_len(spec, trace, src_len)
        ctx = StepContext(with_source(spec, n_src), sharing, n_src, dtype, rules)
        positions = len(trace.exits) + (0 if spec.cross_attention_len else n_src)
        need = memory_footprint(spec, sharing, positions, n_src, dtype, unshared=method == "unshared")
        req = Request(rid, float(t), trace, Seq(ctx, f"q{rid}."), need["kv"] + need["cross_kv"])
        req.steps = replay(trace, policy) if method == "speed" else []
        req.next_step = 0 if method in ("speed", *SPECULATIVE) else 1  # baselines: position 0 from the prefill
        if speculation is not None:
            req.items = spec_items(speculation, iterations(matches[rid], len(trace.exits), gamma))
            if speculation.method == "specdec":
                req.dseq = Seq(speculation.draft_ctx(ctx), f"q{rid}.draft.")
            # the draft model's caches (no window writes past the sequence's end: `iterations` stops it there)
            extra = speculative_memory(speculation, {**need, "total": 0.0}, spec, [trace], src_len, dtype)
            req.kv_bytes += extra.get("draft_kv", 0.0) + extra.get("draft_cross_kv", 0.0)
        out.append(req)
    return out


def weights_bytes(spec: ModelSpec, sharing: Sharing, profile: HardwareProfile, method: str) -> float:
    """Device memory of the weights (layers, encoder, embeddings and LM head), held once."""
    need = memory_footprint(spec, sharing, 1, 1, profile.default_dtype, unshared=method == "unshared")
    return need["weights"] + need["embeddings"]
