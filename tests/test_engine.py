"""The SimPy engine: analytic cases on a tiny profile, residency, host modes, recording."""

from __future__ import annotations

import json

import pytest

from speedsim.engine import CostModel, Engine, OnChipState, Recorder, time_call
from speedsim.engine.memory import OnChipCache, empty_class_totals
from speedsim.hardware import HardwareProfile, load_profile
from speedsim.workload import KernelRules
from speedsim.workload.kernels import ACTIVATIONS, WEIGHTS, Access, Kernel, Program
from speedsim.workload.patterns import group_distinct, group_pipelined, group_sequential


def alone_us(cost: CostModel, k: Kernel, dram: float, onchip: float) -> float:
    """Kernel `k`'s time alone on the device, moving `onchip` bytes, `dram` of them from DRAM."""
    return cost.plan_us(cost.plan(k), dram, onchip)


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
    """A 0.5 MB weight read twice: DRAM once, then on-chip (10x faster); each read waits one idle
    load latency (1 ns) for its first bytes."""
    k = weights_kernel("w", "shared", 5e5)
    result = Engine(tiny_profile, "graph").run([Program([k, k])])
    assert result.dram_bytes == pytest.approx(5e5)
    assert result.program_end_us[0] == pytest.approx(5e5 / 1000 + 5e5 / 10000 + 2 * 0.001, rel=1e-9)


def test_working_set_a_little_larger_than_onchip_still_hits_in_part(tiny_profile):
    """No cliff: three 0.4 MiB weights (W = 1.2 MiB) cycled through a 1 MiB level (C) find
    C - (W - 0.4 MiB) = 0.2 MiB of themselves still resident when read again, so half of each read
    comes from DRAM in steady state (whole-tensor LRU would miss every time)."""
    mib = 2**20
    ks = [weights_kernel(f"w{i}", f"w{i}", 0.4 * mib) for i in range(3)]
    warm = Engine(tiny_profile, "graph").run([Program(ks * 4)])
    more = Engine(tiny_profile, "graph").run([Program(ks * 3)], onchip=warm.onchip)
    assert more.dram_bytes == pytest.approx(9 * 0.2 * mib, rel=1e-9)


def test_streaming_tensor_larger_than_onchip_does_not_evict_a_shared_one(tiny_profile):
    """Scan resistance: a 2 MB weight streamed between two reads of a 0.5 MB one (1 MiB level)
    leaves it resident: the second read of the small one moves no DRAM bytes."""
    small, big = weights_kernel("s", "small", 5e5), weights_kernel("b", "big", 2e6)
    result = Engine(tiny_profile, "graph").run([Program([small, big, small])])
    assert result.dram_bytes == pytest.approx(5e5 + 2e6)


def test_eager_mode_is_host_bound_for_small_kernels(tiny_profile):
    """100 tiny kernels in eager mode take 100 x the 5 us launch overhead; in graph mode far less."""
    tiny = Kernel("add", 1.0, (Access("act", ACTIVATIONS, 4.0),), parallel_work=1)
    program = Program([tiny] * 100)
    assert time_call(tiny_profile, program, "eager") == pytest.approx(500.0, rel=0.01)
    assert time_call(tiny_profile, program, "graph") < 50.0


def test_kernel_time_never_below_roofline(h200, t5base, rules):
    """Every simulated kernel of a real layer takes at least its closed-form roofline time."""
    cost = CostModel.from_profile(h200)
    cache = OnChipCache(h200.l2.usable_bytes)
    totals = empty_class_totals()
    for k in group_distinct(t5base, 3, 2, 512, rules, "bf16").kernels:
        dram, chip = cache.access(k, totals)
        plan = cost.plan(k)
        assert cost.plan_us(plan, dram, chip) >= max(dram / cost.dram_peak_Bpus, plan.compute_floor_us)


def test_two_streams_share_dram_bandwidth(tiny_profile):
    """Two memory-bound kernels on two streams run at the same time, each at half the DRAM bandwidth:
    both finish together at 4000 us (one after the other would end at 2000 and 4000 us)."""
    a = Program([weights_kernel("a", "a", 2e6, work=2)])
    b = Program([weights_kernel("b", "b", 2e6, work=2)])
    ends = Engine(tiny_profile, "graph").run_streams([a, b], [0, 1]).program_end_us
    assert ends == pytest.approx([4000.0, 4000.0], rel=1e-6)


