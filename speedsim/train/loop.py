"""The training loop: pre-train, then fine-tune, resumable from atomic checkpoints.

`train(config, out_dir)` runs the config's stages in order (see `speedsim.train.config`)
with AdamW and the weighted multi-exit loss (`speedsim.model.exit_loss`). Every
`checkpoint_every` steps a stage writes ``out_dir/STAGE.pt``; running the same command
again resumes from it. The batch at each step is a pure function of (seed, step) and the
RNG state is checkpointed, so a resumed run ends in the same state as an uninterrupted one
(unless a stage is capped by `max_seconds`). Fine-tuning starts from the pre-trained
weights with a fresh optimizer. At the end ``out_dir/metrics.json`` holds the validation
loss per exit, ROUGE-L, diversity and length of greedy decodes on a validation subset, and
each stage's steps and time.

A diverged run stops with a `UserError` and leaves its last good checkpoint: a loss that is not
finite stops it at once, and weights that are not all finite (an update can ruin a weight the
loss does not yet show) are refused before they would be checkpointed or evaluated, so no
checkpoint, metrics or traces of NaN weights are ever written.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from speedsim.data import (
    IGNORE_INDEX,
    Batch,
    BatchStream,
    LMStream,
    corpus_tokenizer,
    special_ids,
    tokenizer_from_str,
)
from speedsim.errors import UserError
from speedsim.fileio import write_text
from speedsim.model import SharedDecoder, SpeedConfig, default_exit_weights, exit_loss
from speedsim.train.batches import corpus_of, prepare_data, pretraining_streams
from speedsim.train.checkpoint import (
    CHECKPOINT_FORMAT,
    METRICS_FILE,
    TOKENIZER_FILE,
    check_run_dir,
    non_finite,
    read_checkpoint,
    save_checkpoint,
    stage_path,
)
from speedsim.train.config import (
    StageSection,
    TrainConfig,
    check_threads,
    load_train_config,
    speed_config,
    task_label,
)
from speedsim.train.evaluate import example_batches, exit_losses, forward, quality, window_batches


def lr_at(step: int, s: StageSection, elapsed: float = 0.0) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine to
    `min_lr_ratio`; with `max_seconds` the decay follows whichever of steps and time is further."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    frac = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    if s.max_seconds:
        frac = max(frac, elapsed / s.max_seconds)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@dataclass
class _Run:
    """What every stage of one `train` call shares."""

    cfg: TrainConfig
    where: str  # the config file, for error messages
    out: Path
    device: torch.device
    progress: bool
    tok: Tokenizer | None = None
    sc: SpeedConfig | None = None
    weights: list[float] = field(default_factory=list)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        # bf16 autocast on a GPU (weights and optimizer stay fp32); plain fp32 on a CPU
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class _Stage:
    """The mutable state of one stage: saved in, and restored from, its checkpoint."""

    name: str
    model: SharedDecoder
    opt: torch.optim.Optimizer
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far (all sessions)
    finished: bool = False
    stopped_by_time: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    val: dict[str, Any] = field(default_factory=dict)  # validation loss at the end of the stage

    def state(self, run: _Run) -> dict[str, Any]:
        assert run.tok is not None and run.sc is not None
        return {
            "format": CHECKPOINT_FORMAT, "stage": self.name, "step": self.step, "finished": self.finished,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
            "train_config": run.cfg.model_dump(), "speed_config": run.sc.to_dict(), "tokenizer": run.tok.to_str(),
            "history": self.history, "train_seconds": self.elapsed, "stopped_by_time": self.stopped_by_time,
            "val": self.val,
        }  # fmt: skip


def _written_config(dumped: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's config with today's defaults filled in (a field added since it was written, at its
    default, is the same config), or None if it no longer validates."""
    try:
        return TrainConfig.model_validate(dumped).model_dump()
    except ValueError:
        return None


def _resume(run: _Run, name: str) -> _Stage:
    """The stage's state: from its checkpoint, else fresh (fine-tuning: from the pre-trained weights)."""
    cfg, path = run.cfg, stage_path(run.out, name)
    ckpt = read_checkpoint(path) if path.exists() else None
    if ckpt is not None and _written_config(ckpt["train_config"]) != cfg.model_dump():
        raise UserError(f"{path} was written by a different config; use another --out or delete it", where=run.where)
    if run.tok is None:
        run.tok = tokenizer_from_str(ckpt["tokenizer"], str(path)) if ckpt else corpus_tokenizer(corpus_of(cfg), cfg.data.vocab_size)
        run.sc = speed_config(cfg, run.tok.get_vocab_size(), run.where)
        run.weights = list(run.sc.exit_weights) if run.sc.exit_weights else default_exit_weights(run.sc.repeats)
    assert run.sc is not None
    model = SharedDecoder(run.sc)
    if ckpt is None and name == "finetune" and cfg.pretrain is not None:
        model.load_state_dict(read_checkpoint(stage_path(run.out, "pretrain"))["model"])
    model.to(run.device)
    s = cfg.stage(name)
    opt = torch.optim.AdamW(param_groups(model, s.layer_lr_scale), lr=s.lr, weight_decay=s.weight_decay)
    torch.manual_seed(cfg.seed + (1 if name == "finetune" else 0))  # dropout stream of the stage
    if ckpt is None:
        return _Stage(name, model, opt)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    if run.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    return _Stage(name, model, opt, ckpt["step"], float(ckpt["train_seconds"]), bool(ckpt["finished"]),
                  bool(ckpt.get("stopped_by_time")), list(ckpt["history"]), dict(ckpt.get("val") or {}))


