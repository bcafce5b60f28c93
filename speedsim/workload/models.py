"""Model specs: the dimensions a step workload needs (not weights).

Built in: the three shapes of the measured H200 data (`experiments/measured/h200/README.md`):

| model  | d_model | heads (d_head 64) | d_ff  | FFN                          | cross-attention | vocab  |
|--------|---------|-------------------|-------|------------------------------|-----------------|--------|
| t5base | 768     | 12                | 3072  | ReLU                         | 512 positions   | 32128  |
| dec1b  | 2048    | 32                | 8192  | SwiGLU, w1 fused d->2*d_ff   | no              | 128256 |
| dec7b  | 4096    | 32                | 11008 | SwiGLU                       | no              | 32000  |

and the published models of `PUBLISHED_MODELS` (Llama-2 7B/13B/70B, Llama-3 8B/70B, Mistral 7B, T5
base/large/3B/11B as `llama2-7b`, ..., `t5-11b`), each dimension from its release (`MODEL_SOURCES`).

Users add their own with a YAML file (`--model-spec FILE`): name, d_model, n_heads, d_ff,
ffn (relu | gelu | swiglu), cross_attention_len (0 = decoder-only), vocab, and optionally
encoder_layers, n_kv_heads (grouped-query attention; 1: multi-query), head_dim (heads not
d_model / n_heads wide, as T5-3B's), tied_embeddings, n_layers (the published depth),
weight_dtype (bf16, fp16, fp8, int8, int4: weight-only quantisation, `WeightFormat`), weight_group
(input elements per scale of int8/int4 weights) and kv_dtype (bf16, fp16, fp8, int8); a run's
`--weight-dtype`, `--weight-group` and `--kv-dtype` override the last three. A spec file's path that
is malformed, unusable or absent is a `UserError` naming where it came from (`--model-spec`); what
the file holds is named by its file and field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from speedsim.dtypes import KvDtype, WeightDtype
from speedsim.errors import UserError
from speedsim.hardware.parts import BYTES_PER_ELEMENT
from speedsim.hardware.profile import HardwareProfile
from speedsim.limits import MAX_FFN, MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH
from speedsim.userpath import input_file
from speedsim.yamlio import read_mapping, validate_as

FfnKind = Literal["relu", "gelu", "swiglu"]
FFN_KINDS: tuple[str, ...] = get_args(FfnKind)  # feed-forward kinds, for the torch model's config too


@dataclass(frozen=True)
class WeightFormat:
    """How a weight matrix stored in a format other than the run's dtype is read and used (weight-only
    quantisation: the kernel reads the stored bytes and dequantises them to the run's dtype in registers,
    as Marlin, AWQ's and TensorRT-LLM's weight-only GEMV kernels do).

    `bits` per weight; `group`: input elements per fp16 scale (0: one scale per output channel, None: one
    per tensor, not counted); `dequant_ops`: vector operations per weight element read (unpack, convert,
    scale), charged at the device's vector peak and overlapped with the weight stream like any compute.
    The group size of int4 is the common default of GPTQ, AWQ and Marlin (128); int8 weight-only scales
    per output channel (TensorRT-LLM's W8A16, gpt-fast's int8). The operation counts are this model's
    assumption (the published int8/int4 decode rows in `experiments/measured/published/` check them)."""

    bits: int
    group: int | None
    dequant_ops: float


SCALE_BYTES = 2  # an fp16 scale
WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "bf16": WeightFormat(16, None, 1.0),  # a conversion only (weights of another 16-bit type than the run's)
    "fp16": WeightFormat(16, None, 1.0),
    "fp8": WeightFormat(8, None, 1.0),    # one scale per tensor
    "int8": WeightFormat(8, 0, 1.0),      # convert; the per-channel scale applies once per output
    "int4": WeightFormat(4, 128, 2.0),    # unpack and convert, then the group's scale
}


def quantized(fmt: str, dtype: str) -> WeightFormat | None:
    """The weight format `fmt` in a run of `dtype`: None when it is the run's own (no dequantisation)."""
    return None if fmt == dtype else WEIGHT_FORMATS[fmt]