def test_two_streams_overlap_compute(tiny_profile):
    """Two compute-bound kernels that each use half the units run concurrently on two streams."""
    k = Kernel("mm", 1e9, (Access("a", ACTIVATIONS, 10.0),), parallel_work=2, matrix=True)
    alone = Engine(tiny_profile, "graph").run([Program([k]), Program([k])]).total_us
    overlapped = Engine(tiny_profile, "graph").run_streams([Program([k]), Program([k])], [0, 1]).total_us
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


# ------------------------------------------------------------------ a stateless engine


def test_same_run_twice_gives_the_same_result(h200, t5base, rules):
    """Two identical calls on one engine give identical results: nothing carries over between runs."""
    programs = [group_sequential(t5base, 2, 3, 512, rules, "bf16")] * 2
    engine = Engine(h200, "graph")
    assert engine.run(programs) == engine.run(programs)


def test_passing_the_returned_onchip_state_continues_warm(tiny_profile):
    """A 0.5 MB weight read by a run that starts from the previous run's state comes from on-chip;
    a run given no state starts cold and reads it from DRAM again."""
    program = [Program([weights_kernel("w", "shared", 5e5)])]
    engine = Engine(tiny_profile, "graph")
    first = engine.run(program)
    assert engine.run(program, onchip=first.onchip).dram_bytes == 0.0
    assert engine.run(program).dram_bytes == pytest.approx(5e5)


def test_runs_chained_through_onchip_state_equal_one_long_run(h200, t5base, rules):
    """Running steps one call at a time, each from the last one's state, moves the same bytes
    and ends with the same residency as running them all in one call."""
    steps = [group_distinct(t5base, 3, 2, 1024, rules, "bf16"), group_sequential(t5base, 3, 2, 1024, rules, "bf16"),
             group_pipelined(t5base, 3, 2, 1024, rules, "bf16")] * 2
    engine = Engine(h200, "graph")
    whole = engine.run(steps)
    state, dram = None, 0.0
    for step in steps:
        part = engine.run([step], onchip=state)
        state, dram = part.onchip, dram + part.dram_bytes
    assert dram == pytest.approx(whole.dram_bytes, rel=1e-12)
    assert state == whole.onchip


def test_onchip_state_of_another_capacity_is_refused(tiny_profile):
    """A state whose capacity differs from this profile's on-chip level (another profile's) is an error."""
    with pytest.raises(ValueError, match="on-chip state"):
        Engine(tiny_profile, "graph").run([Program([weights_kernel("w", "w", 10.0)])], onchip=OnChipState.empty(1.0))


def recurrence_ends(profile: HardwareProfile, mode: str, programs: list[Program]) -> list[float]:
    """The plain recurrence one stream reduces to: each program (graph) or kernel (eager) starts when
    the device is free and the host has issued it, `device_free = max(device_free, issue) + kernel times` (plus the graph node gap per kernel)."""
    cost = CostModel.from_profile(profile)
    cache, totals = OnChipCache(profile.l2.usable_bytes), empty_class_totals()
    overhead = profile.host.launch_overhead_us[mode]
    node_us = overhead if mode == "graph" else 0.0
    node_gap = profile.host.launch_overhead_us.graph_gap if mode == "graph" else 0.0

    previous = [""]

    def kernel_us(k: Kernel) -> float:
        if not k.launches:
            return 0.0
        dram, chip = cache.access(k, totals)
        t = cost.plan_us(cost.plan(k), dram, chip)
        if k.name != previous[0]:  # graph: a node of another kernel: a gap, and at most one per node_us
            t = max(t + node_gap, node_us)
        previous[0] = k.name
        return t

    issue = device_free = 0.0
    ends = []
    for program in programs:
        if mode == "graph":  # one graph launch per program, then (after its start) its kernels back to back
            issue += profile.host.graph_launch_us
            start = profile.host.graph_start_us if len(program.kernels) > 1 else 0.0
            device_free = max(device_free, issue) + start + sum(kernel_us(k) for k in program.kernels)
        else:  # the host pays the launch overhead per framework op of every kernel
            for k in program.kernels:
                issue += overhead * k.host_ops
                device_free = max(device_free, issue) + kernel_us(k)
                if profile.host.synchronous:  # a CPU runs the op itself before issuing the next
                    issue = device_free
        ends.append(device_free)
    return ends


