"""`speedsim report`: run the study, validate the simulator, draw the figures, write reports/README.md.

The study is two sweeps (`experiments/default.yaml`, or the full `latency_vs_depth.yaml` plus
`acceptance.yaml`, and `experiments/speed_paper.yaml` on the shipped real exit traces). Their
results go to a cache directory (a fresh temporary one unless given, so the command recomputes
everything; give `--cache DIR` to resume). Everything written under `out` depends only on the
inputs: no timestamps, no wall times, tables sorted, PNGs without metadata.

A problem with a directory is named by the flag that gave it: `--out`, or `--cache` for the sweeps'
directories under it (`$TMPDIR` for the temporary one), found before the study runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from speedsim.engine import open_profile
from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output_dir
from speedsim.paths import EXPERIMENTS_DIR, H200_MEASURED, MEASURED_DIR, ROOT
from speedsim.report import check_figures, figures
from speedsim.report.content import ReportData, profile_order
from speedsim.report.design_space import STUDY as DESIGN_STUDY
from speedsim.report.design_space import heatmaps, run_design_space, tornado
from speedsim.report.readme import REPORT_TITLE, write_readme
from speedsim.report.rivals import STUDY as RIVALS_STUDY
from speedsim.report.rivals import rivals_figure, run_rivals
from speedsim.report.scale import STUDY as SCALE_STUDY
from speedsim.report.scale import run_scale, scale_figure
from speedsim.report.serving import serving_figure, serving_tables
from speedsim.report.studies import run_study_sweep, study_dir
from speedsim.report.validation_md import write_validation
from speedsim.run import RunParams
from speedsim.sharing import Sharing
from speedsim.simulate import step_points, synthetic_traces
from speedsim.sweep import SweepSpec, load_spec, read_results, run_sweep
from speedsim.sweep.runner import check_scheduler, check_workers
from speedsim.sweep.spec import expand
from speedsim.trace.io import resolve_trace
from speedsim.userpath import os_errors
from speedsim.validation import read_measured, validate
from speedsim.validation.loop_fit import fitted_sharings
from speedsim.workload import BUILTIN_MODELS, resolve_models

EXPERIMENTS = EXPERIMENTS_DIR
DEFAULT_STUDY = (EXPERIMENTS / "default.yaml",)
FULL_STUDY = (EXPERIMENTS / "latency_vs_depth.yaml", EXPERIMENTS / "acceptance.yaml")
SERVING_SPEC = EXPERIMENTS / "serving.yaml"
DESIGN_SPEC = EXPERIMENTS / "design_space.yaml"
RIVALS_SPEC = EXPERIMENTS / "rivals.yaml"
SCALE_SPEC = EXPERIMENTS / "scale.yaml"
PUBLISHED_DIR = MEASURED_DIR / "published"  # published batch-1 decodes: <profile>.csv
PUBLISHED_KERNELS_DIR = PUBLISHED_DIR / "kernels"  # ... and single kernels: <profile>.csv
PAPER_SPEC = EXPERIMENTS / "speed_paper.yaml"
H200_RERUN = H200_MEASURED.with_name("measured_rerun.csv")
ROOFLINE_CONFIG = ("t5base", "4x3", "mispredict=0.1,len=24,seqs=1,src=128")


# ------------------------------------------------------------------------------ inputs

def run_study(specs: tuple[Path, ...], cache: Path, workers: int, scheduler: str | None,
              progress: bool, cache_flag: str = "--cache") -> pd.DataFrame:
    frames = []
    for spec in specs:
        out = cache / Path(spec).stem
        run_sweep(spec, out, workers=workers, scheduler=scheduler, progress=progress, out_flag=cache_flag)
        frames.append(read_results(out).assign(spec=Path(spec).stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _spec_run(run: RunParams) -> dict:
    """A run as a sweep spec's `runs:` entry takes it: its fields, its what-ifs as `set.PATH` keys."""
    out = run.model_dump(exclude={"overrides"})
    out.update({f"set.{path}": value for path, value in run.overrides})
    return out