def weight_bytes(fmt: str, dtype: str, d_in: int, d_out: int, group: int | None = None) -> float:
    """Bytes of a d_in x d_out weight matrix stored as `fmt` in a run of `dtype`, its scales included (`group`:
    input elements per scale of an integer format, instead of the format's own)."""
    q = quantized(fmt, dtype)
    if q is None:
        return float(d_in * d_out * BYTES_PER_ELEMENT[dtype])
    g = group if group is not None and fmt in GROUPED else q.group
    scales = 0 if g is None else d_out * (1 if g == 0 else -(-d_in // g))
    return d_in * d_out * q.bits / 8 + scales * SCALE_BYTES


GROUPED = ("int8", "int4")  # the formats whose scales a `weight_group` sets


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
    # ---- added later (None / False: the model as before; a spec file without them reads as it did)
    n_kv_heads: int | None = Field(None, gt=0, strict=True, le=MAX_HEADS,
                                   description="key/value heads: grouped-query attention (1: multi-query); "
                                   "default n_heads")
    head_dim: int | None = Field(None, gt=0, strict=True, le=MAX_WIDTH,
                                 description="width of one attention head; default d_model / n_heads")
    tied_embeddings: bool = Field(False, strict=True, description="the LM head is the input embedding (one table)")
    n_layers: int | None = Field(None, gt=0, strict=True, le=MAX_LAYERS,
                                 description="the published model's decoder depth (what `--sharing` NxR "
                                 "with N x R = n_layers reproduces; a run's UxR sets the depth simulated)")
    weight_dtype: WeightDtype | None = Field(None, description="how the decoder layers' weights are stored: "
                                             "bf16, fp16, fp8, int8, int4 (weight-only quantisation); "
                                             "default the run's dtype")
    kv_dtype: KvDtype | None = Field(None, description="how the KV cache is stored: bf16, fp16, fp8, int8; "
                                     "default the run's dtype")
    weight_group: int | None = Field(None, gt=0, le=MAX_FFN, strict=True,
                                     description="int8/int4 weights: input elements per fp16 scale (default: int4 "
                                     "128, int8 one scale per output channel)")
    tp: int = Field(1, ge=1, le=MAX_HEADS, strict=True,
                    description="tensor-parallel degree this spec is one device's shard of (`shard`, --tp: heads, "
                    "d_ff and vocab already divided by it); 1 in a spec file")
    pp: int = Field(1, ge=1, le=MAX_LAYERS, strict=True,
                    description="pipeline stages the layers are spread over (--pp; `stages`); 1 in a spec file")
    pp_repeats: bool = Field(False, strict=True,
                             description="SPEED's pipeline over repeats (--pp-over repeats): each of pp devices holds "
                             "all U shared layers and runs the in-flight token of its own repeat")

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
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads} (give head_dim "
                             "for a model whose heads are not d_model / n_heads wide)")
        return self

    @field_validator("n_kv_heads")
    @classmethod
    def _kv_heads_divide(cls, value: int | None, info: ValidationInfo) -> int | None:
        heads = info.data.get("n_heads")
        if value is not None and heads is not None and (value > heads or heads % value):
            raise ValueError(f"{value} does not divide n_heads {heads} (each key/value head serves n_heads / "
                             "n_kv_heads query heads: 1 is multi-query attention)")
        return value

    @property
    def d_head(self) -> int:
        """Width of one attention head."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (n_heads unless grouped-query or multi-query)."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def group(self) -> int:
        """Query heads per key/value head (1: multi-head attention)."""
        return self.n_heads // self.kv_heads

    @property
    def q_width(self) -> int:
        """Width of the queries and of the attention output: n_heads x d_head (d_model unless head_dim says)."""
        return self.n_heads * self.d_head

    @property
    def kv_width(self) -> int:
        """Width of one position's K (or V) in one layer: n_kv_heads x d_head."""
        return self.kv_heads * self.d_head

    def weight_format(self, dtype: str) -> str:
        """How the decoder layers' weights are stored in a run whose dtype is `dtype`."""
        return self.weight_dtype or dtype

    def kv_format(self, dtype: str) -> str:
        """How the KV cache is stored in a run whose dtype is `dtype`."""
        return self.kv_dtype or dtype

    @property
    def gated(self) -> bool:
        return self.ffn == "swiglu"

    def file_dict(self) -> dict:
        """The spec as a spec file holds it: the fields added later left out at their defaults (a file of an
        older spec reads the same), the deployment (`tp`, `pp`, `pp_repeats`: a run's flags) never."""
        dump = self.model_dump()
        return {k: v for k, v in dump.items()
                if k not in DEPLOYMENT_FIELDS and (k not in LATER_SPEC_FIELDS or v != ModelSpec.model_fields[k].default)}

    def layer_matrices(self, cross: bool | None = None) -> tuple[tuple[int, int], ...]:
        """(d_in, d_out) of one layer's weight matrices: fused QKV, output, cross-attention's query, output
        and fused K/V of the memory (`cross`: default, the model has it), FFN in and out."""
        d, q, kv = self.d_model, self.q_width, self.kv_width
        mats = [(d, q + 2 * kv), (q, d)]
        if self.cross_attention_len if cross is None else cross:
            mats += [(d, q), (q, d), (d, 2 * kv)]
        return (*mats, (d, (2 if self.gated else 1) * self.d_ff), (self.d_ff, d))

    def layer_weight_elements(self, cross: bool | None = None) -> int:
        """Weight elements of one decoder layer (norm scales included); `cross=False`: an encoder layer."""
        has_cross = bool(self.cross_attention_len) if cross is None else cross
        norms = (3 if has_cross else 2) * self.d_model
        return sum(i * o for i, o in self.layer_matrices(has_cross)) + norms

    def layer_weight_bytes(self, dtype: str, cross: bool | None = None) -> float:
        """Bytes of one decoder layer's weights in a run of `dtype` (matrices in `weight_format`, their scales
        included; norm scales in `dtype`); `cross=False`: an encoder layer."""
        fmt = self.weight_format(dtype)
        has_cross = bool(self.cross_attention_len) if cross is None else cross
        norms = (3 if has_cross else 2) * self.d_model * BYTES_PER_ELEMENT[dtype]
        return float(sum(weight_bytes(fmt, dtype, i, o, self.weight_group) for i, o in self.layer_matrices(has_cross))
                     + norms)

    def head_weight_elements(self) -> int:
        return self.vocab * self.d_model


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "t5base": ModelSpec(name="t5base", d_model=768, n_heads=12, d_ff=3072, ffn="relu",
                        cross_attention_len=512, vocab=32128, encoder_layers=12),
    "dec1b": ModelSpec(name="dec1b", d_model=2048, n_heads=32, d_ff=8192, ffn="swiglu", vocab=128256),
    "dec7b": ModelSpec(name="dec7b", d_model=4096, n_heads=32, d_ff=11008, ffn="swiglu", vocab=32000),
}

