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
from speedsim.run import check_trace_repeats
from speedsim.sharing import Sharing
from speedsim.simulate.phases import source_len
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
    next_step: int = 0            # SPEED: index into `steps`; baselines: the next position to decode
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
        return self.next_step >= self.tokens


def make_requests(traces: list[ExitTrace], arrivals: np.ndarray, spec: ModelSpec, sharing: Sharing,
                  profile: HardwareProfile, method: str, policy: Policy | None,
                  src_len: int | None = None) -> list[Request]:
    """One request per arrival, its trace taken in order from `traces` (already sampled); `src_len`
    overrides each trace's source length."""
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
        req.next_step = 0 if method == "speed" else 1  # baselines: position 0 comes from the prefill
        out.append(req)
    return out


def weights_bytes(spec: ModelSpec, sharing: Sharing, profile: HardwareProfile, method: str) -> float:
    """Device memory of the weights (layers, encoder, embeddings and LM head), held once."""
    need = memory_footprint(spec, sharing, 1, 1, profile.default_dtype, unshared=method == "unshared")
    return need["weights"] + need["embeddings"]
