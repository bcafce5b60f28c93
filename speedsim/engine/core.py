"""The engine core: what each kernel costs on the device and leaves on-chip, and what a run adds up.

Both drivers, the recurrence (`speedsim.engine.recurrence`, one stream) and SimPy
(`speedsim.engine.des`, several streams), time every kernel here and nowhere else:

- `Device.alone(kernel, stream)`: serve the kernel's accesses from on-chip memory or DRAM (the
  residency of `speedsim.engine.memory`, shared by every stream), cost it alone on the device
  (`speedsim.engine.cost`), and apply the graph node rule of `speedsim.engine.host`;
- `Device.account(...)`: add the kernel, at the time it really took, to the run's totals and to
  the recorder;
- `Device.back_to_back(...)`: a program's kernels run one after the other with nothing else on
  the device, the two calls above for each kernel (written out, with the totals in locals: it is
  the simulator's hot loop). It returns the program's device time.

A `Device` is one run's state: residency, totals, each stream's last node, the cost plans of the
kernels seen so far. It starts from the on-chip state it is given and `result` hands back the
final one: nothing carries over between runs unless the caller passes it on.

**Time by cause.** Every microsecond of a stream's time, from 0 to its last program's end, is
charged to exactly one of `CAUSES`, as it is simulated (a program's share is in its
`ProgramTotals.time_by_cause`, the run's in `EngineRun.time_by_cause_us`):

- `host`: the stream waits for the host: the host issues work (graph launch, eager op launches)
  or waits for a step's results (round trip, the loop's own work) while the device is idle. Host
  work that overlaps device work costs nothing;
- `launch`: device time of the launch machinery: a graph's start before its first node, and the
  node rule (`node_gap_us` added to a node of another kernel; where `node_interval_us` bounds a
  node, all of that node's time);
- `latency`, `dram`, `onchip`, `compute`: each kernel's own time, split by `CostModel.plan_parts`
  (fixed and first-byte latency; the soft maximum of memory and compute split by each one's
  share m^p / (m^p + c^p); memory time to the term that bounds it);
- `wait`: with several streams (serving), a kernel waiting for compute units another stream
  holds, or slowed by DRAM bandwidth another stream uses (its time beyond its time alone).

A maximum charges all of its time to the term that bounds it and a soft maximum splits by the
terms' shares: both are what the time's derivative says, so a cause's share of a kernel is the
elasticity of the kernel's time in that cause's time, and a cause that carries no time has no
elasticity. With several streams each stream is charged separately (their sum is the streams'
total time, not the makespan); a program's share is its stream's time since that stream's last
program ended.

With `detail`, the device also totals each program's kernels by class (`KERNEL_CLASSES`):
kernels, time, bytes, FLOPs and the time by cause (`ClassTotals`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from speedsim.engine.cost import CostModel, KernelPlan
from speedsim.engine.host import HostTiming, Mode
from speedsim.engine.memory import OnChipCache, OnChipState, empty_class_totals
from speedsim.engine.recorder import Recorder
from speedsim.hardware.profile import HardwareProfile
from speedsim.workload.kernels import COLLECTIVE, Kernel

_MAX_PLANS = 4096  # kernel cost plans a run keeps (a serving run builds new kernels every step)

# What a stream's time is charged to (the module docstring says the rule), in this order.
CAUSES = ("host", "launch", "latency", "dram", "onchip", "compute", "interconnect", "wait")
CAUSE_LABELS = {"host": "host (issue, round trip)", "launch": "launch", "latency": "fixed latency",
                "dram": "DRAM", "onchip": "on-chip", "compute": "compute", "interconnect": "interconnect (collectives)",
                "wait": "waiting on another stream"}
# A stream's running totals (one list per stream): host, a graph's start, the node rule, latency, DRAM,
# on-chip, the device time of programs (graph start and kernels), wait. Compute is what the device time
# leaves after the start, the node rule and the three kernel parts.
HOST, START, NODE, LATENCY, DRAM, ONCHIP, DEVICE, WAIT, LINK = range(9)  # (`back_to_back` writes 1 to 6, 8 out)
_SLOTS = 9


def causes_of(slots: Sequence[float]) -> dict[str, float]:
    """A stream's running totals (`HOST`, ...) as time by cause (`CAUSES`), us. Compute is the device
    time less its other parts: a difference that rounding can leave a hair below 0, set to 0."""
    compute = slots[DEVICE] - slots[START] - slots[NODE] - slots[LATENCY] - slots[DRAM] - slots[ONCHIP] - slots[LINK]
    if compute < 0.0 and compute > -1e-9 * max(1.0, slots[DEVICE]):
        compute = 0.0
    return {"host": slots[HOST], "launch": slots[START] + slots[NODE], "latency": slots[LATENCY],
            "dram": slots[DRAM], "onchip": slots[ONCHIP], "compute": compute, "interconnect": slots[LINK],
            "wait": slots[WAIT]}


class ClassTotals(NamedTuple):
    """One kernel class's kernels in a program (`Device(detail=True)`): how many, their time (us, the
    node rule included), bytes (DRAM, and every byte through the on-chip level), FLOPs and the time
    by cause (compute: the time less the other parts)."""

    kernels: int
    time_us: float
    dram_bytes: float
    onchip_bytes: float
    flops: float
    latency_us: float
    dram_us: float
    onchip_us: float
    launch_us: float
    wait_us: float
    link_us: float = 0.0

    @property
    def compute_us(self) -> float:
        rest = self.time_us - self.latency_us - self.dram_us - self.onchip_us - self.launch_us - self.wait_us \
            - self.link_us
        return 0.0 if rest < 0.0 and rest > -1e-9 * max(1.0, self.time_us) else rest

    def by_cause(self) -> dict[str, float]:
        """The class's time by cause (`CAUSES`; host: none, kernels do not wait for the host)."""
        return {"host": 0.0, "launch": self.launch_us, "latency": self.latency_us, "dram": self.dram_us,
                "onchip": self.onchip_us, "compute": self.compute_us, "interconnect": self.link_us,
                "wait": self.wait_us}

    def plus(self, other: ClassTotals) -> ClassTotals:
        """The totals of both (two programs' kernels of one class)."""
        return ClassTotals(self.kernels + other.kernels,
                           *(a + b for a, b in zip(self[1:], other[1:], strict=True)))


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


