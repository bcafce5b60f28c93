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
   round trip, program ends, busy times) over all points at once, and takes each method's figures as
   `speedsim.simulate.core.summarise` takes them: the timed ones at every point (`timed`: per-token
   time, token-gap percentiles, prefill, decode and total time, utilisations, roofline, host time), the
   rest once per group (`RunTotals`: traffic, FLOPs, kernels; the schedule's statistics; memory).

`GridResult.result(i)` is point i's `SimulationResult`: every figure a sweep row holds is the one
`speedsim simulate --set ...` gives, to float rounding: the sums are taken in another order
(|relative difference| below 1e-11 on the shipped 4x3 trace; `tests/test_dse.py` and
`experiments/bench_dse.py` check points against `simulate` and sweep rows against `execute`). The
JSON-only breakdowns (time by cause, kernel classes) are left empty. `speedsim sweep` runs a spec's
hardware grids through here (`speedsim.sweep.execute.execute_batch`).

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


class GridResult:
    """Every method's figures at every point, in the points' order; how each point ran. `per_token_us`:
    method -> one value per point; `result(i)`: point i's `SimulationResult`, every figure a sweep row holds
    as `simulate` gives it (the JSON-only breakdowns by cause and kernel class are left empty)."""

    def __init__(self, work: Workload, profiles: list[HardwareProfile], overrides: list[tuple[Override, ...]],
                 memory: list[Mapping[str, Mapping[str, float]]], figures: Mapping[str, list[tuple[np.ndarray, MethodFigures]]], plain: dict[int, Any],
                 modes: Sequence[tuple[str, tuple[str, ...]]], first_exit_miss: float, groups: int):
        self.work = work
        self.profiles = profiles
        self.overrides = overrides    # per point: what was set
        self.memory = memory          # per point: each method's device memory by part, with its total
        self.groups = groups          # distinct on-chip / kernel-selection configurations
        self.fallback_points = len(plain)  # points run through the plain engine (eager mode)
        self._plain = plain
        self._modes = list(modes)
        self._miss = first_exit_miss
        self._where: dict[str, np.ndarray] = {}  # method -> per point: (its group's figures, its index there)
        self._figures = figures
        n = len(profiles)
        self.per_token_us: dict[str, np.ndarray] = {}
        for m, parts in figures.items():
            values = np.full(n, math.nan)
            where = np.full((n, 2), -1, dtype=np.int64)
            for g, (index, f) in enumerate(parts):
                values[index] = f.timed["per_token_us"]
                where[index, 0] = g
                where[index, 1] = np.arange(len(index))
            self._where[m] = where
            self.per_token_us[m] = values
        for i, r in plain.items():
            for mr in r.methods():
                self.per_token_us[mr.method][i] = mr.per_token_us

    def speedup(self, method: str) -> np.ndarray:
        """SPEED's speedup over `method` at every point (the method's time over SPEED's)."""
        return self.per_token_us[method] / self.per_token_us["speed"]

    def result(self, i: int) -> Any:
        """Point i's `SimulationResult`, as `simulate` makes it."""
        from speedsim.simulate.core import run_notes
        from speedsim.simulate.result import MethodResult, ScheduleSummary, SimulationResult

        if i in self._plain:
            return self._plain[i]
        work, profile = self.work, self.profiles[i]
        results = {}
        stats: Any = None
        for m, where in self._where.items():
            g, j = where[i]
            f = self._figures[m][g][1]
            t, tot = f.timed, f.totals
            per = max(tot.tokens, 1)
            by = tot.decode_dram_by_class
            mem = dict(self.memory[i][m])
            total = mem.pop("total", math.nan)
            results[m] = MethodResult(
                method=m, per_token_us=float(t["per_token_us"][j]), p50_token_us=float(t["p50_token_us"][j]),
                p99_token_us=float(t["p99_token_us"][j]), prefill_us=float(t["prefill_us"][j]),
                decode_us=float(t["decode_us"][j]), total_us=float(t["total_us"][j]), tokens=tot.tokens,
                e2e_per_token_us=float(t["e2e_per_token_us"][j]), kernels=tot.kernels,
                dram_bytes_per_token=tot.decode_dram_bytes / per,
                dram_weights_bytes_per_token=by["weights"] / per, dram_kv_bytes_per_token=by["kv"] / per,
                dram_activations_bytes_per_token=by["activations"] / per,
                dram_embeddings_bytes_per_token=by["embeddings"] / per,
                onchip_bytes_per_token=tot.decode_onchip_bytes / per, flops_per_token=tot.decode_flops / per,
                util_compute=float(t["util_compute"][j]), util_dram=float(t["util_dram"][j]),
                util_device_busy=float(t["util_device_busy"][j]), util_host=float(t["util_host"][j]),
                roofline_us_per_token=float(t["roofline_us_per_token"][j]),
                prefill_dram_bytes=tot.prefill_dram_bytes, prefill_flops=tot.prefill_flops,
                host_us_per_token=float(t["host_us_per_token"][j]), speedup=1.0, memory_bytes=total,
                memory_bytes_by_part=mem)
            if m == "speed":
                stats = f.stats
        speed = results.pop("speed")
        mode, notes = self._modes[i]
        schedule = ScheduleSummary(steps=stats.steps, flushes=stats.flushes, wasted_token_passes=stats.wasted_passes,
                                   mean_in_flight=stats.mean_in_flight, first_exit_miss=self._miss)
        return SimulationResult(profile=profile.name, model=work.spec.name, sharing=work.sharing, mode=mode,
                                sequences=len(work.traces), speed=speed,
                                baselines={m: r.with_speedup(speed.per_token_us) for m, r in results.items()},
                                schedule=schedule, notes=notes + run_notes(profile, work.spec, work.sharing),
                                mode_label=profile.host.mode_label(mode),
                                overrides={o.path: o.value for o in self.overrides[i]})


# ---------------------------------------------------------------------------------------------- points


def point_overrides(profile: HardwareProfile, points: Sequence[Point], where: str = "--set",
                    cache: dict[tuple[str, str], Override] | None = None) -> list[tuple[Override, ...]]:
    """Each point's `Override`s on `profile`, checked as `speedsim.hardware.whatif.overrides_of` checks them
    (a path of the profile, a number or xF); each distinct (path, value) is resolved once (`cache`: the ones
    resolved before, shared by calls on the same profile)."""
    cache = {} if cache is None else cache
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


def stacked_host(hosts: Sequence[HostTiming], profiles: Sequence[HardwareProfile]) -> dict[str, np.ndarray]:
    """The host numbers the graph-mode recurrence needs, each an array over `hosts`, and two numbers of
    the `profiles` (one per host) that `summarise` reads: the datasheet matrix peak of their data type
    (FLOP/s) and the host's round trip."""
    out = {name: np.array([getattr(h, name) for h in hosts]) for name in _HOST_NUMBERS}
    out["peak_FLOPs"] = np.array([p.matrix_peak(p.default_dtype, False) for p in profiles])
    out["host_round_trip_us"] = np.array([p.host.round_trip_us for p in profiles])
    return out


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
    totals: RunTotals


@dataclass(frozen=True)
class RunTotals:
    """A method's figures that no point of its group changes: the residency, the same at every point, fixes
    which bytes each kernel moves (`summarise` takes them from the engine's run)."""

    kernels: int                 # kernels launched
    tokens: int                  # tokens the decode programs emit
    flops: float                 # every program's FLOPs (the compute utilisation's)
    dram_bytes: float            # every program's DRAM bytes (the DRAM busy time's: at the achievable rate)
    decode_flops: float
    decode_dram_bytes: float
    decode_onchip_bytes: float
    decode_dram_by_class: dict[str, float]
    prefill_flops: float
    prefill_dram_bytes: float
    decode_counts: np.ndarray    # how often the decode programs run each distinct kernel run (the roofline's)


def method_runs(programs: Sequence[Any], prefill: Sequence[bool], emits: Sequence[int],
                onchip_bytes: float) -> MethodRuns:
    """Serve `programs`' accesses in the engine's order (`Device.back_to_back`: launching kernels only,
    one stream, a cold start) and collect the distinct kernel runs, with the totals that do not depend on
    the point (`RunTotals`)."""
    cache = OnChipCache(onchip_bytes)
    by_class = empty_class_totals()
    access = cache.access
    kernels = 0
    flops = dram_all = decode_flops = decode_dram = decode_chip = prefill_flops = prefill_dram = 0.0
    decode_by_class = dict.fromkeys(by_class, 0.0)
    decode_runs: dict[int, int] = {}
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
    for program, is_prefill in zip(programs, prefill, strict=True):
        here: dict[int, int] = {}
        before = dict(by_class)
        p_flops = p_dram = p_chip = 0.0
        for k in program.kernels:
            if not k.launches:
                continue
            dram, chip = access(k, by_class)
            kernels += 1
            flops += k.flops
            dram_all += dram
            p_flops += k.flops
            p_dram += dram
            p_chip += chip
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
        if is_prefill:
            prefill_flops += p_flops
            prefill_dram += p_dram
        else:
            decode_flops += p_flops
            decode_dram += p_dram
            decode_chip += p_chip
            for c, v in by_class.items():
                decode_by_class[c] += v - before[c]
            for r, n in here.items():
                decode_runs[r] = decode_runs.get(r, 0) + n
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
    decode_counts = np.zeros(len(runs))
    for r, n in decode_runs.items():
        decode_counts[r] = n
    tokens = sum(e for e, p in zip(emits, prefill, strict=True) if not p)
    totals = RunTotals(kernels, tokens, flops, dram_all, decode_flops, decode_dram, decode_chip, decode_by_class,
                       prefill_flops, prefill_dram, decode_counts)
    return MethodRuns(plans, runs, np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                      np.array(counts, dtype=np.float64), program_shape,
                      np.array([len(program.kernels) > 1 for program in programs]), list(prefill), list(emits),
                      totals)


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


def timed(m: MethodRuns, times: np.ndarray, cost: CostModel, host: Mapping[str, np.ndarray],
          round_trip: bool) -> dict[str, np.ndarray]:
    """The method's figures that depend on the point (`TIMED`), at every point: program device times (the
    graph's start and the sum of their kernels' times), the recurrence of
    `speedsim.engine.recurrence.run_programs` in graph mode over all points (its busy times too), and each
    figure as `speedsim.simulate.core.summarise` takes it from the run (`_gaps`' program durations and
    per-token gaps, the utilisations over the run's end, the roofline over the decode programs)."""
    from scipy.sparse import csr_matrix

    shapes = int(m.rows.max()) + 1 if len(m.rows) else 0
    matrix = csr_matrix((m.counts, (m.rows, m.cols)), shape=(shapes, len(m.runs)))
    kernels = np.asarray(matrix @ times)  # distinct programs x points: the sum of their kernels' times
    launch, rt, start = host["graph_launch_us"], host["round_trip_us"], host["graph_start_us"]
    points = times.shape[1]
    clock, free, last, step = np.zeros(points), np.zeros(points), np.zeros(points), np.empty(points)
    gap = np.empty(points)
    decode, prefill, busy = np.zeros(points), np.zeros(points), np.zeros(points)
    last_emit = np.zeros(points)
    gaps: list[np.ndarray] = []  # per emitting program: its gap per token
    repeats: list[int] = []      # ... and how many tokens it emits
    empty = np.zeros(points)
    for i, shape in enumerate(m.program_shape):
        np.add(clock, launch, out=clock)  # one graph launch per program
        np.maximum(free, clock, out=free)  # begin: the device waits for the host
        device = kernels[shape] if shape >= 0 else empty
        np.add(busy, device, out=busy)
        np.add(free, device, out=step)  # the graph's device time ...
        if m.multi[i]:
            np.add(step, start, out=step)  # ... with its start when it has more than one kernel
        np.subtract(step, last, out=gap)  # its duration, as `_gaps` takes it
        if m.prefill[i]:
            prefill += gap
            last_emit[:] = step
        else:
            decode += gap
            emits = m.emits[i]
            if emits:
                gaps.append((step - last_emit) / emits)
                repeats.append(emits)
                last_emit[:] = step
        last, step = step, last  # the program's end
        free[:] = last
        if round_trip:  # the results reach the host before it issues the next program
            np.maximum(clock, free, out=clock)
            np.add(clock, rt, out=clock)
    total = last  # (the ends never decrease: the last is the largest)
    t = m.totals
    tokens = t.tokens
    programs = len(m.program_shape)
    sequences = sum(m.prefill)
    per = max(tokens, 1)
    host_busy = programs * launch + (programs * rt if round_trip else 0.0)
    roofline = np.zeros(points)
    plans = [cost.plan(k) for k in m.plans]
    for r, (j, dram, _, _) in enumerate(m.runs):
        if t.decode_counts[r]:
            roofline += t.decode_counts[r] * np.maximum(dram / cost.dram_peak_Bpus, plans[j].compute_floor_us)
    nan = np.full(points, math.nan)
    if gaps:
        spread = np.repeat(np.vstack(gaps), repeats, axis=0)  # one row per token, as `_gaps` lists them
        p50, p99 = np.percentile(spread, [50, 99], axis=0)
    else:
        p50 = p99 = nan
    with np.errstate(divide="ignore", invalid="ignore"):
        busy_share = {name: np.where(total > 0, v / total, 0.0) for name, v in
                      (("util_dram", t.dram_bytes / cost.dram_Bpus), ("util_device_busy", busy),
                       ("util_host", host_busy))}
        util_compute = np.where(total > 0, t.flops / (total * 1e-6 * host["peak_FLOPs"]), 0.0)
    return {"per_token_us": decode / tokens if tokens else nan, "p50_token_us": p50, "p99_token_us": p99,
            "prefill_us": prefill, "decode_us": decode, "total_us": total.copy(),
            "e2e_per_token_us": total / (tokens + sequences) if tokens + sequences else nan,
            "util_compute": util_compute, **busy_share, "roofline_us_per_token": roofline / per,
            "host_us_per_token": (host["host_round_trip_us"] * (programs - sequences) / tokens
                                  if round_trip and tokens else np.zeros(points))}


@dataclass(frozen=True)
class MethodFigures:
    """One method's figures over a group's points: the timed ones (`timed`) and the group's own."""

    timed: dict[str, np.ndarray]
    totals: RunTotals
    sequences: int
    stats: Any  # the schedule's statistics (`speedsim.pipeline.ScheduleStats`): SPEED's are the run's


def _group_task(profile: HardwareProfile, work: Workload, method: str, cost: CostModel,
                host: dict[str, np.ndarray]) -> MethodFigures:
    """One group's figures of `method` (a worker's task)."""
    from speedsim.engine.core import gc_paused
    from speedsim.simulate.phases import build_phases

    with gc_paused():
        baselines = () if method == "speed" else (method,)
        phases, stats = build_phases(work.spec, work.sharing, work.traces, profile, baselines, work.policy,
                                     work.src_len)
        phase = phases[method]
        runs = method_runs(phase.programs, phase.prefill, phase.emits, profile.l2.usable_bytes)
        del phases, phase
        n = len(host["round_trip_us"])
        out: dict[str, np.ndarray] = {}
        for lo in range(0, n, CHUNK_POINTS):
            index = np.arange(lo, min(n, lo + CHUNK_POINTS))
            c, h = _take(cost, host, index)
            for name, v in timed(runs, kernel_times(runs, c, h), c, h, not work.device_control).items():
                out.setdefault(name, np.empty(n, dtype=v.dtype))[index] = v
        return MethodFigures(out, runs.totals, sum(runs.prefill), stats)


# ---------------------------------------------------------------------------------------------- grid


def _group_key(profile: HardwareProfile, mode: Mode) -> tuple:
    from speedsim.simulate.core import effective_mode

    return (KernelRules.from_profile(profile), profile.l2.usable_bytes, profile.default_dtype,
            effective_mode(profile, mode)[0])


def simulate_grid(profile: HardwareProfile, work: Workload, points: Sequence[Point], workers: int = 1,
                  where: str = "--set") -> GridResult:
    """Every method of `work` at every hardware point (`points`: path -> value, as `--set`) of `profile`;
    the module docstring says how. A bad value, or a model that does not fit a point's device memory, is a
    `UserError` (at `where`, naming the point's settings), as `simulate` refuses it. `workers` > 1: the group
    passes run in that many processes."""
    from speedsim.run import check_decodable

    check_decodable([len(t.exits) for t in work.traces])
    overrides = point_overrides(profile, points, where)
    data = profile.model_dump()
    profiles = [point_profile(profile, o, where, data) for o in overrides]
    cache: dict[str, Any] = {}
    memory = []
    for p, ov in zip(profiles, overrides, strict=True):
        CostModel.from_profile(p, where=f"{where} {', '.join(o.label for o in ov)}" if ov else None)
        memory.append(check_point(p, work, cache))
    return grid_of(profiles, overrides, memory, work, workers)


def check_point(profile: HardwareProfile, work: Workload, memory: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What `simulate` checks of a profile before it runs, past its cost model (the devices of the
    deployment, each method's device memory: the unshared baseline's, the largest, first); each method's
    memory by part with its total (`check_fits`). A `UserError` as `simulate` raises it. `memory`: a cache
    of the footprints by data type, which the points of a grid share (each point's capacity is checked)."""
    from speedsim.simulate.phases import check_fits
    from speedsim.workload.models import check_devices

    check_devices(profile, work.spec.tp, work.spec.pp)
    need = memory.get(profile.default_dtype)
    if need is None or any(v["total"] > profile.memory_capacity_GiB * 2**30 for v in need.values()):
        need = memory[profile.default_dtype] = {
            m: check_fits(work.spec, work.sharing, work.traces, profile, (m,) if m == "unshared" else (),
                          work.src_len, work.baselines)
            for m in sorted(work.methods, key=lambda m: m != "unshared")}
    return need


def grid_of(profiles: Sequence[HardwareProfile], overrides: Sequence[tuple[Override, ...]],
            memory: Sequence[Mapping[str, Mapping[str, float]]], work: Workload, workers: int = 1) -> GridResult:
    """Every method of `work` on every one of `profiles` (what-ifs of one profile, `overrides` each, every
    one passing `check_point`, which gave its `memory`)."""
    from speedsim.simulate.core import effective_mode, first_exit_miss, simulate

    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(profiles):
        groups.setdefault(_group_key(p, work.mode), []).append(i)
    methods = work.methods
    plain: dict[int, Any] = {}
    tasks: list[tuple[str, list[int], tuple]] = []
    for key, index in groups.items():
        first = profiles[index[0]]
        if key[-1] != "graph":  # eager (asked for, or a synchronous host's graph mode): the plain engine
            for i in index:
                plain[i] = simulate(profiles[i], work.spec, work.sharing, list(work.traces), work.mode,
                                    work.baselines, work.policy, work.src_len, device_control=work.device_control)
            continue
        cost = stacked_cost([CostModel.from_profile(profiles[i]) for i in index])
        host = stacked_host([HostTiming.of(profiles[i], "graph") for i in index], [profiles[i] for i in index])
        for m in methods:
            tasks.append((m, index, (first, work, m, cost, host)))
    values: list[MethodFigures] = []
    if workers > 1 and len(tasks) > 1:
        from speedsim.procs import ProcessPool

        pool = ProcessPool(min(workers, len(tasks)))
        try:
            futures: list[Future] = [pool.submit(_group_task, *args) for _, _, args in tasks]
            values = [f.result() for f in futures]
        except BaseException:
            pool.end_now()  # an interrupt: not after the tasks the workers are running
            raise
        pool.shutdown()
    else:
        values = [_group_task(*args) for _, _, args in tasks]
    figures: dict[str, list[tuple[np.ndarray, MethodFigures]]] = {m: [] for m in methods}
    for (m, index, _), v in zip(tasks, values, strict=True):
        figures[m].append((np.array(index), v))
    modes = [effective_mode(p, work.mode) for p in profiles]
    return GridResult(work, list(profiles), list(overrides), list(memory), figures, plain, modes,
                      first_exit_miss(work.traces), len(groups))


def grid_points(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of `axes` (path -> values), the last axis fastest."""
    import itertools

    paths = list(axes)
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*(axes[p] for p in paths))]
