"""Single framework ops of a decode step at the model's shapes (section `op`): the kernel level.

What each kind of kernel costs on its own, back to back, so a calibration can fit the per-kernel
physics (fixed times, streaming rates, per-block work) on rows where errors cannot cancel
between kernel classes (the whole-step rows alone let a too-slow GEMM hide a too-fast norm).
A CPU has no kernel profiler worth the name at these sizes (torch.profiler adds microseconds
per op); timing each op alone at the decode shapes is the CPU's `kernels.csv`.

| pattern | the op | n | ctx | extra |
|---|---|---|---|---|
| `linear` | `F.linear(x, W)`, x of n rows | rows | 0 | `in=K;out=N` |
| `attention` | `F.scaled_dot_product_attention` over n items (heads of the model) | items | keys | `queries=Q` |
| `norm` | the model's RMSNorm over n rows | rows | 0 | |
| `kv_write` | `cache[slots, :, pos] = k` for n tokens (a KV-cache write by index) | tokens | 0 | |

Attention: one query per item is the self-attention of a decode step (no mask: every item's keys
are its own); several queries per item are SPEED's in-flight tokens reading one sequence's
encoder memory (cross-attention, no mask).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from speedsim.model import SharedDecoder
from speedsim.validation.measure.static import decoder_layers
from speedsim.validation.measure.timing import TimingLog, time_interleaved

ROWS = (1, 2, 3, 4, 8, 16, 32, 96)  # GEMV per row below 4 on MKL, a packed GEMM from 4 rows
SELF_ITEMS, SELF_KEYS = (1, 4, 16, 32, 96), (16, 48, 128, 192)
CROSS_ITEMS, CROSS_QUERIES = (1, 4, 16, 32), (1, 3, 6)
QUICK_ROWS, QUICK_ITEMS, QUICK_KEYS = (1, 4), (1, 4), (16,)
# Each op cycles through copies of its operands totalling at least this: a decode step reads a
# layer's weights and caches from the last-level cache, not from a core's private L2 (1-2 MiB),
# where one tensor called back to back would stay (a 768 KiB GEMV ran 2.5x faster so than in a layer)
ROTATE_BYTES = 3 * 2**20
MAX_COPIES = 16


def _copies(nbytes: int) -> int:
    """How many copies of operands of `nbytes` bytes an op cycles through."""
    return max(1, min(MAX_COPIES, -(-ROTATE_BYTES // max(1, nbytes))))


def _cycling(fn: Callable[..., object], operands: list[tuple[torch.Tensor, ...]]) -> Callable[[], object]:
    """`fn(*operands[i])` for i = 0, 1, 2, ... in turn, one per call."""
    state = {"i": 0}

    def call() -> object:
        i = state["i"]
        state["i"] = (i + 1) % len(operands)
        return fn(*operands[i])
    return call


def op_rows(rec: TimingLog, model: SharedDecoder, name: str, src_len: int, quick: bool = False) -> None:
    """Every op kind at the shapes of `model` (random tensors: timing does not depend on values).

    The samples of all ops are interleaved (`time_interleaved`): a burst of other work on a shared
    machine then slows every row a little instead of a few rows a lot (timed one row after the
    other, single rows of three runs were up to 70% apart on the build machine)."""
    timed: list[tuple[dict, Callable[[], object]]] = []

    def time(fn: Callable[[], object], **row: object) -> None:
        timed.append((dict(section="op", model=name, **row), fn))
    c = model.config
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    H, D, d = c.n_heads, c.head_dim, c.d_model
    rows = QUICK_ROWS if quick else ROWS
    shapes = dict.fromkeys([(d, 3 * d), (d, d), (d, c.d_ff), (c.d_ff, d), (d, c.vocab_size)])
    size = torch.tensor([], dtype=dt).element_size()
    for k_in, n_out in shapes:
        weights = [torch.randn(n_out, k_in, device=dev, dtype=dt) for _ in range(_copies(n_out * k_in * size))]
        for n in rows:
            x = torch.randn(n, k_in, device=dev, dtype=dt)
            time(_cycling(F.linear, [(x, w) for w in weights]), pattern="linear", n=n, extra=f"in={k_in};out={n_out}")

    def attention(n: int, queries: int, keys: int) -> Callable[[], object]:
        q = torch.randn(n, H, queries, D, device=dev, dtype=dt)
        kvs = [torch.randn(2, n, H, keys, D, device=dev, dtype=dt) for _ in range(_copies(2 * n * H * keys * D * size))]
        return _cycling(F.scaled_dot_product_attention, [(q, kv[0], kv[1]) for kv in kvs])
    for keys in QUICK_KEYS if quick else SELF_KEYS:
        for n in QUICK_ITEMS if quick else SELF_ITEMS:
            time(attention(n, 1, keys), pattern="attention", n=n, ctx=keys, extra="queries=1")
    if not c.decoder_only:
        for queries in (1, 3) if quick else CROSS_QUERIES:
            for n in QUICK_ITEMS if quick else CROSS_ITEMS:
                time(attention(n, queries, src_len), pattern="attention", n=n, ctx=src_len, extra=f"queries={queries}")
    norm = decoder_layers(model)[0].ln1
    for n in rows:
        x = torch.randn(n, d, device=dev, dtype=dt)
        time(partial(norm, x), pattern="norm", n=n)
    cache = torch.zeros(max(rows), H, 64, D, device=dev, dtype=dt)
    for n in rows:
        k = torch.randn(n, H, D, device=dev, dtype=dt)
        slots, pos = torch.arange(n, device=dev), torch.full((n,), 7, device=dev)

        def write(k=k, slots=slots, pos=pos) -> None:
            cache[slots, :, pos] = k
        time(write, pattern="kv_write", n=n)
    results = time_interleaved([fn for _, fn in timed], rec.device, rec.budget)
    for (row, _), (med, lo, hi) in zip(timed, results, strict=True):
        rec.add(mode="eager", us_median=med, us_min=lo, us_max=hi, **row)
