"""Several streams: the engine as a SimPy discrete-event model, wherever work truly overlaps.

Processes and resources, in SimPy's own idiom:

- a host (`Session.issue`, driven by `run_programs` or by the serving scheduler) launches each
  program as `speedsim.engine.host` says: one graph launch, or the launch overhead per
  framework op (a synchronous host waits for each op); a decode loop waits for each program's
  results (`Session.round_trip`, host busy time) before it issues the next;
- one process per device stream takes its programs in order from a `simpy.Store`. With several
  streams (or `shared=True`), each kernel holds the compute units it can use (a
  `simpy.Container` of the device's units) and moves its DRAM bytes through a max-min fair
  channel (`SharedBandwidth`) at no more than its stand-alone pace; its residency is decided
  when it starts, once it holds its units. A collective (tensor or pipeline parallelism) moves
  its bus bytes through a second such channel, the interconnect's, so that several in flight
  contend. A graph pays its start before its first kernel.
- with one stream and `shared=False` nothing can compete, so a program's kernels run back to
  back and the stream advances its clock once per program (`Device.back_to_back`, exactly the
  recurrence's step): the serving simulation's decode loop on one stream. `tests/test_drivers.py`
  checks that the shared path with one stream gives the recurrence's times.

Kernel cost, residency and totals are `speedsim.engine.core`'s, as for the recurrence, and so is
the charging of time by cause: each stream's time, from 0 to its last program's end, is `host`
while it waits for the host to issue its next work, the device's causes while it runs (a graph's
start, each kernel's time alone), and `wait` while a kernel waits for compute units or runs longer
than alone because another stream shares DRAM.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import simpy

from speedsim.engine.bandwidth import SharedBandwidth
from speedsim.engine.core import HOST, Device, DeviceModel, EngineRun, gc_paused
from speedsim.engine.memory import OnChipState
from speedsim.engine.recorder import Recorder
from speedsim.hardware.parts import collective_shape
from speedsim.workload.kernels import COLLECTIVE, Kernel, Program


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for the serving result and benchmarks)."""

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def step(self) -> None:
        self.processed += 1
        super().step()


