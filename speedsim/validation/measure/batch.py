"""Batched decode steps: B sequences, each at its own KV length, in one step (section `batch`).

What a serving system runs when it batches requests (issue 11's scheduler):

- `unshared`: one step of the U*R-deep unshared decoder (L = U*R, R = 1): B tokens, one per
  sequence, each attending to its own KV cache of its own length; then the LM head on B rows;
- `pipelined`: one SPEED step of the UxR model (L = U, R = R): every sequence contributes R
  tokens at R repeats (the oldest one deepest and furthest along), each attending to its own
  (sequence, repeat) cache; the U shared layers run once over B*R rows; then the LM head on
  B*R rows.

Cross-attention (encoder-decoder models) reads each sequence's own encoder K/V: the R tokens of
one sequence are R queries of one attention call. n = B, ctx = mean KV length; `extra` lists
the lengths (drawn uniformly in [ctx/2, 3 ctx/2] from `seed`). Timed like the step rows:
back-to-back calls, eager and (on CUDA) replayed from a CUDA graph; on a CPU the samples of one
pattern's steps are interleaved (a burst of other work on a shared machine then slows every
row a little instead of one row a lot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from speedsim.model import SharedDecoder
from speedsim.sharing import Sharing
from speedsim.validation.measure.models import variant
from speedsim.validation.measure.static import decoder_layers, layer_step
from speedsim.validation.measure.timing import TimingLog, time_interleaved

SEED = 0


def kv_lengths(batch: int, ctx: int, seed: int = SEED) -> list[int]:
    """`batch` KV lengths spread uniformly around `ctx` (in [ctx/2, 3 ctx/2]), reproducible from the seed."""
    rng = np.random.default_rng([seed, batch, ctx])
    return [int(x) for x in rng.integers(max(1, ctx // 2), ctx + ctx // 2 + 1, batch)]


def batched_step(model: SharedDecoder, lengths: list[int], src_len: int) -> Callable[[], torch.Tensor]:
    """One decode step of `model` for len(lengths) sequences (R tokens each), over filled buffers."""
    c, p = model.config, next(model.parameters())
    dev, dt = p.device, p.dtype
    B, R = len(lengths), c.repeats
    gen = torch.Generator(device=dev).manual_seed(SEED)
    pos = torch.tensor([n + R - 1 - r for n in lengths for r in range(R)], device=dev)  # (B*R,) sequence-major
    kv_len = int(pos.max()) + 1
    shape = (c.unique_layers, B * R, c.n_heads, kv_len, c.head_dim)
    k = torch.randn(shape, device=dev, dtype=dt, generator=gen)  # (U, B*R, H, L, D): slot b*R + r
    v = torch.randn(shape, device=dev, dtype=dt, generator=gen)
    x = torch.randn(B * R, c.d_model, device=dev, dtype=dt, generator=gen)
    slots = torch.arange(B * R, device=dev)
    allowed = (torch.arange(kv_len, device=dev)[None, :] <= pos[:, None])[:, None, None, :]  # (B*R, 1, 1, L)
    cross = None
    if not c.decoder_only:
        ckv = (B, c.n_heads, src_len, c.head_dim)
        cross = (torch.randn(ckv, device=dev, dtype=dt, generator=gen), torch.randn(ckv, device=dev, dtype=dt,
                                                                                   generator=gen), None)

    layers = decoder_layers(model)

    def step() -> torch.Tensor:
        y = x
        for u, layer in enumerate(layers):
            y = layer_step(layer, y, k[u], v[u], slots, pos, slice(0, B * R), allowed, cross)
        return model.exit_logits(y)  # (B*R, V)
    return step


def batch_rows(rec: TimingLog, model: SharedDecoder, name: str, src_len: int, sharings: tuple[Sharing, ...],
               sizes: tuple[int, ...], ctxs: tuple[int, ...]) -> None:
    """Unshared steps of each distinct depth and pipelined steps of each shared UxR, for every B and ctx."""
    scenarios: list[tuple[str, Sharing]] = []
    for depth in dict.fromkeys(s.depth for s in sharings):
        scenarios.append(("unshared", Sharing(depth, 1)))
    scenarios += [("pipelined", s) for s in sharings if s.repeats > 1]
    for pattern, sharing in scenarios:
        m = variant(model, sharing, light_encoder=True)
        rows: list[dict[str, Any]] = []
        steps: list[Callable[[], torch.Tensor]] = []
        for ctx in ctxs:
            for B in sizes:
                lengths = kv_lengths(B, ctx)
                rows.append(dict(section="batch", model=name, pattern=pattern, n=B, ctx=round(float(np.mean(lengths))),
                                 L=sharing.unique, R=sharing.repeats,
                                 extra=f"impl=static;seed={SEED};cross={0 if m.config.decoder_only else src_len};"
                                       f"lengths={'/'.join(map(str, lengths))}"))
                if rec.device == "cuda":  # one at a time (buffers of GiBs), eager and graph-replayed
                    rec.time(batched_step(m, lengths, src_len), **rows.pop())
                else:
                    steps.append(batched_step(m, lengths, src_len))
        if steps:  # a shared CPU: samples of all of a pattern's steps interleaved, so other work hits all alike
            for row, (med, lo, hi) in zip(rows, time_interleaved(steps, rec.device, rec.budget), strict=True):
                rec.add(mode="eager", us_median=med, us_min=lo, us_max=hi, **row)
        rec.flush()  # after every pattern: a run cut short keeps what it measured
        del m, steps
