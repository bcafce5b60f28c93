"""Simulate every measured row and report the error (MAPE per section and overall)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from speedsim.engine import Mode, time_call
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.limits import MAX_SIM_SECONDS, Work, check_work, mean_error, relative_error
from speedsim.sharing import Sharing
from speedsim.simulate import simulate
from speedsim.simulate.loop import LoopResult, static_loop
from speedsim.trace.io import read_traces
from speedsim.trace.schema import ExitTrace
from speedsim.trace.workload import SyntheticWorkload
from speedsim.userpath import is_file, shown, user_path
from speedsim.validation.measured import MeasuredRow, measured_time, rows_for_mode
from speedsim.workload import KernelRules, Program
from speedsim.workload.models import ModelSpec, check_devices, shard, with_precision
from speedsim.workload.patterns import decode_work, program_for_row, row_work
from speedsim.workload.static import BUCKET

# calls of a row's program one `time_call` simulates (its defaults: one warm-up call, two timed)
TIME_CALL_RUNS = 3

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
    def groups(self) -> tuple[str, ...]:
        """The MAPE groups the row counts in: its section, and a published row's tensor-parallel degree."""
        if self.row.section == "published":
            return ("published", f"published tp{self.row.extra_field('tp') or 1}")
        return (self.row.section,)

    @property
    def deployment(self) -> str:
        """A published row's deployment, as the tables show it: tp, weights and KV as stored (blank otherwise)."""
        if self.row.section != "published":
            return ""
        parts = [f"tp{self.row.extra_field('tp') or 1}"]
        parts += [f"{k.split('_')[0]} {v}" for k in ("weight_dtype", "kv_dtype") if (v := self.row.extra_field(k))]
        return ", ".join(parts)

    @property
    def ape(self) -> float:
        """The relative error, a finite number (`speedsim.limits.relative_error`)."""
        return relative_error(self.simulated_us, self.row.us_median, where=_where(self.row, "measured"))

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
            out["all"] = mean_error([r.ape for r in self.results])
        sections: dict[str, list[float]] = {}
        for r in self.results:
            for group in r.groups:
                sections.setdefault(group, []).append(r.ape)
        for name, apes in sections.items():
            out[name] = mean_error(apes)
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
                       "R": r.row.R, **({"deployment": r.deployment} if r.deployment else {}),
                       "measured_us": round(r.row.us_median, 3),
                       "simulated_us": round(r.simulated_us, 3), "ape": round(r.ape, 4),
                       **({"parts": r.parts_dict()} if r.parts else {})} for r in ranked],
            "skipped_rows": self.skipped,
        }


def _where(row: MeasuredRow, source: str) -> str:
    """The row's place: `FILE:LINE`."""
    return f"{row.source or source}:{row.line}"


def check_rows_work(pairs: list[tuple[MeasuredRow, Mode]], models: dict[str, ModelSpec], rules: KernelRules,
                    dtype: str, source: str, cache: dict, runs: float = 1.0,
                    budget: float = MAX_SIM_SECONDS, purpose: str = "") -> Work:
    """The work of simulating every row of `pairs` `runs` times (a decode once per trace file, sharing
    and mode, as `decode_loop` and `_decode_row` cache it), estimated from the rows' sizes
    (`speedsim.workload.patterns.row_work`) and a decode row's traces (read here, kept in `cache` for
    the simulation) before any is simulated; a `UserError` naming the row if one row's, or naming
    `source` if all of theirs, exceeds `budget` seconds (`speedsim.limits.check_work`; `purpose`
    follows "this row" in the message)."""
    total = Work()
    seen: set[tuple] = set()
    for row, mode in pairs:
        if row.section == "published":  # one decode, at most MAX_PUBLISHED_TOKENS x MAX_PUBLISHED_LAYERS layers
            if row.model not in models:
                continue
            work = decode_work(models[row.model], rules, dtype, row.L, 1, row.n, ("speed",)) * runs
        elif row.section == "decode":
            path, where = _row_traces(row, source)
            key = (str(path), row.model, row.L, row.R, mode, _decode_methods(row))
            if key in seen or row.model not in models:
                continue
            seen.add(key)
            tokens = sum(len(t.exits) for t in _cached_traces(row, path, where, cache))
            work = _decode_work(row, models[row.model], rules, dtype, tokens) * runs
        else:
            work = row_work(row.__dict__, models, rules, dtype) * (TIME_CALL_RUNS * runs)
        check_work(work, _where(row, source), f"this row{purpose}", budget=budget)
        total += work
    check_work(total, source, f"{len(pairs)} rows{purpose}", budget=budget)
    return total


