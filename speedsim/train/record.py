"""Recording real exit traces: decode a split with SPEED from a trained checkpoint.

The decoders (`speedsim.decode`) return plain data; the `ExitTrace` records are built here.
Besides the traces, `record_traces` measures what the model's quality report needs on the
same examples: teacher-forced loss (nats/token), ROUGE-L, distinct outputs per 100 inputs,
mean output length, and from the traces the first-exit miss rate, the distribution of the
exit at which each token's prediction settles, and wasted token passes per emitted token.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speedsim.data import SPLITS, special_ids
from speedsim.decode import SpeedDecode, speed
from speedsim.errors import UserError
from speedsim.trace import ExitTrace, settle_exit, trace_stats
from speedsim.train.batches import prepare_data
from speedsim.train.checkpoint import load_model
from speedsim.train.config import task_label
from speedsim.train.evaluate import example_batches, exit_losses, output_stats, rouge_l


def sample_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """Up to `limit` indices of `n`, a seeded uniform sample kept in corpus order.

    The corpus is ordered by module, so the first `limit` examples would come from a few
    modules only.
    """
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:limit].tolist())


def exit_trace(exits: list[list[int]], src_len: int, repeats: int, eos_id: int | None, seq_id: str, model: str | None) -> ExitTrace:
    """The trace record of one decode; `eos_id` is kept only if decoding stopped on it."""
    stopped = eos_id is not None and bool(exits) and exits[-1][-1] == eos_id
    return ExitTrace(seq_id=seq_id, src_len=src_len, repeats=repeats, exits=exits,
                     eos_id=eos_id if stopped else None, model=model)


def trace_of(result: SpeedDecode, seq_id: str = "0", model: str | None = None) -> ExitTrace:
    """The exit trace of a SPEED decode (`speedsim.decode.speed`), labelled `seq_id` and `model`."""
    return exit_trace(result.exits, result.src_len, result.repeats, result.eos_id, seq_id, model)


def settle_distribution(traces: Sequence[ExitTrace]) -> list[float]:
    """Fraction of emitted tokens whose prediction settles at each exit r (the smallest r from
    which every later exit agrees with the final one); entry 0 is 1 - first-exit miss rate."""
    R = traces[0].repeats
    counts = Counter(settle_exit(row) for t in traces for row in t.exits)
    total = max(sum(counts.values()), 1)
    return [counts.get(r, 0) / total for r in range(R)]


def trace_metrics(traces: Sequence[ExitTrace]) -> dict[str, Any]:
    """`speedsim.trace.trace_stats` plus the settle-exit distribution and wasted passes per token."""
    stats = trace_stats(traces)
    tokens = max(stats["tokens"], 1)
    stats["settle_exit_distribution"] = settle_distribution(traces)
    if "wasted_passes" in stats:
        stats["wasted_passes_per_token"] = stats["wasted_passes"] / tokens
    return stats


def record_traces(
    checkpoint: Path | str,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    where: str | None = "--checkpoint",
) -> tuple[list[ExitTrace], dict[str, Any]]:
    """SPEED-decode (a seeded sample of up to `limit` examples of) `split`; returns the traces
    and the quality metrics of those decodes (SPEED is lossless: its tokens are greedy's).

    `where` names where `checkpoint` came from (see `load_model`: weights that are not finite are
    refused there). A model whose loss on the split is still not finite (finite weights whose
    activations overflow) decodes garbage: a `UserError` naming the checkpoint, not traces."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (expected {', '.join(SPLITS)})", where="--split")
    if limit is not None and limit < 1:
        raise UserError("must be >= 1", where="--limit")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise UserError("must be >= 1", where="--max-new-tokens")
    model, tok, cfg = load_model(checkpoint, where)
    _, enc = prepare_data(cfg, tok)
    items = [enc[split][i] for i in sample_indices(len(enc[split]), limit)]
    if not items:
        raise UserError(f"the {split} split has no examples", where="--split")
    # first: a model that is garbage fails before its decodes
    loss = exit_losses(model, example_batches(items, special_ids(tok)["pad"], cfg.decoder_only, cfg.eval.batch_size))
    if not all(math.isfinite(x) for x in loss["val_loss_per_exit"]):
        raise UserError(f"the model's loss on the {split} split is not finite (its activations overflow): its "
                        "decodes would be garbage", where=str(checkpoint))
    eos = special_ids(tok)["eos"]
    n_new = cfg.eval.max_new_tokens if max_new_tokens is None else max_new_tokens  # 0 was refused above
    name = f"{cfg.name} ({task_label(cfg)})"
    traces, texts, ids = [], [], []
    with torch.no_grad():
        for it in tqdm(items, desc=f"trace {cfg.name}", disable=not progress, unit="seq"):
            res = speed(model, torch.tensor(it.src, dtype=torch.long), n_new, eos_id=eos)
            traces.append(trace_of(res, it.id, name))
            ids.append(res.tokens)
            texts.append(tok.decode(list(res.tokens), skip_special_tokens=True))
    quality: dict[str, Any] = {"split": split, "examples": len(items), "max_new_tokens": n_new,
                               "rougeL": rouge_l(texts, [it.reference for it in items]),
                               "loss": loss["val_loss"], "loss_per_exit": loss["val_loss_per_exit"]}
    quality.update(output_stats(texts, ids, eos))
    return traces, quality


