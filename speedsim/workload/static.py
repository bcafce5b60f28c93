"""Programs of the static-buffer decoder that `speedsim measure --parts loop` times (`impl=static`).

`speedsim.validation.measure.static` decodes over preallocated buffers, one CUDA-graph replay per
step. Its step is not the simulator's generic step (`speedsim.workload.steps`); what it runs, op
by op (counted on a CPU with a dispatch counter, `experiments/measured/h200/closed-loop/ops.md`):

- **a greedy step** (one token through U layers R times): the token's embedding (token and
  position rows, an add), the length mask (`arange <= pos`), then per layer the generic layer
  but with self-attention over the whole length bucket (keys rounded up to `kv_bucket`
  positions, masked), the cache writes as index scatters; the exit (final norm, LM head),
  `argmax` and the copy of the prediction into the output buffer;
- **a SPEED step** (T in-flight tokens, one per repeat): embeddings of all T rows and the
  gather of their hidden states from the (repeat, position) buffer, a `where` between them,
  the mask, the U layers over the T tokens (the same padded attention, each token over its own
  repeat's cache; when the repeats are not consecutive the caches are gathered first: two
  `index_select` copies per layer), the scatter of the T hidden states back, the exit on T
  rows, `argmax` and the output copy;
- **the prefill** is the functional decoder's (`speedsim.decode.prefill`), run eagerly in both
  modes: the encoder and cross K/V, then position 0 through each repeat (a pass with its host
  bookkeeping, the exit, `argmax` and one read of the prediction by the host), then the copy of
  its caches into the static buffers.
"""

from __future__ import annotations

import dataclasses

from speedsim.workload.kernels import Kernel, Program
from speedsim.workload.layers import decoder_layer, lm_head
from speedsim.workload.primitives import bookkeeping, elementwise, embed
from speedsim.workload.steps import Seq, StepContext, _encode

BUCKET = 64  # the measured decoder's default KV-length bucket (`kv_bucket` in a row's extra)


def bucket_length(last: int, kv_len: int, bucket: int) -> int:
    """Keys a static step reads for tokens up to decoder position `last` (as `StaticDecoder._length`)."""
    return min(kv_len, -(-(last + 1) // bucket) * bucket)


def buffer_length(offset: int, new_tokens: int, max_len: int | None, bucket: int) -> int:
    """KV positions of the static buffers for a decode of `new_tokens` after `offset` (as `loop.static_decoder`)."""
    needed = offset + new_tokens + 1
    length = -(-needed // bucket) * bucket
    return min(length, max_len) if max_len else length


def _small(name: str, elements: int, inputs: int, ctx: StepContext) -> Kernel:
    return elementwise(name, max(1, elements), inputs, ctx.dtype, ctx.rules)


def _exit(ctx: StepContext, rows: int) -> list[Kernel]:
    """The shared exit on `rows` rows, its argmax over the vocabulary and the copy into the output buffer."""
    return [*lm_head(ctx.spec, rows, ctx.dtype, ctx.rules, final_norm=True).kernels,
            _small("argmax", rows * ctx.spec.vocab, 1, ctx), _small("out.copy", rows, 1, ctx)]


def _layers(ctx: StepContext, tokens: list[tuple[int | None, int]], length: int) -> list[Kernel]:
    """The U layers over `tokens` = (repeat or None, KV-cache repeat) with attention over `length` keys each."""
    seq = Seq(ctx)
    kernels: list[Kernel] = []
    for u in range(ctx.sharing.unique):
        caches = [seq.cache(u, r) for _, r in tokens]
        kernels += decoder_layer(ctx.spec, f"L{u}", [length - 1] * len(tokens), caches, 1, ctx.dtype, ctx.rules,
                                 cross_ids=[seq.cross(u)] * len(tokens)).kernels
    return kernels


def greedy_step(ctx: StepContext, length: int) -> Program:
    """One greedy step of the static decoder: one token through U layers R times, keys padded to `length`."""
    d = ctx.spec.d_model
    p = Program([embed(ctx.spec, 1, ctx.dtype, ctx.rules), _small("pos_embed.add", d, 2, ctx),
                 _small("mask", length, 1, ctx)])
    for r in range(ctx.sharing.repeats):
        p.extend(Program(_layers(ctx, [(r, r)], length)))
    p.add(*_exit(ctx, 1))
    return p


def speed_step(ctx: StepContext, repeats: list[int], length: int) -> Program:
    """One SPEED step of the static decoder: the in-flight tokens at `repeats` (one each), keys padded to `length`."""
    d, T = ctx.spec.d_model, len(repeats)
    ordered = sorted(repeats)
    p = Program([embed(ctx.spec, T, ctx.dtype, ctx.rules), _small("pos_embed.add", T * d, 2, ctx),
                 _small("hidden.gather", T * d, 1, ctx), _small("where", T * d, 3, ctx),
                 _small("mask", T * length, 1, ctx)])
    consecutive = ordered == list(range(ordered[0], ordered[0] + T))
    for u, kernels in enumerate(_per_layer(_layers(ctx, [(r, r) for r in ordered], length), ctx.sharing.unique)):
        if not consecutive:  # the caches of the T repeats gathered into one tensor, K and V
            gather = _small(f"L{u}.kv_gather", T * length * d, 1, ctx)
            kernels = [gather, dataclasses.replace(gather, name=f"L{u}.kv_gather_v"), *kernels]
        p.add(*kernels)
    p.add(_small("hidden.scatter", T * d, 1, ctx), *_exit(ctx, T))
    return p


def _per_layer(kernels: list[Kernel], layers: int) -> list[list[Kernel]]:
    """`kernels` of `layers` layers of equal length, split by layer."""
    n = len(kernels) // layers
    return [kernels[i * n:(i + 1) * n] for i in range(layers)]


def prefill_passes(ctx: StepContext) -> list[Program]:
    """The functional prefill as the host sees it: one program per read of a prediction (the
    encoder with position 0's first pass, then one per further repeat), then the copy of the
    caches into the static buffers. Each ends with the host reading its result."""
    spec, dtype, rules, sharing = ctx.spec, ctx.dtype, ctx.rules, ctx.sharing
    seq = Seq(ctx)
    d = spec.d_model
    layer_ids = tuple(f"L{u}" for u in range(sharing.unique))
    passes: list[Program] = []
    first = Program()
    if ctx.encoder_decoder:
        first.add(*_encode(spec, max(1, ctx.src_len), layer_ids, dtype, rules))
        rows = 1
    else:
        rows = max(1, ctx.src_len)
        first.add(embed(spec, rows, dtype, rules))
    for r in range(sharing.repeats):
        p = first if r == 0 else Program()
        p.add(bookkeeping(f"prefill.r{r}", rules))
        for u in range(sharing.unique):
            p.extend(decoder_layer(spec, f"L{u}", [0], [seq.cache(u, r)], rows, dtype, rules,
                                   cross_ids=[seq.cross(u)] if ctx.encoder_decoder else None))
        p.add(*lm_head(spec, 1, dtype, rules, final_norm=True).kernels, _small("argmax", spec.vocab, 1, ctx))
        passes.append(p)
    cached = sharing.depth * rows * d  # K, then V, of every (layer, repeat); then each layer's cross K and V
    load = Program([_small("load.k", cached, 1, ctx), _small("load.v", cached, 1, ctx)])
    if ctx.encoder_decoder:
        load.add(*[_small(f"load.cross.L{u}.{kv}", ctx.src_len * d, 1, ctx)
                   for u in range(sharing.unique) for kv in "kv"])
    passes.append(load)
    return passes
