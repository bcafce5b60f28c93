"""Statistics of exit traces: exit agreement, and the SPEED schedule they induce.

Agreement and lengths come from the traces alone. Flushes and tokens in flight come from
replaying each trace through the pipeline controller (`speedsim.pipeline.replay`) under a
policy (default: the first exit launches, every later exit verifies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speedsim.trace.schema import ExitTrace


def exit_agreement(traces: Sequence[ExitTrace]) -> list[float]:
    """Per exit r, the fraction of generated positions where exit r predicts the final token."""
    if not traces:
        return []
    R = traces[0].repeats
    rows = [row for t in traces for row in t.exits]
    if not rows:
        return [float("nan")] * R
    a = np.asarray(rows)  # (positions, R)
    return (a == a[:, -1:]).mean(axis=0).tolist()


def length_stats(traces: Sequence[ExitTrace]) -> dict[str, float]:
    """Output lengths in tokens: mean, median, min, max."""
    n = np.array([len(t.exits) for t in traces]) if traces else np.zeros(1)
    return {"mean": float(n.mean()), "median": float(np.median(n)), "min": int(n.min()), "max": int(n.max())}


def schedule_stats(traces: Sequence[ExitTrace], policy: Any = None) -> dict[str, float]:
    """Replay every trace; pooled flushes, steps and tokens in flight.

    flush_events: steps at which at least one token was flushed; flushed_tokens: tokens
    discarded in all. Per-token figures divide by emitted tokens; mean_in_flight is the mean
    over all steps of the number of tokens in the pipeline.
    """
    from speedsim.pipeline import Policy, replay

    policy = policy if policy is not None else Policy()
    steps = flush_events = flushed = emitted = in_flight = 0
    for tr in traces:
        for s in replay(tr, policy):
            steps += 1
            n_fl = len(s.flushed)
            flush_events += n_fl > 0
            flushed += n_fl
            emitted += len(s.emitted)
            in_flight += len(s.in_flight)
    per = max(emitted, 1)
    return {
        "steps": steps,
        "emitted": emitted,
        "flush_events": flush_events,
        "flushed_tokens": flushed,
        "flushes_per_token": flush_events / per,
        "flushed_tokens_per_token": flushed / per,
        "steps_per_token": steps / per,
        "mean_in_flight": in_flight / max(steps, 1),
    }


def trace_stats(traces: Sequence[ExitTrace], policy: Any = None, replay_schedule: bool = True) -> dict[str, Any]:
    """Everything `speedsim trace` prints, as one JSON-ready dict."""
    if not traces:
        raise ValueError("no traces")
    R = traces[0].repeats
    if any(t.repeats != R for t in traces):
        raise ValueError("traces with different R cannot be pooled")
    agree = exit_agreement(traces)
    out: dict[str, Any] = {
        "sequences": len(traces),
        "tokens": sum(len(t.exits) for t in traces),
        "repeats": R,
        "agreement": agree,
        "first_exit_miss": 1.0 - agree[0] if agree else float("nan"),
        "lengths": length_stats(traces),
    }
    if replay_schedule:
        out.update(schedule_stats(traces, policy))
    return out