def run_paper(spec: Path, cache: Path, workers: int, scheduler: str | None,
              progress: bool, cache_flag: str = "--cache") -> tuple[pd.DataFrame | None, str]:
    """The paper comparison on the shipped real traces.

    Runs whose trace file is not shipped (yet) are left out and named in the note; (None, why)
    when none can run or the spec is otherwise bad. A problem with the flags (the cache directory,
    the scheduler, the workers) is the command's error, not a note.
    """
    try:
        loaded = load_spec(spec)
        runs = expand(loaded, str(spec))
    except UserError as err:
        return None, str(err).replace(str(ROOT) + "/", "")
    have = [r for r in runs if not r.trace or resolve_trace(r.trace, loaded.base_dir).exists()]
    missing = sorted({r.trace for r in runs if r not in have and r.trace})
    note = f"no exit traces shipped yet for {', '.join(missing)}" if missing else ""
    if not have:
        return None, note
    subset = SweepSpec(name=loaded.name, description=loaded.description, model_specs=loaded.model_specs,
                       runs=[_spec_run(r) for r in have], base_dir=loaded.base_dir)
    try:
        run_sweep(subset, cache / "speed_paper", workers=workers, scheduler=scheduler, progress=progress,
                  out_flag=cache_flag, spec_where=str(spec))
    except UserError as err:
        if err.where in (cache_flag, "--scheduler", "--workers"):
            raise
        return None, str(err).replace(str(ROOT) + "/", "")
    return read_results(cache / "speed_paper").assign(spec=Path(spec).stem), note


def run_validation(profile_name: str = "h200") -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, float]]]:
    """Every measured H200 row simulated in graph and eager mode: per-row table and MAPE per section."""
    profile = open_profile(profile_name)
    rows = read_measured(H200_MEASURED)
    tables, mape = {}, {}
    for mode in ("graph", "eager"):
        report = validate(profile, rows, BUILTIN_MODELS, mode)
        tables[mode] = pd.DataFrame([{**r.as_dict(), "profile": profile.name} for r in report.results])
        mape[mode] = report.mape()
    return tables, mape


def run_published_validation(folder: Path = PUBLISHED_DIR) -> tuple[pd.DataFrame | None, dict[str, float]]:
    """Every published batch-1 decode (`<profile>.csv` in `folder`) simulated on its profile as deployed: one row
    per measurement, and the MAPE per GPU ("profile NAME"), per tensor-parallel degree ("tpN") and in all."""
    frames: list[dict] = []
    apes: dict[str, list[float]] = {}
    for csv in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        profile = open_profile(csv.stem)
        report = validate(profile, read_measured(csv), BUILTIN_MODELS, "graph")
        for r in report.results:
            row = r.row
            frames.append({"profile": profile.name, "line": row.line, "model": row.model, "deployment": r.deployment,
                           "tp": int(row.extra_field("tp") or 1), "framework": row.extra_field("framework") or "",
                           "graphs": row.extra_field("graphs") or "", "prefill": row.extra_field("prefill") or "",
                           "gpu": row.extra_field("gpu") or "", "n": row.n, "ctx": row.ctx,
                           "measured_us": row.us_median, "simulated_us": r.simulated_us, "ape": r.ape,
                           "source": row.extra_field("source") or ""})
            for group in ("all", f"profile {profile.name}", f"tp{int(row.extra_field('tp') or 1)}"):
                apes.setdefault(group, []).append(r.ape)
    if not frames:
        return None, {}
    order = ["all", *sorted(k for k in apes if k.startswith("profile")),
             *sorted((k for k in apes if k.startswith("tp")), key=lambda k: int(k[2:]))]
    return pd.DataFrame(frames), {k: float(sum(apes[k]) / len(apes[k])) for k in order}


def run_published_kernels(folder: Path = PUBLISHED_KERNELS_DIR) -> pd.DataFrame | None:
    """Every published kernel time (`<profile>.csv` in `folder`: batch-1 GEMVs) simulated on its profile, as
    `speedsim validate --measured FILE --profile NAME` does: one row per measurement."""
    frames: list[dict] = []
    for csv in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        profile = open_profile(csv.stem)
        for r in validate(profile, read_measured(csv), BUILTIN_MODELS, "graph").results:
            row = r.row
            frames.append({"profile": profile.name, "line": row.line, "section": row.section, "pattern": row.pattern,
                           "dtype": row.extra_field("dtype") or "", "library": row.extra_field("library") or "",
                           "timing": row.extra_field("timing") or "", "measured_us": row.us_median,
                           "simulated_us": r.simulated_us, "ape": r.ape, "source": row.extra_field("source") or ""})
    return pd.DataFrame(frames) if frames else None


