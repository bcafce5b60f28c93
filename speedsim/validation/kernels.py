"""Kernel-level validation: measured per-kernel device time against the simulated kernels, per class.

A measured kernel profile (`experiments/measured/h200/kernels.csv`, written by
`profile_kernels.py` with torch.profiler) has the columns
`scenario,kernel,calls_per_iter,device_us_per_iter`. Each scenario names what one iteration ran:

| scenario | what | simulated as |
|---|---|---|
| `layer_{model}_n{n}_ctx{ctx}` | one decoder layer, n queries, ctx keys cached | `patterns.layer_multitoken` |
| `pipelayer_{model}_R{R}_ctx{ctx}` | one layer over R in-flight tokens, each with its own cache | `decoder_layer` with R batch items |
| `lmhead_{model}_n{n}` | the vocabulary projection of n rows | `kernels.lm_head` (no final norm) |

Each measured kernel is put in a class by the first rule of `CLASS_RULES` that matches its name
(case-insensitive regular expressions, tried in order); simulated kernels carry their class
(`Kernel.kclass`). Per scenario and class the measured and simulated device time per iteration
are compared (a class present on one side only is a 100% error for that cell, and shows a
kernel-selection rule that is wrong). `mape["all"]` is the mean over every (scenario, class)
cell, `mape[class]` the mean over the scenarios where that class appears.

A kernel no rule matches is counted in `unclassified` and listed (never dropped silently);
with `strict=True` it is an error naming its row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from speedsim.engine import Engine
from speedsim.engine.recorder import Recorder
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.limits import (
    MAX_CALLS_PER_ITER,
    MAX_ROW_INTS,
    Work,
    check_work,
    log_error,
    mean_error,
    relative_error,
)
from speedsim.validation.measured import finite_number, measured_time, read_csv_table
from speedsim.workload.kernels import (
    ATTN,
    COPY,
    ELEMENTWISE,
    GEMM,
    KERNEL_CLASSES,
    MASK,
    NORM,
    REDUCE,
    Program,
)
from speedsim.workload.layers import decoder_layer, lm_head
from speedsim.workload.models import ModelSpec
from speedsim.workload.patterns import layer_kernels, layer_multitoken, layers_work
from speedsim.workload.rules import KernelRules

KERNEL_COLUMNS = ("scenario", "kernel", "calls_per_iter", "device_us_per_iter")
WARMUP = 2  # profiled iterations before the one compared (`simulated_by_class`)

# (class, pattern): the first match wins. `Memset (Device)` is the output clear of a masked
# attention call (class mask) where the scenario has one, otherwise a GEMM library's workspace
# clear (class gemm): see `classify`.
CLASS_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((c, re.compile(p, re.IGNORECASE)) for c, p in (
    (MASK, r"where_kernel|FillFunctor|masked_fill|^Memset"),
    (NORM, r"layer_norm|rms_?norm|group_norm"),
    (REDUCE, r"splitKreduce|splitk_reduce|lean_reduction|flash_?decoding.*combine"),
    (ATTN, r"sdpa|flash|fmha|attention"),
    (GEMM, r"nvjet|gemm|gemv|cutlass|xmma|cublas"),
    (COPY, r"direct_copy|copy_kernel|memcpy|index_put|scatter|gather"),
    (ELEMENTWISE, r"elementwise|Functor|silu|gelu|relu|clamp|tanh|sigmoid|_add|_mul"),
))
SCENARIO = re.compile(r"(?P<kind>layer|pipelayer|lmhead)_(?P<model>[A-Za-z0-9.-]+?)_"
                      r"(?:n(?P<n>[0-9]+)|R(?P<R>[0-9]+))(?:_ctx(?P<ctx>[0-9]+))?")

def classify(kernel: str, masked_attention: bool) -> str | None:
    """The class of a measured kernel by its name (None: no rule matches)."""
    for cls, pattern in CLASS_RULES:
        if pattern.search(kernel):
            if cls == MASK and kernel.startswith("Memset") and not masked_attention:
                return GEMM
            return cls
    return None

@dataclass(frozen=True)
class KernelRow:
    line: int
    scenario: str
    kernel: str
    calls: float
    us: float

@dataclass
class KernelReport:
    """Per (scenario, class): measured and simulated device us per iteration and kernel calls."""

    profile: str
    cells: list[dict] = field(default_factory=list)
    scenarios: list[dict] = field(default_factory=list)
    unclassified: list[dict] = field(default_factory=list)

    def mape(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.cells:
            out["all"] = mean_error([c["ape"] for c in self.cells])
        for cls in KERNEL_CLASSES:
            apes = [c["ape"] for c in self.cells if c["class"] == cls]
            if apes:
                out[cls] = mean_error(apes)
        return out

    def as_json(self, worst: int = 10) -> dict:
        """The shape `validate --json` uses (profile, mode, rows, skipped, mape, worst), plus the
        kernel-level parts: unclassified count and rows, per-scenario totals, every cell."""
        ranked = sorted(self.cells, key=lambda c: c["ape"], reverse=True)[:worst]
        return {"profile": self.profile, "mode": "kernels", "rows": len(self.cells), "skipped": 0,
                "mape": {k: round(v, 4) for k, v in self.mape().items()}, "worst": ranked,
                "unclassified": len(self.unclassified), "unclassified_rows": self.unclassified,
                "scenarios": self.scenarios, "cells": self.cells}

def read_kernels(path: Path, where: str | None = None) -> list[KernelRow]:
    """Read a kernel profile CSV: a `UserError` naming the file (and row) if it is not a regular file,
    has no rows, a missing or repeated column, a ragged row, a count that is not a finite number in
    [0, MAX_CALLS_PER_ITER] or a time that is not a measured time (`measured_time`: 1 ns to 11 days)."""
    path = Path(path)
    _, records = read_csv_table(path, "kernel CSV", KERNEL_COLUMNS, where)
    rows = []
    for line, rec in records:
        where = f"{path}:{line}"
        calls = finite_number(rec["calls_per_iter"].strip(), "calls_per_iter", where, 0, MAX_CALLS_PER_ITER)
        us = measured_time(rec["device_us_per_iter"].strip(), "device_us_per_iter", where)
        rows.append(KernelRow(line, rec["scenario"].strip(), rec["kernel"], calls, us))
    return rows

@dataclass(frozen=True)
class Scenario:
    """A profiled scenario's name read: its kind, model and sizes (n or R >= 1, ctx >= 0, within
    `speedsim.limits.MAX_ROW_INTS`)."""

    kind: str
    spec: ModelSpec
    n: int
    R: int
    ctx: int

    def work(self, rules: KernelRules, dtype: str) -> Work:
        """What simulating it (`simulated_by_class`: `WARMUP` + 1 calls) does, before building it."""
        if self.kind == "lmhead":
            once = Work(layer_kernels(self.spec, rules, dtype)[2])
        else:
            items = self.R if self.kind == "pipelayer" else 1
            once = layers_work(self.spec, rules, dtype, 1, items, head=False)
        return once * (WARMUP + 1)


def _size(text: str, name: str, low: int, scenario: str, where: str) -> int:
    """A scenario name's size `name` (digits), in [low, MAX_ROW_INTS[name]]; else a `UserError`."""
    top = MAX_ROW_INTS[name]
    if len(text) > len(str(top)) or not low <= int(text) <= top:  # (5,000 digits: int() refuses them)
        what = "tokens" if name == "n" else "repeats" if name == "R" else "cached keys"
        raise UserError(f"scenario '{scenario[:80]}': {name}={text[:20]}{'...' if len(text) > 20 else ''} "
                        f"{what} is outside [{low}, {top}]", where=where)
    return int(text)


