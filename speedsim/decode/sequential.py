"""Prefill and sequential greedy decoding with a per-(layer, repeat) KV cache.

Position numbering (shared with `speedsim.pipeline`): generated position t is computed by
feeding the output of position t - 1 at decoder sequence position `offset + t`. Position 0
is computed by the prefill: for a decoder-only model it is the prompt's last token
(`offset = len(prompt) - 1`), for an encoder-decoder model the BOS token (`offset = 0`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from speedsim.decode.cache import KVCache
from speedsim.errors import UserError
from speedsim.model import SharedDecoder


@dataclass
class DecodeState:
    """Everything one sequence's decoding carries between steps."""

    cache: KVCache  # per-(layer, repeat) keys and values
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None  # per unique layer, encoder K/V (1, H, S, D); None if decoder-only
    offset: int  # decoder sequence position of generated position 0
    first_exits: list[int]  # exit predictions of position 0 (from the prefill), R of them
    max_new_tokens: int  # tokens that fit: the caller's cap, clamped so offset + max_new_tokens <= max_len
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # pipeline only: residual (C,) of each in-flight position


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """No dropout, no autograd; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def as_ids(src_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """A 1-D LongTensor of token ids from a list, a 1-D tensor or a (1, S) tensor."""
    t = torch.as_tensor(src_ids, dtype=torch.long).flatten() if not isinstance(src_ids, torch.Tensor) else src_ids
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise UserError(f"expected a 1-D sequence of token ids, got shape {tuple(t.shape)}", where="src_ids")
    return t.long()


def prefill(model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, max_new_tokens: int) -> DecodeState:
    """Encode the source (or run the prompt) and compute position 0 through all R exits."""
    c = model.config
    src = as_ids(src_ids).to(model.tok_emb.weight.device)
    if max_new_tokens < 0:
        raise UserError(f"must be >= 0, got {max_new_tokens}", where="max_new_tokens")
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= c.vocab_size):
        raise UserError(f"token ids must be in [0, {c.vocab_size})", where="src_ids")
    cross_kv = None
    if c.decoder_only:
        inputs = src if src.numel() else torch.tensor([c.bos_id], device=src.device)  # empty prompt: start from BOS
    else:
        if src.numel() == 0:
            raise UserError("an encoder-decoder model needs a non-empty source", where="src_ids")
        if src.numel() > c.max_len:
            raise UserError(f"source of {src.numel()} tokens exceeds max_len={c.max_len}", where="src_ids")
        cross_kv = model.cross_kv(model.encode(src[None]))  # per layer (1, H, S, D) x 2
        inputs = torch.tensor([c.bos_id], device=src.device)
    P = inputs.numel()
    if P > c.max_len:
        raise UserError(f"prompt of {P} tokens exceeds max_len={c.max_len}", where="src_ids")
    cache = KVCache.for_model(model)
    positions = list(range(P))
    x = model.embed(inputs, torch.arange(P, device=src.device))  # (P, C)
    first_exits = []
    for r in range(c.repeats):
        x = model.group_pass(x, [r] * P, positions, cache, cross_kv)  # (P, C)
        first_exits.append(int(model.exit_logits(x[-1]).argmax()))
    offset = P - 1
    return DecodeState(cache, cross_kv, offset, first_exits, min(max_new_tokens, c.max_len - offset))


def decode_step(model: SharedDecoder, state: DecodeState, token: int, position: int, all_exits: bool = False) -> list[int]:
    """Compute generated `position` from input `token` through all R repeats (one token, full depth).

    Returns the prediction of every exit if `all_exits`, else only the final one (the LM head
    is then applied once, as a plain non-SPEED decoder would).
    """
    R = model.config.repeats
    seq = state.offset + position
    x = model.embed(torch.tensor([token], device=state.cache.k.device), torch.tensor([seq], device=state.cache.k.device))
    preds = []
    for r in range(R):
        x = model.group_pass(x, [r], [seq], state.cache, state.cross_kv)  # (1, C)
        if all_exits or r == R - 1:
            preds.append(int(model.exit_logits(x[0]).argmax()))
    return preds


def _sequential(
    model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, max_new_tokens: int, eos_id: int | None, all_exits: bool
) -> tuple[list[int], list[list[int]], DecodeState | None]:
    """(tokens, exits per position if all_exits, final state) of sequential greedy decoding."""
    if max_new_tokens == 0:
        as_ids(src_ids)
        return [], [], None
    state = prefill(model, src_ids, max_new_tokens)
    exits = [state.first_exits]
    tokens = [state.first_exits[-1]]
    while len(tokens) < state.max_new_tokens and not (eos_id is not None and tokens[-1] == eos_id):
        preds = decode_step(model, state, tokens[-1], len(tokens), all_exits)
        exits.append(preds)
        tokens.append(preds[-1])
    return tokens, exits if all_exits else [], state


def greedy(
    model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """Sequential greedy decoding with a KV cache; returns the new tokens (EOS included if reached).

    For a decoder-only model `src_ids` is the prompt; for an encoder-decoder model it is the
    source and the decoder starts from `config.bos_id`. Decoding stops after `eos_id`, after
    `max_new_tokens` tokens, or when the decoder sequence reaches `config.max_len`.
    """
    with eval_mode(model):
        return _sequential(model, src_ids, max_new_tokens, eos_id, all_exits=False)[0]


def greedy_exits(
    model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, max_new_tokens: int, eos_id: int | None = None
) -> list[list[int]]:
    """Every exit's prediction at every generated position of sequential greedy decoding:
    `exits[t][r]` is exit r's token at position t (the last exit's is the emitted token).

    Equal to `speed(...).exits` (the pipeline's surviving computations are the sequential
    ones), but cheaper to compute.
    """
    with eval_mode(model):
        return _sequential(model, src_ids, max_new_tokens, eos_id, all_exits=True)[1]