@pytest.mark.parametrize(("profile_name", "mode"), [("h200", "graph"), ("h200", "eager"), ("cpu-host", "eager")])
def test_single_stream_is_the_plain_recurrence(profile_name, mode, t5base):
    """With one stream, every program ends where the host-issue / device-free recurrence says
    (GPU graph and eager modes, and a synchronous CPU host)."""
    profile = load_profile(profile_name)
    rules = KernelRules.from_profile(profile)
    dtype = profile.default_dtype
    programs = [group_sequential(t5base, 2, 3, 256, rules, dtype, functional=True),
                group_pipelined(t5base, 2, 3, 256, rules, dtype, functional=True),
                group_distinct(t5base, 2, 3, 256, rules, dtype, functional=True)] * 2
    ends = Engine(profile, mode).run(programs).program_end_us
    assert ends == pytest.approx(recurrence_ends(profile, mode, programs), rel=1e-12)


def test_round_trip_delays_each_next_program(tiny_profile):
    """With the host round trip on, program k+1 is issued only after program k ends plus copy + sync +
    controller time, so each program's end moves by exactly that much per program."""
    prof = tiny_profile.model_copy(update={"host": tiny_profile.host.model_copy(
        update={"d2h_copy_us": 1.0, "sync_us": 2.0, "controller_us": 3.0})})
    k = Kernel("k", 0.0, (Access("w", WEIGHTS, 1000.0),), parallel_work=4)
    programs = [Program([k]) for _ in range(3)]
    without = Engine(prof, "graph").run(programs).program_end_us
    with_rt = Engine(prof, "graph").run(programs, round_trip=True).program_end_us
    assert [b - a for a, b in zip(without, with_rt, strict=True)] == pytest.approx([0.0, 6.0, 12.0])


def test_norm_is_serial_per_row_element(tiny_profile):
    """A single-row norm takes latency + d x cycles per element / clock, whatever its bytes (one unit walks the row)."""
    from speedsim.workload.primitives import rmsnorm

    prof = tiny_profile.model_copy(update={"compute": tiny_profile.compute.model_copy(
        update={"row_reduce_cycles_per_element": 2.0})})
    k = rmsnorm("n", 1, 4096, "bf16")
    first_byte = 0.001  # the fixture's on-chip load latency (1 ns)
    assert alone_us(CostModel.from_profile(prof), k, 0.0, 1.0) == pytest.approx(4096 * 2.0 / 1000.0 + first_byte)


def test_per_program_totals_add_up_to_the_run(h200, t5base, rules):
    """One stream: each program's FLOPs, DRAM bytes and roofline are its own kernels', and they sum
    to the run's totals (what decode-only accounting relies on)."""
    steps = [group_distinct(t5base, 3, 2, 1024, rules, "bf16"), group_pipelined(t5base, 3, 2, 1024, rules, "bf16")]
    result = Engine(h200, "graph").run(steps)
    assert sum(t.flops for t in result.per_program) == pytest.approx(result.flops, rel=1e-12)
    assert sum(t.dram_bytes for t in result.per_program) == pytest.approx(result.dram_bytes, rel=1e-12)
    assert result.per_program[0].flops == pytest.approx(steps[0].flops, rel=1e-12)


def _serving_steps(t5base, rules) -> list[Kernel]:
    """The kernels of a prefill and a few batched SPEED steps of three requests (KV of different lengths)."""
    from speedsim.sharing import Sharing
    from speedsim.workload.steps import Seq, StepContext, pipelined_batch, prefill, with_source

    ctx = StepContext(with_source(t5base, 96), Sharing(2, 3), 96, "bf16", rules)
    seqs = [Seq(ctx, f"q{i}.") for i in range(3)]
    kernels = list(prefill(ctx, prefix="q0.").kernels)
    for step in range(6):
        work = [(s, [(40 * i + step + 2 - r, r) for r in range(3 - i % 2)], 1) for i, s in enumerate(seqs)]
        kernels += pipelined_batch(work).kernels
    return kernels


