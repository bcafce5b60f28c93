"""DRAM bandwidth as a shared resource: a fluid max-min fair channel in SimPy.

Kernels running at the same time on different streams each ask for their DRAM bytes at up to
the rate they would reach alone; the channel splits its bandwidth among them by water-filling
(no flow gets more than it asks for, the rest share equally) and re-plans whenever a flow
starts or finishes. A flow's event fires when its last byte has moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

_EPS = 1e-9


@dataclass
class _Flow:
    remaining: float
    cap: float
    done: simpy.Event
    rate: float = 0.0


class SharedBandwidth:
    """`capacity` bytes/us shared max-min fairly among concurrent flows."""

    def __init__(self, env: simpy.Environment, capacity: float):
        self.env = env
        self.capacity = capacity
        self.flows: list[_Flow] = []
        self.last = 0.0
        self.plan = 0

    def transfer(self, nbytes: float, max_rate: float) -> simpy.Event:
        """An event that fires once `nbytes` have moved, at no more than `max_rate` bytes/us."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        self._advance()
        self.flows.append(_Flow(nbytes, max(max_rate, _EPS), done))
        self._replan()
        return done

    def _advance(self) -> None:
        dt = self.env.now - self.last
        if dt > 0 and self.flows:
            for f in self.flows:
                f.remaining -= f.rate * dt
        self.last = self.env.now

    def _replan(self) -> None:
        flows = self.flows
        left, pending = self.capacity, sorted(flows, key=lambda f: f.cap)
        while pending:
            share = left / len(pending)
            f = pending.pop(0)
            f.rate = min(f.cap, share)
            left -= f.rate
        self.plan += 1
        if flows:
            delay = max(0.0, min(f.remaining / f.rate for f in flows))
            plan = self.plan
            wake = self.env.timeout(delay)
            wake.callbacks.append(lambda _ev: self._wake(plan))

    def _wake(self, plan: int) -> None:
        if plan != self.plan:
            return  # a newer plan superseded this wake-up
        self._advance()
        finished = [f for f in self.flows if f.remaining <= _EPS * max(1.0, f.cap)]
        self.flows = [f for f in self.flows if f not in finished]
        for f in finished:
            f.done.succeed()
        self._replan()
