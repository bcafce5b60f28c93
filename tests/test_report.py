"""speedsim report: figures, data and README from a tiny study; deterministic output; missing traces."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import yaml

from speedsim.report.build import build_report, run_paper
from speedsim.report.content import ReportData
from speedsim.report.paper_md import paper_section
from speedsim.simulate import synthetic_traces
from speedsim.trace.io import write_traces

# The same block labels as experiments/default.yaml, on two profiles with short outputs.
TINY_STUDY = {
    "name": "tiny_study",
    "fixed": {"model": "t5base", "src_len": 32, "seed": 0},
    "blocks": [
        {"label": "weight_budget", "fixed": {"mispredict": 0.1, "out_len": 8},
         "axes": {"profile": ["h200", "gemmini"], "unique": [3], "repeats": [1, 2, 4]}},
        {"label": "fixed_depth", "fixed": {"mispredict": 0.1, "out_len": 8},
         "axes": {"profile": ["h200", "gemmini"], "depth": [6, 12], "repeats": [1, 2]}},
        {"label": "mispredict", "fixed": {"out_len": 8},
         "axes": {"profile": ["h200"], "sharing": ["4x3", "2x6"], "mispredict": [0.0, 0.3]}},
        {"label": "out_len", "axes": {"profile": ["h200"], "sharing": ["4x3"], "mispredict": [0.0],
                                      "out_len": [2, 8]}},
    ],
}

# experiments/design_space.yaml's two panels, 2 x 2 points each, on h200 only.
TINY_DESIGN = {
    "name": "design_space", "fixed": {"sharing": "4x3", "trace": "4x3", "mode": "graph", "limit": 1,
                                      "model": "t5base", "profile": "h200"},
    "blocks": [
        {"label": "bw_x_latency", "axes": {"set.memory.dram.bandwidth_GBps": ["x0.5", "x1"], "fixed_costs": [
            {"set.kernel.latency_us": "x1", "set.host.launch_overhead_us.graph": "x1"},
            {"set.kernel.latency_us": "x2", "set.host.launch_overhead_us.graph": "x2"}]}},
        {"label": "capacity_x_bw", "axes": {"set.memory.onchip.0.capacity_MiB": ["x1", "x4"],
                                            "set.memory.dram.bandwidth_GBps": ["x1", "x2"]}},
    ],
}

# experiments/rivals.yaml's blocks on h200, one sequence
TINY_RIVALS = {
    "name": "rivals", "fixed": {"model": "t5base", "mode": "graph", "limit": 1, "profile": "h200"},
    "blocks": [
        {"label": "shared", "fixed": {"baselines": []}, "axes": {"configs": [
            {"sharing": "4x3", "trace": "4x3", "methods": ["selfspec"], "draft_exit": 0},
            {"sharing": "2x6", "trace": "2x6", "methods": ["selfspec"], "draft_exit": 1}]}},
        {"label": "draft", "fixed": {"baselines": ["sequential"], "sharing": "12x1", "trace": "12x1",
                                     "methods": ["specdec"], "draft_depth": 2}, "axes": {"draft_accept": [0.75]}},
    ],
}

FIGURES = {"latency_vs_depth_h200", "latency_vs_depth_gemmini", "speedup_vs_mispredict",
           "speedup_vs_output_length", "dram_traffic_vs_depth", "roofline", "parity", "serving"}


def tiny_paper(tmp_path, equal_length: bool = True) -> dict:
    """A speed_paper-like spec on small trace files written here (R = 1 and R = 3), with (by
    default) the equal-length block of traces fitted to them."""
    write_traces(tmp_path / "deep.jsonl", synthetic_traces("perfect,len=6,seqs=2,src=16", 1))
    write_traces(tmp_path / "shared.jsonl", synthetic_traces("mispredict=0.2,len=6,seqs=2,src=16", 3))
    runs = [{"profile": "h200", "sharing": "12x1", "trace": str(tmp_path / "deep.jsonl"), "baselines": []},
            {"profile": "h200", "sharing": "4x3", "trace": str(tmp_path / "shared.jsonl")}]
    fitted = [{"profile": "h200", "sharing": "12x1", "fit": str(tmp_path / "deep.jsonl"), "baselines": []},
              {"profile": "h200", "sharing": "4x3", "fit": str(tmp_path / "shared.jsonl")}]
    blocks = [{"label": "paper", "runs": runs}]
    if equal_length:
        blocks.append({"label": "equal-length", "fixed": {"out_len": 8, "seqs": 2}, "runs": fitted})
    return {"name": "speed_paper", "fixed": {"model": "t5base"}, "blocks": blocks}


def write(tmp_path, spec: dict, name: str):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _report_inputs(tmp_path, monkeypatch) -> dict:
    """`build_report`'s arguments for a tiny study, paper comparison and serving study. The validation of
    the shipped measurements (deterministic simulations tested in test_validation) is computed once per
    process, so a second build checks the sweeps, figures and text."""
    import speedsim.report.build as build

    for name in ("run_validation", "run_cpu_validation", "noise_floor"):
        monkeypatch.setattr(build, name, _once(getattr(build, name)))
    study = write(tmp_path, TINY_STUDY, "study.yaml")
    paper = write(tmp_path, tiny_paper(tmp_path), "paper.yaml")
    configs = [{"sharing": "12x1", "serve_method": "unshared", "trace": str(tmp_path / "deep.jsonl")},
               {"sharing": "4x3", "serve_method": "speed", "trace": str(tmp_path / "shared.jsonl")}]
    serving = write(tmp_path, {"name": "serving", "fixed": {"model": "t5base"}, "blocks": [
        {"label": "curves", "fixed": {"requests": 4, "max_batch": 2},
         "axes": {"profile": ["h200"], "configs": configs, "arrivals": ["load:1.0"]}},
        {"label": "crossover", "fixed": {"arrivals": "poisson:1e9"},
         "axes": {"profile": ["h200"], "configs": configs,
                  "batch": [{"max_batch": 1, "requests": 8}, {"max_batch": 2, "requests": 8}]}}]}, "serving.yaml")
    # the design-space section on a 2 x 2 grid per panel of h200, and one profile's tornado
    import speedsim.report.design_space as design_space

    design = write(tmp_path, TINY_DESIGN, "design.yaml")
    monkeypatch.setattr(design_space, "sensitivity_table",
                        functools.partial(design_space.sensitivity_table, profiles=("h200",), limit=1))
    rivals = write(tmp_path, TINY_RIVALS, "rivals.yaml")
    return {"specs": (study,), "paper_spec": paper, "workers": 1, "progress": False, "cache": tmp_path / "cache",
            "serving_spec": serving, "design_spec": design, "rivals_spec": rivals}


@functools.cache
def _once(fn):
    return functools.cache(fn)


@pytest.mark.slow
def test_report_writes_figures_readme(tmp_path, monkeypatch):
    """Every figure, the data tables and the README are written, the figures without a timestamp."""
    first = build_report(tmp_path / "a", **_report_inputs(tmp_path, monkeypatch))
    assert first["failed_runs"] == 0 and first["paper"] == "ok"
    names = {f.removeprefix("figures/").removesuffix(".png") for f in first["figures"]}
    assert FIGURES | {"speed_paper", "design_space", "sensitivity_tornado", "rivals"} <= names
    readme = (tmp_path / "a" / "README.md").read_text()
    for figure in first["figures"]:
        assert f"]({figure})" in readme
        data = (tmp_path / "a" / figure).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"tEXt" not in data and b"tIME" not in data
    assert "MAPE graph" in readme and "MAPE eager" in readme and "**Reading.**" in readme
    # the per-step error says it is one, and the whole H200 decodes stand beside it with their own MAPE
    assert "an error per decode step" in readme and "## Whole decodes: what a user who times a decode loop sees" in readme
    assert "fitted on the 12x1/4x3 rows; the others are held out). MAPE **5.5%**, 3 of 5 rows simulated too fast, " \
           "worst held-out row 11.5%" in readme
    assert "| 2x6 | SPEED | 955.2 | 1064.8 | 11.5% | held out |" in readme
    assert "## What hardware makes SPEED pay" in readme
    assert "## SPEED and its rivals: speculative decoding on the same hardware" in readme and "- **h200**: " in readme
    assert "At one output length" in readme and "**Reading.** At 8 tokens" in readme
    assert "Diamonds are synthetic traces fitted to the same models" in readme  # h200 4x3 against its curve
    # the fixed-depth block's depths and repeats, as the tiny study ran them
    assert "Right panels: depths 6 to 12 reached with R = 1 (unshared), 2; solid SPEED" in readme
    assert (tmp_path / "a" / "data" / "study.csv").exists() and (tmp_path / "a" / "data" / "validation.csv").exists()


@pytest.mark.slow
def test_report_is_deterministic(tmp_path, monkeypatch):
    """A second build (resuming the sweep cache) is byte-identical: figures, data and text (two whole
    builds, ~9 s: CI runs it, `pytest -m slow`)."""
    kwargs = _report_inputs(tmp_path, monkeypatch)
    build_report(tmp_path / "a", **kwargs)
    build_report(tmp_path / "b", **kwargs)
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def test_report_with_missing_traces_says_so(tmp_path):
    """Missing exit traces do not stop the report: configs with traces run, the rest are named."""
    spec = tiny_paper(tmp_path, equal_length=False)
    spec["blocks"][0]["runs"][0]["trace"] = str(tmp_path / "missing.jsonl")
    paper, note = run_paper(write(tmp_path, spec, "paper.yaml"), tmp_path / "cache", 1, None, False)
    assert paper is not None and set(paper["sharing"]) == {"4x3"} and "missing.jsonl" in note
    empty = pd.DataFrame()
    data = ReportData(study=empty, paper=paper, paper_note=note, validation={}, mape={}, steps=empty, peaks={},
                      specs=[])
    assert any(line.startswith("Partial: no exit traces shipped yet") for line in paper_section(data))
    spec["blocks"][0]["runs"][1]["trace"] = str(tmp_path / "missing2.jsonl")
    paper, note = run_paper(write(tmp_path, spec, "paper.yaml"), tmp_path / "cache2", 1, None, False)
    assert paper is None
    data = ReportData(study=empty, paper=None, paper_note=note, validation={}, mape={}, steps=empty, peaks={},
                      specs=[])
    assert "Not available yet" in "".join(paper_section(data))


def test_cli_report_help(cli):
    out = cli("report", "--help")
    assert out.returncode == 0 and "--out" in out.stdout and "--scheduler" in out.stdout
