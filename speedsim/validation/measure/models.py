"""The models `speedsim measure` times: a trained checkpoint, a training config, or a model spec.

Timing does not depend on the weights' values, so every shape but the trained one gets random
weights. Exits do depend on them, which matters for whole SPEED decodes:

- `lm_head="untied"` (default for random weights): an LM head independent of the token
  embeddings. Exits after different repeats then rarely agree (first exit = final exit on 0-20%
  of positions at t5base width): SPEED's worst case, a flush on most tokens.
- `lm_head="tied"`: the head is the embedding matrix, as in T5. With random weights the
  residual stream stays close to the input token's embedding, so every exit predicts the input
  token again: one token repeated, all exits agree, no flush: SPEED's best case.

Neither is a trained model's behaviour; a trained checkpoint (`--checkpoint`) is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from speedsim.errors import UserError
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.sharing import Sharing
from speedsim.workload.models import ModelSpec

PROMPT_TOKENS = 16  # prompt length of a random decoder-only model (no encoder)
LM_HEADS = ("untied", "tied")
STEP_POSITIONS = 256  # decoder positions a random-weight model has at least


@dataclass
class Decodable:
    """A model and what to decode with it."""

    model: SharedDecoder
    name: str  # model name in the CSV (a model spec's name)
    sources: list[list[int]]  # encoder inputs (or prompts of a decoder-only model)
    eos_id: int | None  # None: decode exactly max_new_tokens
    max_new_tokens: int
    weights: str  # "trained", "random-untied" or "random-tied"


def build(cfg: SpeedConfig, device: str | torch.device, dtype: torch.dtype) -> SharedDecoder:
    """A random-weight model made on `device` (initialising a t5base-sized model on a CPU takes seconds)."""
    with torch.device(device):
        model = SharedDecoder(cfg)
    return model.to(dtype).eval()


def from_checkpoint(checkpoint: Path | str, device: str, dtype: torch.dtype, sequences: int,
                    where: str = "--checkpoint") -> Decodable:
    """A trained model and `sequences` sources of its test split (`where`: the flag the path came from)."""
    # the training stack (corpus, tokenizers, ROUGE) takes seconds to import: only for trained models
    from speedsim.data import special_ids
    from speedsim.train import load_model, prepare_data, sample_indices

    model, tok, cfg = load_model(checkpoint, where)
    _, enc = prepare_data(cfg, tok)
    test = enc["test"]
    sources = [list(test[i].src) for i in sample_indices(len(test), sequences)]
    return Decodable(model.to(device, dtype).eval(), f"speed-{cfg.name}", sources, special_ids(tok)["eos"],
                     cfg.eval.max_new_tokens, "trained")


def from_config(config: Path | str, device: str, dtype: torch.dtype, sequences: int,
                where: str = "--config") -> Decodable:
    """Random weights at a training config's shape; random sources of half its source length (`where`:
    the flag the path came from)."""
    from speedsim.train import load_train_config, speed_config  # see from_checkpoint

    cfg = load_train_config(config, where)
    model = build(speed_config(cfg, cfg.data.vocab_size), device, dtype)
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randint(4, cfg.data.vocab_size, (max(1, cfg.data.max_src_tokens // 2),), generator=gen).tolist()
               for _ in range(sequences)]
    return Decodable(model, f"speed-{cfg.name}", sources, None,
                     cfg.eval.max_new_tokens, "random-tied" if model.config.tie_embeddings else "random-untied")


MIN_RANDOM_VOCAB = 5  # 4 special ids and at least one token to draw


def from_spec(spec: ModelSpec, sharing: Sharing, device: str, dtype: torch.dtype, sequences: int,
              max_new_tokens: int, lm_head: str = "untied") -> Decodable:
    """Random weights at a model spec's dimensions with UxR sharing.

    An encoder-decoder spec (cross_attention_len > 0) decodes random sources of exactly that
    many tokens (its encoder has `encoder_layers`, at least 1); a decoder-only one continues
    random prompts of `PROMPT_TOKENS` tokens.
    """
    if lm_head not in LM_HEADS:
        raise UserError(f"unknown LM head '{lm_head}' ({' or '.join(LM_HEADS)})", where="--lm-head")
    if spec.vocab < MIN_RANDOM_VOCAB:  # random sources are drawn from the ids after the special ones
        raise UserError(f"model '{spec.name}': field 'vocab' {spec.vocab} is too small to decode with random "
                        f"weights (at least {MIN_RANDOM_VOCAB}: ids 0-3 are special tokens)", where="--model")
    unmeasured = [f for f in ("n_kv_heads", "head_dim", "weight_dtype", "kv_dtype") if getattr(spec, f) is not None]
    if spec.kv_heads == spec.n_heads and spec.d_head * spec.n_heads == spec.d_model:
        unmeasured = [f for f in unmeasured if f not in ("n_kv_heads", "head_dim")]  # (given, but the plain shape)
    if unmeasured:
        raise UserError(f"model '{spec.name}': measure times multi-head attention with d_model / n_heads wide heads "
                        f"in the run's dtype; its {', '.join(unmeasured)} cannot be measured", where="--model")
    src_len = spec.cross_attention_len or PROMPT_TOKENS
    encoder = max(1, spec.encoder_layers) if spec.cross_attention_len else 0
    # room for the decode and for the step sections' caches (ctx up to 128, plus n or R tokens)
    max_len = max(src_len, max_new_tokens + 1, STEP_POSITIONS) + (src_len if not encoder else 0)
    cfg = SpeedConfig(vocab_size=spec.vocab, d_model=spec.d_model, n_heads=spec.n_heads, d_ff=spec.d_ff,
                      unique_layers=sharing.unique, repeats=sharing.repeats, encoder_layers=encoder,
                      max_len=max_len, ffn=spec.ffn, tie_embeddings=lm_head == "tied")
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randint(4, spec.vocab, (src_len,), generator=gen).tolist() for _ in range(sequences)]
    return Decodable(build(cfg, device, dtype), spec.name, sources, None, max_new_tokens,
                     f"random-{lm_head}")


def variant(model: SharedDecoder, sharing: Sharing, light_encoder: bool = False) -> SharedDecoder:
    """A model of the same dimensions with other sharing (random weights: timing does not depend on them).

    `light_encoder`: one encoder layer at most (for steps that only need the decoder's shape).
    """
    encoder = min(1, model.config.encoder_layers) if light_encoder else model.config.encoder_layers
    cfg = dataclasses.replace(model.config, unique_layers=sharing.unique, repeats=sharing.repeats, exit_weights=None,
                              encoder_layers=encoder)
    p = next(model.parameters())
    return build(cfg, p.device, p.dtype)


def spec_of(model: SharedDecoder, name: str, src_len: int) -> ModelSpec:
    """The model spec (dimensions for `validate --model-spec`) of a model decoding `src_len`-token sources."""
    c = model.config
    return ModelSpec(name=name, d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, ffn=c.ffn,
                     cross_attention_len=0 if c.decoder_only else src_len, vocab=c.vocab_size,
                     encoder_layers=c.encoder_layers)