@dataclass(frozen=True)
class ProgramTotals:
    """FLOPs, DRAM bytes (in all and per tensor class) and roofline time of one program (one stream:
    exactly its kernels; several streams: what completed between its predecessor's end and its own)."""

    flops: float
    dram_bytes: float
    roofline_us: float
    dram_bytes_by_class: dict[str, float]
    onchip_bytes: float = 0.0
    time_by_cause: dict[str, float] = field(default_factory=dict)  # us by `CAUSES`: its stream's time
    by_class: dict[str, ClassTotals] = field(default_factory=dict)  # per kernel class (`Device(detail=True)`)


@dataclass
class EngineRun:
    """What one engine run produced. Times in microseconds, traffic in bytes."""

    mode: str
    program_end_us: list[float]
    kernels: int
    flops: float
    dram_bytes: float
    onchip_bytes: float
    dram_bytes_by_class: dict[str, float]
    busy_us: dict[str, float]          # host, device (a kernel runs), dram (DRAM streams at its rate)
    roofline_us: float
    program_start_us: list[float] = field(default_factory=list)
    onchip: OnChipState | None = None  # residency when the run ended: pass it to the next run to continue warm
    per_program: list[ProgramTotals] = field(default_factory=list)  # in program order
    time_by_cause_us: dict[str, float] = field(default_factory=dict)  # every stream's time by `CAUSES`

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


@dataclass(frozen=True)
class DeviceModel:
    """What a profile and an execution mode fix for every run: the cost model, the host, the on-chip level."""

    profile: HardwareProfile
    mode: Mode
    cost: CostModel
    host: HostTiming
    onchip_capacity_bytes: float

    @classmethod
    def of(cls, profile: HardwareProfile, mode: Mode) -> DeviceModel:
        host = HostTiming.of(profile, mode)  # checks the mode
        return cls(profile, mode, CostModel.from_profile(profile), host, profile.l2.usable_bytes)


