"""On-chip residency: how much of each tensor stays in the outermost on-chip level between kernels and steps.

Residency is partial, at the granularity of bytes (cache lines in the limit): each tensor has a
resident part, at most its footprint, and the parts sum to at most the level's usable capacity.
A read is served on-chip for the resident fraction of the tensor and from DRAM for the rest; the
missing part then becomes resident, evicting bytes of the least recently used other tensors
(the last victim only in part). So a working set W a little larger than the usable capacity C
still hits on part of it: cycled, a tensor of size s finds C - (W - s) of itself still resident
when it is read again, falling to 0 only at W - s = C, never the 0% of whole-tensor LRU at
W = C + 1 byte: no cliff.

Scan resistance: a tensor larger than the usable capacity (an LM head, a weight streamed once
per token) bypasses the level: it is read from DRAM and evicts nothing, so streaming it does
not wipe a shared group that fits. On the H200 this is what the measurements show: the t5base
LM head (49 MB, read back to back) runs at DRAM speed, and so do dec1b layers whose weights
cycle through the L2.

A resident tensor read with a smaller footprint (a cache reused by the next sequence) shrinks.
Writes are absorbed on-chip (write-back, write-allocate): written bytes become resident, and
reach DRAM only for tensors too large to stay resident. Activations (`ACT`) were always just
written by the kernel before, so their reads are on-chip.

So parameter sharing shows up by itself: a shared group whose weights fit is read from DRAM
once and then from on-chip memory every repeat and every step; an unshared deep decoder cycles
through more weights than fit and streams most of them from DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from speedsim.workload.kernels import ACT, TENSOR_CLASSES, Kernel


@dataclass(frozen=True)
class OnChipState:
    """What is resident on-chip between runs: an immutable snapshot of an `OnChipCache`.

    `resident` lists (tensor, resident bytes); `used_bytes` is their total as the cache
    accumulated it (kept, not re-summed, so a run that resumes from a snapshot makes the same
    eviction decisions as one long run).
    """

    capacity_bytes: float
    resident: tuple[tuple[str, float], ...] = ()
    used_bytes: float = 0.0

    @classmethod
    def empty(cls, capacity_bytes: float) -> OnChipState:
        """Nothing resident (a cold start)."""
        return cls(float(capacity_bytes))


class OnChipCache:
    """Partial, scan-resistant LRU residency in one on-chip level of `capacity_bytes` (one run's working copy).

    `resident` maps tensor -> resident bytes, least recently used first (dicts keep insertion order).
    """

    __slots__ = ("capacity", "resident", "used")

    def __init__(self, capacity_bytes: float, state: OnChipState | None = None):
        self.capacity = float(capacity_bytes)
        self.resident: dict[str, float] = {}
        self.used = 0.0
        if state is not None:
            if state.capacity_bytes != self.capacity:
                raise ValueError(f"on-chip state of {state.capacity_bytes:g} bytes given to a level of "
                                 f"{self.capacity:g} bytes (a state from another profile?)")
            self.resident.update(state.resident)
            self.used = state.used_bytes

    def snapshot(self) -> OnChipState:
        """The current residency as an immutable `OnChipState`."""
        return OnChipState(self.capacity, tuple(self.resident.items()), self.used)

    def _grow(self, tensor: str, add: float, size: float) -> None:
        """Make `add` more bytes of `tensor` (footprint `size`) resident, evicting least recently used bytes."""
        if size > self.capacity:  # scan resistance: a tensor larger than the level bypasses it
            return
        resident = self.resident
        have = resident.pop(tensor, 0.0)
        need = add - (self.capacity - self.used)
        while need > 0.0 and resident:
            victim = next(iter(resident))
            part = resident[victim]
            if part > need:
                resident[victim] = part - need
                self.used -= need
                break
            del resident[victim]
            self.used -= part
            need -= part
        add = min(add, self.capacity - self.used)
        resident[tensor] = have + add  # most recently used
        self.used += add

    def serve(self, kernel: Kernel, dram_by_class: dict[str, float]) -> tuple[float, float]:
        """Account one kernel's accesses; return (dram_bytes, onchip_bytes) and add DRAM bytes per class."""
        dram = 0.0
        onchip = 0.0
        resident = self.resident
        cap = self.capacity
        for a in kernel.accesses:
            size = a.footprint_bytes or (a.read_bytes + a.write_bytes)
            if a.read_bytes:
                onchip += a.read_bytes
                if not (a.tensor == ACT and size <= cap):
                    have = resident.pop(a.tensor, 0.0)
                    if have > size:  # reused with a smaller footprint (the next sequence's cache)
                        self.used -= have - size
                        have = size
                    if have > 0.0:
                        resident[a.tensor] = have  # most recently used
                    miss = a.read_bytes * (1.0 - have / size) if size > 0 else 0.0
                    if miss > 0.0:
                        dram += miss
                        dram_by_class[a.tclass] += miss
                        self._grow(a.tensor, size - have, size)
            if a.write_bytes:
                onchip += a.write_bytes
                if size > cap:
                    dram += a.write_bytes
                    dram_by_class[a.tclass] += a.write_bytes
                else:  # write-allocate: the written bytes are on-chip
                    have = resident.get(a.tensor, 0.0)
                    self._grow(a.tensor, min(a.write_bytes, size - have), size)
        return dram, onchip


def empty_class_totals() -> dict[str, float]:
    return dict.fromkeys(TENSOR_CLASSES, 0.0)