def build_programs(pairs: list[tuple[MeasuredRow, Mode]], models: dict[str, ModelSpec], rules: KernelRules,
                   dtype: str, source: str) -> dict[tuple, tuple[Program, int]]:
    """One (program, divisor) per distinct scenario (shared by its graph and eager rows), after checking
    that simulating them is within the budget (`check_rows_work`: the decode rows are not built here)."""
    whole = ("decode", "published")  # whole decodes: simulated, not one program
    check_rows_work([(r, m) for r, m in pairs if r.section not in whole], models, rules, dtype, source, {})
    programs: dict[tuple, tuple[Program, int]] = {}
    for row, _ in pairs:
        if row.section not in whole and row.key not in programs:
            programs[row.key] = program_for_row(row.__dict__, models, rules, dtype, where=_where(row, source))
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
        if row.section in ("layer", "group", "lmhead", "decode", "published") and row.model not in models:
            raise UserError(f"unknown model '{row.model}': give its dimensions with --model-spec FILE",
                            where=f"{row.source or source}:{row.line}")
    decodes: dict = {}
    check_rows_work(pairs, models, rules, profile.default_dtype, source, decodes)
    programs = build_programs(pairs, models, rules, profile.default_dtype, source)
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
        elif row.section == "published":
            simulated = published_row(profile, row, models, sim_mode, source)
        else:
            program, divisor = programs[row.key]
            simulated = time_call(profile, program, sim_mode) / divisor
        result = RowResult(row, sim_mode, simulated, parts)
        relative_error(simulated, row.us_median, _where(row, source))  # finite, or the row's UserError
        for name, (measured, sim) in parts.items():
            relative_error(sim, measured, f"{_where(row, source)}: extra {name}")
        report.results.append(result)
    if pairs and not report.results:
        raise UserError(f"no row of mode {mode} has a measured time (us_median): nothing to compare", where=source)
    return report


def loop_parts(row: MeasuredRow, source: str) -> dict[str, float]:
    """The parts of a whole decode its row records (`LOOP_PARTS`); a part that is not a measured time
    (`speedsim.validation.measured.measured_time`) is the row's error (exit 2), not a comparison."""
    return {name: measured_time(text, f"extra: {name}", _where(row, source), sep="=")
            for name in LOOP_PARTS if (text := row.extra_field(name)) is not None}


def _row_traces(row: MeasuredRow, source: str) -> tuple[Path, str]:
    """The exit-trace file a decode row names (`trace=`, relative to the row's file), and the row's
    place (`FILE:LINE`); a malformed name, an operating-system error (a link loop) or no regular file
    there is a `UserError` at the row (`speedsim.userpath`)."""
    where = _where(row, source)
    name = row.extra_field("trace")
    if not name:
        raise UserError("a decode row needs trace=FILE in its extra column", where=where)
    given = user_path(name, f"{where}: extra trace")
    path = user_path(given if given.is_absolute() else Path(row.source or source).parent / given,
                     f"{where}: extra trace")
    if not is_file(path, f"{where}: extra trace"):
        raise UserError(f"trace={shown(name)}: trace file {shown(path)} not found", where=where)
    if row.L < 1 or row.R < 1:
        raise UserError(f"decode row needs L >= 1 and R >= 1 (got L={row.L}, R={row.R})", where=where)
    return path, where


def _cached_traces(row: MeasuredRow, path: Path, where: str, cache: dict) -> list[ExitTrace]:
    """The row's traces (`_read_row_traces`), each file read once per `cache`."""
    key = ("traces", str(path), row.extra_field("tokens"), row.n)
    if key not in cache:
        cache[key] = _read_row_traces(row, path, where)
    return cache[key]


def _read_row_traces(row: MeasuredRow, path: Path, where: str) -> list[ExitTrace]:
    """The row's traces; their token count must be the row's (`tokens=` in extra, else n per sequence)."""
    name = shown(row.extra_field("trace") or "")
    try:  # the trace's problems are this row's: name it, not a flag the command does not have
        traces = read_traces(path, where=where)
    except UserError as err:
        msg = str(err).removeprefix(f"{where}: ") if err.where == where else str(err)
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


