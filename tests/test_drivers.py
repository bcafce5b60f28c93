"""The engine's two drivers agree: the recurrence (one stream) and SimPy, on every shipped profile and a real trace.

SimPy runs in two ways: its general path (each kernel holds compute units and moves its DRAM
bytes through the shared channel, as with several streams) forced onto one stream, and its
one-stream path (a program's kernels back to back). Both must give the recurrence's times,
bytes and busy times, to 1e-9 relative, with and without the host round trip.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest

from speedsim.engine import Engine, EngineRun
from speedsim.engine.des import CountingEnvironment
from speedsim.hardware import list_profile_files, load_profile
from speedsim.sharing import Sharing
from speedsim.simulate.core import effective_mode
from speedsim.simulate.phases import build_phases
from speedsim.trace.io import read_traces, resolve_trace
from speedsim.workload import BUILTIN_MODELS
from speedsim.workload.kernels import Access, Kernel, Program

PROFILES = sorted(p.stem for p in list_profile_files())
REL = 1e-9


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)


def assert_same_run(a: EngineRun, b: EngineRun) -> None:
    """Every time, byte and busy figure of two runs agree (to REL), program by program."""
    assert len(a.program_end_us) == len(b.program_end_us)
    for name in ("program_end_us", "program_start_us"):
        assert all(close(x, y) for x, y in zip(getattr(a, name), getattr(b, name), strict=True)), name
    for name in ("flops", "dram_bytes", "onchip_bytes", "roofline_us"):
        assert close(getattr(a, name), getattr(b, name)), name
    assert a.kernels == b.kernels
    assert all(close(a.busy_us[k], b.busy_us[k]) for k in a.busy_us) and a.busy_us.keys() == b.busy_us.keys()
    assert all(close(a.dram_bytes_by_class[c], b.dram_bytes_by_class[c]) for c in a.dram_bytes_by_class)
    for pa, pb in zip(a.per_program, b.per_program, strict=True):
        for f in fields(pa):
            va, vb = getattr(pa, f.name), getattr(pb, f.name)
            if isinstance(va, dict):
                assert all(close(va[c], vb[c]) for c in va), f.name
            else:
                assert close(va, vb), f.name
    assert a.onchip is not None and b.onchip is not None
    assert a.onchip.capacity_bytes == b.onchip.capacity_bytes
    assert [t for t, _ in a.onchip.resident] == [t for t, _ in b.onchip.resident]


@pytest.fixture(scope="module")
def trace_4x3():
    return read_traces(resolve_trace("4x3"))[:1]


# a GPU in graph mode, a synchronous CPU host and an accelerator without graph capture every day; the rest in CI
@pytest.mark.parametrize("profile_name", [p if p in ("h200", "cpu-host", "gemmini") else pytest.param(p, marks=pytest.mark.slow)
                                          for p in PROFILES])
def test_recurrence_and_simpy_agree_on_a_real_trace(profile_name, trace_4x3):
    """SPEED and both baselines decoding the first sequence of the real 4x3 trace (its prefill and first
    decode steps), in the profile's graph mode (eager on a CPU host) and in eager mode: the recurrence,
    SimPy's general path on one stream and SimPy's one-stream path give the same run, with the host
    round trip of a decode loop and without."""
    profile = load_profile(profile_name)
    phases, _ = build_phases(BUILTIN_MODELS["t5base"], Sharing(4, 3), trace_4x3, profile,
                             ("unshared", "sequential"), None, None)
    for mode in sorted({effective_mode(profile, "graph")[0], "eager"}):
        engine = Engine(profile, mode)
        for method, phase in phases.items():
            programs = phase.programs[:4]  # the prefill and the first decode steps
            streams = [0] * len(programs)
            for round_trip, shared in ((True, True), (False, False)):
                fast = engine.run(programs, round_trip=round_trip)
                assert_same_run(fast, engine.run_streams(programs, streams, round_trip=round_trip, shared=shared))
                assert fast.total_us > 0 and fast.dram_bytes > 0, (method, mode)


def test_the_round_trip_is_host_busy_time_in_every_driver(h200, t5base, rules):
    """A decode loop's round trip counts as host busy time, the same in the recurrence and in SimPy."""
    from speedsim.workload.patterns import group_sequential

    programs = [group_sequential(t5base, 2, 3, 256, rules, "bf16")] * 3
    engine = Engine(h200, "graph")
    with_rt = engine.run(programs, round_trip=True)
    without = engine.run(programs)
    extra = 3 * h200.host.round_trip_us
    assert h200.host.round_trip_us > 0
    assert with_rt.busy_us["host"] == pytest.approx(without.busy_us["host"] + extra)
    assert engine.run_streams(programs, [0, 0, 0], round_trip=True).busy_us["host"] == \
        pytest.approx(with_rt.busy_us["host"])


