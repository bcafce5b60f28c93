"""Timing helpers of `speedsim measure`: back-to-back samples, CUDA-graph capture, a timing log (rows to CSV).

Every time is a median (and min, max) over `samples` samples of `inner` back-to-back calls after
`warmup` calls; on CUDA measured with CUDA events, on a CPU with `time.perf_counter`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from speedsim.validation.schema import measured_row, write_measured


@dataclass(frozen=True)
class Budget:
    """How hard to measure: samples of `inner` back-to-back calls after `warmup` calls."""

    samples: int = 7
    inner: int = 10
    warmup: int = 3


def sync(device: str) -> None:
    """Wait for the device (a no-op on a CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str, budget: Budget) -> tuple[float, float, float]:
    """(median, min, max) microseconds per call over `budget.samples` samples."""
    for _ in range(budget.warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(budget.samples):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(budget.inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / budget.inner)
        else:
            t = time.perf_counter()
            for _ in range(budget.inner):
                fn()
            samples.append((time.perf_counter() - t) * 1e6 / budget.inner)
    return statistics.median(samples), min(samples), max(samples)


def time_interleaved(fns: Sequence[Callable[[], object]], device: str,
                     budget: Budget) -> list[tuple[float, float, float]]:
    """`time_fn` of several functions, their samples taken in turn (sample 1 of each, then sample 2, ...).

    Each sample starts with one untimed call: the function before it left its own tensors in the
    caches, and what is timed is the steady state of back-to-back calls, as `time_fn` times it
    (a 4-layer step called right after a B = 32 step ran 15-30% slower on the build machine's CPU).
    """
    for fn in fns:
        for _ in range(budget.warmup):
            fn()
    sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(budget.samples):
        for fn, out in zip(fns, samples, strict=True):
            fn()
            sync(device)
            t = time.perf_counter()
            for _ in range(budget.inner):
                fn()
            sync(device)
            out.append((time.perf_counter() - t) * 1e6 / budget.inner)
    return [(statistics.median(s), min(s), max(s)) for s in samples]


def capture(fn: Callable[[], object]) -> Callable[[], None]:
    """`fn` captured as a CUDA graph; returns its replay. `fn` runs 3 times first (warm-up on a side
    stream, as PyTorch requires), so it must be idempotent on its buffers."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def graphed(fn: Callable[[], object], device: str) -> Callable[[], None] | None:
    """A CUDA-graph replay of `fn`, or None on CPU or when `fn` cannot be captured (host work inside)."""
    if device != "cuda":
        return None
    try:
        return capture(fn)
    except Exception:  # noqa: BLE001 - any capture failure means: no graph row for this step
        torch.cuda.synchronize()
        return None


class TimingLog:
    """Collects rows and rewrites its CSV atomically after every section (nothing lost on interrupt)."""

    def __init__(self, out: Path, device: str, budget: Budget):
        self.out, self.device, self.budget = out, device, budget
        self.rows: list[dict[str, object]] = []

    def time(self, fn: Callable[[], object], inner: int | None = None, graph: bool = True, **row: object) -> None:
        """Time `fn` eagerly and, on CUDA if `graph`, replayed from a graph: one row per mode."""
        budget = self.budget if inner is None else Budget(self.budget.samples, inner, self.budget.warmup)
        modes: list[tuple[str, Callable[[], object]]] = [("eager", fn)]
        replay = graphed(fn, self.device) if graph else None
        if replay is not None:
            modes.append(("graph", replay))
        for mode, f in modes:
            med, lo, hi = time_fn(f, self.device, budget)
            self.add(mode=mode, us_median=med, us_min=lo, us_max=hi, **row)

    def add(self, **row: object) -> None:
        self.rows.append(measured_row(**row))

    def flush(self) -> None:
        write_measured(self.out, self.rows)
