"""A synthetic trace fitted to a real one stands in for it (issue 10).

The shipped exit traces of the trained 4x3 and 2x6 models, and synthetic traces fitted to
them (`speedsim.trace.fit`: settle-exit distribution, flip patterns, burstiness, lengths in
order, stops on <eos>), at the same lengths:
- replayed through the pipeline controller, give the same schedule statistics (fast);
- simulated, give SPEED speedups within 5% of each other (`recipe`: about 40 s; CI runs it).
"""

from __future__ import annotations

import pytest

from speedsim.hardware import load_profile
from speedsim.paths import TRACE_DIR
from speedsim.sharing import Sharing
from speedsim.simulate import simulate
from speedsim.trace import ExitTrace, fit, read_traces, trace_stats
from speedsim.trace.synthetic import generate
from speedsim.workload.models import get_model


def real_and_fitted(name: str) -> tuple[list[ExitTrace], list[ExitTrace]]:
    real = read_traces(TRACE_DIR / f"{name}.jsonl.gz")
    fitted = generate(fit(real), len(real), seed=0)
    assert [len(t.exits) for t in fitted] == [len(t.exits) for t in real]  # the same lengths, in order
    return real, fitted


@pytest.mark.parametrize("name", ["4x3", "2x6"])
def test_fitted_trace_replays_like_the_real_one(name: str) -> None:
    real, fitted = (trace_stats(t) for t in real_and_fitted(name))
    assert fitted["steps_per_token"] == pytest.approx(real["steps_per_token"], rel=0.05)
    assert fitted["first_exit_miss"] == pytest.approx(real["first_exit_miss"], rel=0.15)
    assert fitted["flushes_per_token"] == pytest.approx(real["flushes_per_token"], rel=0.15)
    assert fitted["wasted_passes_per_token"] == pytest.approx(real["wasted_passes_per_token"], rel=0.15)


@pytest.mark.recipe
@pytest.mark.parametrize("profile", ["h200", "l4"])
@pytest.mark.parametrize("name", ["4x3", "2x6"])
def test_fitted_trace_gives_the_real_speedup(name: str, profile: str) -> None:
    real, fitted = real_and_fitted(name)
    hw, spec, sharing = load_profile(profile), get_model("t5base"), Sharing.parse(name)

    def speedup(traces: list[ExitTrace]) -> float:
        r = simulate(hw, spec, sharing, traces, baselines=("unshared",))
        return r.baselines["unshared"].per_token_us / r.speed.per_token_us

    real_x, fit_x = speedup(real), speedup(fitted)
    assert real_x > 1.05  # SPEED pays off on these traces, so the comparison means something
    assert fit_x == pytest.approx(real_x, rel=0.05)
