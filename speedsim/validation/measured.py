"""Reading measured CSVs (columns: `speedsim.validation.schema`) into rows and scenarios."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from speedsim.errors import UserError
from speedsim.validation.schema import COLUMNS, MEASURED_ONLY, MODES
from speedsim.workload.patterns import SECTIONS

KNOWN_SECTIONS = (*SECTIONS, *(s for s in MEASURED_ONLY if s not in SECTIONS))  # simulated, then measured only


@dataclass(frozen=True)
class MeasuredRow:
    """One measured scenario; `line` is its line number in the file (header = line 1)."""

    line: int
    section: str
    model: str
    mode: str          # "graph", "eager", or "" (mode-independent: one large kernel)
    pattern: str
    n: int
    ctx: int
    L: int
    R: int
    us_median: float
    extra: str = ""

    def extra_field(self, name: str) -> str | None:
        """Value of `name=value` in the `extra` column (entries separated by ';')."""
        for item in self.extra.split(";"):
            key, _, value = item.partition("=")
            if key.strip() == name:
                return value.strip()
        return None

    @property
    def key(self) -> tuple:
        """Identity of the simulated scenario (rows that time speedsim's own decoder differ)."""
        return (self.section, self.model, self.pattern, self.n, self.ctx, self.L, self.R,
                "impl=speedsim" in self.extra)

    def as_dict(self) -> dict:
        return {"section": self.section, "model": self.model, "pattern": self.pattern, "n": self.n,
                "ctx": self.ctx, "L": self.L, "R": self.R}


def read_measured(path: Path) -> list[MeasuredRow]:
    """Read and check a measured CSV; a missing column or unknown section is a `UserError`."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UserError("no such file", where=str(path)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"not a readable CSV ({str(err).splitlines()[0]})", where=str(path)) from None
    missing = [c for c in COLUMNS if c not in df.columns and c != "extra"]
    if missing:
        raise UserError(f"missing column(s) {', '.join(missing)}", where=str(path))
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2
        where = f"{path}:{line}"
        section = rec["section"].strip()
        if section not in KNOWN_SECTIONS:
            raise UserError(f"unknown section '{section}' (known: {', '.join(KNOWN_SECTIONS)})", where=where)
        mode = rec["mode"].strip()
        if mode not in ("", *MODES):
            raise UserError(f"unknown mode '{mode}' (graph, eager or empty)", where=where)
        try:
            ints = {k: int(float(rec[k] or 0)) for k in ("n", "ctx", "L", "R")}
            us = float(rec["us_median"]) if rec["us_median"].strip() else math.nan
        except (ValueError, OverflowError) as err:
            raise UserError(f"not a finite number: {err}", where=where) from None
        if any(v < 0 for v in ints.values()):
            raise UserError("n, ctx, L and R must be >= 0", where=where)
        rows.append(MeasuredRow(line=line, section=section, model=rec["model"].strip(), mode=mode,
                                pattern=rec["pattern"].strip(), us_median=us, extra=rec.get("extra", "") or "",
                                **ints))
    return rows


def rows_for_mode(rows: list[MeasuredRow], mode: str) -> list[tuple[MeasuredRow, str]]:
    """(row, simulated mode) pairs for `mode` in graph | eager | all.

    Mode-independent rows (empty mode: one large kernel where host overhead does not show) are
    simulated in graph mode and belong to every selection.
    """
    if mode not in ("graph", "eager", "all"):
        raise UserError(f"unknown mode '{mode}' (graph, eager or all)", where="--mode")
    out = []
    for row in rows:
        if row.mode == "":
            out.append((row, "graph"))
        elif mode in ("all", row.mode):
            out.append((row, row.mode))
    return out
