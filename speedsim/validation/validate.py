"""Simulate every measured row and report the error (MAPE per section and overall)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from speedsim.engine import Mode, time_call
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.simulate import simulate
from speedsim.simulate.loop import LoopResult, static_loop
from speedsim.trace.io import read_traces
from speedsim.trace.schema import ExitTrace
from speedsim.validation.measured import MeasuredRow, rows_for_mode
from speedsim.workload import KernelRules, Program
from speedsim.workload.models import ModelSpec
from speedsim.workload.patterns import program_for_row
from speedsim.workload.static import BUCKET

# a whole decode's parts that `speedsim measure --parts loop` records in `extra`, and the
# `LoopResult` field each is compared with (rows of older runs lack some or all of them)
LOOP_PARTS = {"prefill_us_per_seq": "prefill_us_per_seq", "us_per_token_no_prefill": "per_token_no_prefill_us",
              "replay_us_per_step": "device_us_per_step", "host_us_per_step": "host_us_per_step"}


@dataclass
class RowResult:
    row: MeasuredRow
    sim_mode: Mode
    simulated_us: float
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)  # part -> (measured, simulated)

    @property
    def ape(self) -> float:
        return abs(self.simulated_us - self.row.us_median) / self.row.us_median

    def as_dict(self) -> dict:
        return {**self.row.as_dict(), "mode": self.row.mode or self.sim_mode, "line": self.row.line,
                "measured_us": round(self.row.us_median, 3), "simulated_us": round(self.simulated_us, 3),
                "ape": round(self.ape, 4),
                **({"parts": self.parts_dict()} if self.parts else {})}

    def parts_dict(self) -> dict[str, dict[str, float]]:
        """A whole decode's recorded parts, measured against simulated (`LOOP_PARTS`)."""
        return {k: {"measured": round(m, 3), "simulated": round(v, 3)} for k, (m, v) in self.parts.items()}


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
                       "simulated_us": round(r.simulated_us, 3), "ape": round(r.ape, 4),
                       **({"parts": r.parts_dict()} if r.parts else {})} for r in ranked],
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
        parts: dict[str, tuple[float, float]] = {}
        if row.section == "decode" and row.extra_field("impl") == "static":
            loop = decode_loop(profile, row, models, sim_mode, source, decodes)
            simulated = loop.per_token_us
            parts = {k: (measured, getattr(loop, LOOP_PARTS[k])) for k, measured in loop_parts(row, source).items()}
        elif row.section == "decode":
            simulated = _decode_row(profile, row, models, sim_mode, source, decodes)
        else:
            program, divisor = programs[row.key]
            simulated = time_call(profile, program, sim_mode) / divisor
        report.results.append(RowResult(row, sim_mode, simulated, parts))
    if pairs and not report.results:
        raise UserError(f"no row of mode {mode} has a measured time (us_median): nothing to compare", where=source)
    return report


def loop_parts(row: MeasuredRow, source: str) -> dict[str, float]:
    """The parts of a whole decode its row records (`LOOP_PARTS`); a part that is not a positive
    finite number is the row's error (exit 2), not a comparison."""
    out: dict[str, float] = {}
    for name in LOOP_PARTS:
        text = row.extra_field(name)
        if text is None:
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name}={text} in the extra column: a part of a decode takes a positive, finite time",
                            where=f"{row.source or source}:{row.line}")
        out[name] = value
    return out


def _row_traces(row: MeasuredRow, source: str) -> tuple[Path, str]:
    """The exit-trace file a decode row names, and the row's place (`FILE:LINE`)."""
    source = row.source or source
    where = f"{source}:{row.line}"
    name = row.extra_field("trace")
    if not name:
        raise UserError("a decode row needs trace=FILE in its extra column", where=where)
    path = Path(name) if Path(name).is_absolute() else Path(source).parent / name
    if not path.is_file():
        raise UserError(f"trace file {path} not found", where=where)
    if row.L < 1 or row.R < 1:
        raise UserError(f"decode row needs L >= 1 and R >= 1 (got L={row.L}, R={row.R})", where=where)
    return path, where


def _read_row_traces(row: MeasuredRow, path: Path, where: str) -> list[ExitTrace]:
    """The row's traces; their token count must be the row's (`tokens=` in extra, else n per sequence)."""
    name = row.extra_field("trace")
    try:  # the trace's problems are this row's: name it, not a flag the command does not have
        traces = read_traces(path)
    except UserError as err:
        msg = str(err).split(": ", 1)[1] if err.where and err.where.startswith("--") else str(err)
        raise UserError(f"trace={name}: {msg}", where=where) from None
    tokens = sum(len(t.exits) for t in traces)
    stated = row.extra_field("tokens")
    try:
        expected = int(stated) if stated is not None else row.n * len(traces)
    except ValueError:
        raise UserError(f"tokens={stated} in the extra column is not a whole number", where=where) from None
    if tokens != expected:
        what = f"tokens={stated}" if stated is not None else f"n={row.n} tokens per sequence x {len(traces)}"
        raise UserError(f"trace={name} holds {tokens} tokens, the row {what}: not the decodes it timed", where=where)
    return traces


def decode_loop(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                source: str, cache: dict) -> LoopResult:
    """A whole decode of the static-buffer decoder (`impl=static`), simulated from the row's exit traces."""
    path, where = _row_traces(row, source)
    method = "speed" if row.pattern == "pipelined" else "greedy"
    bucket = row.extra_field("kv_bucket") or str(BUCKET)
    if not bucket.isdigit() or int(bucket) < 1:
        raise UserError(f"kv_bucket={bucket} in the extra column: a positive whole number of positions", where=where)
    key = ("static", str(path), row.model, row.L, row.R, mode, method, int(bucket))
    if key not in cache:
        traces = _read_row_traces(row, path, where)
        try:
            cache[key] = static_loop(profile, models[row.model], row.sharing, traces, mode, method, int(bucket))
        except UserError as err:
            raise UserError(f"trace={row.extra_field('trace')}: {err}", where=where) from None
    return cache[key]


def _decode_row(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                source: str, cache: dict) -> float:
    """Per emitted token time of a whole measured decode, simulated from the exit trace it names."""
    path, where = _row_traces(row, source)
    key = (str(path), row.model, row.L, row.R, mode)
    if key not in cache:
        traces = _read_row_traces(row, path, where)
        try:
            cache[key] = simulate(profile, models[row.model], row.sharing, traces, mode, ("sequential",))
        except UserError as err:
            msg = str(err).split(": ", 1)[1] if err.where and err.where.startswith("--") else str(err)
            raise UserError(f"trace={row.extra_field('trace')}: {msg}", where=where) from None
    result = cache[key]
    method = result.speed if row.pattern == "pipelined" else result.baselines["sequential"]
    return method.e2e_per_token_us