def parse_scenario(scenario: str, models: dict[str, ModelSpec], where: str) -> Scenario:
    """Read a scenario name (`SCENARIO`); a `UserError` at `where` for an unknown form or model, a size
    out of range (n or R of 0 is a scenario of nothing: `lmhead_..._n0` divided by zero), or a layer
    scenario without `_ctxN`."""
    m = SCENARIO.fullmatch(scenario)
    if m is None:
        raise UserError(f"unknown scenario '{scenario[:80]}' (layer_MODEL_nN_ctxC, pipelayer_MODEL_RN_ctxC "
                        "or lmhead_MODEL_nN)", where=where)
    kind, model = m["kind"], m["model"]
    if model not in models:
        raise UserError(f"unknown model '{model[:40]}' in scenario '{scenario[:80]}': give it with "
                        "--model-spec FILE", where=where)
    if (kind == "pipelayer") != (m["R"] is not None):
        raise UserError(f"scenario '{scenario[:80]}' does not fit its kind ({kind} takes "
                        f"{'R' if kind == 'pipelayer' else 'n'})", where=where)
    if kind != "lmhead" and m["ctx"] is None:
        raise UserError(f"scenario '{scenario[:80]}' needs _ctxN", where=where)
    n = _size(m["n"], "n", 1, scenario, where) if m["n"] is not None else 1
    R = _size(m["R"], "R", 1, scenario, where) if m["R"] is not None else 1
    ctx = _size(m["ctx"], "ctx", 0, scenario, where) if m["ctx"] is not None else 0
    return Scenario(kind, models[model], n, R, ctx)


