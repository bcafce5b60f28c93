"""The one result type of a simulation, from the engine to the JSON, the sweep row and the figure.

`SimulationResult` holds one `MethodResult` per decoding method (SPEED first, then each
baseline) plus SPEED's schedule statistics. Units are in the field names. `to_dict()` is the
`--json` serialisation; `to_rows()` gives a sweep's tidy rows, whose columns are named in
`speedsim.simulate.schema` and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from speedsim.sharing import Sharing


@dataclass(frozen=True)
class MethodResult:
    """One decoding method's simulated decode of every sequence. Times in us, traffic in bytes.

    Per-token figures divide by the tokens decoded after the prefill (`tokens`).
    """

    method: str                             # speed | sequential | unshared | selfspec | specdec
    per_token_us: float                     # decode time (prefill excluded) per decoded token
    p50_token_us: float                     # median gap between emitted tokens
    p99_token_us: float                     # 99th-percentile gap between emitted tokens
    prefill_us: float                       # prefill time, summed over the sequences
    decode_us: float                        # decode time, summed over the sequences
    total_us: float                         # end of the last program (prefill and decode, all sequences)
    tokens: int                             # tokens decoded after the prefill
    e2e_per_token_us: float                 # total_us over every emitted token, position 0 included
    kernels: int                            # kernels simulated
    dram_bytes_per_token: float             # decode steps only (as every per-token figure)
    dram_weights_bytes_per_token: float
    dram_kv_bytes_per_token: float
    dram_activations_bytes_per_token: float
    dram_embeddings_bytes_per_token: float  # token embeddings and the LM head
    onchip_bytes_per_token: float
    flops_per_token: float
    util_compute: float                     # achieved FLOP/s over the datasheet matrix peak
    util_dram: float                        # fraction of time DRAM streams at its achievable rate
    util_device_busy: float                 # fraction of time a kernel runs
    util_host: float                        # fraction of time the host issues work
    roofline_us_per_token: float            # closed-form lower bound per kernel, summed, per token (decode)
    prefill_dram_bytes: float               # the prefill's DRAM bytes, summed over the sequences
    prefill_flops: float                    # the prefill's FLOPs, summed over the sequences
    host_us_per_token: float                # host round trip per decode step (copy, sync, controller), per token
    speedup: float                          # SPEED's speedup over this method: its per_token_us over SPEED's (1 for SPEED)
    memory_bytes: float                     # device memory this method needs: weights, embeddings, KV (one sequence)
    memory_bytes_by_part: Mapping[str, float]  # ... by part: weights, embeddings, kv, cross_kv (JSON only)
    per_token_us_low: float = math.nan      # --bounds: per_token_us with the profile's ranges at their fast end
    per_token_us_high: float = math.nan     # ... and at their slow end (NaN without --bounds)
    # speculative methods (selfspec, specdec) only, NaN for the others (and left out of their JSON): the
    # window simulated (auto: the best), the drafts' acceptance probability and tokens per iteration
    gamma: float = math.nan
    acceptance_rate: float = math.nan
    tokens_per_iteration: float = math.nan
    # decode time per token by cause (speedsim.engine.CAUSES; sums to per_token_us), JSON only
    time_by_cause_us_per_token: Mapping[str, float] = field(default_factory=dict)
    # per kernel class: time, bytes, FLOPs per token, intensity, bounding cause (speedsim.simulate.core), JSON only
    by_kernel_class: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def with_speedup(self, speed_per_token_us: float) -> MethodResult:
        """This result with `speedup` set against SPEED's per-token time."""
        s = self.per_token_us / speed_per_token_us if speed_per_token_us else math.nan
        return replace(self, speedup=s)

    def with_bounds(self, *others: MethodResult) -> MethodResult:
        """This result with per_token_us_low/high spanning its own and `others`' per-token times."""
        times = [self.per_token_us, *(o.per_token_us for o in others)]
        return replace(self, per_token_us_low=min(times), per_token_us_high=max(times))


