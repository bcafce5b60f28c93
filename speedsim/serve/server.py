"""The serving simulation: arrivals, a queue, KV memory as a capacity, a batching scheduler, streams.

SimPy processes on one environment, over one engine `Session` (the same device model as a
single decode):

- `arrivals`: puts each request in the waiting queue at its arrival time;
- `scheduler` (the host): admits waiting requests in arrival order while the batch has room
  and their KV fits (`kv`: a `simpy.Container` of the KV capacity; a request holds its full
  KV until it completes), then runs one decode step over every decoding request: SPEED
  requests advance one step of their own schedule (each token at its own repeat), baseline
  requests one token, speculative requests their next draft or verify step (the drafting ones in one
  batched pass through the drafter, the verifying ones in one through the target: requests drift apart
  as their drafts are accepted or not); the weights are read once per step for the whole batch, each
  request's attention reads its own KV. The step's results reach the host (the session's round trip,
  host busy time) before the next step is chosen;
- prefill: `chunked` puts newly admitted requests' prefills into the next step's program (at
  most `prefill_budget` source tokens per step, one request at least); `stream` runs each
  prefill on a second stream that shares the compute units and DRAM bandwidth with decoding.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import simpy

from speedsim.engine import Session
from speedsim.engine.core import gc_paused
from speedsim.serve.requests import Request
from speedsim.simulate.speculative import Speculation, item_batch
from speedsim.workload.kernels import Program
from speedsim.workload.steps import pipelined_batch, prefill, sequential_batch, unshared_batch


@dataclass(frozen=True)
class ServerConfig:
    method: str               # speed | sequential | unshared | selfspec | specdec
    max_batch: int            # requests decoding at once
    kv_capacity_bytes: float
    prefill: str              # chunked | stream
    prefill_budget: int       # chunked: source tokens prefilled per step (at least one request)
    speculation: Speculation | None = None  # selfspec, specdec: how it drafts
    repeats: int = 1          # R of the target (its verify steps run every repeat)


class Server:
    """One device serving `requests`; `run()` simulates until every request has completed."""

    def __init__(self, session: Session, config: ServerConfig, requests: list[Request]):
        self.session, self.cfg, self.env = session, config, session.env
        self.requests = sorted(requests, key=lambda r: (r.arrival_us, r.rid))
        self.kv = simpy.Container(self.env, capacity=config.kv_capacity_bytes, init=config.kv_capacity_bytes)
        self.waiting: deque[Request] = deque()
        self.prefilling: list[Request] = []      # admitted, prefill not issued yet (chunked)
        self.decoding: list[Request] = []
        self.done = 0
        self.wake = self.env.event()
        self.steps = 0
        self.batch_sum = 0
        self.token_sum = 0
        self.queue_area = 0.0                    # integral of the waiting-queue length over time
        self.kv_area = 0.0                       # integral of KV bytes held over time
        self._last_change = 0.0
        self.queue_samples: list[tuple[float, int]] = [(0.0, 0)]

    # ------------------------------------------------------------------ bookkeeping

    def _account(self) -> None:
        """Integrate queue length and KV use up to now (call before either changes)."""
        now = self.env.now
        dt = now - self._last_change
        self.queue_area += len(self.waiting) * dt
        self.kv_area += (self.cfg.kv_capacity_bytes - self.kv.level) * dt
        self._last_change = now

    def _notify(self) -> None:
        if not self.wake.triggered:
            self.wake.succeed()

    # ------------------------------------------------------------------ processes

    def arrivals(self):
        for req in self.requests:
            if req.arrival_us > self.env.now:
                yield self.env.timeout(req.arrival_us - self.env.now)
            self._account()
            self.waiting.append(req)
            self.queue_samples.append((self.env.now, len(self.waiting)))
            self._notify()

    def _admit(self) -> list[Request]:
        admitted = []
        while self.waiting and len(self.decoding) + len(self.prefilling) < self.cfg.max_batch:
            req = self.waiting[0]
            if self.kv.level < req.kv_bytes:
                break  # first come, first served: the head of the queue waits for memory
            self._account()
            self.waiting.popleft()
            self.kv.get(req.kv_bytes)  # granted at once: the level was checked
            req.admitted_us = self.env.now
            self.queue_samples.append((self.env.now, len(self.waiting)))
            self.prefilling.append(req)
            admitted.append(req)
        return admitted

    def _prefill_program(self, req: Request) -> Program:
        p = prefill(req.seq.ctx, unshared=self.cfg.method == "unshared", prefix=req.seq.prefix)
        if req.dseq is not None:  # a draft model prefills beside its target
            p.extend(prefill(req.dseq.ctx, prefix=req.dseq.prefix))
        return p

    def _stream_prefill(self, req: Request):
        finished = yield from self.session.issue(self._prefill_program(req), 1)
        yield finished
        self.prefilling.remove(req)
        self._first_token(req)
        self._notify()

    def _first_token(self, req: Request) -> None:
        req.first_token_us = self.env.now
        if req.finished(self.cfg.method):
            self._complete(req)
        else:
            self.decoding.append(req)

    def _complete(self, req: Request) -> None:
        req.done_us = self.env.now
        self._account()
        self.kv.put(req.kv_bytes)
        self.done += 1

    def _chunk(self) -> list[Request]:
        """Requests whose prefill joins this step: in admission order, within the token budget."""
        chosen: list[Request] = []
        budget = self.cfg.prefill_budget
        for req in list(self.prefilling):
            if chosen and req.src_len > budget:
                break
            chosen.append(req)
            budget -= req.src_len
            self.prefilling.remove(req)
        return chosen

    def _decode_program(self, batch: list[Request]) -> tuple[Program, int]:
        """The batch's decode step and the token passes it computes."""
        method = self.cfg.method
        s = self.cfg.speculation
        if s is not None:  # every request takes its next step: the drafting ones together, then the verifying ones
            items = [(req.seq, req.dseq, req.items[req.next_step]) for req in batch]
            program = Program()
            for kind in ("draft", "verify"):
                group = [w for w in items if w[2].kind == kind]
                if group:
                    program.extend(item_batch(s, group, self.cfg.repeats))
            return program, sum(it.tokens for _, _, it in items)
        if method == "speed":
            work = []
            for req in batch:
                step = req.steps[req.next_step]
                work.append((req.seq, [(p, r) for p, r, _ in step.in_flight], len(step.launched)))
            return pipelined_batch(work), sum(len(f) for _, f, _ in work)
        build = sequential_batch if method == "sequential" else unshared_batch
        return build([(req.seq, req.next_step) for req in batch]), len(batch)

    def scheduler(self):
        env, cfg = self.env, self.cfg
        while self.done < len(self.requests):
            for req in self._admit():
                if cfg.prefill == "stream":
                    env.process(self._stream_prefill(req))
            pre = self._chunk() if cfg.prefill == "chunked" else []
            batch = list(self.decoding)
            if not batch and not pre:
                self.wake = env.event()
                yield self.wake
                continue
            program = Program()
            for req in pre:
                program.extend(self._prefill_program(req))
            passes = 0
            if batch:
                step, passes = self._decode_program(batch)
                program.extend(step)
            finished = yield from self.session.issue(program, 0)
            yield finished
            self.steps += 1
            self.batch_sum += len(batch)
            self.token_sum += passes
            for req in batch:
                req.next_step += 1
                if req.finished(cfg.method):
                    self.decoding.remove(req)
                    self._complete(req)
            for req in pre:
                self._first_token(req)
            yield from self.session.round_trip()  # the step's results reach the host


def run_server(session: Session, config: ServerConfig, requests: list[Request]) -> Server:
    """Simulate serving `requests` to the end; the server holds the records and counters."""
    server = Server(session, config, requests)
    env = session.env
    env.process(server.arrivals())
    env.process(server.scheduler())
    with gc_paused():
        env.run()
    server._account()
    if any(math.isnan(r.done_us) for r in server.requests):
        raise RuntimeError("a request never completed")  # a scheduler bug, not bad input
    return server
