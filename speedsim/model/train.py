"""Training a SPEED model on CPU: config, loop, checkpoints, evaluation.

`train(config_path, out_dir)` trains the `SharedDecoder` described by a YAML config with
AdamW and the weighted multi-exit loss (`speedsim.model.exit_loss`). Every
`checkpoint_every` steps it writes ``out_dir/checkpoint.pt`` (model, optimizer, step, RNG
state, both configs and the tokenizer) to a temporary file and renames it, so an interrupt
never leaves a torn checkpoint; running the same command again resumes from it. The batch
at each step is a pure function of (seed, step), so a resumed run ends in the same state
as an uninterrupted one.

At the end it writes ``out_dir/metrics.json``: validation loss (final exit and per exit),
ROUGE-L F1 (rouge-score) of greedy decodes on a validation subset, and the training time.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tokenizers import Tokenizer
from tqdm import tqdm

from speedsim.data import (
    IGNORE_INDEX,
    Batch,
    BatchStream,
    Encoded,
    cached_tokenizer,
    collate,
    default_cache_dir,
    encode_examples,
    load_corpus,
    special_ids,
    split_examples,
    tokenizer_from_str,
)
from speedsim.errors import UserError

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------------ config
class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSection(_Section):
    task: str = Field("summarize", description="summarize (encoder-decoder) or continue (decoder-only)")
    vocab_size: int = Field(4096, ge=259, description="BPE vocabulary size in tokens, specials included")
    max_src_tokens: int = Field(256, ge=1, description="source / prompt length cap in tokens")
    max_tgt_tokens: int = Field(64, ge=3, description="target length cap in tokens (with <bos>/<eos>)")
    cache_dir: str | None = Field(None, description="corpus + tokenizer cache; default ~/.cache/speedsim")


class TrainSection(_Section):
    steps: int = Field(ge=1, description="optimizer steps in total")
    batch_size: int = Field(16, ge=1, description="examples per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a fraction of the peak (cosine decay)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    seed: int = Field(0, description="seeds initialisation, data order and dropout")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    eval_every: int = Field(0, ge=0, description="steps between validation-loss evaluations (0: only at the end)")
    threads: int = Field(1, ge=1, description="torch intra-op CPU threads")


class EvalSection(_Section):
    val_examples: int = Field(256, ge=1, description="validation examples for the loss")
    rouge_examples: int = Field(64, ge=0, description="validation examples decoded greedily for ROUGE-L")
    max_new_tokens: int = Field(64, ge=1, description="decode length cap in tokens")
    batch_size: int = Field(32, ge=1, description="examples per validation-loss batch")


class TrainConfig(_Section):
    name: str = Field(description="run name, e.g. 4x3")
    data: DataSection = DataSection()
    model: dict[str, Any] = Field(
        description="SpeedConfig fields (exit_weights included) except vocab_size, pad_id, bos_id (from the tokenizer)"
    )
    train: TrainSection
    eval: EvalSection = EvalSection()

    @property
    def decoder_only(self) -> bool:
        return int(self.model.get("encoder_layers", 0)) == 0


def parse_train_config(raw: Any, where: str) -> TrainConfig:
    """Validate a config mapping; errors become a `UserError` naming `where` and the field."""
    if not isinstance(raw, dict):
        raise UserError("expected a mapping at the top level", where=where)
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e["loc"])
        raise UserError(f"{field}: {e['msg']}", where=where) from None
    for key in ("vocab_size", "pad_id", "bos_id"):
        if key in cfg.model:
            raise UserError(f"model.{key}: set by the tokenizer (use data.vocab_size)", where=where)
    if cfg.decoder_only != (cfg.data.task == "continue"):
        raise UserError(
            f"data.task {cfg.data.task!r} does not match model.encoder_layers "
            "(summarize needs an encoder, continue is decoder-only)",
            where=where,
        )
    for key in ("unique_layers", "repeats"):
        value = cfg.model.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"model.{key}: must be an integer >= 1, got {value!r}", where=where)
    speed_config(cfg, cfg.data.vocab_size, where)  # fail early on bad model fields (U or R < 1, ...)
    return cfg


def load_train_config(path: Path | str) -> TrainConfig:
    """Read and validate a training YAML config."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("config file not found", where=str(path)) from None
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML ({str(err).splitlines()[0]})", where=str(path)) from None
    return parse_train_config(raw, str(path))


