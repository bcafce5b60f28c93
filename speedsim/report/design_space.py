"""The design-space part of the report: what hardware makes SPEED pay.

The study is one sweep (`experiments/design_space.yaml`; its `reduced:` form in the default report,
the whole grid with `--full`) of SPEED 4x3 with its baselines on what-ifs of a profile (`set.PATH`
axes): DRAM bandwidth x the fixed per-kernel costs (block `bw_x_latency`) and on-chip capacity x
DRAM bandwidth (block `capacity_x_bw`). `design_tables` reads it in the spec's order into

- `grid`: one row per run: the two axes' factors, each method's per-token time, SPEED's speedup over
  the unshared decoder of the same depth (12 layers for 4x3) and over the sequential shared one;
- `causes`: for each panel (block, profile, model) the points where the speedup is largest and smallest
  and the profile's own point, simulated again (`speedsim.simulate`) for the engine's time by cause of
  SPEED and of the unshared decoder (the sweep table does not carry it);

and `sensitivity_table` ranks, per profile, the parameters by the elasticity of SPEED's per-token
time (`speedsim.design.sensitivity`, on the first `SENSITIVITY_LIMIT` sequences of the 4x3 trace).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.design import sensitivity  # noqa: E402
from speedsim.errors import UserError  # noqa: E402
from speedsim.report.markdown import md_table, times  # noqa: E402
from speedsim.report.studies import run_study_sweep  # noqa: E402
from speedsim.report.style import save  # noqa: E402
from speedsim.run import RunParams  # noqa: E402
from speedsim.simulate import build_scenario, run_scenario  # noqa: E402

BW = "memory.dram.bandwidth_GBps"
LATENCY = "kernel.latency_us"     # the fixed per-kernel costs' axis (the others in its bundle scale with it)
CAPACITY = "memory.onchip.0.capacity_MiB"
PANELS = {  # block label -> (x axis path, y axis path, y axis label)
    "bw_x_latency": (BW, LATENCY, "fixed per-kernel costs (kernel latency, launch) x"),
    "capacity_x_bw": (BW, CAPACITY, "on-chip capacity x"),
}
SENSITIVITY_PROFILES = ("h200", "l4", "jetson-agx-orin", "gemmini")
SENSITIVITY_CONFIG = ("t5base", "4x3", "4x3")   # model, sharing, shipped trace
SENSITIVITY_LIMIT = 2                           # the trace's first sequences: enough for the ranking, cheap
TOP = 8
CAUSE_NAMES = {"host": "host issue/round trip", "launch": "kernel launch", "latency": "fixed kernel latency",
               "dram": "DRAM transfer", "onchip": "on-chip transfer", "compute": "compute", "wait": "waiting"}
GRID = ["label", "profile", "model", "x", "y", "speed_us", "unshared_us", "sequential_us", "speedup_vs_unshared",
        "speedup_vs_sequential", "limit"]


def factor(value) -> float:
    """A `set.PATH` value as a factor of the profile's own ('x0.5' -> 0.5); 1 where it was not set."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 1.0
    text = str(value)
    if not text.startswith("x"):
        raise UserError(f"the design-space axes take factors (xF), not {text}", where="design-space study")
    return float(text[1:])


STUDY = "design_space"


