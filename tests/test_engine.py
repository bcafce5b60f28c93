"""The SimPy engine: analytic cases on a tiny profile, residency, host modes, recording."""

from __future__ import annotations

import json

import pytest

from speedsim.engine import CostModel, Engine, Recorder, time_call
from speedsim.workload.kernels import ACTIVATIONS, WEIGHTS, Access, Kernel, Program


def weights_kernel(name: str, tensor: str, nbytes: float, flops: float = 0.0, work: int = 4) -> Kernel:
    return Kernel(name, flops, (Access(tensor, WEIGHTS, nbytes),), parallel_work=work, matrix=True)


def test_memory_bound_kernel_takes_bytes_over_bandwidth(tiny_profile):
    """A kernel reading 2 MB that does not fit on-chip takes bytes / DRAM bandwidth (1000 B/us)."""
    engine = Engine(tiny_profile, "graph")
    result = engine.run([Program([weights_kernel("w", "big", 2e6)])])
    assert result.total_us == pytest.approx(2e6 / 1000.0, rel=1e-6)
    assert result.dram_bytes == pytest.approx(2e6)
    assert result.dram_bytes_by_class["weights"] == pytest.approx(2e6)


def test_compute_bound_kernel_takes_flops_over_peak(tiny_profile):
    """A kernel with 1e9 FLOPs and few bytes takes FLOPs / (1 TFLOP/s) = 1000 us."""
    k = Kernel("mm", 1e9, (Access("a", ACTIVATIONS, 10.0),), parallel_work=4, matrix=True)
    assert Engine(tiny_profile, "graph").run([Program([k])]).total_us == pytest.approx(1000.0, rel=1e-3)


def test_limited_parallel_work_uses_fewer_units(tiny_profile):
    """One block of work on a 4-unit device computes at a quarter of the peak."""
    k = Kernel("mm", 1e9, (Access("a", ACTIVATIONS, 10.0),), parallel_work=1, matrix=True)
    assert Engine(tiny_profile, "graph").run([Program([k])]).total_us == pytest.approx(4000.0, rel=1e-3)


def test_shared_weights_that_fit_are_reread_on_chip(tiny_profile):
    """A 0.5 MB weight read twice: DRAM once, then on-chip (10x faster)."""
    k = weights_kernel("w", "shared", 5e5)
    result = Engine(tiny_profile, "graph").run([Program([k, k])])
    assert result.dram_bytes == pytest.approx(5e5)
    assert result.program_end_us[0] == pytest.approx(5e5 / 1000 + 5e5 / 10000, rel=1e-6)


def test_cyclic_working_set_larger_than_onchip_streams_from_dram(tiny_profile):
    """Three 0.4 MiB weights cycled through a 1 MiB level (LRU) miss every time."""
    mib = 2**20
    ks = [weights_kernel(f"w{i}", f"w{i}", 0.4 * mib) for i in range(3)]
    result = Engine(tiny_profile, "graph").run([Program(ks * 3)])
    assert result.dram_bytes == pytest.approx(9 * 0.4 * mib)


def test_eager_mode_is_host_bound_for_small_kernels(tiny_profile):
    """100 tiny kernels in eager mode take 100 x the 5 us launch overhead; in graph mode far less."""
    tiny = Kernel("add", 1.0, (Access("act", ACTIVATIONS, 4.0),), parallel_work=1)
    program = Program([tiny] * 100)
    assert time_call(tiny_profile, program, "eager") == pytest.approx(500.0, rel=0.01)
    assert time_call(tiny_profile, program, "graph") < 50.0


def test_kernel_time_never_below_roofline(h200, t5base, rules):
    """Every simulated kernel of a real layer takes at least its closed-form roofline time."""
    from speedsim.engine.memory import OnChipCache, empty_class_totals
    from speedsim.workload.patterns import group_distinct

    cost = CostModel.from_profile(h200)
    cache = OnChipCache(h200.l2.usable_bytes)
    totals = empty_class_totals()
    for k in group_distinct(t5base, 3, 2, 512, rules, "bf16").kernels:
        dram, chip = cache.serve(k, totals)
        assert cost.kernel_us(k, dram, chip) >= cost.roofline_us(k, dram)


def test_two_streams_share_dram_bandwidth(tiny_profile):
    """Two memory-bound kernels on two streams run at the same time, each at half the DRAM bandwidth:
    both finish together at 4000 us (one after the other would end at 2000 and 4000 us)."""
    a = Program([weights_kernel("a", "a", 2e6, work=2)])
    b = Program([weights_kernel("b", "b", 2e6, work=2)])
    ends = Engine(tiny_profile, "graph", streams=2).run([a, b], streams=[0, 1]).program_end_us
    assert ends == pytest.approx([4000.0, 4000.0], rel=1e-6)


def test_two_streams_overlap_compute(tiny_profile):
    """Two compute-bound kernels that each use half the units run concurrently on two streams."""
    k = Kernel("mm", 1e9, (Access("a", ACTIVATIONS, 10.0),), parallel_work=2, matrix=True)
    alone = Engine(tiny_profile, "graph").run([Program([k]), Program([k])]).total_us
    overlapped = Engine(tiny_profile, "graph", streams=2).run([Program([k]), Program([k])], streams=[0, 1]).total_us
    assert overlapped == pytest.approx(alone / 2, rel=0.01)


def test_chrome_trace_has_a_span_per_kernel(tiny_profile, tmp_path):
    """The recorder writes a Chrome trace (JSON, 'X' events with ts/dur/pid/tid), one per kernel."""
    rec = Recorder()
    ks = [weights_kernel(f"w{i}", f"w{i}", 1e4) for i in range(5)]
    Engine(tiny_profile, "eager", recorder=rec).run([Program(ks)])
    path = tmp_path / "trace.json"
    rec.write_chrome_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    assert len(spans) == 5
    assert all({"ts", "dur", "pid", "tid", "name"} <= set(e) for e in spans)
    starts = [e["ts"] for e in spans]
    assert starts == sorted(starts)
    assert len(rec.dataframe()) == 5


def test_synchronous_host_does_not_overlap_issue_and_execution(tiny_profile_dict):
    """On a CPU (synchronous host) each op costs its launch overhead plus its run time; on a GPU they overlap."""
    from speedsim.hardware import HardwareProfile

    k = weights_kernel("w", "big", 2e6)  # 2000 us alone, 5 us launch overhead (eager)
    program = Program([k] * 4)
    gpu = Engine(HardwareProfile.model_validate(tiny_profile_dict), "eager").run([program]).total_us
    tiny_profile_dict["host"]["synchronous"] = True
    cpu = Engine(HardwareProfile.model_validate(tiny_profile_dict), "eager").run([program]).total_us
    assert gpu == pytest.approx(5.0 + 4 * 2000.0, rel=1e-6)
    assert cpu == pytest.approx(4 * (5.0 + 2000.0), rel=1e-6)


def test_dtype_without_matrix_path_runs_on_the_vector_path(h200):
    """fp32 GEMMs on an H200 profile (no fp32 tensor-core rate listed) use the vector fp32 peak, not bf16's."""
    assert h200.matrix_peak("fp32") == pytest.approx(h200.vector_peak("fp32"))
    assert h200.matrix_peak("bf16") > 10 * h200.matrix_peak("fp32")