def speed_config(cfg: TrainConfig, vocab_size: int, where: str = "config") -> Any:
    """The model's `SpeedConfig`, with vocab size and special ids from the tokenizer
    (`speedsim.data.tokenizer` reserves <pad> = 0, <bos> = 1, <eos> = 2)."""
    from speedsim.model import SpeedConfig

    try:
        return SpeedConfig.from_dict({**cfg.model, "vocab_size": vocab_size, "pad_id": 0, "bos_id": 1})
    except UserError as err:
        raise UserError(f"model.{err}", where=where) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"model: {err}", where=where) from None


# ------------------------------------------------------------------------------ data
def prepare_data(cfg: TrainConfig, tok: Tokenizer | None = None) -> tuple[Tokenizer, dict[str, list[Encoded]]]:
    """The tokenizer (trained on the train split unless given) and every split, tokenised."""
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    examples = load_corpus(cfg.data.task, cache)
    by_split = {s: split_examples(examples, s) for s in ("train", "validation", "test")}
    if tok is None:
        texts = [t for e in by_split["train"] for t in (e.source, e.target)]
        tok = cached_tokenizer(texts, cfg.data.vocab_size, cache, cfg.data.task)
    enc = {
        s: encode_examples(exs, tok, cfg.data.max_src_tokens, cfg.data.max_tgt_tokens, cfg.decoder_only)
        for s, exs in by_split.items()
    }
    return tok, enc


