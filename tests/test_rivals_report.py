"""The report's "SPEED and its rivals" section (issue 24): it exists, its figure exists, its numbers are its data's."""

from __future__ import annotations

import pandas as pd
import pytest

from speedsim.paths import ROOT
from speedsim.report.markdown import times
from speedsim.report.rivals import formula_speedup, rivals_table

REPORTS = ROOT / "reports"


def test_section_numbers_are_the_data():
    text = (REPORTS / "README.md").read_text(encoding="utf-8")
    section = text.split("## SPEED and its rivals", 1)[1]
    assert "](figures/rivals.png)" in section and (REPORTS / "figures" / "rivals.png").stat().st_size > 0
    table = pd.read_csv(REPORTS / "data" / "rivals.csv")
    assert set(table["method"]) == {"greedy", "SPEED", "selfspec", "specdec"}
    for profile, part in table.groupby("profile"):
        line = next(s for s in section.splitlines() if s.startswith(f"- **{profile}**: "))
        best = part[part["method"] != "greedy"].sort_values("per_token_us").iloc[0]
        assert line.startswith(f"- **{profile}**: {best['method']} {best['model']} is fastest "
                               f"({times(float(best['speedup_vs_greedy']))} over greedy)")
        for _, r in part.iterrows():  # every row's speedup is its greedy time over its own
            greedy = float(part[part["method"] == "greedy"]["per_token_us"].iloc[0])
            assert r["speedup_vs_greedy"] == pytest.approx(greedy / r["per_token_us"], rel=1e-9)


def test_rivals_table_picks_the_best_exit_and_measures_against_greedy():
    rows = [{"profile": "p", "sharing": "12x1", "method": "sequential", "per_token_us": 100.0},
            {"profile": "p", "sharing": "12x1", "method": "specdec", "per_token_us": 80.0, "draft_accept": 0.7,
             "gamma_simulated": 3.0, "acceptance_rate": 0.7, "tokens_per_iteration": 2.5},
            {"profile": "p", "sharing": "4x3", "method": "speed", "per_token_us": 50.0},
            {"profile": "p", "sharing": "4x3", "method": "selfspec", "per_token_us": 70.0, "draft_exit": None,
             "gamma_simulated": 2.0, "acceptance_rate": 0.8, "tokens_per_iteration": 2.4},
            {"profile": "p", "sharing": "4x3", "method": "selfspec", "per_token_us": 60.0, "draft_exit": 1.0,
             "gamma_simulated": 4.0, "acceptance_rate": 0.9, "tokens_per_iteration": 3.9}]
    results = pd.DataFrame([{**r, "status": "ok"} for r in rows])
    t = rivals_table(results)
    assert list(t["method"]) == ["greedy", "SPEED", "selfspec", "specdec"]
    best = t[t["method"] == "selfspec"].iloc[0]
    assert best["draft_exit"] == 1.0 and best["speedup_vs_greedy"] == pytest.approx(100 / 60)
    spec = t[t["method"] == "specdec"].iloc[0]
    assert formula_speedup(spec) == pytest.approx(2.5 / (3 * 2 / 12 + 1))


def test_the_load_table_is_the_data():
    """Under load: every cell's ratio is the method's tokens per second over greedy's at the same batch, and
    each profile's line names the data's fastest method at each batch."""
    text = (REPORTS / "README.md").read_text(encoding="utf-8")
    section = text.split("### Under load", 1)[1]
    load = pd.read_csv(REPORTS / "data" / "rivals_load.csv")
    for (profile, batch), at in load.groupby(["profile", "max_batch"]):
        greedy = float(at[at["method"] == "greedy"]["tokens_per_s"].iloc[0])
        assert at["throughput_vs_greedy"].to_numpy() == pytest.approx(at["tokens_per_s"].to_numpy() / greedy)
        top = at.sort_values("tokens_per_s", ascending=False).iloc[0]
        line = next(s for s in section.splitlines() if s.startswith(f"- **{profile}**: "))
        assert f"batch {batch}: {top['method']} {top['model']} ({top['throughput_vs_greedy']:.2f}x)" in line
