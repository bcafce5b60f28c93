"""The chip that meets a target: the least change of one parameter at which a method meets a time per
token (`design`), and the highest load at which a server keeps a p99 latency under a target (`serve_design`).

**The decode search** (`speedsim design --vary PATH --target-us-per-token X`). T(s) is the method's
simulated per-token time (`per_token_us`, exactly as `speedsim simulate --set PATH=VALUE` gives it) on
the profile with the parameter at `PATH` scaled by s (value = s x its value on the profile, after any
`--set`). The answer is the least change: the s nearest to 1 (in ln s) with T(s) <= X.

1. At s = 1: if T(1) <= X the target is already met; the answer is s = 1 (`already_met`: the least
   change is none; no search).
2. The direction that helps: T at x2 and x0.5 (x1.01 and x1/1.01 where the profile cannot take those;
   an integer field, `compute.units`, is stepped to whole numbers, at least one). The one with the
   lower time, if lower than T(1). If neither is, the field's two ends are tried (an on-chip capacity
   that changes nothing until the weights fit); if neither end helps either, no direction was found
   that lowers the time (`limit: no gain`: the parameter has no effect, or the profile's value is a
   local minimum, as the number of units can be with its waves of blocks) and the search stops there.
3. The far end first: the field's bound in that direction (its pydantic `ge`/`le`, the closed range
   every profile is checked against; `gt`: the next value above). If the profile takes it and T there
   still misses X, the target cannot be reached within the field's range (one simulation).
4. Bracket: doubling (halving) s from the probe until T <= X, the bound, or a value the profile
   cannot take (a check between fields, a cost-model rate, a model that no longer fits the memory).
5. Bisect in ln s between the last point that misses and the first that meets (or is refused), until
   the bracket is at most `REL_TOL` = 0.1% wide in s, and at most 0.1% of the change |ln s| (so that
   s^0.95 and 1 + 0.95 (s - 1), both nearer 1 than the bracket's missing end, miss the target: the
   check in `tests/test_design.py`). An integer field bisects to adjacent whole numbers. The answer is
   the bracket's meeting end: it meets X, and its neighbour at 0.1% less change does not.
6. Monotonicity: T should not rise as s moves in the helpful direction. Every point simulated (the
   probe on the other side included) is checked in order of s; any pair that is not monotone (beyond
   1e-9 relative) is reported (`monotone: false`, `non_monotone`): the bisection then found *a*
   crossing, not necessarily the least one.

Where the target cannot be reached, the result reports the farthest point taken in the helpful
direction (the field's bound, or the last value the profile takes), its time, and the cause that then
holds the time: the largest of the engine's `time_by_cause_us_per_token` there (`bound_by`).

**The serving search** (`speedsim design --serve --metric tpot_p99|ttft_p99 --target-us X`). M(r, k) is
the metric (p99 time per output token, or p99 time to first token) of `speedsim serve` with Poisson
arrivals at r requests/s and seed k (the seed draws the arrivals and samples the requests). Each
candidate rate runs the same K seeds (`--seeds`, default 5: seeds `--seed` .. `--seed`+K-1); with one
seed the arrivals at any rate are the same draws scaled by 1/r and the same requests, so seeds compare
like with like across rates.

- **The rule.** A rate meets the target when the mean over the K seeds of M(r, k) is at most X. The
  answer is the highest rate that meets it: bracketed by doubling (halving) from one request's own rate
  (`nominal_rate` / max batch), then bisected in ln r to `SERVE_REL_TOL` = 2% (well inside the ~15%
  that p99 moves between seeds). The next rate simulated above it misses (`miss_rate_per_s`). (Missed
  at that rate and at half of it, `rate_min` is tried next: missed there too, the search stops.)
- **The interval.** Each seed's own critical rate r_k (the same bracket-and-bisect on M(r, k) alone,
  starting from the rates already simulated) and the interval [min r_k, max r_k]. For K independent
  seeds this covers the median per-seed critical rate with probability 1 - 2^(1-K) (93.75% at K = 5),
  whatever their distribution (`interval_confidence`).
- **The range.** From `rate_min` (a hundredth of one request's own rate: requests practically alone,
  or the lowest rate the arrivals allow) to `SERVE_MAX_LOAD` = 100 x the nominal capacity (every request
  practically at once). A target missed even at `rate_min` cannot be reached on this chip by lowering
  the load (`reachable: false`, the metric there given); one met at the top is met at any rate
  (`saturated: true`).
- The metric is that of a finite run of `--requests` requests (default `SERVE_REQUESTS` = 100) starting
  empty: the warm-up and the drain are in it; more requests give a steadier p99 at a proportional cost.
  A mean that is not monotone in the rate over the rates simulated is reported (`monotone: false`).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from speedsim import defaults
from speedsim.engine import CostModel
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, parameter_paths, with_overrides
from speedsim.run import RunParams
from speedsim.simulate.core import decode_per_token_us, effective_mode, simulate
from speedsim.simulate.phases import Phase, build_phases, check_fits
from speedsim.simulate.scenario import Scenario
from speedsim.workload import KernelRules

REL_TOL = 1e-3            # the decode search's bracket: 0.1% of the scale, and of the change |ln s|
MONOTONE_TOL = 1e-9       # relative: a rise smaller than this is rounding, not a non-monotone time
MAX_STEPS = 80            # doublings (halvings) or bisections of one bracket, at most
PROBE, SMALL_PROBE = 2.0, 1.01

# The parameters the cost model reads for each cause's time (`speedsim.engine.cost`; the sensitivity
# module's docstring): where a target is out of reach, the text names the bounding cause's, the
# parameter varied left out, as the ones to try next. DRAM's time answers to each unit's streaming
# rate (bytes in flight over the load latency) as well as to the bandwidth.
CAUSE_PARAMETERS = {
    "dram": ("memory.dram.bandwidth_GBps", "memory.dram.efficiency", "compute.unit_inflight_KiB",
             "compute.unit_attention_inflight_KiB", "memory.dram.latency_ns"),
    "onchip": ("memory.onchip.0.bandwidth_GBps", "memory.onchip.0.efficiency", "memory.onchip.0.latency_ns",
               "compute.unit_inflight_KiB", "memory.onchip.0.capacity_MiB"),
    "latency": ("kernel.latency_us", "kernel.matrix_latency_us", "kernel.attention_latency_us",
                "memory.dram.first_byte_ns", "memory.onchip.0.first_byte_ns", "compute.index_cycles"),
    "compute": ("compute.clock_MHz", "compute.matrix_peak_TFLOPS.bf16", "compute.matrix_efficiency",
                "compute.vector_peak_TFLOPS.bf16", "compute.vector_efficiency",
                "compute.row_reduce_cycles_per_element", "compute.attention_tile_cycles"),
    "launch": ("host.launch_overhead_us.graph", "host.launch_overhead_us.graph_gap", "host.graph_start_us"),
    "host": ("host.graph_launch_us", "host.d2h_copy_us", "host.sync_us", "host.controller_us",
             "host.launch_overhead_us.eager", "host.loop_us"),
    "interconnect": ("interconnect.latency_us", "interconnect.hop_latency_us", "interconnect.link_GBps",
                     "interconnect.efficiency"),
    "wait": (),
}

METRICS = {"tpot_p99": "p99 time per output token", "ttft_p99": "p99 time to first token"}
SERVE_REQUESTS = 100      # requests per serving run (per seed and rate) by default
SERVE_SEEDS = 5           # seeds per candidate rate by default
SERVE_REL_TOL = 0.02      # the serving search's bracket: 2% of the rate
SERVE_MAX_LOAD = 100.0    # the highest rate tried: 100 x the nominal capacity
SERVE_MIN_SHARE = 0.01    # the lowest: a hundredth of one request's own rate (nominal / max batch)
MAX_SEEDS = 100           # --seeds, at most
MAX_SERVED = 20_000       # --requests x --seeds: requests simulated per candidate rate, at most


# ------------------------------------------------------------------ a field's closed range

def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """The type under `Annotated[...]` and `X | None`, with the constraints met on the way."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp, *extra = typing.get_args(tp)
            for a in extra:
                meta += list(a.metadata) if isinstance(a, FieldInfo) else [a]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, meta