# Published models, every dimension from its release (`MODEL_SOURCES`; the configs' lines are quoted in
# `experiments/models/published_models.md`). T5's position bias, Mistral's 4096-token sliding window and
# the rotary embeddings cost nothing this model charges (no kernel of their own at decode).
PUBLISHED_MODELS: dict[str, ModelSpec] = {
    "llama2-7b": ModelSpec(name="llama2-7b", ffn="swiglu", d_model=4096, n_heads=32, d_ff=11008, vocab=32000,
                           n_layers=32),
    "llama2-13b": ModelSpec(name="llama2-13b", ffn="swiglu", d_model=5120, n_heads=40, d_ff=13824, vocab=32000,
                            n_layers=40),
    "llama2-70b": ModelSpec(name="llama2-70b", ffn="swiglu", d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672,
                            vocab=32000, n_layers=80),
    "llama3-8b": ModelSpec(name="llama3-8b", ffn="swiglu", d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
                           vocab=128256, n_layers=32),
    "llama3-70b": ModelSpec(name="llama3-70b", ffn="swiglu", d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672,
                            vocab=128256, n_layers=80),
    "mistral-7b": ModelSpec(name="mistral-7b", ffn="swiglu", d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
                            vocab=32000, n_layers=32),
    "t5-base": ModelSpec(name="t5-base", d_model=768, n_heads=12, d_ff=3072, ffn="relu", cross_attention_len=512,
                         vocab=32128, encoder_layers=12, n_layers=12, tied_embeddings=True),
    "t5-large": ModelSpec(name="t5-large", d_model=1024, n_heads=16, d_ff=4096, ffn="relu", cross_attention_len=512,
                          vocab=32128, encoder_layers=24, n_layers=24, tied_embeddings=True),
    "t5-3b": ModelSpec(name="t5-3b", d_model=1024, n_heads=32, head_dim=128, d_ff=16384, ffn="relu",
                       cross_attention_len=512, vocab=32128, encoder_layers=24, n_layers=24, tied_embeddings=True),
    "t5-11b": ModelSpec(name="t5-11b", d_model=1024, n_heads=128, head_dim=128, d_ff=65536, ffn="relu",
                        cross_attention_len=512, vocab=32128, encoder_layers=24, n_layers=24, tied_embeddings=True),
}
BUILTIN_MODELS.update(PUBLISHED_MODELS)

