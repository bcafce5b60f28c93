"""The host's timing, one definition for every driver (the recurrence, SimPy, the serving scheduler).

- **Issue.** In eager mode the host pays `op_launch_us` per framework op of every kernel before
  the kernel can start (a synchronous host, a CPU, then runs the op itself and waits for it). In
  graph mode it pays `graph_launch_us` once per program (one graph replay).
- **On the device, graph mode.** A graph of several nodes pays `graph_start_us` from its start to
  its first node. A node of another kernel than the node before it on its stream (not a repeat of
  the same kernel, say a GEMV per row) takes `node_gap_us` more (the dependency's resolution) and
  at least `node_interval_us` in all (the next node's launch is prepared while it runs).
- **Round trip.** A decode loop waits for each step's results to reach the host (copy, sync,
  controller: `round_trip_us`) before it issues the next step; it is host busy time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from speedsim.hardware.profile import HardwareProfile

Mode = Literal["eager", "graph"]
MODES: tuple[Mode, ...] = ("graph", "eager")


@dataclass(frozen=True)
class HostTiming:
    """A profile's host and launch figures for one execution mode (us); zero where the mode has none."""

    mode: Mode
    op_launch_us: float       # eager: host time per framework op of a kernel
    graph_launch_us: float    # graph: host time per program (one graph launch)
    graph_start_us: float     # graph: device time from a graph's start to its first node (graphs of >1 node)
    node_interval_us: float   # graph: least time a node of another kernel than the one before it takes
    node_gap_us: float        # graph: added to such a node's time (its dependency's resolution)
    round_trip_us: float      # a decode step's results to the host, before the next step is issued
    synchronous: bool         # the host runs each op itself and waits for it (a CPU)

    @classmethod
    def of(cls, profile: HardwareProfile, mode: Mode) -> HostTiming:
        if mode not in MODES:
            raise ValueError(f"mode must be eager or graph, not {mode}")
        host, graph = profile.host, mode == "graph"
        launch = host.launch_overhead_us
        return cls(mode=mode,
                   op_launch_us=0.0 if graph else launch.eager,
                   graph_launch_us=host.graph_launch_us if graph else 0.0,
                   graph_start_us=host.graph_start_us if graph else 0.0,
                   node_interval_us=launch.graph if graph else 0.0,
                   node_gap_us=launch.graph_gap if graph else 0.0,
                   round_trip_us=host.round_trip_us,
                   synchronous=host.synchronous)

    @property
    def graph(self) -> bool:
        return self.mode == "graph"

    def start_us(self, kernels: int) -> float:
        """Device time before the first kernel of a program of `kernels` kernels (a graph's start)."""
        return self.graph_start_us if kernels > 1 else 0.0
