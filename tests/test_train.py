"""Training (pre-train, fine-tune), checkpoints, resume, trace recording and the data/train/trace CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from speedsim.errors import UserError
from speedsim.train import (
    load_model,
    load_train_config,
    lr_at,
    prepare_data,
    read_checkpoint,
    sample_indices,
    stage_path,
    train,
)
from speedsim.train.config import StageSection

TINY = {
    "name": "tiny",
    "data": {"task": "summarize", "vocab_size": 320, "max_src_tokens": 48, "max_tgt_tokens": 40},
    "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "unique_layers": 2, "repeats": 2, "encoder_layers": 1,
              "max_len": 64, "dropout": 0.1},
    "pretrain": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "eval_every": 2,
                 "prefix_tokens": 16, "target_tokens": 16},
    "finetune": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "eval_every": 2},
    "eval": {"val_examples": 8, "rouge_examples": 3, "max_new_tokens": 6},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_config(path: Path, code_corpus: dict, drop: tuple[str, ...] = (), **changes: dict) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["data"].update(sources=code_corpus["sources"], cache_dir=code_corpus["cache_dir"])
    for section in drop:
        cfg.pop(section)
    for section, values in changes.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, code_corpus: dict) -> tuple[Path, dict]:
    """A tiny encoder-decoder pre-trained for 4 steps and fine-tuned for 4, with its final metrics."""
    d = tmp_path_factory.mktemp("run")
    cfg = write_config(d / "tiny.yaml", code_corpus)
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


def test_training_runs_both_stages_and_writes_metrics(trained: tuple[Path, dict]) -> None:
    """A finished run has both stage checkpoints, the tokenizer and metrics (loss per exit, ROUGE-L, diversity)."""
    out, metrics = trained
    pre, fine = read_checkpoint(stage_path(out, "pretrain")), read_checkpoint(out)
    assert pre["stage"] == "pretrain" and fine["stage"] == "finetune" and pre["finished"] and fine["finished"]
    assert fine["step"] == 4 and len(fine["history"]) == 4 and "val_loss" in fine["history"][1]
    assert metrics["stages"] == {"pretrain": 4, "finetune": 4} and len(metrics["val_loss_per_exit"]) == 2
    assert all(0 < x < 20 for x in metrics["val_loss_per_exit"] + metrics["pretrain"]["val_loss_per_exit"])
    assert 0.0 <= metrics["val_rougeL"] <= 1.0 and 0 < metrics["distinct_per_100"] <= 100
    assert (out / "tokenizer.json").exists() and (out / "metrics.json").exists()
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


def test_finetuning_starts_from_the_pretrained_weights(trained: tuple[Path, dict], code_corpus: dict, tmp_path: Path) -> None:
    """The fine-tuned model differs from one fine-tuned from scratch with the same seed and data."""
    out, _ = trained
    cfg = write_config(tmp_path / "scratch.yaml", code_corpus, drop=("pretrain",), finetune={"from_scratch": True})
    train(cfg, tmp_path / "scratch", progress=False, evaluate=False)
    a, b = read_checkpoint(out)["model"], read_checkpoint(tmp_path / "scratch")["model"]
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert not stage_path(tmp_path / "scratch", "pretrain").exists()


@pytest.mark.parametrize("changes", [{}, pytest.param({"finetune": {"layer_lr_scale": 0.5}}, marks=pytest.mark.slow)],
                         ids=["one-lr", "layer-lr-scale"])
def test_resume_gives_the_state_of_an_uninterrupted_run(tmp_path: Path, code_corpus: dict, changes: dict) -> None:
    """Stopping inside pre-training and inside fine-tuning, then re-running, ends in the uninterrupted state."""
    cfg = write_config(tmp_path / "tiny.yaml", code_corpus, **changes)
    train(cfg, tmp_path / "a", progress=False, evaluate=False)
    assert train(cfg, tmp_path / "b", progress=False, stop_after=3)["stage"] == "pretrain"
    assert read_checkpoint(stage_path(tmp_path / "b", "pretrain"))["step"] == 3
    assert train(cfg, tmp_path / "b", progress=False, stop_after=6) == {"name": "tiny", "stage": "finetune", "step": 2, "finished": False}
    train(cfg, tmp_path / "b", progress=False, evaluate=False)
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


@pytest.mark.slow  # (a whole fit or training run: CI's slow run keeps the suite under a minute)
def test_a_checkpoint_from_before_a_new_field_resumes(tmp_path: Path, code_corpus: dict) -> None:
    """A checkpoint written before a config field existed (its dump lacks it) resumes when the field
    is at its default: the config is the same."""
    from speedsim.train.checkpoint import save_checkpoint

    cfg = write_config(tmp_path / "tiny.yaml", code_corpus)
    train(cfg, tmp_path / "run", progress=False, stop_after=3)
    path = stage_path(tmp_path / "run", "pretrain")
    old = read_checkpoint(path)
    del old["train_config"]["data"]["min_tgt_tokens"], old["train_config"]["finetune"]["pad_multiple"]
    del old["train_config"]["pretrain"]["layer_lr_scale"]
    for group in old["optimizer"]["param_groups"]:
        del group["lr_scale"]
    save_checkpoint(path, old)
    assert train(cfg, tmp_path / "run", progress=False, evaluate=False)["stages"] == {"pretrain": 4, "finetune": 4}
    other = write_config(tmp_path / "other.yaml", code_corpus, finetune={"pad_multiple": 8})  # not the default
    with pytest.raises(UserError, match="different config"):
        train(other, tmp_path / "run", progress=False, evaluate=False)


def test_pad_multiple_and_min_tgt_tokens_reach_the_training_loop(tmp_path: Path, code_corpus: dict,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine-tuning batches of a `pad_multiple` config have rounded lengths, only long targets are
    trained on, and the task is named in the metrics."""
    import speedsim.train.loop as loop

    shapes: list[tuple[int, int, int]] = []
    real_step = loop._step

    def step(run, st, batch, *a):  # type: ignore[no-untyped-def]
        if st.name == "finetune":
            shapes.append((batch.src.shape[1], batch.tgt_in.shape[1], int((~batch.tgt_pad_mask).sum(1).min())))
        return real_step(run, st, batch, *a)

    monkeypatch.setattr(loop, "_step", step)
    cfg = write_config(tmp_path / "tiny.yaml", code_corpus, finetune={"pad_multiple": 8},
                       data={"min_tgt_tokens": 33})  # the tiny corpus's targets have 27-37 tokens
    m = train(cfg, tmp_path / "run", progress=False, evaluate=False)
    assert m["task"] == "summarize, targets >= 33 tokens" and len(shapes) == 4
    assert all((S % 8 == 0 or S == 48) and (T % 8 == 0 or T == 39) for S, T, _ in shapes)
    assert min(n for _, _, n in shapes) >= 34  # <bos> and 33 target tokens at least


