"""The typed run model in use: serving runs in sweeps (mapping axes, plan checks, rows), the reduced form
of a spec, and the command line's options turned into runs."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from speedsim.errors import UserError
from speedsim.sweep import load_spec, plan, read_results, run_sweep

CONFIGS = [{"sharing": "12x1", "serve_method": "unshared", "trace": "12x1"},
           {"sharing": "4x3", "serve_method": "speed", "trace": "4x3"}]
SERVING = {"name": "serving", "fixed": {"model": "t5base", "requests": 3, "max_batch": 2},
           "blocks": [{"label": "curves", "axes": {"profile": ["h200"], "configs": CONFIGS,
                                                   "arrivals": ["load:0.5", "load:1.0"]}}],
           "reduced": {"blocks": [{"label": "curves", "axes": {"profile": ["h200"], "configs": CONFIGS[1:],
                                                               "arrivals": ["load:1.0"]}}]}}


def write(tmp_path, spec: dict, name: str = "serving.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_mapping_axis_sets_several_fields_per_value(tmp_path):
    """`configs: [{sharing, serve_method, trace}, ...]` crosses whole configurations with the other axes,
    in spec order; `reduced:` replaces the blocks in the spec's reduced form."""
    path = write(tmp_path, SERVING)
    runs = plan(load_spec(path))
    assert [(r.sharing, r.serve_method, r.arrivals) for r in runs] == [
        ("12x1", "unshared", "load:0.5"), ("12x1", "unshared", "load:1.0"),
        ("4x3", "speed", "load:0.5"), ("4x3", "speed", "load:1.0")]
    assert all(r.serving and r.requests == 3 and r.max_batch == 2 for r in runs)
    reduced = plan(load_spec(path, reduced=True))
    assert [(r.sharing, r.arrivals) for r in reduced] == [("4x3", "load:1.0")]


def test_a_serving_sweep_writes_serving_rows(tmp_path):
    """Each serving run is one row of the table: the method served and the serving metrics (the load's
    rate among them), with the decode metrics empty."""
    path = write(tmp_path, SERVING)
    run_sweep(load_spec(path, reduced=True), tmp_path / "out", workers=1, progress=False)
    table = read_results(tmp_path / "out")
    assert len(table) == 1 and table["status"].tolist() == ["ok"]
    row = table.iloc[0]
    assert row["method"] == "speed" and row["arrivals"] == "load:1.0"
    assert row["rate_per_s"] > 0 and row["tokens_per_s"] > 0 and row["tpot_p99_us"] >= row["tpot_p50_us"] > 0
    assert pd.isna(row["per_token_us"])


@pytest.mark.parametrize(("arrivals", "needle"), [("poison:1", "poisson:RATE_PER_S"), ("load:0", "load must be"),
                                                  ("trace:missing.txt", "missing.txt")])
def test_bad_arrivals_fail_the_plan(tmp_path, arrivals, needle):
    """A serving run's arrivals are checked with the plan, before any run starts, naming the key (an
    arrival file is read from the spec's directory)."""
    spec = {**SERVING, "blocks": [{**SERVING["blocks"][0], "axes": {**SERVING["blocks"][0]["axes"],
                                                                    "arrivals": [arrivals]}}]}
    with pytest.raises(UserError, match=f"field 'arrivals'.*{needle}"):
        plan(load_spec(write(tmp_path, spec)))


def test_an_arrival_file_beside_the_spec_is_found(tmp_path, monkeypatch):
    """`arrivals: trace:times.txt` is read from the spec's directory, whatever the working directory."""
    (tmp_path / "times.txt").write_text("0\n0.001\n0.002\n")
    spec = {**SERVING, "blocks": [{**SERVING["blocks"][0], "axes": {"profile": ["h200"], "configs": CONFIGS[1:],
                                                                    "arrivals": ["trace:times.txt"]}}]}
    path = write(tmp_path, spec)
    monkeypatch.chdir(tmp_path.parent)
    run_sweep(load_spec(path), tmp_path / "out", workers=1, progress=False)
    assert read_results(tmp_path / "out")["status"].tolist() == ["ok"]


def test_limit_with_synthetic_traces_is_refused_naming_the_flag(cli):
    """`--limit` takes a trace's first sequences; with `--synthetic` (whose count is seqs=K) it is refused,
    one line naming --limit."""
    res = cli("simulate", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic",
              "mispredict=0.1,len=8,seqs=3", "--limit", "2")
    assert res.returncode == 2 and "--limit" in res.stderr and len(res.stderr.strip().splitlines()) == 1