def noise_floor() -> dict[str, float]:
    """Median relative difference between the H200 run and its rerun, per mode (the noise floor)."""
    first = {(r.key, r.mode): r.us_median for r in read_measured(H200_MEASURED)}
    rerun = {(r.key, r.mode): r.us_median for r in read_measured(H200_RERUN)}
    out = {}
    for mode in ("graph", "eager"):
        diffs = [abs(rerun[k] - v) / v for k, v in first.items() if k in rerun and k[1] == mode]
        out[mode] = float(pd.Series(diffs).median()) if diffs else float("nan")
    return out


def run_cpu_validation() -> tuple[pd.DataFrame | None, dict[str, float]]:
    """speedsim's own decoder measured on the project's CPU machine, simulated on `cpu-host` (eager)."""
    folder = MEASURED_DIR / "cpu-host"
    csv = folder / "measured.csv"
    if not csv.exists():
        return None, {}
    specs = [p for p in sorted(folder.glob("measured.*.yaml")) if p.name != "measured.env.yaml"]
    # the steps and whole decodes, then the batched steps and single ops where measured
    rows = [r for name in ("measured", "batch", "ops") if (folder / f"{name}.csv").exists()
            for r in read_measured(folder / f"{name}.csv")]
    report = validate(open_profile("cpu-host"), rows, resolve_models(specs), "eager", source=str(csv))
    table = pd.DataFrame([{**r.as_dict(), "measured_us": r.row.us_median, "simulated_us": r.simulated_us,
                           "ape": r.ape} for r in report.results])
    return table, report.mape()


H200_DECODES = H200_MEASURED.parent / "closed-loop" / "decode.csv"  # whole decodes, as a user times them


def run_decode_validation() -> tuple[pd.DataFrame | None, dict[str, float], tuple[str, ...], float]:
    """The H200 whole decodes (`closed-loop/decode.csv`: a decode loop of graph replays, per emitted
    token) simulated on `h200` in graph mode, the sharings `host.loop_us` was fitted on and its
    value; (None, {}, (), nan) where the data is not shipped."""
    spec = H200_DECODES.with_name("decode.t5base.yaml")
    if not (H200_DECODES.exists() and spec.exists()):
        return None, {}, (), float("nan")
    profile = open_profile("h200")
    report = validate(profile, read_measured(H200_DECODES), resolve_models([spec]), "graph",
                      source=str(H200_DECODES))
    return (pd.DataFrame([r.as_dict() for r in report.results]), report.mape(), fitted_sharings(profile),
            profile.host.loop_us)


