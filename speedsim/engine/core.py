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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from speedsim.engine.cost import CostModel, KernelPlan
from speedsim.engine.host import HostTiming, Mode
from speedsim.engine.memory import OnChipCache, OnChipState, empty_class_totals
from speedsim.engine.recorder import Recorder
from speedsim.hardware.profile import HardwareProfile
from speedsim.workload.kernels import Kernel

_MAX_PLANS = 4096  # kernel cost plans a run keeps (a serving run builds new kernels every step)


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
                 recorder: Recorder | None = None):
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
        # each kernel object's plan and its last (DRAM bytes, on-chip bytes, time): [kernel, plan, dram,
        # onchip, us]; the kernel is kept with its plan so that its id is not reused while cached
        self._plans: dict[int, list] = {}

    # ------------------------------------------------------------------ one kernel

    def _entry(self, k: Kernel) -> list:
        entry = self._plans.get(id(k))
        if entry is None:
            if len(self._plans) > _MAX_PLANS:
                self._plans.clear()
            entry = self._plans[id(k)] = [k, self.cost.plan(k), -1.0, -1.0, 0.0]
        return entry

    def alone(self, k: Kernel, stream: int) -> tuple[float, float, float, KernelPlan]:
        """Serve `k`'s accesses (residency changes now) and return (time alone us, DRAM bytes, on-chip
        bytes, plan). Only for kernels that launch (`k.launches`)."""
        dram, chip = self.cache.access(k, self.dram_by_class)
        entry = self._entry(k)
        t = self.cost.plan_us(entry[1], dram, chip)
        if k.name != self._last_node.get(stream, ""):  # a node of another kernel
            t = max(t + self.host.node_gap_us, self.host.node_interval_us)
        self._last_node[stream] = k.name
        return t, dram, chip, entry[1]

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
        with the totals in locals (the simulator's hot loop; `tests/test_drivers.py` checks that the two agree)."""
        elapsed = self.host.start_us(len(kernels))
        cost, access, by_class, rec = self.cost, self.cache.access, self.dram_by_class, self.recorder
        plan_us, node_gap, node_interval = cost.plan_us, self.host.node_gap_us, self.host.node_interval_us
        dram_Bpus, dram_peak_Bpus = cost.dram_Bpus, cost.dram_peak_Bpus
        plans = self._plans
        previous = self._last_node.get(stream, "")
        count, flops, dram_sum, chip_sum = self.kernels, self.flops, self.dram_bytes, self.onchip_bytes
        roofline, device, dram_busy = self.roofline_us, self.busy["device"], self.busy["dram"]
        for k in kernels:
            if not k.launches:  # host-side framework work: no device time
                continue
            dram, chip = access(k, by_class)
            entry = plans.get(id(k))
            if entry is None:
                entry = self._entry(k)
            plan = entry[1]
            if dram == entry[2] and chip == entry[3]:  # as at its last run (activations only, say)
                t = entry[4]
            else:
                t = entry[4] = plan_us(plan, dram, chip)
                entry[2], entry[3] = dram, chip
            name = k.name
            if name != previous:
                t = max(t + node_gap, node_interval)
            previous = name
            if rec is not None:
                rec.kernel(name, stream, start + elapsed, t, dram, chip, program)
            elapsed += t
            count += 1
            flops += k.flops
            dram_sum += dram
            chip_sum += chip
            roofline += max(dram / dram_peak_Bpus, plan.compute_floor_us)
            device += t
            if dram:
                dram_busy += min(t, dram / dram_Bpus)
        self._last_node[stream] = previous
        self.kernels, self.flops, self.dram_bytes, self.onchip_bytes = count, flops, dram_sum, chip_sum
        self.roofline_us, self.busy["device"], self.busy["dram"] = roofline, device, dram_busy
        return elapsed

    # ------------------------------------------------------------------ programs and the run

    def close_program(self, index: int) -> None:
        """Attribute what accumulated since the last program ended to program `index`."""
        now = ProgramTotals(self.flops, self.dram_bytes, self.roofline_us, dict(self.dram_by_class),
                            self.onchip_bytes)
        m = self._mark
        self.per_program[index] = ProgramTotals(
            now.flops - m.flops, now.dram_bytes - m.dram_bytes, now.roofline_us - m.roofline_us,
            {c: v - m.dram_bytes_by_class[c] for c, v in now.dram_bytes_by_class.items()},
            now.onchip_bytes - m.onchip_bytes)
        self._mark = now

    def result(self, starts: list[float], ends: list[float]) -> EngineRun:
        """The run's result, programs in issue order (`starts`: host issue times; `ends`: device ends)."""
        if self.recorder is not None:
            self.recorder.host_spans(starts, self.model.mode)
        return EngineRun(
            mode=self.model.mode, program_end_us=list(ends), program_start_us=list(starts),
            kernels=self.kernels, flops=self.flops, dram_bytes=self.dram_bytes, onchip_bytes=self.onchip_bytes,
            dram_bytes_by_class=dict(self.dram_by_class), busy_us=dict(self.busy), roofline_us=self.roofline_us,
            onchip=self.cache.snapshot(), per_program=[self.per_program[i] for i in range(len(ends))])
