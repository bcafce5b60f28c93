"""Evaluating a model: per-exit loss, greedy decodes, ROUGE-L and output diversity."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from speedsim.data import IGNORE_INDEX, Batch, Encoded, collate, lm_batch, special_ids
from speedsim.decode import greedy
from speedsim.model import SharedDecoder


def forward(model: SharedDecoder, b: Batch, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits at every exit, (R, B, T, V), of a batch moved to `device`."""
    def dev(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    return model(dev(b.src), dev(b.tgt_in), src_pad_mask=dev(b.src_pad_mask), tgt_pad_mask=dev(b.tgt_pad_mask))


@torch.no_grad()
def exit_losses(model: SharedDecoder, batches: Iterable[Batch], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Token-mean cross-entropy (nats/token) of every exit over `batches`."""
    was_training = model.training
    model.eval()
    sums: torch.Tensor | None = None
    n = 0
    for b in batches:
        logits = forward(model, b, device).float()  # (R, B, T, V)
        labels = b.labels.to(logits.device).flatten()
        per_exit = torch.stack(
            [F.cross_entropy(lg.flatten(0, 1), labels, ignore_index=IGNORE_INDEX, reduction="sum") for lg in logits]
        )
        sums = per_exit if sums is None else sums + per_exit
        n += b.n_tokens
    model.train(was_training)
    per = (sums / max(n, 1)).tolist() if sums is not None else []
    return {"val_loss": per[-1] if per else float("nan"), "val_loss_per_exit": per, "val_tokens": n}


def example_batches(items: list[Encoded], pad_id: int, decoder_only: bool, batch_size: int) -> Iterable[Batch]:
    for i in range(0, len(items), batch_size):
        yield collate(items[i : i + batch_size], pad_id, decoder_only)


def window_batches(windows: list[np.ndarray], src_len: int, bos_id: int) -> Iterable[Batch]:
    return (lm_batch(w, src_len, bos_id) for w in windows)


def decode_texts(
    model: SharedDecoder, tok: Tokenizer, items: list[Encoded], max_new_tokens: int
) -> tuple[list[str], list[list[int]]]:
    """Greedy decodes of `items` (batch 1): (texts without special tokens, token ids)."""
    eos = special_ids(tok)["eos"]
    ids = [greedy(model, torch.tensor(it.src, dtype=torch.long), max_new_tokens, eos_id=eos) for it in items]
    return [tok.decode(list(x), skip_special_tokens=True) for x in ids], ids


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score, no stemming) in [0, 1]."""
    if not predictions:
        return float("nan")
    from rouge_score import rouge_scorer  # imports nltk (~1.4 s): only where ROUGE is computed

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


def output_stats(texts: list[str], ids: list[list[int]], eos_id: int | None) -> dict[str, float]:
    """Diversity and length of decodes: distinct outputs per 100 inputs, mean output length in
    tokens (the final <eos> excluded), and the fraction that stopped on <eos>."""
    n = max(len(texts), 1)
    lengths = [len(x) - (1 if x and x[-1] == eos_id else 0) for x in ids]
    return {
        "distinct_per_100": 100.0 * len(set(texts)) / n,
        "mean_output_tokens": float(np.mean(lengths)) if lengths else float("nan"),
        "stopped_on_eos": sum(1 for x in ids if x and x[-1] == eos_id) / n,
    }


def quality(model: SharedDecoder, tok: Tokenizer, items: list[Encoded], max_new_tokens: int) -> dict[str, Any]:
    """ROUGE-L, diversity, length and a few samples of greedy decodes of `items`."""
    model.eval()
    texts, ids = decode_texts(model, tok, items, max_new_tokens)
    out: dict[str, Any] = {"rougeL": rouge_l(texts, [it.reference for it in items]), "decoded": len(items)}
    out.update(output_stats(texts, ids, special_ids(tok)["eos"]))
    out["samples"] = [{"id": it.id, "prediction": p, "reference": it.reference} for it, p in zip(items[:5], texts, strict=False)]
    return out