def scenario_program(scenario: str, models: dict[str, ModelSpec], rules: KernelRules, dtype: str,
                     where: str) -> tuple[Program, bool]:
    """The program of one profiled scenario (`parse_scenario`), and whether it has a masked (n > 1)
    attention."""
    s = parse_scenario(scenario, models, where)
    if s.kind == "lmhead":
        return lm_head(s.spec, s.n, dtype, rules, final_norm=False), False
    if s.kind == "layer":
        return layer_multitoken(s.spec, s.n, s.ctx, rules, dtype), s.n > 1
    return decoder_layer(s.spec, "L0", [s.ctx] * s.R, [f"kv.L0.r{r}" for r in range(s.R)], 1, dtype, rules,
                         cross_ids=[f"cross.{r}" for r in range(s.R)]), False

def simulated_by_class(profile: HardwareProfile, program: Program,
                       warmup: int = WARMUP) -> dict[str, list[float]]:
    """Per class: [device us, kernel count] of one warm call of `program` (as profiled: after warm-up)."""
    rec = Recorder()
    Engine(profile, "eager", recorder=rec).run([program] * (warmup + 1))
    kclass = {k.name: k.kclass for k in program.kernels}
    out: dict[str, list[float]] = {}
    for span in rec.spans:
        if span.program == warmup:
            cell = out.setdefault(kclass[span.kernel], [0.0, 0.0])
            cell[0] += span.dur_us
            cell[1] += 1
    return out

def check_scenarios_work(rows: list[KernelRow], models: dict[str, ModelSpec], rules: KernelRules, dtype: str,
                         source: str, runs: float = 1.0, budget: float | None = None,
                         purpose: str = "") -> Work:
    """The work of simulating each distinct scenario of `rows` `runs` times, from the names alone; a
    `UserError` naming the scenario's first row, or `source` for all of them, beyond `budget` seconds
    (default `speedsim.limits.MAX_SIM_SECONDS`)."""
    total = Work()
    seen: set[str] = set()
    limit = {} if budget is None else {"budget": budget}
    for row in rows:
        if row.scenario in seen:
            continue
        seen.add(row.scenario)
        where = f"{source}:{row.line}"
        work = parse_scenario(row.scenario, models, where).work(rules, dtype) * runs
        check_work(work, where, f"scenario '{row.scenario[:80]}'{purpose}", **limit)
        total += work
    check_work(total, source, f"{len(seen)} scenarios{purpose}", **limit)
    return total