@pytest.mark.parametrize("capacity", [42 * 2**20, 2**20, 2e5])
def test_item_accesses_serve_as_one_access_per_item(t5base, rules, capacity):
    """A kernel's per-item accesses (`ItemAccesses`, each request's KV and encoder K/V) move exactly
    the bytes, and leave exactly the residency, of the same accesses given one `Access` per item,
    with room to spare, with evictions, and with caches larger than the level."""
    import dataclasses

    kernels = [k for k in _serving_steps(t5base, rules) if k.launches]
    assert any(k.items is not None and k.items.write for k in kernels)
    assert any(k.items is not None and not k.items.write for k in kernels)
    batched, expanded = OnChipCache(capacity), OnChipCache(capacity)
    by_batched, by_expanded = empty_class_totals(), empty_class_totals()
    for k in kernels:
        flat = dataclasses.replace(k, accesses=k.all_accesses, items=None)
        assert batched.access(k, by_batched) == expanded.access(flat, by_expanded)
    assert by_batched == by_expanded
    assert batched.snapshot() == expanded.snapshot()


def test_engine_time_of_a_repeated_kernel_is_its_cost(h200, t5base, rules):
    """The engine times each kernel by its cost plan (reusing the last time when a kernel's traffic
    repeats): the same as the cost model's time of each kernel alone."""
    kernels = [k for k in _serving_steps(t5base, rules) if k.launches]
    recorder = Recorder()
    Engine(h200, "eager", recorder=recorder).run([Program([k]) for k in kernels])
    cost = CostModel.from_profile(h200)
    cache, totals = OnChipCache(h200.l2.usable_bytes), empty_class_totals()
    expected = [cost.plan_us(cost.plan(k), *cache.access(k, totals)) for k in kernels]
    assert [span[3] for span in recorder.spans] == expected


def test_a_tensor_read_once_per_row_misses_only_its_first_pass():
    """A GEMV per row (rows below `gemm_row_reuse_min`) reads its weights once per row: a weight that
    fits on-chip comes from DRAM once and then from on-chip memory; one larger than the level
    streams every pass from DRAM."""
    from speedsim.engine.memory import OnChipCache
    from speedsim.workload.kernels import TENSOR_CLASSES, Access, Kernel

    def dram(size: float, passes: int, cap: float) -> float:
        k = Kernel("gemv", 0.0, (Access("w", "weights", passes * size, footprint_bytes=size),), parallel_work=1)
        return OnChipCache(cap).access(k, dict.fromkeys(TENSOR_CLASSES, 0.0))[0]
    assert dram(1e6, 3, cap=4e6) == 1e6
    assert dram(1e6, 3, cap=0.5e6) == 3e6
    assert dram(1e6, 1, cap=4e6) == 1e6


def test_attention_has_its_own_fixed_time_defaulting_to_the_matrix_paths():
    """`kernel.attention_latency_us` is the fixed time of attention kernels only; unset, attention
    takes the matrix path's fixed time, as before."""
    from speedsim.engine.cost import CostModel
    from speedsim.hardware import load_profile
    from speedsim.workload import BUILTIN_MODELS, KernelRules
    from speedsim.workload.primitives import attention, linear

    base = load_profile("h200")
    assert base.kernel.attention_latency_us is None
    slow = base.model_copy(update={"kernel": base.kernel.model_copy(update={"attention_latency_us": 50.0})})
    rules = KernelRules.from_profile(base)
    attn = attention("a", BUILTIN_MODELS["t5base"], 1, [64], ["kv"], False, "bf16", rules)[-1]
    gemv = linear("q", "w", 1, 768, 768, "bf16", rules)[0]
    a, b = CostModel.from_profile(base), CostModel.from_profile(slow)
    assert alone_us(b, attn, 1e5, 1e5) - alone_us(a, attn, 1e5, 1e5) == pytest.approx(50.0 - a.matrix_latency_us)
    assert alone_us(b, gemv, 1e6, 1e6) == alone_us(a, gemv, 1e6, 1e6)
