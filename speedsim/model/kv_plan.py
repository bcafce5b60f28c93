"""How one `group_pass` routes its tokens to KV-cache slots.

`SharedDecoder.group_pass` runs N tokens at once, token i at repeat `repeats[i]` and
sequence position `positions[i]`. Self-attention must write each token's K/V into its
repeat's cache slot and read that slot up to the token's position. This module holds what
that needs and nothing of the model: the cache protocol (`KVCacheLike`, implemented by
`speedsim.decode.KVCache`) and the attention plan built once per pass and shared by the `U`
layers (`attention_plan`): one batched call when every token is at its own repeat (SPEED's
steady state), else one call per repeat (a prefill).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class KVCacheLike(Protocol):
    """What `group_pass` needs of a KV cache (implemented by `speedsim.decode.KVCache`)."""

    def update(self, layer: int, repeat: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None: ...

    def keys_values(self, layer: int, repeat: int, length: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def update_tokens(
        self, layer: int, repeats: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None: ...

    def gather(self, layer: int, repeats: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class RepeatGroup:
    """The tokens of one `group_pass` that sit at the same repeat (they share a KV-cache slot)."""

    repeat: int
    index: torch.Tensor  # (n,) rows of the batch
    positions: torch.Tensor  # (n,) sequence positions
    length: int  # keys to read: max position + 1
    allowed: torch.Tensor  # (n, length) True where key j <= the query's position


@dataclass(frozen=True)
class TokenBatch:
    """The tokens of one `group_pass` when each sits at its own repeat (SPEED's pipelined step)."""

    repeats: torch.Tensor  # (N,) KV-cache slot of each token
    positions: torch.Tensor  # (N,) sequence positions
    length: int  # keys to gather: max position + 1
    allowed: torch.Tensor  # (N, 1, 1, length) True where key j <= the token's position


AttentionPlan = list[RepeatGroup] | TokenBatch


def attention_plan(repeats: list[int], positions: list[int], device: torch.device) -> list[RepeatGroup] | TokenBatch:
    """One batched attention call if every token is at its own repeat, else one call per repeat."""
    if len(set(repeats)) == len(repeats):
        pos = torch.tensor(positions, device=device)
        length = max(positions) + 1
        allowed = (torch.arange(length, device=device)[None, :] <= pos[:, None])[:, None, None, :]  # (N, 1, 1, L)
        return TokenBatch(torch.tensor(repeats, device=device), pos, length, allowed)
    return _repeat_groups(repeats, positions, device)


def _repeat_groups(repeats: list[int], positions: list[int], device: torch.device) -> list[RepeatGroup]:
    groups = []
    for r in sorted(set(repeats)):
        rows = [i for i, rr in enumerate(repeats) if rr == r]
        pos = torch.tensor([positions[i] for i in rows], device=device)
        length = int(pos.max()) + 1
        allowed = torch.arange(length, device=device)[None, :] <= pos[:, None]  # (n, L)
        groups.append(RepeatGroup(r, torch.tensor(rows, device=device), pos, length, allowed))
    return groups