@dataclass(frozen=True)
class FieldRange:
    """The values a profile's field takes by its own declaration (pydantic `ge`/`gt`/`le`/`lt`)."""

    low: float          # the least value the field takes (`gt`: the next one above)
    high: float         # the greatest
    integer: bool

    def text(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" + (" (whole numbers)" if self.integer else "")


def field_range(path: str) -> FieldRange:
    """The closed range of the profile field at dotted `path` (as `parameter_paths` names it), from the
    field's declaration; a field declared without one is bounded by the largest finite float."""
    node: Any = HardwareProfile
    meta: list[Any] = []
    for key in path.split("."):
        tp, _ = _unwrap(node)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields[key]
            node, meta = info.annotation, list(info.metadata)
        elif origin in (list, tuple):
            node, meta = typing.get_args(tp)[0], []
        elif origin is dict:
            node, meta = typing.get_args(tp)[1], []
        else:  # (parameter_paths names numbers only)
            raise KeyError(path)
    tp, more = _unwrap(node)
    integer = tp is int
    low, high = -math.inf, math.inf
    for m in meta + more:
        if isinstance(m, annotated_types.Ge):
            low = float(m.ge)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Gt):
            low = math.floor(float(m.gt)) + 1.0 if integer else math.nextafter(float(m.gt), math.inf)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Le):
            high = float(m.le)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Lt):
            high = math.ceil(float(m.lt)) - 1.0 if integer else math.nextafter(float(m.lt), -math.inf)  # type: ignore[arg-type]
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return FieldRange(max(low, -1.7e308), min(high, 1.7e308), integer)