# where each published model's dimensions come from (the model's own release; details and quotes in
# experiments/models/published_models.md)
MODEL_SOURCES: dict[str, str] = {
    "llama2-7b": "Touvron et al. 2023 (arXiv 2307.09288) Table 1; meta-llama/llama params.json and Hugging Face "
                 "config.json (hidden 4096, 32 heads, intermediate 11008, 32 layers, vocab 32000)",
    "llama2-13b": "Touvron et al. 2023 Table 1; meta-llama/llama params.json and Hugging Face config.json "
                  "(hidden 5120, 40 heads, intermediate 13824, 40 layers, vocab 32000)",
    "llama2-70b": "Touvron et al. 2023 Table 1 (GQA); meta-llama/llama params.json (n_kv_heads 8) and Hugging Face "
                  "config.json (hidden 8192, 64 heads, 8 key/value heads, intermediate 28672, 80 layers)",
    "llama3-8b": "meta-llama/llama3 and llama-models (Llama-3 8B: dim 4096, 32 heads, 8 KV heads, "
                 "ffn 14336, 32 layers, vocab 128256), Meta-Llama-3-8B config.json",
    "llama3-70b": "meta-llama/llama-models (Llama-3 70B: dim 8192, 64 heads, 8 KV heads, ffn 28672, 80 layers, "
                  "vocab 128256), Meta-Llama-3-70B config.json",
    "mistral-7b": "Jiang et al. 2023 (arXiv 2310.06825) Table 1; mistralai/mistral-src and Mistral-7B-v0.1 "
                  "params.json/config.json (dim 4096, 32 heads, 8 KV heads, hidden 14336, 32 layers, vocab 32000)",
    "t5-base": "Raffel et al. 2020 (arXiv 1910.10683) section 3.7; google-t5/t5-base config.json (d_model 768, "
               "d_kv 64, 12 heads, d_ff 3072, 12+12 layers, vocab 32128, ReLU, tied embeddings)",
    "t5-large": "Raffel et al. 2020 section 3.7; google-t5/t5-large config.json (d_model 1024, d_kv 64, 16 heads, "
                "d_ff 4096, 24+24 layers)",
    "t5-3b": "Raffel et al. 2020 section 3.7; google-t5/t5-3b config.json and the T5 gin configs (d_model 1024, "
             "d_kv 128, 32 heads, d_ff 16384, 24+24 layers)",
    "t5-11b": "Raffel et al. 2020 section 3.7; google/t5-11b config and the T5 gin configs (d_model 1024, "
              "d_kv 128, 128 heads, d_ff 65536, 24+24 layers)",
}


@lru_cache(maxsize=256)
def with_precision(spec: ModelSpec, weight_dtype: str | None = None, kv_dtype: str | None = None,
                   weight_group: int | None = None) -> ModelSpec:
    """`spec` with its weights and KV cache stored as a run chooses (`--weight-dtype`, `--kv-dtype`,
    `--weight-group`; None keeps the spec's own). A group for weights not stored as int8 or int4 is a `UserError`
    (it would be ignored). Cached: the runs of one choice share one spec object, as the kernel caches expect."""
    update = {k: v for k, v in (("weight_dtype", weight_dtype), ("kv_dtype", kv_dtype), ("weight_group", weight_group))
              if v is not None}
    out = spec.model_copy(update=update) if update else spec
    if out.weight_group is not None and out.weight_dtype not in GROUPED:
        raise UserError(f"a group of {out.weight_group} applies to int8 or int4 weights, and {spec.name}'s are "
                        f"{out.weight_dtype or 'in the run dtype'}", where="--weight-group")
    return out


