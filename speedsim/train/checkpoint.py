"""Checkpoints of a run directory: one file per stage, written atomically.

``DIR/pretrain.pt`` and ``DIR/finetune.pt`` each hold the model, optimizer, step, RNG
state, both configs, the tokenizer and the loss history of their stage. They are written to
a temporary file and renamed, so an interrupt never leaves a torn checkpoint. The model of
a run is the one of its last stage present (`latest_checkpoint`).

A checkpoint path a user gives (`--checkpoint`) goes through `speedsim.userpath`: a malformed
path or a link loop is a `UserError` at the flag. A checkpoint is refused when it is read
(`read_checkpoint`, so every command that loads one: trace, measure, a resumed train) if its
weights are not all finite: a NaN or an infinity decodes to garbage tokens and null losses.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from speedsim.data import tokenizer_from_str
from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output_dir
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.train.config import STAGES, TrainConfig, parse_train_config
from speedsim.userpath import is_dir, os_errors, probe, shown, user_path

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
    with os_errors(where, "cannot list"):  # a directory we may write but not read
        other = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in ours)
    if other:
        raise UserError(f"{out} holds files a run does not write ({other[0]}); train into a new or empty "
                        "directory", where=where)
    return out


def latest_checkpoint(path: Path | str, where: str | None = None) -> Path:
    """The checkpoint file of a run directory's last stage present (or `path` itself if not a directory).
    `where` names where the path came from (`--checkpoint`): a path that cannot name a file, a link loop
    or a run directory without a checkpoint is a `UserError` there (by default, at the path)."""
    label = where or shown(path)
    path = user_path(path, label)
    if is_dir(path, label):
        for stage in reversed(STAGES):
            if probe(stage_path(path, stage), label) is not None:
                return stage_path(path, stage)
        name = f" {shown(path)}" if where else ""
        raise UserError(f"no checkpoint (pretrain.pt or finetune.pt) in the run directory{name}", where=label)
    return path


def non_finite(state: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, "nan" or "inf") of the first tensor of a state dict holding a value that is not finite, or None."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                return name, "nan" if bool(torch.isnan(value).any()) else "inf"
    return None


def read_checkpoint(path: Path | str, where: str | None = None) -> dict[str, Any]:
    """Load a checkpoint file (or the latest in a run directory). A path that cannot name one is a
    `UserError` at `where` (`--checkpoint`; by default the path); a file that is not a checkpoint of
    this build, or whose weights are not all finite, is a `UserError` naming the file."""
    label = where or shown(path)
    path = latest_checkpoint(path, where)
    st = probe(path, label)
    if st is None:
        raise UserError(f"checkpoint not found: {shown(path)}" if where else "checkpoint not found", where=label)
    if not stat.S_ISREG(st.st_mode):  # a FIFO's read would block; a device's never end
        raise UserError("not a checkpoint file (not a regular file)", where=str(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises a dozen unrelated types for a torn or foreign file
        raise UserError(f"corrupt checkpoint ({type(err).__name__})", where=str(path)) from None
    if not isinstance(ckpt, dict) or not set(REQUIRED) <= ckpt.keys() or not isinstance(ckpt["model"], dict):
        raise UserError("corrupt checkpoint (missing fields)", where=str(path))
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint format {ckpt['format']} (this build reads {CHECKPOINT_FORMAT})", where=str(path))
    bad = non_finite(ckpt["model"])
    if bad:
        raise UserError(f"the weights are not finite: tensor '{bad[0]}' holds {bad[1]} (a diverged run; retrain "
                        "with a lower lr)", where=str(path))
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


def load_model(path: Path | str, where: str | None = None) -> tuple[SharedDecoder, Tokenizer, TrainConfig]:
    """(model in eval mode, tokenizer, training config) from a run directory or checkpoint file
    (`where`: the flag the path came from, see `read_checkpoint`)."""
    file = latest_checkpoint(path, where)
    ckpt = read_checkpoint(file, where)
    where = str(file)
    cfg = parse_train_config(ckpt["train_config"], where)
    return model_from(ckpt, where), tokenizer_from_str(ckpt["tokenizer"], where), cfg
