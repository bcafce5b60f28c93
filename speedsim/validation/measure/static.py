"""Greedy and SPEED decoding over static buffers, each step kind replayable as a CUDA graph.

A production decoder (gpt-fast's habit) keeps every tensor a step touches at a fixed address,
so the step can be captured once and replayed: a preallocated KV cache, preallocated hidden
states, and small index tensors (token ids, KV slots, positions) that the host fills before
each replay. The host round trip stays in: after every step its exit predictions are copied to
the host (`tolist()`), the controller (`speedsim.pipeline.PipelineController`, the same one the
functional decoder uses) decides, and the next step's indices are copied in.

The prefill (encoder and position 0) is the functional decoder's own (`speedsim.decode.prefill`,
eager); its KV entries and cross K/V are then copied into the static buffers.

Differences from the functional decoder (`speedsim.decode`), none of which changes a token:

- attention reads the KV cache up to a length rounded up to `bucket` positions, masking what
  lies beyond each token's position (one graph per length bucket, not per length);
- nothing is rolled back on a flush: a flushed token's KV entries and hidden states sit past
  the positions every surviving token may read, and are overwritten before they are read
  (each token writes its own K/V before it attends);
- hidden states are kept per (repeat, position), so a step only reads what earlier steps wrote
  and can be re-run (graph capture runs it several times);
- a SPEED step lists its tokens by repeat; when the repeats are consecutive (the steady state)
  attention reads the slots as one slice, otherwise through an index gather.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F

from speedsim.decode import DecodeState, prefill
from speedsim.model import SharedDecoder
from speedsim.model.model import DecoderLayer
from speedsim.pipeline import PipelineController
from speedsim.validation.measure.timing import capture

BUCKET = 64  # KV positions per attention-length bucket (one graph per bucket and step kind)

Cross = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # K, V (B, H, S, D) and a mask (B, 1, 1, S)


def layer_step(layer: DecoderLayer, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               slots: torch.Tensor, pos: torch.Tensor, read: slice | torch.Tensor, allowed: torch.Tensor,
               cross: Cross | None) -> torch.Tensor:
    """One decoder layer for T tokens x (T, C) over a static KV cache (S, H, Lc, D) of this layer.

    Token i writes its K/V at (slots[i], pos[i]), then attends over slot `read[i]` (a slice of
    consecutive slots, or an index tensor) up to the mask `allowed` (T, 1, 1, L). Cross-attention:
    the T tokens are B sequences x T/B tokens (sequence-major), each sequence with its own K/V.
    The same arithmetic as `DecoderLayer.step` of `speedsim.model`.
    """
    T, C = x.shape
    H, D = layer.attn.n_heads, layer.attn.head_dim
    q, k, v = layer.attn.qkv(layer.ln1(x)).view(T, 3, H, D).unbind(1)  # 3 x (T, H, D)
    k_cache[slots, :, pos] = k  # (T, H, D) scattered into (S, H, Lc, D)
    v_cache[slots, :, pos] = v
    length = allowed.shape[-1]
    if isinstance(read, slice):
        keys, values = k_cache[read, :, :length], v_cache[read, :, :length]  # (T, H, L, D) views
    else:
        keys, values = k_cache[:, :, :length].index_select(0, read), v_cache[:, :, :length].index_select(0, read)
    y = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=allowed)  # (T, H, 1, D)
    x = x + layer.attn.proj(y.reshape(T, C))
    if layer.cross is not None:
        assert cross is not None and layer.ln2 is not None
        ck, cv, mask = cross
        B = ck.shape[0]
        qc = layer.cross.q(layer.ln2(x)).view(B, T // B, H, D).transpose(1, 2)  # (B, H, T/B, D)
        y = F.scaled_dot_product_attention(qc, ck, cv, attn_mask=mask)  # (B, H, T/B, D)
        x = x + layer.cross.proj(y.transpose(1, 2).reshape(T, C))
    return x + layer.ffn(layer.ln3(x))


def decoder_layers(model: SharedDecoder) -> list[DecoderLayer]:
    """The model's U shared layers, typed."""
    return [cast(DecoderLayer, layer) for layer in model.layers]


@dataclass
class _Step:
    """One captured (or eager) step kind: fill `inputs`, call `run`, read `outputs`."""

    inputs: torch.Tensor  # (3, T) long: token ids, KV slots (= repeats), decoder positions
    outputs: torch.Tensor  # (T,) long: exit predictions
    run: Callable[[], object]


@dataclass
class DecodeRun:
    """What one whole decode did."""

    tokens: list[int]
    exits: list[list[int]]  # SPEED: exits of every emitted position; greedy: empty
    steps: int
    host_s: float  # host time between a step's predictions arriving and the next step's launch
    prefill_s: float  # the prefill and the copy of its state into the static buffers, synchronised
    replay_s: float = 0.0  # device time of the steps (graph replays; eager: the steps' ops), if timed