def test_a_graph_pays_its_start_before_its_first_kernel_on_every_path(tiny_profile):
    """With several streams, as with one, a graph of several nodes starts its first kernel
    `graph_start_us` after its launch (it used to be paid after the kernels with several streams)."""
    from speedsim.engine import Recorder

    prof = tiny_profile.model_copy(update={"host": tiny_profile.host.model_copy(update={"graph_start_us": 7.0})})
    k = Kernel("k", 0.0, (Access("w", "weights", 1000.0),), parallel_work=1)
    program = Program([k, Kernel("j", 0.0, (Access("v", "weights", 1000.0),), parallel_work=1)])
    for run in (lambda e: e.run([program]), lambda e: e.run_streams([program, program], [0, 1])):
        rec = Recorder()
        run(Engine(prof, "graph", recorder=rec))
        first = min(s.start_us for s in rec.spans if s.program == 0)
        assert first == pytest.approx(prof.host.graph_launch_us + 7.0)


def test_serving_counts_its_round_trips_as_host_busy_time(h200):
    """The serving scheduler waits for each step's results through the session: host busy time."""
    from speedsim.pipeline import Policy
    from speedsim.serve.requests import make_requests
    from speedsim.serve.server import ServerConfig, run_server
    from speedsim.trace.synthetic import generate
    from speedsim.trace.workload import parse_synthetic

    spec = BUILTIN_MODELS["t5base"]
    synth, _, _ = parse_synthetic("mispredict=0.1,len=8", 3)
    requests = make_requests(generate(synth, 3, seed=0), np.array([0.0, 10.0, 20.0]), spec, Sharing(4, 3), h200, "speed",
                             Policy())
    session = Engine(h200, "graph").session(CountingEnvironment())
    server = run_server(session, ServerConfig("speed", 4, 1e12, "chunked", 512), requests)
    host = session.result().busy_us["host"]
    assert server.steps > 0 and h200.host.round_trip_us > 0
    # one graph launch and one round trip per step (the prefills join the steps: chunked)
    assert host == pytest.approx(server.steps * (h200.host.graph_launch_us + h200.host.round_trip_us), rel=1e-12)


@pytest.mark.parametrize(("profile_name", "mode", "expected"), [
    ("h200", "graph", {"speed": (379.6432805304001, 169725207.27272728, 0.05528343111877544),
                       "unshared": (690.5718474231024, 251064925.0909091, 0.025962468445906665),
                       "sequential": (690.5718474231023, 251064925.0909091, 0.026177717728667955)}),
    ("rtx-a5000", "eager", {"speed": (3612.343456915587, 169725207.27272728, 0.978248172664328),
                            "unshared": (6927.086123433724, 251064925.0909091, 0.9901905225778608),
                            "sequential": (7117.526123433714, 251064925.0909091, 0.9903708093184882)}),
    ("cpu-host", "eager", {"speed": (73030.54974007526, 554789794.9090909, 0.009996230850200849),
                           "unshared": (60557.18856087583, 502129850.1818182, 0.01744105586986085),
                           "sequential": (60586.744560875806, 502129850.1818182, 0.017708963951327462)}),
])
def test_one_decode_is_what_the_engine_gave_before_its_split(profile_name, mode, expected):
    """Golden: per-token time, DRAM bytes per token and host utilisation of the first two sequences of
    the real 4x3 trace, as the one-stream SimPy engine of commit 87baa91 simulated them (before the
    recurrence and the run model); the recurrence must give them to 1e-12."""
    from speedsim.run import simulate_run
    from speedsim.simulate import build_scenario, run_scenario

    run = simulate_run(profile=profile_name, model="t5base", sharing="4x3", trace="4x3", synthetic=None,
                       baselines=("unshared", "sequential"), mode=mode, src_len=None, limit=2, launch_exit=0,
                       max_in_flight=None, device_control=False, bounds=False)
    result = run_scenario(build_scenario(run))
    got = {m.method: (m.per_token_us, m.dram_bytes_per_token, m.util_host) for m in result.methods()}
    for method, values in expected.items():
        assert got[method] == pytest.approx(values, rel=1e-12), method
