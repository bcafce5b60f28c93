"""Recording real exit traces: decode a data split with SPEED from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speedsim.errors import UserError
from speedsim.trace.schema import ExitTrace


def sample_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """Up to `limit` indices of `n`, a seeded uniform sample kept in corpus order.

    The corpus is ordered by module, so the first `limit` examples would come from a few
    modules only.
    """
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:limit].tolist())


def record_traces(
    checkpoint: Path | str,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> tuple[list[ExitTrace], dict[str, Any]]:
    """SPEED-decode (up to `limit` examples of) `split`; returns the traces and quality metrics.

    SPEED is lossless, so its tokens are the greedy decodes: their ROUGE-L F1 against the
    references is returned too (`rougeL`, in [0, 1]).
    """
    from speedsim.data import special_ids
    from speedsim.decode import speed
    from speedsim.model.train import load_model, prepare_data, rouge_l

    if split not in ("train", "validation", "test"):
        raise UserError(f"unknown split {split!r} (expected train, validation or test)", where="--split")
    if limit is not None and limit < 1:
        raise UserError("must be >= 1", where="--limit")
    model, tok, cfg = load_model(checkpoint)
    _, enc = prepare_data(cfg, tok)
    items = [enc[split][i] for i in sample_indices(len(enc[split]), limit)]
    eos = special_ids(tok)["eos"]
    n_new = max_new_tokens or cfg.eval.max_new_tokens
    name = f"{cfg.name} ({cfg.data.task})"
    traces, preds = [], []
    with torch.no_grad():
        for it in tqdm(items, desc=f"trace {cfg.name}", disable=not progress, unit="seq"):
            res = speed(model, torch.tensor(it.src, dtype=torch.long), n_new, eos_id=eos, seq_id=it.id, model_name=name)
            traces.append(res.trace)
            preds.append(tok.decode(list(res.tokens), skip_special_tokens=True))
    quality = {"rougeL": rouge_l(preds, [it.reference for it in items]), "split": split, "examples": len(items)}
    return traces, quality
