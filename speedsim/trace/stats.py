"""Statistics of exit traces: exit agreement, and the SPEED schedule they induce.

Agreement and lengths come from the traces alone. Flushes and tokens in flight come from
replaying each trace through the pipeline controller (`speedsim.pipeline.replay`) under a
policy (default: the first exit launches, every later exit verifies) and pooling the
schedules with `speedsim.pipeline.schedule_stats`, the one definition of every schedule
statistic (per-token rates divide by all generated positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speedsim.pipeline import Policy, ScheduleStats, replay, schedule_stats
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


def trace_schedule_stats(traces: Sequence[ExitTrace], policy: Policy | None = None) -> ScheduleStats:
    """Replay every trace through the pipeline controller and pool the schedules' statistics."""
    return schedule_stats([replay(tr, policy) for tr in traces], output_tokens=sum(len(t.exits) for t in traces))


def trace_stats(traces: Sequence[ExitTrace], policy: Policy | None = None, replay_schedule: bool = True) -> dict[str, Any]:
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
        out.update(trace_schedule_stats(traces, policy).to_dict())
    return out