def test_layer_lr_scale_trains_the_transformer_layers_at_a_fraction_of_the_lr(tmp_path: Path, code_corpus: dict) -> None:
    """With `layer_lr_scale` the encoder and decoder layers step at that fraction of the stage's LR;
    embeddings, positions, final norms and the (tied) LM head at the LR itself; without it, one group."""
    from speedsim.model import SharedDecoder, SpeedConfig
    from speedsim.train.loop import param_groups

    model = SharedDecoder(SpeedConfig(vocab_size=64, d_model=16, n_heads=2, d_ff=32, unique_layers=2, repeats=3,
                                      encoder_layers=1, max_len=16))
    layers, rest = param_groups(model, 0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in layers["params"]} == {"encoder", "layers"}
    assert {names[id(p)].split(".")[0] for p in rest["params"]} == {"tok_emb", "dec_pos", "enc_pos", "enc_norm", "norm"}
    assert len(layers["params"]) + len(rest["params"]) == len(list(model.parameters()))
    assert [g["lr_scale"] for g in (layers, rest)] == [0.25, 1.0]
    assert [len(g["params"]) for g in param_groups(model, 1.0)] == [len(list(model.parameters()))]

    cfg = write_config(tmp_path / "tiny.yaml", code_corpus, pretrain={"layer_lr_scale": 0.25, "lr": 1e-3})
    train(cfg, tmp_path / "run", progress=False, stop_after=3)
    groups = read_checkpoint(stage_path(tmp_path / "run", "pretrain"))["optimizer"]["param_groups"]
    lr = lr_at(2, load_train_config(cfg).stage("pretrain"))  # the third step's
    assert [g["lr"] for g in groups] == pytest.approx([0.25 * lr, lr])


