"""The SimPy discrete-event engine: a host that issues kernels, a device that runs them.

Processes and resources (SimPy's own idiom):

- `host`: walks the programs (one per decode step, or per measured call). In eager mode it
  spends the profile's per-kernel launch overhead before putting each kernel on its stream (and,
  on a host that runs the ops itself, a CPU, waits for each to finish before the next); in
  graph mode it spends one graph launch per program and puts the whole program at once; the
  device then starts at most one graph node per `launch_overhead_us.graph`, overlapped with the
  previous node's execution.
- one `stream` process per device stream: takes kernels in order from its `simpy.Store`,
  acquires the units the kernel can use from the device's `compute` container, runs for the
  kernel's time, releases them. Kernels on different streams overlap and then share DRAM
  bandwidth through a fluid max-min fair channel (`SharedBandwidth`).
- `OnChipCache`: which tensors are resident on-chip, so bytes split into DRAM and on-chip
  traffic as the program runs, across kernels and steps.

The engine holds no state between runs: `run` starts from the on-chip state it is given
(`OnChipState`, None = cold) and returns the final one in `SimResult.onchip`, so the same call
twice gives the same result, and a caller that wants residency to carry over passes it on.

With one stream the engine is a plain recurrence over kernel times (each program or eager
kernel starts when both the device is free and the host has issued it:
`device_free = max(device_free, issue) + sum of kernel times`; `tests/test_engine.py` checks
this). The processes earn their keep with several streams, which share the compute units
and DRAM bandwidth.

Results (`SimResult`): end time of every program, bytes per level and per tensor class, busy
time per resource, and, when a `Recorder` is attached, every kernel span for a Chrome trace.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import simpy

from speedsim.engine.bandwidth import SharedBandwidth
from speedsim.engine.cost import CostModel
from speedsim.engine.memory import OnChipCache, OnChipState, empty_class_totals
from speedsim.engine.recorder import Recorder
from speedsim.hardware.profile import HardwareProfile
from speedsim.workload.kernels import Program

_MAX_PLANS = 4096  # kernel cost plans one stream keeps

Mode = Literal["eager", "graph"]


@dataclass(frozen=True)
class ProgramTotals:
    """FLOPs, DRAM bytes (in all and per tensor class) and roofline time of one program (one stream:
    exactly its kernels; several streams: what completed between its predecessor's end and its own)."""

    flops: float
    dram_bytes: float
    roofline_us: float
    dram_bytes_by_class: dict[str, float]
    onchip_bytes: float = 0.0


@dataclass
class SimResult:
    """What one simulation produced. Times in microseconds, traffic in bytes."""

    mode: str
    program_end_us: list[float]
    kernels: int
    flops: float
    dram_bytes: float
    onchip_bytes: float
    dram_bytes_by_class: dict[str, float]
    busy_us: dict[str, float]
    roofline_us: float
    events: int = 0                  # SimPy events processed
    program_start_us: list[float] = field(default_factory=list)
    onchip: OnChipState | None = None  # residency when the run ended: pass it to the next run to continue warm
    per_program: list[ProgramTotals] = field(default_factory=list)  # in program order

    @property
    def total_us(self) -> float:
        return max(self.program_end_us, default=0.0)

    def program_us(self) -> list[float]:
        """Time attributed to each program: the gap between consecutive program ends."""
        out, prev = [], 0.0
        for end in self.program_end_us:
            out.append(end - prev)
            prev = end
        return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run a simulation without the cyclic garbage collector: a run allocates many short-lived
    objects (kernels, accesses, events) and creates almost no reference cycles, so the
    collector's passes over everything alive cost time (~10%) and free next to nothing. It is
    switched back on afterwards (if it was on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for the simulator's benchmarks)."""

    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    def step(self) -> None:
        self.processed += 1
        super().step()


class _Totals:
    """Counters of one run, local to `Engine.run` (accumulated kernel by kernel, in completion order)."""

    __slots__ = ("busy", "dram_by_class", "dram_bytes", "flops", "kernels", "mark", "onchip_bytes", "per_program",
                 "roofline_us")

    def __init__(self) -> None:
        self.kernels = 0
        self.flops = 0.0
        self.dram_bytes = 0.0
        self.onchip_bytes = 0.0
        self.roofline_us = 0.0
        self.busy = {"host": 0.0, "device": 0.0, "dram": 0.0, "round_trip": 0.0}
        self.dram_by_class = empty_class_totals()
        self.per_program: dict[int, ProgramTotals] = {}
        self.mark = ProgramTotals(0.0, 0.0, 0.0, empty_class_totals(), 0.0)

    def close_program(self, index: int) -> None:
        """Attribute what accumulated since the last program ended to program `index`."""
        now = ProgramTotals(self.flops, self.dram_bytes, self.roofline_us, dict(self.dram_by_class),
                            self.onchip_bytes)
        m = self.mark
        self.per_program[index] = ProgramTotals(
            now.flops - m.flops, now.dram_bytes - m.dram_bytes, now.roofline_us - m.roofline_us,
            {c: v - m.dram_bytes_by_class[c] for c, v in now.dram_bytes_by_class.items()},
            now.onchip_bytes - m.onchip_bytes)
        self.mark = now


class Engine:
    """One simulated device plus its host, for one hardware profile and execution mode.

    Holds only what the profile and mode fix; each `run` is independent of the ones before it.
    """

    def __init__(self, profile: HardwareProfile, mode: Mode = "graph", streams: int = 1,
                 recorder: Recorder | None = None, round_trip: bool = False):
        if mode not in ("eager", "graph"):
            raise ValueError(f"mode must be eager or graph, not {mode}")
        self.profile = profile
        self.mode = mode
        self.cost = CostModel.from_profile(profile)
        self.host_overhead_us = profile.host.launch_overhead_us[mode]
        self.graph_launch_us = profile.host.graph_launch_us
        self.synchronous = profile.host.synchronous
        self.onchip_capacity_bytes = profile.l2.usable_bytes
        self.recorder = recorder  # a sink the caller owns: every run appends its kernel spans
        self.n_streams = streams
        # a decode loop: each program's results reach the host (copy, sync, controller) before the
        # next program is issued; False = back-to-back calls, or control on the device (what-if)
        self.round_trip_us = profile.host.round_trip_us if round_trip else None

    # ------------------------------------------------------------------ processes

    def _host(self, session: Session, programs: list[tuple[Program, int]]):
        """The host of a run: issues every program in order (a decode loop waits for each step's
        results to reach the host before it issues the next)."""
        env, round_trip = session.env, self.round_trip_us
        for program, stream in programs:
            finished = yield from session.issue(program, stream)
            if round_trip is not None:
                yield finished
                yield env.timeout(round_trip)  # results to the host, then the controller decides
                session.tot.busy["host"] += round_trip
                session.tot.busy["round_trip"] += round_trip

    def _stream(self, env: simpy.Environment, sid: int, queue: simpy.Store, compute: simpy.Container | None,
                ends: dict[int, float], dram_channel: SharedBandwidth | None, onchip: OnChipCache,
                tot: _Totals):
        cost = self.cost
        by_class = tot.dram_by_class
        busy = tot.busy
        node_us = self.host_overhead_us if self.mode == "graph" else 0.0
        node_gap = self.profile.host.launch_overhead_us.graph_gap if self.mode == "graph" else 0.0
        graph_start = self.profile.host.graph_start_us if self.mode == "graph" else 0.0
        rec = self.recorder
        units = cost.units
        dram_Bpus, dram_peak_Bpus = cost.dram_Bpus, cost.dram_peak_Bpus
        serve, plan_us = onchip.serve, cost.plan_us
        # each kernel object's cost plan, worked out at its first run, and its last (DRAM bytes,
        # on-chip bytes, time): [kernel, plan, dram, onchip, us]. The kernel is kept with its plan,
        # so its id is not reused while cached; bounded, as a serving run builds new kernels.
        plans: dict[int, list[Any]] = {}
        previous = ""
        while True:
            index, kernels, last, done = yield queue.get()
            # Kernels of one graph run back to back on this stream; with a single stream nothing
            # else can compete for units or DRAM, so their spans are summed into one timeout.
            span_start = env.now
            elapsed = graph_start if len(kernels) > 1 else 0.0
            if len(plans) > _MAX_PLANS:
                plans.clear()
            if compute is None or dram_channel is None:
                # one stream: nothing yields between kernels, so the totals are summed in locals
                # (the same additions in the same order) and stored once after the program
                count, flops, dram_sum, chip_sum = tot.kernels, tot.flops, tot.dram_bytes, tot.onchip_bytes
                roofline, device, dram_busy = tot.roofline_us, busy["device"], busy["dram"]
                for k in kernels:
                    if not k.launches:  # host-side framework work: no device time
                        continue
                    dram, chip = serve(k, by_class)
                    entry = plans.get(id(k))
                    if entry is None:
                        entry = plans[id(k)] = [k, cost.plan(k), -1.0, -1.0, 0.0]
                    plan = entry[1]
                    if dram == entry[2] and chip == entry[3]:  # as at its last run (activations only, say)
                        t = entry[4]
                    else:
                        t = entry[4] = plan_us(plan, dram, chip)
                        entry[2], entry[3] = dram, chip
                    name = k.name
                    if name != previous:  # a node of another kernel: a gap, and at most one per node_us
                        t = max(t + node_gap, node_us)
                    previous = name
                    start = span_start + elapsed
                    elapsed += t
                    count += 1
                    flops += k.flops
                    dram_sum += dram
                    chip_sum += chip
                    roofline += max(dram / dram_peak_Bpus, plan[11])  # `CostModel.roofline_us`
                    device += t
                    if dram:
                        dram_busy += min(t, dram / dram_Bpus)
                    if rec is not None:
                        rec.kernel(name, sid, start, t, dram, chip, index)
                tot.kernels, tot.flops, tot.dram_bytes, tot.onchip_bytes = count, flops, dram_sum, chip_sum
                tot.roofline_us, busy["device"], busy["dram"] = roofline, device, dram_busy
            else:
                for k in kernels:
                    if not k.launches:
                        continue
                    dram, chip = serve(k, by_class)
                    entry = plans.get(id(k))
                    if entry is None:
                        entry = plans[id(k)] = [k, cost.plan(k), -1.0, -1.0, 0.0]
                    t = plan_us(entry[1], dram, chip)
                    if k.name != previous:
                        t = max(t + node_gap, node_us)
                    previous = k.name
                    # concurrent streams: hold the units this kernel can use, and move its DRAM
                    # bytes through the shared channel at no more than its stand-alone pace
                    need = min(units, k.parallel_work)
                    yield compute.get(need)
                    start = env.now
                    if dram:
                        yield env.all_of([env.timeout(t), dram_channel.transfer(dram, dram / t)])
                    else:
                        yield env.timeout(t)
                    t = env.now - start
                    yield compute.put(need)
                    tot.kernels += 1
                    tot.flops += k.flops
                    tot.dram_bytes += dram
                    tot.onchip_bytes += chip
                    tot.roofline_us += max(dram / dram_peak_Bpus, entry[1][11])
                    busy["device"] += t
                    if dram:
                        busy["dram"] += min(t, dram / dram_Bpus)
                    if rec is not None:
                        rec.kernel(k.name, sid, start, t, dram, chip, index)
            if elapsed:
                yield env.timeout(elapsed)
            if last:
                ends[index] = env.now
                tot.close_program(index)
            if done is not None:
                done.succeed()

    # ------------------------------------------------------------------ entry points

    def run(self, programs: list[Program], streams: list[int] | None = None,
            onchip: OnChipState | None = None) -> SimResult:
        """Issue `programs` in order (program i on stream `streams[i]`, default 0) and run to the end.

        `onchip`: what is resident on-chip when the run starts (None: nothing, a cold start);
        the result's `onchip` is the state at the end. The engine keeps neither.
        """
        env = CountingEnvironment()
        session = Session(self, env, max(self.n_streams, 1 + max(streams or [0])), onchip)
        env.process(self._host(session, list(zip(programs, streams or [0] * len(programs), strict=True))))
        with gc_paused():
            env.run()
        return session.result()


class Session:
    """The device of one `Engine` inside a SimPy environment the caller drives.

    `Engine.run` drives it with a host that issues a fixed list of programs; a serving
    simulation drives it with a scheduler that builds each step from what finished before.
    `issue(program, stream)` is the host's work to launch one program (a generator to `yield
    from`); its value is an event that fires when the program's last kernel ends.
    """

    def __init__(self, engine: Engine, env: CountingEnvironment, streams: int = 1,
                 onchip: OnChipState | None = None):
        self.engine, self.env = engine, env
        self.tot = _Totals()
        self.cache = OnChipCache(engine.onchip_capacity_bytes, onchip)
        self.queues = [simpy.Store(env) for _ in range(streams)]
        self.compute = simpy.Container(env, capacity=engine.cost.units, init=engine.cost.units) \
            if streams > 1 else None
        self.channel = SharedBandwidth(env, engine.cost.dram_Bpus) if streams > 1 else None
        self.ends: dict[int, float] = {}
        self.starts: list[float] = []
        for sid, q in enumerate(self.queues):
            env.process(engine._stream(env, sid, q, self.compute, self.ends, self.channel, self.cache, self.tot))

    def issue(self, program: Program, stream: int = 0):
        """Launch `program` on `stream` as the host does (graph: one launch; eager: per framework
        op, waiting for each op on a host that runs them itself); returns the completion event."""
        eng, env, busy = self.engine, self.env, self.tot.busy
        index = len(self.starts)
        self.starts.append(env.now)
        finished = env.event()
        queue = self.queues[stream]
        if eng.mode == "graph" or not program.kernels:
            if eng.mode == "graph" and eng.graph_launch_us:
                yield env.timeout(eng.graph_launch_us)
                busy["host"] += eng.graph_launch_us
            queue.put((index, program.kernels, True, finished))
            return finished
        kernels = program.kernels
        last = len(kernels) - 1
        for i, k in enumerate(kernels):
            issue = eng.host_overhead_us * k.host_ops  # per framework op the kernel takes
            yield env.timeout(issue)
            busy["host"] += issue
            done = finished if i == last else (env.event() if eng.synchronous else None)
            queue.put((index, (k,), i == last, done))
            if eng.synchronous and done is not None:
                yield done  # the host runs the op itself (a CPU): it waits for it
        return finished

    def result(self) -> SimResult:
        """What the programs issued so far produced (call after the environment has run)."""
        tot, n = self.tot, len(self.starts)
        if self.engine.recorder is not None:
            self.engine.recorder.host_spans(self.starts, self.engine.mode)
        return SimResult(
            mode=self.engine.mode,
            program_end_us=[self.ends[i] for i in range(n)],
            program_start_us=list(self.starts),
            kernels=tot.kernels,
            flops=tot.flops,
            dram_bytes=tot.dram_bytes,
            onchip_bytes=tot.onchip_bytes,
            dram_bytes_by_class=dict(tot.dram_by_class),
            busy_us=dict(tot.busy),
            roofline_us=tot.roofline_us,
            events=self.env.processed,
            onchip=self.cache.snapshot(),
            per_program=[tot.per_program[i] for i in range(n)],
        )


def time_call(profile: HardwareProfile, program: Program, mode: Mode, warmup: int = 1, repeats: int = 2) -> float:
    """Per-call time (us) of `program` replayed back to back, as measured: warm-up calls first.

    One run from a cold on-chip state: the warm-up calls leave what they read resident for the
    timed calls, as on the device.
    """
    engine = Engine(profile, mode)
    result = engine.run([program] * (warmup + repeats))
    ends = result.program_end_us
    return (ends[-1] - ends[warmup - 1]) / repeats if warmup else ends[-1] / repeats
