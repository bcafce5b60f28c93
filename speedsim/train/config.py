"""A training recipe as data: corpus and tokenizer, model shape, pre-training and fine-tuning stages.

A config has up to two stages, run in order into one run directory:

- ``pretrain``: the weighted multi-exit loss on raw code windows (causal LM for a
  decoder-only model; prefix-to-continuation for an encoder-decoder model: the encoder reads
  `prefix_tokens` of code, the decoder predicts the next `target_tokens`);
- ``finetune``: the task of ``data.task`` (code to docstring, or function continuation),
  starting from the pre-trained weights, or from random weights only with ``from_scratch``.

Counts are strict integers (`steps: true` or `2.5` is refused, not taken as 1 or 2) and rates
finite numbers. Inconsistent stages, a warm-up longer than its stage, a model that does not
fit the lengths or is larger than `MAX_TRAIN_PARAMETERS`, a missing source directory, a
`cache_dir` that cannot be a directory, and more `threads` than this machine has cores are
`UserError`s naming the file and the field.

Paths go through `speedsim.userpath`: the config's own path (a malformed one, a link loop) is an
error at the flag it came from (`--config`), `data.sources` and `data.cache_dir` at the field
(`config.yaml: field 'data.cache_dir'`), and `$SPEEDSIM_CACHE` at the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, model_validator

from speedsim.data import DEFAULT_VOCAB_SIZE, MAX_VOCAB_SIZE, TASKS, default_cache_dir
from speedsim.data.sources import explicit_roots
from speedsim.errors import UserError
from speedsim.fileio import check_output_dir
from speedsim.limits import (
    MAX_TRAIN_BATCH,
    MAX_TRAIN_EXAMPLES,
    MAX_TRAIN_PARAMETERS,
    MAX_TRAIN_STEPS,
    MAX_TRAIN_TOKENS,
)
from speedsim.model import SpeedConfig
from speedsim.userpath import probe, shown, user_path
from speedsim.yamlio import read_mapping, validate_as

STAGES = ("pretrain", "finetune")

SEED_MAX = 2**63 - 1  # torch.manual_seed takes a 64-bit seed
DEFAULT_WARMUP_STEPS = 50  # linear warm-up of a stage that sets none (or all its steps, if fewer)

Count = Annotated[int, Strict()]  # an integer (a YAML `true` or `2.5` is not one)
Rate = Annotated[float, Strict(), AllowInfNan(False)]  # a finite number (an integer is one too; `true` is not)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSection(_Section):
    task: str = Field("summarize", description="fine-tuning task: summarize (encoder-decoder) or continue (decoder-only)")
    vocab_size: Count = Field(DEFAULT_VOCAB_SIZE, ge=259, le=MAX_VOCAB_SIZE,
                              description="BPE vocabulary size in tokens, specials included")
    max_src_tokens: Count = Field(256, ge=1, le=MAX_TRAIN_TOKENS, description="fine-tuning source / prompt length cap in tokens")
    max_tgt_tokens: Count = Field(128, ge=3, le=MAX_TRAIN_TOKENS, description="fine-tuning target length cap in tokens (with <bos>/<eos>)")
    min_tgt_tokens: Count = Field(0, ge=0, description="fine-tuning examples whose target text has fewer tokens are "
                                  "dropped, in every split (0: none; a task of longer outputs)")
    # an empty list or text is a mistake, not the default (an empty cache_dir silently meant ~/.cache)
    sources: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="source directories of the corpus; default: stdlib + installed packages"
    )
    cache_dir: str | None = Field(None, min_length=1, description="corpus + token cache; default $SPEEDSIM_CACHE or "
                                  "~/.cache/speedsim")


class StageSection(_Section):
    steps: Count = Field(ge=1, le=MAX_TRAIN_STEPS, description="optimizer steps of this stage")
    batch_size: Count = Field(16, ge=1, le=MAX_TRAIN_BATCH, description="sequences per step")
    # AdamW steps each weight by about lr: above 1 (1e308 passed as finite) the losses turn NaN and
    # the run still ends with exit 0
    lr: Rate = Field(1e-3, gt=0, le=1, description="peak learning rate (AdamW: at most 1)")
    min_lr_ratio: Rate = Field(0.1, ge=0, le=1, description="final LR as a fraction of the peak (cosine decay)")
    warmup_steps: Count = Field(
        DEFAULT_WARMUP_STEPS, ge=0, description=f"linear warm-up steps, at most `steps` (default {DEFAULT_WARMUP_STEPS}, "
        "or `steps` if fewer)"
    )
    weight_decay: Rate = Field(0.01, ge=0, le=1, description="AdamW decoupled weight decay (each step scales "
                               "the weights by 1 - lr * weight_decay: at most 1)")
    grad_clip: Rate = Field(1.0, gt=0, description="max global gradient norm")
    layer_lr_scale: Rate = Field(
        1.0, gt=0, le=1, description="learning rate of the transformer layers (encoder and decoder) as a fraction of "
        "lr; token and position embeddings, the final norms and the LM head keep lr"
    )
    checkpoint_every: Count = Field(100, ge=1, le=MAX_TRAIN_STEPS, description="steps between checkpoints")
    eval_every: Count = Field(0, ge=0, le=MAX_TRAIN_STEPS, description="steps between validation-loss evaluations (0: only at the end)")
    max_seconds: Rate | None = Field(
        None, gt=0, description="wall-clock cap of the stage in seconds: the LR schedule follows max(step, time) "
        "progress and the stage ends at the cap (a capped run is not bit-reproducible)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_warmup_fits(cls, data: Any) -> Any:
        # The default warm-up is meant for long stages: a shorter stage warms up over all its steps.
        if isinstance(data, dict) and "warmup_steps" not in data and type(data.get("steps")) is int:
            return {**data, "warmup_steps": min(DEFAULT_WARMUP_STEPS, max(data["steps"], 0))}
        return data

    @model_validator(mode="after")
    def _warmup_within_stage(self) -> StageSection:
        # A warm-up longer than the stage never reaches the peak LR: the schedule would silently
        # train at a fraction of `lr`.
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}: "
                             "the peak learning rate would never be reached")
        return self


class PretrainSection(StageSection):
    prefix_tokens: Count | None = Field(
        None, ge=0, description="encoder input per window (encoder-decoder; default data.max_src_tokens); 0 for decoder-only"
    )
    target_tokens: Count = Field(128, ge=2, le=MAX_TRAIN_TOKENS, description="tokens predicted per window")


class FinetuneSection(StageSection):
    from_scratch: Annotated[bool, Strict()] = Field(False, description="fine-tune from random weights (needed when there is no pretrain stage)")
    fixed_shape: Annotated[bool, Strict()] = Field(
        False, description="pad every batch to data.max_src_tokens x max_tgt_tokens: one tensor shape for the whole "
        "stage (on a GPU, no per-shape work; more padding)"
    )
    pad_multiple: Count | None = Field(
        None, ge=1, description="pad each batch's source and target lengths up to a multiple of this many tokens "
        "(at most the data's caps) and group batches by target length: a few shapes, little padding (instead of "
        "fixed_shape)"
    )

    @model_validator(mode="after")
    def _one_padding(self) -> FinetuneSection:
        if self.fixed_shape and self.pad_multiple is not None:
            raise ValueError("fixed_shape and pad_multiple exclude each other (one shape, or a few)")
        return self


class EvalSection(_Section):
    val_examples: Count = Field(256, ge=1, le=MAX_TRAIN_EXAMPLES, description="validation examples (or windows) for the loss")
    rouge_examples: Count = Field(64, ge=0, le=MAX_TRAIN_EXAMPLES, description="validation examples decoded greedily for ROUGE-L")
    max_new_tokens: Count = Field(128, ge=1, le=MAX_TRAIN_TOKENS, description="decode length cap in tokens")
    batch_size: Count = Field(32, ge=1, le=MAX_TRAIN_BATCH, description="examples per validation-loss batch")


class TrainConfig(_Section):
    name: str = Field(min_length=1, description="run name, e.g. 4x3")
    data: DataSection = DataSection()
    model: dict[str, Any] = Field(
        description="SpeedConfig fields (exit_weights included) except vocab_size, pad_id, bos_id (from the tokenizer)"
    )
    pretrain: PretrainSection | None = None
    finetune: FinetuneSection | None = None
    eval: EvalSection = EvalSection()
    seed: Count = Field(0, ge=0, le=SEED_MAX, description="seeds initialisation, data order and dropout")
    threads: Count = Field(1, ge=1, description="torch intra-op CPU threads (at most this machine's cores)")

    @property
    def decoder_only(self) -> bool:
        # SpeedConfig's default is 0 (decoder-only); parse_train_config has checked the type
        return self.model.get("encoder_layers", 0) == 0

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
    # a summary needs room for <bos> and <eos> (longer ones are dropped); a continuation for <eos> (longer
    # ones are cut, and a cut one never learns to stop)
    room = cfg.data.max_tgt_tokens - (1 if cfg.decoder_only else 2)
    if cfg.data.min_tgt_tokens > room:
        fate = "cut" if cfg.decoder_only else "dropped"
        raise UserError(f"data.min_tgt_tokens {cfg.data.min_tgt_tokens} exceeds the {room} target tokens "
                        f"data.max_tgt_tokens {cfg.data.max_tgt_tokens} leaves: every example would be {fate}",
                        where=where)


def parameter_count(sc: SpeedConfig) -> int:
    """Parameters of `SharedDecoder(sc)`, in closed form (checked against the built model in the tests)."""
    d, f = sc.d_model, sc.d_ff
    ffn = d * (2 * f if sc.ffn == "swiglu" else f) + f * d  # up (gate and value for swiglu), down
    attn = 4 * d * d  # qkv and output projection (cross-attention: q, kv and output, also 4 d^2)
    encoder = sc.encoder_layers * (2 * d + attn + ffn)  # two norms per layer
    decoder = sc.unique_layers * (2 * d + attn + ffn + (0 if sc.decoder_only else d + attn))
    positions = sc.max_len * d * (1 if sc.decoder_only else 2)
    embeddings = sc.vocab_size * d * (1 if sc.tie_embeddings else 2)  # token table (+ untied LM head)
    norms = d * (1 if sc.decoder_only else 2)  # exit norm (+ encoder's final norm)
    return embeddings + positions + encoder + decoder + norms


def _check_size(sc: SpeedConfig, where: str) -> None:
    n = parameter_count(sc)
    if n > MAX_TRAIN_PARAMETERS:
        raise UserError(
            f"model: {n:.3g} parameters (d_model {sc.d_model}, d_ff {sc.d_ff}, {sc.unique_layers} shared + "
            f"{sc.encoder_layers} encoder layers, max_len {sc.max_len}, vocab {sc.vocab_size}) exceed the limit of "
            f"{MAX_TRAIN_PARAMETERS:,} (MAX_TRAIN_PARAMETERS: 16 bytes each for weights, gradients and AdamW state)",
            where=where,
        )


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
    for key in ("unique_layers", "repeats"):
        value = cfg.model.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"model.{key}: must be an integer >= 1, got {value!r}", where=where)
    sc = speed_config(cfg, cfg.data.vocab_size, where)  # before anything reads a model field
    _check_size(sc, where)
    if cfg.decoder_only != (cfg.data.task == "continue"):
        raise UserError(
            f"data.task {cfg.data.task!r} does not match model.encoder_layers "
            "(summarize needs an encoder, continue is decoder-only)",
            where=where,
        )
    _check_stages(cfg, where)
    _check_lengths(cfg, sc, where)
    return cfg


def field_where(where: str, field: str) -> str:
    """Where a config's field is: `config.yaml: field 'data.cache_dir'`."""
    return f"{where}: field '{field}'"


