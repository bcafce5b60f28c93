"""Model specs: the dimensions a step workload needs (not weights).

Built in: the three shapes of the measured H200 data (`experiments/measured/h200/README.md`):

| model  | d_model | heads (d_head 64) | d_ff  | FFN                          | cross-attention | vocab  |
|--------|---------|-------------------|-------|------------------------------|-----------------|--------|
| t5base | 768     | 12                | 3072  | ReLU                         | 512 positions   | 32128  |
| dec1b  | 2048    | 32                | 8192  | SwiGLU, w1 fused d->2*d_ff   | no              | 128256 |
| dec7b  | 4096    | 32                | 11008 | SwiGLU                       | no              | 32000  |

Users add their own with a YAML file (`--model-spec FILE`): name, d_model, n_heads, d_ff,
ffn (relu | gelu | swiglu), cross_attention_len (0 = decoder-only), vocab. A spec file's path that
is malformed, unusable or absent is a `UserError` naming where it came from (`--model-spec`); what
the file holds is named by its file and field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speedsim.errors import UserError
from speedsim.limits import MAX_FFN, MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH
from speedsim.userpath import input_file
from speedsim.yamlio import read_mapping, validate_as

FfnKind = Literal["relu", "gelu", "swiglu"]
FFN_KINDS: tuple[str, ...] = get_args(FfnKind)  # feed-forward kinds, for the torch model's config too


class ModelSpec(BaseModel):
    """Dimensions of one transformer decoder layer stack (one layer's shape; depth comes from UxR).

    The counts are strict integers: `n_heads: true` is not 1, `d_model: "64"` is not 64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    d_model: int = Field(gt=0, strict=True, le=MAX_WIDTH)
    n_heads: int = Field(gt=0, strict=True, le=MAX_HEADS)
    d_ff: int = Field(gt=0, strict=True, le=MAX_FFN)
    ffn: FfnKind = "relu"
    cross_attention_len: int = Field(0, ge=0, strict=True, le=MAX_POSITIONS,
                                     description="encoder positions attended by cross-attention; 0 = none")
    vocab: int = Field(gt=0, strict=True, le=MAX_VOCAB)
    encoder_layers: int = Field(0, ge=0, strict=True, le=MAX_LAYERS,
                                description="encoder depth (prefill only); 0 = decoder-only")

    @field_validator("name")
    @classmethod
    def _a_name(cls, name: str) -> str:
        """A name, not a path (files are named after it): no leading or trailing blanks, no slash."""
        if name != name.strip() or any(c in name for c in "/\\") or not name.isprintable():
            raise ValueError(f"'{name}' is not a model name: no leading or trailing blanks, no '/' or '\\', "
                             "printable characters only")
        return name

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def gated(self) -> bool:
        return self.ffn == "swiglu"

    def layer_weight_elements(self) -> int:
        """Weight elements of one decoder layer (norm scales included)."""
        d = self.d_model
        attn = d * 3 * d + d * d
        cross = 4 * d * d if self.cross_attention_len else 0  # query, output, and the fused K/V of the memory
        ffn = d * (2 if self.gated else 1) * self.d_ff + self.d_ff * d
        norms = (3 if self.cross_attention_len else 2) * d
        return attn + cross + ffn + norms

    def head_weight_elements(self) -> int:
        return self.vocab * self.d_model


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "t5base": ModelSpec(name="t5base", d_model=768, n_heads=12, d_ff=3072, ffn="relu",
                        cross_attention_len=512, vocab=32128, encoder_layers=12),
    "dec1b": ModelSpec(name="dec1b", d_model=2048, n_heads=32, d_ff=8192, ffn="swiglu", vocab=128256),
    "dec7b": ModelSpec(name="dec7b", d_model=4096, n_heads=32, d_ff=11008, ffn="swiglu", vocab=32000),
}


def load_model_spec_file(path: str | os.PathLike[str], where: str | None = None) -> ModelSpec:
    """Read a user model spec YAML; raise `UserError` naming the file and field, or `where` (the flag it
    came from; None: the file) for a path that is malformed, unusable or absent."""
    path = input_file(path, where)
    return validate_as(ModelSpec, read_mapping(path, "model spec"), str(path))


def resolve_models(spec_files: Iterable[str | os.PathLike[str]] = (),
                   where: str | None = None) -> dict[str, ModelSpec]:
    """Built-in models plus user specs (`where`: the flag their paths came from, `--model-spec`).

    A spec never silently replaces another: one named like a built-in model, or like an earlier
    spec, is a `UserError` naming its file, unless its dimensions are the same (the spec files
    written beside measured CSVs repeat a built-in's)."""
    models = dict(BUILTIN_MODELS)
    origin = {name: "a built-in model" for name in BUILTIN_MODELS}
    for given in spec_files:
        spec = load_model_spec_file(given, where)
        path = Path(given)
        if spec.name in models and models[spec.name] != spec:
            raise UserError(f"name: '{spec.name}' is already {origin[spec.name]} with other dimensions: "
                            "give this spec another name", where=str(path))
        models[spec.name] = spec
        origin.setdefault(spec.name, f"given by {path}")
    return models


def get_model(name: str, models: dict[str, ModelSpec] | None = None) -> ModelSpec:
    models = BUILTIN_MODELS if models is None else models
    if name not in models:
        raise UserError(f"unknown model '{name}' (known: {', '.join(sorted(models))}; "
                        "give others with --model-spec FILE)", where="--model")
    return models[name]