def _decode_work(row: MeasuredRow, spec: ModelSpec, rules: KernelRules, dtype: str, tokens: int) -> Work:
    """The work of simulating a decode row's `tokens`: the static decoder's one method (`decode_loop`),
    or SPEED and the sequential baseline (`_decode_row`: one `simulate` serves both patterns)."""
    return decode_work(spec, rules, dtype, row.L, row.R, tokens, _decode_methods(row))


def _decode_methods(row: MeasuredRow) -> tuple[str, ...]:
    """What simulating a decode row runs: the static decoder's one method, or both (`simulate`)."""
    if row.extra_field("impl") == "static":
        return ("speed",) if row.pattern == "pipelined" else ("sequential",)
    return ("speed", "sequential")


def _checked_traces(profile: HardwareProfile, row: MeasuredRow, path: Path, where: str,
                    models: dict[str, ModelSpec], cache: dict) -> list[ExitTrace]:
    """The row's traces, once the work of simulating their decodes is known to be within the budget."""
    if row.model not in models:
        raise UserError(f"unknown model '{row.model}': give its dimensions with --model-spec FILE", where=where)
    traces = _cached_traces(row, path, where, cache)
    tokens = sum(len(t.exits) for t in traces)
    rules = KernelRules.from_profile(profile)
    check_work(_decode_work(row, models[row.model], rules, profile.default_dtype, tokens), where)
    return traces


def decode_loop(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                source: str, cache: dict) -> LoopResult:
    """A whole decode of the static-buffer decoder (`impl=static`), simulated from the row's exit traces."""
    path, where = _row_traces(row, source)
    method = "speed" if row.pattern == "pipelined" else "greedy"
    bucket = row.extra_field("kv_bucket") or str(BUCKET)
    if not (bucket.isascii() and bucket.isdigit()) or int(bucket) < 1:
        raise UserError(f"kv_bucket={bucket} in the extra column: a positive whole number of positions", where=where)
    key = ("static", str(path), row.model, row.L, row.R, mode, method, int(bucket))
    if key not in cache:
        traces = _checked_traces(profile, row, path, where, models, cache)
        try:
            cache[key] = static_loop(profile, models[row.model], row.sharing, traces, mode, method, int(bucket))
        except UserError as err:
            raise UserError(f"trace={row.extra_field('trace')}: {err}", where=where) from None
    return cache[key]


def published_row(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                  source: str) -> float:
    """A published batch-1 decode (`published`): the model as deployed (`tp=`, `weight_dtype=`, `kv_dtype=`),
    L unshared layers, n tokens after a ctx-token prompt, per output token with or without the prefill as the
    figure was taken (`prefill=`). Nothing of the row is fitted: the profile's own numbers."""
    where = _where(row, source)
    spec = models[row.model]
    if spec.n_layers is not None and row.L != spec.n_layers:
        raise UserError(f"L={row.L}, but {spec.name} has {spec.n_layers} decoder layers", where=where)
    tp = int(row.extra_field("tp") or 1)
    try:
        check_devices(profile, tp)
        group = row.extra_field("group")
        spec = shard(with_precision(spec, row.extra_field("weight_dtype"), row.extra_field("kv_dtype"),
                                    int(group) if group else None), tp)
        traces = SyntheticWorkload(mispredict=0.0, out_len=row.n, seqs=1, src_len=max(1, row.ctx)).traces(1)
        result = simulate(profile, spec, Sharing(row.L, 1), traces, mode, ())
    except UserError as err:
        msg = str(err).split(": ", 1)[1] if err.where and err.where.startswith("--") else str(err)
        raise UserError(msg, where=where) from None
    return result.speed.e2e_per_token_us if row.extra_field("prefill") == "included" else result.speed.per_token_us


def _decode_row(profile: HardwareProfile, row: MeasuredRow, models: dict[str, ModelSpec], mode: Mode,
                source: str, cache: dict) -> float:
    """Per emitted token time of a whole measured decode, simulated from the exit trace it names."""
    path, where = _row_traces(row, source)
    key = (str(path), row.model, row.L, row.R, mode)
    if key not in cache:
        traces = _checked_traces(profile, row, path, where, models, cache)
        try:
            cache[key] = simulate(profile, models[row.model], row.sharing, traces, mode, ("sequential",))
        except UserError as err:
            msg = str(err).split(": ", 1)[1] if err.where and err.where.startswith("--") else str(err)
            raise UserError(f"trace={row.extra_field('trace')}: {msg}", where=where) from None
    result = cache[key]
    method = result.speed if row.pattern == "pipelined" else result.baselines["sequential"]
    return method.e2e_per_token_us
