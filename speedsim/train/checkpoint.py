"""Checkpoints of a run directory: one file per stage, written atomically.

``DIR/pretrain.pt`` and ``DIR/finetune.pt`` each hold the model, optimizer, step, RNG
state, both configs, the tokenizer and the loss history of their stage. They are written to
a temporary file and renamed, so an interrupt never leaves a torn checkpoint. The model of
a run is the one of its last stage present (`latest_checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from speedsim.data import tokenizer_from_str
from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output_dir
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.train.config import STAGES, TrainConfig, parse_train_config

CHECKPOINT_FORMAT = 2
METRICS_FILE = "metrics.json"
TOKENIZER_FILE = "tokenizer.json"
REQUIRED = ("format", "stage", "step", "finished", "model", "optimizer", "torch_rng", "train_config", "speed_config", "tokenizer")


def stage_path(run_dir: Path | str, stage: str) -> Path:
    """Where the checkpoint of `stage` lives in a run directory."""
    return Path(run_dir) / f"{stage}.pt"


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_run_dir(run_dir: Path | str, where: str = "--out") -> Path:
    """`run_dir` as a Path if a run may be written (or resumed) there: a new directory, or one holding only
    files a run writes (hidden ones aside: a .DS_Store, a temporary file of an interrupted write); else a
    `UserError`. A run's metrics are read at its end, so metrics that are not a JSON object are refused
    here, before any training."""
    out = check_output_dir(run_dir, where)
    if not out.is_dir():
        return out
    metrics = out / METRICS_FILE
    if metrics.exists() and _json_object(metrics) is None:
        raise UserError("not a speedsim run's metrics (a JSON object); delete it to rewrite it", where=str(metrics))
    if any(stage_path(out, s).exists() for s in STAGES):  # a run's (its config is checked when it is read)
        return out
    # no checkpoint: metrics and tokenizer are ours only by their content (a finished run whose
    # checkpoints were deleted to save space)
    ours: set[str] = set()
    if "stages" in (_json_object(metrics) or {}):
        ours.add(METRICS_FILE)
    if "model" in (_json_object(out / TOKENIZER_FILE) or {}):
        ours.add(TOKENIZER_FILE)
    other = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in ours)
    if other:
        raise UserError(f"{out} holds files a run does not write ({other[0]}); train into a new or empty "
                        "directory", where=where)
    return out


def latest_checkpoint(path: Path | str) -> Path:
    """The checkpoint file of a run directory's last stage present (or `path` itself if a file)."""
    path = Path(path)
    if path.is_dir():
        for stage in reversed(STAGES):
            if stage_path(path, stage).exists():
                return stage_path(path, stage)
        raise UserError("no checkpoint (pretrain.pt or finetune.pt) in the run directory", where=str(path))
    return path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint file (or the latest in a run directory); unreadable -> `UserError` naming it."""
    path = latest_checkpoint(path)
    if not path.exists():
        raise UserError("checkpoint not found", where=str(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises a dozen unrelated types for a torn or foreign file
        raise UserError(f"corrupt checkpoint ({type(err).__name__})", where=str(path)) from None
    if not isinstance(ckpt, dict) or not set(REQUIRED) <= ckpt.keys():
        raise UserError("corrupt checkpoint (missing fields)", where=str(path))
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint format {ckpt['format']} (this build reads {CHECKPOINT_FORMAT})", where=str(path))
    return ckpt


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    missing = [k for k in REQUIRED if k not in state]
    assert not missing, missing
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


def model_from(ckpt: dict[str, Any], where: str) -> SharedDecoder:
    """The model of a checkpoint (on the CPU, eval mode)."""
    model = SharedDecoder(SpeedConfig.from_dict(ckpt["speed_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise UserError(f"corrupt checkpoint (weights do not fit the model: {str(err)[:100]})", where=where) from None
    return model.eval()


def load_model(path: Path | str) -> tuple[SharedDecoder, Tokenizer, TrainConfig]:
    """(model in eval mode, tokenizer, training config) from a run directory or checkpoint file."""
    file = latest_checkpoint(path)
    ckpt = read_checkpoint(file)
    where = str(file)
    cfg = parse_train_config(ckpt["train_config"], where)
    return model_from(ckpt, where), tokenizer_from_str(ckpt["tokenizer"], where), cfg
