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

A kernel that reads a tensor that fits more than once (a CPU's GEMV per activation row) misses
only its first pass; the later ones find it resident. A resident tensor read with a smaller
footprint (a cache reused by the next sequence) shrinks.
Writes are absorbed on-chip (write-back, write-allocate): written bytes become resident, and
reach DRAM only for tensors too large to stay resident. Activations (`ACT`) were always just
written by the kernel before, so their reads are on-chip.

So parameter sharing shows up by itself: a shared group whose weights fit is read from DRAM
once and then from on-chip memory every repeat and every step; an unshared deep decoder cycles
through more weights than fit and streams most of them from DRAM.

A kernel's accesses are served in order: its `accesses`, then its per-item ones (`ItemAccesses`:
each batch item's own KV cache or encoder K/V, read or written whole), exactly as if each item
were one more `Access`. A batched serving step has thousands of them, so `access` runs the rules
above inline, with the level's fill in a local (`tests/test_engine.py` checks the equivalence).
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

    def access(self, kernel: Kernel, dram_by_class: dict[str, float]) -> tuple[float, float]:
        """Account one kernel's accesses; return (dram_bytes, onchip_bytes) and add DRAM bytes per class.

        The loops below are `_grow` and the read and write rules of the module docstring written out
        inline (with the level's fill in a local): a batched step serves thousands of accesses. The
        order of every floating-point operation is that of one `Access` at a time."""
        dram = 0.0
        onchip = 0.0
        resident = self.resident
        cap = self.capacity
        used = self.used
        for a in kernel.accesses:
            read, write = a.read_bytes, a.write_bytes
            size = a.footprint_bytes or (read + write)
            if read:
                onchip += read
                tensor = a.tensor
                if not (tensor == ACT and size <= cap):
                    have = resident.pop(tensor, 0.0)
                    if have > size:  # reused with a smaller footprint (the next sequence's cache)
                        used -= have - size
                        have = size
                    if have > 0.0:
                        resident[tensor] = have  # most recently used
                    # a tensor that fits is missed once: a kernel reading it again (a GEMV per row)
                    # finds it resident; one larger than the level streams every read from DRAM
                    miss = ((read if size > cap else min(read, size)) * (1.0 - have / size)) if size > 0 else 0.0
                    if miss > 0.0:
                        dram += miss
                        dram_by_class[a.tclass] += miss
                        if size <= cap:
                            used = _grow(resident, cap, used, tensor, size - have)
            if write:
                onchip += write
                if size > cap:
                    dram += write
                    dram_by_class[a.tclass] += write
                else:  # write-allocate: the written bytes are on-chip
                    have = resident.get(a.tensor, 0.0)
                    used = _grow(resident, cap, used, a.tensor, min(write, size - have))
        items = kernel.items
        if items is not None:
            tclass, write = items.tclass, items.write  # each item writes, or reads, its whole footprint
            missed = dram_by_class[tclass]
            # A dict finds its oldest key by scanning past the slots its deletions left (each item pops
            # and re-adds its tensor): thousands of items made that scan quadratic (a step of 8,192
            # sequences spent 85% of its time in it). Copying the dict drops those slots; it is done
            # once the deletions outnumber the entries, so its cost is spread over them.
            deleted = 0
            for tensor, size in zip(items.tensors, items.nbytes, strict=True):
                if not size:
                    continue
                deleted += 1
                if deleted > len(resident) + 256:
                    resident = dict(resident)  # same order, no dead slots
                    deleted = 0
                onchip += size
                if write:
                    if size > cap:  # larger than the level: to DRAM
                        dram += size
                        missed += size
                        continue
                    have = resident.pop(tensor, 0.0)  # (a tensor resident beyond the written bytes shrinks)
                else:
                    have = resident.pop(tensor, 0.0)
                    if have > size:  # reused with a smaller footprint
                        used -= have - size
                        have = size
                    miss = size * (1.0 - have / size)
                    if miss > 0.0:
                        dram += miss
                        missed += miss
                    if not (miss > 0.0 and size <= cap):  # a hit, or larger than the level: nothing evicted
                        if have > 0.0:
                            resident[tensor] = have  # most recently used
                        continue
                # `_grow` inline: size - have more bytes resident, most recently used (the tensor stays
                # out of `resident` while others are evicted, as in `_grow`)
                add = size - have
                need = add - (cap - used)
                while need > 0.0 and resident:
                    victim = next(iter(resident))
                    part = resident[victim]
                    if part > need:
                        resident[victim] = part - need
                        used -= need
                        break
                    del resident[victim]
                    used -= part
                    need -= part
                free = cap - used
                if free < add:
                    add = free
                resident[tensor] = have + add
                used += add
            dram_by_class[tclass] = missed
        self.resident = resident
        self.used = used
        return dram, onchip


def _grow(resident: dict[str, float], cap: float, used: float, tensor: str, add: float) -> float:
    """Make `add` more bytes of `tensor` resident in `resident` (a level of `cap` bytes holding `used`),
    evicting least recently used bytes (the last victim only in part); returns the new `used`.
    The caller has checked that the tensor's footprint fits the level."""
    have = resident.pop(tensor, 0.0)
    need = add - (cap - used)
    while need > 0.0 and resident:
        victim = next(iter(resident))
        part = resident[victim]
        if part > need:
            resident[victim] = part - need
            used -= need
            break
        del resident[victim]
        used -= part
        need -= part
    free = cap - used
    if free < add:
        add = free
    resident[tensor] = have + add  # most recently used
    return used + add


def empty_class_totals() -> dict[str, float]:
    return dict.fromkeys(TENSOR_CLASSES, 0.0)
