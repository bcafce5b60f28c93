"""The report's design-space section (issue 23 item 7): it exists, its figures exist, and its numbers are its data's."""

from __future__ import annotations

import re

import pandas as pd

from speedsim.paths import ROOT
from speedsim.report.design_space import PANELS, factor
from speedsim.report.markdown import times
from speedsim.sweep import load_spec
from speedsim.sweep.spec import expand

REPORTS = ROOT / "reports"


def test_spec_expands_reduced_and_full():
    spec = ROOT / "experiments" / "design_space.yaml"
    reduced = expand(load_spec(spec, reduced=True), str(spec))
    full = expand(load_spec(spec), str(spec))
    assert {r.label for r in full} == set(PANELS) == {r.label for r in reduced}
    assert len(reduced) < len(full)
    assert all(r.limit for r in reduced) and not any(r.limit for r in full)
    assert factor("x0.25") == 0.25 and factor(None) == 1.0


def test_section_figures_and_numbers_are_the_data():
    text = (REPORTS / "README.md").read_text(encoding="utf-8")
    section = text.split("## What hardware makes SPEED pay", 1)[1]
    for fig in ("figures/design_space.png", "figures/sensitivity_tornado.png"):
        assert f"]({fig})" in section and (REPORTS / fig).stat().st_size > 0
    grid = pd.read_csv(REPORTS / "data" / "design_space.csv")
    m = re.search(r"Over all (\d+) designs .* runs from ([\d.]+x) .* to ([\d.]+x) ", section)
    assert m, "the summary line"
    assert int(m.group(1)) == grid["run_key"].nunique()
    assert m.group(2) == times(float(grid["speedup_vs_unshared"].min()))
    assert m.group(3) == times(float(grid["speedup_vs_unshared"].max()))
    # every panel's largest speedup, as the reading gives it, is the grid's
    for (label, profile, model), part in grid.groupby(["label", "profile", "model"]):
        kind = "bandwidth x kernel costs" if label == "bw_x_latency" else "capacity x bandwidth"
        line = next(s for s in section.splitlines() if s.startswith(f"- **{profile}, {model}** ({kind})"))
        assert f"largest {times(float(part['speedup_vs_unshared'].max()))} at" in line
        assert f"smallest {times(float(part['speedup_vs_unshared'].min()))} at" in line
    # the sensitivity table's first parameter per profile is the data's largest |elasticity|
    sens = pd.read_csv(REPORTS / "data" / "sensitivity.csv")
    for profile, part in sens.groupby("profile"):
        top = part.loc[part["elasticity"].abs().idxmax()]
        assert f"| {profile} | " in section and f"{top['parameter']} ({top['elasticity']:+.2f})" in section
