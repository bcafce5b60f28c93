"""Simulate every measured row and report the error (MAPE per section and overall)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from speedsim.engine import Mode, time_call
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.simulate import simulate
from speedsim.trace.io import read_traces
from speedsim.validation.measured import MeasuredRow, rows_for_mode
from speedsim.workload import KernelRules, Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.patterns import program_for_row


@dataclass
class RowResult:
    row: MeasuredRow
    sim_mode: Mode
    simulated_us: float

    @property
    def ape(self) -> float:
        return abs(self.simulated_us - self.row.us_median) / self.row.us_median

    def as_dict(self) -> dict:
        return {**self.row.as_dict(), "mode": self.row.mode or self.sim_mode, "line": self.row.line,
                "measured_us": round(self.row.us_median, 3), "simulated_us": round(self.simulated_us, 3),
                "ape": round(self.ape, 4)}


@dataclass
class ValidationReport:
    profile: str
    mode: str
    results: list[RowResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def mape(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.results:
            out["all"] = sum(r.ape for r in self.results) / len(self.results)
        sections: dict[str, list[float]] = {}
        for r in self.results:
            sections.setdefault(r.row.section, []).append(r.ape)
        for name, apes in sections.items():
            out[name] = sum(apes) / len(apes)
        return out

    def as_json(self, worst: int = 10) -> dict:
        ranked = sorted(self.results, key=lambda r: r.ape, reverse=True)[:worst]
        return {
            "profile": self.profile,
            "mode": self.mode,
            "rows": len(self.results),
            "skipped": len(self.skipped),
            "mape": {k: round(v, 4) for k, v in self.mape().items()},
            "worst": [{"section": r.row.section, "pattern": r.row.pattern, "model": r.row.model,
                       "mode": r.row.mode or r.sim_mode, "n": r.row.n, "ctx": r.row.ctx, "L": r.row.L,
                       "R": r.row.R, "measured_us": round(r.row.us_median, 3),
                       "simulated_us": round(r.simulated_us, 3), "ape": round(r.ape, 4)} for r in ranked],
            "skipped_rows": self.skipped,
        }


def build_programs(pairs: list[tuple[MeasuredRow, Mode]], models: dict[str, ModelSpec], rules: KernelRules,
                   dtype: str, source: str) -> dict[tuple, tuple[Program, int]]:
    """One (program, divisor) per distinct scenario (shared by its graph and eager rows)."""
    programs: dict[tuple, tuple[Program, int]] = {}
    for row, _ in pairs:
        if row.section != "decode" and row.key not in programs:
            programs[row.key] = program_for_row(row.__dict__, models, rules, dtype,
                                                where=f"{row.source or source}:{row.line}")
    return programs


def validate(profile: HardwareProfile, rows: list[MeasuredRow], models: dict[str, ModelSpec], mode: str,
             source: str = "measured") -> ValidationReport:
    """Simulate every row of `mode` on `profile`; rows without a usable measurement are skipped and listed."""
    pairs = rows_for_mode(rows, mode)
    if rows and not pairs:  # an empty table with exit 0 reads as "nothing to report", not "wrong mode"
        modes = sorted({r.mode for r in rows})
        raise UserError(f"{source} has no rows of mode {mode} (its rows are {', '.join(modes)})", where="--mode")
    rules = KernelRules.from_profile(profile)
    report = ValidationReport(profile=profile.name, mode=mode)
    # an unknown model is an error, not a skip: check every row before simulating any
    for row, _ in pairs:
        if row.section in ("layer", "group", "lmhead", "decode") and row.model not in models:
            raise UserError(f"unknown model '{row.model}': give its dimensions with --model-spec FILE",
                            where=f"{row.source or source}:{row.line}")
    programs = build_programs(pairs, models, rules, profile.default_dtype, source)
    decodes: dict = {}
    for row, sim_mode in pairs:
        if not (row.us_median > 0 and math.isfinite(row.us_median)):
            report.skipped.append({"line": row.line, **row.as_dict(), "mode": row.mode,
                                   "reason": "no measured time (us_median empty, zero or NaN)"})
            continue
        if row.section == "decode":
            simulated = _decode_row(profile, row, models, sim_mode, source, decodes)
        else:
            program, divisor = programs[row.key]
            simulated = time_call(profile, program, sim_mode) / divisor
        report.results.append(RowResult(row, sim_mode, simulated))
    if pairs and not report.results:
        raise UserError(f"no row of mode {mode} has a measured time (us_median): nothing to compare", where=source)
    return report


def _decode_row(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                source: str, cache: dict) -> float:
    """Per emitted token time of a whole measured decode, simulated from the exit trace it names."""
    source = row.source or source
    where = f"{source}:{row.line}"
    name = row.extra_field("trace")
    if not name:
        raise UserError("a decode row needs trace=FILE in its extra column", where=where)
    path = Path(name) if Path(name).is_absolute() else Path(source).parent / name
    if not path.exists():
        raise UserError(f"trace file {path} not found", where=where)
    key = (str(path), row.model, row.L, row.R, mode)
    if key not in cache:
        if row.L < 1 or row.R < 1:
            raise UserError(f"decode row needs L >= 1 and R >= 1 (got L={row.L}, R={row.R})", where=where)
        try:  # the trace's problems are this row's: name it, not a flag the command does not have
            traces = read_traces(path)
            cache[key] = simulate(profile, models[row.model], row.sharing, traces, mode, ("sequential",))
        except UserError as err:
            msg = str(err).split(": ", 1)[1] if err.where and err.where.startswith("--") else str(err)
            raise UserError(f"trace={name}: {msg}", where=where) from None
    result = cache[key]
    method = result.speed if row.pattern == "pipelined" else result.baselines["sequential"]
    return method.e2e_per_token_us
