"""What a serving simulation reports: per-request latencies, their percentiles, throughput, utilisation.

Definitions (all times in us, from the simulation clock):
- queue: admission (KV memory granted) minus arrival;
- ttft (time to first token): the end of the request's prefill (which emits its first token)
  minus arrival;
- tpot (time per output token): (completion - first token) / (output tokens - 1), for
  requests with at least two output tokens;
- e2e: completion minus arrival.
Throughput divides output tokens (and requests) by the makespan: first arrival to last completion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Percentiles:
    """Summary of one per-request latency, in us."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        if not len(values):
            return cls(math.nan, math.nan, math.nan, math.nan)
        a = np.asarray(values, dtype=float)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(a.mean()))


@dataclass(frozen=True)
class RequestRecord:
    """One request's life, in us since the simulation start."""

    rid: int
    arrival_us: float
    admitted_us: float
    first_token_us: float
    done_us: float
    tokens: int          # output tokens (the prefill's first one included)
    src_len: int

    @property
    def queue_us(self) -> float:
        return self.admitted_us - self.arrival_us

    @property
    def ttft_us(self) -> float:
        return self.first_token_us - self.arrival_us

    @property
    def tpot_us(self) -> float:
        return (self.done_us - self.first_token_us) / (self.tokens - 1) if self.tokens > 1 else math.nan

    @property
    def e2e_us(self) -> float:
        return self.done_us - self.arrival_us


@dataclass(frozen=True)
class Utilization:
    """Fractions of the makespan."""

    compute: float   # achieved FLOP/s over the matrix peak
    dram: float      # time DRAM streams at its achievable rate
    kv: float        # time-averaged KV memory in use over the KV capacity


@dataclass(frozen=True)
class ServeResult:
    """A serving simulation's outcome; `to_dict()` is `speedsim serve --json`."""

    profile: str
    model: str
    sharing: str
    method: str
    mode: str
    requests: int
    tokens: int
    makespan_us: float
    ttft_us: Percentiles
    tpot_us: Percentiles
    e2e_us: Percentiles
    queue_us: Percentiles
    throughput_tokens_per_s: float
    throughput_requests_per_s: float
    mean_batch: float             # requests decoding per step, averaged over steps
    mean_tokens_per_step: float   # token passes computed per step (SPEED: several per request)
    mean_queue_length: float      # requests waiting for admission, time-averaged
    steps: int
    events: int                   # SimPy events processed
    utilization: Utilization
    kv_capacity_bytes: float
    rate_per_s: float | None = None  # arrivals `load:F`: the Poisson rate that load came to (requests/s)
    mode_label: str = ""             # what `mode` is on this profile (HostSpec.mode_label); "" = `mode`
    # what-ifs set on the profile (`--set`): parameter path -> the value it got (JSON only, where any)
    overrides: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object; `overrides` (path -> value) after the profile's name when a what-if set any."""
        out = asdict(self)
        overrides = out.pop("overrides")
        if not overrides:
            return out
        return {**{k: v for k, v in out.items() if k == "profile"}, "overrides": dict(overrides),
                **{k: v for k, v in out.items() if k != "profile"}}

    def to_row(self) -> dict[str, Any]:
        """A serving sweep's row (`SERVING_METRICS`, plus the method served)."""
        return {"method": self.method, "rate_per_s": self.rate_per_s, "tokens_per_s": self.throughput_tokens_per_s,
                "tpot_p50_us": self.tpot_us.p50, "tpot_p99_us": self.tpot_us.p99, "ttft_p99_us": self.ttft_us.p99,
                "mean_batch": self.mean_batch, "util_compute": self.utilization.compute,
                "util_dram": self.utilization.dram, "token_passes_per_step": self.mean_tokens_per_step}


# The columns of a serving run's row in a sweep table (after the run's parameters).
SERVING_METRICS = ["rate_per_s", "tokens_per_s", "tpot_p50_us", "tpot_p99_us", "ttft_p99_us", "mean_batch",
                   "util_compute", "util_dram", "token_passes_per_step"]


def latency_summary(records: Sequence[RequestRecord], **facts: Any) -> dict[str, Any]:
    """The latency percentiles and throughputs of finished requests (the ServeResult fields they give)."""
    first = min(r.arrival_us for r in records)
    last = max(r.done_us for r in records)
    span = max(last - first, 1e-9)
    tokens = sum(r.tokens for r in records)
    return {
        "requests": len(records), "tokens": tokens, "makespan_us": span,
        "ttft_us": Percentiles.of([r.ttft_us for r in records]),
        "tpot_us": Percentiles.of([r.tpot_us for r in records if r.tokens > 1]),
        "e2e_us": Percentiles.of([r.e2e_us for r in records]),
        "queue_us": Percentiles.of([r.queue_us for r in records]),
        "throughput_tokens_per_s": tokens / span * 1e6,
        "throughput_requests_per_s": len(records) / span * 1e6,
        **facts,
    }