def record_draft_traces(checkpoint: Path | str, draft_checkpoint: Path | str, traces: Sequence[ExitTrace],
                        split: str = "test", limit: int | None = None, progress: bool = True,
                        where: str | None = "--checkpoint",
                        draft_where: str | None = "--draft-checkpoint") -> tuple[list[ExitTrace], dict[str, Any]]:
    """The draft model's greedy prediction of every position of the target's `traces` (the target's
    `record_traces` of the same split and limit), given the target's tokens before it: one trace per
    sequence with two "exits", `exits[t] = [the draft's prediction of position t, the target's token]`, so
    that it reads as an exit trace whose exit 0 is the draft: whether exit 0 equals the emitted token is
    whether a speculative decode accepts the draft there (`speedsim.pipeline.speculation`).

    The draft must share the target's tokenizer (a `UserError` at `draft_where` otherwise). Returns the
    traces and the acceptance along the path: the fraction of positions after the first whose draft
    matches (`path_acceptance`)."""
    from speedsim.decode import predictions_on_path
    from speedsim.decode.drafting import check_draft_model
    from speedsim.pipeline.speculation import draft_matches

    target, tok, cfg = load_model(checkpoint, where)
    draft, dtok, dcfg = load_model(draft_checkpoint, draft_where)
    if dtok.to_str() != tok.to_str():
        raise UserError("the draft model's tokenizer is not the target's: its predictions cannot be compared "
                        "token for token", where=draft_where)
    try:
        check_draft_model(target, draft)
    except UserError as err:
        raise UserError(_message(err), where=draft_where) from None
    _, enc = prepare_data(cfg, tok)
    items = {it.id: it for it in (enc[split][i] for i in sample_indices(len(enc[split]), limit))}
    out, matched, judged = [], 0, 0
    name = f"draft {dcfg.name} on the path of {traces[0].model if traces else cfg.name}"
    with torch.no_grad():
        for t in tqdm(traces, desc=f"draft {dcfg.name}", disable=not progress, unit="seq"):
            src = torch.tensor(items[t.seq_id].src, dtype=torch.long)
            try:
                preds = predictions_on_path(draft, src, t.tokens)
            except UserError as err:  # the target's decode is longer than the draft's positions
                raise UserError(_message(err), where=draft_where) from None
            m = draft_matches(t.tokens, preds)[1:]
            matched, judged = matched + sum(m), judged + len(m)
            out.append(ExitTrace(seq_id=t.seq_id, src_len=t.src_len, repeats=2,
                                 exits=[[p, tok] for p, tok in zip(preds, t.tokens, strict=True)], eos_id=t.eos_id,
                                 model=name))
    return out, {"draft_traces": len(out), "path_acceptance": matched / judged if judged else math.nan,
                 "draft_model": dcfg.name}


def _message(err: UserError) -> str:
    """A `UserError`'s message without the place it named (to name another)."""
    text = str(err)
    return text.removeprefix(f"{err.where}: ") if err.where else text
