"""Where the project's shipped data lives (profiles, measured CSVs, traces, sweep specs).

The data root is searched in this order, and the first that holds `hw_profiles/` wins:

1. `$SPEEDSIM_DATA`, if set;
2. the source checkout this package was imported from (an editable install, or running from
   the repository);
3. `<sys.prefix>/share/speedsim`, where a regular `pip install .` puts the shipped data
   (`[tool.setuptools.data-files]` in pyproject.toml).

`$SPEEDSIM_PROFILES` overrides the profile directory alone (`speedsim.hardware.files` checks it
where it lists or reads profiles). Reports go to `reports/` of a source checkout, else to `./reports`.

A variable set to a path the file system refuses (a component longer than it allows, a link loop, a
directory it may not search) is a `UserError` naming the variable, not a silent fallback; one that
names nothing, or a directory without `hw_profiles/`, is passed over as above.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from speedsim.userpath import is_dir, user_path

CHECKOUT = Path(__file__).resolve().parents[1]
DATA_VARIABLE = "$SPEEDSIM_DATA"
PROFILES_VARIABLE = "$SPEEDSIM_PROFILES"


def _quiet_is_dir(path: Path) -> bool:
    """Whether `path` is a directory; an error asking is a no (the built-in candidates, not the user's)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def data_roots() -> list[Path]:
    """Candidate data roots, in search order; a malformed `$SPEEDSIM_DATA` is a `UserError` naming it."""
    env = os.environ.get("SPEEDSIM_DATA")
    given = [user_path(env, DATA_VARIABLE)] if env else []
    return [*given, CHECKOUT, Path(sys.prefix) / "share" / "speedsim"]


def _data_root() -> Path:
    roots = data_roots()
    env = os.environ.get("SPEEDSIM_DATA")
    for i, root in enumerate(roots):
        profiles = root / "hw_profiles"
        # the variable's root is asked strictly (an error on it names the variable), the built-in ones quietly
        if is_dir(profiles, DATA_VARIABLE) if env and i == 0 else _quiet_is_dir(profiles):
            return root
    return roots[-1]


ROOT = _data_root()
IN_CHECKOUT = ROOT == CHECKOUT and (CHECKOUT / "pyproject.toml").is_file()
PROFILE_DIR = Path(os.environ.get("SPEEDSIM_PROFILES") or ROOT / "hw_profiles")  # set but empty: the default
EXPERIMENTS_DIR = ROOT / "experiments"
MEASURED_DIR = EXPERIMENTS_DIR / "measured"
H200_MEASURED = MEASURED_DIR / "h200" / "measured.csv"
TRACE_DIR = EXPERIMENTS_DIR / "traces"
MODEL_RESULTS_DIR = EXPERIMENTS_DIR / "models" / "results"


def _cwd_reports() -> Path:
    """`./reports`, absolute; relative if the working directory is gone (removed under us)."""
    try:
        return Path.cwd() / "reports"
    except OSError:
        return Path("reports")


REPORT_DIR = CHECKOUT / "reports" if IN_CHECKOUT else _cwd_reports()


def relative(path: Path) -> str:
    """`path` relative to the project root when it lies inside it (for portable `sources:` entries); as
    given when it does not, or cannot be resolved (a link loop)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a link loop
        return str(path)
