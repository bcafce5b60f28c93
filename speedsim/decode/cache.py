"""Preallocated KV cache with one slot per (layer, repeat) and explicit rollback.

A parameter-shared decoder applies layer `u` once per repeat `r`; each application is a
different *virtual* layer of the `U*R`-deep decoder and keeps its own keys and values, so
the cache has `U x R` slots. In SPEED's pipeline the slots fill at different rates (a token
at repeat 2 has written slots r = 0, 1, 2 for its position, its successor only r = 0, 1),
which is why each slot tracks its own length.
"""

from __future__ import annotations

import torch

from speedsim.model import SharedDecoder


class KVCache:
    """Keys and values of one sequence (batch 1) for every (layer, repeat) slot.

    Storage is allocated once: k, v of shape (U, R, H, max_len, D). `update` writes entries
    at explicit sequence positions; `rollback(length)` forgets every entry at a position
    >= length in every slot (and zeroes it, so the storage always equals what sequential
    decoding would hold).
    """

    def __init__(
        self,
        layers: int,
        repeats: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (layers, repeats, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (U, R, H, L, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (U, R, H, L, D)
        self.lengths = [[0] * repeats for _ in range(layers)]  # valid prefix of each slot, in positions
        self.max_len = max_len
        self._high = 0  # 1 + highest position written in any slot: rollback zeroes only below it

    @classmethod
    def for_model(cls, model: SharedDecoder) -> KVCache:
        """An empty cache shaped for a `SharedDecoder`, in its dtype and on its device."""
        c = model.config
        p = next(model.parameters())
        return cls(c.unique_layers, c.repeats, c.kv_heads, c.max_len, c.head_dim, p.dtype, p.device)

    def update(self, layer: int, repeat: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write k, v (n, H, D) of the tokens at `positions` (n,) into slot (layer, repeat).

        Positions (contiguous) may overwrite or extend the slot's valid prefix but not start
        past its end, which would leave a hole.
        """
        lo, hi = int(positions.min()), int(positions.max())
        n = self.lengths[layer][repeat]
        if lo > n:
            raise ValueError(f"write at positions {lo}..{hi} leaves a hole in slot ({layer}, {repeat}) of length {n}")
        if hi >= self.max_len:
            raise ValueError(f"position {hi} exceeds the cache's max_len={self.max_len}")
        self.k[layer, repeat, :, positions] = k.transpose(0, 1)  # (H, n, D)
        self.v[layer, repeat, :, positions] = v.transpose(0, 1)  # (H, n, D)
        self.lengths[layer][repeat] = max(n, hi + 1)
        self._high = max(self._high, hi + 1)

    def update_tokens(
        self, layer: int, repeats: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """Write k, v (N, H, D) of N tokens, token i into slot (layer, repeats[i]) at positions[i].

        One scatter per tensor (SPEED's pipelined step: every token in its own slot); the
        same rules as `update` apply to each token.
        """
        for r, p in zip(repeats.tolist(), positions.tolist(), strict=True):
            n = self.lengths[layer][r]
            if p > n:
                raise ValueError(f"write at position {p} leaves a hole in slot ({layer}, {r}) of length {n}")
            if p >= self.max_len:
                raise ValueError(f"position {p} exceeds the cache's max_len={self.max_len}")
            self.lengths[layer][r] = max(n, p + 1)
            self._high = max(self._high, p + 1)
        self.k[layer, repeats, :, positions] = k  # (N, H, D)
        self.v[layer, repeats, :, positions] = v

    def gather(self, layer: int, repeats: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `length` positions of slots (layer, repeats[i]): k, v each (N, H, length, D)."""
        # slice first, then one contiguous index_select (4x faster on a CPU than advanced indexing)
        return (self.k[layer, :, :, :length].index_select(0, repeats),
                self.v[layer, :, :, :length].index_select(0, repeats))

    def keys_values(self, layer: int, repeat: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `length` positions of slot (layer, repeat): k, v each (H, length, D)."""
        return self.k[layer, repeat, :, :length], self.v[layer, repeat, :, :length]

    def length(self, layer: int, repeat: int) -> int:
        return self.lengths[layer][repeat]

    def rollback(self, length: int) -> None:
        """Forget every entry at sequence position >= `length`, in every slot."""
        for row in self.lengths:
            for r, n in enumerate(row):
                row[r] = min(n, length)
        if length < self._high:  # zero only what was written (a flush spans a few positions)
            self.k[..., length : self._high, :] = 0
            self.v[..., length : self._high, :] = 0
            self._high = length
