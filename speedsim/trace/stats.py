"""Statistics of exit traces: exit agreement, and the SPEED schedule they induce.

Agreement and lengths come from the traces alone. Flushes and tokens in flight come from
replaying each trace through the pipeline controller (`speedsim.pipeline.replay`) under a
policy (default: the first exit launches, every later exit verifies) and pooling the
schedules with `speedsim.pipeline.schedule_stats`.
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
    """Replay every trace through the pipeline controller and pool the schedules' statistics.

    Keys are those of `speedsim.pipeline.ScheduleStats` (steps, emitted, flushes,
    flushed_tokens, discarded_tokens, token_passes, wasted_passes, mean_in_flight: tokens
    computed per step), plus per-output-token rates. The controller counts the token of the
    prefill outside the steps; here `flushes_per_token` and `steps_per_token` divide by all
    output tokens (trace positions), which is what a user means by "per emitted token".
    """
    from speedsim.pipeline import Policy, replay
    from speedsim.pipeline import schedule_stats as pooled

    policy = policy if policy is not None else Policy()
    st = pooled([replay(tr, policy) for tr in traces])
    out: dict[str, float] = {k: v for k, v in st.to_dict().items() if k not in ("flushes_per_token", "steps_per_token")}
    tokens = max(sum(len(t.exits) for t in traces), 1)
    out["flushes_per_token"] = st.flushes / tokens
    out["flushed_tokens_per_token"] = st.flushed_tokens / tokens
    out["steps_per_token"] = st.steps / tokens
    return out


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