def check_paths(cfg: TrainConfig, where: str) -> None:
    """The config's paths are usable on this machine: every `data.sources` entry is a source
    (`speedsim.data.sources.explicit_roots`: it exists, holds .py files, is given once), and a
    `data.cache_dir` (or `$SPEEDSIM_CACHE`) is or can become a directory. Errors name the field
    (`where: field 'data.sources.0'`) or the variable."""
    sources = cfg.data.sources or []
    if sources:
        explicit_roots(sources, [field_where(where, f"data.sources.{i}") for i in range(len(sources))])
    if cfg.data.cache_dir:
        check_output_dir(cfg.data.cache_dir, field_where(where, "data.cache_dir"))
    elif os.environ.get("SPEEDSIM_CACHE"):
        check_output_dir(default_cache_dir(), "$SPEEDSIM_CACHE")
    # else the default ~/.cache/speedsim: not the user's input


def load_train_config(path: Path | str, where: str | None = None) -> TrainConfig:
    """Read and validate a training YAML config (`parse_train_config`, then `check_paths`).

    `where` names where the path came from (`--config`) for a path that cannot name a file;
    problems of its content name the file."""
    label = where or shown(path)
    path = user_path(path, label)
    if probe(path, label) is None:  # a link loop, a denied search: a UserError at `label`
        raise UserError(f"config file not found: {shown(path)}" if where else "config file not found", where=label)
    cfg = parse_train_config(read_mapping(path, "training config"), str(path))
    check_paths(cfg, str(path))
    return cfg


def task_label(cfg: TrainConfig) -> str:
    """The fine-tuning task as traces and reports name it: `summarize`, or with a length floor
    `summarize, targets >= 16 tokens` (another task: another test set)."""
    floor = cfg.data.min_tgt_tokens
    return cfg.data.task + (f", targets >= {floor} tokens" if floor else "")


def speed_config(cfg: TrainConfig, vocab_size: int, where: str = "config") -> SpeedConfig:
    """The model's `SpeedConfig`, with vocab size and special ids from the tokenizer
    (`speedsim.data.tokenizer` reserves <pad> = 0, <bos> = 1, <eos> = 2)."""
    try:
        return SpeedConfig.from_dict({**cfg.model, "vocab_size": vocab_size, "pad_id": 0, "bos_id": 1, "seed": cfg.seed})
    except UserError as err:
        raise UserError(f"model.{err}", where=where) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"model: {err}", where=where) from None
