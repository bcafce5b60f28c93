"""One stream: the engine as a plain recurrence (no SimPy), the fast path of `simulate`, sweeps and grids.

With one device stream nothing competes for compute units or DRAM bandwidth, so a program's
kernels take their stand-alone times back to back and the run reduces to two clocks:

    graph:  issue  = host + graph_launch
            end    = max(device_free, issue) + graph_start + sum of kernel times
    eager:  per kernel: issue = host + op_launch * framework ops; end = max(device_free, issue) + time;
            a synchronous host (a CPU) waits for each op: host = end
    a decode loop (`round_trip`): host = end + round_trip before the next program

The stream's time is charged by cause as `speedsim.engine.core` says: where the device is free
before the host has issued the next work (graph launch, op launches, the round trip), that gap is
`host`; the rest is the device's.

Every number comes from `speedsim.engine.core` (kernel cost, residency, totals) and
`speedsim.engine.host` (issue, graph start, round trip), which the SimPy driver uses too;
`tests/test_drivers.py` runs both on every shipped profile and requires the same times and bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from speedsim.engine.core import HOST, Device, DeviceModel, EngineRun
from speedsim.engine.memory import OnChipState
from speedsim.engine.recorder import Recorder
from speedsim.workload.kernels import Program


def run_programs(model: DeviceModel, programs: Sequence[Program], onchip: OnChipState | None = None,
                 round_trip: bool = False, recorder: Recorder | None = None, detail: bool = False) -> EngineRun:
    """Issue `programs` in order on one stream and run them to the end.

    `onchip`: what is resident when the run starts (None: a cold start). `round_trip`: a decode
    loop, each program's results reach the host before the next is issued; False: back-to-back
    calls (a measured replay loop), or the controller on the device. `detail`: each program's kernel
    classes too (`ProgramTotals.by_class`).
    """
    device = Device(model, onchip, recorder, detail)
    host = model.host
    slots = device.stream_time(0)
    busy = device.busy
    rt = host.round_trip_us if round_trip else None
    clock = device_free = 0.0  # the host's time and the time the stream is free
    starts: list[float] = []
    ends: list[float] = []
    for index, program in enumerate(programs):
        starts.append(clock)
        kernels = program.kernels
        if host.graph or not kernels:  # one launch for the whole program (none for an empty eager one)
            if host.graph and host.graph_launch_us:
                clock += host.graph_launch_us
                busy["host"] += host.graph_launch_us
            begin = max(device_free, clock)
            if begin > device_free:  # the device waits for the host
                slots[HOST] += begin - device_free
            device_free = begin + device.back_to_back(index, kernels, 0, begin)
        else:
            for k in kernels:
                issue = host.op_launch_us * k.host_ops
                clock += issue
                busy["host"] += issue
                begin = max(device_free, clock)
                if begin > device_free:
                    slots[HOST] += begin - device_free
                device_free = begin + device.back_to_back(index, (k,), 0, begin)
                if host.synchronous:
                    clock = device_free  # the host runs the op itself: it waits for it
        ends.append(device_free)
        device.close_program(index)
        if rt is not None:
            clock = max(clock, device_free) + rt  # results to the host, then the controller decides
            busy["host"] += rt
    return device.result(starts, ends)
