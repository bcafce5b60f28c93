"""Decoder layers and the LM head as programs of kernels.

The kernel list of one decoder layer follows what PyTorch runs for the measured layer
(`experiments/measured/h200/measure.py`, per-kernel breakdown in `kernels.csv`): pre-norm
RMSNorm, fused QKV, two copies into the KV cache, scaled-dot-product attention, output
projection, residual add, optional cross-attention block, FFN.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from speedsim.hardware import BYTES_PER_ELEMENT
from speedsim.workload.kernels import ALL_GATHER, ALL_REDUCE, EMBEDDINGS, Kernel, Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.primitives import attention, collective, elementwise, kv_writes, linear, rmsnorm
from speedsim.workload.rules import KernelRules


def decoder_layer(spec: ModelSpec, layer_id: str, kv_lens: list[int], cache_ids: list[str] | tuple[str, ...],
                  queries: int, dtype: str, rules: KernelRules,
                  cross_ids: list[str] | tuple[str, ...] | None = None,
                  cross_lens: list[int] | tuple[int, ...] | None = None) -> Program:
    """One pre-norm decoder layer over `len(kv_lens)` batch items of `queries` tokens each.

    `kv_lens[i]`: keys already cached for item i (its new rows are appended before attention).
    `cache_ids[i]`: identity of item i's self-attention KV cache for this layer (and repeat).
    `cross_ids[i]`: identity of item i's encoder K/V (cross-attention models); `cross_lens[i]`
    its encoder positions (default: every item has `spec.cross_attention_len`; a serving batch
    mixes requests with sources of different lengths).

    The kernels that depend only on the batch's shape are built once per shape; those that touch
    each item's own tensors (cache writes, attention) carry them as `ItemAccesses`.
    """
    ids = tuple(cache_ids)
    batch = len(ids)
    pre, mid, post = _layer_shape(spec, layer_id, batch * queries, dtype, rules)
    k_write, v_write = kv_writes(layer_id, ids, queries, spec.kv_width, dtype, rules, spec.kv_format(dtype))
    kvf = spec.kv_format(dtype)
    attn = attention(f"{layer_id}.attn", spec, queries, [n + queries for n in kv_lens], ids, queries > 1, dtype,
                     rules, kv_dtype=kvf)
    kernels = [*pre, k_write, v_write, *attn, *mid]
    if spec.cross_attention_len:
        cross = tuple(cross_ids or [f"cross.{layer_id}"] * batch)
        lens = tuple(cross_lens or ()) or (spec.cross_attention_len,) * batch
        kernels += attention(f"{layer_id}.xattn", spec, queries, lens, cross, False, dtype, rules,
                             host_ops=rules.host_ops.cross_attention, kv_dtype=kvf)
        kernels += post
    return Program(kernels)


Window = tuple[int, list[int], list[str], list[str], list[int]]  # queries, kv lens, caches, encoder K/V, lengths


def decoder_layer_windows(spec: ModelSpec, layer_id: str, windows: list[Window], dtype: str,
                          rules: KernelRules) -> Program:
    """One decoder layer over batch items in groups of one window length each (`queries` tokens per item,
    their KV lengths, cache ids, encoder K/V ids and lengths): the layer's linear kernels run once over
    every row of every group (one weight read), the cache writes and attention once per group. One group
    is `decoder_layer`."""
    if len(windows) == 1:
        q, kv, ids, cross, lens = windows[0]
        return decoder_layer(spec, layer_id, kv, ids, q, dtype, rules, cross_ids=cross, cross_lens=lens)
    rows = sum(q * len(ids) for q, _, ids, _, _ in windows)
    pre, mid, post = _layer_shape(spec, layer_id, rows, dtype, rules)
    kernels = [*pre]
    for q, kv, ids, _, _ in windows:
        kernels += kv_writes(layer_id, tuple(ids), q, spec.kv_width, dtype, rules, spec.kv_format(dtype))
        kernels += attention(f"{layer_id}.attn", spec, q, [n + q for n in kv], tuple(ids), q > 1, dtype, rules,
                             kv_dtype=spec.kv_format(dtype))
    kernels += mid
    if spec.cross_attention_len:
        for q, _, _, cross, lens in windows:
            kernels += attention(f"{layer_id}.xattn", spec, q, tuple(lens), tuple(cross), False, dtype, rules,
                                 host_ops=rules.host_ops.cross_attention, kv_dtype=spec.kv_format(dtype))
        kernels += post
    return Program(kernels)


@lru_cache(maxsize=4096)
def _layer_shape(spec: ModelSpec, layer_id: str, rows: int, dtype: str,
                 rules: KernelRules) -> tuple[tuple[Kernel, ...], tuple[Kernel, ...], tuple[Kernel, ...]]:
    """The kernels of a layer over `rows` tokens that do not depend on which caches they use or
    their lengths: before the KV writes, after self-attention, after cross-attention (empty
    without it)."""
    d, dff, q, kv = spec.d_model, spec.d_ff, spec.q_width, spec.kv_width
    w = spec.weight_format(dtype)
    pre = (rmsnorm(f"{layer_id}.norm1", rows, d, dtype, rules.host_ops.norm),
           *linear(f"{layer_id}.qkv", f"{layer_id}.qkv", rows, d, q + 2 * kv, dtype, rules, wfmt=w, wgroup=spec.weight_group))
    mid = [*linear(f"{layer_id}.o", f"{layer_id}.o", rows, q, d, dtype, rules, wfmt=w, wgroup=spec.weight_group),
           *tp_reduce(spec, f"{layer_id}.o", rows, dtype),
           elementwise(f"{layer_id}.add1", rows * d, 2, dtype, rules)]
    post: list[Kernel] = []
    if spec.cross_attention_len:
        mid += [rmsnorm(f"{layer_id}.norm_x", rows, d, dtype, rules.host_ops.norm),
                *linear(f"{layer_id}.xq", f"{layer_id}.xq", rows, d, q, dtype, rules, wfmt=w, wgroup=spec.weight_group)]
        post += [*linear(f"{layer_id}.xo", f"{layer_id}.xo", rows, q, d, dtype, rules, wfmt=w, wgroup=spec.weight_group),
                 *tp_reduce(spec, f"{layer_id}.xo", rows, dtype),
                 elementwise(f"{layer_id}.add_x", rows * d, 2, dtype, rules)]
    tail = post if spec.cross_attention_len else mid
    tail.append(rmsnorm(f"{layer_id}.norm2", rows, d, dtype, rules.host_ops.norm))
    tail += linear(f"{layer_id}.w1", f"{layer_id}.w1", rows, d, (2 if spec.gated else 1) * dff, dtype, rules, wfmt=w, wgroup=spec.weight_group)
    if spec.gated:
        # gate and up are slices of the fused w1 output: contiguous for one row, strided for several
        tail += [dataclasses.replace(elementwise(f"{layer_id}.silu", rows * dff, 1, dtype, rules, 4.0), indexed=rows > 1),
                 dataclasses.replace(elementwise(f"{layer_id}.mul", rows * dff, 2, dtype, rules), indexed=rows > 1)]
    else:
        tail.append(elementwise(f"{layer_id}.{spec.ffn}", rows * dff, 1, dtype, rules))
    tail += linear(f"{layer_id}.w2", f"{layer_id}.w2", rows, dff, d, dtype, rules, wfmt=w, wgroup=spec.weight_group)
    tail += tp_reduce(spec, f"{layer_id}.w2", rows, dtype)
    tail.append(elementwise(f"{layer_id}.add2", rows * d, 2, dtype, rules))
    return pre, tuple(mid), tuple(post)


def tp_reduce(spec: ModelSpec, name: str, rows: int, dtype: str) -> tuple[Kernel, ...]:
    """The all-reduce of a row-parallel projection's partial sums (a tensor-parallel shard, `spec.tp` > 1)."""
    if spec.tp == 1:
        return ()
    return (collective(f"{name}.all_reduce", ALL_REDUCE, rows * spec.d_model * BYTES_PER_ELEMENT[dtype], spec.tp,
                       dtype),)