def test_too_few_long_targets_fail_before_pretraining(tmp_path: Path, code_corpus: dict) -> None:
    """`min_tgt_tokens` that leaves fewer examples than a batch is refused before any training."""
    cfg = write_config(tmp_path / "tiny.yaml", code_corpus, data={"min_tgt_tokens": 38})  # targets: 27-37 tokens
    with pytest.raises(UserError, match="0 train examples with data.min_tgt_tokens 38"):
        train(cfg, tmp_path / "run", progress=False)
    assert not stage_path(tmp_path / "run", "pretrain").exists()


def test_wall_clock_cap_ends_a_stage_and_anneals_the_lr(tmp_path: Path, code_corpus: dict) -> None:
    """max_seconds stops a stage early (marked as such); the LR follows time progress under a cap."""
    s = StageSection(steps=1000, lr=1.0, warmup_steps=0, min_lr_ratio=0.0, max_seconds=10.0)
    assert lr_at(0, s, elapsed=0.0) == pytest.approx(1.0) and lr_at(0, s, elapsed=10.0) == pytest.approx(0.0)
    assert lr_at(500, s, elapsed=0.0) == pytest.approx(0.5)
    cfg = write_config(tmp_path / "cap.yaml", code_corpus, pretrain={"steps": 10_000, "max_seconds": 0.3})
    m = train(cfg, tmp_path / "out", progress=False, evaluate=False)
    assert m["pretrain"]["stopped_by_time"] and 0 < m["pretrain"]["steps"] < 10_000 and m["stages"]["finetune"] == 4


def test_a_diverging_loss_stops_the_run(tmp_path: Path, code_corpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-finite loss is a UserError naming the stage and step: no run goes on training on NaN."""
    import speedsim.train.loop as loop

    cfg = write_config(tmp_path / "tiny.yaml", code_corpus)
    real_step = loop._step
    monkeypatch.setattr(loop, "_step", lambda run, st, *a: float("nan") if st.step == 2 else real_step(run, st, *a))
    with pytest.raises(UserError, match="pretrain step 3: the loss is nan"):
        train(cfg, tmp_path / "out", progress=False, evaluate=False)


def test_corrupt_checkpoint_is_user_error_naming_file(tmp_path: Path, code_corpus: dict) -> None:
    """A torn checkpoint is a UserError naming the file, both to resume and to load."""
    cfg = write_config(tmp_path / "tiny.yaml", code_corpus)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "pretrain.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(UserError, match=r"pretrain\.pt: corrupt checkpoint"):
        train(cfg, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match=r"pretrain\.pt"):
        load_model(tmp_path / "out")
    with pytest.raises(UserError, match="no checkpoint"):
        read_checkpoint(tmp_path)


def test_other_config_in_same_run_dir_is_refused(trained: tuple[Path, dict], tmp_path: Path, code_corpus: dict) -> None:
    """Resuming a run directory with a different config is a UserError, not a silent mix."""
    out, _ = trained
    cfg = write_config(tmp_path / "other.yaml", code_corpus, finetune={"lr": 0.5})
    with pytest.raises(UserError, match="different config"):
        train(cfg, out, progress=False)


@pytest.mark.parametrize(
    "changes, drop, match",
    [
        ({"model": {"unique_layers": 0}}, (), "unique_layers"),
        ({"model": {"repeats": 0}}, (), "repeats"),
        ({"model": {"bogus": 1}}, (), "bogus"),
        ({"finetune": {"bogus": 1}}, (), "finetune.bogus"),
        ({"data": {"task": "continue"}}, (), "task"),
        ({}, ("pretrain",), "finetune: no pretrain stage to start from"),
        ({"finetune": {"from_scratch": True}}, (), "from_scratch"),
        ({}, ("pretrain", "finetune"), "no stage to run"),
        ({"threads": 4096}, (), "threads: 4096 exceeds"),
        ({"pretrain": {"target_tokens": 100}}, (), "pretrain.target_tokens"),
        ({"train": {"steps": 3}}, (), "train"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, code_corpus: dict, monkeypatch: pytest.MonkeyPatch, capsys,
                                          changes: dict, drop: tuple, match: str) -> None:
    """`speedsim train` with bad fields, inconsistent stages or too many threads: exit 2, one line naming the file."""
    cfg = write_config(tmp_path / "bad.yaml", code_corpus, drop=drop, **changes)
    assert run_cli(monkeypatch, "train", "--config", str(cfg), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and match in err[0]
    assert not (tmp_path / "out").exists()  # nothing is done before the config is checked


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_exits_2(tmp_path: Path, code_corpus: dict, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """--device cuda where there is none is a one-line error."""
    cfg = write_config(tmp_path / "tiny.yaml", code_corpus)
    assert run_cli(monkeypatch, "train", "--config", str(cfg), "--out", str(tmp_path / "o"), "--device", "cuda") == 2
    assert "--device: CUDA is not available" in capsys.readouterr().err


def test_trace_cli_corrupt_checkpoint_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`speedsim trace` on a corrupt checkpoint: exit 2 and one line naming the file."""
    (tmp_path / "finetune.pt").write_bytes(b"\x00garbage")
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "t.jsonl")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune.pt" in err[0]