class Session:
    """The device of one run inside a SimPy environment that the caller drives.

    `issue(program, stream)` is the host's work to launch one program (a generator to `yield from`);
    its value is an event that fires when the program's last kernel ends. `round_trip()` is the
    host's wait for a decode step's results.
    """

    def __init__(self, model: DeviceModel, env: simpy.Environment, streams: int = 1,
                 onchip: OnChipState | None = None, recorder: Recorder | None = None, shared: bool | None = None,
                 detail: bool = False):
        self.model, self.env, self.host = model, env, model.host
        self.device = Device(model, onchip, recorder, detail)
        self.queues = [simpy.Store(env) for _ in range(streams)]
        shared = streams > 1 if shared is None else shared
        units = model.cost.units
        self.compute = simpy.Container(env, capacity=units, init=units) if shared else None
        self.channel = SharedBandwidth(env, model.cost.dram_Bpus) if shared else None
        # the interconnect, shared the same way by the collectives of several streams (none: one device)
        per_byte = model.cost.link_us_per_byte
        self.link = SharedBandwidth(env, 1.0 / per_byte) if shared and per_byte > 0 else None
        self.ends: dict[int, float] = {}
        self.starts: list[float] = []
        for sid in range(streams):
            env.process(self._stream(sid))

    def issue(self, program: Program, stream: int = 0) -> Generator[simpy.Event, Any, simpy.Event]:
        """Launch `program` on `stream` as the host does; returns the event of its completion."""
        host, env, busy = self.host, self.env, self.device.busy
        index = len(self.starts)
        self.starts.append(env.now)
        finished = env.event()
        queue = self.queues[stream]
        kernels = program.kernels
        if host.graph or not kernels:  # one launch for the whole program (none for an empty eager one)
            if host.graph and host.graph_launch_us:
                yield env.timeout(host.graph_launch_us)
                busy["host"] += host.graph_launch_us
            queue.put((index, kernels, True, finished))
            return finished
        last = len(kernels) - 1
        for i, k in enumerate(kernels):
            issue = host.op_launch_us * k.host_ops  # per framework op the kernel takes
            yield env.timeout(issue)
            busy["host"] += issue
            done = finished if i == last else (env.event() if host.synchronous else None)
            queue.put((index, (k,), i == last, done))
            if host.synchronous and done is not None:
                yield done  # the host runs the op itself (a CPU): it waits for it
        return finished

    def round_trip(self) -> Generator[simpy.Event, Any, None]:
        """A decode step's results reach the host (copy, sync, controller): host busy time."""
        rt = self.host.round_trip_us
        if rt:
            yield self.env.timeout(rt)
            self.device.busy["host"] += rt

    def _stream(self, sid: int) -> Generator[simpy.Event, Any, None]:
        env, device, queue = self.env, self.device, self.queues[sid]
        compute, channel, units = self.compute, self.channel, self.model.cost.units
        slots = device.stream_time(sid)
        free = 0.0  # when the stream last finished its work: its time up to here is charged
        while True:
            index, kernels, last, done = yield queue.get()
            if env.now > free:  # the stream waited for the host to issue this
                slots[HOST] += env.now - free
            if compute is None or channel is None:  # nothing can compete: back to back
                elapsed = device.back_to_back(index, kernels, sid, env.now)
                if elapsed:
                    yield env.timeout(elapsed)
            else:
                start_us = self.host.start_us(len(kernels))
                if start_us:
                    yield env.timeout(start_us)  # the graph's start, before its first node
                    device.graph_started(sid, start_us)
                for k in kernels:
                    if not k.launches:
                        continue
                    need = min(units, k.parallel_work)
                    asked = env.now
                    yield compute.get(need)
                    t, dram, chip, plan = device.alone(k, sid)  # residency as the kernel starts
                    begin = env.now
                    bus = self._bus_bytes(k)
                    if dram:
                        yield env.all_of([env.timeout(t), channel.transfer(dram, dram / t)])
                    elif bus:  # a collective's bytes share the links with the other streams' collectives
                        assert self.link is not None
                        alone = bus * self.model.cost.link_us_per_byte
                        yield env.all_of([env.timeout(t), self.link.transfer(bus, bus / alone)])
                    else:
                        yield env.timeout(t)
                    yield compute.put(need)
                    took = env.now - begin
                    device.waited(k, sid, (begin - asked) + (took - t))  # for units, and DRAM beyond alone
                    device.account(k, plan, took, dram, chip, sid, begin, index)
            free = env.now
            if last:
                self.ends[index] = env.now
                device.close_program(index, sid)
            if done is not None:
                done.succeed()

    def _bus_bytes(self, k: Kernel) -> float:
        """The bytes a collective moves over each device's link (0 for any other kernel, or without links)."""
        if self.link is None or k.kclass != COLLECTIVE or k.peers <= 1:
            return 0.0
        return k.message_bytes * collective_shape(k.kind, k.peers)[1]

    def result(self) -> EngineRun:
        """What the programs issued so far produced (call after the environment has run)."""
        return self.device.result(self.starts, [self.ends[i] for i in range(len(self.starts))])


def run_programs(model: DeviceModel, programs: Sequence[Program], streams: Sequence[int] | None = None,
                 onchip: OnChipState | None = None, round_trip: bool = False, recorder: Recorder | None = None,
                 shared: bool | None = None, detail: bool = False) -> EngineRun:
    """Issue `programs` in order (program i on stream `streams[i]`, default 0) and run to the end.

    `round_trip`: a decode loop (the host waits for each program's results before the next);
    `shared`: kernels hold compute units and share DRAM even with one stream (default: with several);
    `detail`: each program's kernel classes too (`ProgramTotals.by_class`).
    """
    env = CountingEnvironment()
    on = list(streams) if streams is not None else [0] * len(programs)
    session = Session(model, env, 1 + max(on, default=0), onchip, recorder, shared, detail)

    def host() -> Generator[simpy.Event, Any, None]:
        for program, stream in zip(programs, on, strict=True):
            finished = yield from session.issue(program, stream)
            if round_trip:
                yield finished
                yield from session.round_trip()

    env.process(host())
    with gc_paused():
        env.run()
    return session.result()