def _data(run: _Run, name: str) -> tuple[LMStream | BatchStream, Callable[[], Iterable[Batch]]]:
    """(batches addressed by step, a function giving the validation batches) of a stage."""
    cfg, tok = run.cfg, run.tok
    assert tok is not None
    if name == "pretrain":
        windows, val_windows = pretraining_streams(cfg, tok, run.progress)
        bos = special_ids(tok)["bos"]
        return windows, lambda: window_batches(val_windows, cfg.prefix_tokens, bos)
    _, enc = prepare_data(cfg, tok)
    pad = special_ids(tok)["pad"]
    s = cfg.stage(name)
    _check_finetune_data(run, enc)
    ft = cfg.finetune
    caps = (cfg.data.max_src_tokens, cfg.data.max_tgt_tokens)
    stream = BatchStream(enc["train"], s.batch_size, cfg.seed, pad, cfg.decoder_only,
                         pad_to=caps if ft is not None and ft.fixed_shape else None,
                         pad_multiple=ft.pad_multiple if ft is not None else None, caps=caps)
    val = enc["validation"][: cfg.eval.val_examples]
    return stream, lambda: example_batches(val, pad, cfg.decoder_only, cfg.eval.batch_size)


def _check_finetune_data(run: _Run, enc: dict[str, list[Any]] | None = None) -> None:
    """Enough fine-tuning examples (`enc`, else the config's) for a batch and a validation set
    (data.min_tgt_tokens can leave too few)."""
    cfg = run.cfg
    assert cfg.finetune is not None
    if enc is None:
        _, enc = prepare_data(cfg, run.tok)
    need = {"train": cfg.finetune.batch_size, "validation": 1}
    for split, n in need.items():
        if len(enc[split]) < n:
            floor = f" with data.min_tgt_tokens {cfg.data.min_tgt_tokens}" if cfg.data.min_tgt_tokens else ""
            raise UserError(f"{len(enc[split])} {split} examples{floor}, fewer than {n} (finetune.batch_size is "
                            f"{cfg.finetune.batch_size})", where=run.where)