# the fields added after spec files were first written, and those of a deployment rather than the model
LATER_SPEC_FIELDS = frozenset({"n_kv_heads", "head_dim", "tied_embeddings", "n_layers", "weight_dtype", "kv_dtype",
                               "weight_group"})
DEPLOYMENT_FIELDS = frozenset({"tp", "pp", "pp_repeats"})


def load_model_spec_file(path: str | os.PathLike[str], where: str | None = None) -> ModelSpec:
    """Read a user model spec YAML; raise `UserError` naming the file and field, or `where` (the flag it
    came from; None: the file) for a path that is malformed, unusable or absent."""
    path = input_file(path, where)
    data = read_mapping(path, "model spec")
    for key, flag in zip(("tp", "pp", "pp_repeats"), ("--tp", "--pp", "--pp-over"), strict=True):
        if key in data:  # how a run spreads the model over devices, not what the model is
            raise UserError(f"field '{key}': a deployment, not a dimension of the model: give {flag} to the run",
                            where=str(path))
    return validate_as(ModelSpec, data, str(path))


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


@lru_cache(maxsize=256)
def shard(spec: ModelSpec, tp: int) -> ModelSpec:
    """One device's shard of `spec` under Megatron-style tensor parallelism over `tp` devices: the query heads,
    the key/value heads (replicated when fewer than `tp`: each device keeps one), the FFN's hidden width and
    the LM head's vocabulary split `tp` ways (the FFN and vocabulary rounded up, as padded); d_model, the
    norms and the input embedding (a row gather) whole on every device. The layer programs of a shard
    (`tp` > 1) add the collectives: an all-reduce after the attention output and after the FFN (and after
    cross-attention's output), an all-gather of the logits after the LM head. A `UserError` at `--tp` when
    `tp` does not divide the heads."""
    if tp == 1:
        return spec
    if spec.tp != 1:
        raise UserError(f"model '{spec.name}' is already a shard (tp {spec.tp})", where="--tp")
    if spec.n_heads % tp:
        raise UserError(f"{tp} does not divide {spec.name}'s {spec.n_heads} attention heads", where="--tp")
    kv = spec.kv_heads
    if kv % tp and tp % kv:
        raise UserError(f"{tp} neither divides {spec.name}'s {kv} key/value heads nor is a multiple of them",
                        where="--tp")
    update: dict = {"n_heads": spec.n_heads // tp, "head_dim": spec.d_head, "d_ff": -(-spec.d_ff // tp),
                    "vocab": -(-spec.vocab // tp), "tp": tp}
    if kv != spec.n_heads or kv < tp:
        update["n_kv_heads"] = max(1, kv // tp)
    return spec.model_copy(update=update)


def check_devices(profile: HardwareProfile, tp: int, pp: int = 1) -> None:
    """A `UserError` at `--tp` (or `--pp`) when `tp` x `pp` devices are more than one node of `profile` joins
    (`interconnect.devices_per_node`), or the profile has no interconnect at all."""
    n = tp * pp
    if n == 1:
        return
    flag = "--tp" if tp > 1 else "--pp"
    link = profile.interconnect
    if link is None:
        raise UserError(f"{profile.name} has no interconnect section: one device only (tp {tp} x pp {pp} "
                        f"needs {n})", where=flag)
    if n > link.devices_per_node:
        raise UserError(f"tp {tp} x pp {pp} = {n} devices, but {profile.name}'s {link.name} joins "
                        f"{link.devices_per_node} per node", where=flag)


@lru_cache(maxsize=256)
def staged(spec: ModelSpec, pp: int, over_repeats: bool = False) -> ModelSpec:
    """`spec` deployed over `pp` pipeline stages (`pp` devices): layer stages (each device a contiguous
    pp-th of the layers a pass runs, activations sent on at each boundary), or SPEED's pipeline over repeats
    (`over_repeats`: each device all U shared layers, the in-flight token of its own repeat;
    `speedsim.workload.steps`)."""
    if pp == 1 and not over_repeats:
        return spec
    return spec.model_copy(update={"pp": pp, "pp_repeats": over_repeats})


def stage_ends(layers: int, pp: int) -> frozenset[int]:
    """The layers after which a pass over `layers` layers crosses to the next of `pp` stages (contiguous,
    sizes differing by at most one)."""
    return frozenset(round(k * layers / pp) - 1 for k in range(1, pp))