def roofline_points(profile_names: list[str]) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Every decode step of one small decode, simulated alone (on-chip state carried between steps)."""
    model, sharing_text, synthetic = ROOFLINE_CONFIG
    sharing = Sharing.parse(sharing_text)
    traces = synthetic_traces(synthetic, sharing.repeats)
    rows, peaks = [], {}
    for name in profile_names:
        profile = open_profile(name)
        for point in step_points(profile, BUILTIN_MODELS[model], sharing, traces):
            rows.append({"profile": name, "method": point["method"], "model": model, "sharing": sharing_text,
                         "workload": f"synthetic {synthetic}", "flops": point["flops"],
                         "dram_bytes": point["dram_bytes"], "us": point["us"]})
        dtype = profile.default_dtype
        peaks[name] = {"flops": profile.matrix_peak(dtype, achievable=False), "flops_eff": profile.matrix_peak(dtype),
                       "bw": profile.memory.dram.bandwidth_GBps * 1e9, "bw_eff": profile.memory.dram.achievable_Bps}
    return pd.DataFrame(rows), peaks


# ------------------------------------------------------------------------------ outputs

def draw(data: ReportData, out: Path) -> dict[str, str]:
    """All figures under out/figures; {name: path relative to out}."""
    fig_dir = out / "figures"
    made: dict[str, Path | None] = {}
    for profile in profile_order(data.study):
        made[f"latency_vs_depth_{profile}"] = figures.latency_vs_depth(
            data.study, profile, fig_dir / f"latency_vs_depth_{profile}.png")
    made["speedup_vs_mispredict"] = figures.speedup_vs_mispredict(
        data.study, fig_dir / "speedup_vs_mispredict.png", data.paper)
    made["speedup_vs_output_length"] = figures.speedup_vs_output_length(
        data.study, fig_dir / "speedup_vs_output_length.png")
    made["dram_traffic_vs_depth"] = figures.dram_traffic_vs_depth(data.study, fig_dir / "dram_traffic_vs_depth.png")
    made["roofline"] = check_figures.roofline(data.steps, data.peaks, fig_dir / "roofline.png")
    made["parity"] = check_figures.parity(data.validation, fig_dir / "parity.png")
    if data.paper is not None:
        made["speed_paper"] = figures.speed_paper(data.paper, fig_dir / "speed_paper.png")
    if data.serving is not None:
        made["serving"] = serving_figure(data.serving, fig_dir / "serving.png")
    if data.design is not None:
        made["design_space"] = heatmaps(data.design, fig_dir / "design_space.png")
    if data.design_sensitivity is not None:
        made["sensitivity_tornado"] = tornado(data.design_sensitivity, fig_dir / "sensitivity_tornado.png")
    if data.rivals is not None:
        made["rivals"] = rivals_figure(data.rivals, fig_dir / "rivals.png")
    if data.scale is not None:
        made["scale"] = scale_figure(data.scale, fig_dir / "scale.png")
    kept = {v for v in made.values() if v is not None}
    ours = ("latency_vs_depth_", "speedup_vs_", "dram_traffic_vs_depth", "roofline", "parity", "speed_paper",
            "serving", "design_space", "sensitivity_tornado", "rivals", "scale")
    for stale in fig_dir.glob("*.png"):  # figures of an earlier report that this one did not draw
        if stale not in kept and stale.name.startswith(ours):
            stale.unlink()
    return {k: str(v.relative_to(out)) for k, v in made.items() if v is not None}


def write_data(data: ReportData, out: Path) -> None:
    """The tidy tables behind the figures, as CSV (sorted, so the files are stable), each written
    atomically (`speedsim.fileio.atomic_write`: a link there is replaced, never written through)."""
    d = out / "data"
    with os_errors("--out", "cannot create"):
        d.mkdir(parents=True, exist_ok=True)
    val = pd.concat([v.assign(sim_mode=m) for m, v in data.validation.items()], ignore_index=True)
    tables = {"study.csv": data.study, "speed_paper.csv": data.paper, "validation.csv": val,
              "serving.csv": data.serving, "design_space.csv": data.design,
              "design_space_causes.csv": data.design_causes, "sensitivity.csv": data.design_sensitivity,
              "rivals.csv": data.rivals, "rivals_load.csv": data.rivals_load, "scale.csv": data.scale,
              "published.csv": data.published, "published_kernels.csv": data.published_kernels}
    for name, table in tables.items():
        if table is not None:
            with atomic_write(d / name, "w", where="--out", newline="") as fh:
                table.to_csv(fh, index=False)


def _check_report_dir(out: Path) -> None:
    """`out` must be new, empty, or hold an earlier report: never overwrite someone's README.md. Its
    subdirectories the report writes in (`figures`, `data`) must be directories or absent."""
    with os_errors("--out", "cannot list"):
        if not out.is_dir() or not any(out.iterdir()):
            return
    readme = out / "README.md"
    try:
        first = readme.read_text(encoding="utf-8").split("\n", 1)[0] if readme.is_file() else ""
    except (OSError, UnicodeDecodeError):
        first = ""
    if first.strip() != REPORT_TITLE:
        raise UserError(f"{out} is not empty and holds no speedsim report (README.md starting '{REPORT_TITLE}'); "
                        "use a new or empty directory", where="--out")
    for sub in ("figures", "data"):
        check_output_dir(out / sub, "--out")


def run_serving(spec: Path | None, full: bool, cache: Path, workers: int, scheduler: str | None,
                progress: bool, cache_flag: str = "--cache"
                ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The serving study (`experiments/serving.yaml`, a sweep of serving runs; its reduced form unless
    `full`): the curves and speed-limit tables."""
    study = run_study_sweep(spec, "serving", full, cache, workers, scheduler, progress, cache_flag)
    if study is None:
        return None, None
    _, runs, results = study
    return serving_tables(runs, results)


