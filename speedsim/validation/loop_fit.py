"""Fit the one parameter of a closed decode loop that no step measurement can show: `host.loop_us`.

A step replayed back to back (the per-step rows) hides the host's work between steps behind
the device's; a whole decode in a closed loop (`impl=static` decode rows) waits for it at every
step. What the loop costs beyond the modelled round trip and input copy (framework calls that
fill the inputs, replay the step and read its outputs) is one number per host, fitted here in
closed form on the decode rows of some sharings; the other decode rows are held out and
reported as such.

Simulated per-token time is linear in it: `sim_i(x) = s_i + k_i x` with `k_i` = steps per
emitted token of row i, so the least-squares fit of the relative errors is
`x = sum(k_i / m_i (1 - s_i / m_i)) / sum((k_i / m_i)^2)`, clipped at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from speedsim.engine import Mode
from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
from speedsim.limits import mean_error, relative_error
from speedsim.paths import relative
from speedsim.validation.measured import MeasuredRow
from speedsim.validation.validate import check_rows_work, decode_loop
from speedsim.workload import KernelRules
from speedsim.workload.models import ModelSpec

PATH = "host.loop_us"


@dataclass(frozen=True)
class LoopRow:
    """One whole-decode row: measured and simulated per-token us, and whether the fit saw it."""

    row: MeasuredRow
    measured_us: float
    simulated_us: float
    fitted: bool

    @property
    def error(self) -> float:
        """simulated / measured - 1, a finite number (`speedsim.limits.relative_error`)."""
        size = relative_error(self.simulated_us, self.measured_us, f"{self.row.source}:{self.row.line}")
        return math.copysign(size, self.simulated_us - self.measured_us)

    def as_dict(self) -> dict:
        return {"line": self.row.line, "sharing": f"{self.row.L}x{self.row.R}", "pattern": self.row.pattern,
                "mode": self.row.mode, "measured_us": round(self.measured_us, 3),
                "simulated_us": round(self.simulated_us, 3), "error": round(self.error, 4),
                "role": "fitted" if self.fitted else "held out"}


@dataclass(frozen=True)
class LoopFit:
    profile: HardwareProfile
    value: float
    before: float   # the starting profile's loop_us
    rows: list[LoopRow]


LOOP_NOTE = "host.loop_us: fitted by speedsim calibrate --fit-loop"


def with_loop_note(profile: HardwareProfile, fitted_on: list[Path], fit_on: tuple[str, ...],
                   name: str | None = None) -> HardwareProfile:
    """`profile` with the source note of a loop fit (an earlier loop note goes; the note of the
    main fit stays, and a later main fit keeps this one)."""
    files = ", ".join(relative(p) for p in fitted_on)
    note = f"{LOOP_NOTE} on the {'/'.join(fit_on)} rows of {files} (the other sharings' rows held out)"
    sources = [s for s in profile.sources if not s.startswith(LOOP_NOTE)] + [note]
    return profile.model_copy(update={"sources": sources, "name": profile.name if name is None else name})


def fitted_sharings(profile: HardwareProfile) -> tuple[str, ...]:
    """The sharings whose decode rows `host.loop_us` of `profile` was fitted on (its loop note), or ()."""
    for note in profile.sources:
        if note.startswith(LOOP_NOTE + " on the "):
            return tuple(note[len(LOOP_NOTE + " on the "):].split(" ", 1)[0].split("/"))
    return ()


def with_loop_us(profile: HardwareProfile, value: float) -> HardwareProfile:
    return profile.model_copy(update={"host": profile.host.model_copy(update={"loop_us": value})})


def loop_rows(rows: list[MeasuredRow], mode: Mode) -> list[MeasuredRow]:
    """The closed-loop whole decodes (`impl=static`) of `mode` with a measured time."""
    return [r for r in rows if r.section == "decode" and r.extra_field("impl") == "static" and r.mode == mode
            and r.us_median > 0]


def fit_loop_rows(profile: HardwareProfile, rows: list[MeasuredRow], models: dict[str, ModelSpec], fit_on: tuple[str, ...],
             source: str = "measured") -> LoopFit:
    """`profile` with `host.loop_us` fitted on the closed-loop rows whose UxR is in `fit_on`.

    The rows of the profile's step mode (graph, or eager on a host without one) are used; rows of
    other sharings are held out. A UserError (exit 2) when no row is left to fit."""
    mode: Mode = "eager" if profile.host.synchronous else "graph"
    decodes = loop_rows(rows, mode)
    if not decodes:
        raise UserError(f"no whole-decode rows of the static decoder (section decode, impl=static) in mode {mode}",
                        where=source)
    chosen = [r for r in decodes if f"{r.L}x{r.R}" in fit_on]
    if not chosen:
        have = sorted({f"{r.L}x{r.R}" for r in decodes})
        raise UserError(f"no {mode} decode rows of {', '.join(fit_on)} (the rows have {', '.join(have)})",
                        where="--fit-loop")
    zero = with_loop_us(profile, 0.0)
    cache: dict = {}
    rules = KernelRules.from_profile(profile)
    check_rows_work([(r, mode) for r in decodes], models, rules, profile.default_dtype, source, cache)
    base = {id(r): decode_loop(zero, r, models, mode, source, cache) for r in decodes}
    num = den = 0.0
    for r in chosen:
        loop, m = base[id(r)], r.us_median
        k = loop.steps / loop.tokens
        num += k / m * (1.0 - loop.per_token_us / m)
        den += (k / m) ** 2
    value = float(f"{max(0.0, num / den):.4g}")
    fitted = with_loop_us(profile, value)
    out = [LoopRow(r, r.us_median, base[id(r)].per_token_us + value * base[id(r)].steps / base[id(r)].tokens,
                   r in chosen) for r in decodes]
    return LoopFit(fitted, value, profile.host.loop_us, out)


def loop_fit_text(out: str, fit: LoopFit, fit_on: tuple[str, ...]) -> str:
    """`speedsim calibrate --fit-loop`: the value and every row's error, fitted and held out."""
    lines = [f"wrote {out}",
             f"  {PATH} = {fit.value:.4g} us per step (was {fit.before:.4g}), fitted on {', '.join(fit_on)}"]
    for role in ("fitted", "held out"):
        rows = [r for r in fit.rows if (r.fitted if role == "fitted" else not r.fitted)]
        if rows:
            mape = mean_error([abs(r.error) for r in rows])
            lines.append(f"  {role}: MAPE {mape:.1%} over {len(rows)} rows")
            lines += [f"    {r.row.L}x{r.row.R} {r.row.pattern:10s} measured {r.measured_us:8.1f}  simulated "
                      f"{r.simulated_us:8.1f}  {r.error:+.1%}" for r in rows]
    return "\n".join(lines)
