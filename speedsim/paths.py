"""Where the project's shipped data lives (profiles, measured CSVs, traces)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = Path(os.environ.get("SPEEDSIM_PROFILES", ROOT / "hw_profiles"))
MEASURED_DIR = ROOT / "experiments" / "measured"
H200_MEASURED = MEASURED_DIR / "h200" / "measured.csv"
TRACE_DIR = ROOT / "experiments" / "traces"
REPORT_DIR = ROOT / "reports"


def relative(path: Path) -> str:
    """`path` relative to the project root when it lies inside it (for portable `sources:` entries)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
