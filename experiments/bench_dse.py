"""Benchmark: thousands of hardware what-ifs of one workload (`speedsim.design.grid.simulate_grid`).

t5base 4x3, SPEED with both baselines (unshared, sequential) on the shipped 4x3 exit trace, h200,
graph mode: a grid of four parameters, ten factors each (10,000 points), timed at 100, 1,000 and
10,000 points with `--workers` processes; then a random sample of points is simulated one by one by
the plain engine (`speedsim.simulate.simulate` on the what-if profile that `speedsim simulate --set`
builds, `apply_settings`) and compared: every method's per-token time must agree to |rel diff| < 1e-9.
Also times one plain point.

Then the users' path: `speedsim sweep` (`run_sweep`) of a spec with the first `--sweep` points of the same
grid as `set.PATH` axes, into a fresh directory (timed; a second invocation must find every run done), and
`--sweep-check` of its runs checked column by column against the run simulated alone (`execute`, the
plain path of a sweep's run): every number to |rel diff| < 1e-9, every other column equal.

    .venv/bin/python experiments/bench_dse.py [--workers 2] [--check 20] [--sizes 100,1000,10000]
        [--sweep 1000] [--sweep-check 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speedsim.design.grid import Workload, grid_points, simulate_grid
from speedsim.hardware.whatif import apply_settings
from speedsim.run.options import simulate_run
from speedsim.simulate.core import simulate
from speedsim.simulate.scenario import COMMAND_LINE, Scenario, build_scenario

FACTORS = ["x0.25", "x0.35", "x0.5", "x0.7", "x1", "x1.4", "x2", "x2.8", "x4", "x5.6"]
AXES = {
    "memory.dram.bandwidth_GBps": FACTORS,
    "kernel.latency_us": FACTORS,
    "host.launch_overhead_us.graph": FACTORS,
    "compute.matrix_peak_TFLOPS.bf16": FACTORS,
}
TOLERANCE = 1e-9


def scenario() -> Scenario:
    run = simulate_run(profile="h200", model="t5base", sharing="4x3", trace="4x3", synthetic=None,
                       baselines=("unshared", "sequential"), mode="graph", src_len=None, limit=None, launch_exit=0,
                       max_in_flight=None, device_control=False, bounds=False)
    return build_scenario(run, sources=COMMAND_LINE)


def axes_for(size: int) -> dict[str, list[str]]:
    """The grid's first axes whole and the rest at x1, for `size` = 10^k points."""
    out, left = {}, size
    for path, values in AXES.items():
        n = min(len(values), left)
        out[path] = values[:n] if n > 1 else ["x1"]
        left //= n
    return out


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _cpu_s() -> float:
    """CPU seconds of this process and its finished worker processes."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def plain(point: dict[str, str]) -> dict[str, float]:
    """One point through `simulate`, as `speedsim simulate --set` runs it."""
    s = scenario()
    profile, _ = apply_settings(s.profile, point)
    r = simulate(profile, s.spec, s.sharing, list(s.traces), "graph", ("unshared", "sequential"), s.policy, s.src_len)
    return {"speed": r.speed.per_token_us, **{m: b.per_token_us for m, b in r.baselines.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--check", type=int, default=20, help="points checked against the plain engine")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", type=int, default=1000, help="points of the sweep (0: none)")
    ap.add_argument("--sweep-check", type=int, default=3, help="sweep runs checked column by column")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    s = scenario()
    work = Workload(s.spec, s.sharing, s.traces, "graph", ("unshared", "sequential"), s.policy, s.src_len)

    t = time.perf_counter()
    base = plain({})
    plain_s = time.perf_counter() - t
    say(f"one plain point (simulate, t5base 4x3, trace 4x3, both baselines, h200 graph): {plain_s:.2f} s")

    timings = []
    grid = points = None
    for size in (int(x) for x in args.sizes.split(",")):
        points = grid_points(axes_for(size))
        t = time.perf_counter()
        cpu = _cpu_s()
        grid = simulate_grid(s.profile, work, points, workers=args.workers)
        dt = time.perf_counter() - t
        cpu = _cpu_s() - cpu
        timings.append({"points": len(points), "seconds": dt, "cpu_seconds": cpu, "points_per_s": len(points) / dt,
                        "groups": grid.groups, "load_average": os.getloadavg()[0]})
        say(f"{len(points):>6} points: {dt:7.2f} s wall, {cpu:6.2f} s CPU (all processes)  "
              f"{len(points) / dt:9.1f} points/s  ({grid.groups} on-chip group(s), {args.workers} worker(s), "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    assert grid is not None and points is not None
    x1 = next(i for i, p in enumerate(points) if all(v == "x1" for v in p.values()))
    say("grid's x1 point vs the plain run: " + ", ".join(
        f"{m} {grid.per_token_us[m][x1]:.6f} / {base[m]:.6f}" for m in base))

    sample = sorted(random.Random(args.seed).sample(range(len(points)), min(args.check, len(points))))
    t = time.perf_counter()
    if args.workers > 1 and len(sample) > 1:
        from speedsim.procs import ProcessPool

        with ProcessPool(args.workers) as pool:
            checked = list(pool.map(plain, [points[i] for i in sample]))
    else:
        checked = [plain(points[i]) for i in sample]
    worst, agree = 0.0, 0
    for i, ref in zip(sample, checked, strict=True):
        diffs = [abs(grid.per_token_us[m][i] / v - 1.0) for m, v in ref.items()]
        worst = max(worst, *diffs)
        ok = all(d < TOLERANCE for d in diffs)
        agree += ok
        if not ok:
            say(f"  DISAGREES at {points[i]}: {ref} vs {({m: grid.per_token_us[m][i] for m in ref})}")
    say(f"checked {len(sample)} random points against plain simulate ({time.perf_counter() - t:.0f} s): "
          f"{agree}/{len(sample)} agree on every method's per-token time (|rel diff| < {TOLERANCE:g}; "
          f"largest {worst:.2e})")
    speedups = grid.speedup("unshared")
    say(f"SPEED over unshared across the grid: {np.nanmin(speedups):.3f}x .. {np.nanmax(speedups):.3f}x")
    out = {"plain_point_s": plain_s, "timings": timings, "checked": len(sample), "agree": agree,
           "worst_rel_diff": worst}
    ok = agree == len(sample)
    if args.sweep:
        out["sweep"] = sweep = bench_sweep(args.sweep, args.workers, args.sweep_check, args.seed)
        ok = ok and sweep["agree"] == sweep["checked"] and sweep["resumed_ran"] == 0
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if ok else 1


def bench_sweep(size: int, workers: int, check: int, seed: int) -> dict[str, float]:
    """`run_sweep` of a `size`-point spec of the grid's axes: its time, a resumption, rows checked."""
    from speedsim.sweep import load_spec, plan, run_sweep
    from speedsim.sweep.execute import execute
    from speedsim.sweep.store import read_journal

    axes = axes_for(size)
    lines = ["name: bench_dse", "fixed: {profile: h200, model: t5base, sharing: 4x3, trace: 4x3, mode: graph,",
             "        baselines: [unshared, sequential]}", "blocks:", "  - label: grid", "    axes:"]
    lines += [f"      set.{path}: [{', '.join(values)}]" for path, values in axes.items() if len(values) > 1]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "grid.yaml"
        spec.write_text("\n".join(lines) + "\n")
        t = time.perf_counter()
        done = run_sweep(spec, Path(tmp) / "out", workers=workers, progress=False)
        dt = time.perf_counter() - t
        t = time.perf_counter()
        again = run_sweep(spec, Path(tmp) / "out", workers=workers, progress=False)
        resume_s = time.perf_counter() - t
        say(f"speedsim sweep, {done.total} points: {dt:.2f} s wall ({done.total / dt:.1f} runs/s, {done.failed} "
            f"failed, {workers} worker(s)); run again: {again.ran} ran, {again.skipped} already done, "
            f"{resume_s:.2f} s")
        runs = {r.key: r for r in plan(load_spec(spec))}
        journal, _ = read_journal(Path(tmp) / "out" / "runs.jsonl")
    keys = random.Random(seed).sample(sorted(journal), min(check, len(journal)))
    worst, agree = 0.0, 0
    t = time.perf_counter()
    for key in keys:
        want = [{c: (None if isinstance(v, float) and not math.isfinite(v) else v) for c, v in row.items()}
                for row in execute(runs[key].model_dump())]
        got = journal[key]
        same = len(got) == len(want) and all(a.keys() == b.keys() for a, b in zip(got, want, strict=False))
        for a, b in zip(got, want, strict=False):
            for c, x in b.items():
                y = a.get(c)
                if isinstance(x, float) and isinstance(y, float):
                    d = abs(y / x - 1.0) if x else abs(y)
                    worst = max(worst, d)
                    same = same and d < TOLERANCE
                else:
                    same = same and x == y
        agree += same
    say(f"checked {len(keys)} sweep runs column by column against the run alone ({time.perf_counter() - t:.0f} s): "
        f"{agree}/{len(keys)} agree (largest relative difference {worst:.2e})")
    return {"points": done.total, "seconds": dt, "runs_per_s": done.total / dt, "failed": done.failed,
            "resumed_ran": again.ran, "resume_seconds": resume_s, "checked": len(keys), "agree": agree,
            "worst_rel_diff": worst}


if __name__ == "__main__":
    sys.exit(main())
