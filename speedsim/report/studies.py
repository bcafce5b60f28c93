"""The report's sweep studies (serving, design space, rivals): each a spec whose full or `reduced:` form
runs as a sweep in its own directory of the report's cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from speedsim.run import RunParams
from speedsim.sweep import SweepSpec, load_spec, read_results, run_sweep
from speedsim.sweep.spec import expand


def study_dir(name: str, full: bool) -> str:
    """The cache directory of study `name`: each form its own (`NAME`, `NAME-reduced`)."""
    return name if full else f"{name}-reduced"


def run_study_sweep(spec: Path | None, name: str, full: bool, cache: Path, workers: int, scheduler: str | None,
              progress: bool, cache_flag: str = "--cache") -> tuple[SweepSpec, list[RunParams], pd.DataFrame] | None:
    """Run the study's sweep (its reduced form unless `full`) in `cache`/`study_dir(name, full)`; its loaded
    spec, planned runs and results. None without its spec."""
    if spec is None or not Path(spec).exists():
        return None
    loaded = load_spec(spec, reduced=not full)
    out = cache / study_dir(name, full)
    run_sweep(loaded, out, workers=workers, scheduler=scheduler, progress=progress, out_flag=cache_flag,
              spec_where=str(spec))
    return loaded, expand(loaded, str(spec)), read_results(out)
