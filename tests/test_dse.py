"""The design-space fast path (`speedsim.design.grid`): every point's per-token time is `simulate`'s."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from speedsim.design.grid import Workload, grid_points, point_profile, simulate_grid, stacked_cost
from speedsim.engine import CostModel
from speedsim.errors import UserError
from speedsim.hardware.whatif import Override, apply_settings
from speedsim.run.options import simulate_run
from speedsim.simulate.core import simulate
from speedsim.simulate.phases import build_phases
from speedsim.simulate.scenario import COMMAND_LINE, build_scenario
from speedsim.sweep import RunParams, read_results, run_sweep
from speedsim.sweep.execute import execute, execute_batch
from speedsim.sweep.runner import PART_POINTS, batches_of

BASELINES = ("unshared", "sequential")


def _scenario(limit: int, profile: str = "h200"):
    run = simulate_run(profile=profile, model="t5base", sharing="4x3", trace="4x3", synthetic=None,
                       baselines=BASELINES, mode="graph", src_len=None, limit=limit, launch_exit=0,
                       max_in_flight=None, device_control=False, bounds=False)
    return build_scenario(run, sources=COMMAND_LINE)


def _plain(s, point, mode="graph", device_control=False):
    profile, _ = apply_settings(s.profile, point)
    r = simulate(profile, s.spec, s.sharing, list(s.traces), mode, BASELINES, s.policy, s.src_len,
                 device_control=device_control)
    return {"speed": r.speed.per_token_us, **{m: b.per_token_us for m, b in r.baselines.items()}}


def _check(s, grid, points, sample, **kw):
    for i in sample:
        for m, v in _plain(s, points[i], **kw).items():
            assert abs(grid.per_token_us[m][i] / v - 1.0) < 1e-9, (points[i], m, v, grid.per_token_us[m][i])


AXES = {"memory.dram.bandwidth_GBps": ["x0.5", "x2"], "kernel.latency_us": ["x0.5", "x3"],
        "host.launch_overhead_us.graph": ["x0.25", "x2"], "memory.onchip.0.capacity_MiB": ["x0.2", "x1"],
        "compute.units": ["x0.5", "x1"]}


def test_grid_matches_simulate_on_every_method():
    """32 points over four groups (on-chip capacity and units change residency and kernels), 5 checked
    (experiments/bench_dse.py checks 20 of 10,000)."""
    s = _scenario(3)
    points = grid_points(AXES)
    grid = simulate_grid(s.profile, Workload(s.spec, s.sharing, s.traces, policy=s.policy), points)
    assert grid.groups == 4 and grid.fallback_points == 0
    _check(s, grid, points, random.Random(0).sample(range(len(points)), 5))
    # the times do move across the grid (a check that cannot pass by returning one number)
    assert np.ptp(grid.per_token_us["speed"]) > 0.1 * grid.per_token_us["speed"].min()


def test_device_control_and_profile_without_capture():
    """No round trip (the recurrence's max(device free, host clock) decides) on another profile."""
    s = _scenario(2, "l4")
    points = grid_points({"host.graph_launch_us": ["x0.1", "x10"], "memory.dram.bandwidth_GBps": ["x0.5", "x2"]})
    grid = simulate_grid(s.profile, Workload(s.spec, s.sharing, s.traces, policy=s.policy, device_control=True),
                         points)
    _check(s, grid, points, range(len(points)), device_control=True)


def test_eager_falls_back_to_the_plain_engine():
    s = _scenario(1)
    points = [{"kernel.latency_us": "x2"}]
    grid = simulate_grid(s.profile, Workload(s.spec, s.sharing, s.traces, mode="eager", policy=s.policy), points)
    assert grid.fallback_points == 1
    _check(s, grid, points, [0], mode="eager")


def test_vectorised_cost_is_the_scalar_one_kernel_by_kernel():
    """`CostModel.plan_us_many` at each point equals `plan_parts`'s time of the point's own cost model."""
    s = _scenario(1)
    settings = [{"memory.dram.bandwidth_GBps": f"x{f}", "compute.matrix_peak_TFLOPS.bf16": f"x{1 / f}",
                 "kernel.overlap_exponent": f"x{f}"} for f in (0.3, 1.0, 3.0)]
    models = [CostModel.from_profile(apply_settings(s.profile, p)[0]) for p in settings]
    many = stacked_cost(models)
    phases, _ = build_phases(s.spec, s.sharing, s.traces, s.profile, BASELINES, s.policy, s.src_len)
    seen = set()
    for program in phases["speed"].programs + phases["unshared"].programs:
        for k in program.kernels:
            if id(k) in seen:
                continue
            seen.add(id(k))
            chip = sum(a.read_bytes + a.write_bytes for a in k.accesses)
            for dram in (0.0, 0.5 * chip, chip):
                got = many.plan_us_many(many.plan(k), dram, chip)
                want = [m.plan_parts(m.plan(k), dram, chip)[0] for m in models]
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert len(seen) > 50


def test_bad_values_are_refused_as_set_refuses_them():
    s = _scenario(1)
    with pytest.raises(UserError) as err:
        point_profile(s.profile, [Override("memory.dram.bandwidth_GBps", -1.0)])
    assert err.value.where == "--set" and "memory.dram.bandwidth_GBps" in str(err.value)
    work = Workload(s.spec, s.sharing, s.traces, policy=s.policy)
    for bad in ({"memory.dram.bandwidth_GBps": "x0"}, {"no.such.path": "1"}, {"kernel.latency_us": "xnan"}):
        with pytest.raises(UserError):
            simulate_grid(s.profile, work, [{"kernel.latency_us": "x2"}, bad])


@pytest.mark.slow
def test_full_trace_grid_sample():
    """The shipped 4x3 trace whole: 3 of 81 points checked (each plain run takes ~10 s)."""
    s = _scenario(None)  # type: ignore[arg-type]
    points = grid_points({p: ["x0.5", "x1", "x2"] for p in ("memory.dram.bandwidth_GBps", "kernel.latency_us",
                                                              "host.launch_overhead_us.graph",
                                                              "compute.matrix_peak_TFLOPS.bf16")})
    grid = simulate_grid(s.profile, Workload(s.spec, s.sharing, s.traces, policy=s.policy), points, workers=2)
    _check(s, grid, points, random.Random(1).sample(range(len(points)), 3))


# ------------------------------------------------------------------------------ sweeps through the grid


def _same_rows(got, want):
    """Every column of every row equal: numbers to |relative difference| 1e-9 (the sums run in another order)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys(), a.keys() ^ b.keys()
        for c, x in b.items():
            y = a[c]
            if isinstance(x, float) and isinstance(y, float) and not (math.isnan(x) and math.isnan(y)):
                assert y == pytest.approx(x, rel=1e-9, abs=0), (c, x, y)
            elif not (isinstance(x, float) and math.isnan(x)):
                assert y == x, (c, x, y)


def _runs(points, **fixed):
    base = dict(profile="h200", model="t5base", sharing="4x3", trace="4x3", limit=2, mode="graph")
    return [RunParams(**{**base, **fixed}, overrides=tuple(p.items())).model_dump() for p in points]


def test_a_batch_gives_each_run_the_rows_execute_gives():
    """Every column of every row (SPEED's schedule, traffic, utilisations, percentiles, the what-if columns)
    as `execute` gives it; two on-chip groups; points the grid cannot take (a value out of range, a model that
    does not fit, its unshared baseline that does not) get `execute`'s own error rows."""
    points = [{"memory.dram.bandwidth_GBps": "x2", "host.d2h_copy_us": "x0.5"},
              {"memory.dram.bandwidth_GBps": "x0.5", "memory.onchip.0.capacity_MiB": "x0.2"},
              {"kernel.latency_us": "x3", "compute.matrix_peak_TFLOPS.bf16": "x0.25"},
              {"memory.dram.bandwidth_GBps": "-5"},
              {"memory.dram.capacity_MiB": "x0.001"},
              {"memory.dram.capacity_MiB": "x0.003"}]
    params = _runs(points)
    got = execute_batch(params)
    want = [execute(p) for p in params]
    for g, w in zip(got, want, strict=True):
        _same_rows(g, w)
    assert [rows[0]["status"] for rows in got] == ["ok"] * 3 + ["error"] * 3
    assert "field 'set.memory.dram.bandwidth_GBps'" in got[3][0]["error"]
    assert "field 'baselines'" in got[5][0]["error"]
    assert {r["method"] for r in got[0]} == {"speed", "unshared", "sequential"}
    # the figures move with the point (a batch cannot pass by repeating one run's rows)
    assert len({rows[0]["per_token_us"] for rows in got[:3]}) == 3


def test_a_batch_in_eager_mode_and_with_the_controller_on_the_device():
    for fixed in ({"mode": "eager"}, {"device_control": True, "baselines": ("unshared",)}):
        params = _runs([{"memory.dram.bandwidth_GBps": "x2"}, {"kernel.latency_us": "x0.5"}], **fixed)
        for g, w in zip(execute_batch(params), [execute(p) for p in params], strict=True):
            _same_rows(g, w)


def test_sweeps_batch_hardware_grids_only():
    """Runs with what-ifs group by everything else; serving, bounds and speculative runs and runs without
    what-ifs go one by one."""
    grid = [RunParams.model_validate(p) for p in _runs([{"kernel.latency_us": f"x{f}"} for f in (1, 2, 3)])]
    other = [RunParams.model_validate(p) for p in _runs([{"kernel.latency_us": "x2"}], model="dec1b")]
    plain = [RunParams.model_validate(_runs([{}])[0]),
             RunParams.model_validate(_runs([{"kernel.latency_us": "x2"}], bounds=True)[0])]
    batches, single = batches_of([grid[0], plain[0], other[0], grid[1], plain[1], grid[2]])
    assert batches == [grid, other] and single == plain
    # a large grid is cut between the workers (parts of at least PART_POINTS runs), a small one is not
    many = [RunParams.model_validate(p) for p in _runs([{"kernel.latency_us": f"x{1 + i / 1000}"}
                                                        for i in range(PART_POINTS + 10)])]
    assert [len(b) for b in batches_of(many, parts=2)[0]] == [(PART_POINTS + 10) // 2] * 2
    assert [len(b) for b in batches_of(many[:PART_POINTS], parts=2)[0]] == [PART_POINTS]


def test_a_sweep_of_a_hardware_grid_resumes(tmp_path):
    """Through `run_sweep`: the table holds every run, a second invocation runs none."""
    spec = tmp_path / "grid.yaml"
    spec.write_text("name: g\nfixed: {profile: h200, model: t5base, sharing: 4x3, trace: 4x3, limit: 1}\n"
                    "blocks:\n  - label: g\n    axes:\n      set.memory.dram.bandwidth_GBps: [x0.5, x1, x2]\n"
                    "      set.kernel.latency_us: [x0.5, x2]\n")
    first = run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    assert (first.total, first.ran, first.failed) == (6, 6, 0)
    table = read_results(tmp_path / "out")
    assert len(table) == 18 and table["value.memory.dram.bandwidth_GBps"].nunique() == 3
    again = run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    assert (again.skipped, again.ran) == (6, 0)
