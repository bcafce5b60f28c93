"""The measured-CSV schema, defined once: its columns, modes and the sections only measured so far.

`section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra` (meaning of each column:
`experiments/measured/h200/README.md`). `speedsim measure` writes rows through `measured_row`
and `write_measured`; `speedsim.validation.measured` reads them with the same `COLUMNS`.
Which sections and patterns can be *simulated* is the workload's business
(`speedsim.workload.patterns.SECTIONS`); `MEASURED_ONLY` lists the ones that are measured but
not (yet) simulated, so that a reader accepts them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from speedsim.engine import MODES as ENGINE_MODES
from speedsim.fileio import OutputKind, atomic_write, head_text

COLUMNS = ("section", "model", "mode", "pattern", "n", "ctx", "L", "R", "us_median", "us_min", "us_max", "extra")
MODES = ENGINE_MODES  # a row's mode: one of the engine's, or "" for mode-independent rows (one large kernel)
TIME_COLUMNS = ("us_median", "us_min", "us_max")

# Sections written by `speedsim measure` that the simulator does not model yet (pattern -> meaning).
MEASURED_ONLY: dict[str, dict[str, str]] = {}  # none today: section batch is simulated (workload.patterns)


def _is_measured_csv(path: Path) -> bool:
    header = head_text(path, 4096).lstrip("\ufeff").partition("\n")[0].rstrip("\r")
    return tuple(header.split(",")) == COLUMNS


MEASURED_CSV = OutputKind("a measured CSV (" + ",".join(COLUMNS[:3]) + ",...)", _is_measured_csv)


def measured_row(**fields: object) -> dict[str, object]:
    """A complete row: every column present (defaults: empty text, 0, NaN times), times rounded to ns."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not measured-CSV columns: {', '.join(sorted(unknown))}")
    row: dict[str, object] = {"section": "", "model": "", "mode": "", "pattern": "", "n": 0, "ctx": 0, "L": 0,
                              "R": 0, "us_median": math.nan, "us_min": math.nan, "us_max": math.nan, "extra": ""}
    row.update(fields)
    for key in TIME_COLUMNS:
        row[key] = round(float(row[key]), 3)  # type: ignore[arg-type]
    return row


def write_measured(path: Path, rows: Iterable[dict[str, object]]) -> Path:
    """Write rows (from `measured_row`) as a measured CSV, atomically."""
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
