"""Synthetic exit traces, parameterised by how often each exit agrees with the final one.

Model ("settling exit"): for each position the exits predict some wrong token (one
distractor per position) up to a settling exit `k`, and the final token from `k` on. So
exit `r` agrees with the final exit iff `k <= r`, and `agreement[r] = P(k <= r)` is a CDF:
non-decreasing, with `agreement[R-1] = 1`. A position with `k > 0` changes its prediction
exactly once, which is one flush under SPEED's default policy.

Bursty option: whether the first exit misses (`k > 0`) follows a two-state Markov chain
with `P(miss | previous missed) = burst`; the chance after a hit is set so the long-run miss
rate stays `1 - agreement[0]`. `burst = 1 - agreement[0]` is the independent case.

Flip patterns (`patterns`, set by `fit`): in a real model the exits before the settling one
may also disagree among themselves (exit 0 says A, exit 1 B, exit 2 the final C), and each
change of prediction is a flush. A pattern is the string of R-1 bits "exit r differs from
exit r-1", r = 1..R-1 (its last 1 is at the settling exit); with patterns, a missed position
draws its pattern from their distribution instead of drawing `k` alone, so flushes and wasted
work per token follow the real trace, not only its miss rate.

`fit(traces)` estimates every parameter from real traces. Randomness comes from a seeded
`numpy.random.Generator`, never from global state.

A workload as users give it (`--synthetic TEXT`, a sweep run's keys) is
`speedsim.trace.workload.SyntheticWorkload`, which checks it and builds the spec here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from speedsim import defaults
from speedsim.trace.schema import ExitTrace


class SyntheticSpec(BaseModel):
    """Parameters of synthetic traces. Lengths in tokens; probabilities in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repeats: int = Field(ge=1, description="R: number of exits")
    agreement: list[float] = Field(
        description="P(exit r predicts the final token), r = 0..R-1; the last is 1 and may be omitted"
    )
    burst: float | None = Field(None, ge=0, le=1, description="P(first exit misses | it missed at the previous position); None: independent")
    lengths: list[int] = Field([defaults.OUT_LEN], min_length=1, description="output lengths in tokens, sampled uniformly per sequence")
    src_lens: list[int] = Field([defaults.SRC_LEN], min_length=1, description="source lengths in tokens, sampled uniformly per sequence")
    vocab_size: int = Field(32000, ge=2, description="token ids are drawn from [0, vocab_size)")
    eos_id: int | None = Field(None, description="recorded in the traces; never drawn as a token")
    patterns: dict[str, float] | None = Field(
        None, description="P(flip pattern | first exit missed): R-1 bits 'exit r differs from exit r-1' per missed "
        "position; consistent with `agreement` (set by `fit`)"
    )
    eos_final: float = Field(
        0.0, ge=0, le=1, description="P(a sequence ends on eos_id, as a decode that stopped on <eos>): SPEED then "
        "discards the tokens in flight past it"
    )
    in_order: bool = Field(False, description="sequence i takes lengths[i] and src_lens[i] (cycling), not random ones")

    @model_validator(mode="after")
    def _check(self) -> SyntheticSpec:
        a = list(self.agreement)
        if len(a) == self.repeats - 1:
            a = a + [1.0]
        if len(a) != self.repeats:
            raise ValueError(f"agreement has {len(self.agreement)} entries, expected R-1 or R = {self.repeats}")
        if any(not 0 <= p <= 1 for p in a) or a[-1] != 1.0:
            raise ValueError("agreement values must lie in [0, 1] and the final exit's must be 1")
        if any(a[i] > a[i + 1] + 1e-12 for i in range(len(a) - 1)):
            raise ValueError("agreement must be non-decreasing over exits (settling model)")
        if any(n < 1 for n in self.lengths) or any(n < 0 for n in self.src_lens):
            raise ValueError("lengths must be >= 1 and src_lens >= 0")
        object.__setattr__(self, "agreement", a)  # normalised once, at construction
        if self.patterns is not None:
            self._check_patterns()
        if self.eos_final > 0 and self.eos_id is None:
            raise ValueError("eos_final needs an eos_id")
        if self.burst is not None:
            m = 1 - a[0]
            if m == 1 and self.burst < 1:  # every position misses: P(miss | missed) is 1, whatever burst says
                raise ValueError(f"burst {self.burst:g} contradicts a miss rate of 1 (every position misses, "
                                 "so a miss always follows a miss: burst 1)")
            # (fit's own clamp may round just above 1)
            if 0 < m < 1 and m * (1 - self.burst) / (1 - m) > 1 + 1e-9:
                raise ValueError(f"burst {self.burst} is too low for a miss rate of {m:.3f}")
        return self

    def _check_patterns(self) -> None:
        assert self.patterns is not None
        R = self.repeats
        if not self.patterns or any(len(b) != R - 1 or set(b) - {"0", "1"} or "1" not in b for b in self.patterns):
            raise ValueError(f"patterns must be strings of {R - 1} bits with at least one 1")
        total = sum(self.patterns.values())
        if any(p < 0 for p in self.patterns.values()) or abs(total - 1) > 1e-6:
            raise ValueError("pattern probabilities must be >= 0 and sum to 1")
        implied = np.zeros(R)
        for bits, p in self.patterns.items():
            implied[bits.rindex("1") + 1] += p
        if self.miss_rate > 0 and np.abs(implied - self.settle_probs()).max() > 1e-6:
            raise ValueError("patterns disagree with agreement (their last 1 is the settling exit)")

    @property
    def miss_rate(self) -> float:
        """Long-run first-exit misprediction rate, 1 - agreement[0]."""
        return 1.0 - self.agreement[0]

    def _hit_to_miss(self) -> float:
        m = self.miss_rate
        if self.burst is None or m in (0.0, 1.0):
            return m
        return min(1.0, m * (1 - self.burst) / (1 - m))  # keeps the stationary miss rate at m

    def settle_probs(self) -> np.ndarray:
        """P(k = r) given that the first exit missed (k >= 1), r = 0..R-1."""
        a = np.asarray(self.agreement)
        m = 1 - a[0]
        p = np.diff(np.concatenate([[0.0], a]))
        p[0] = 0.0
        return p / m if m > 0 else p


