"""A parameter-shared (CYCLE) transformer decoder with an exit after every repeat.

`SharedDecoder` holds `U` distinct pre-norm decoder layers and applies them `R` times in
CYCLE order (layers 0..U-1, then 0..U-1 again, ...): the *same* module objects each time,
so the decoder is `U*R` layers deep but stores `U` layers of weights. After every repeat
the residual stream goes through one shared final norm and one shared LM head: that is
exit `r`. With `encoder_layers > 0` a T5-style bidirectional encoder (unshared layers)
feeds cross-attention in every decoder layer; with `encoder_layers == 0` the model is
decoder-only.

Two ways in:

- `forward(src_ids, tgt_in)`: teacher forcing over whole sequences, logits at every exit,
  `(R, B, T, V)`; used for training and as the full-recompute reference in tests.
- the incremental pieces the decoders in `speedsim.decode` use: `encode` / `cross_kv`
  once per source, `embed` for launched tokens, and `group_pass`, which runs a batch of
  tokens once through the `U` layers, *each token at its own repeat and position*,
  reading and writing that repeat's slot of a KV cache (which slot each token uses is
  planned in `speedsim.model.kv_plan`). Sequential greedy decoding calls it with one token
  per repeat; SPEED's pipeline calls it with every in-flight token at once, so every
  linear layer is one batched matmul over the in-flight tokens.

Simplifications against T5: learned absolute positions instead of relative position
buckets, token embeddings shared by encoder, decoder and (tied) LM head.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from speedsim.model.config import SpeedConfig
from speedsim.model.kv_plan import AttentionPlan, KVCacheLike, TokenBatch, attention_plan


# ------------------------------------------------------------------------------ building blocks
class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale (T5's norm)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused op (x * rsqrt(mean(x^2) + eps) * weight): on a CPU at batch 1 op count is latency
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SelfAttention(nn.Module):
    """Multi-head self-attention, or grouped-query (`n_kv_heads` < `n_heads`: each key/value head serves
    `group` query heads; the cache holds the key/value heads only, expanded for the product)."""

    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.kv_heads = cfg.kv_heads
        self.group = cfg.n_heads // cfg.kv_heads
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (..., H, D), k and v (..., H_kv, D) of x (..., C)."""
        lead, D = x.shape[:-1], self.head_dim
        if self.group == 1:
            return self.qkv(x).view(*lead, 3, self.n_heads, D).unbind(-3)
        q, k, v = self.qkv(x).split([self.n_heads * D, self.kv_heads * D, self.kv_heads * D], dim=-1)
        return q.view(*lead, self.n_heads, D), k.view(*lead, self.kv_heads, D), v.view(*lead, self.kv_heads, D)

    def _expand(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Key/value heads along `dim` repeated for the query heads they serve (no copy without groups)."""
        return t if self.group == 1 else t.repeat_interleave(self.group, dim=dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Whole-sequence attention; `allowed` (B, 1, T, T) is True where a query may see a key."""
        B, T, C = x.shape
        if self.group == 1:
            q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        else:
            q, k, v = (t.transpose(1, 2) for t in self._qkv(x))  # (B, H, T, D), (B, H_kv, T, D) x 2
            k, v = self._expand(k, 1), self._expand(v, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, T, D)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def step(self, x: torch.Tensor, layer: int, plan: AttentionPlan, cache: KVCacheLike) -> torch.Tensor:
        """Cached attention for N tokens, each at its own (repeat, position); x is (N, C).

        Every token first writes its K/V into its repeat's slot, then attends over that slot up
        to its own position. In SPEED's steady state every in-flight token is at a different
        repeat: then all N tokens write with one scatter, read their slots with one gather
        (padded to the longest) and attend in one batched call under a length mask. Tokens that
        share a repeat (a prefill: the whole prompt) are handled per repeat with a causal mask.
        """
        N, C = x.shape
        q, k, v = self._qkv(x)  # (N, H, D), (N, H_kv, D) x 2
        if isinstance(plan, TokenBatch):
            cache.update_tokens(layer, plan.repeats, plan.positions, k, v)
            keys, values = cache.gather(layer, plan.repeats, plan.length)  # (N, H_kv, L, D) each
            y = F.scaled_dot_product_attention(q.unsqueeze(2), self._expand(keys, 1), self._expand(values, 1),
                                               attn_mask=plan.allowed)  # (N, H, 1, D)
            return self.proj(y.reshape(N, C))
        y = torch.empty_like(q)  # (N, H, D)
        for g in plan:
            cache.update(layer, g.repeat, g.positions, k[g.index], v[g.index])
            keys, values = cache.keys_values(layer, g.repeat, g.length)  # (H_kv, L, D) each
            qg = q[g.index].transpose(0, 1).unsqueeze(0)  # (1, H, n, D)
            out = F.scaled_dot_product_attention(qg, self._expand(keys, 0).unsqueeze(0),
                                                 self._expand(values, 0).unsqueeze(0), attn_mask=g.allowed)
            y[g.index] = out[0].transpose(0, 1)  # (n, H, D)
        return self.proj(y.reshape(N, C))


class CrossAttention(nn.Module):
    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the encoder output (B, S, C), each (B, H, S, D)."""
        B, S, _ = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2 x (B, H, S, D)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], allowed: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C) attends to the memory; `allowed` (B, 1, 1, S) masks source padding."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=allowed)  # (B, H, T, D)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def step(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """N tokens (N, C) of one sequence attend to its memory: one batched call, no mask."""
        N, C = x.shape
        q = self.q(x).view(N, self.n_heads, self.head_dim).transpose(0, 1).unsqueeze(0)  # (1, H, N, D)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (1, H, N, D)
        return self.proj(y[0].transpose(0, 1).reshape(N, C))


class FeedForward(nn.Module):
    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self.kind = cfg.ffn
        n_in = 2 * cfg.d_ff if cfg.ffn == "swiglu" else cfg.d_ff  # swiglu: gate and value in one matmul
        self.up = nn.Linear(cfg.d_model, n_in, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.kind == "swiglu":
            gate, val = h.chunk(2, dim=-1)
            h = F.silu(gate) * val
        else:
            h = F.relu(h) if self.kind == "relu" else F.gelu(h)
        return self.drop(self.down(h))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self.ln1, self.attn = RMSNorm(cfg.d_model), SelfAttention(cfg)
        self.ln2, self.ffn = RMSNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.ffn(self.ln2(x))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention (encoder-decoder only), feed-forward."""

    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self.ln1, self.attn = RMSNorm(cfg.d_model), SelfAttention(cfg)
        self.cross = None if cfg.decoder_only else CrossAttention(cfg)
        self.ln2 = None if cfg.decoder_only else RMSNorm(cfg.d_model)
        self.ln3, self.ffn = RMSNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cross_kv: Any, cross_allowed: Any) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        if self.cross is not None and self.ln2 is not None:
            x = x + self.cross(self.ln2(x), cross_kv, cross_allowed)
        return x + self.ffn(self.ln3(x))

    def step(self, x: torch.Tensor, layer: int, plan: AttentionPlan, cache: KVCacheLike, cross_kv: Any) -> torch.Tensor:
        x = x + self.attn.step(self.ln1(x), layer, plan, cache)
        if self.cross is not None and self.ln2 is not None:
            x = x + self.cross.step(self.ln2(x), cross_kv)
        return x + self.ffn(self.ln3(x))


