"""Kernels of a decode step: FLOPs, bytes per tensor, exposed parallel work.

A kernel is a plain record (`Kernel`): what it computes (FLOPs on the matrix or vector path),
which tensors it touches and how many bytes it reads and writes of each (`Access`, tagged with
a tensor class: weights, kv, activations, embeddings), and how many independent blocks of
work it exposes to the device (`parallel_work`). The engine decides where each byte comes
from (on-chip or DRAM) by tracking which tensors are resident.

The kernel list of one decoder layer follows what PyTorch runs for the measured layer
(`experiments/measured/h200/measure.py`, per-kernel breakdown in `kernels.csv`): pre-norm
RMSNorm, fused QKV, two copies into the KV cache, scaled-dot-product attention, output
projection, residual add, optional cross-attention block, FFN. Kernel-selection rules of the
library stack (split-KV attention for a single unmasked query; mask preparation for n > 1;
split-K GEMV with a reduction kernel) are taken from that breakdown and named below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

from speedsim.hardware import BYTES_PER_ELEMENT, HardwareProfile
from speedsim.hardware.software import HostOps
from speedsim.workload.models import ModelSpec

WEIGHTS, KV, ACTIVATIONS, EMBEDDINGS = "weights", "kv", "activations", "embeddings"
TENSOR_CLASSES = (WEIGHTS, KV, ACTIVATIONS, EMBEDDINGS)

# Kernel kinds: how the engine bounds a kernel's memory rate per unit of parallel work.
STREAM = "stream"          # GEMV/GEMM, copies, elementwise: pipelined loads
ATTENTION = "attention"    # one block walks its whole key range (softmax recurrence)

ACT = "act"  # all activation buffers share one identity: small and always recently written

# Kernel classes: what a kernel does, for per-class validation against measured kernel profiles
# (`speedsim.validation.kernels` maps measured kernel names onto the same classes).
NORM, GEMM, ATTN, REDUCE, ELEMENTWISE, COPY, MASK = (
    "norm", "gemm", "attention", "reduce", "elementwise", "copy", "mask")
KERNEL_CLASSES = (NORM, GEMM, ATTN, REDUCE, ELEMENTWISE, COPY, MASK)


@dataclass(frozen=True, slots=True)
class Access:
    """Bytes one kernel reads and writes of one tensor."""

    tensor: str          # identity used for on-chip residency ("L0.qkv", "kv.L1.r2", "lm_head")
    tclass: str          # one of TENSOR_CLASSES
    read_bytes: float
    write_bytes: float = 0.0
    footprint_bytes: float = 0.0  # bytes of the tensor that stay live (for residency); 0 = read+write

    @property
    def footprint(self) -> float:
        return self.footprint_bytes or (self.read_bytes + self.write_bytes)


@dataclass(frozen=True, slots=True)
class ItemAccesses:
    """Each batch item's own tensor in one kernel (its KV cache, its encoder K/V): item i reads,
    or writes, all `nbytes[i]` bytes of tensor `tensors[i]`, which is also that tensor's footprint.

    The same traffic as one `Access` per item (`expand()`), served in item order after the
    kernel's `accesses`; kept as two tuples because a batched step has hundreds of items and
    builds them every step.
    """

    tclass: str                  # one of TENSOR_CLASSES
    tensors: tuple[str, ...]
    nbytes: tuple[float, ...]
    write: bool = False          # False: each item reads its bytes; True: writes them

    def expand(self) -> tuple[Access, ...]:
        """One `Access` per item."""
        if self.write:
            return tuple(Access(t, self.tclass, 0.0, n) for t, n in zip(self.tensors, self.nbytes, strict=True))
        return tuple(Access(t, self.tclass, n, footprint_bytes=n) for t, n in zip(self.tensors, self.nbytes, strict=True))


@dataclass(frozen=True, slots=True)
class Kernel:
    """One device kernel."""

    name: str
    flops: float
    accesses: tuple[Access, ...]
    parallel_work: int           # independent blocks (CTAs, tiles) the kernel exposes
    matrix: bool = False         # runs on the matrix path (tensor cores / systolic array)
    kind: str = STREAM
    dtype: str = "bf16"
    host_ops: int = 1            # framework ops the host dispatches for it in eager mode (views included)
    launches: bool = True        # False: host-side framework work only, nothing runs on the device
    kclass: str = ELEMENTWISE    # one of KERNEL_CLASSES
    row_elements: int = 0        # a row reduction: elements one block walks serially (norms)
    key_tiles: int = 0           # attention: key tiles one block walks under the softmax recurrence
    tile_bytes: float = 0.0      # ... the K and V bytes of one such tile
    tile_flops: float = 0.0      # ... and its FLOPs, queries padded to the kernel's query tile
    indexed: bool = False        # operands are not contiguous: offsets are computed per element first
    items: ItemAccesses | None = None  # each batch item's own tensor, after `accesses`

    @property
    def all_accesses(self) -> tuple[Access, ...]:
        """Every access in the order the kernel makes them: `accesses`, then one per item."""
        return self.accesses if self.items is None else self.accesses + self.items.expand()

    @property
    def bytes_total(self) -> float:
        return sum(a.read_bytes + a.write_bytes for a in self.all_accesses)


@dataclass(frozen=True)
class KernelRules:
    """The software stack's rules for a step's kernels, read from the profile's `software` section
    (what each means, and its source, is in `speedsim.hardware.profile.SoftwareSpec`)."""

    tile_rows: int        # output features per GEMV block
    tile_k: int           # input features per block once split-K applies
    splitk_min_in: int    # split-K (and a reduction kernel) when in >= this ...
    units: int            # ... and the output tiles do not fill the device's units
    split_keys: int       # keys per block of split-KV attention
    split_min_keys: int   # split-KV only from this many keys
    query_tile: int       # queries per attention block when not split
    decode_query_tile: int  # queries a single-query attention kernel computes per tile (padded)
    pad_queries: bool     # attention computes whole query tiles (False: only the real queries)
    key_tile: int         # keys per step of an attention block's softmax recurrence
    split_fill: float     # split-KV only while batch x heads < this x units
    reduce_block: int     # outputs per block of a split-K reduction
    row_reuse_min: int    # fewer rows than this: one GEMV per row (weights read once per row)
    tile_tokens: int      # activation rows per GEMM block
    large_tile_features: int  # output features per block of a large square GEMM
    block_elements: int   # output elements per block of elementwise, cache-write and reduce kernels
    copy_block_bytes: int  # bytes per block of a device-to-device copy
    host_ops: HostOps     # framework ops per attention call, pass, cache write, embedding gather

    @classmethod
    def from_profile(cls, profile: HardwareProfile) -> KernelRules:
        sw = profile.software
        return cls(tile_rows=sw.gemm_tile_rows, tile_k=sw.gemm_tile_k, splitk_min_in=sw.splitk_min_in_features,
                   units=profile.compute.units, split_keys=sw.attention_split_keys,
                   split_min_keys=sw.attention_split_min_keys, query_tile=sw.attention_query_tile,
                   decode_query_tile=sw.attention_decode_query_tile, key_tile=sw.attention_key_tile,
                   pad_queries=sw.attention_pad_queries,
                   split_fill=sw.attention_split_fill, reduce_block=sw.splitk_reduce_block_elements,
                   row_reuse_min=sw.gemm_row_reuse_min, tile_tokens=sw.gemm_tile_tokens,
                   large_tile_features=sw.gemm_large_tile_features, block_elements=sw.elementwise_block_elements,
                   copy_block_bytes=sw.copy_block_KiB * 1024, host_ops=sw.host_ops)


@dataclass
class Program:
    """The kernels of one step (or one measured call), in issue order."""

    kernels: list[Kernel] = field(default_factory=list)

    def add(self, *kernels: Kernel) -> None:
        self.kernels.extend(kernels)

    def extend(self, other: Program) -> None:
        self.kernels.extend(other.kernels)

    def __len__(self) -> int:
        return len(self.kernels)

    @property
    def flops(self) -> float:
        return sum(k.flops for k in self.kernels)


def _elt(dtype: str) -> int:
    return BYTES_PER_ELEMENT[dtype]


# ------------------------------------------------------------------------------ building blocks

def linear(name: str, weight_id: str, rows: int, d_in: int, d_out: int, dtype: str, rules: KernelRules,
           tclass: str = WEIGHTS) -> list[Kernel]:
    """y(rows x d_out) = x(rows x d_in) @ W^T: one GEMV/GEMM, plus a split-K reduction when chosen."""
    b = _elt(dtype)
    out_tiles = math.ceil(d_out / rules.tile_rows) * math.ceil(rows / rules.tile_tokens)
    split = d_in >= rules.splitk_min_in and out_tiles < rules.units
    k_blocks = math.ceil(d_in / rules.tile_k) if split else 1
    passes = rows if rows < rules.row_reuse_min else 1  # weight reads: once, or once per row
    main = Kernel(
        name=name, flops=2.0 * rows * d_in * d_out, matrix=True, dtype=dtype, kclass=GEMM,
        parallel_work=out_tiles * k_blocks,
        accesses=(Access(weight_id, tclass, passes * d_in * d_out * b, footprint_bytes=d_in * d_out * b),
                  Access(ACT, ACTIVATIONS, rows * d_in * b, rows * d_out * (4 if split else b))),
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
             rules: KernelRules) -> Kernel:
    """Copy the new K (or V) rows of every batch item into its cache."""
    b = _elt(dtype)
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
def _kv_writes(layer_id: str, cache_ids: tuple[str, ...], rows_each: int, d: int, dtype: str,
               rules: KernelRules) -> tuple[Kernel, Kernel]:
    """A layer's K and V cache writes (the same items; cached: a serving batch writes the same
    caches step after step until it changes)."""
    b = _elt(dtype)
    items = ItemAccesses(KV, cache_ids, (rows_each * d * b,) * len(cache_ids), write=True)
    return (_kv_write(f"{layer_id}.k_write", items, rows_each, d, dtype, rules),
            _kv_write(f"{layer_id}.v_write", items, rows_each, d, dtype, rules))


def attention(name: str, spec: ModelSpec, queries: int, keys: list[int] | tuple[int, ...],
              cache_ids: list[str] | tuple[str, ...], masked: bool, dtype: str, rules: KernelRules,
              tclass: str = KV, host_ops: int | None = None) -> list[Kernel]:
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
    count for a self-attention).
    """
    ids, lens = tuple(cache_ids), tuple(keys)
    if len(ids) != len(lens):
        raise ValueError(f"attention '{name}': {len(lens)} key lengths for {len(ids)} caches")
    if host_ops is None:
        host_ops = rules.host_ops.self_attention
    return list(_attention(name, spec, queries, lens, ids, masked, dtype, rules, tclass, host_ops))