@dataclass
class StaticDecoder:
    """Greedy and SPEED decoding of `model` over static buffers; CUDA graphs if `graphs`."""

    model: SharedDecoder
    src_len: int  # longest source: cross K/V buffers hold this many positions
    kv_len: int  # KV-cache positions (decoder offset + new tokens + 1, rounded up to `bucket`)
    graphs: bool
    masked_cross: bool = False  # sources of several lengths: mask the cross K/V padding
    bucket: int = BUCKET
    captures: int = 0  # graphs captured so far
    time_replays: bool = False  # time each step's device work (CUDA events: a pass of its own, not the timed ones)
    _replay_s: float = 0.0
    _steps: dict[tuple, _Step] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, p = self.model.config, next(self.model.parameters())
        dev, dt = p.device, p.dtype
        shape = (c.unique_layers, c.repeats, c.n_heads, self.kv_len, c.head_dim)
        self.k = torch.zeros(shape, device=dev, dtype=dt)  # (U, R, H, Lc, D)
        self.v = torch.zeros(shape, device=dev, dtype=dt)
        self.hidden = torch.zeros(c.repeats * self.kv_len, c.d_model, device=dev, dtype=dt)  # (R*Lc, C)
        self.arange = torch.arange(self.kv_len, device=dev)
        self.slot = [torch.tensor([r], device=dev) for r in range(c.repeats)]  # greedy's fixed slot per repeat
        self.cross: list[Cross] | None = None
        if not c.decoder_only:
            kv = (1, c.n_heads, self.src_len, c.head_dim)
            mask = torch.zeros(1, 1, 1, self.src_len, dtype=torch.bool, device=dev) if self.masked_cross else None
            self.cross = [(torch.zeros(kv, device=dev, dtype=dt), torch.zeros(kv, device=dev, dtype=dt), mask)
                          for _ in range(c.unique_layers)]

    # -------------------------------------------------------------- state
    def load(self, state: DecodeState) -> None:
        """Copy a prefill's KV entries and cross K/V into the static buffers."""
        P = state.offset + 1
        if P + state.max_new_tokens > self.kv_len:
            raise ValueError(f"{P + state.max_new_tokens} decoder positions exceed kv_len={self.kv_len}")
        self.k[..., :P, :].copy_(state.cache.k[..., :P, :])
        self.v[..., :P, :].copy_(state.cache.v[..., :P, :])
        if self.cross is not None:
            assert state.cross_kv is not None
            for (ck, cv, mask), (sk, sv) in zip(self.cross, state.cross_kv, strict=True):
                S = sk.shape[2]
                ck[:, :, :S].copy_(sk)
                cv[:, :, :S].copy_(sv)
                if mask is not None:
                    mask.zero_()
                    mask[..., :S] = True
                elif S != self.src_len:
                    raise ValueError(f"source of {S} tokens, buffers hold {self.src_len} (use masked_cross)")

    def _prefill(self, src: Sequence[int], max_new_tokens: int) -> tuple[DecodeState, float]:
        """The functional decoder's prefill, loaded into the buffers; (state, seconds it took)."""
        t = time.perf_counter()
        state = prefill(self.model, src, max_new_tokens)
        self.load(state)
        if self.k.is_cuda:
            torch.cuda.synchronize()
        return state, time.perf_counter() - t

    def _length(self, last: int) -> int:
        """Keys to read for tokens up to position `last`: rounded up to a bucket."""
        return min(self.kv_len, -(-(last + 1) // self.bucket) * self.bucket)

    # -------------------------------------------------------------- step kinds
    def _greedy_fn(self, inputs: torch.Tensor, outputs: torch.Tensor, length: int) -> Callable[[], None]:
        m, layers = self.model, decoder_layers(self.model)

        def step() -> None:
            tok, pos = inputs[0], inputs[2]
            x = m.embed(tok, pos)  # (1, C)
            allowed = (self.arange[:length][None, :] <= pos[:, None])[:, None, None, :]  # (1, 1, 1, L)
            for r in range(m.config.repeats):
                for u, layer in enumerate(layers):
                    x = layer_step(layer, x, self.k[u], self.v[u], self.slot[r], pos, slice(r, r + 1), allowed,
                                   self.cross[u] if self.cross else None)
            outputs.copy_(m.exit_logits(x).argmax(-1))  # only the final exit, as a plain decoder
        return step

    def _speed_fn(self, inputs: torch.Tensor, outputs: torch.Tensor, repeats: tuple[int, ...],
                  length: int) -> Callable[[], None]:
        m, layers, Lc = self.model, decoder_layers(self.model), self.kv_len
        lo = repeats[0]
        read: slice | None = slice(lo, lo + len(repeats)) if repeats == tuple(range(lo, lo + len(repeats))) else None

        def step() -> None:
            tok, slots, pos = inputs[0], inputs[1], inputs[2]
            new = (slots == 0)[:, None]
            x = torch.where(new, m.embed(tok, pos), self.hidden[(slots - 1).clamp(min=0) * Lc + pos])  # (T, C)
            allowed = (self.arange[:length][None, :] <= pos[:, None])[:, None, None, :]  # (T, 1, 1, L)
            for u, layer in enumerate(layers):
                x = layer_step(layer, x, self.k[u], self.v[u], slots, pos, read if read else slots, allowed,
                               self.cross[u] if self.cross else None)
            self.hidden[slots * Lc + pos] = x  # the state after this repeat, read by the next step
            outputs.copy_(m.exit_logits(x).argmax(-1))  # every in-flight token's exit prediction
        return step

    def _run(self, key: tuple, ids: torch.Tensor) -> list[int]:
        """Fill the step's inputs with `ids` (3, T), run it (capturing it first if new), return its outputs."""
        step = self._steps.get(key)
        if step is None:
            dev = self.k.device
            inputs = torch.zeros(ids.shape, dtype=torch.long, device=dev)
            outputs = torch.zeros(ids.shape[1], dtype=torch.long, device=dev)
            inputs.copy_(ids)  # capture runs the step: with the real indices, re-running it changes nothing
            fn = self._greedy_fn(inputs, outputs, key[2]) if key[0] == "greedy" else \
                self._speed_fn(inputs, outputs, key[1], key[2])
            run = capture(fn) if self.graphs else fn
            self.captures += self.graphs
            step = self._steps[key] = _Step(inputs, outputs, run)
        step.inputs.copy_(ids)
        if not self.time_replays:
            step.run()
            return step.outputs.tolist()  # device-to-host copy and synchronisation: the host round trip
        if self.k.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step.run()
            end.record()
            out = step.outputs.tolist()
            self._replay_s += start.elapsed_time(end) * 1e-3
            return out
        t = time.perf_counter()
        step.run()
        self._replay_s += time.perf_counter() - t
        return step.outputs.tolist()

    # -------------------------------------------------------------- whole decodes
    def greedy(self, src: Sequence[int], max_new_tokens: int, eos_id: int | None) -> DecodeRun:
        """Sequential greedy decoding: one step per token through all R repeats."""
        state, prefill_s = self._prefill(src, max_new_tokens)
        self._replay_s = 0.0
        tokens, steps, host = [state.first_exits[-1]], 0, 0.0
        t = time.perf_counter()
        while len(tokens) < state.max_new_tokens and not (eos_id is not None and tokens[-1] == eos_id):
            pos = state.offset + len(tokens)
            ids = torch.tensor([[tokens[-1]], [0], [pos]])
            host += time.perf_counter() - t
            pred = self._run(("greedy", (), self._length(pos)), ids)[0]
            t = time.perf_counter()
            tokens.append(pred)
            steps += 1
        return DecodeRun(tokens, [], steps, host, prefill_s, self._replay_s)

    def speed(self, src: Sequence[int], max_new_tokens: int, eos_id: int | None) -> DecodeRun:
        """SPEED: one step per pipeline step; the controller decides between steps, on the host."""
        state, prefill_s = self._prefill(src, max_new_tokens)
        self._replay_s = 0.0
        ctrl = PipelineController(self.model.config.repeats, None, state.first_exits, state.max_new_tokens, eos_id)
        steps, host = 0, 0.0
        t = time.perf_counter()
        while not ctrl.done:
            work = ctrl.work()  # (position, repeat, input token), oldest first
            order = sorted(range(len(work)), key=lambda i: work[i][1])
            repeats = tuple(work[i][1] for i in order)
            if len(set(repeats)) != len(repeats):
                raise RuntimeError(f"two in-flight tokens at one repeat: {work}")
            positions = [state.offset + work[i][0] for i in order]
            ids = torch.tensor([[work[i][2] for i in order], list(repeats), positions])
            host += time.perf_counter() - t
            out = self._run(("speed", repeats, self._length(max(positions))), ids)
            t = time.perf_counter()
            preds = [0] * len(work)
            for j, i in enumerate(order):
                preds[i] = out[j]
            ctrl.advance(preds)
            steps += 1
        return DecodeRun(list(ctrl.tokens), [list(e) for e in ctrl.exits], steps, host, prefill_s, self._replay_s)
