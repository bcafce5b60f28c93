"""Decode-step workloads of a UxR shared model: SPEED's pipelined steps, the baselines, prefill.

Positions follow the pipeline controller (`speedsim.pipeline`): position 0 is computed by the
prefill (BOS for an encoder-decoder, the prompt's last token for a decoder-only model) through
all R repeats; decode steps compute positions 1, 2, .... A token at position t attends to
`t` earlier decoder positions (encoder-decoder) or `prompt_len - 1 + t` (decoder-only).

Tensor identities make parameter sharing visible to the on-chip model: the U shared layers are
`L0..L{U-1}` whatever the repeat; each (layer, repeat) has its own KV cache `kv.L{u}.r{r}`;
each distinct layer has its own encoder K/V `cross.L{u}`; an unshared decoder of the same
depth has `L0..L{U*R-1}` with one cache and one encoder K/V each.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from speedsim.hardware import BYTES_PER_ELEMENT
from speedsim.sharing import Sharing
from speedsim.workload.kernels import SEND, Kernel, Program
from speedsim.workload.layers import decoder_layer, decoder_layer_windows, lm_head, tp_reduce
from speedsim.workload.models import ModelSpec, stage_ends
from speedsim.workload.primitives import (
    attention,
    bookkeeping,
    collective,
    elementwise,
    embed,
    linear,
    rmsnorm,
)
from speedsim.workload.rules import KernelRules


@dataclass(frozen=True)
class StepContext:
    """What every step program of one sequence shares."""

    spec: ModelSpec          # dimensions; spec.cross_attention_len is the source length (enc-dec)
    sharing: Sharing
    src_len: int             # encoder input length, or prompt length (decoder-only)
    dtype: str
    rules: KernelRules
    weights: str = ""        # prefix of the model's weight tensor ids ("draft." for a draft model's)

    @property
    def encoder_decoder(self) -> bool:
        return self.spec.cross_attention_len > 0

    def kv_before(self, position: int) -> int:
        """Decoder positions already cached when `position` is computed."""
        return position if self.encoder_decoder else max(self.src_len, 1) - 1 + position


@lru_cache(maxsize=256)
def with_source(spec: ModelSpec, src_len: int) -> ModelSpec:
    """The spec with cross-attention over `src_len` encoder positions (encoder-decoder models).

    Cached: the sequences of one source length share one spec object, so the kernel caches keyed
    by spec find it by identity (a serving run makes one context per request)."""
    if spec.cross_attention_len and src_len != spec.cross_attention_len:
        return spec.model_copy(update={"cross_attention_len": max(1, src_len)})
    return spec


@dataclass(frozen=True)
class Seq:
    """One sequence's share of a batched step: its context and the prefix of its tensor ids
    ("" for a lone sequence; a serving batch gives each request its own caches, `q7.`)."""

    ctx: StepContext
    prefix: str = ""

    def cache(self, layer: int, repeat: int | None = None) -> str:
        return _cache_id(self.prefix, layer, repeat)

    def cross(self, layer: int) -> str:
        return _cross_id(self.prefix, layer)

    def ids(self, layers: int, repeat: int | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Its (cache, encoder K/V) ids in layers 0..layers-1 for a token at `repeat`."""
        return _ids(self.prefix, layers, repeat)


def _cache_id(prefix: str, layer: int, repeat: int | None) -> str:
    return f"{prefix}kv.L{layer}" + ("" if repeat is None else f".r{repeat}")


def _cross_id(prefix: str, layer: int) -> str:
    return f"{prefix}cross.L{layer}"


