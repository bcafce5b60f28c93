"""How a run stores a model's weights and KV cache (no imports: the command line's choices come from here
before anything else is loaded)."""

from __future__ import annotations

from typing import Literal, get_args

WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]  # int8/int4/fp8: weight-only quantisation
KvDtype = Literal["bf16", "fp16", "fp8", "int8"]
WEIGHT_DTYPES: tuple[str, ...] = get_args(WeightDtype)
KV_DTYPES: tuple[str, ...] = get_args(KvDtype)
