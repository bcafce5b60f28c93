"""Fit a profile's few free parameters to measured rows.

No per-row tables and no per-shape factors: a handful of physical parameters per profile,
fitted by minimising the mean absolute log error of simulated against measured per-call time
(close to MAPE, but symmetric). First the ceiling rows anchor the achievable fractions in closed
form (the copy row sets the DRAM efficiency, the large-GEMM rows the matrix efficiency); then
graph-mode rows and, when given, a per-kernel profile (`speedsim.validation.kernels`: the device
time of each kernel class per scenario) fit the device-side parameters together; eager rows
then fit the host's eager launch overhead alone. Without graph-mode rows (a CPU) the device
parameters, the eager overhead and the on-chip cache's usable share are fitted together on the
eager rows.

The parameters (path in the profile, bounds):
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares, minimize_scalar

from speedsim.engine import time_call
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.limits import FIT_EVALUATIONS, MAX_FIT_SECONDS, check_work, log_error
from speedsim.paths import relative
from speedsim.validation.kernels import (
    KernelRow,
    KernelTargets,
    check_scenarios_work,
    kernel_targets,
    validate_kernels,
)
from speedsim.validation.measured import KNOWN_SECTIONS, MeasuredRow, rows_for_mode
from speedsim.validation.validate import build_programs, check_rows_work, validate
from speedsim.workload import KernelRules
from speedsim.workload.models import ModelSpec


@dataclass(frozen=True)
class FreeParameter:
    path: tuple[str | int, ...]  # where it lives in the profile's dict (an int indexes a list)
    low: float
    high: float
    what: str


DEVICE_PARAMETERS: tuple[FreeParameter, ...] = (
    FreeParameter(("kernel", "latency_us"), 0.1, 20.0, "fixed device time per kernel"),
    FreeParameter(("kernel", "matrix_latency_us"), 0.1, 20.0, "fixed device time per matrix-path kernel"),
    FreeParameter(("host", "launch_overhead_us", "graph"), 0.01, 10.0, "least time between starts of graph nodes"),
    FreeParameter(("host", "launch_overhead_us", "graph_gap"), 0.01, 10.0, "gap between dependent graph nodes"),
    FreeParameter(("host", "graph_start_us"), 0.01, 20.0, "device time from a graph's start to its first node"),
    FreeParameter(("compute", "unit_inflight_KiB"), 0.1, 1024.0, "bytes in flight per unit, streaming"),
    FreeParameter(("compute", "unit_attention_inflight_KiB"), 0.1, 1024.0, "bytes in flight per unit, attention"),
    FreeParameter(("memory", "onchip", 0, "latency_ns"), 20.0, 2000.0, "on-chip load latency"),
    FreeParameter(("compute", "row_reduce_cycles_per_element"), 0.01, 100.0, "serial cycles per row element"),
    FreeParameter(("compute", "attention_tile_cycles"), 1.0, 1e5, "dependent chain per attention key tile"),
    FreeParameter(("compute", "index_cycles"), 1.0, 1e5, "offset arithmetic of a non-contiguous kernel"),
)
# anchored in closed form by the ceiling rows before the fit (ceiling pattern, parameter)
ANCHORS: tuple[tuple[str, FreeParameter], ...] = (
    ("copy_", FreeParameter(("memory", "dram", "efficiency"), 0.3, 1.0, "achievable DRAM fraction")),
    ("gemm_", FreeParameter(("compute", "matrix_efficiency"), 0.2, 1.0, "achievable matrix fraction")),
)
EAGER_PARAMETER = FreeParameter(("host", "launch_overhead_us", "eager"), 0.1, 500.0,
                                "host time per framework op in eager mode")
# Not fitted without graph-mode rows (a CPU, eager only), left as the starting profile has them: only
# graph rows can tell them (eager rows do not depend on them).
EAGER_ONLY_UNFITTED = frozenset({("host", "launch_overhead_us", "graph"), ("host", "launch_overhead_us", "graph_gap"),
                                 ("host", "graph_start_us")})
# Fitted only without graph-mode rows (a CPU): the share of the last-level cache the process gets. A
# CPU's L3 is shared with the other cores (and, in a VM, with other tenants), so its usable share is
# not a datasheet number; the CPU's rows pin it (an unshared 12-layer group against 4 shared layers
# that nearly fit). A GPU's L2 usable fraction stays cited and ranged (`simulate --bounds`).
EAGER_ONLY_PARAMETERS: tuple[FreeParameter, ...] = (
    FreeParameter(("memory", "onchip", 0, "usable_fraction"), 0.05, 1.0,
                  "share of the last-level cache the process gets (eager-only fits: a CPU)"),
    # A CPU's attention op sets up per call (buffers, the mask) several times a GEMM's fixed time;
    # the GPU fits leave it unset (= the matrix path's): their graph rows were fitted without it.
    FreeParameter(("kernel", "attention_latency_us"), 0.1, 100.0,
                  "fixed time of an attention call (eager-only fits: a CPU)"),
)

__doc__ += "\n".join(f"- {'.'.join(map(str, p.path))} in [{p.low}, {p.high}]: {p.what}"
                     for p in (*(a for _, a in ANCHORS), *DEVICE_PARAMETERS, EAGER_PARAMETER, *EAGER_ONLY_PARAMETERS))


def _get(d: dict, path: tuple) -> float:
    """The value at `path`; an optional value left unset falls back to what the model uses in its place
    (`kernel.attention_latency_us` -> `kernel.matrix_latency_us` -> `kernel.latency_us`)."""
    value: object = d
    for key in path:
        value = value[key]  # type: ignore[index]
    if value is None and path == ("kernel", "attention_latency_us"):
        value = d["kernel"]["matrix_latency_us"]
    if value is None and path[0] == "kernel" and path[1] in ("matrix_latency_us", "attention_latency_us"):
        value = d["kernel"]["latency_us"]
    return float(value)  # type: ignore[arg-type]


def _set(d: dict, path: tuple, value: float) -> None:
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


def with_values(profile: HardwareProfile, params: tuple[FreeParameter, ...], values,
                digits: int | None = None) -> HardwareProfile:
    data = profile.model_dump()
    for p, v in zip(params, values, strict=True):
        _set(data, p.path, float(f"{float(v):.{digits}g}") if digits else float(v))
    return HardwareProfile.model_validate(data)


@dataclass
class CalibrationResult:
    profile: HardwareProfile
    before: dict[str, float]
    after: dict[str, float]
    values: dict[str, float]
    at_bounds: dict[str, str]  # fitted parameters that ended at a bound of their fit: "low" or "high"


def without_fitted_ranges(profile: HardwareProfile, params: tuple[FreeParameter, ...]) -> HardwareProfile:
    """`profile` without the `ranges` of the parameters a fit sets: a range says where a parameter *not*
    fitted to this device may lie (a derived profile's), and the fit may rightly leave it (fitting l4 to
    H200 rows put its DRAM efficiency at 0.475, outside l4's [0.8, 0.884]: a traceback)."""
    fitted = {".".join(map(str, p.path)) for p in params}
    return profile.model_copy(update={"ranges": {k: r for k, r in profile.ranges.items() if k not in fitted}})


def _at_bounds(profile: HardwareProfile, params: tuple[FreeParameter, ...]) -> dict[str, str]:
    """The parameters whose fitted value lies at (within 0.1% of) a bound of their fit."""
    data = profile.model_dump()
    out: dict[str, str] = {}
    for p in params:
        value = _get(data, p.path)
        for side, bound in (("low", p.low), ("high", p.high)):
            if abs(math.log(value / bound)) < 1e-3:
                out[".".join(map(str, p.path))] = side
    return out


def _objective_rows(profile: HardwareProfile, pairs, models, source):
    rules = KernelRules.from_profile(profile)
    programs = build_programs(pairs, models, rules, profile.default_dtype, source)
    usable = [(row, mode, programs[row.key]) for row, mode in pairs
              if row.us_median > 0 and math.isfinite(row.us_median)]
    if not usable:
        raise UserError("no measured rows with a time to fit", where=source)
    return usable


def _log_errors(profile: HardwareProfile, usable) -> np.ndarray:
    """log(simulated / measured) per row, each finite (`speedsim.limits.log_error`: a simulated time that
    is not a positive finite number is the row's `UserError`)."""
    return np.array([log_error(time_call(profile, prog, mode) / div, row.us_median,
                               f"{row.source}:{row.line}") for row, mode, (prog, div) in usable])


def check_fit_work(profile: HardwareProfile, pairs, models, source: str, kernels: list[KernelRow] | None,
                   kernels_source: str) -> None:
    """Refuse, before fitting, rows (and kernel scenarios) whose simulation, `FIT_EVALUATIONS` times
    over, would take longer than `MAX_FIT_SECONDS`: naming the row, the file, or both files together."""
    rules = KernelRules.from_profile(profile)
    dtype = profile.default_dtype
    purpose = f" (fitted: simulated ~{FIT_EVALUATIONS} times)"
    work = check_rows_work(pairs, models, rules, dtype, source, {}, FIT_EVALUATIONS, MAX_FIT_SECONDS, purpose)
    if kernels:
        work += check_scenarios_work(kernels, models, rules, dtype, kernels_source, FIT_EVALUATIONS,
                                     MAX_FIT_SECONDS, purpose)
    check_work(work, source, f"the fit{purpose}", budget=MAX_FIT_SECONDS)


def _fit(profile: HardwareProfile, params: tuple[FreeParameter, ...], usable, max_evals: int,
         kernels: KernelTargets | None = None) -> HardwareProfile:
    """Robust (soft L1) least squares on log errors, in log-parameter space, within the bounds."""
    lows = np.log([p.low for p in params])
    highs = np.log([p.high for p in params])
    start = np.log([max(p.low, min(p.high, _get(profile.model_dump(), p.path))) for p in params])

    # single-op rows (section `op`, a CPU's kernel level) weigh as much in total as the other rows
    # (in the robust loss's quadratic range; beyond it, where soft-L1 is linear, sqrt(ops x others) to
    # the others' count), like a GPU's kernel profile below: dozens must not outvote a few whole steps
    ops = sum(1 for row, _, _ in usable if row.section == "op")
    weight = math.sqrt((len(usable) - ops) / ops) if 0 < ops < len(usable) else 1.0
    weights = np.array([weight if row.section == "op" else 1.0 for row, _, _ in usable])

    def residuals(x: np.ndarray) -> np.ndarray:
        prof = with_values(profile, params, np.exp(x))
        errors = _log_errors(prof, usable) * weights
        if kernels is None:
            return errors
        cells = np.array(kernels.log_errors(prof))
        # each set weighs as much as the other in total, whatever its number of rows
        return np.concatenate([errors, cells * math.sqrt(len(errors) / max(len(cells), 1))])

    best = least_squares(residuals, np.clip(start, lows + 1e-9, highs - 1e-9), bounds=(lows, highs),
                         loss="soft_l1", f_scale=0.05, diff_step=1e-3, max_nfev=max_evals, x_scale=1.0)
    return with_values(profile, params, np.exp(best.x))


def anchor_ceilings(profile: HardwareProfile, usable) -> HardwareProfile:
    """Set the achievable DRAM and matrix fractions so the ceiling rows (copy, large GEMM) come out right.

    Each is a one-dimensional fit of one parameter to the ceiling rows of its kind (closed form in
    effect: the copy and the large GEMM are single kernels bound by that one rate).
    """
    for prefix, param in ANCHORS:
        rows = [u for u in usable if u[0].section == "ceiling" and u[0].pattern.startswith(prefix)]
        if not rows:
            continue

        def loss(logv: float, rows=rows, param=param, base=profile) -> float:
            return float(np.mean(np.abs(_log_errors(with_values(base, (param,), [math.exp(logv)]), rows))))

        res = minimize_scalar(loss, bounds=(math.log(param.low), math.log(param.high)), method="bounded",
                              options={"xatol": 1e-4})
        profile = with_values(profile, (param,), [math.exp(res.x)])
    return profile


def _fit_eager_overhead(profile: HardwareProfile, eager) -> HardwareProfile:
    """The host's eager overhead per framework op alone, on the eager rows (the device is fitted already)."""
    def loss(logv: float) -> float:
        prof = with_values(profile, (EAGER_PARAMETER,), [math.exp(logv)])
        return float(np.mean(np.abs(_log_errors(prof, eager))))

    res = minimize_scalar(loss, bounds=(math.log(EAGER_PARAMETER.low), math.log(EAGER_PARAMETER.high)),
                          method="bounded", options={"xatol": 1e-3})
    return with_values(profile, (EAGER_PARAMETER,), [math.exp(res.x)])


def parse_sections(text: str | None) -> tuple[str, ...] | None:
    """The `--sections` text (comma-separated SECTION or SECTION/PATTERN items) as a tuple; None when
    not given. An empty text is a `UserError`: it would silently fit every row."""
    if text is None:
        return None
    if not text.strip():
        raise UserError("empty: give SECTION[,SECTION/PATTERN,...] (e.g. layer,group)", where="--sections")
    chosen = tuple(x.strip() for x in text.split(","))
    twice = sorted({x for x in chosen if chosen.count(x) > 1})
    if twice:
        raise UserError(f"{', '.join(twice)} given twice", where="--sections")
    return chosen


def calibrate(profile: HardwareProfile, rows: list[MeasuredRow], models: dict[str, ModelSpec],
              source: str = "measured", max_evals: int = 60,
              sections: tuple[str, ...] | None = None, kernels: list[KernelRow] | None = None,
              kernels_source: str = "kernels") -> CalibrationResult:
    """Anchor the ceilings, fit the device parameters on graph rows (and kernel rows), then the eager overhead.

    Without graph-mode rows (a CPU, where PyTorch runs eager only) the device parameters, the
    eager overhead and the on-chip cache's usable share (`EAGER_ONLY_PARAMETERS`) are fitted
    together on the eager rows. Whole-decode rows (section `decode`) are never fitted: they stay
    an out-of-sample check for `validate`. `sections` limits the fit to rows of those sections
    (e.g. the decode-shaped layer, group and lmhead rows); an item `SECTION/PATTERN` adds the rows
    of one pattern of a section (e.g. `ceiling/launch_add_x100`, the measured cost of one framework
    op). `kernels`: a per-kernel profile whose class times are fitted together with the graph rows.
    """
    if sections:
        unknown = [s for s in sections if s.split("/", 1)[0] not in KNOWN_SECTIONS]
        if unknown:
            raise UserError(f"unknown section(s) {', '.join(repr(s) for s in unknown)} "
                            f"(known: {', '.join(KNOWN_SECTIONS)}, or SECTION/PATTERN)", where="--sections")
        # each item selects rows: one that selects none is a typo (layer/multitokn), not a no-op
        empty = [s for s in sections if not any(s in (r.section, f"{r.section}/{r.pattern}") for r in rows)]
        if empty:
            raise UserError(f"no measured rows of {', '.join(empty)}", where="--sections")
        rows = [r for r in rows if r.section in sections or f"{r.section}/{r.pattern}" in sections]
    def components(mode: str) -> list:
        return [(r, m) for r, m in rows_for_mode(rows, mode) if r.section != "decode" and (r.mode or m) == mode]

    def errors(prof: HardwareProfile) -> dict[str, float]:
        """MAPE as `validate` computes and prints it (one code path per figure): per mode over the
        rows given (after `sections`), and `validate --kernels`' overall figure for the kernel rows."""
        out = {m: validate(prof, rows, models, m, source).mape()["all"] for m in modes}
        if kernels:
            out["kernels"] = validate_kernels(prof, kernels, models, kernels_source).mape()["all"]
        return out

    graph_pairs, eager_pairs = components("graph"), components("eager")
    check_fit_work(profile, [*graph_pairs, *eager_pairs], models, source, kernels, kernels_source)
    has_graph = any(r.mode == "graph" for r, _ in graph_pairs)
    base = (*(a for _, a in ANCHORS), *DEVICE_PARAMETERS, EAGER_PARAMETER)
    all_params = base if has_graph else (*(p for p in base if p.path not in EAGER_ONLY_UNFITTED), *EAGER_ONLY_PARAMETERS)
    start = profile
    profile = without_fitted_ranges(profile, all_params)
    targets = kernel_targets(profile, kernels, models, kernels_source) if kernels else None
    fitted = profile
    if has_graph:
        graph = _objective_rows(profile, graph_pairs, models, source)
        anchored = any(u[0].section == "ceiling" and u[0].pattern.startswith(tuple(a for a, _ in ANCHORS))
                       for u in graph)
        for _ in range(2 if anchored else 1):  # the anchors assume the other parameters: refit both once more
            fitted = anchor_ceilings(fitted, graph)
            fitted = _fit(fitted, DEVICE_PARAMETERS, graph, max_evals, targets)
    if eager_pairs:
        eager = _objective_rows(fitted, eager_pairs, models, source)
        if has_graph:
            fitted = _fit_eager_overhead(fitted, eager)
        else:
            device = tuple(p for p in DEVICE_PARAMETERS if p.path not in EAGER_ONLY_UNFITTED)
            fitted = _fit(profile, (*device, EAGER_PARAMETER, *EAGER_ONLY_PARAMETERS), eager, max_evals)
    if not (has_graph or eager_pairs):
        raise UserError("no measured rows to fit (only whole-decode rows?)", where=source)

    # round to 4 significant digits for a readable profile (changes the error by < 0.1%)
    fitted = with_values(fitted, all_params, [_get(fitted.model_dump(), p.path) for p in all_params], digits=4)
    modes = (*(("graph",) if has_graph else ()), *(("eager",) if eager_pairs else ()))
    before, after = errors(start), errors(fitted)
    values = {".".join(map(str, p.path)): _get(fitted.model_dump(), p.path) for p in all_params}
    return CalibrationResult(fitted, before, after, values, _at_bounds(fitted, all_params))


NOTE_END = "(fitted by speedsim calibrate)"  # ends the source note `calibrate` writes into a profile


def with_fit_note(profile: HardwareProfile, fitted_on: list[Path], name: str | None = None) -> HardwareProfile:
    """`profile` with the source note of a fit on the files `fitted_on` (the note of an earlier fit goes,
    whatever files it was fitted on), renamed to `name` if given."""
    files = [relative(p) for p in fitted_on]
    listed = ", ".join(files[:-1]) + " and " + files[-1] if len(files) > 1 else files[0]
    note = f"measured: {listed} {NOTE_END}"
    earlier = [i for i, s in enumerate(profile.sources) if s.startswith("measured: ") and s.endswith(NOTE_END)]
    at = earlier[0] if earlier else len(profile.sources)  # where the earlier note was: other notes keep their order
    kept = [s for i, s in enumerate(profile.sources) if i not in earlier]
    sources = kept[:at] + [note] + kept[at:]
    return profile.model_copy(update={"sources": sources, "name": profile.name if name is None else name})