@dataclass(frozen=True)
class ScheduleSummary:
    """SPEED's schedule over all sequences (see `speedsim.pipeline.ScheduleStats`)."""

    steps: int                  # pipeline steps
    flushes: int                # misprediction events
    wasted_token_passes: int    # token-repeat passes of flushed or discarded computations
    mean_in_flight: float       # tokens computed per step
    first_exit_miss: float      # fraction of positions whose first exit differs from the final one


@dataclass(frozen=True)
class SimulationResult:
    """SPEED and its baselines decoding the same traces on one profile."""

    profile: str
    model: str
    sharing: Sharing
    mode: str                         # graph | eager
    sequences: int
    speed: MethodResult
    baselines: Mapping[str, MethodResult]
    schedule: ScheduleSummary
    notes: tuple[str, ...] = ()        # what an architect should know about the run (not errors)
    mode_label: str = ""               # what `mode` is on this profile (HostSpec.mode_label); "" = `mode`
    # what-ifs set on the profile (`--set`): parameter path -> the value it got (JSON only, where any)
    overrides: Mapping[str, float] = field(default_factory=dict)

    def methods(self) -> Iterator[MethodResult]:
        """SPEED, then each baseline."""
        yield self.speed
        yield from self.baselines.values()

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: run facts and SPEED's figures at the top (its `memory_bytes` too), each
        baseline's figures (its own `memory_bytes` among them) nested under `baselines`; `overrides` (path ->
        value) after the profile's name when a what-if set any of its parameters."""
        head = {"profile": self.profile, **({"overrides": dict(self.overrides)} if self.overrides else {}),
                "model": self.model, "sharing": str(self.sharing), "mode": self.mode,
                "mode_label": self.mode_label or self.mode, "sequences": self.sequences}
        speed = _figures(self.speed)
        base = {name: _figures(r) for name, r in self.baselines.items()}
        return {**head, **speed, **asdict(self.schedule), "baselines": base, "notes": list(self.notes)}

    def to_rows(self) -> list[dict[str, Any]]:
        """One tidy row per method (SPEED first); schedule columns are NaN for the baselines. `mode` is
        the mode simulated (eager on a host without a graph mode, whatever the run asked for)."""
        common = {"U": self.sharing.unique, "R": self.sharing.repeats, "depth": self.sharing.depth,
                  "sequences": self.sequences, "mode": self.mode}
        blank = dict.fromkeys((f.name for f in fields(ScheduleSummary)), math.nan)
        rows = [{**common, **_row(self.speed), **asdict(self.schedule)}]
        rows += [{**common, **_row(r), **blank} for r in self.baselines.values()]
        return rows


def _figures(r: MethodResult) -> dict[str, Any]:
    """A method's figures for the JSON (its name is the key it sits under)."""
    out = {k: v for k, v in asdict(r).items() if k != "method" and not (k in SPECULATION and math.isnan(v))}
    out["memory_bytes_by_part"] = dict(r.memory_bytes_by_part)
    return out


def _row(r: MethodResult) -> dict[str, Any]:
    """A method's flat figures for a table row (the by-part breakdown stays in the JSON)."""
    row = {k: v for k, v in asdict(r).items() if k != "memory_bytes_by_part" and k not in SPECULATION}
    if not math.isnan(r.gamma):  # a speculative method's own columns (a run's `gamma` column is the one asked for)
        row.update({SPECULATION_COLUMNS[k]: getattr(r, k) for k in SPECULATION})
    return row


SPECULATION = ("gamma", "acceptance_rate", "tokens_per_iteration")  # a speculative method's own figures
# ... as a sweep's columns, where a run has a speculative method
SPECULATION_COLUMNS = {"gamma": "gamma_simulated", "acceptance_rate": "acceptance_rate",
                       "tokens_per_iteration": "tokens_per_iteration"}