def test_trace_cli_writes_traces_that_match_greedy(trained: tuple[Path, dict], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`speedsim trace --json` writes R-exit traces whose tokens are the greedy decodes, with quality metrics."""
    from speedsim.data import special_ids
    from speedsim.decode import greedy
    from speedsim.trace import read_traces

    out, _ = trained
    path = tmp_path / "t.jsonl.gz"
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(out), "--split", "test", "--out", str(path), "--limit", "3", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sequences"] == 3 and len(stats["agreement"]) == 2 and stats["agreement"][-1] == 1.0
    assert sum(stats["settle_exit_distribution"]) == pytest.approx(1.0)
    assert stats["settle_exit_distribution"][0] == pytest.approx(1 - stats["first_exit_miss"])
    assert {"loss", "rougeL", "distinct_per_100", "mean_output_tokens", "lengths"} <= stats.keys() and stats["loss"] > 0
    traces = read_traces(path)
    model, tok, cfg = load_model(out)
    _, enc = prepare_data(cfg, tok)
    items = [enc["test"][i] for i in sample_indices(len(enc["test"]), 3)]
    eos = special_ids(tok)["eos"]
    for tr, it in zip(traces, items, strict=True):
        assert tr.seq_id == it.id and tr.repeats == 2 and tr.src_len == len(it.src)
        assert tr.tokens == greedy(model, torch.tensor(it.src), cfg.eval.max_new_tokens, eos_id=eos)


def test_trace_with_a_draft_checkpoint_gives_the_draft_decoders_iterations(trained: tuple[Path, dict], tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             capsys) -> None:
    """`speedsim trace --draft-checkpoint` (the pre-trained stage as the draft of the fine-tuned model): the
    draft trace's matches along the target's path give exactly the iterations the functional draft-model
    decoder runs on the same examples; `simulate --method specdec --draft-trace` reads it."""
    from speedsim.data import special_ids
    from speedsim.decode import draft_speculative
    from speedsim.pipeline.speculation import draft_matches, iterations
    from speedsim.trace import read_traces

    out, _ = trained
    draft_file = stage_path(out, "pretrain")
    path, dpath = tmp_path / "t.jsonl", tmp_path / "d.jsonl"
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(out), "--draft-checkpoint", str(draft_file), "--out",
                   str(path), "--draft-out", str(dpath), "--limit", "3", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert 0.0 <= stats["path_acceptance"] <= 1.0 and stats["draft_traces"] == 3
    target_traces, drafts = read_traces(path), read_traces(dpath)
    model, tok, cfg = load_model(out)
    draft, _, _ = load_model(draft_file)
    _, enc = prepare_data(cfg, tok)
    items = {it.id: it for it in (enc["test"][i] for i in sample_indices(len(enc["test"]), 3))}
    eos = special_ids(tok)["eos"]
    for t, d in zip(target_traces, drafts, strict=True):
        assert d.seq_id == t.seq_id and d.repeats == 2 and d.tokens == t.tokens
        res = draft_speculative(model, draft, torch.tensor(items[t.seq_id].src), cfg.eval.max_new_tokens, 3,
                                eos_id=eos)
        assert res.tokens == t.tokens
        cap = cfg.eval.max_new_tokens if t.eos_id is not None else None
        assert iterations(draft_matches(t.tokens, [row[0] for row in d.exits]), len(t.tokens), 3, cap) == res.iterations
    assert run_cli(monkeypatch, "simulate", "--profile", "h200", "--model", "t5base", "--sharing", "1x2", "--trace",
                   str(path), "--method", "specdec", "--draft-depth", "1", "--draft-trace", str(dpath),
                   "--baseline", "none", "--json") == 0
    assert json.loads(capsys.readouterr().out)["baselines"]["specdec"]["gamma"] >= 1


def test_trace_cli_rejects_bad_limit(trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """--limit 0 is a one-line error with exit 2."""
    out, _ = trained
    assert run_cli(monkeypatch, "trace", "--checkpoint", str(out), "--out", str(tmp_path / "t.jsonl"), "--limit", "0") == 2
    assert "--limit" in capsys.readouterr().err


def test_data_build_cli_prints_the_counts(code_corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`speedsim data build --json` prints the manifest's counts; --export copies corpus and tokenizer."""
    monkeypatch.setenv("SPEEDSIM_CACHE", code_corpus["cache_dir"])
    args = ["data", "build", "--source", code_corpus["sources"][0], "--vocab-size", "320", "--json"]
    assert run_cli(monkeypatch, *args, "--export", str(tmp_path / "carry")) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["totals"]["summarize"] == code_corpus["corpus"].manifest["totals"]["summarize"] > 0
    assert set(m["splits"]) == {"train", "validation", "test"} and m["packages"]["tinypkg"]["modules"] == 121
    assert {p.name for p in (tmp_path / "carry").iterdir()} >= {"manifest.json", "documents.jsonl.xz", "tokenizer-v320.json"}
    assert callable(load_train_config)  # the config loader is importable from speedsim.train (measure uses it)


def test_decoder_only_pretrains_causally_and_finetunes_on_continuation(tmp_path: Path, code_corpus: dict) -> None:
    """A decoder-only config (continue task): causal-LM pre-training, then the continuation task."""
    cfg = write_config(tmp_path / "dec.yaml", code_corpus, data={"task": "continue", "max_src_tokens": 24, "max_tgt_tokens": 24},
                       model={"encoder_layers": 0}, pretrain={"prefix_tokens": 0, "target_tokens": 16},
                       eval={"rouge_examples": 2})
    m = train(cfg, tmp_path / "out", progress=False)
    assert m["stages"] == {"pretrain": 4, "finetune": 4} and len(m["val_loss_per_exit"]) == 2
    assert m["pretrain"]["val_loss"] > 0 and m["decoded"] == 2
    bad = write_config(tmp_path / "bad.yaml", code_corpus, data={"task": "continue"}, model={"encoder_layers": 0},
                       pretrain={"prefix_tokens": 8})
    with pytest.raises(UserError, match="prefix_tokens: a decoder-only model has no encoder input"):
        load_train_config(bad)


@pytest.mark.parametrize("changes", [
    {}, {"encoder_layers": 0}, {"ffn": "swiglu"}, {"tie_embeddings": False, "encoder_layers": 3},
])
def test_parameter_count_matches_the_built_model(changes: dict) -> None:
    """The closed-form parameter count that bounds a config's size equals the built model's."""
    from speedsim.model import SharedDecoder, SpeedConfig
    from speedsim.train.config import parameter_count

    model: dict = TINY["model"]  # type: ignore[assignment]  # TINY's values are of mixed types
    sc = SpeedConfig.from_dict({**model, "vocab_size": 320, **changes})
    assert parameter_count(sc) == sum(p.numel() for p in SharedDecoder(sc).parameters())
