"""Statistics of a SPEED schedule (a list of `Step`s), in tokens and steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from speedsim.pipeline.controller import Step


@dataclass(frozen=True)
class ScheduleStats:
    """Counts over one schedule (or several, pooled).

    Per-token rates divide by `output_tokens`: every generated position, position 0 (emitted
    by the prefill, outside the steps) included, which is what a user means by "per token".
    """

    steps: int  # pipeline steps (batched passes through the U layers)
    emitted: int  # tokens emitted by the steps (position 0 comes from the prefill and is not counted)
    output_tokens: int  # generated positions in all: `emitted` plus each sequence's position 0
    flushes: int  # misprediction events (a verify exit disagreed with a launched successor)
    flushed_tokens: int  # token computations thrown away by flushes
    discarded_tokens: int  # token computations dropped when decoding ended (EOS)
    token_passes: int  # token-repeat passes computed in all
    wasted_passes: int  # passes of computations that were flushed or discarded
    mean_in_flight: float  # mean tokens computed per step

    @property
    def flushes_per_token(self) -> float:
        return self.flushes / max(self.output_tokens, 1)

    @property
    def flushed_tokens_per_token(self) -> float:
        return self.flushed_tokens / max(self.output_tokens, 1)

    @property
    def steps_per_token(self) -> float:
        return self.steps / max(self.output_tokens, 1)

    @property
    def wasted_passes_per_token(self) -> float:
        return self.wasted_passes / max(self.output_tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for rate in ("flushes_per_token", "flushed_tokens_per_token", "steps_per_token", "wasted_passes_per_token"):
            d[rate] = getattr(self, rate)
        return d


def schedule_stats(schedules: Sequence[Step] | Sequence[Sequence[Step]],
                   output_tokens: int | None = None) -> ScheduleStats:
    """Statistics of one schedule, or of several pooled (a list of schedules).

    `output_tokens`: generated positions of the decoded sequences (default: the steps'
    emitted tokens plus one position 0 per schedule; pass it when a sequence may be empty).
    """
    if schedules and not isinstance(schedules[0], Step):
        runs: list[Sequence[Step]] = list(schedules)  # type: ignore[arg-type]
    else:
        runs = [schedules]  # type: ignore[list-item]
    steps = emitted = flushes = flushed = discarded = passes = wasted = 0
    for run in runs:
        depth: dict[int, int] = {}  # passes made so far by each position's current computation
        for s in run:
            steps += 1
            emitted += len(s.emitted)
            flushes += len(s.mispredicted)
            flushed += len(s.flushed)
            discarded += len(s.discarded)
            passes += len(s.in_flight)
            for p, r, _ in s.in_flight:
                depth[p] = r + 1
            for p in (*s.flushed, *s.discarded):
                wasted += depth.pop(p, 0)
            for p in s.emitted:
                depth.pop(p, None)
    return ScheduleStats(
        steps=steps,
        emitted=emitted,
        output_tokens=emitted + len(runs) if output_tokens is None else output_tokens,
        flushes=flushes,
        flushed_tokens=flushed,
        discarded_tokens=discarded,
        token_passes=passes,
        wasted_passes=wasted,
        mean_in_flight=passes / max(steps, 1),
    )
