"""Greedy speculative decoding of a `SharedDecoder`: self-speculation from an early exit, and a draft model.

Both are lossless: their tokens are `greedy`'s (tests check it for random and trained models). The
iteration (module docstring of `speedsim.pipeline.speculation`): draft `g` tokens, verify the g + 1
positions in one pass of the target, accept the longest matching prefix plus the target's own token,
roll the KV cache back past it.

- `self_speculative(model, ..., draft_exit=e, gamma=G)` drafts with the first e + 1 repeats of the
  shared layers and exit e, and verifies with the full depth. What the draft computed is reused, as
  LayerSkip does: the verify pass does not recompute repeats 0..e of the drafted positions (their KV
  entries at those repeats are already in the cache, written by the draft from the same inputs, and
  their residuals after repeat e are kept); only the last draft token, which no draft step consumed,
  runs through repeats 0..e before all g + 1 positions run through repeats e+1..R-1 together.
  Rejected positions' entries are rolled back at every repeat.
- `draft_speculative(target, draft, ..., gamma=G)` drafts with a separate model (its own encoder
  and KV cache, the same vocabulary) and verifies with the target's full depth. The draft model
  catches up on the committed tokens it has not consumed (one, or two after a fully accepted
  window) in its first draft step of an iteration; both caches roll back past the accepted prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from speedsim.decode.sequential import DecodeState, as_ids, eval_mode, prefill
from speedsim.errors import UserError
from speedsim.model import SharedDecoder
from speedsim.pipeline.speculation import Iteration


@dataclass(frozen=True)
class SpecDecode:
    """What a speculative decode produced: its tokens (greedy's) and its iterations."""

    tokens: list[int]            # emitted tokens (EOS included if reached), identical to greedy()
    iterations: list[Iteration]  # per iteration: drafts proposed and tokens emitted
    src_len: int
    eos_id: int | None           # end-of-sequence id if decoding stopped on it, else None


def _check_gamma(gamma: int, max_len: int) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise UserError(f"must be an integer >= 1, got {gamma!r}", where="gamma")
    if gamma >= max_len:
        raise UserError(f"a window of {gamma} draft tokens is past the model's {max_len} positions", where="gamma")


def _run(state: DecodeState, max_new: int, eos_id: int | None, gamma: int, iteration,
         accepted=None) -> tuple[list[int], list[Iteration]]:
    """The iteration loop: `iteration(n, g, tokens)` drafts g tokens after the n committed `tokens` and
    verifies them, returning (drafts, the target's tokens at positions n..n+g); `accepted(n, g, k)` is told
    how many drafts the verify accepted (a draft model rolls its own cache back)."""
    tokens = [state.first_exits[-1]]
    its: list[Iteration] = []
    while len(tokens) < max_new and not (eos_id is not None and tokens[-1] == eos_id):
        n = len(tokens)
        g = min(gamma, max_new - n - 1)
        drafts, verified = iteration(n, g, tokens)
        k = 0
        while k < g and drafts[k] == verified[k]:
            k += 1
        if accepted is not None:
            accepted(n, g, k)
        new = verified[: k + 1]
        if eos_id is not None and eos_id in new:
            new = new[: new.index(eos_id) + 1]
        its.append(Iteration(g, len(new), rejected=k < g and len(new) == k + 1))
        tokens.extend(new)
        state.cache.rollback(state.offset + n + k + 1)  # keep positions n..n+k: their inputs were right
    return tokens, its


def _through(model: SharedDecoder, state: DecodeState, x: torch.Tensor, positions: list[int],
             repeats: range) -> torch.Tensor:
    """Residuals (N, C) of N tokens at sequence `positions` after `repeats` of the shared layers
    (tokens of one repeat at a time, causal among themselves)."""
    for r in repeats:
        x = model.group_pass(x, [r] * len(positions), positions, state.cache, state.cross_kv)
    return x


def _embed(model: SharedDecoder, state: DecodeState, tokens: list[int], positions: list[int]) -> torch.Tensor:
    device = state.cache.k.device
    return model.embed(torch.tensor(tokens, device=device), torch.tensor(positions, device=device))


def self_speculative(model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                     draft_exit: int, gamma: int, eos_id: int | None = None) -> SpecDecode:
    """Self-speculative greedy decoding: draft `gamma` tokens with exit `draft_exit` (repeats
    0..draft_exit), verify with the full depth; same arguments and tokens as `greedy`."""
    R = model.config.repeats
    _check_gamma(gamma, model.config.max_len)
    if isinstance(draft_exit, bool) or not isinstance(draft_exit, int) or not 0 <= draft_exit < R - 1:
        raise UserError(f"must be an exit before the last (0..{R - 2}) of a model with {R} exits, got {draft_exit!r}"
                        if R > 1 else "a model with one exit has no earlier exit to draft from", where="draft_exit")
    src_len = int(as_ids(src_ids).numel())
    with eval_mode(model):
        if max_new_tokens == 0:
            return SpecDecode([], [], src_len, None)
        state = prefill(model, src_ids, max_new_tokens)
        early, late = range(draft_exit + 1), range(draft_exit + 1, R)

        def iteration(n: int, g: int, tokens: list[int]) -> tuple[list[int], list[int]]:
            first = state.offset + n
            inputs, residuals = [tokens[-1]], []
            for j in range(g):  # draft step j: one token through repeats 0..e, then exit e
                x = _through(model, state, _embed(model, state, [inputs[j]], [first + j]), [first + j], early)
                residuals.append(x[0])
                inputs.append(int(model.exit_logits(x[0]).argmax()))
            # verify: the last draft (no draft step consumed it) through repeats 0..e, then all g + 1
            # positions through the later repeats with the drafts' residuals reused
            x = _through(model, state, _embed(model, state, [inputs[g]], [first + g]), [first + g], early)
            x = torch.stack([*residuals, x[0]])
            x = _through(model, state, x, list(range(first, first + g + 1)), late)
            return inputs[1:], model.exit_logits(x).argmax(dim=-1).tolist()

        tokens, its = _run(state, state.max_new_tokens, eos_id, gamma, iteration)
    stopped = eos_id if eos_id is not None and tokens and tokens[-1] == eos_id else None
    return SpecDecode(tokens, its, src_len, stopped)


def check_draft_model(target: SharedDecoder, draft: SharedDecoder) -> None:
    """A draft model must share the target's vocabulary and kind (decoder-only or encoder-decoder)."""
    t, d = target.config, draft.config
    if d.vocab_size != t.vocab_size:
        raise UserError(f"the draft model's vocabulary ({d.vocab_size}) is not the target's ({t.vocab_size})",
                        where="draft")
    if d.decoder_only != t.decoder_only or d.bos_id != t.bos_id:
        raise UserError("the draft model must be of the target's kind (decoder-only or encoder-decoder) and BOS",
                        where="draft")
    if d.max_len < t.max_len:  # it could not draft (or even read a source) wherever the target decodes
        raise UserError(f"the draft model holds {d.max_len} positions, fewer than the target's {t.max_len}",
                        where="draft")


def draft_speculative(target: SharedDecoder, draft: SharedDecoder, src_ids: Sequence[int] | torch.Tensor,
                      max_new_tokens: int, gamma: int, eos_id: int | None = None) -> SpecDecode:
    """Draft-model speculative greedy decoding: `draft` proposes `gamma` tokens greedily, `target`
    verifies them with its full depth; same arguments and tokens as `greedy(target, ...)`."""
    _check_gamma(gamma, target.config.max_len)
    check_draft_model(target, draft)
    src_len = int(as_ids(src_ids).numel())
    R, Rd = target.config.repeats, draft.config.repeats
    with eval_mode(target), eval_mode(draft):
        if max_new_tokens == 0:
            return SpecDecode([], [], src_len, None)
        state = prefill(target, src_ids, max_new_tokens)
        dstate = prefill(draft, src_ids, max_new_tokens)
        cap = state.max_new_tokens  # (the draft holds at least the target's positions: check_draft_model)
        done = [1]  # generated positions whose inputs the draft's cache holds (position 0: the prefill's)

        def iteration(n: int, g: int, tokens: list[int]) -> tuple[list[int], list[int]]:
            drafts: list[int] = []
            if g:
                # catch up on the committed inputs the draft has not consumed, then draft one token a step
                pending = list(range(done[0], n + 1))  # position p's input is committed token p - 1
                inputs = [tokens[p - 1] for p in pending]
                seq = [dstate.offset + p for p in pending]
                x = _through(draft, dstate, _embed(draft, dstate, inputs, seq), seq, range(Rd))
                drafts.append(int(draft.exit_logits(x[-1]).argmax()))
                for j in range(1, g):
                    p = dstate.offset + n + j
                    x = _through(draft, dstate, _embed(draft, dstate, [drafts[-1]], [p]), [p], range(Rd))
                    drafts.append(int(draft.exit_logits(x[0]).argmax()))
            seq = list(range(state.offset + n, state.offset + n + g + 1))
            x = _through(target, state, _embed(target, state, [tokens[-1], *drafts], seq), seq, range(R))
            return drafts, target.exit_logits(x).argmax(dim=-1).tolist()

        def accepted(n: int, g: int, k: int) -> None:
            if g:  # the draft holds the inputs of positions n..n+g-1; those up to n+k are right
                done[0] = n + min(k, g - 1) + 1
                dstate.cache.rollback(dstate.offset + done[0])

        tokens, its = _run(state, cap, eos_id, gamma, iteration, accepted)
    stopped = eos_id if eos_id is not None and tokens and tokens[-1] == eos_id else None
    return SpecDecode(tokens, its, src_len, stopped)


def predictions_on_path(model: SharedDecoder, src_ids: Sequence[int] | torch.Tensor, tokens: Sequence[int]) -> list[int]:
    """`model`'s greedy prediction (final exit) of every position of `tokens`, another decoder's output,
    given that decoder's tokens before it (teacher forcing on its path): position 0 from the prefill,
    the rest in one pass per repeat. A draft model's matches on the target's path (`draft_matches`)."""
    if not tokens:
        return []
    with eval_mode(model):
        state = prefill(model, src_ids, len(tokens))
        if state.max_new_tokens < len(tokens):
            raise UserError(f"{len(tokens)} tokens do not fit the model's {model.config.max_len} positions",
                            where="draft")
        preds = [state.first_exits[-1]]
        if len(tokens) > 1:
            seq = [state.offset + t for t in range(1, len(tokens))]
            x = _through(model, state, _embed(model, state, list(tokens[:-1]), seq), seq, range(model.config.repeats))
            preds += model.exit_logits(x).argmax(dim=-1).tolist()
    return preds