# ------------------------------------------------------------------------------ checkpoints
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint file (or the one in a run directory); unreadable -> `UserError` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise UserError("checkpoint not found", where=str(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a torn or foreign file
        raise UserError(f"corrupt checkpoint ({type(err).__name__})", where=str(path)) from None
    needed = {"format", "step", "model", "optimizer", "torch_rng", "train_config", "speed_config", "tokenizer"}
    if not isinstance(ckpt, dict) or not needed <= ckpt.keys():
        raise UserError("corrupt checkpoint (missing fields)", where=str(path))
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint format {ckpt['format']} (this build reads {CHECKPOINT_FORMAT})", where=str(path))
    return ckpt


def load_model(path: Path | str) -> tuple[Any, Tokenizer, TrainConfig]:
    """(model in eval mode, tokenizer, training config) from a checkpoint directory or file."""
    from speedsim.model import SharedDecoder, SpeedConfig

    ckpt = read_checkpoint(path)
    where = str(path)
    cfg = parse_train_config(ckpt["train_config"], where)
    tok = tokenizer_from_str(ckpt["tokenizer"], where)
    model = SharedDecoder(SpeedConfig.from_dict(ckpt["speed_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(f"corrupt checkpoint (weights do not fit the model: {str(err)[:100]})", where=where) from None
    model.eval()
    return model, tok, cfg


# ------------------------------------------------------------------------------ loop
def lr_at(step: int, t: TrainSection) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, cosine to min_lr_ratio."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _forward(model: Any, b: Batch) -> torch.Tensor:
    """Logits at every exit, (R, B, T, V)."""
    return model(b.src, b.tgt_in, src_pad_mask=b.src_pad_mask, tgt_pad_mask=b.tgt_pad_mask)


def _scalar_loss(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def validation_loss(model: Any, items: list[Encoded], pad_id: int, decoder_only: bool, batch_size: int) -> dict[str, Any]:
    """Token-mean cross-entropy (nats/token) of every exit over `items`."""
    model.eval()
    sums: torch.Tensor | None = None
    n = 0
    for i in range(0, len(items), batch_size):
        b = collate(items[i : i + batch_size], pad_id, decoder_only)
        logits = _forward(model, b)  # (R, B, T, V)
        R = logits.shape[0]
        per_exit = torch.stack(
            [
                F.cross_entropy(logits[r].flatten(0, 1), b.labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
                for r in range(R)
            ]
        )
        sums = per_exit if sums is None else sums + per_exit
        n += b.n_tokens
    assert sums is not None
    per = (sums / max(n, 1)).tolist()
    return {"val_loss": per[-1], "val_loss_per_exit": per, "val_tokens": n}


def decode_texts(model: Any, tok: Tokenizer, items: list[Encoded], max_new_tokens: int) -> list[str]:
    """Greedy decodes of `items` (batch 1), as text with special tokens removed."""
    from speedsim.decode import greedy

    eos = special_ids(tok)["eos"]
    out = []
    for it in items:
        ids = greedy(model, torch.tensor(it.src, dtype=torch.long), max_new_tokens, eos_id=eos)
        out.append(tok.decode(list(ids), skip_special_tokens=True))
    return out


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score, no stemming) in [0, 1]."""
    from rouge_score import rouge_scorer

    if not predictions:
        return float("nan")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


def train(
    config_path: Path | str,
    out_dir: Path | str,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the run in `out_dir`; returns the final metrics.

    `stop_after` ends the loop after that many total steps with a checkpoint, as an interrupt
    would (tests use it); `evaluate=False` skips the final ROUGE decoding.
    """
    cfg = load_train_config(config_path)  # first: bad input fails before any import or I/O
    from speedsim.model import SharedDecoder, default_exit_weights, exit_loss

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_FILE
    torch.set_num_threads(cfg.train.threads)

    ckpt = read_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None and ckpt["train_config"] != cfg.model_dump():
        raise UserError(
            f"{ckpt_path} was written by a different config; use another --out or delete it", where=str(config_path)
        )
    tok, enc = prepare_data(cfg, tokenizer_from_str(ckpt["tokenizer"], str(ckpt_path)) if ckpt else None)
    pad = special_ids(tok)["pad"]
    sc = speed_config(cfg, tok.get_vocab_size(), str(config_path))

    torch.manual_seed(cfg.train.seed)
    model = SharedDecoder(sc)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    step, history, elapsed = 0, [], 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, history, elapsed = ckpt["step"], list(ckpt.get("history", [])), float(ckpt.get("train_seconds", 0.0))

    R = int(sc.repeats)
    weights = list(sc.exit_weights) if sc.exit_weights else default_exit_weights(R)
    stream = BatchStream(enc["train"], cfg.train.batch_size, cfg.train.seed, pad, cfg.decoder_only)
    val_items = enc["validation"][: cfg.eval.val_examples]

    def save() -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": cfg.model_dump(),
            "speed_config": sc.to_dict(),
            "tokenizer": tok.to_str(),
            "history": history,
            "train_seconds": elapsed,
        }
        _atomic_save(state, ckpt_path)

    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    bar = tqdm(total=cfg.train.steps, initial=step, desc=f"train {cfg.name}", disable=not progress, unit="step")
    t0 = time.perf_counter()
    while step < end:
        model.train()
        b = stream[step]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.train)
        loss = _scalar_loss(exit_loss(_forward(model, b), b.labels, weights=weights, ignore_index=IGNORE_INDEX))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        step += 1
        rec: dict[str, Any] = {"step": step, "loss": loss.item()}
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
            rec["val_loss"] = validation_loss(model, val_items, pad, cfg.decoder_only, cfg.eval.batch_size)["val_loss"]
        history.append(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if step % cfg.train.checkpoint_every == 0 or step == end:
            elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
    bar.close()
    if step < cfg.train.steps or not evaluate:
        return {"name": cfg.name, "step": step, "finished": step >= cfg.train.steps}
    metrics_path = out / METRICS_FILE
    if metrics_path.exists():  # a finished run re-run: nothing to do unless ROUGE was skipped
        done = json.loads(metrics_path.read_text(encoding="utf-8"))
        if done.get("step") == step and done.get("val_rougeL") is not None:
            return done

    metrics: dict[str, Any] = {"name": cfg.name, "step": step, "finished": True, "train_seconds": elapsed}
    metrics["unique_layers"], metrics["repeats"] = int(sc.unique_layers), R
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    metrics.update(validation_loss(model, val_items, pad, cfg.decoder_only, cfg.eval.batch_size))
    rouge_items = enc["validation"][: cfg.eval.rouge_examples]
    metrics["rouge_examples"] = len(rouge_items)
    try:
        preds = decode_texts(model, tok, rouge_items, cfg.eval.max_new_tokens)
    except ImportError:  # decoding not installed yet: re-run the same command later for ROUGE
        metrics["val_rougeL"] = None
    else:
        metrics["val_rougeL"] = rouge_l(preds, [it.reference for it in rouge_items])
        metrics["samples"] = [
            {"id": it.id, "prediction": p, "reference": it.reference} for it, p in zip(rouge_items[:5], preds, strict=False)
        ]
    _atomic_write_text(metrics_path, json.dumps(metrics, indent=1))
    _atomic_write_text(out / "tokenizer.json", tok.to_str())
    return metrics
