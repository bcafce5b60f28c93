"""Where the project's shipped data lives (profiles, measured CSVs, traces, sweep specs).

The data root is searched in this order, and the first that holds `hw_profiles/` wins:

1. `$SPEEDSIM_DATA`, if set;
2. the source checkout this package was imported from (an editable install, or running from
   the repository);
3. `<sys.prefix>/share/speedsim`, where a regular `pip install .` puts the shipped data
   (`[tool.setuptools.data-files]` in pyproject.toml).

`$SPEEDSIM_PROFILES` overrides the profile directory alone. Reports go to `reports/` of a source
checkout, else to `./reports`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def data_roots() -> list[Path]:
    """Candidate data roots, in search order."""
    env = os.environ.get("SPEEDSIM_DATA")
    return [*([Path(env)] if env else []), CHECKOUT, Path(sys.prefix) / "share" / "speedsim"]


def _data_root() -> Path:
    roots = data_roots()
    return next((r for r in roots if (r / "hw_profiles").is_dir()), roots[-1])


ROOT = _data_root()
IN_CHECKOUT = ROOT == CHECKOUT and (CHECKOUT / "pyproject.toml").is_file()
PROFILE_DIR = Path(os.environ.get("SPEEDSIM_PROFILES") or ROOT / "hw_profiles")  # set but empty: the default
EXPERIMENTS_DIR = ROOT / "experiments"
MEASURED_DIR = EXPERIMENTS_DIR / "measured"
H200_MEASURED = MEASURED_DIR / "h200" / "measured.csv"
TRACE_DIR = EXPERIMENTS_DIR / "traces"
MODEL_RESULTS_DIR = EXPERIMENTS_DIR / "models" / "results"
REPORT_DIR = CHECKOUT / "reports" if IN_CHECKOUT else Path.cwd() / "reports"


def relative(path: Path) -> str:
    """`path` relative to the project root when it lies inside it (for portable `sources:` entries)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
