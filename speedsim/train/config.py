"""A training recipe as data: corpus and tokenizer, model shape, pre-training and fine-tuning stages.

A config has up to two stages, run in order into one run directory:

- ``pretrain``: the weighted multi-exit loss on raw code windows (causal LM for a
  decoder-only model; prefix-to-continuation for an encoder-decoder model: the encoder reads
  `prefix_tokens` of code, the decoder predicts the next `target_tokens`);
- ``finetune``: the task of ``data.task`` (code to docstring, or function continuation),
  starting from the pre-trained weights, or from random weights only with ``from_scratch``.

Inconsistent stages, a model that does not fit the lengths, and more `threads` than this
machine has cores are `UserError`s naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from speedsim.data import DEFAULT_VOCAB_SIZE, TASKS
from speedsim.errors import UserError
from speedsim.model import SpeedConfig
from speedsim.yamlio import read_mapping, validate_as

STAGES = ("pretrain", "finetune")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSection(_Section):
    task: str = Field("summarize", description="fine-tuning task: summarize (encoder-decoder) or continue (decoder-only)")
    vocab_size: int = Field(DEFAULT_VOCAB_SIZE, ge=259, description="BPE vocabulary size in tokens, specials included")
    max_src_tokens: int = Field(256, ge=1, description="fine-tuning source / prompt length cap in tokens")
    max_tgt_tokens: int = Field(128, ge=3, description="fine-tuning target length cap in tokens (with <bos>/<eos>)")
    sources: list[str] | None = Field(None, description="source directories of the corpus; default: stdlib + installed packages")
    cache_dir: str | None = Field(None, description="corpus + token cache; default $SPEEDSIM_CACHE or ~/.cache/speedsim")


class StageSection(_Section):
    steps: int = Field(ge=1, description="optimizer steps of this stage")
    batch_size: int = Field(16, ge=1, description="sequences per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a fraction of the peak (cosine decay)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    eval_every: int = Field(0, ge=0, description="steps between validation-loss evaluations (0: only at the end)")
    max_seconds: float | None = Field(
        None, gt=0, description="wall-clock cap of the stage in seconds: the LR schedule follows max(step, time) "
        "progress and the stage ends at the cap (a capped run is not bit-reproducible)"
    )


class PretrainSection(StageSection):
    prefix_tokens: int | None = Field(
        None, ge=0, description="encoder input per window (encoder-decoder; default data.max_src_tokens); 0 for decoder-only"
    )
    target_tokens: int = Field(128, ge=2, description="tokens predicted per window")


class FinetuneSection(StageSection):
    from_scratch: bool = Field(False, description="fine-tune from random weights (needed when there is no pretrain stage)")


class EvalSection(_Section):
    val_examples: int = Field(256, ge=1, description="validation examples (or windows) for the loss")
    rouge_examples: int = Field(64, ge=0, description="validation examples decoded greedily for ROUGE-L")
    max_new_tokens: int = Field(128, ge=1, description="decode length cap in tokens")
    batch_size: int = Field(32, ge=1, description="examples per validation-loss batch")


class TrainConfig(_Section):
    name: str = Field(description="run name, e.g. 4x3")
    data: DataSection = DataSection()
    model: dict[str, Any] = Field(
        description="SpeedConfig fields (exit_weights included) except vocab_size, pad_id, bos_id (from the tokenizer)"
    )
    pretrain: PretrainSection | None = None
    finetune: FinetuneSection | None = None
    eval: EvalSection = EvalSection()
    seed: int = Field(0, description="seeds initialisation, data order and dropout")
    threads: int = Field(1, ge=1, description="torch intra-op CPU threads (at most this machine's cores)")

    @property
    def decoder_only(self) -> bool:
        return int(self.model.get("encoder_layers", 0)) == 0

    @property
    def stages(self) -> list[str]:
        """The stages present, in the order they run."""
        return [s for s in STAGES if getattr(self, s) is not None]

    def stage(self, name: str) -> StageSection:
        section = getattr(self, name)
        assert section is not None, name
        return section

    @property
    def prefix_tokens(self) -> int:
        """Encoder input tokens per pre-training window (0 for a decoder-only model)."""
        if self.decoder_only:
            return 0
        p = self.pretrain.prefix_tokens if self.pretrain else None
        return self.data.max_src_tokens if p is None else p


def machine_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_stages(cfg: TrainConfig, where: str) -> None:
    if not cfg.stages:
        raise UserError("no stage to run: add a pretrain and/or a finetune section", where=where)
    ft = cfg.finetune
    if ft is not None and cfg.pretrain is None and not ft.from_scratch:
        raise UserError(
            "finetune: no pretrain stage to start from; add a pretrain section or set finetune.from_scratch: true",
            where=where,
        )
    if ft is not None and cfg.pretrain is not None and ft.from_scratch:
        raise UserError("finetune.from_scratch: true contradicts the pretrain stage (drop one of them)", where=where)
    if cfg.pretrain is not None and cfg.decoder_only and cfg.pretrain.prefix_tokens:
        raise UserError("pretrain.prefix_tokens: a decoder-only model has no encoder input (use 0)", where=where)


def _check_lengths(cfg: TrainConfig, sc: SpeedConfig, where: str) -> None:
    need = {"data.max_tgt_tokens": cfg.data.max_tgt_tokens}
    if cfg.decoder_only:
        need["data.max_src_tokens + data.max_tgt_tokens"] = cfg.data.max_src_tokens + cfg.data.max_tgt_tokens
    else:
        need["data.max_src_tokens"] = cfg.data.max_src_tokens
    if cfg.pretrain is not None:
        need["pretrain.target_tokens"] = cfg.pretrain.target_tokens
        need["pretrain.prefix_tokens"] = cfg.prefix_tokens
    for field, n in need.items():
        if n > sc.max_len:
            raise UserError(f"model.max_len {sc.max_len} is shorter than {field} = {n}", where=where)


def check_threads(threads: int, where: str) -> None:
    """More threads than cores would only thrash: a `UserError`."""
    cores = machine_cores()
    if threads > cores:
        raise UserError(f"threads: {threads} exceeds this machine's {cores} cores", where=where)


def parse_train_config(raw: Any, where: str) -> TrainConfig:
    """Validate a config mapping; errors become a `UserError` naming `where` and the field."""
    if not isinstance(raw, dict):
        raise UserError("expected a mapping at the top level", where=where)
    cfg = validate_as(TrainConfig, raw, where)
    if cfg.data.task not in TASKS:
        raise UserError(f"data.task: {cfg.data.task!r} is not one of {', '.join(TASKS)}", where=where)
    for key, owner in (("vocab_size", "data.vocab_size"), ("pad_id", "the tokenizer"), ("bos_id", "the tokenizer"), ("seed", "seed")):
        if key in cfg.model:
            raise UserError(f"model.{key}: set by {owner}", where=where)
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
    _check_stages(cfg, where)
    _check_lengths(cfg, speed_config(cfg, cfg.data.vocab_size, where), where)
    return cfg


def load_train_config(path: Path | str) -> TrainConfig:
    """Read and validate a training YAML config."""
    path = Path(path)
    if not path.exists():
        raise UserError("config file not found", where=str(path))
    return parse_train_config(read_mapping(path, "training config"), str(path))


def speed_config(cfg: TrainConfig, vocab_size: int, where: str = "config") -> SpeedConfig:
    """The model's `SpeedConfig`, with vocab size and special ids from the tokenizer
    (`speedsim.data.tokenizer` reserves <pad> = 0, <bos> = 1, <eos> = 2)."""
    try:
        return SpeedConfig.from_dict({**cfg.model, "vocab_size": vocab_size, "pad_id": 0, "bos_id": 1, "seed": cfg.seed})
    except UserError as err:
        raise UserError(f"model.{err}", where=where) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"model: {err}", where=where) from None