@lru_cache(maxsize=256)
def _attention(name: str, spec: ModelSpec, queries: int, keys: tuple[int, ...], cache_ids: tuple[str, ...],
               masked: bool, dtype: str, rules: KernelRules, tclass: str, host_ops: int) -> tuple[Kernel, ...]:
    # cached: a serving batch's cross-attention is the same step after step until the batch changes
    b = _elt(dtype)
    h = spec.n_heads
    single = queries == 1 and not masked
    split, flops, work, nbytes, key_tiles, tile_bytes, tile_flops = _attention_shape(spec, queries, keys, masked,
                                                                                     dtype, rules)
    main = Kernel(name=name, flops=flops, matrix=True, dtype=dtype, parallel_work=work, host_ops=host_ops, kclass=ATTN,
                  kind=STREAM if queries == 1 else ATTENTION, key_tiles=key_tiles, tile_bytes=tile_bytes,
                  tile_flops=tile_flops, accesses=_act_access(len(keys) * queries * spec.d_model * b),
                  items=ItemAccesses(tclass, cache_ids, nbytes))
    if split:
        if work <= h * len(keys):
            return (main,)
        partial = work * spec.d_head * 4.0 * queries
        return (main, Kernel(name=name + ".reduce", flops=float(work * spec.d_head), dtype=dtype, host_ops=0,
                             kclass=REDUCE, indexed=True, parallel_work=max(1, h * len(keys)),
                             accesses=(Access(ACT, ACTIVATIONS, partial, len(keys) * queries * spec.d_model * b),)))
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
def _attention_shape(spec: ModelSpec, queries: int, keys: tuple[int, ...], masked: bool, dtype: str,
                     rules: KernelRules) -> tuple[bool, float, int, tuple[float, ...], int, float, float]:
    """What an attention call's kernels need from its key lengths alone (shared by every layer of
    a step): split-KV or not, FLOPs, blocks, each item's K/V bytes, and one block's key tiles."""
    b = _elt(dtype)
    h, dh, d = spec.n_heads, spec.d_head, spec.d_model
    single = queries == 1 and not masked
    q_tiles = 1 if single else math.ceil(queries / rules.query_tile)
    longest = max(keys)
    split = single and longest >= rules.split_min_keys and len(keys) * h * q_tiles < rules.split_fill * rules.units
    flops = 0.0
    for kv_len in keys:
        flops += 4.0 * queries * kv_len * d
    if split:
        split_keys = rules.split_keys
        work = h * sum(math.ceil(kv_len / split_keys) for kv_len in keys)
    else:
        work = h * q_tiles * len(keys)
    nbytes = tuple([2.0 * kv_len * d * b for kv_len in keys])  # K and V rows
    block_keys = rules.split_keys if split else longest
    q_pad = rules.decode_query_tile if single else rules.query_tile
    if not rules.pad_queries:
        q_pad = min(q_pad, queries)
    tile_keys = min(rules.key_tile, block_keys)
    key_tiles = math.ceil(block_keys / tile_keys)
    return split, flops, work, nbytes, key_tiles, 2.0 * tile_keys * dh * b, 4.0 * q_pad * tile_keys * dh