class Device:
    """One run's device state (see the module docstring); the drivers call it kernel by kernel."""

    def __init__(self, model: DeviceModel, onchip: OnChipState | None = None,
                 recorder: Recorder | None = None, detail: bool = False):
        self.model, self.cost, self.host = model, model.cost, model.host
        self.cache = OnChipCache(model.onchip_capacity_bytes, onchip)
        self.recorder = recorder
        self.kernels = 0
        self.flops = self.dram_bytes = self.onchip_bytes = self.roofline_us = 0.0
        self.busy = {"host": 0.0, "device": 0.0, "dram": 0.0}
        self.dram_by_class = empty_class_totals()
        self.per_program: dict[int, ProgramTotals] = {}
        self._mark = ProgramTotals(0.0, 0.0, 0.0, empty_class_totals(), 0.0)
        self._last_node: dict[int, str] = {}  # per stream: the kernel of its last graph node
        # each kernel object's plan and its last DRAM bytes, on-chip bytes and timing: [kernel, plan, dram,
        # onchip, (time alone, latency, DRAM and on-chip parts (`CostModel.plan_parts`), roofline term, DRAM
        # streaming time, interconnect part)]; the kernel is kept with its plan so that its id is not reused while cached
        self._plans: dict[int, list] = {}
        # per stream: its time by slot (HOST, ...) since its last program ended, and its run total
        self._time: dict[int, list[float]] = {}
        self._time_total = [0.0] * _SLOTS
        # detail: per stream, the current program's kernel classes: [kernels, time, dram, onchip, flops,
        # latency, dram us, on-chip us, launch us, wait us]
        self._classes: dict[int, dict[str, list[float]]] | None = {} if detail else None

    # ------------------------------------------------------------------ one kernel

    def _entry(self, k: Kernel) -> list:
        entry = self._plans.get(id(k))
        if entry is None:
            if len(self._plans) > _MAX_PLANS:
                self._plans.clear()
            entry = self._plans[id(k)] = [k, self.cost.plan(k), -1.0, -1.0, None]
        return entry

    def stream_time(self, stream: int) -> list[float]:
        """`stream`'s running time by slot (`HOST`, `START`, ...) since its last program ended: a driver
        adds the time the stream waits for the host (`HOST`) or another stream (`WAIT`), and a graph's
        start when it runs kernels itself (`START`). The same list for the whole run."""
        slots = self._time.get(stream)
        if slots is None:
            slots = self._time[stream] = [0.0] * _SLOTS
        return slots

    def _class_slots(self, stream: int, kclass: str) -> list[float]:
        assert self._classes is not None
        classes = self._classes.setdefault(stream, {})
        slots = classes.get(kclass)
        if slots is None:
            slots = classes[kclass] = [0.0] * 11
        return slots

    def alone(self, k: Kernel, stream: int) -> tuple[float, float, float, KernelPlan]:
        """Serve `k`'s accesses (residency changes now) and return (time alone us, DRAM bytes, on-chip
        bytes, plan); the time is charged to `stream` by cause. Only for kernels that launch (`k.launches`)."""
        dram, chip = self.cache.access(k, self.dram_by_class)
        entry = self._entry(k)
        t, lat, dram_us, chip_us = self.cost.plan_parts(entry[1], dram, chip)
        link = 0.0
        if k.kclass == COLLECTIVE:  # its fixed time is the interconnect's
            link, lat = lat, 0.0
        node = 0.0
        if k.name != self._last_node.get(stream, ""):  # a node of another kernel
            t2 = t + self.host.node_gap_us
            if t2 < self.host.node_interval_us:  # the node interval bounds the node: all of it is launch
                t = node = self.host.node_interval_us
                lat = dram_us = chip_us = link = 0.0
            else:
                t, node = t2, self.host.node_gap_us
        self._last_node[stream] = k.name
        slots = self.stream_time(stream)
        slots[NODE] += node
        slots[LINK] += link
        slots[LATENCY] += lat
        slots[DRAM] += dram_us
        slots[ONCHIP] += chip_us
        slots[DEVICE] += t
        if self._classes is not None:
            c = self._class_slots(stream, k.kclass)
            for i, v in enumerate((1.0, t, dram, chip, k.flops, lat, dram_us, chip_us, node)):
                c[i] += v
            c[10] += link
        return t, dram, chip, entry[1]

    def graph_started(self, stream: int, us: float) -> None:
        """A graph on `stream` took `us` from its start to its first node (`START`, device time)."""
        slots = self.stream_time(stream)
        slots[START] += us
        slots[DEVICE] += us

    def waited(self, k: Kernel, stream: int, us: float) -> None:
        """Kernel `k` on `stream` waited `us` for another stream (compute units, shared DRAM): `WAIT`."""
        self.stream_time(stream)[WAIT] += us
        if self._classes is not None:
            c = self._class_slots(stream, k.kclass)
            c[1] += us
            c[9] += us

    def account(self, k: Kernel, plan: KernelPlan, t: float, dram: float, chip: float, stream: int, start: float,
                program: int) -> None:
        """Add kernel `k` of `program`, which took `t` us from `start` on `stream`, to the run."""
        self.kernels += 1
        self.flops += k.flops
        self.dram_bytes += dram
        self.onchip_bytes += chip
        self.roofline_us += max(dram / self.cost.dram_peak_Bpus, plan.compute_floor_us)
        self.busy["device"] += t
        if dram:
            self.busy["dram"] += min(t, dram / self.cost.dram_Bpus)
        if self.recorder is not None:
            self.recorder.kernel(k.name, stream, start, t, dram, chip, program)

    def back_to_back(self, program: int, kernels: Sequence[Kernel], stream: int, start: float) -> float:
        """Run `kernels` (of program index `program`) one after the other from `start` with nothing else on
        the device; return their device time, the graph's start included.

        `alone` and `account` for each kernel, written out: the same operations in the same order,
        with the totals in locals (the simulator's hot loop; `tests/test_drivers.py` checks that the two
        agree). A kernel's timing is kept with its plan while its bytes stay the same: its time and parts,
        its roofline term and its DRAM streaming time (`account`'s min(t, DRAM time) is the DRAM time: a
        kernel never takes less than its bytes at the achievable bandwidth)."""
        graph_start = elapsed = self.host.start_us(len(kernels))
        access, by_class, rec = self.cache.access, self.dram_by_class, self.recorder
        cost, node_gap, node_interval = self.cost, self.host.node_gap_us, self.host.node_interval_us
        plan_parts, dram_Bpus, dram_peak_Bpus = cost.plan_parts, cost.dram_Bpus, cost.dram_peak_Bpus
        plans = self._plans
        classes = None if self._classes is None else self._classes.setdefault(stream, {})
        slots = self._time.get(stream)
        if slots is None:
            slots = self.stream_time(stream)
        previous = self._last_node.get(stream, "")
        count, flops, dram_sum, chip_sum = self.kernels, self.flops, self.dram_bytes, self.onchip_bytes
        roofline, device, dram_busy = self.roofline_us, self.busy["device"], self.busy["dram"]
        node, lat_sum, dram_us_sum, chip_us_sum = slots[2], slots[3], slots[4], slots[5]  # NODE ... ONCHIP
        link_sum = slots[8]  # LINK
        for k in kernels:
            if not k.launches:  # host-side framework work: no device time
                continue
            dram, chip = access(k, by_class)
            entry = plans.get(id(k))
            if entry is None:
                entry = self._entry(k)
            if dram == entry[2] and chip == entry[3]:  # as at its last run (activations only, say)
                t, lat, dram_us, chip_us, roof, streaming, link = entry[4]
            else:
                plan = entry[1]
                t, lat, dram_us, chip_us = plan_parts(plan, dram, chip)
                roof = max(dram / dram_peak_Bpus, plan.compute_floor_us)
                streaming = dram / dram_Bpus if dram else 0.0
                link = 0.0
                if k.kclass == COLLECTIVE:  # its fixed time is the interconnect's (decided once per timing)
                    link, lat = lat, 0.0
                entry[2], entry[3], entry[4] = dram, chip, (t, lat, dram_us, chip_us, roof, streaming, link)
            name = k.name
            gap = 0.0
            if name != previous:
                t2 = t + node_gap
                if t2 < node_interval:  # the node interval bounds the node: all of it is launch
                    t = gap = node_interval
                    lat = dram_us = chip_us = link = 0.0
                else:
                    t, gap = t2, node_gap
                node += gap
            previous = name
            if rec is not None:
                rec.kernel(name, stream, start + elapsed, t, dram, chip, program)
            if classes is not None:
                c = classes.get(k.kclass)
                if c is None:
                    c = classes[k.kclass] = [0.0] * 11
                c[0] += 1.0
                c[1] += t
                c[2] += dram
                c[3] += chip
                c[4] += k.flops
                c[5] += lat
                c[6] += dram_us
                c[7] += chip_us
                c[8] += gap
                c[10] += link
            elapsed += t
            count += 1
            flops += k.flops
            dram_sum += dram
            chip_sum += chip
            roofline += roof
            device += t
            dram_busy += streaming
            lat_sum += lat
            dram_us_sum += dram_us
            chip_us_sum += chip_us
            link_sum += link
        self._last_node[stream] = previous
        self.kernels, self.flops, self.dram_bytes, self.onchip_bytes = count, flops, dram_sum, chip_sum
        self.roofline_us, self.busy["device"], self.busy["dram"] = roofline, device, dram_busy
        slots[2], slots[3], slots[4], slots[5], slots[8] = node, lat_sum, dram_us_sum, chip_us_sum, link_sum
        slots[1] += graph_start  # START
        slots[6] += elapsed      # DEVICE
        return elapsed

    # ------------------------------------------------------------------ programs and the run

    def close_program(self, index: int, stream: int = 0) -> None:
        """Attribute what accumulated since the last program ended to program `index` (its time: what
        accumulated on `stream`, the program's own, since that stream's last program ended)."""
        now = ProgramTotals(self.flops, self.dram_bytes, self.roofline_us, dict(self.dram_by_class),
                            self.onchip_bytes)
        m = self._mark
        slots = self.stream_time(stream)
        time = causes_of(slots)
        total = self._time_total
        for i, v in enumerate(slots):
            total[i] += v
            slots[i] = 0.0
        by_class = {}
        if self._classes is not None:
            current = self._classes.pop(stream, {})
            by_class = {c: ClassTotals(int(v[0]), *v[1:]) for c, v in current.items()}
        self.per_program[index] = ProgramTotals(
            now.flops - m.flops, now.dram_bytes - m.dram_bytes, now.roofline_us - m.roofline_us,
            {c: v - m.dram_bytes_by_class[c] for c, v in now.dram_bytes_by_class.items()},
            now.onchip_bytes - m.onchip_bytes, time, by_class)
        self._mark = now

    def result(self, starts: list[float], ends: list[float]) -> EngineRun:
        """The run's result, programs in issue order (`starts`: host issue times; `ends`: device ends)."""
        if self.recorder is not None:
            self.recorder.host_spans(starts, self.model.mode)
        total = list(self._time_total)
        for slots in self._time.values():  # what no program closed yet
            for i, v in enumerate(slots):
                total[i] += v
        return EngineRun(
            mode=self.model.mode, program_end_us=list(ends), program_start_us=list(starts),
            kernels=self.kernels, flops=self.flops, dram_bytes=self.dram_bytes, onchip_bytes=self.onchip_bytes,
            dram_bytes_by_class=dict(self.dram_by_class), busy_us=dict(self.busy), roofline_us=self.roofline_us,
            onchip=self.cache.snapshot(), per_program=[self.per_program[i] for i in range(len(ends))],
            time_by_cause_us=causes_of(total))
