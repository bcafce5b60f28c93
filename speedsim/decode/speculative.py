"""SPEED: speculative pipelined greedy decoding of a parameter-shared decoder.

Every step runs ONE batched pass through the U shared layers over all in-flight tokens,
each at its own repeat and sequence position, each reading and writing its own
(layer, repeat) slot of the KV cache; the shared exit (norm + LM head) is applied to all of
them. The `PipelineController` decides from the exit predictions what to launch, verify,
flush and emit; this module does the tensor work and rolls the KV cache back on flushes.
Greedy output is identical to `greedy` (lossless).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from speedsim.decode.sequential import DecodeState, as_ids, eval_mode, prefill
from speedsim.model import SharedDecoder
from speedsim.pipeline import PipelineController, Policy, Step


@dataclass(frozen=True)
class SpeedDecode:
    """What a SPEED decode produced, as data (an `ExitRecord` that `speedsim.pipeline.replay` reads;
    `speedsim.train.record.trace_of` makes it an `ExitTrace`)."""

    tokens: list[int]  # emitted tokens (EOS included if reached), identical to greedy()
    steps: list[Step]  # the step log (position 0 comes from the prefill and has no step)
    exits: list[list[int]]  # exits[t][r]: exit r's prediction for position t, of its surviving computation
    src_len: int  # source (encoder input or prompt) length in tokens
    repeats: int  # R: exits per position
    eos_id: int | None  # end-of-sequence id if decoding stopped on it, else None (as in an exit trace)


def speculative_step(model: SharedDecoder, state: DecodeState, ctrl: PipelineController) -> Step:
    """Compute one pipeline step: every in-flight token advances one repeat; returns the Step."""
    work = ctrl.work()
    device = state.cache.k.device
    repeats = [r for _, r, _ in work]
    seq = [state.offset + p for p, _, _ in work]
    new = [i for i, r in enumerate(repeats) if r == 0]  # launched this step: embed their input tokens
    emb: Iterator[torch.Tensor] = iter(
        model.embed(
            torch.tensor([work[i][2] for i in new], device=device), torch.tensor([seq[i] for i in new], device=device)
        )
        if new
        else []
    )
    x = torch.stack([next(emb) if r == 0 else state.hidden[p] for p, r, _ in work])  # (N, C)
    x = model.group_pass(x, repeats, seq, state.cache, state.cross_kv)  # (N, C): one batched pass
    preds = model.exit_logits(x).argmax(dim=-1).tolist()  # (N,) exit predictions
    step = ctrl.advance(preds)
    for i, (p, _, _) in enumerate(work):
        state.hidden[p] = x[i]
    for p in (*step.emitted, *step.flushed, *step.discarded):
        state.hidden.pop(p, None)
    gone = (*step.flushed, *step.discarded)
    if gone:
        state.cache.rollback(state.offset + min(gone))  # flushed positions are always a suffix
    return step


def speed(
    model: SharedDecoder,
    src_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    policy: Policy | None = None,
) -> SpeedDecode:
    """SPEED pipelined greedy decoding; same arguments and same tokens as `greedy`.

    `policy` chooses the launch exit, the verify exits and the most tokens in flight
    (default: launch from exit 0, verify at every later exit, up to R in flight).
    """
    src_len, R = int(as_ids(src_ids).numel()), model.config.repeats
    with eval_mode(model):
        if max_new_tokens == 0:
            return SpeedDecode([], [], [], src_len, R, None)
        state = prefill(model, src_ids, max_new_tokens)
        ctrl = PipelineController(R, policy, state.first_exits, state.max_new_tokens, eos_id)
        steps = []
        while not ctrl.done:
            steps.append(speculative_step(model, state, ctrl))
    tokens = list(ctrl.tokens)
    stopped = eos_id if eos_id is not None and tokens and tokens[-1] == eos_id else None
    return SpeedDecode(tokens, steps, [list(row) for row in ctrl.exits], src_len, R, stopped)
