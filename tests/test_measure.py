"""`speedsim measure`: real timings of the functional decoder in the measured-CSV schema."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from speedsim.paths import ROOT
from speedsim.validation import read_measured


@pytest.fixture
def tiny_config(tmp_path):
    cfg = yaml.safe_load((ROOT / "experiments" / "models" / "4x3.yaml").read_text())
    cfg["name"] = "tiny"
    cfg["data"].update(vocab_size=300, max_src_tokens=16, max_tgt_tokens=8)
    cfg["model"].update(d_model=32, n_heads=2, d_ff=64, unique_layers=2, repeats=2, encoder_layers=1, max_len=64)
    cfg["eval"]["max_new_tokens"] = 8
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_measure_cpu_quick_writes_valid_rows(tmp_path, tiny_config, cli):
    """A quick CPU measurement writes layer, group, lmhead and decode rows, a model spec and the traces,
    and `speedsim validate` simulates every row of it."""
    out = tmp_path / "m" / "cpu.csv"
    res = cli("measure", "--device", "cpu", "--config", str(tiny_config), "--out", str(out), "--quick", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    rows = read_measured(out)
    sections = {r.section for r in rows}
    assert {"layer", "group", "lmhead", "decode"} <= sections
    assert all(r.us_median > 0 for r in rows)
    decode = [r for r in rows if r.section == "decode"]
    assert {r.pattern for r in decode} == {"sequential", "pipelined"}
    assert (out.parent / "cpu.traces.jsonl.gz").exists()
    val = cli("validate", "--measured", str(out), "--profile", "cpu-host", "--mode", "eager",
              "--model-spec", summary["model_spec"], "--json")
    assert val.returncode == 0, val.stderr
    assert json.loads(val.stdout)["rows"] == len(rows)


def test_measure_cuda_without_gpu_is_a_user_error(tmp_path, tiny_config, cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA path is measured for real instead")
    res = cli("measure", "--device", "cuda", "--config", str(tiny_config), "--out", str(tmp_path / "x.csv"))
    assert res.returncode == 2 and "CUDA" in res.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_cuda_quick(tmp_path, tiny_config, cli):  # pragma: no cover - runs only where a GPU is
    out = tmp_path / "cuda.csv"
    res = cli("measure", "--device", "cuda", "--config", str(tiny_config), "--out", str(out), "--quick")
    assert res.returncode == 0, res.stderr
    assert any(r.mode == "graph" or r.mode == "eager" for r in read_measured(out))