def vary_path(profile: HardwareProfile, path: str, where: str = "--vary") -> float:
    """The value of the numeric parameter `path` of `profile` that a design search may scale; a
    `UserError` at `where` for a path that is not one (unknown, a section, a text, a flag) or is 0."""
    path = path.strip()
    known = parameter_paths(profile)
    if path not in known:
        inside = [p for p in known if p.startswith(path + ".")] if path else []
        if inside:
            raise UserError(f"'{path}' is a section of profile {profile.name}, not a number: name one of its "
                            f"parameters ({', '.join(inside[:4])}{', ...' if len(inside) > 4 else ''})", where=where)
        close = difflib.get_close_matches(path, list(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (`speedsim profiles --params NAME` lists them)"
        raise UserError(f"'{path}' is not a numeric parameter of profile {profile.name}{hint}", where=where)
    value = known[path]
    if value == 0.0:
        raise UserError(f"{path} is 0 on {profile.name}: no scale changes it (set it first: --set {path}=VALUE)",
                        where=where)
    if value < 0.0:
        raise UserError(f"{path} is {value:g} on {profile.name}: a scale search needs a value > 0", where=where)
    return value


def check_target(value: float, where: str) -> float:
    """A target time: a finite number > 0 (us); a `UserError` at `where` otherwise."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise UserError(f"the target must be a finite number of microseconds > 0, got {value!r}", where=where)
    return float(value)


# ------------------------------------------------------------------ the decode search

@dataclass(frozen=True)
class Point:
    """One value of the parameter simulated: its scale, and the method's per-token time (or why the
    profile cannot take it)."""

    scale: float
    value: float
    per_token_us: float | None     # None: refused
    refused: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scale": self.scale, "value": self.value}
        if self.per_token_us is None:
            out["refused"] = self.refused
        else:
            out["per_token_us"] = self.per_token_us
        return out


@dataclass(frozen=True)
class DesignResult:
    """The least change of one parameter at which a method meets a per-token time, or why none does."""

    profile: str
    overrides: Mapping[str, float]
    model: str
    sharing: str
    mode: str
    mode_label: str
    method: str
    parameter: str
    base_value: float
    base_per_token_us: float
    target_us_per_token: float
    field_range: FieldRange
    value: float                 # the answer (unreachable: the farthest point taken in the helpful direction)
    scale: float
    per_token_us: float          # simulated there, as `simulate --set PATH=VALUE` gives it
    reachable: bool
    already_met: bool
    direction: str               # up | down | "" (already met, or no effect)
    limit: str                   # unreachable: "range" | "refused" | "no gain"; "" when reachable
    limit_note: str
    bound_by: str                # unreachable: the largest cause at `value`; "" when reachable
    time_by_cause_us_per_token: Mapping[str, float]  # at `value`
    points: tuple[Point, ...]    # every value simulated, in order of scale
    monotone: bool
    non_monotone: tuple[tuple[float, float], ...]   # (scale, scale) pairs where the time is not monotone
    miss_scale: float | None = None    # reachable, searched: the bracket's other end (misses the target)
    notes: tuple[str, ...] = ()
    profile_parameters: frozenset[str] = frozenset()  # the profile's parameter paths (for `levers`)

    @property
    def evaluations(self) -> int:
        """Decode simulations run (refused values included)."""
        return len(self.points)

    @property
    def levers(self) -> tuple[str, ...]:
        """Unreachable: the bounding cause's other parameters on this profile (`CAUSE_PARAMETERS`)."""
        return tuple(p for p in CAUSE_PARAMETERS.get(self.bound_by, ()) if p != self.parameter
                     and p in self.profile_parameters)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: `parameter`, `value`, `scale`, `per_token_us`, `reachable`, then how it
        was found (`evaluations`, `monotone`; `bound_by` where unreachable)."""
        out: dict[str, Any] = {"profile": self.profile}
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        out |= {"model": self.model, "sharing": self.sharing, "mode": self.mode, "mode_label": self.mode_label,
                "method": self.method, "target_us_per_token": self.target_us_per_token,
                "parameter": self.parameter, "value": self.value, "scale": self.scale,
                "per_token_us": self.per_token_us, "reachable": self.reachable, "already_met": self.already_met,
                "base_value": self.base_value, "base_per_token_us": self.base_per_token_us,
                "range": [self.field_range.low, self.field_range.high], "direction": self.direction,
                "tolerance": REL_TOL, "evaluations": self.evaluations, "monotone": self.monotone}
        if not self.monotone:
            out["non_monotone"] = [list(pair) for pair in self.non_monotone]
        if self.miss_scale is not None:
            out["miss_scale"] = self.miss_scale
        if not self.reachable:
            out |= {"bound_by": self.bound_by, "limit": self.limit, "limit_note": self.limit_note,
                    "bound_by_parameters": list(self.levers)}
        out["time_by_cause_us_per_token"] = dict(self.time_by_cause_us_per_token)
        out["points"] = [p.to_dict() for p in self.points]
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class _MethodDecode:
    """One method's per-token time on any variant of the scenario's profile: its programs built once per
    kernel selection (`KernelRules` and dtype), one engine run per variant (as `sensitivity` does)."""

    def __init__(self, scenario: Scenario, method: str):
        self.s, self.method = scenario, method
        self.baselines = () if method == "speed" else (method,)
        self.mode = effective_mode(scenario.profile, scenario.run.mode)[0]
        self._phases: dict[tuple[KernelRules, str], dict[str, Phase]] = {}

    def per_token(self, profile: HardwareProfile) -> float:
        s = self.s
        check_fits(s.spec, s.sharing, s.traces, profile, self.baselines if self.method == "unshared" else (),
                   s.src_len)
        key = (KernelRules.from_profile(profile), profile.default_dtype)
        phases = self._phases.get(key)
        if phases is None:
            phases = self._phases[key] = build_phases(s.spec, s.sharing, s.traces, profile, self.baselines,
                                                      s.policy, s.src_len)[0]
        return decode_per_token_us(phases[self.method], profile, self.mode, round_trip=not s.run.device_control)


class _Search:
    """The points of one decode search, each simulated once."""

    def __init__(self, scenario: Scenario, method: str, path: str, base_value: float, target: float):
        self.s, self.method, self.path, self.base, self.target = scenario, method, path, base_value, target
        self.range = field_range(path)
        self.decode = _MethodDecode(scenario, method)
        self.points: dict[float, Point] = {}

    def variant(self, value: float) -> HardwareProfile:
        profile = with_overrides(self.s.profile, [Override(self.path, value, value / self.base)], where="")
        CostModel.from_profile(profile, where=f"{self.path}={value:g}")
        return profile

    def at(self, value: float) -> Point:
        if value not in self.points:
            try:
                t = self.decode.per_token(self.variant(value))
                self.points[value] = Point(value / self.base, value, t)
            except UserError as err:
                self.points[value] = Point(value / self.base, value, None, str(err))
        return self.points[value]

    def meets(self, p: Point) -> bool:
        return p.per_token_us is not None and p.per_token_us <= self.target

    def clamp(self, value: float) -> float:
        if self.range.integer:
            value = float(round(value))
        return min(max(value, self.range.low), self.range.high)

    def step(self, value: float, factor: float) -> float:
        """`value` x `factor`, in the field's range; an integer moves by one at least."""
        new = self.clamp(value * factor)
        if self.range.integer and new == value:
            new = self.clamp(value + (1.0 if factor > 1 else -1.0))
        return new

    def probe(self, up: bool) -> Point | None:
        """The first of x2, x1.01 (or their inverses) that the profile takes; None if neither."""
        for f in (PROBE, SMALL_PROBE):
            v = self.step(self.base, f if up else 1.0 / f)
            if v == self.base:
                return None  # at the field's bound
            p = self.at(v)
            if p.per_token_us is not None:
                return p
        return None

    def narrow(self, a: float, b: float) -> bool:
        if self.range.integer:
            return abs(b - a) <= 1.0
        width = abs(math.log(b) - math.log(a))
        return width <= min(math.log1p(REL_TOL), REL_TOL * abs(math.log(b / self.base)))

    def mid(self, a: float, b: float) -> float:
        m = math.sqrt(a) * math.sqrt(b)
        if self.range.integer:
            m = float(round(m))
            lo, hi = min(a, b), max(a, b)
            m = min(max(m, lo + 1.0), hi - 1.0)
        return m


def _monotone(points: Sequence[Point], up: bool) -> tuple[tuple[float, float], ...]:
    """Adjacent pairs (by scale) over which the time rises in the helpful direction."""
    taken = sorted((p for p in points if p.per_token_us is not None), key=lambda p: p.value)
    if not up:
        taken.reverse()
    bad = []
    for a, b in zip(taken, taken[1:], strict=False):
        assert a.per_token_us is not None and b.per_token_us is not None
        if b.per_token_us > a.per_token_us * (1.0 + MONOTONE_TOL):
            bad.append((a.scale, b.scale))
    return tuple(bad)


def design(scenario: Scenario, method: str, path: str, target_us_per_token: float,
           overrides: Mapping[str, float] | None = None) -> DesignResult:
    """The least change of the parameter at `path` (a scale of its value on the scenario's profile) at
    which `method` meets `target_us_per_token`, by the search of the module docstring. `overrides`: what
    `--set` changed on the profile, for the record."""
    if method not in ("speed", *defaults.BASELINES):
        raise UserError(f"'{method}' is not a method simulated (speed, {', '.join(defaults.BASELINES)})",
                        where="--method")
    target = check_target(target_us_per_token, "--target-us-per-token")
    s = scenario
    base_value = vary_path(s.profile, path)
    path = path.strip()
    search = _Search(s, method, path, base_value, target)
    baselines = () if method == "speed" else (method,)

    def detailed(profile: HardwareProfile) -> tuple[float, dict[str, float], Any]:
        r = simulate(profile, s.spec, s.sharing, list(s.traces), s.run.mode, baselines, s.policy, s.src_len,
                     device_control=s.run.device_control)
        m = r.speed if method == "speed" else r.baselines[method]
        return m.per_token_us, dict(m.time_by_cause_us_per_token), r

    t0, causes0, r0 = detailed(s.profile)  # the user's own scenario: its refusals are exit 2, as simulate's
    base = Point(1.0, base_value, t0)
    search.points[base_value] = base
    common: dict[str, Any] = dict(
        profile=s.profile.name, overrides=dict(overrides or {}), model=s.spec.name, sharing=str(s.sharing),
        mode=r0.mode, mode_label=r0.mode_label or r0.mode, method=method, parameter=path, base_value=base_value,
        base_per_token_us=t0, target_us_per_token=target, field_range=search.range)

    def finish(p: Point, reachable: bool, direction: str, limit: str = "", note: str = "",
               causes: Mapping[str, float] | None = None, miss: Point | None = None,
               notes: tuple[str, ...] = ()) -> DesignResult:
        if causes is None:
            t, causes, _ = detailed(search.variant(p.value)) if p.value != base_value else (t0, causes0, r0)
        else:
            t = p.per_token_us if p.per_token_us is not None else t0
        points = tuple(sorted(search.points.values(), key=lambda q: q.value))
        bad = _monotone(points, direction != "down")
        bound = max(causes, key=lambda c: causes[c]) if not reachable else ""
        return DesignResult(**common, value=p.value, scale=p.scale, per_token_us=t, reachable=reachable,
                            already_met=direction == "" and reachable, direction=direction, limit=limit,
                            limit_note=note, bound_by=bound, time_by_cause_us_per_token=causes, points=points,
                            monotone=not bad, non_monotone=bad, miss_scale=None if miss is None else miss.scale,
                            notes=notes, profile_parameters=frozenset(parameter_paths(s.profile)))

    if t0 <= target:
        return finish(base, True, "", causes=causes0)

    # the direction that helps
    up, down = search.probe(True), search.probe(False)
    lower = t0 * (1.0 - MONOTONE_TOL)  # (lower than rounding)
    helps = [p for p in (up, down) if p is not None and p.per_token_us is not None and p.per_token_us < lower]
    notes: tuple[str, ...] = ()
    if not helps:  # flat near the profile's value: try the field's ends (a capacity that changes nothing yet)
        ends = [search.at(v) for v in (search.range.high, search.range.low)
                if v != base_value and (v > 0 or not search.range.integer)]
        helps = [p for p in ends if p.per_token_us is not None and p.per_token_us < lower]
    if not helps:
        tried = ", ".join(f"x{p.scale:.4g}" for p in sorted(search.points.values(), key=lambda q: q.value)
                          if p.value != base_value)
        return finish(base, False, "", "no gain",
                      f"no value of {path} tried ({tried}) lowers {method}'s time below {t0:.6g} us", causes=causes0)
    if len(helps) == 2 and up is not None and down is not None:
        notes = (f"the time falls both ways from {base_value:g}: x{up.scale:g} gives {up.per_token_us:.6g} us, "
                 f"x{down.scale:.3g} {down.per_token_us:.6g} us; searching the lower",)
    first = min(helps, key=lambda p: p.per_token_us or math.inf)
    going_up = first.value > base_value
    direction = "up" if going_up else "down"
    end_value = search.range.high if going_up else search.range.low
    factor = PROBE if going_up else 1.0 / PROBE

    # the far end first: if the profile takes it and it misses, with a time no higher than the probe's
    # (monotone so far), nothing in between meets
    far = search.at(end_value) if end_value != base_value else None
    far_misses = far is not None and far.per_token_us is not None and not search.meets(far)
    if far is not None and far_misses and far.per_token_us is not None and first.per_token_us is not None \
            and far.per_token_us <= first.per_token_us:
        return finish(far, False, direction, "range",
                      f"at the field's {'upper' if going_up else 'lower'} bound {end_value:g} "
                      f"(x{far.scale:.4g}) {method} still takes {far.per_token_us:.6g} us per token",
                      notes=notes)

    # bracket: from the first helpful probe, doubling (halving) until it meets, the end, or a refusal
    a = base
    b: Point | None = None
    p = first if first.value != 0.0 else search.at(search.step(base_value, factor))  # (no ln 0: halve to it)
    for _ in range(MAX_STEPS):
        if p.per_token_us is None or search.meets(p):
            b = p
            break
        a = p
        if p.value == end_value:
            break
        p = search.at(search.step(p.value, factor))
    if b is None:
        if far is not None and search.meets(far):  # a bound of 0 approached by halving, met only at 0 itself
            return finish(far, True, direction, notes=notes + (
                f"met at {end_value:g} itself, not within {MAX_STEPS} halvings of it",))
        # not met on the way to the bound, and the time is not monotone: the least time seen that way
        side = [q for q in search.points.values() if q.per_token_us is not None
                and (q.value > base_value if going_up else q.value < base_value)]
        least = min(side, key=lambda q: q.per_token_us or math.inf)
        at_end = f"; at the bound {far.per_token_us:.6g} us" if far is not None and far.per_token_us is not None \
            else ""
        return finish(least, False, direction, "range",
                      f"not met at any value tried from {base_value:g} to the field's "
                      f"{'upper' if going_up else 'lower'} bound {end_value:g} (x2 steps); the least time seen "
                      f"is {least.per_token_us:.6g} us at x{least.scale:.4g}{at_end}", notes=notes)

    # bisect: a misses (taken), b meets or is refused; the nearest meeting point is kept
    best = b if search.meets(b) else None
    for _ in range(MAX_STEPS):
        if search.narrow(a.value, b.value):
            break
        m = search.at(search.mid(a.value, b.value))
        if m.value in (a.value, b.value):
            break
        if m.per_token_us is None or search.meets(m):
            b = m
            if search.meets(m):
                best = m
        else:
            a = m
    if best is None:
        return finish(a, False, direction, "refused",
                      f"the profile takes no value of {path} beyond about {a.value:g} (x{a.scale:.4g}): "
                      f"{b.refused}", notes=notes)
    if best is not b:
        notes += (f"values of {path} between {a.value:g} and {best.value:g} are refused ({b.refused})",)
    return finish(best, True, direction, miss=a, notes=notes)


# ------------------------------------------------------------------ the serving search

@dataclass(frozen=True)
class RatePoint:
    """One arrival rate simulated: the metric of each seed, and their mean."""

    rate_per_s: float
    metric_us: tuple[float, ...]    # by seed, in the order of `ServeDesignResult.seeds`

    @property
    def mean_us(self) -> float:
        return sum(self.metric_us) / len(self.metric_us)


@dataclass(frozen=True)
class ServeDesignResult:
    """The highest Poisson arrival rate at which a served method keeps a p99 latency under a target."""

    profile: str
    overrides: Mapping[str, float]
    model: str
    sharing: str
    method: str
    mode: str
    metric: str
    target_us: float
    requests: int
    max_batch: int
    seeds: tuple[int, ...]
    nominal_rate_per_s: float
    rate_min_per_s: float
    rate_max_per_s: float
    rate_per_s: float                # the answer (unreachable: `rate_min_per_s`)
    metric_us: float                 # the mean over the seeds there
    metric_us_by_seed: tuple[float, ...]
    reachable: bool
    saturated: bool                  # met at `rate_max_per_s`, the highest rate tried
    miss_rate_per_s: float | None    # the next rate simulated above the answer (the mean misses there)
    miss_metric_us: float | None
    per_seed_rate_per_s: tuple[float, ...]
    interval_per_s: tuple[float, float]
    runs: int                        # serving simulations run
    monotone: bool
    non_monotone: tuple[tuple[float, float], ...]
    points: tuple[RatePoint, ...]    # the rates simulated with every seed, in order
    notes: tuple[str, ...] = ()

    @property
    def interval_confidence(self) -> float:
        """P([min r_k, max r_k] covers the median per-seed critical rate) for K independent seeds."""
        return 1.0 - 2.0 ** (1 - len(self.seeds))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.profile}
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        out |= {"model": self.model, "sharing": self.sharing, "method": self.method, "mode": self.mode,
                "metric": self.metric, "target_us": self.target_us, "rate_per_s": self.rate_per_s,
                "metric_us": self.metric_us, "reachable": self.reachable, "saturated": self.saturated,
                "interval_per_s": list(self.interval_per_s), "interval_confidence": self.interval_confidence,
                "per_seed_rate_per_s": list(self.per_seed_rate_per_s), "seeds": list(self.seeds),
                "metric_us_by_seed": list(self.metric_us_by_seed)}
        if self.miss_rate_per_s is not None and self.miss_metric_us is not None:
            out |= {"miss_rate_per_s": self.miss_rate_per_s, "miss_metric_us": self.miss_metric_us}
        out |= {"requests": self.requests, "max_batch": self.max_batch,
                "nominal_rate_per_s": self.nominal_rate_per_s, "rate_range_per_s": [self.rate_min_per_s,
                                                                                   self.rate_max_per_s],
                "tolerance": SERVE_REL_TOL, "rule": "mean over seeds <= target", "runs": self.runs,
                "evaluations": len(self.points), "monotone": self.monotone}
        if not self.monotone:
            out["non_monotone"] = [list(pair) for pair in self.non_monotone]
        out["points"] = [{"rate_per_s": p.rate_per_s, "mean_us": p.mean_us, "by_seed_us": list(p.metric_us)}
                         for p in self.points]
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def check_serve_sizes(requests: int, seeds: int) -> None:
    """The serving search's sizes: `seeds` in 1..MAX_SEEDS, `requests` x `seeds` at most MAX_SERVED."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"must be from 1 to {MAX_SEEDS}, got {seeds}", where="--seeds")
    if requests < 1:
        raise UserError(f"must be at least 1, got {requests}", where="--requests")
    if requests * seeds > MAX_SERVED:
        raise UserError(f"{requests} requests x {seeds} seeds = {requests * seeds} requests per candidate rate, "
                        f"beyond the {MAX_SERVED} a search may simulate per rate (speedsim.design.search)",
                        where="--requests")


def serve_design(run: RunParams, metric: str, target_us: float, seeds: int = SERVE_SEEDS,
                 model_specs: Sequence[str | Path] = (), sources: Any = None,
                 progress: Callable[[RatePoint], None] | None = None) -> ServeDesignResult:
    """The highest Poisson rate at which `run`'s method keeps `metric` (tpot_p99 | ttft_p99) under
    `target_us`, by the rule of the module docstring. `run`: a serving run (its `arrivals` and
    `serve_seed` are replaced: the seeds are `run.serve_seed` .. + `seeds` - 1)."""
    from speedsim.serve import serve
    from speedsim.serve.run import nominal_rate
    from speedsim.simulate.scenario import NAMED_BY_PATH

    if metric not in METRICS:
        raise UserError(f"'{metric}' is not one of {', '.join(METRICS)}", where="--metric")
    target = check_target(target_us, "--target-us")
    requests = run.requests or 0
    check_serve_sizes(requests, seeds)
    sources = NAMED_BY_PATH if sources is None else sources
    seed_list = tuple(run.serve_seed + k for k in range(seeds))
    if seed_list[-1] > 2**63 - 1:
        raise UserError(f"seeds {seed_list[0]}..{seed_list[-1]} pass 2**63 - 1", where="--seed")
    from speedsim.limits import MAX_ARRIVAL_S

    nominal = nominal_rate(run, model_specs, sources=sources)
    rate_max = SERVE_MAX_LOAD * nominal
    rate_min = max(SERVE_MIN_SHARE * nominal / run.max_batch, requests / MAX_ARRIVAL_S * 1.01)
    cache: dict[tuple[float, int], float] = {}
    last: dict[str, Any] = {}

    def one(rate: float, seed: int) -> float:
        if (rate, seed) not in cache:
            r = run.model_copy(update={"arrivals": f"poisson:{rate!r}", "serve_seed": seed})
            result = serve(r, model_specs=model_specs, sources=sources)
            last["result"] = result
            value = result.tpot_us.p99 if metric == "tpot_p99" else result.ttft_us.p99
            if not math.isfinite(value):
                raise UserError("no request has two output tokens: no time per output token to bound",
                                where="--metric")
            cache[(rate, seed)] = value
        return cache[(rate, seed)]

    points: dict[float, RatePoint] = {}

    def at(rate: float) -> RatePoint:
        if rate not in points:
            points[rate] = RatePoint(rate, tuple(one(rate, k) for k in seed_list))
            if progress is not None:
                progress(points[rate])
        return points[rate]

    def mean_meets(rate: float) -> bool:
        return at(rate).mean_us <= target

    def bracket(meets: Callable[[float], bool], lo: float | None, hi: float | None
                ) -> tuple[float | None, float | None]:
        """(highest rate met, lowest rate missed) from a rate met (`lo`) or missed (`hi`) or both: doubling
        or halving to a bracket, then bisected in ln r; None where the range ends first (met at rate_max,
        missed at rate_min)."""
        if hi is None:
            assert lo is not None
            r = lo
            while r < rate_max:
                r = min(r * 2.0, rate_max)
                if not meets(r):
                    hi = r
                    break
                lo = r
        elif lo is None:
            r = hi
            while r > rate_min:
                r = max(r / 2.0, rate_min)
                if meets(r):
                    lo = r
                    break
                hi = r
        if lo is None or hi is None:
            return lo, hi
        for _ in range(MAX_STEPS):
            if hi / lo <= 1.0 + SERVE_REL_TOL:
                break
            m = math.sqrt(lo * hi)
            if meets(m):
                lo = m
            else:
                hi = m
        return lo, hi

    start = min(max(nominal / run.max_batch, rate_min), rate_max)
    if mean_meets(start):
        lo, hi = bracket(mean_meets, start, None)
    elif (half := max(start / 2.0, rate_min)) != start and not mean_meets(half) and not mean_meets(rate_min):
        lo, hi = None, rate_min  # missed twice, and at the lowest rate: no lower load meets it
    else:
        lo, hi = bracket(mean_meets, None, start)
    notes: list[str] = []
    # each seed's own critical rate, bracketed first by the rates already simulated with every seed
    per_seed: list[float] = []
    for i, k in enumerate(seed_list):
        def seed_meets(rate: float, i: int = i, k: int = k) -> bool:
            return (points[rate].metric_us[i] if rate in points else one(rate, k)) <= target
        done = sorted(points)
        met = [r for r in done if points[r].metric_us[i] <= target]
        s_lo = max(met) if met else None
        missed = [r for r in done if points[r].metric_us[i] > target and (s_lo is None or r > s_lo)]
        s_hi = min(missed) if missed else None
        s_lo, _ = bracket(seed_meets, s_lo, s_hi)
        per_seed.append(rate_min if s_lo is None else s_lo)
        if s_lo is None:
            notes.append(f"seed {k} misses the target even at {rate_min:.4g}/s: its rate is given as that")
    ordered = tuple(points[r] for r in sorted(points))
    bad = tuple((a.rate_per_s, b.rate_per_s) for a, b in zip(ordered, ordered[1:], strict=False)
                if b.mean_us < a.mean_us * (1.0 - MONOTONE_TOL))
    reachable = lo is not None
    answer = at(lo) if lo is not None else at(rate_min)
    miss = points[hi] if hi is not None and reachable else None
    result = last["result"]
    return ServeDesignResult(
        profile=result.profile,
        overrides=dict(result.overrides), model=result.model, sharing=result.sharing, method=result.method,
        mode=result.mode_label or result.mode, metric=metric, target_us=target, requests=requests,
        max_batch=run.max_batch, seeds=seed_list, nominal_rate_per_s=nominal, rate_min_per_s=rate_min,
        rate_max_per_s=rate_max, rate_per_s=answer.rate_per_s, metric_us=answer.mean_us,
        metric_us_by_seed=answer.metric_us, reachable=reachable, saturated=reachable and hi is None,
        miss_rate_per_s=None if miss is None else miss.rate_per_s,
        miss_metric_us=None if miss is None else miss.mean_us,
        per_seed_rate_per_s=tuple(per_seed), interval_per_s=(min(per_seed), max(per_seed)),
        runs=len(cache), monotone=not bad, non_monotone=bad, points=ordered, notes=tuple(notes))


__all__ = ["METRICS", "REL_TOL", "SERVE_REL_TOL", "DesignResult", "FieldRange", "Point", "RatePoint",
           "ServeDesignResult", "check_target", "design", "field_range", "serve_design", "vary_path"]
