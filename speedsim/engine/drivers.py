"""`Engine`: one device and its host for a profile and an execution mode, and its two drivers.

`Engine.run` is the recurrence (one stream: `simulate`, sweeps, validation); `Engine.run_streams`
is SimPy (several streams sharing compute units and DRAM); `Engine.session` hands a SimPy
`Session` to a caller that drives the host itself (the serving scheduler). All three time
kernels with the same core (`speedsim.engine.core`) and host (`speedsim.engine.host`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import simpy

from speedsim.engine import des, recurrence
from speedsim.engine.core import DeviceModel, EngineRun, gc_paused
from speedsim.engine.host import Mode
from speedsim.engine.memory import OnChipState
from speedsim.engine.recorder import Recorder
from speedsim.hardware.profile import HardwareProfile
from speedsim.workload.kernels import Program


class Engine:
    """One simulated device plus its host for `profile` in `mode`; each run starts from the on-chip
    state it is given (None: cold) and keeps nothing. `recorder`: a sink the caller owns, to which
    every run appends its kernel spans. `round_trip_us`: the host's time between the end of one program
    and the issue of the next in a decode loop, if not the profile's `host.round_trip_us` (a loop that
    does more between its steps, such as `speedsim.simulate.loop`'s). `detail`: every run also totals
    each program's kernels by class (`ProgramTotals.by_class`; a little slower)."""

    def __init__(self, profile: HardwareProfile, mode: Mode = "graph", recorder: Recorder | None = None,
                 round_trip_us: float | None = None, detail: bool = False):
        self.profile = profile
        self.mode = mode
        model = DeviceModel.of(profile, mode)
        if round_trip_us is not None:
            model = dataclasses.replace(model, host=dataclasses.replace(model.host, round_trip_us=round_trip_us))
        self.model = model
        self.recorder = recorder
        self.detail = detail

    def run(self, programs: Sequence[Program], onchip: OnChipState | None = None,
            round_trip: bool = False) -> EngineRun:
        """`programs` in order on one stream (`speedsim.engine.recurrence`). `round_trip`: a decode
        loop, whose host waits for each program's results before it issues the next."""
        with gc_paused():
            return recurrence.run_programs(self.model, programs, onchip, round_trip, self.recorder, self.detail)

    def run_streams(self, programs: Sequence[Program], streams: Sequence[int], onchip: OnChipState | None = None,
                    round_trip: bool = False, shared: bool | None = None) -> EngineRun:
        """`programs` in order, program i on stream `streams[i]`, in SimPy (`speedsim.engine.des`)."""
        return des.run_programs(self.model, programs, streams, onchip, round_trip, self.recorder, shared,
                                self.detail)

    def session(self, env: simpy.Environment, streams: int = 1, onchip: OnChipState | None = None) -> des.Session:
        """A SimPy `Session` of this device in `env`, for a caller that drives the host itself."""
        return des.Session(self.model, env, streams, onchip, self.recorder, detail=self.detail)


def time_call(profile: HardwareProfile, program: Program, mode: Mode, warmup: int = 1, repeats: int = 2) -> float:
    """Per-call time (us) of `program` replayed back to back, as measured: warm-up calls first, no
    host round trip between calls (a timing loop does not wait for each call's results).

    One run from a cold on-chip state: the warm-up calls leave what they read resident for the
    timed calls, as on the device.
    """
    result = Engine(profile, mode).run([program] * (warmup + repeats))
    ends = result.program_end_us
    return (ends[-1] - ends[warmup - 1]) / repeats if warmup else ends[-1] / repeats