def lm_head(spec: ModelSpec, rows: int, dtype: str, rules: KernelRules, final_norm: bool = True,
            prefix: str = "") -> Program:
    """Final norm (optional) and the vocabulary projection for `rows` exits. `prefix`: of the weights'
    tensor ids (a draft model's own head is `draft.lm_head`)."""
    return Program(list(_lm_head(spec, rows, dtype, rules, final_norm, prefix)))


@lru_cache(maxsize=1024)
def _lm_head(spec: ModelSpec, rows: int, dtype: str, rules: KernelRules, final_norm: bool,
             prefix: str = "") -> tuple[Kernel, ...]:
    norm = (rmsnorm(f"{prefix}head.norm", rows, spec.d_model, dtype, rules.host_ops.norm),) if final_norm else ()
    head = linear(f"{prefix}lm_head", f"{prefix}lm_head", rows, spec.d_model, spec.vocab, dtype, rules,
                  tclass=EMBEDDINGS)
    if spec.tp > 1:  # each device's slice of the vocabulary: the logits gathered on every device
        head.append(collective(f"{prefix}lm_head.all_gather", ALL_GATHER,
                               rows * spec.vocab * spec.tp * BYTES_PER_ELEMENT[dtype], spec.tp, dtype))
    return (*norm, *head)
