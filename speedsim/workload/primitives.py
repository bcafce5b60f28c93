"""The building blocks of a step: one GEMV/GEMM, norm, elementwise kernel, KV-cache write,
attention call, embedding gather or host-only pass, as `Kernel` records.

Kernel-selection rules of the library stack (split-KV attention for a single unmasked query;
mask preparation for n > 1; split-K GEMV with a reduction kernel) are taken from the measured
per-kernel breakdown (`experiments/measured/h200/kernels.csv`) and named where they apply.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

from speedsim.hardware import BYTES_PER_ELEMENT
from speedsim.workload.kernels import (
    ACT,
    ACTIVATIONS,
    ATTN,
    COLLECTIVE,
    COPY,
    EMBEDDINGS,
    GEMM,
    KV,
    MASK,
    MULTI_QUERY,
    NORM,
    REDUCE,
    STREAM,
    WEIGHTS,
    Access,
    ItemAccesses,
    Kernel,
)
from speedsim.workload.models import ModelSpec, quantized, weight_bytes
from speedsim.workload.rules import KernelRules


def _elt(dtype: str) -> int:
    return BYTES_PER_ELEMENT[dtype]

def linear(name: str, weight_id: str, rows: int, d_in: int, d_out: int, dtype: str, rules: KernelRules,
           tclass: str = WEIGHTS, wfmt: str | None = None, wgroup: int | None = None) -> list[Kernel]:
    """y(rows x d_out) = x(rows x d_in) @ W^T: one GEMV/GEMM, plus a split-K reduction when chosen.

    `wfmt`: how W is stored (default `dtype`); another format is read as stored and dequantised on the
    way (`speedsim.workload.models.WeightFormat`: its bytes with their scales, `wgroup` input elements each if
    given, and its vector work)."""
    b = _elt(dtype)
    out_tiles = math.ceil(d_out / rules.tile_rows) * math.ceil(rows / rules.tile_tokens)
    split = d_in >= rules.splitk_min_in and out_tiles < rules.units
    k_blocks = math.ceil(d_in / rules.tile_k) if split else 1
    passes = rows if rows < rules.row_reuse_min else 1  # weight reads: once, or once per row
    fmt = wfmt or dtype
    q = quantized(fmt, dtype)
    w_read: float
    w_size: float
    if q is None:
        w_read, w_size = passes * d_in * d_out * b, d_in * d_out * b
    else:
        w_size = weight_bytes(fmt, dtype, d_in, d_out, wgroup)
        w_read = passes * w_size
    main = Kernel(
        name=name, flops=2.0 * rows * d_in * d_out, matrix=True, dtype=dtype, kclass=GEMM,
        parallel_work=out_tiles * k_blocks,
        accesses=(Access(weight_id, tclass, w_read, footprint_bytes=w_size),
                  Access(ACT, ACTIVATIONS, rows * d_in * b, rows * d_out * (4 if split else b))),
        dequant_ops=0.0 if q is None else passes * d_in * d_out * q.dequant_ops,
    )
    if not split:
        return [main]
    reduce = Kernel(name=name + ".splitk_reduce", flops=float(rows * d_out * k_blocks), dtype=dtype, kclass=REDUCE,
                    indexed=True,
                    parallel_work=max(1, math.ceil(rows * d_out / rules.reduce_block)), host_ops=0,
                    accesses=(Access(ACT, ACTIVATIONS, rows * d_out * 4 * k_blocks, rows * d_out * b),))
    return [main, reduce]


def elementwise(name: str, elements: int, inputs: int, dtype: str, rules: KernelRules,
                flops_per_element: float = 1.0) -> Kernel:
    """A vector kernel over `elements` outputs reading `inputs` operands of the same size."""
    b = _elt(dtype)
    return Kernel(name=name, flops=flops_per_element * elements, dtype=dtype,
                  parallel_work=max(1, math.ceil(elements / rules.block_elements)),
                  accesses=(Access(ACT, ACTIVATIONS, inputs * elements * b, elements * b),))


def rmsnorm(name: str, rows: int, d: int, dtype: str, host_ops: int = 1) -> Kernel:
    """RMSNorm of `rows` rows: one block per row walks its `d` elements serially (`row_elements`);
    `host_ops`: framework ops of the call (the profile's `host_ops.norm`)."""
    b = _elt(dtype)
    return Kernel(name=name, flops=4.0 * rows * d, dtype=dtype, parallel_work=rows, kclass=NORM, row_elements=d,
                  host_ops=host_ops,
                  accesses=(Access(ACT, ACTIVATIONS, rows * d * b + d * b, rows * d * b),))


def kv_write(name: str, cache_ids: list[str] | tuple[str, ...], rows_each: int, d: int, dtype: str,
             rules: KernelRules, kv_dtype: str | None = None) -> Kernel:
    """Copy the new K (or V) rows (`d` wide) of every batch item into its cache (stored as `kv_dtype`,
    default `dtype`)."""
    b = _elt(kv_dtype or dtype)
    ids = tuple(cache_ids)
    return _kv_write(name, ItemAccesses(KV, ids, (rows_each * d * b,) * len(ids), write=True), rows_each, d, dtype,
                     rules)


def _kv_write(name: str, items: ItemAccesses, rows_each: int, d: int, dtype: str, rules: KernelRules) -> Kernel:
    b = _elt(dtype)
    n = len(items.tensors)
    return Kernel(name=name, flops=0.0, dtype=dtype, host_ops=rules.host_ops.kv_write, kclass=COPY, indexed=True,
                  parallel_work=max(1, math.ceil(n * rows_each * d / rules.block_elements)),
                  accesses=(Access(ACT, ACTIVATIONS, n * rows_each * d * b),), items=items)


@lru_cache(maxsize=1024)
def kv_writes(layer_id: str, cache_ids: tuple[str, ...], rows_each: int, d: int, dtype: str,
              rules: KernelRules, kv_dtype: str | None = None) -> tuple[Kernel, Kernel]:
    """A layer's K and V cache writes (the same items; cached: a serving batch writes the same
    caches step after step until it changes): `d` wide rows, stored as `kv_dtype` (default `dtype`)."""
    b = _elt(kv_dtype or dtype)
    items = ItemAccesses(KV, cache_ids, (rows_each * d * b,) * len(cache_ids), write=True)
    return (_kv_write(f"{layer_id}.k_write", items, rows_each, d, dtype, rules),
            _kv_write(f"{layer_id}.v_write", items, rows_each, d, dtype, rules))


def attention(name: str, spec: ModelSpec, queries: int, keys: list[int] | tuple[int, ...],
              cache_ids: list[str] | tuple[str, ...], masked: bool, dtype: str, rules: KernelRules,
              tclass: str = KV, host_ops: int | None = None, kv_dtype: str | None = None) -> list[Kernel]:
    """Scaled-dot-product attention of `queries` rows per batch item over that item's `keys`.

    One batch item per entry of `keys`/`cache_ids` (SPEED's pipelined step stacks the in-flight
    tokens, each with the cache of its own repeat, on the batch axis). Kernel selection, from
    kernels.csv:
    - a single unmasked query uses the decode kernel (cudnn ..._16x128x64: queries padded to 16,
      128 keys per tile); it splits the key range into chunks (flash-decoding, then a reduce
      kernel) from `split_min_keys` keys, but only while batch x heads < `split_fill` x units
      (R=4 t5base, 48 heads: split, one lean_reduction; R=4 dec1b/dec7b, 128 heads: not split);
    - several queries (n > 1, with a boolean mask) use the multi-query kernel (sm90 ..._64x128x64:
      one block per head and 64-query tile walks all keys) after the mask is turned into a bias
      (fill, fill, where) and the output cleared (memset).
    Each block walks `key_tiles` tiles of `tile_bytes` K/V bytes and `tile_flops` FLOPs (costed
    by `speedsim.engine.cost`). `host_ops`: framework ops of the call (default: the profile's
    count for a self-attention). `kv_dtype`: how the K/V are stored (default `dtype`).

    Grouped-query attention (`spec.n_kv_heads` < `n_heads`): one block per K/V head walks its keys for
    all the query heads that share it, packed as query rows (`group` x queries), as FlashAttention's
    and FlashInfer's decode kernels do, so each K/V head's cache is read once.
    """
    ids, lens = tuple(cache_ids), tuple(keys)
    if len(ids) != len(lens):
        raise ValueError(f"attention '{name}': {len(lens)} key lengths for {len(ids)} caches")
    if host_ops is None:
        host_ops = rules.host_ops.self_attention
    return list(_attention(name, spec, queries, lens, ids, masked, dtype, rules, tclass, host_ops, kv_dtype or dtype))


@lru_cache(maxsize=256)
def _attention(name: str, spec: ModelSpec, queries: int, keys: tuple[int, ...], cache_ids: tuple[str, ...],
               masked: bool, dtype: str, rules: KernelRules, tclass: str, host_ops: int,
               kv_dtype: str) -> tuple[Kernel, ...]:
    # cached: a serving batch's cross-attention is the same step after step until the batch changes
    b = _elt(dtype)
    h = spec.n_heads
    single = queries == 1 and not masked
    split, flops, work, nbytes, key_tiles, tile_bytes, tile_flops = _attention_shape(spec, queries, keys, masked,
                                                                                     kv_dtype, rules)
    out = len(keys) * queries * spec.q_width * b  # its queries in, its outputs out
    main = Kernel(name=name, flops=flops, matrix=True, dtype=dtype, parallel_work=work, host_ops=host_ops, kclass=ATTN,
                  kind=STREAM if queries == 1 else MULTI_QUERY, key_tiles=key_tiles, tile_bytes=tile_bytes,
                  tile_flops=tile_flops, accesses=_act_access(out),
                  items=ItemAccesses(tclass, cache_ids, nbytes))
    if split:
        g = spec.group
        if work <= spec.kv_heads * math.ceil(g / rules.decode_query_tile) * len(keys):
            return (main,)  # no item's keys were long enough to split
        partial = work * g * spec.d_head * 4.0 * queries
        return (main, Kernel(name=name + ".reduce", flops=float(work * g * spec.d_head), dtype=dtype, host_ops=0,
                             kclass=REDUCE, indexed=True, parallel_work=max(1, h * len(keys)),
                             accesses=(Access(ACT, ACTIVATIONS, partial, out),)))
    if single:
        return (main,)  # the single-query kernel needs no preparation
    prep: list[Kernel] = []
    if masked:
        mask_elems = queries * max(keys)
        prep += [elementwise(name + ".mask_fill", mask_elems, 0, dtype, rules),
                 elementwise(name + ".mask_fill", mask_elems, 0, dtype, rules),
                 dataclasses.replace(elementwise(name + ".mask_where", mask_elems, 2, dtype, rules), indexed=True)]
    prep.append(elementwise(name + ".memset", len(keys) * queries * h, 0, "fp32", rules))
    # issued from inside the one attention op: no host ops of their own
    return (*(dataclasses.replace(k, host_ops=0, kclass=MASK) for k in prep), main)


@lru_cache(maxsize=64)
def _act_access(nbytes: int) -> tuple[Access, ...]:
    """An attention call's activations: it reads its queries and writes its outputs."""
    return (Access(ACT, ACTIVATIONS, nbytes, nbytes),)


@lru_cache(maxsize=64)
def _attention_shape(spec: ModelSpec, queries: int, keys: tuple[int, ...], masked: bool, kv_dtype: str,
                     rules: KernelRules) -> tuple[bool, float, int, tuple[float, ...], int, float, float]:
    """What an attention call's kernels need from its key lengths alone (shared by every layer of
    a step): split-KV or not, FLOPs, blocks, each item's K/V bytes, and one block's key tiles."""
    b = _elt(kv_dtype)  # K/V as stored
    kvh, dh, q_width, kv_width = spec.kv_heads, spec.d_head, spec.q_width, spec.kv_width
    rows = queries * spec.group  # query rows of one block: the query heads of its K/V head packed (GQA)
    single = queries == 1 and not masked
    q_tiles = math.ceil(rows / rules.decode_query_tile) if single else math.ceil(rows / rules.query_tile)
    longest = max(keys)
    split = single and longest >= rules.split_min_keys and len(keys) * kvh * q_tiles < rules.split_fill * rules.units
    flops = 0.0
    for kv_len in keys:
        flops += 4.0 * queries * kv_len * q_width
    if split:
        split_keys = rules.split_keys
        work = kvh * q_tiles * sum(math.ceil(kv_len / split_keys) for kv_len in keys)
    else:
        work = kvh * q_tiles * len(keys)
    nbytes = tuple([2.0 * kv_len * kv_width * b for kv_len in keys])  # K and V rows
    block_keys = rules.split_keys if split else longest
    q_pad = rules.decode_query_tile if single else rules.query_tile
    if not rules.pad_queries:
        q_pad = min(q_pad, rows)
    tile_keys = min(rules.key_tile, block_keys)
    key_tiles = math.ceil(block_keys / tile_keys)
    return split, flops, work, nbytes, key_tiles, 2.0 * tile_keys * dh * b, 4.0 * q_pad * tile_keys * dh


@lru_cache(maxsize=1024)
def collective(name: str, op: str, nbytes: float, peers: int, dtype: str) -> Kernel:
    """A collective among `peers` devices (all_reduce, all_gather, send) of `nbytes`: its time is the
    interconnect's (`speedsim.hardware.parts.InterconnectSpec`), the devices wait on it; one framework op."""
    return Kernel(name=name, flops=0.0, accesses=(), parallel_work=1, kind=op, dtype=dtype, kclass=COLLECTIVE,
                  peers=peers, message_bytes=float(nbytes))


@lru_cache(maxsize=256)
def bookkeeping(name: str, rules: KernelRules) -> Kernel:
    """Host-only framework work of one decoder pass (positions, KV slots, length mask of its
    tokens): costs host time in eager mode, no device time."""
    return Kernel(name=name, flops=0.0, accesses=(), parallel_work=1, host_ops=rules.host_ops.pass_bookkeeping,
                  launches=False)


@lru_cache(maxsize=1024)
def embed(spec: ModelSpec, rows: int, dtype: str, rules: KernelRules) -> Kernel:
    """Gather the embeddings of `rows` newly launched tokens."""
    b = _elt(dtype)
    return Kernel(name="embed", flops=0.0, dtype=dtype, parallel_work=max(1, rows), host_ops=rules.host_ops.embed,
                  kclass=COPY,
                  accesses=(Access("embedding_rows", EMBEDDINGS, rows * spec.d_model * b),
                            Access(ACT, ACTIVATIONS, 0.0, rows * spec.d_model * b)))