def generate(spec: SyntheticSpec, n: int, seed: int = 0, name: str = "synthetic") -> list[ExitTrace]:
    """`n` synthetic traces drawn under `spec` with `numpy.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    R, m = spec.repeats, spec.miss_rate
    settle = spec.settle_probs()
    hit_to_miss = spec._hit_to_miss()
    miss_to_miss = spec.burst if spec.burst is not None else m
    V = spec.vocab_size
    patterns = list(spec.patterns) if spec.patterns else None
    pattern_p = np.array(list(spec.patterns.values())) / sum(spec.patterns.values()) if spec.patterns else None
    out = []
    for i in range(n):
        if spec.in_order:
            T, src_len = spec.lengths[i % len(spec.lengths)], spec.src_lens[i % len(spec.src_lens)]
        else:
            T, src_len = int(rng.choice(spec.lengths)), int(rng.choice(spec.src_lens))
        final = _draw_tokens(rng, T, V, spec.eos_id)
        if spec.eos_final > 0 and rng.random() < spec.eos_final:
            final[-1] = spec.eos_id
        wrong = (final + rng.integers(1, V, size=T)) % V  # != final
        prev_miss = rng.random() < m  # start from the stationary distribution
        exits = []
        for t in range(T):
            p = miss_to_miss if prev_miss else hit_to_miss
            miss = bool(rng.random() < p) if R > 1 else False
            if patterns is not None and miss:
                exits.append(_flipped_row(patterns[int(rng.choice(len(patterns), p=pattern_p))], int(final[t]), V, rng))
            else:
                k = int(rng.choice(R, p=settle)) if miss else 0
                exits.append([int(wrong[t]) if r < k else int(final[t]) for r in range(R)])
            prev_miss = miss
        out.append(ExitTrace(seq_id=f"{name}-{i}", src_len=src_len, repeats=R, exits=exits, eos_id=spec.eos_id, model=name))
    return out


def _flipped_row(bits: str, final: int, V: int, rng: np.random.Generator) -> list[int]:
    """Predictions of exits 0..R-1 ending in `final` that change exactly where `bits` has a 1
    (bit r-1: exit r differs from exit r-1); every prediction before the last change is wrong."""
    row = [final]
    for b in reversed(bits):  # from the final exit back to exit 0
        if b == "1":  # a new wrong token, neither the final one nor the one after it
            tok = int(rng.integers(0, V))
            while tok in (final, row[-1]) and V > 2:
                tok = int(rng.integers(0, V))
            row.append(tok)
        else:
            row.append(row[-1])
    return row[::-1]


def _draw_tokens(rng: np.random.Generator, T: int, V: int, eos_id: int | None) -> np.ndarray:
    tok = rng.integers(0, V, size=T)
    if eos_id is not None and 0 <= eos_id < V:
        tok = np.where(tok == eos_id, (tok + 1) % V, tok)
    return tok


def fit(traces: Sequence[ExitTrace], bursty: bool = True) -> SyntheticSpec:
    """Estimate a `SyntheticSpec` from real traces (all with the same R).

    agreement[r]: fraction of positions whose exits r..R-1 all equal the final token (the
    settling exit is <= r). This equals plain per-exit agreement when predictions never flip
    back, and is the value that preserves the settling model's flush count otherwise.
    burst: P(first exit misses | it missed at the previous position of the same sequence).
    patterns: the distribution of flip patterns over missed positions (see the module doc).
    eos_final: the fraction of traces that stopped on <eos>.
    lengths, src_lens: the empirical lists, in order (`in_order`: n fitted sequences have the
    real ones' lengths).
    """
    if not traces:
        raise ValueError("fit needs at least one trace")
    R = traces[0].repeats
    if any(t.repeats != R for t in traces):
        raise ValueError("fit needs traces with one R")
    settled = np.zeros(R)
    n_pos = 0
    mm = m_prev = 0
    counts: dict[str, int] = {}
    for tr in traces:
        prev = None
        for row in tr.exits:
            k = settle_exit(row)
            settled[k:] += 1
            n_pos += 1
            miss = k > 0
            if miss:  # exits k.. agree and exit k-1 does not: the pattern's last 1 is at exit k
                bits = "".join("1" if row[r] != row[r - 1] else "0" for r in range(1, R))
                counts[bits] = counts.get(bits, 0) + 1
            if prev is not None and prev:
                m_prev += 1
                mm += miss
            prev = miss
    agreement = (settled / max(n_pos, 1)).tolist()
    agreement[-1] = 1.0
    burst = None
    if bursty and R > 1 and m_prev > 0:
        burst = mm / m_prev
        # keep the chain valid when a short trace gives an inconsistent estimate
        m = 1 - agreement[0]
        if m < 1 and m * (1 - burst) / (1 - m) > 1:
            burst = (2 * m - 1) / m
    eos = next((t.eos_id for t in traces if t.eos_id is not None), None)
    n_miss = sum(counts.values())
    return SyntheticSpec(
        repeats=R,
        agreement=agreement,
        burst=burst,
        lengths=[max(1, len(t.exits)) for t in traces],
        src_lens=[t.src_len for t in traces],
        eos_id=eos,
        patterns={b: c / n_miss for b, c in sorted(counts.items())} if n_miss else None,
        eos_final=sum(1 for t in traces if eos is not None and t.exits and t.exits[-1][-1] == eos) / len(traces),
        in_order=True,
    )


def settle_exit(row: Sequence[int]) -> int:
    """Smallest exit r such that exits r..R-1 all predict the final token."""
    k = len(row) - 1
    while k > 0 and row[k - 1] == row[-1]:
        k -= 1
    return k