def _sweep_dirs(specs: tuple[Path, ...], paper_spec: Path | None, serving_spec: Path | None,
                full: bool, design_spec: Path | None = None, rivals_spec: Path | None = None,
                scale_spec: Path | None = None) -> list[str]:
    """The subdirectories of the cache the report's sweeps write in."""
    names = [Path(spec).stem for spec in specs]
    if paper_spec:
        names.append("speed_paper")
    names += [study_dir(name, full) for name, spec in (("serving", serving_spec), (DESIGN_STUDY, design_spec),
                                                         (RIVALS_STUDY, rivals_spec), (SCALE_STUDY, scale_spec))
              if spec is not None]
    return names


@contextlib.contextmanager
def _work_dir(cache: Path | None) -> Iterator[tuple[Path, str]]:
    """The directory the sweeps write in and the flag (or variable) that names it: `--cache`, or a new
    temporary directory (removed after), named by `$TMPDIR`, the variable that chooses where it goes."""
    if cache is not None:
        yield cache, "--cache"
        return
    with os_errors("$TMPDIR", "cannot create a temporary directory:"):
        tmp = tempfile.TemporaryDirectory(prefix="speedsim-report-")
    with tmp as name:
        yield Path(name), "$TMPDIR"


def build_report(out: Path | str, *, full: bool = False, specs: tuple[Path, ...] | None = None,
                 paper_spec: Path | None = PAPER_SPEC, workers: int = 2, scheduler: str | None = None,
                 cache: Path | str | None = None, progress: bool = True,
                 serving_spec: Path | None = SERVING_SPEC, design_spec: Path | None = DESIGN_SPEC,
                 rivals_spec: Path | None = RIVALS_SPEC, scale_spec: Path | None = SCALE_SPEC) -> dict:
    """Run the study and write figures, data and README.md under `out`; a summary dict."""
    out = check_output_dir(out, "--out")  # before minutes of work, not after them
    _check_report_dir(out)
    specs = specs if specs is not None else (FULL_STUDY if full else DEFAULT_STUDY)
    cache_dir = None if cache is None else check_output_dir(cache, "--cache")  # '' is no path, not "none"
    if cache_dir is not None:
        for name in _sweep_dirs(tuple(specs), paper_spec, serving_spec, full, design_spec, rivals_spec,
                                scale_spec):  # before any sweep
            check_output_dir(cache_dir / name, "--cache")
    if scheduler is not None:
        check_scheduler(scheduler)
    check_workers(workers)
    with _work_dir(cache_dir) as (work, flag):
        study = run_study(tuple(specs), work, workers, scheduler, progress, flag)
        paper, note = (run_paper(paper_spec, work, workers, scheduler, progress, flag) if paper_spec
                       else (None, "no paper spec given"))
        serving, serving_limit = run_serving(serving_spec, full, work, workers, scheduler, progress, flag)
        design, design_causes, design_sens = run_design_space(design_spec, full, work, workers, scheduler, progress,
                                                              flag)
        rivals, rivals_load = run_rivals(rivals_spec, full, work, workers, scheduler, progress, flag)
        scale = run_scale(scale_spec, full, work, workers, scheduler, progress, flag)
    validation, mape = run_validation()
    steps, peaks = roofline_points(profile_order(study) if not study.empty else ["h200"])
    data = ReportData(study, paper, note, validation, mape, steps, peaks,
                      [str(Path(s).resolve().relative_to(ROOT)) if Path(s).resolve().is_relative_to(ROOT)
                       else Path(s).name for s in specs])
    data.noise = noise_floor()
    data.cpu, data.cpu_mape = run_cpu_validation()
    data.decodes, data.decodes_mape, data.decodes_fitted, data.decodes_loop_us = run_decode_validation()
    data.serving, data.serving_limit = serving, serving_limit
    data.design, data.design_causes, data.design_sensitivity = design, design_causes, design_sens
    data.design_full = full
    data.rivals, data.rivals_load = rivals, rivals_load
    data.scale = scale
    data.published, data.published_mape = run_published_validation()
    data.published_kernels = run_published_kernels()
    data.figures = draw(data, out)
    write_data(data, out)
    readme = write_readme(data, out)
    write_validation(data, out)
    failed = int((study["status"] != "ok").sum()) if not study.empty else 0
    return {"out": str(out), "readme": str(readme), "figures": sorted(data.figures.values()),
            "study_runs": int(study["run_key"].nunique()) if not study.empty else 0, "failed_runs": failed,
            "paper": ("ok" if not note else f"partial: {note}") if paper is not None else note,
            "mape": {m: dict(s) for m, s in mape.items()}}  # unrounded: printed as the markdown prints it
