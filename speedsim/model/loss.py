"""The weighted multi-exit loss of SPEED training.

Every repeat's exit is trained to predict the next token with the shared LM head; the
per-exit cross entropies are combined with weights that grow with depth, so the final exit
(the one that is emitted) counts most while early exits still learn to predict well enough
to launch speculative tokens. The paper does not publish its weights; the default here is
linear in depth, w_r = (r + 1) / sum_k (k + 1) for exits r = 0..R-1 (for R = 3: 1/6, 2/6,
3/6), close to LayerSkip's normalised depth-growing scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def default_exit_weights(repeats: int) -> list[float]:
    """Default loss weight of each of the `repeats` exits: proportional to r + 1, summing to 1."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    total = repeats * (repeats + 1) / 2
    return [(r + 1) / total for r in range(repeats)]


def exit_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Weighted multi-exit cross entropy (nats per labelled token), a scalar.

    logits (R, B, T, V) from `SharedDecoder.forward`; targets (B, T) next-token ids, with
    `ignore_index` where no loss is taken. Each exit's loss is the mean over labelled tokens;
    the exits are combined with `weights` (R non-negative numbers, normalised here to sum 1;
    default `default_exit_weights(R)`: w_r proportional to r + 1).
    """
    R, B, T, V = logits.shape
    if targets.shape != (B, T):
        raise ValueError(f"targets have shape {tuple(targets.shape)}, expected {(B, T)}")
    w = torch.as_tensor(default_exit_weights(R) if weights is None else weights, dtype=logits.dtype, device=logits.device)
    if w.shape != (R,):
        raise ValueError(f"need {R} exit weights, got {tuple(w.shape)}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("exit weights must be >= 0 and not all 0")
    w = w / w.sum()
    per_exit = F.cross_entropy(
        logits.reshape(R * B * T, V), targets.repeat(R, 1, 1).reshape(R * B * T), ignore_index=ignore_index, reduction="none"
    ).view(R, B * T)  # (R, B*T), 0 where ignored
    n = (targets != ignore_index).sum().clamp(min=1)
    return (per_exit.sum(dim=1) / n * w).sum()