@lru_cache(maxsize=1 << 16)
def _ids(prefix: str, layers: int, repeat: int | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # cached: a serving step names every in-flight token's caches in every layer
    return (tuple(_cache_id(prefix, u, repeat) for u in range(layers)),
            tuple(_cross_id(prefix, u) for u in range(layers)))


def _layers(seqs: list[Seq], n: int, tokens: list[tuple[Seq, int, int | None]], shared: bool = True) -> Program:
    """Layers 0..n-1 over `tokens` = (sequence, position, repeat or None for unshared caches).

    What is the same in every layer (each token's KV length, source length, cache ids) is worked
    out once for the step. Over pipeline stages (`spec.pp` > 1) the tokens' activations are sent on at
    each stage's last layer, except in a pass of the shared layers under the pipeline over repeats (one
    device holds them all). `shared`: the pass is over the shared layers (not the unshared decoder)."""
    ctx = seqs[0].ctx
    spec, dtype, rules = ctx.spec, ctx.dtype, ctx.rules
    kv = [s.ctx.kv_before(pos) for s, pos, _ in tokens]
    ids = [s.ids(n, r) for s, _, r in tokens]
    caches = list(zip(*[c for c, _ in ids], strict=True)) if ids else [()] * n
    crosses = list(zip(*[x for _, x in ids], strict=True)) if ids else [()] * n
    cross_lens = [s.ctx.spec.cross_attention_len for s, _, _ in tokens]
    p = Program()
    ends = stage_ends(n, spec.pp) if spec.pp > 1 and not (spec.pp_repeats and shared) else frozenset()
    for u in range(n):
        p.extend(decoder_layer(spec, f"{ctx.weights}L{u}", kv, caches[u], 1, dtype, rules, cross_ids=crosses[u],
                               cross_lens=cross_lens))
        if u in ends:
            p.add(stage_send(spec, f"{ctx.weights}L{u}", len(tokens), dtype))
    return p


def stage_send(spec: ModelSpec, name: str, rows: int, dtype: str) -> Kernel:
    """`rows` tokens' activations sent from one pipeline stage's device to the next."""
    return collective(f"{name}.send", SEND, rows * spec.d_model * BYTES_PER_ELEMENT[dtype], 2, dtype)


def pipelined_batch(work: list[tuple[Seq, list[tuple[int, int]], int]]) -> Program:
    """One SPEED step of a batch: each sequence's in-flight (position, repeat) tokens and how many it
    launched; the U shared layers run once over every token of every sequence (one read of the
    weights), each token at its own repeat and attending to its own sequence's (layer, repeat)
    cache; the LM head on every in-flight token's exit."""
    seqs = [s for s, _, _ in work]
    ctx = seqs[0].ctx
    spec = ctx.spec
    p = Program([bookkeeping("step.plan", ctx.rules)])
    launched = sum(n for _, _, n in work)
    tokens: list[tuple[Seq, int, int | None]] = [(s, pos, r) for s, flight, _ in work for pos, r in flight]
    if spec.pp_repeats and spec.pp > 1:
        # each repeat's tokens on a device of their own, all at once: the step takes as long as the busiest
        # device (most tokens, then most keys), which then sends its tokens on to the next repeat's device
        by_repeat: dict[int, list[tuple[Seq, int, int | None]]] = {}
        for t in tokens:
            by_repeat.setdefault(t[2] or 0, []).append(t)
        r, tokens = max(by_repeat.items(), key=lambda kv: (len(kv[1]), sum(s.ctx.kv_before(pos) for s, pos, _ in
                                                                                 kv[1]), -kv[0]))
        if launched and r == 0:
            p.add(embed(spec, launched, ctx.dtype, ctx.rules))
        p.extend(_layers(seqs, ctx.sharing.unique, tokens))
        p.extend(lm_head(spec, len(tokens), ctx.dtype, ctx.rules, prefix=ctx.weights))
        p.add(stage_send(spec, f"{ctx.weights}step", len(tokens), ctx.dtype))
        return p
    if launched:
        p.add(embed(spec, launched, ctx.dtype, ctx.rules))
    p.extend(_layers(seqs, ctx.sharing.unique, tokens))
    p.extend(lm_head(spec, len(tokens), ctx.dtype, ctx.rules, prefix=ctx.weights))
    if spec.pp > 1:  # the in-flight tokens go back from the last stage to the first for their next repeat
        p.add(stage_send(spec, f"{ctx.weights}step", len(tokens), ctx.dtype))
    return p


def pipelined_step(ctx: StepContext, in_flight: list[tuple[int, int]], launched: int) -> Program:
    """One SPEED step of one sequence (`pipelined_batch` of one)."""
    return pipelined_batch([(Seq(ctx), in_flight, launched)])


def sequential_batch(work: list[tuple[Seq, int]]) -> Program:
    """The shared model without pipelining: one token per sequence through U layers R times, then
    the head once; the batch shares each layer's weight read."""
    seqs = [s for s, _ in work]
    ctx = seqs[0].ctx
    p = Program([embed(ctx.spec, len(work), ctx.dtype, ctx.rules)])
    for r in range(ctx.sharing.repeats):
        p.add(bookkeeping(f"pass.r{r}", ctx.rules))  # one decoder pass per repeat
        p.extend(_layers(seqs, ctx.sharing.unique, [(s, pos, r) for s, pos in work]))
        if ctx.spec.pp > 1 and r < ctx.sharing.repeats - 1:  # on to the device of the next pass's first layer
            p.add(stage_send(ctx.spec, f"{ctx.weights}pass.r{r}", len(work), ctx.dtype))
    p.extend(lm_head(ctx.spec, len(work), ctx.dtype, ctx.rules, prefix=ctx.weights))
    return p


def sequential_token(ctx: StepContext, position: int) -> Program:
    """`sequential_batch` of one sequence."""
    return sequential_batch([(Seq(ctx), position)])


def unshared_batch(work: list[tuple[Seq, int]]) -> Program:
    """An unshared decoder of the same depth (U*R distinct layers): one token per sequence, then the head."""
    seqs = [s for s, _ in work]
    ctx = seqs[0].ctx
    p = Program([embed(ctx.spec, len(work), ctx.dtype, ctx.rules), bookkeeping("pass", ctx.rules)])
    p.extend(_layers(seqs, ctx.sharing.depth, [(s, pos, None) for s, pos in work], shared=False))
    p.extend(lm_head(ctx.spec, len(work), ctx.dtype, ctx.rules, prefix=ctx.weights))
    return p


def unshared_token(ctx: StepContext, position: int) -> Program:
    """`unshared_batch` of one sequence."""
    return unshared_batch([(Seq(ctx), position)])


def window_step(seq: Seq, position: int, tokens: int, repeats: range, reused: int = 0,
                head_rows: int | None = None) -> Program:
    """`tokens` consecutive positions of one sequence from `position` (`window_batch` of one): a speculative
    verify step, a draft model's step, a self-speculative draft."""
    return window_batch([(seq, position, tokens)], repeats, reused, None if head_rows is None else [head_rows])


def window_batch(work: list[tuple[Seq, int, int]], repeats: range, reused: int = 0,
                 head_rows: list[int] | None = None) -> Program:
    """Each sequence's window of `tokens` consecutive positions from `position` through the shared layers at
    each of `repeats` (each repeat's pass one multi-query pass per window, causal over it), then the head
    over all of them: a speculative verify step (the target's full depth over the drafts), a draft model's
    step (one token, or its catch-up on committed tokens), a self-speculative draft (one token to an early
    exit). A batch shares each layer's weight read (`decoder_layer_windows`: the linear kernels over every
    row, the cache writes and attention per window length).

    `reused`: the windows' first repeats whose results the drafts already hold (self-speculation: repeats
    0..e of the drafted positions); only each window's last token runs through them, the whole window
    through the rest (`speedsim.decode.drafting` says why that is exact). `head_rows`: the positions the
    head runs on, per sequence (default all; a draft model's catch-up needs only its last)."""
    ctx = work[0][0].ctx
    spec, dtype, rules = ctx.spec, ctx.dtype, ctx.rules
    p = Program([embed(spec, sum(1 if reused else t for _, _, t in work), dtype, rules)])
    for r in repeats:
        p.add(bookkeeping(f"pass.r{r}", rules))
        groups: dict[int, list[tuple[Seq, int]]] = {}
        for seq, position, tokens in work:
            n, first = (1, position + tokens - 1) if r < reused else (tokens, position)
            groups.setdefault(n, []).append((seq, first))
        for u in range(ctx.sharing.unique):
            p.extend(decoder_layer_windows(spec, f"{ctx.weights}L{u}", [
                (n, [s.ctx.kv_before(f) for s, f in members], [s.cache(u, r) for s, _ in members],
                 [s.cross(u) for s, _ in members], [s.ctx.spec.cross_attention_len for s, _ in members])
                for n, members in groups.items()], dtype, rules))
    rows = sum(head_rows) if head_rows is not None else sum(t for _, _, t in work)
    p.extend(lm_head(spec, rows, dtype, rules, prefix=ctx.weights))
    return p


def encoder_layer(spec: ModelSpec, layer_id: str, tokens: int, dtype: str, rules: KernelRules) -> Program:
    """One bidirectional encoder layer over `tokens` positions (no mask, no cross-attention)."""
    return Program(list(_encoder_layer(spec, layer_id, tokens, dtype, rules)))


@lru_cache(maxsize=1024)
def _encoder_layer(spec: ModelSpec, layer_id: str, tokens: int, dtype: str, rules: KernelRules) -> tuple[Kernel, ...]:
    # cached: every request of a serving run with this source length prefills the same encoder
    d, dff, q, kv = spec.d_model, spec.d_ff, spec.q_width, spec.kv_width
    w = spec.weight_format(dtype)
    p = Program()
    p.add(rmsnorm(f"{layer_id}.norm1", tokens, d, dtype, rules.host_ops.norm))
    p.add(*linear(f"{layer_id}.qkv", f"{layer_id}.qkv", tokens, d, q + 2 * kv, dtype, rules, wfmt=w, wgroup=spec.weight_group))
    p.add(*attention(f"{layer_id}.attn", spec, tokens, [tokens], [f"{layer_id}.kv"], False, dtype, rules,
                     tclass="activations"))
    p.add(*linear(f"{layer_id}.o", f"{layer_id}.o", tokens, q, d, dtype, rules, wfmt=w, wgroup=spec.weight_group))
    p.add(*tp_reduce(spec, f"{layer_id}.o", tokens, dtype))
    p.add(elementwise(f"{layer_id}.add1", tokens * d, 2, dtype, rules))
    p.add(rmsnorm(f"{layer_id}.norm2", tokens, d, dtype, rules.host_ops.norm))
    p.add(*linear(f"{layer_id}.w1", f"{layer_id}.w1", tokens, d, (2 if spec.gated else 1) * dff, dtype, rules,
                  wfmt=w, wgroup=spec.weight_group))
    p.add(elementwise(f"{layer_id}.act", tokens * dff * (2 if spec.gated else 1), 1, dtype, rules))
    p.add(*linear(f"{layer_id}.w2", f"{layer_id}.w2", tokens, dff, d, dtype, rules, wfmt=w, wgroup=spec.weight_group))
    p.add(*tp_reduce(spec, f"{layer_id}.w2", tokens, dtype))
    p.add(elementwise(f"{layer_id}.add2", tokens * d, 2, dtype, rules))
    return tuple(p.kernels)


def prefill(ctx: StepContext, unshared: bool = False, prefix: str = "") -> Program:
    """Everything before the first decode step: the encoder and cross K/V (encoder-decoder) or the
    prompt (decoder-only), and position 0 through all R repeats with its R exits. `prefix`: of the
    sequence's cache ids (see `Seq`)."""
    spec, dtype, rules, w = ctx.spec, ctx.dtype, ctx.rules, ctx.weights
    depth, unique = ctx.sharing.depth, ctx.sharing.unique
    p = Program()
    layer_ids = [f"{w}L{i}" for i in range(depth)] if unshared else [f"{w}L{i % unique}" for i in range(depth)]
    caches = [f"{prefix}kv.L{i}" for i in range(depth)] if unshared else \
        [f"{prefix}kv.L{i % unique}.r{i // unique}" for i in range(depth)]
    ends = stage_ends(depth, spec.pp) if spec.pp > 1 else frozenset()  # (over repeats: a stage is a repeat)
    if ctx.encoder_decoder:
        p.add(*_encode(spec, max(1, ctx.src_len), tuple(dict.fromkeys(layer_ids)), dtype, rules, w))
        for i, (lid, cache) in enumerate(zip(layer_ids, caches, strict=True)):
            p.extend(decoder_layer(spec, lid, [0], [cache], 1, dtype, rules,
                                   cross_ids=[f"{prefix}cross.{lid.removeprefix(w)}"]))
            if i in ends:
                p.add(stage_send(spec, lid, 1, dtype))
    else:
        prompt = max(1, ctx.src_len)
        p.add(embed(spec, prompt, dtype, rules))
        for i, (lid, cache) in enumerate(zip(layer_ids, caches, strict=True)):
            p.extend(decoder_layer(spec, lid, [0], [cache], prompt, dtype, rules))
            if i in ends:
                p.add(stage_send(spec, lid, prompt, dtype))
    exits = 1 if unshared else ctx.sharing.repeats
    p.extend(lm_head(spec, exits, dtype, rules, prefix=w))
    return p


@lru_cache(maxsize=256)
def _encode(spec: ModelSpec, src: int, layer_ids: tuple[str, ...], dtype: str, rules: KernelRules,
            weights: str = "") -> tuple[Kernel, ...]:
    """A prefill's encoder: the source's embeddings, the encoder layers, the cross K/V of every
    distinct decoder layer in `layer_ids`, and the first decoder token's embedding (the same for
    every sequence with this source length: cached)."""
    p = Program([embed(spec, src, dtype, rules)])
    for i in range(spec.encoder_layers):
        p.extend(encoder_layer(spec, f"{weights}E{i}", src, dtype, rules))
    for lid in layer_ids:  # cross K/V of every distinct decoder layer
        p.add(*linear(f"{lid}.xkv", f"{lid}.xkv", src, spec.d_model, 2 * spec.kv_width, dtype, rules,
                      wfmt=spec.weight_format(dtype), wgroup=spec.weight_group))
    p.add(embed(spec, 1, dtype, rules))
    return tuple(p.kernels)


def memory_footprint(spec: ModelSpec, sharing: Sharing, max_positions: int, src_len: int, dtype: str,
                     unshared: bool = False) -> dict[str, float]:
    """Bytes the model needs resident in one device's memory for one sequence of `max_positions`: the layers'
    weights as stored (`weight_dtype`, scales included), the embeddings (one table when tied to the LM
    head), the KV cache as stored (`kv_dtype`, n_kv_heads x head_dim per position). A tensor-parallel
    shard holds its slices (`shard`); over pipeline stages the busiest device holds its stage's layers and
    caches (a pp-th, rounded up) and one embedding table (the first stage's, or the last stage's head),
    the encoder with the first; over repeats every device holds the U shared layers, the head and the
    caches of its repeat (device 0 the embedding too)."""
    b = BYTES_PER_ELEMENT[dtype]
    kv_b = BYTES_PER_ELEMENT[spec.kv_format(dtype)]
    layers = sharing.depth if unshared else sharing.unique
    depth, pp = sharing.depth, spec.pp
    kv_layers = depth
    if pp > 1:
        kv_layers = -(-depth // pp)
        if unshared or not spec.pp_repeats:
            layers = -(-layers // pp)
    weights = layers * spec.layer_weight_bytes(dtype)
    # an encoder layer is a decoder layer without cross-attention
    encoder = spec.encoder_layers * spec.layer_weight_bytes(dtype, cross=False) if spec.cross_attention_len else 0
    # input embedding and LM head (a tensor-parallel shard: the embedding whole, the head its slice)
    head = spec.head_weight_elements() * b
    embeddings = (1 if spec.tied_embeddings else 2) * head if spec.tp == 1 else \
        spec.tp * head + (0 if spec.tied_embeddings else head)
    if pp > 1 and (unshared or not spec.pp_repeats):  # one end of the pipeline: the embedding or the head
        embeddings = spec.tp * head
    kv = kv_layers * max_positions * 2 * spec.kv_width * kv_b
    cross = layers * src_len * 2 * spec.kv_width * kv_b if spec.cross_attention_len else 0
    return {"weights": float(weights + encoder), "embeddings": float(embeddings), "kv": float(kv),
            "cross_kv": float(cross), "total": float(weights + encoder + embeddings + kv + cross)}