# ------------------------------------------------------------------------------ the model
class SharedDecoder(nn.Module):
    """`U` decoder layers applied `R` times (CYCLE), an exit (shared norm + LM head) after each repeat."""

    def __init__(self, config: SpeedConfig):
        super().__init__()
        self.config = config
        c = config
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(c.seed)
            self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
            self.dec_pos = nn.Embedding(c.max_len, c.d_model)
            self.enc_pos = None if c.decoder_only else nn.Embedding(c.max_len, c.d_model)
            self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
            self.enc_norm = None if c.decoder_only else RMSNorm(c.d_model)
            self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.unique_layers))  # the U shared layers
            self.norm = RMSNorm(c.d_model)  # shared by every exit
            self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)  # shared by every exit
            if c.tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight
            self.drop = nn.Dropout(c.dropout)
            self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        depth = self.config.unique_layers * self.config.repeats + self.config.encoder_layers
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norm scales stay 1
            # Residual-branch outputs scaled down with depth (GPT-2 / nanoGPT).
            scale = 1.0 / math.sqrt(2 * depth) if name.endswith(("proj.weight", "down.weight")) else 1.0
            nn.init.normal_(p, mean=0.0, std=std * scale)

    # -------------------------------------------------------------- teacher forcing
    def forward(
        self,
        src_ids: torch.Tensor | None,
        tgt_in: torch.Tensor,
        src_pad_mask: torch.Tensor | None = None,
        tgt_pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits at every exit under teacher forcing, `(R, B, T, V)`.

        src_ids (B, S) encoder input (None for decoder-only); tgt_in (B, T) decoder input;
        pad masks (bool, True at padding) keep padding keys out of attention.
        """
        c = self.config
        B, T = tgt_in.shape
        if T > c.max_len:
            raise ValueError(f"decoder input of {T} tokens exceeds max_len={c.max_len}")
        memory_kv, cross_allowed = self._encode_for_forward(src_ids, src_pad_mask)
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).tril()  # (T, T)
        allowed = causal[None, None].expand(B, 1, T, T)  # (B, 1, T, T)
        if tgt_pad_mask is not None:
            eye = torch.eye(T, dtype=torch.bool, device=tgt_in.device)
            allowed = allowed & (~tgt_pad_mask[:, None, None, :] | eye)  # a pad query still sees itself: no NaN rows
        x = self.drop(self.tok_emb(tgt_in) + self.dec_pos(torch.arange(T, device=tgt_in.device)))  # (B, T, C)
        exits = []
        for _ in range(c.repeats):
            for u, layer in enumerate(self.layers):  # the same U modules on every repeat
                x = layer(x, allowed, memory_kv[u] if memory_kv else None, cross_allowed)
            exits.append(self.exit_logits(x))
        return torch.stack(exits)  # (R, B, T, V)

    def _encode_for_forward(self, src_ids: torch.Tensor | None, src_pad_mask: torch.Tensor | None) -> tuple[Any, Any]:
        if self.config.decoder_only:
            if src_ids is not None:
                raise ValueError("decoder-only model: pass src_ids=None (the prompt is part of tgt_in)")
            return None, None
        if src_ids is None:
            raise ValueError("encoder-decoder model needs src_ids")
        memory = self.encode(src_ids, src_pad_mask)
        allowed = None if src_pad_mask is None else ~src_pad_mask[:, None, None, :]  # (B, 1, 1, S)
        return self.cross_kv(memory), allowed

    # -------------------------------------------------------------- pieces for incremental decoding
    def encode(self, src_ids: torch.Tensor, src_pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output (B, S, C) of src_ids (B, S)."""
        assert self.enc_pos is not None and self.enc_norm is not None, "decoder-only model has no encoder"
        B, S = src_ids.shape
        if S > self.config.max_len:
            raise ValueError(f"source of {S} tokens exceeds max_len={self.config.max_len}")
        allowed = torch.ones(B, 1, S, S, dtype=torch.bool, device=src_ids.device)  # bidirectional
        if src_pad_mask is not None:
            eye = torch.eye(S, dtype=torch.bool, device=src_ids.device)
            allowed = allowed & (~src_pad_mask[:, None, None, :] | eye)
        x = self.drop(self.tok_emb(src_ids) + self.enc_pos(torch.arange(S, device=src_ids.device)))  # (B, S, C)
        for layer in self.encoder:
            x = layer(x, allowed)
        return self.enc_norm(x)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per unique layer, K and V of the memory (B, H, S, D): the same for every repeat."""
        out = []
        for layer in self.decoder_layers:
            assert layer.cross is not None, "decoder-only model has no cross-attention"
            out.append(layer.cross.memory_kv(memory))
        return out

    @property
    def decoder_layers(self) -> list[DecoderLayer]:
        """The U shared decoder layers, typed (the ModuleList itself; no copy)."""
        return cast(list[DecoderLayer], self.layers)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Decoder input vectors (N, C) of tokens (N,) at sequence positions (N,)."""
        return self.tok_emb(tokens) + self.dec_pos(positions)

    def group_pass(
        self,
        x: torch.Tensor,
        repeats: list[int],
        positions: list[int],
        cache: KVCacheLike,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """One pass of N tokens (N, C) through the U shared layers, token i at repeat
        `repeats[i]` and sequence position `positions[i]`; returns the new residual (N, C).

        Self-attention of token i reads and writes KV-cache slot (layer, repeats[i]); all
        linear layers run once over the N tokens (the weight reads SPEED amortises).
        """
        plan = attention_plan(repeats, positions, x.device)
        for u, layer in enumerate(self.decoder_layers):
            x = layer.step(x, u, plan, cache, cross_kv[u] if cross_kv is not None else None)
        return x

    def exit_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) of the shared exit (final norm + LM head) applied to residuals (..., C)."""
        return self.lm_head(self.norm(x))
