"""`SpeedConfig`: the shape of a `SharedDecoder` (frozen; checked field by field with one-line errors)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from speedsim.errors import UserError
from speedsim.sharing import Sharing
from speedsim.workload.models import FFN_KINDS


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class SpeedConfig:
    """Shape of a `SharedDecoder`. Lengths are in tokens. Frozen: never mutated at run time."""

    vocab_size: int  # tokens in the vocabulary (shared by encoder, decoder and LM head)
    d_model: int = 256  # width of the residual stream
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    d_ff: int = 1024  # hidden width of each feed-forward block
    unique_layers: int = 4  # U: distinct decoder layers (weights stored once)
    repeats: int = 3  # R: times the U layers are applied, one exit after each
    encoder_layers: int = 0  # unshared bidirectional encoder layers; 0 means decoder-only
    max_len: int = 512  # longest decoder (and encoder) sequence: size of the position tables and KV caches
    ffn: str = "relu"  # feed-forward kind: "relu" (T5), "gelu" or "swiglu"
    dropout: float = 0.0  # dropout on attention/FFN outputs during training (never while decoding)
    pad_id: int = 0  # padding token id
    bos_id: int = 1  # first decoder input of an encoder-decoder model (and of an empty prompt)
    exit_weights: tuple[float, ...] | None = None  # loss weight per exit; None: default_exit_weights(R)
    tie_embeddings: bool = True  # LM head shares the token-embedding matrix (T5 does)
    init_std: float = 0.02  # std of the normal initialisation of weight matrices (GPT-2 / nanoGPT value)
    seed: int = 0  # seed of the parameter initialisation (SharedDecoder(config) is deterministic)
    n_kv_heads: int | None = None  # key/value heads of self-attention (grouped-query; 1: multi-query); None: n_heads

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "unique_layers", "repeats", "max_len"):
            if getattr(self, name) < 1:
                raise UserError(f"must be >= 1, got {getattr(self, name)}", where=name)
        if self.encoder_layers < 0:
            raise UserError(f"must be >= 0, got {self.encoder_layers}", where="encoder_layers")
        if self.d_model % self.n_heads:
            raise UserError(f"{self.d_model} is not divisible by n_heads={self.n_heads}", where="d_model")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_kv_heads > self.n_heads
                                            or self.n_heads % self.n_kv_heads):
            raise UserError(f"{self.n_kv_heads} does not divide n_heads={self.n_heads}", where="n_kv_heads")
        if self.ffn not in FFN_KINDS:
            raise UserError(f"must be one of {', '.join(FFN_KINDS)}, got {self.ffn!r}", where="ffn")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"must be in [0, 1), got {self.dropout}", where="dropout")
        for name in ("pad_id", "bos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise UserError(f"must be in [0, vocab_size={self.vocab_size}), got {getattr(self, name)}", where=name)
        if self.init_std <= 0:
            raise UserError(f"must be > 0, got {self.init_std}", where="init_std")
        if self.exit_weights is not None:
            w = self.exit_weights
            if len(w) != self.repeats:
                raise UserError(f"needs one weight per exit ({self.repeats}), got {len(w)}", where="exit_weights")
            if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
                raise UserError("weights must be finite, >= 0 and not all 0", where="exit_weights")

    @property
    def decoder_only(self) -> bool:
        return self.encoder_layers == 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads of self-attention (n_heads unless grouped-query)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def sharing(self) -> Sharing:
        """UxR (prints as the paper writes it, e.g. 4x3)."""
        return Sharing(self.unique_layers, self.repeats)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if d["exit_weights"] is not None:
            d["exit_weights"] = list(d["exit_weights"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeedConfig:
        """Build from a mapping (YAML/JSON); an unknown or missing key is a `UserError` naming it."""
        if not isinstance(d, dict):
            raise UserError(f"expected a mapping, got {type(d).__name__}", where="config")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise UserError("unknown field", where=str(key))
        if "vocab_size" not in d:
            raise UserError("missing required field", where="vocab_size")
        kw = dict(d)
        if isinstance(kw.get("exit_weights"), list):
            kw["exit_weights"] = tuple(kw["exit_weights"])
        return cls(**kw)


_FIELD_TYPES = {"ffn": str, "dropout": float, "init_std": float, "tie_embeddings": bool}


def _check_type(name: str, value: Any) -> None:
    """Reject wrongly typed values (a YAML string where an int belongs) with a UserError."""
    if name == "exit_weights":
        if value is not None and (
            not isinstance(value, tuple) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        ):
            raise UserError("must be a list of numbers or null", where=name)
        return
    if name == "n_kv_heads" and value is None:
        return
    kind = _FIELD_TYPES.get(name, int)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise UserError(f"must be of type {kind.__name__}, got {value!r}", where=name)
