"""Many hardware what-ifs of one workload at once: the fast path of design-space grids.

The hardware points of one workload (model, sharing, traces, mode, methods) run the same programs;
only the kernels' costs differ, and which bytes a kernel finds on-chip depends on the on-chip level's
capacity alone. So `simulate_grid`:

1. makes each point's profile (`point_profile`: the what-if applied and validated as a loaded
   profile, see there) and its cost model (`CostModel.from_profile`, checked as every run's is) and
   host timing (`HostTiming.of`);
2. groups the points by what fixes the programs and the residency: the software rules the kernels
   are chosen by (`KernelRules`, which include `compute.units`), the on-chip level's usable bytes,
   the data type and the mode simulated (`effective_mode`);
3. per group and method: builds the programs once (`speedsim.simulate.phases.build_phases`), serves
   every kernel's accesses once through the engine's own residency (`OnChipCache.access`, in the
   engine's order), and keeps each distinct kernel run (its cost plan's inputs, its DRAM and on-chip
   bytes, whether it is a graph node of another kernel than the one before it) with how often each
   program runs it;
4. times each distinct kernel run at every point of the group at once: the engine's own cost formulas
   on a cost model whose numbers are arrays over the points (`CostModel.plan` unchanged,
   `CostModel.plan_us_many`, the elementwise form of `plan_parts`'s time), then the graph node rule;
   a program's device time is the graph's start plus the sum of its kernels' times;
5. runs the single-stream recurrence of `speedsim.engine.recurrence` (graph launch, device free,
   round trip, program ends) over all points at once, and each method's per-token time as
   `speedsim.simulate.core.summarise` takes it (decode time over decoded tokens).

Every point's per-token time is the one `speedsim simulate --set ...` prints, to float rounding: the
sums are taken in another order (|relative difference| below 1e-12 on the shipped 4x3 trace;
`tests/test_dse.py` and `experiments/bench_dse.py` check points against `simulate`).

Not vectorised: eager mode (and a synchronous host, whose graph mode is eager) runs each point
through the plain engine (`simulate`), as does `bounds`. The group passes run in `workers` processes
(one task per group and method).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from speedsim.engine.cost import CostModel
from speedsim.engine.host import HostTiming, Mode
from speedsim.engine.memory import OnChipCache, empty_class_totals
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, overrides_of
from speedsim.pipeline import Policy
from speedsim.sharing import Sharing
from speedsim.trace.schema import ExitTrace
from speedsim.workload import KernelRules
from speedsim.workload.kernels import Kernel
from speedsim.workload.models import ModelSpec

CHUNK_POINTS = 2048  # points timed together (the per-program times of a chunk: programs x points floats)

Point = Mapping[str, Any]  # one hardware point: parameter path -> value (a number, or "xF" text)


@dataclass(frozen=True)
class Workload:
    """What every point of a grid shares (`speedsim.simulate.core.simulate`'s arguments less the profile)."""

    spec: ModelSpec
    sharing: Sharing
    traces: tuple[ExitTrace, ...]
    mode: Mode = "graph"
    baselines: tuple[str, ...] = ("unshared", "sequential")
    policy: Policy | None = None
    src_len: int | None = None
    device_control: bool = False

    @property
    def methods(self) -> tuple[str, ...]:
        return ("speed", *self.baselines)


@dataclass(frozen=True)
class GridResult:
    """Per-token time (us) of every method at every point, in the points' order; how each point ran."""

    per_token_us: dict[str, np.ndarray]   # method -> one value per point
    overrides: list[tuple[Override, ...]]  # per point: what was set
    groups: int                            # distinct on-chip / kernel-selection configurations
    fallback_points: int                   # points run through the plain engine (eager mode)

    def speedup(self, method: str) -> np.ndarray:
        """SPEED's speedup over `method` at every point (the method's time over SPEED's)."""
        return self.per_token_us[method] / self.per_token_us["speed"]


# ---------------------------------------------------------------------------------------------- points


def point_overrides(profile: HardwareProfile, points: Sequence[Point], where: str = "--set") -> list[tuple[Override, ...]]:
    """Each point's `Override`s on `profile`, checked as `speedsim.hardware.whatif.overrides_of` checks them
    (a path of the profile, a number or xF); each distinct (path, value) is resolved once."""
    cache: dict[tuple[str, str], Override] = {}
    out = []
    for point in points:
        made = []
        for path, raw in point.items():
            key = (path, str(raw).strip())
            o = cache.get(key)
            if o is None:
                o = cache[key] = overrides_of(profile, [key], where)[0]
            made.append(o)
        out.append(tuple(made))
    return out


def point_profile(profile: HardwareProfile, overrides: Sequence[Override], where: str = "--set",
                  data: dict | None = None) -> HardwareProfile:
    """`profile` with `overrides`, as `speedsim.hardware.whatif.with_overrides` makes it, validated as a loaded
    profile (every field's closed range, every check between fields) except the trials of its `ranges:`
    ends, which `with_overrides` repeats for every range (~0.6 ms of its ~0.65 ms) and which only
    `--bounds` uses: the point's profile has no ranges. A bad value is refused as `with_overrides`
    refuses it (a `UserError` at `where` naming the setting). `data`: `profile.model_dump()`, if the
    caller has it (it is copied, not changed)."""
    from speedsim.hardware.whatif import with_overrides

    if not overrides:
        return profile
    copy = _copied_along(data if data is not None else profile.model_dump(), [o.path for o in overrides])
    return with_overrides(profile, overrides, where, keep_ranges=False, data=copy)


def _copied_along(data: dict, paths: Sequence[str]) -> dict:
    """A copy of the dumped profile `data` that `set_parameter` and `couple_capacities` may change at `paths`
    (and the two capacities) without changing `data`: the containers along them are copied, the rest
    shared (validation only reads them)."""
    out = dict(data)
    # (and the peaks' tables, which `couple_peaks` changes with the units or the clock)
    for path in (*paths, "memory.dram.capacity_MiB", "memory_capacity_GiB", "compute.matrix_peak_TFLOPS._",
                 "compute.vector_peak_TFLOPS._"):
        node: Any = out
        for key in path.split(".")[:-1]:
            index: Any = int(key) if isinstance(node, list) else key
            child = node[index]
            child = list(child) if isinstance(child, list) else dict(child)
            node[index] = child
            node = child
    return out


# -------------------------------------------------------------------- numbers over points


def stacked_cost(models: Sequence[CostModel]) -> CostModel:
    """One cost model whose every number is an array over `models` (dict fields: per key)."""
    values: dict[str, Any] = {}
    for f in fields(CostModel):
        first = getattr(models[0], f.name)
        if isinstance(first, dict):
            values[f.name] = {key: np.array([getattr(m, f.name)[key] for m in models]) for key in first}
        else:
            values[f.name] = np.array([getattr(m, f.name) for m in models])
    return CostModel(**values)


_HOST_NUMBERS = ("graph_launch_us", "graph_start_us", "node_interval_us", "node_gap_us", "round_trip_us")


def stacked_host(hosts: Sequence[HostTiming]) -> dict[str, np.ndarray]:
    """The host numbers the graph-mode recurrence needs, each an array over `hosts`."""
    return {name: np.array([getattr(h, name) for h in hosts]) for name in _HOST_NUMBERS}


def _take(cost: CostModel, host: dict[str, np.ndarray], index: np.ndarray) -> tuple[CostModel, dict[str, np.ndarray]]:
    values: dict[str, Any] = {f.name: ({k: v[index] for k, v in getattr(cost, f.name).items()}
                       if isinstance(getattr(cost, f.name), dict) else getattr(cost, f.name)[index])
              for f in fields(CostModel)}
    return CostModel(**values), {k: v[index] for k, v in host.items()}


# -------------------------------------------------------------------- one group, one method


def _plan_key(k: Kernel) -> tuple:
    """What `CostModel.plan` reads of a kernel: kernels equal here have the same plan on every profile."""
    return (k.parallel_work, k.matrix, k.kind, k.dtype, k.kclass, k.row_elements, k.key_tiles, k.tile_bytes,
            k.tile_flops, k.indexed, k.flops, k.dequant_ops, k.peers, k.message_bytes)


@dataclass
class MethodRuns:
    """One method's programs reduced to what their times need: the distinct kernel runs and their counts."""

    plans: list[Kernel]                      # a kernel of each distinct plan
    runs: list[tuple[int, float, float, bool]]  # (plan index, DRAM bytes, on-chip bytes, a node of another kernel)
    rows: np.ndarray                         # distinct program shape of each (shape, run) pair
    cols: np.ndarray                         # run index of each pair
    counts: np.ndarray                       # how often the shape runs it
    program_shape: list[int]                 # each program's shape (-1: it runs no kernel)
    multi: np.ndarray                        # program has > 1 kernel (pays the graph's start)
    prefill: list[bool]
    emits: list[int]


def method_runs(programs: Sequence[Any], prefill: Sequence[bool], emits: Sequence[int],
                onchip_bytes: float) -> MethodRuns:
    """Serve `programs`' accesses in the engine's order (`Device.back_to_back`: launching kernels only,
    one stream, a cold start) and collect the distinct kernel runs."""
    cache = OnChipCache(onchip_bytes)
    by_class = empty_class_totals()
    access = cache.access
    plan_index: dict[tuple, int] = {}
    plans: list[Kernel] = []
    run_index: dict[tuple, int] = {}
    runs: list[tuple[int, float, float, bool]] = []
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    shape_index: dict[tuple, int] = {}
    program_shape: list[int] = []
    previous = ""
    for program in programs:
        here: dict[int, int] = {}
        for k in program.kernels:
            if not k.launches:
                continue
            dram, chip = access(k, by_class)
            pk = _plan_key(k)
            j = plan_index.get(pk)
            if j is None:
                j = plan_index[pk] = len(plans)
                plans.append(k)
            key = (j, dram, chip, k.name != previous)
            previous = k.name
            r = run_index.get(key)
            if r is None:
                r = run_index[key] = len(runs)
                runs.append(key)
            here[r] = here.get(r, 0) + 1
        if not here:
            program_shape.append(-1)
            continue
        signature = tuple(here.items())
        shape = shape_index.get(signature)
        if shape is None:  # programs that run the same kernel runs as one before share its sum
            shape = shape_index[signature] = len(shape_index)
            for r, n in here.items():
                rows.append(shape)
                cols.append(r)
                counts.append(n)
        program_shape.append(shape)
    return MethodRuns(plans, runs, np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                      np.array(counts, dtype=np.float64), program_shape,
                      np.array([len(program.kernels) > 1 for program in programs]), list(prefill), list(emits))


def kernel_times(m: MethodRuns, cost: CostModel, host: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each distinct kernel run's time at every point (runs x points): the cost model's time
    (`CostModel.plan_us_many`) and the graph node rule of `Device.back_to_back`."""
    plans = [cost.plan(k) for k in m.plans]
    gap, interval = host["node_gap_us"], host["node_interval_us"]
    out = np.empty((len(m.runs), len(gap)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for r, (j, dram, chip, node) in enumerate(m.runs):
            t = cost.plan_us_many(plans[j], dram, chip)
            if node:  # a node of another kernel: node_gap more, at least node_interval
                t2 = t + gap
                t = np.where(t2 < interval, interval, t2)
            out[r] = t
    return out


def per_token(m: MethodRuns, times: np.ndarray, host: Mapping[str, np.ndarray], round_trip: bool) -> np.ndarray:
    """The method's per-token time at every point: program device times (the graph's start and the sum of
    their kernels' times), the recurrence of `speedsim.engine.recurrence.run_programs` in graph mode over
    all points, and `summarise`'s decode time over decoded tokens."""
    from scipy.sparse import csr_matrix

    shapes = int(m.rows.max()) + 1 if len(m.rows) else 0
    matrix = csr_matrix((m.counts, (m.rows, m.cols)), shape=(shapes, len(m.runs)))
    kernels = np.asarray(matrix @ times)  # distinct programs x points: the sum of their kernels' times
    launch, rt, start = host["graph_launch_us"], host["round_trip_us"], host["graph_start_us"]
    points = times.shape[1]
    clock, free, last, step = np.zeros(points), np.zeros(points), np.zeros(points), np.empty(points)
    gap = np.empty(points)
    decode = np.zeros(points)
    tokens = 0
    empty = np.zeros(points)
    for i, shape in enumerate(m.program_shape):
        np.add(clock, launch, out=clock)  # one graph launch per program
        np.maximum(free, clock, out=free)  # begin: the device waits for the host
        np.add(free, kernels[shape] if shape >= 0 else empty, out=step)  # the graph's device time ...
        if m.multi[i]:
            np.add(step, start, out=step)  # ... with its start when it has more than one kernel
        if not m.prefill[i]:
            np.subtract(step, last, out=gap)  # its duration, as `_gaps` takes it
            decode += gap
            tokens += m.emits[i]
        last, step = step, last  # the program's end
        free[:] = last
        if round_trip:  # the results reach the host before it issues the next program
            np.maximum(clock, free, out=clock)
            np.add(clock, rt, out=clock)
    return decode / tokens if tokens else np.full(points, math.nan)


def _group_task(profile: HardwareProfile, work: Workload, method: str, cost: CostModel,
                host: dict[str, np.ndarray]) -> np.ndarray:
    """One group's per-token times of `method` (a worker's task)."""
    from speedsim.engine.core import gc_paused
    from speedsim.simulate.phases import build_phases

    with gc_paused():
        baselines = () if method == "speed" else (method,)
        phases, _ = build_phases(work.spec, work.sharing, work.traces, profile, baselines, work.policy, work.src_len)
        phase = phases[method]
        runs = method_runs(phase.programs, phase.prefill, phase.emits, profile.l2.usable_bytes)
        del phases, phase
        n = len(host["round_trip_us"])
        out = np.empty(n)
        for lo in range(0, n, CHUNK_POINTS):
            index = np.arange(lo, min(n, lo + CHUNK_POINTS))
            c, h = _take(cost, host, index)
            out[index] = per_token(runs, kernel_times(runs, c, h), h, not work.device_control)
        return out


# ---------------------------------------------------------------------------------------------- grid


def _group_key(profile: HardwareProfile, mode: Mode) -> tuple:
    from speedsim.simulate.core import effective_mode

    return (KernelRules.from_profile(profile), profile.l2.usable_bytes, profile.default_dtype,
            effective_mode(profile, mode)[0])


def simulate_grid(profile: HardwareProfile, work: Workload, points: Sequence[Point], workers: int = 1,
                  where: str = "--set") -> GridResult:
    """Per-token time of every method of `work` at every hardware point (`points`: path -> value, as
    `--set`) of `profile`; the module docstring says how. A bad value, or a model that does not fit a
    point's device memory, is a `UserError` (at `where`, naming the point's settings), as `simulate`
    refuses it. `workers` > 1: the group passes run in that many processes."""
    from speedsim.run import check_decodable
    from speedsim.simulate.core import simulate
    from speedsim.simulate.phases import check_fits

    check_decodable([len(t.exits) for t in work.traces])
    overrides = point_overrides(profile, points, where)
    data = profile.model_dump()
    profiles = [point_profile(profile, o, where, data) for o in overrides]
    costs = [CostModel.from_profile(p, where=f"{where} {', '.join(o.label for o in ov)}" if ov else None)
             for p, ov in zip(profiles, overrides, strict=True)]
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(profiles):
        groups.setdefault(_group_key(p, work.mode), []).append(i)
    methods = work.methods
    result = {m: np.full(len(points), math.nan) for m in methods}
    fallback = 0
    tasks: list[tuple[str, list[int], tuple]] = []
    for key, index in groups.items():
        first = profiles[index[0]]
        # the device memory a method needs, as `simulate` checks it (unshared, the largest, first)
        need = max(check_fits(work.spec, work.sharing, work.traces, first, (m,) if m == "unshared" else (),
                              work.src_len)["total"] for m in methods)
        for i in index:
            if need > profiles[i].memory_capacity_GiB * 2**30:
                for m in sorted(methods, key=lambda m: m != "unshared"):  # its own refusal
                    check_fits(work.spec, work.sharing, work.traces, profiles[i], (m,) if m == "unshared" else (),
                               work.src_len)
        if key[-1] != "graph":  # eager (asked for, or a synchronous host's graph mode): the plain engine
            for i in index:
                r = simulate(profiles[i], work.spec, work.sharing, list(work.traces), work.mode, work.baselines,
                             work.policy, work.src_len, device_control=work.device_control)
                result["speed"][i] = r.speed.per_token_us
                for m, b in r.baselines.items():
                    result[m][i] = b.per_token_us
            fallback += len(index)
            continue
        cost = stacked_cost([costs[i] for i in index])
        host = stacked_host([HostTiming.of(profiles[i], "graph") for i in index])
        for m in methods:
            tasks.append((m, index, (first, work, m, cost, host)))
    if workers > 1 and len(tasks) > 1:
        from speedsim.procs import ProcessPool

        with ProcessPool(min(workers, len(tasks))) as pool:
            futures: list[Future] = [pool.submit(_group_task, *args) for _, _, args in tasks]
            values = [f.result() for f in futures]
    else:
        values = [_group_task(*args) for _, _, args in tasks]
    for (m, index, _), v in zip(tasks, values, strict=True):
        result[m][np.array(index)] = v
    return GridResult(result, overrides, len(groups), fallback)


def grid_points(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of `axes` (path -> values), the last axis fastest."""
    import itertools

    paths = list(axes)
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*(axes[p] for p in paths))]
