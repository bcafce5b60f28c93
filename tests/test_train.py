"""Training loop, checkpoints, resume, trace recording and the train/trace CLI (tiny model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from speedsim.errors import UserError
from speedsim.model.train import load_model, load_train_config, read_checkpoint, train

TINY = {
    "name": "tiny",
    "data": {"task": "summarize", "vocab_size": 300, "max_src_tokens": 32, "max_tgt_tokens": 16},
    "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "unique_layers": 2, "repeats": 2, "encoder_layers": 1, "max_len": 64, "dropout": 0.1},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "eval_every": 2},
    "eval": {"val_examples": 8, "rouge_examples": 3, "max_new_tokens": 6},
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One corpus + tokenizer cache for the whole module (built on first use)."""
    return tmp_path_factory.mktemp("cache")


def write_config(path: Path, cache_dir: Path, **changes: dict) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["cache_dir"] = str(cache_dir)
    for section, values in changes.items():
        cfg[section].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, dict]:
    """A tiny model trained for 4 steps, with its final metrics."""
    d = tmp_path_factory.mktemp("run")
    cfg = write_config(d / "tiny.yaml", cache_dir)
    return d / "out", train(cfg, d / "out", progress=False)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run `speedsim ARGS` in-process through the console entry point; returns the exit status."""
    from speedsim.cli import main

    monkeypatch.setattr(sys, "argv", ["speedsim", *args])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_training_writes_checkpoint_and_metrics(trained: tuple[Path, dict]) -> None:
    """A finished run leaves a complete checkpoint, tokenizer and metrics (loss, ROUGE-L)."""
    out, metrics = trained
    ckpt = read_checkpoint(out)
    assert ckpt["step"] == 4 and len(ckpt["history"]) == 4 and "val_loss" in ckpt["history"][1]
    assert (out / "tokenizer.json").exists() and (out / "metrics.json").exists()
    assert len(metrics["val_loss_per_exit"]) == 2 and all(0 < x < 20 for x in metrics["val_loss_per_exit"])
    assert 0.0 <= metrics["val_rougeL"] <= 1.0
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_resume_gives_the_state_of_an_uninterrupted_run(tmp_path: Path, cache_dir: Path) -> None:
    """Stopping after 2 steps and re-running ends in exactly the uninterrupted state (dropout on)."""
    cfg = write_config(tmp_path / "tiny.yaml", cache_dir)
    train(cfg, tmp_path / "a", progress=False, evaluate=False)
    assert train(cfg, tmp_path / "b", progress=False, stop_after=2)["step"] == 2
    assert read_checkpoint(tmp_path / "b")["step"] == 2
    train(cfg, tmp_path / "b", progress=False, evaluate=False)
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_corrupt_checkpoint_is_user_error_naming_file(tmp_path: Path, cache_dir: Path) -> None:
    """A torn checkpoint is a UserError naming the file, both to resume and to load."""
    cfg = write_config(tmp_path / "tiny.yaml", cache_dir)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(UserError, match=r"checkpoint\.pt: corrupt checkpoint"):
        train(cfg, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match=r"checkpoint\.pt"):
        load_model(tmp_path / "out")
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "missing")


def test_other_config_in_same_run_dir_is_refused(trained: tuple[Path, dict], tmp_path: Path, cache_dir: Path) -> None:
    """Resuming a run directory with a different config is a UserError, not a silent mix."""
    out, _ = trained
    cfg = write_config(tmp_path / "other.yaml", cache_dir, train={"lr": 0.5})
    with pytest.raises(UserError, match="different config"):
        train(cfg, out, progress=False)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model": {"unique_layers": 0}}, "unique_layers"),
        ({"model": {"repeats": 0}}, "repeats"),
        ({"model": {"bogus": 1}}, "bogus"),
        ({"train": {"bogus": 1}}, "train.bogus"),
        ({"data": {"task": "continue"}}, "task"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys, changes: dict, match: str) -> None:
    """`speedsim train` with U or R < 1, an unknown key, or a mismatched task: exit 2, one line."""
    cfg = write_config(tmp_path / "bad.yaml", cache_dir, **changes)
    assert run_cli(monkeypatch, "train", "--config", str(cfg), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and match in err[0]
    with pytest.raises(UserError):
        load_train_config(cfg)


def test_trace_cli_corrupt_checkpoint_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`speedsim trace` on a corrupt checkpoint: exit 2 and one line naming the file."""
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "t.jsonl")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pt" in err[0]


def test_trace_cli_writes_traces_that_match_greedy(trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`speedsim trace --json` writes R-exit traces whose tokens are the greedy decodes."""
    from speedsim.data import special_ids
    from speedsim.decode import greedy
    from speedsim.model.train import prepare_data
    from speedsim.trace import read_traces
    from speedsim.trace.record import sample_indices

    out, _ = trained
    path = tmp_path / "t.jsonl.gz"
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(out), "--split", "validation", "--out", str(path), "--limit", "3", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sequences"] == 3 and len(stats["agreement"]) == 2 and stats["agreement"][-1] == 1.0
    assert {"flushes_per_token", "mean_in_flight", "lengths", "first_exit_miss", "rougeL"} <= stats.keys()
    traces = read_traces(path)
    model, tok, cfg = load_model(out)
    _, enc = prepare_data(cfg, tok)
    items = [enc["validation"][i] for i in sample_indices(len(enc["validation"]), 3)]
    eos = special_ids(tok)["eos"]
    for tr, it in zip(traces, items, strict=True):
        assert tr.seq_id == it.id and tr.repeats == 2 and tr.src_len == len(it.src)
        assert tr.tokens == greedy(model, torch.tensor(it.src), cfg.eval.max_new_tokens, eos_id=eos)


def test_trace_cli_rejects_bad_limit(trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """--limit 0 is a one-line error with exit 2."""
    out, _ = trained
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(out), "--out", str(tmp_path / "t.jsonl"), "--limit", "0") == 2
    assert "--limit" in capsys.readouterr().err
