"""Greedy speculative decoding along the greedy path: its iterations, from which drafts match.

Speculative decoding with a window of `gamma` (Leviathan et al. 2023, arXiv 2211.17192, greedy case;
self-speculation from an early exit as in LayerSkip, Elhoushi et al. 2024, arXiv 2404.16710, and
Draft & Verify, Zhang et al. 2023, arXiv 2309.08168) runs in iterations. An iteration starts with
`n` tokens committed (positions 0..n-1; position 0 comes from the prefill) and

1. drafts `g` tokens, one draft step each: the drafts of positions n, n+1, ..., n+g-1;
2. verifies them in one step of the target over g + 1 positions (n..n+g), which gives the
   target's greedy token at each of them;
3. accepts the longest prefix of drafts equal to the target's tokens (k of them) and emits k + 1
   tokens: the k accepted drafts and the target's own token after them; the KV entries of the
   rejected positions are rolled back.

Along the greedy path the draft of position t, once every earlier draft was accepted, sees the
same prefix as greedy decoding did: so whether it matches is a property of the position alone,
`matches[t]` (for self-speculation from exit e, whether exit e's prediction of position t in the
exit trace equals the final exit's; for a draft model, whether its greedy prediction on the
target's path equals the target's token). `iterations` turns those flags into the iterations,
exactly as `speedsim.decode.self_speculative` and `draft_speculative` run them (tested).

`g` is `gamma`, or fewer where the decode's token cap is near: a draft whose position lies past
the cap could never be emitted. A sequence that did not stop on <eos> ended at its cap; for one
that did, the cap is not recorded, and the full window is drafted (the cap only binds when <eos>
falls within a window of it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Iteration:
    """One draft-and-verify iteration: `drafted` draft tokens, `emitted` tokens out of the verify step;
    `rejected`: a draft was rejected (not: the window ran past the sequence's end). Two iterations are
    equal when they draft and emit the same (a decoder that stopped on <eos> may judge drafts past it)."""

    drafted: int
    emitted: int
    rejected: bool = field(default=False, compare=False)

    @property
    def accepted(self) -> int:
        """Drafts the target accepted (the tokens emitted but the verifier's own)."""
        return self.emitted - 1


def iterations(matches: Sequence[bool], length: int, gamma: int, cap: int | None = None) -> list[Iteration]:
    """The iterations of a greedy speculative decode of a sequence of `length` tokens (position 0
    from the prefill), `matches[t]` telling whether the draft of position t is the greedy token
    (`matches[0]` is not used). `cap`: the decode's token cap (None: `length`, a decode that ended
    at its cap; give it for one that stopped on <eos> if it is known)."""
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if len(matches) < length:
        raise ValueError(f"{len(matches)} match flags for {length} positions")
    limit = length if cap is None else cap
    out: list[Iteration] = []
    n = 1
    while n < length:
        g = max(0, min(gamma, limit - n - 1))
        k = 0
        while k < g and n + k < length and matches[n + k]:
            k += 1
        emitted = min(k + 1, length - n)
        out.append(Iteration(g, emitted, rejected=k < g and n + k < length))
        n += emitted
    return out


def self_spec_matches(exits: Sequence[Sequence[int]], draft_exit: int) -> list[bool]:
    """Per position, whether exit `draft_exit`'s prediction (exits[t][draft_exit]) is the emitted token."""
    return [row[draft_exit] == row[-1] for row in exits]


def draft_matches(target_tokens: Sequence[int], draft_tokens: Sequence[int]) -> list[bool]:
    """Per position, whether the draft model's prediction on the target's path is the target's token."""
    if len(draft_tokens) != len(target_tokens):
        raise ValueError(f"{len(draft_tokens)} draft predictions for {len(target_tokens)} target tokens")
    return [d == t for d, t in zip(draft_tokens, target_tokens, strict=True)]


def iid_matches(length: int, alpha: float, seed: int) -> list[bool]:
    """Independent matches of probability `alpha` (the i.i.d. acceptance model of Leviathan et al.)."""
    rng = random.Random(seed)
    return [True] + [rng.random() < alpha for _ in range(length - 1)]


@dataclass(frozen=True)
class AcceptanceModel:
    """Draft matches as a two-state Markov chain, fitted to real ones: `rate` = P(match) and `stay` =
    P(match | the previous position matched), so that runs of accepted drafts are as long as the real ones
    (i.i.d. acceptance is `stay == rate`). Generated sequences start in the stationary distribution."""

    rate: float
    stay: float
    positions: int = 0  # the positions fitted on (0: not fitted)

    @property
    def recover(self) -> float:
        """P(match | the previous position did not match), the value that keeps `rate` stationary."""
        if self.rate >= 1.0:
            return 1.0
        return min(1.0, max(0.0, self.rate * (1.0 - self.stay) / (1.0 - self.rate)))

    @classmethod
    def fit(cls, runs: Sequence[Sequence[bool]]) -> AcceptanceModel:
        """The chain of match sequences `runs` (each from position 1: position 0 comes from the prefill)."""
        n = sum(len(r) - 1 for r in runs if len(r) > 1)
        if n < 2:
            raise ValueError("fewer than two positions to fit")
        hits = sum(sum(r[1:]) for r in runs)
        after_hit = sum(1 for r in runs for a, _ in zip(r[1:], r[2:], strict=False) if a)
        both = sum(1 for r in runs for a, b in zip(r[1:], r[2:], strict=False) if a and b)
        rate = hits / n
        stay = both / after_hit if after_hit else rate
        return cls(rate, stay, n)

    def matches(self, length: int, seed: int) -> list[bool]:
        rng = random.Random(seed)
        out = [True]
        previous = rng.random() < self.rate
        for _ in range(length - 1):
            out.append(previous)
            previous = rng.random() < (self.stay if previous else self.recover)
        return out


@dataclass(frozen=True)
class Acceptance:
    """What a set of iterations says about the drafts: `rate` is the per-draft acceptance probability
    estimated as Leviathan et al. define it (accepted / (accepted + rejected), a rejection being an
    iteration that accepted fewer than it drafted); `tokens_per_iteration` the mean tokens emitted."""

    iterations: int
    drafted: int
    accepted: int
    rejected: int
    tokens: int

    @property
    def rate(self) -> float:
        judged = self.accepted + self.rejected
        return self.accepted / judged if judged else 0.0

    @property
    def tokens_per_iteration(self) -> float:
        return self.tokens / self.iterations if self.iterations else 0.0


def acceptance(runs: Sequence[Sequence[Iteration]]) -> Acceptance:
    """`Acceptance` over every sequence's iterations."""
    its = [it for run in runs for it in run]
    return Acceptance(iterations=len(its), drafted=sum(it.drafted for it in its),
                      accepted=sum(it.accepted for it in its),
                      rejected=sum(it.rejected for it in its), tokens=sum(it.emitted for it in its))