# ------------------------------------------------------------------------------ layers and heads

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
    k_write, v_write = _kv_writes(layer_id, ids, queries, spec.d_model, dtype, rules)
    attn = attention(f"{layer_id}.attn", spec, queries, [n + queries for n in kv_lens], ids, queries > 1, dtype,
                     rules)
    kernels = [*pre, k_write, v_write, *attn, *mid]
    if spec.cross_attention_len:
        cross = tuple(cross_ids or [f"cross.{layer_id}"] * batch)
        lens = tuple(cross_lens or ()) or (spec.cross_attention_len,) * batch
        kernels += attention(f"{layer_id}.xattn", spec, queries, lens, cross, False, dtype, rules,
                             host_ops=rules.host_ops.cross_attention)
        kernels += post
    return Program(kernels)


@lru_cache(maxsize=4096)
def _layer_shape(spec: ModelSpec, layer_id: str, rows: int, dtype: str,
                 rules: KernelRules) -> tuple[tuple[Kernel, ...], tuple[Kernel, ...], tuple[Kernel, ...]]:
    """The kernels of a layer over `rows` tokens that do not depend on which caches they use or
    their lengths: before the KV writes, after self-attention, after cross-attention (empty
    without it)."""
    d, dff = spec.d_model, spec.d_ff
    pre = (rmsnorm(f"{layer_id}.norm1", rows, d, dtype, rules.host_ops.norm),
           *linear(f"{layer_id}.qkv", f"{layer_id}.qkv", rows, d, 3 * d, dtype, rules))
    mid = [*linear(f"{layer_id}.o", f"{layer_id}.o", rows, d, d, dtype, rules),
           elementwise(f"{layer_id}.add1", rows * d, 2, dtype, rules)]
    post: list[Kernel] = []
    if spec.cross_attention_len:
        mid += [rmsnorm(f"{layer_id}.norm_x", rows, d, dtype, rules.host_ops.norm),
                *linear(f"{layer_id}.xq", f"{layer_id}.xq", rows, d, d, dtype, rules)]
        post += [*linear(f"{layer_id}.xo", f"{layer_id}.xo", rows, d, d, dtype, rules),
                 elementwise(f"{layer_id}.add_x", rows * d, 2, dtype, rules)]
    tail = post if spec.cross_attention_len else mid
    tail.append(rmsnorm(f"{layer_id}.norm2", rows, d, dtype, rules.host_ops.norm))
    tail += linear(f"{layer_id}.w1", f"{layer_id}.w1", rows, d, (2 if spec.gated else 1) * dff, dtype, rules)
    if spec.gated:
        # gate and up are slices of the fused w1 output: contiguous for one row, strided for several
        tail += [dataclasses.replace(elementwise(f"{layer_id}.silu", rows * dff, 1, dtype, rules, 4.0), indexed=rows > 1),
                 dataclasses.replace(elementwise(f"{layer_id}.mul", rows * dff, 2, dtype, rules), indexed=rows > 1)]
    else:
        tail.append(elementwise(f"{layer_id}.{spec.ffn}", rows * dff, 1, dtype, rules))
    tail += linear(f"{layer_id}.w2", f"{layer_id}.w2", rows, dff, d, dtype, rules)
    tail.append(elementwise(f"{layer_id}.add2", rows * d, 2, dtype, rules))
    return pre, tuple(mid), tuple(post)


def lm_head(spec: ModelSpec, rows: int, dtype: str, rules: KernelRules, final_norm: bool = True) -> Program:
    """Final norm (optional) and the vocabulary projection for `rows` exits."""
    return Program(list(_lm_head(spec, rows, dtype, rules, final_norm)))


@lru_cache(maxsize=1024)
def _lm_head(spec: ModelSpec, rows: int, dtype: str, rules: KernelRules, final_norm: bool) -> tuple[Kernel, ...]:
    norm = (rmsnorm("head.norm", rows, spec.d_model, dtype, rules.host_ops.norm),) if final_norm else ()
    return (*norm, *linear("lm_head", "lm_head", rows, spec.d_model, spec.vocab, dtype, rules, tclass=EMBEDDINGS))


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
