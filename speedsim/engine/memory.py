"""On-chip residency: which tensors stay in the outermost on-chip level between kernels and steps.

The level is modelled as a least-recently-used set of whole tensors whose total footprint is at
most the level's usable capacity. A read of a resident tensor is served on-chip; a read of a
non-resident one comes from DRAM and makes it resident (evicting the least recently used) if it
fits at all. A tensor larger than the usable capacity is streamed from DRAM every time. A
resident tensor read with a larger footprint (a KV cache that grew) is charged its new part
from DRAM; one read with a smaller footprint (a cache reused by the next sequence) shrinks.
Writes are absorbed on-chip (write-back) without changing residency, and reach DRAM only for
tensors too large to stay resident.

So parameter sharing shows up by itself: a shared group whose weights fit is read from DRAM
once and then from on-chip memory every repeat and every step; an unshared deep decoder cycles
through more weights than fit and streams them from DRAM.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from speedsim.workload.kernels import TENSOR_CLASSES, Kernel


@dataclass(frozen=True)
class OnChipState:
    """What is resident on-chip between runs: an immutable snapshot of an `OnChipCache`.

    `resident` lists (tensor, footprint bytes) from least to most recently used; `used_bytes` is
    their total as the cache accumulated it (kept, not re-summed, so a run that resumes from a
    snapshot makes the same eviction decisions as one long run).
    """

    capacity_bytes: float
    resident: tuple[tuple[str, float], ...] = ()
    used_bytes: float = 0.0

    @classmethod
    def empty(cls, capacity_bytes: float) -> OnChipState:
        """Nothing resident (a cold start)."""
        return cls(float(capacity_bytes))


class OnChipCache:
    """LRU residency of whole tensors in one on-chip level of `capacity_bytes` (mutable, one run's working copy)."""

    __slots__ = ("capacity", "resident", "used")

    def __init__(self, capacity_bytes: float, state: OnChipState | None = None):
        self.capacity = float(capacity_bytes)
        self.resident: OrderedDict[str, float] = OrderedDict()
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

    def _insert(self, tensor: str, size: float) -> None:
        if size > self.capacity:
            return
        resident = self.resident
        while self.used + size > self.capacity and resident:
            _, freed = resident.popitem(last=False)
            self.used -= freed
        resident[tensor] = size
        self.used += size

    def serve(self, kernel: Kernel, dram_by_class: dict[str, float]) -> tuple[float, float]:
        """Account one kernel's accesses; return (dram_bytes, onchip_bytes) and add DRAM bytes per class."""
        dram = 0.0
        onchip = 0.0
        resident = self.resident
        cap = self.capacity
        for a in kernel.accesses:
            size = a.footprint_bytes or (a.read_bytes + a.write_bytes)
            if a.read_bytes:
                if a.tensor in resident:
                    resident.move_to_end(a.tensor)
                    old = resident[a.tensor]
                    if size < old:  # reused with a smaller footprint (the next sequence's cache)
                        self.used -= old - size
                        resident[a.tensor] = size
                    elif size > old:  # the tensor grew (a KV cache): the new part comes from DRAM
                        grown = min(a.read_bytes, size - old)
                        dram += grown
                        dram_by_class[a.tclass] += grown
                        self.used += size - old
                        resident[a.tensor] = size
                        if self.used > cap:
                            del resident[a.tensor]
                            self.used -= size
                            self._insert(a.tensor, size)
                else:
                    dram += a.read_bytes
                    dram_by_class[a.tclass] += a.read_bytes
                    self._insert(a.tensor, size)
                onchip += a.read_bytes
            if a.write_bytes:
                onchip += a.write_bytes
                if size > cap:
                    dram += a.write_bytes
                    dram_by_class[a.tclass] += a.write_bytes
        return dram, onchip


def empty_class_totals() -> dict[str, float]:
    return dict.fromkeys(TENSOR_CLASSES, 0.0)