def run_design_space(spec: Path | None, full: bool, cache: Path, workers: int, scheduler: str | None,
                     progress: bool, cache_flag: str = "--cache"
                     ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """(grid, causes, sensitivity) of the design-space study; (None, None, None) without its spec."""
    study = run_study_sweep(spec, STUDY, full, cache, workers, scheduler, progress, cache_flag)
    if study is None:
        return None, None, None
    loaded, runs, results = study
    grid = design_tables(runs, results)
    causes = corner_causes(grid, {r.key: r for r in runs}, loaded.base_dir, loaded.model_specs)
    return grid, causes, sensitivity_table()


def design_tables(runs: list[RunParams], results: pd.DataFrame) -> pd.DataFrame:
    """The grid table of a design-space sweep's `results`, in the order of its planned `runs`."""
    rows = []
    for run in runs:
        part = results[results["run_key"] == run.key]
        bad = part[part["status"] != "ok"]
        if part.empty or len(bad):
            raise UserError(f"design-space run {run.key} ({run.label}, {run.profile}, {run.model}) failed: "
                            f"{'not run' if part.empty else bad['error'].iloc[0]}", where="design-space study")
        if run.label not in PANELS:
            continue
        xpath, ypath, _ = PANELS[run.label]
        sets = dict(run.overrides)
        per = {m: float(part[part["method"] == m]["per_token_us"].iloc[0]) for m in ("speed", "unshared", "sequential")}
        rows.append({"label": run.label, "profile": run.profile, "model": run.model, "x": factor(sets.get(xpath)),
                     "y": factor(sets.get(ypath)), "speed_us": per["speed"], "unshared_us": per["unshared"],
                     "sequential_us": per["sequential"], "speedup_vs_unshared": per["unshared"] / per["speed"],
                     "speedup_vs_sequential": per["sequential"] / per["speed"], "limit": run.limit or 0,
                     "run_key": run.key})
    return pd.DataFrame(rows, columns=[*GRID, "run_key"])


def _panels(grid: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys(zip(grid["label"], grid["profile"], grid["model"], strict=True)))


def corner_causes(grid: pd.DataFrame, by_key: dict[str, RunParams], base_dir, model_specs) -> pd.DataFrame:
    """Per panel, its largest- and smallest-speedup points and the profile's own point, with the engine's
    time by cause (µs per token) of SPEED and of the unshared decoder there."""
    rows = []
    for label, profile, model in _panels(grid):
        part = grid[(grid["label"] == label) & (grid["profile"] == profile) & (grid["model"] == model)]
        ranked = part.sort_values(["speedup_vs_unshared", "x", "y"], kind="stable")
        own = part[(part["x"] == 1.0) & (part["y"] == 1.0)]
        points = {"largest": ranked.iloc[-1], "smallest": ranked.iloc[0]}
        if len(own):
            points["profile's own"] = own.iloc[0]
        for point, row in points.items():
            result = run_scenario(build_scenario(by_key[str(row["run_key"])], base_dir, model_specs))
            by_method = {m.method: m for m in result.methods()}
            entry = {"label": label, "profile": profile, "model": model, "point": point, "x": row["x"],
                     "y": row["y"], "speedup_vs_unshared": row["speedup_vs_unshared"]}
            for method in ("speed", "unshared"):
                m = by_method[method]
                entry[f"{method}_us"] = m.per_token_us
                for cause, value in m.time_by_cause_us_per_token.items():
                    if cause != "interconnect":  # (one device: the study's designs have no collectives)
                        entry[f"{method}_{cause}_us"] = float(value)
            rows.append(entry)
    return pd.DataFrame(rows)


def sensitivity_table(profiles: tuple[str, ...] = SENSITIVITY_PROFILES, limit: int = SENSITIVITY_LIMIT
                      ) -> pd.DataFrame:
    """Per profile, every parameter's elasticity of SPEED's per-token time (t5base 4x3, the trace's first
    `limit` sequences), ranked by magnitude."""
    model, sharing, trace = SENSITIVITY_CONFIG
    rows = []
    for name in profiles:
        run = RunParams(profile=name, model=model, sharing=sharing, trace=trace, limit=limit, baselines=(),
                        mode="graph")
        result = sensitivity(build_scenario(run))
        for rank, (path, value) in enumerate(result.ranked("speed"), start=1):
            rows.append({"profile": name, "rank": rank, "parameter": path, "elasticity": value,
                         "per_token_us": result.per_token_us["speed"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ figures

def _fmt(f: float) -> str:
    return f"{f:g}"


def heatmaps(grid: pd.DataFrame, path: Path) -> Path | None:
    """SPEED's speedup over the unshared 12-layer decoder on each panel's two axes: one row per block,
    one column per (profile, model)."""
    if grid is None or grid.empty:
        return None
    labels = [k for k in PANELS if k in set(grid["label"])]
    cols = list(dict.fromkeys(zip(grid["profile"], grid["model"], strict=True)))
    lo, hi = float(grid["speedup_vs_unshared"].min()), float(grid["speedup_vs_unshared"].max())
    fig, axes = plt.subplots(len(labels), len(cols), figsize=(4.2 * len(cols), 3.9 * len(labels)), squeeze=False,
                             layout="constrained")
    image = None
    for i, label in enumerate(labels):
        _, _, ylabel = PANELS[label]
        for j, (profile, model) in enumerate(cols):
            ax = axes[i][j]
            part = grid[(grid["label"] == label) & (grid["profile"] == profile) & (grid["model"] == model)]
            xs, ys = sorted(part["x"].unique()), sorted(part["y"].unique())
            table = part.pivot_table(index="y", columns="x", values="speedup_vs_unshared").reindex(index=ys, columns=xs)
            image = ax.imshow(table.to_numpy(), origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
            for (r, c), v in np.ndenumerate(table.to_numpy()):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < (lo + hi) / 2 else "black")
            ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs])
            ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
            ax.set_xlabel("DRAM bandwidth x")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{profile}, {model} 4x3", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="SPEED speedup over unshared 12-layer")
    limit = int(grid["limit"].max())
    workload = f"first {limit} sequence(s) of the shipped 4x3 trace" if limit else "the whole shipped 4x3 trace"
    fig.suptitle(f"SPEED 4x3 over the unshared 12-layer decoder on what-ifs of each profile ({workload})")
    return save(fig, path)


def tornado(sens: pd.DataFrame, path: Path, top: int = TOP) -> Path | None:
    """Each profile's `top` parameters by |elasticity| of SPEED's per-token time, side by side."""
    if sens is None or sens.empty:
        return None
    profiles = list(dict.fromkeys(sens["profile"]))
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.6 * len(profiles), 4.0), squeeze=False, layout="constrained")
    bound = max(1.0, float(sens["elasticity"].abs().max()))
    for ax, profile in zip(axes[0], profiles, strict=True):
        part = sens[sens["profile"] == profile].sort_values("rank").head(top).iloc[::-1]
        colors = ["tab:green" if v < 0 else "tab:red" for v in part["elasticity"]]
        ax.barh(range(len(part)), part["elasticity"], color=colors)
        ax.set_yticks(range(len(part)), list(part["parameter"]), fontsize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlim(-bound, bound)
        ax.set_xlabel("elasticity d ln(time/token) / d ln(parameter)")
        ax.set_title(f"{profile} ({part['per_token_us'].iloc[0]:.0f} µs/token)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"What bounds SPEED 4x3 (t5base, first {SENSITIVITY_LIMIT} sequences of the 4x3 trace): "
                 f"top {top} parameters; green: more is faster")
    return save(fig, path)


# ------------------------------------------------------------------------------ text

def _point(label: str, x: float, y: float) -> str:
    _, _, ylabel = PANELS[label]
    what = "kernel costs" if label == "bw_x_latency" else "on-chip capacity"
    return f"DRAM bandwidth x{_fmt(x)}, {what} x{_fmt(y)}"


def _causes(row: pd.Series, method: str) -> dict[str, float]:
    prefix, total = f"{method}_", float(row[f"{method}_us"])
    return {c: float(row[f"{prefix}{c}_us"]) / total for c in CAUSE_NAMES if f"{prefix}{c}_us" in row}


def _top_cause(row: pd.Series, method: str) -> tuple[str, float]:
    shares = _causes(row, method)
    cause = max(shares, key=lambda c: shares[c])
    return cause, shares[cause]


def _why(row: pd.Series) -> str:
    """Where the two decoders' times differ most, by cause, at one point."""
    diffs = {c: float(row[f"unshared_{c}_us"]) - float(row[f"speed_{c}_us"]) for c in CAUSE_NAMES
             if f"unshared_{c}_us" in row and f"speed_{c}_us" in row}
    saved = max(diffs, key=lambda c: diffs[c])
    ucause, ushare = _top_cause(row, "unshared")
    scause, sshare = _top_cause(row, "speed")
    return (f"the unshared decoder spends {ushare:.0%} of its time on {CAUSE_NAMES[ucause]}, SPEED {sshare:.0%} on "
            f"{CAUSE_NAMES[scause]}; SPEED saves most on {CAUSE_NAMES[saved]} ({float(row[f'unshared_{saved}_us']):.0f}"
            f" -> {float(row[f'speed_{saved}_us']):.0f} µs/token)")


def reading(grid: pd.DataFrame, causes: pd.DataFrame) -> list[str]:
    """One bullet per panel: the speedup at the profile's own point, where it is largest and smallest, and why."""
    out = []
    for label, profile, model in _panels(grid):
        sel = causes[(causes["label"] == label) & (causes["profile"] == profile) & (causes["model"] == model)]
        big = sel[sel["point"] == "largest"].iloc[0]
        small = sel[sel["point"] == "smallest"].iloc[0]
        own = sel[sel["point"] == "profile's own"]
        head = (f"at its own design {times(float(own['speedup_vs_unshared'].iloc[0]))}; " if len(own) else "")
        out.append(f"- **{profile}, {model}** ({'bandwidth x kernel costs' if label == 'bw_x_latency' else 'capacity x bandwidth'}): "
                   f"{head}largest {times(float(big['speedup_vs_unshared']))} at {_point(label, big['x'], big['y'])} "
                   f"({_why(big)}); smallest {times(float(small['speedup_vs_unshared']))} at "
                   f"{_point(label, small['x'], small['y'])} ({_why(small)}).")
    return out


def design_space_section(grid: pd.DataFrame | None, causes: pd.DataFrame | None, sens: pd.DataFrame | None,
                         figures: dict[str, str], spec_name: str, full: bool) -> list[str]:
    """The report's design-space section (empty if the study did not run)."""
    if grid is None or causes is None or grid.empty:
        return []
    limit = int(grid["limit"].max())
    workload = (f"the first {limit} sequence(s) of the shipped 4x3 exit trace" if limit
                else "the whole shipped 4x3 exit trace")
    n = int(grid["run_key"].nunique())
    form = "the whole grid" if full else "its reduced grid; `speedsim report --full` runs the whole one"
    lines = ["## What hardware makes SPEED pay", "",
             f"`{spec_name}` ({form}: {n} designs, {workload}): SPEED 4x3 against the unshared decoder of the same "
             "depth (12 layers) on what-ifs of h200 and gemmini (`set.PATH` axes, factors of the profile's own value), "
             "for t5base and dec1b dimensions (the same exit decisions for both). Top row: DRAM bandwidth against "
             "the fixed per-kernel costs (kernel latency, matrix-kernel latency where the profile has one, and "
             "graph launch overhead, scaled together); bottom row: DRAM bandwidth against on-chip capacity.", ""]
    if "design_space" in figures:
        lines += [f"![design space heatmaps]({figures['design_space']})", ""]
    ranked = grid.sort_values("speedup_vs_unshared", kind="stable")
    lo, hi = ranked.iloc[0], ranked.iloc[-1]
    losing = grid[grid["speedup_vs_unshared"] <= 1.0]
    lines += [f"Over all {n} designs SPEED's speedup over the unshared 12-layer decoder runs from "
              f"{times(float(lo['speedup_vs_unshared']))} ({lo['profile']}, {lo['model']}, "
              f"{_point(str(lo['label']), lo['x'], lo['y'])}) to {times(float(hi['speedup_vs_unshared']))} "
              f"({hi['profile']}, {hi['model']}, {_point(str(hi['label']), hi['x'], hi['y'])}); "
              + (f"it vanishes (at most 1x) on {len(losing)} of them." if len(losing) else
                 "it vanishes on none of them.") + "", ""]
    lines += ["**Reading** (the engine's time by cause, `speedsim simulate`, at each panel's extreme points):", "",
              *reading(grid, causes), ""]
    if sens is not None and not sens.empty:
        rows = []
        for profile in dict.fromkeys(sens["profile"]):
            part = sens[sens["profile"] == profile].sort_values("rank").head(3)
            rows.append({"profile": profile, "SPEED µs/token": f"{part['per_token_us'].iloc[0]:.0f}",
                         **{f"#{i + 1}": f"{r['parameter']} ({r['elasticity']:+.2f})"
                            for i, (_, r) in enumerate(part.iterrows())}})
        lines += ["### What bounds SPEED on each chip", "",
                  f"Elasticity d ln(SPEED's time per token) / d ln(parameter) of every physical parameter "
                  f"(`speedsim sensitivity`, t5base 4x3 on the first {SENSITIVITY_LIMIT} sequences of the 4x3 "
                  f"trace, central differences at 1%); the top {TOP} per profile:", ""]
        if "sensitivity_tornado" in figures:
            lines += [f"![sensitivity tornado]({figures['sensitivity_tornado']})", ""]
        lines += [md_table(rows, list(rows[0])), "",
                  "-1 is a rate that bounds all of the time, +1 a latency that is all of it, 0 a parameter that does "
                  "not matter.", ""]
    return lines