def param_groups(model: SharedDecoder, layer_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the transformer layers at `layer_lr_scale` times the stage's LR,
    the rest (embeddings, positions, final norms, LM head) at the LR itself. One group when the
    scale is 1, as checkpoints written before the option have."""
    if layer_lr_scale == 1:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    layers = {id(p) for m in (model.encoder, model.layers) for p in m.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) in layers], "lr_scale": layer_lr_scale},
            {"params": [p for p in model.parameters() if id(p) not in layers], "lr_scale": 1.0}]


def _step(run: _Run, st: _Stage, batch: Any, lr: float, grad_clip: float) -> float:
    st.model.train()
    for g in st.opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    with run.autocast():
        logits = forward(st.model, batch, run.device)  # (R, B, T, V)
        loss = exit_loss(logits.float(), batch.labels.to(run.device), weights=run.weights, ignore_index=IGNORE_INDEX)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.model.parameters(), grad_clip)
    st.opt.step()
    return float(loss.item())


def _check_weights(run: _Run, st: _Stage) -> None:
    """A `UserError` if the stage's weights are not all finite: checked before they are saved or
    evaluated (per step it would cost a pass over every weight)."""
    bad = non_finite(st.model.state_dict())
    if bad:
        raise UserError(f"{st.name} step {st.step}: the weights are not finite (tensor '{bad[0]}' holds {bad[1]}; "
                        f"diverged: lower {st.name}.lr); the run stays at its last checkpoint", where=run.where)


def _run_stage(run: _Run, st: _Stage, budget: int | None) -> int:
    """Train `st` until done, out of `max_seconds`, or `budget` more steps; returns the steps taken."""
    s = run.cfg.stage(st.name)
    batches, val_batches = _data(run, st.name)
    end = s.steps if budget is None else min(s.steps, st.step + budget)
    path, first = stage_path(run.out, st.name), st.step
    bar = tqdm(total=s.steps, initial=st.step, desc=f"{st.name} {run.cfg.name}", unit="step", disable=not run.progress)
    t0, base = time.perf_counter(), st.elapsed
    while st.step < end:
        st.elapsed = base + time.perf_counter() - t0
        if s.max_seconds and st.elapsed >= s.max_seconds:
            st.stopped_by_time = True
            break
        t_step = time.perf_counter()
        loss = _step(run, st, batches[st.step], lr_at(st.step, s, st.elapsed), s.grad_clip)  # .item(): synchronised
        if not math.isfinite(loss):  # the weights are ruined: stop at the last checkpoint, not train on NaN
            raise UserError(f"{st.name} step {st.step + 1}: the loss is {loss} (diverged: lower {st.name}.lr); the "
                            f"run stays at its last checkpoint", where=run.where)
        rec: dict[str, Any] = {"step": st.step + 1, "loss": loss, "seconds": time.perf_counter() - t_step}
        st.step += 1
        if s.eval_every and st.step % s.eval_every == 0:
            with run.autocast():
                rec["val_loss"] = exit_losses(st.model, val_batches(), run.device)["val_loss"]
        st.history.append(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if st.step % s.checkpoint_every == 0 and st.step < end:
            st.elapsed = base + time.perf_counter() - t0
            _check_weights(run, st)
            save_checkpoint(path, st.state(run))
    bar.close()
    st.elapsed = base + time.perf_counter() - t0
    st.finished = st.step >= s.steps or st.stopped_by_time
    _check_weights(run, st)
    if st.finished:
        with run.autocast():
            st.val = exit_losses(st.model, val_batches(), run.device)
        if not all(math.isfinite(x) for x in st.val["val_loss_per_exit"]):  # finite weights, overflowing outputs
            raise UserError(f"{st.name} step {st.step}: the validation loss is not finite (diverged: lower "
                            f"{st.name}.lr); the run stays at its last checkpoint", where=run.where)
    save_checkpoint(path, st.state(run))
    return st.step - first


def _device(device: str, where: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r} (expected cpu or cuda)", where="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine", where="--device")
    return torch.device(device)


def train(
    config_path: Path | str,
    out_dir: Path | str,
    *,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the config's stages in `out_dir`; returns the final metrics.

    `stop_after` ends after that many steps in total (all stages), as an interrupt would
    (tests use it); `evaluate=False` skips the final decoding.
    """
    cfg = load_train_config(config_path, "--config")  # first: bad input fails before any I/O
    check_threads(cfg.threads, str(config_path))
    check_run_dir(out_dir)  # under a regular file, or someone else's directory: fails here, not later
    run = _Run(cfg, str(config_path), Path(out_dir), _device(device, "--device"), progress)
    run.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    done, stages = 0, []
    for name in cfg.stages:
        st = _resume(run, name)
        if not st.finished and name == cfg.stages[0] and cfg.finetune is not None:
            _check_finetune_data(run)  # before hours of pre-training, not after them
        done += st.step
        if not st.finished:
            done += _run_stage(run, st, None if stop_after is None else max(0, stop_after - done))
        stages.append(st)
        if not st.finished:
            return {"name": cfg.name, "stage": name, "step": st.step, "finished": False}
    return _final_metrics(run, stages, evaluate)


def _final_metrics(run: _Run, stages: list[_Stage], evaluate: bool) -> dict[str, Any]:
    cfg, last = run.cfg, stages[-1]
    assert run.tok is not None and run.sc is not None
    metrics_path = run.out / METRICS_FILE
    if metrics_path.exists():  # a finished run re-run: nothing to do unless decoding was skipped
        done = json.loads(metrics_path.read_text(encoding="utf-8"))
        if done.get("stages") == {st.name: st.step for st in stages} and (done.get("decoded") or not evaluate):
            return done
    m: dict[str, Any] = {"name": cfg.name, "finished": True, "step": last.step, "stages": {st.name: st.step for st in stages}}
    m["unique_layers"], m["repeats"] = run.sc.unique_layers, run.sc.repeats
    m["task"] = task_label(cfg)
    m["parameters"] = sum(p.numel() for p in last.model.parameters())
    m["train_seconds"] = sum(st.elapsed for st in stages)
    manifest = corpus_of(cfg, run.progress).manifest  # which corpus: a rebuilt one (other packages) differs
    m["corpus"] = {"fingerprint": manifest["fingerprint"], "totals": manifest["totals"],
                   "documents_sha256": manifest["files"]["documents.jsonl.xz"]["sha256"]}
    for st in stages:
        step_s = [r["seconds"] for r in st.history if "seconds" in r]  # batch building included
        m[st.name] = {"steps": st.step, "train_seconds": st.elapsed, "stopped_by_time": st.stopped_by_time,
                      "median_step_seconds": statistics.median(step_s) if step_s else None,
                      "first_step_seconds": step_s[0] if step_s else None,
                      "val_loss": st.val.get("val_loss"), "val_loss_per_exit": st.val.get("val_loss_per_exit")}
    m.update(last.val)
    m["val_rougeL"], m["rouge_examples"], m["decoded"] = None, 0, False
    if evaluate and cfg.finetune is not None and cfg.eval.rouge_examples:
        _, enc = prepare_data(cfg, run.tok)
        items = enc["validation"][: cfg.eval.rouge_examples]
        q = quality(last.model, run.tok, items, cfg.eval.max_new_tokens)  # on the training device, fp32
        m.update({"val_rougeL": q.pop("rougeL"), "rouge_examples": len(items), "decoded": True, **q})
    write_text(metrics_path, json.dumps(m, indent=1))
    write_text(run.out / TOKENIZER_FILE, run.tok.to_str())
    return m