def classified_rows(profile: HardwareProfile, rows: list[KernelRow], models: dict[str, ModelSpec],
                    source: str) -> tuple[dict[str, tuple[Program, bool]], list[tuple[KernelRow, str | None]]]:
    """Each scenario's simulated program (built with `profile`'s software rules) and each row's class,
    once the work of simulating every scenario is known to be within the budget (`check_scenarios_work`)."""
    rules = KernelRules.from_profile(profile)
    check_scenarios_work(rows, models, rules, profile.default_dtype, source)
    programs: dict[str, tuple[Program, bool]] = {}
    out: list[tuple[KernelRow, str | None]] = []
    for row in rows:
        if row.scenario not in programs:
            programs[row.scenario] = scenario_program(row.scenario, models, rules, profile.default_dtype,
                                                      f"{source}:{row.line}")
        out.append((row, classify(row.kernel, programs[row.scenario][1])))
    return programs, out


def validate_kernels(profile: HardwareProfile, rows: list[KernelRow], models: dict[str, ModelSpec],
                     source: str = "kernels", strict: bool = False) -> KernelReport:
    """Compare every scenario of a kernel profile with its simulated kernels, class by class."""
    report = KernelReport(profile.name)
    measured: dict[str, dict[str, list[float]]] = {}
    programs, classified = classified_rows(profile, rows, models, source)
    for row, cls in classified:
        if cls is None:
            if strict:
                raise UserError(f"kernel '{row.kernel[:60]}' matches no class rule", where=f"{source}:{row.line}")
            report.unclassified.append({"line": row.line, "scenario": row.scenario, "kernel": row.kernel})
            continue
        cell = measured.setdefault(row.scenario, {}).setdefault(cls, [0.0, 0.0])
        cell[0] += row.us
        cell[1] += row.calls
    for scenario, (program, _) in programs.items():
        sim = simulated_by_class(profile, program)
        meas = measured.get(scenario, {})
        at = f"{source}: scenario '{scenario[:80]}'"
        for cls in KERNEL_CLASSES:
            if cls not in meas and cls not in sim:
                continue
            m_us, m_calls = meas.get(cls, [0.0, 0.0])
            s_us, s_calls = sim.get(cls, [0.0, 0.0])
            ape = relative_error(s_us, m_us, at) if m_us > 0 else 1.0
            report.cells.append({"scenario": scenario, "class": cls, "measured_us": round(m_us, 3),
                                 "simulated_us": round(s_us, 3), "measured_calls": m_calls,
                                 "simulated_calls": s_calls, "ape": round(ape, 4)})
        m_tot = sum(v[0] for v in meas.values())
        s_tot = sum(v[0] for v in sim.values())
        report.scenarios.append({"scenario": scenario, "measured_us": round(m_tot, 3),
                                 "simulated_us": round(s_tot, 3),
                                 "ape": round(relative_error(s_tot, m_tot, at), 4) if m_tot > 0 else 1.0})
    return report

@dataclass(frozen=True)
class KernelTargets:
    """What calibration compares per evaluation: (scenario, program, {class: measured us}) per scenario."""

    scenarios: tuple[tuple[str, Program, dict[str, float]], ...]
    source: str = "kernels"

    def log_errors(self, profile: HardwareProfile) -> list[float]:
        """log(simulated / measured) per (scenario, class) cell present on both sides (finite:
        `speedsim.limits.log_error`)."""
        out = []
        for name, program, meas in self.scenarios:
            sim = simulated_by_class(profile, program)
            out += [log_error(sim[c][0], us, f"{self.source}: scenario '{name}'")
                    for c, us in meas.items() if c in sim and sim[c][0] > 0]
        return out

def kernel_targets(profile: HardwareProfile, rows: list[KernelRow], models: dict[str, ModelSpec],
                   source: str = "kernels") -> KernelTargets:
    """The kernel profile as calibration targets (programs built with `profile`'s software rules)."""
    meas: dict[str, dict[str, float]] = {}
    programs, classified = classified_rows(profile, rows, models, source)
    for row, cls in classified:
        if cls is not None and row.us > 0:
            cell = meas.setdefault(row.scenario, {})
            cell[cls] = cell.get(cls, 0.0) + row.us
    return KernelTargets(tuple((s, programs[s][0], meas.get(s, {})) for s in programs), source)
