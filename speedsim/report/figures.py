"""Matplotlib figures of the study's sweeps and of the paper comparison, each readable on its own
(title, units, legend).

Every function takes tidy tables (see `speedsim.sweep.execute.COLUMNS`) and writes one PNG
through `style.save`, so the same data gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.report.content import ok, profile_order  # noqa: E402
from speedsim.report.style import METHOD_STYLE, TAB10, finish_panel, save  # noqa: E402
from speedsim.sharing import Sharing  # noqa: E402
from speedsim.simulate.schema import (  # noqa: E402
    FIXED_DEPTH,
    MISPREDICT,
    OUT_LEN,
    PAPER,
    PAPER_EQUAL_LENGTH,
    WEIGHT_BUDGET,
)

CLASS_COLORS = {"weights": "tab:blue", "kv": "tab:orange", "activations": "tab:gray", "embeddings": "tab:purple"}
CLASS_LABELS = {"weights": "layer weights", "kv": "KV cache", "activations": "activations",
                "embeddings": "embeddings + LM head"}
# per-run bounds of `simulate --bounds` (the profile's ranges at their ends): a derived profile's rows
# have them, a measured profile's rows do not (or hold NaN), and only finite ones are drawn
BAND_COLUMNS = ("per_token_us_low", "per_token_us_high")
BAND_ALPHA = 0.15
MS_ABOVE_US = 10_000.0  # latencies beyond this are plotted in milliseconds
PAPER_MISS = {"4x3": (0.06, 0.14), "2x6": (0.13, 0.17)}  # Hooper et al. 2023, first-exit misprediction


# ------------------------------------------------------------------------------ latency vs depth

def latency_vs_depth(df: pd.DataFrame, profile: str, path: Path) -> Path | None:
    """Two panels: a fixed weight budget (U distinct layers, depth UR) and a fixed depth reached with R repeats."""
    budget = ok(df, WEIGHT_BUDGET)
    budget = budget[budget["profile"] == profile]
    fixed = ok(df, FIXED_DEPTH)
    fixed = fixed[fixed["profile"] == profile]
    if budget.empty and fixed.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    div, unit = _time_scale(pd.concat([budget["per_token_us"], fixed["per_token_us"]]))
    if not budget.empty:
        u = int(budget["U"].iloc[0])
        deep = budget[budget["R"] > 1]  # R = 1 is the dotted same-weights line
        for method, style in METHOD_STYLE.items():
            part = deep[deep["method"] == method].sort_values("depth")
            # unshared and sequential do the same work per token and often coincide: hollow, dashed
            # markers keep the one drawn first visible under the other
            extra = {"ls": "--", "mfc": "none", "ms": 9} if method == "unshared" else {}
            left.plot(part["depth"], part["per_token_us"] / div, **style, **extra)
            draw_band(left, part["depth"], part, div, style["color"])
        shallow = budget[(budget["R"] == 1) & (budget["method"] == "speed")]
        if not shallow.empty:
            left.axhline(shallow["per_token_us"].iloc[0] / div, color="k", ls=":",
                         label=f"unshared, same weights ({u} layers)")
        left.set_title(f"fixed weight budget: {u} distinct layers, depth = {u} x R")
        left.set_xlabel("effective depth (decoder layers)")
        left.set_ylabel(f"per-token decode latency ({unit})")
        _depth_axis(left)
        left.set_ylim(bottom=0)
        left.grid(alpha=0.3)
        left.legend(fontsize=8)
    if not fixed.empty:
        cmap = plt.get_cmap("viridis")
        rs = sorted(fixed["R"].unique())
        for i, r in enumerate(rs):
            color = cmap(i / max(len(rs) - 1, 1))
            part = fixed[fixed["R"] == r]
            speed = part[part["method"] == "speed"].sort_values("depth")
            name = "unshared (R = 1)" if r == 1 else f"SPEED, R = {r}"
            right.plot(speed["depth"], speed["per_token_us"] / div, color=color, marker="o", label=name)
            draw_band(right, speed["depth"], speed, div, color)
        seq = fixed[(fixed["method"] == "sequential") & (fixed["R"] > 1)]
        if not seq.empty:  # the same layer passes per token whatever R: one curve (the mean over R)
            mean = seq.groupby("depth")["per_token_us"].mean()
            right.plot(mean.index, mean.to_numpy() / div, color="k", marker="s", ls="--",
                       label=f"sequential (any R > 1: {', '.join(str(r) for r in rs if r > 1)})")
            if all(c in seq.columns for c in BAND_COLUMNS):
                numeric = seq.assign(**{c: pd.to_numeric(seq[c], errors="coerce") for c in BAND_COLUMNS})
                bands = numeric.groupby("depth")[list(BAND_COLUMNS)].mean()
                draw_band(right, bands.index, bands, div, "k")
        right.set_title("fixed depth: U = depth / R distinct layers")
        right.set_xlabel("effective depth (decoder layers)")
        right.set_ylabel(f"per-token decode latency ({unit})")
        _depth_axis(right)
        right.set_ylim(bottom=0)
        right.grid(alpha=0.3)
        right.legend(fontsize=8, ncol=2)
    first = (budget if not budget.empty else fixed).iloc[0]
    fig.suptitle(f"{profile}: per-token latency vs decoder depth ({first['model']} dimensions, "
                 f"{first['mode']} mode, {_workload_text(first)})")
    return save(fig, path)


def draw_band(ax, x, rows: pd.DataFrame, div: float, color) -> bool:
    """Shade per_token_us_low..high under a curve where `rows` have both columns with finite values
    (a derived profile run with `--bounds`); draw nothing otherwise (a measured profile). True if drawn."""
    if not all(c in rows.columns for c in BAND_COLUMNS):
        return False
    low, high = (pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float) for c in BAND_COLUMNS)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return False
    xs = np.asarray(x, dtype=float)
    ax.fill_between(xs, np.where(finite, low, np.nan) / div, np.where(finite, high, np.nan) / div, where=finite,
                    color=color, alpha=BAND_ALPHA, linewidth=0)
    return True


def _time_scale(values: pd.Series) -> tuple[float, str]:
    """(divisor, unit) so a latency axis reads in µs, or in ms when its values run to tens of thousands."""
    top = float(values.max()) if len(values) else 0.0
    return (1000.0, "ms") if top > MS_ABOVE_US else (1.0, "µs")


def _depth_axis(ax) -> None:
    """Depth is a whole number of layers: integer ticks only."""
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _workload_text(row: pd.Series) -> str:
    if isinstance(row.get("trace"), str) and row["trace"]:
        return f"exit traces of {row['trace']}"
    miss = row.get("mispredict")
    miss = 0.0 if miss is None or (isinstance(miss, float) and np.isnan(miss)) else float(miss)
    return f"{miss:.0%} first-exit misses, {int(row['out_len'])}-token outputs"


# ------------------------------------------------------------------------------ acceptance

def _panel_per_profile(data: pd.DataFrame):
    """One panel per profile side by side, and one colour per sharing (UxR)."""
    profiles = profile_order(data)
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4.4), squeeze=False, layout="constrained")
    colors = dict(zip(sorted(data["sharing"].unique()), TAB10, strict=False))
    return fig, list(zip(axes[0], profiles, strict=True)), colors


def speedup_vs_mispredict(df: pd.DataFrame, path: Path, paper: pd.DataFrame | None = None) -> Path | None:
    """SPEED's speedup over shared-sequential (solid) and unshared (dashed) against the miss rate."""
    data = ok(df, MISPREDICT)
    if data.empty:
        return None
    realised = data[data["method"] == "speed"].set_index("run_key")["first_exit_miss"]
    data = data.assign(realised_miss=data["run_key"].map(realised))  # what the traces hold, not the nominal rate
    fig, panels, colors = _panel_per_profile(data)
    for ax, profile in panels:
        part = data[data["profile"] == profile]
        for sharing, color in colors.items():
            for method, ls in (("sequential", "-"), ("unshared", "--")):
                rows = part[(part["sharing"] == sharing) & (part["method"] == method)].sort_values("realised_miss")
                if not rows.empty:
                    ax.plot(100 * rows["realised_miss"], rows["speedup"], ls=ls, marker="o", color=color,
                            label=f"{sharing} (R = {Sharing.parse(sharing).repeats})" if method == "sequential" else None)
            if sharing in PAPER_MISS:
                lo, hi = PAPER_MISS[sharing]
                ax.axvspan(100 * lo, 100 * hi, color=color, alpha=0.08)
        marks = {PAPER: ("*", 13, "real exit traces of the trained models\n(vs sequential; their own output lengths)"),
                 PAPER_EQUAL_LENGTH: ("D", 7, "fitted to them, at {n} output tokens\n(vs sequential)")}
        runs = ok(paper) if paper is not None and not paper.empty else pd.DataFrame()
        for label, (marker, size, legend) in marks.items() if not runs.empty else ():
            real = runs[(runs["profile"] == profile) & (runs["label"] == label)]
            miss = real[real["method"] == "speed"].set_index("run_key")["first_exit_miss"]
            real = real[real["method"] == "sequential"]
            real = real.assign(first_exit_miss=real["run_key"].map(miss))
            for _, row in real.iterrows():
                color = colors.get(row["sharing"], "k")
                ax.plot(100 * row["first_exit_miss"], row["speedup"], marker=marker, ms=size, color=color, ls="",
                        markeredgecolor="k")
                if label == PAPER:
                    ax.annotate(row["sharing"], (100 * row["first_exit_miss"], row["speedup"]), xytext=(6, -3),
                                textcoords="offset points", fontsize=7)
            if not real.empty:
                ax.plot([], [], marker=marker, ms=size - 2, ls="", color="w", markeredgecolor="k",
                        label=legend.format(n=int(real["out_len"].iloc[0])))
        ax.plot([], [], color="k", ls="-", label="vs shared, sequential")
        ax.plot([], [], color="k", ls="--", label="vs unshared, same depth")
        ax.axhline(1.0, color="k", lw=0.8)
        finish_panel(ax, f"{profile}", "first-exit misprediction rate realised in the traces (% of tokens)",
                     "SPEED speedup (baseline µs/token ÷ SPEED µs/token)")
    fig.suptitle("SPEED speedup vs first-exit misprediction rate (shaded: the SPEED paper's reported "
                 "rates for 4x3 and 2x6)")
    return save(fig, path)


def speedup_vs_output_length(df: pd.DataFrame, path: Path) -> Path | None:
    """Speedup over shared-sequential against output length: fill and drain dominate short outputs."""
    data = ok(df, OUT_LEN)
    if data.empty:
        return None
    fig, panels, colors = _panel_per_profile(data)
    for ax, profile in panels:
        part = data[(data["profile"] == profile) & (data["method"] == "sequential")]
        for sharing, color in colors.items():
            for miss, ls in zip(sorted(part["mispredict"].unique()), ("-", "--", ":", "-."), strict=False):
                rows = part[(part["sharing"] == sharing) & (part["mispredict"] == miss)].sort_values("out_len")
                r = Sharing.parse(sharing).repeats
                ax.plot(rows["out_len"], rows["speedup"], ls=ls, marker="o", color=color,
                        label=f"{sharing}, {miss:.0%} misses (ideal {r}x)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        finish_panel(ax, profile, "output length (tokens)", "speedup over shared-sequential (x)")
    fig.suptitle("SPEED speedup vs output length: short outputs pay pipeline fill and drain")
    return save(fig, path)


# ------------------------------------------------------------------------------ traffic

def dram_traffic_vs_depth(df: pd.DataFrame, path: Path, profiles: tuple[str, ...] = ("h200", "rtx-a5000")) -> Path | None:
    """Stacked DRAM bytes per emitted token by tensor class, per method, against depth (weight budget)."""
    data = ok(df, WEIGHT_BUDGET)
    profiles = tuple(p for p in profiles if p in set(data["profile"])) or tuple(profile_order(data)[:2])
    if data.empty or not profiles:
        return None
    methods = list(METHOD_STYLE)
    fig, axes = plt.subplots(len(profiles), len(methods), figsize=(13, 3.8 * len(profiles)), squeeze=False,
                             sharey="row", layout="constrained")
    for row, profile in zip(axes, profiles, strict=True):
        part = data[data["profile"] == profile]
        for ax, method in zip(row, methods, strict=True):
            rows = part[part["method"] == method].sort_values("depth")
            bottom = np.zeros(len(rows))
            x = np.arange(len(rows))
            for cls, color in CLASS_COLORS.items():
                values = rows[f"dram_{cls}_bytes_per_token"].to_numpy(dtype=float) / 1e6
                ax.bar(x, values, bottom=bottom, color=color, label=CLASS_LABELS[cls], width=0.7)
                bottom += values
            ax.set_xticks(x, [f"{d}\n({s})" for d, s in zip(rows["depth"], rows["sharing"], strict=True)], fontsize=7)
            ax.set_title(f"{profile}: {METHOD_STYLE[method]['label']}", fontsize=10)
            ax.set_xlabel("depth in layers (UxR)")
            ax.grid(alpha=0.3, axis="y")
        row[0].set_ylabel("DRAM traffic per token (MB)")
        row[0].legend(fontsize=8, title="tensor class")
    fig.suptitle(f"DRAM traffic per emitted token vs depth, by tensor class\n({int(data['U'].iloc[0])} distinct "
                 "layers applied R times; the unshared decoder has as many distinct layers as its depth)")
    return save(fig, path)


# ------------------------------------------------------------------------------ the paper's comparison

def speed_paper(df: pd.DataFrame, path: Path) -> Path | None:
    """Per-token latency of each trained config on each profile, with its measured quality annotated:
    on the real traces (each model's own output lengths) and on traces fitted to them at one length."""
    data = ok(df)
    data = data[data["method"] == "speed"]
    if data.empty:
        return None
    profiles = profile_order(data)
    panels = [(label, title) for label, title in (
        (PAPER, "real exit traces, each model's own output lengths"),
        (PAPER_EQUAL_LENGTH, "traces fitted to them, {n} output tokens each")) if (data["label"] == label).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), layout="constrained", sharey=True,
                             squeeze=False)
    names = {"12x1": "12x1\nunshared deep", "4x1": "4x1\nunshared shallow"}
    for ax, (label, title) in zip(axes[0], panels, strict=True):
        block = data[data["label"] == label]
        configs = [c for c in ("12x1", "4x1", "4x3", "2x6") if c in set(block["sharing"])]
        width = 0.8 / len(profiles)
        x = np.arange(len(configs))
        for i, profile in enumerate(profiles):
            part = block[block["profile"] == profile].set_index("sharing").reindex(configs)
            bars = ax.bar(x + i * width, part["per_token_us"], width, label=profile)
            for bar, rouge in zip(bars, part["test_rougeL"], strict=True):
                if rouge == rouge:  # not NaN
                    ax.annotate(f"R-L {rouge:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x + width * (len(profiles) - 1) / 2, [names.get(c, f"{c}\nSPEED") for c in configs])
        ax.set_title(title.format(n=int(block["out_len"].iloc[0])), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("per-token decode latency (µs)")
    axes[0][0].legend()
    fig.supxlabel("trained config (R-L = test ROUGE-L of the trained model)", fontsize=9)
    fig.suptitle("The SPEED paper's comparison: unshared deep and shallow decoders vs shared models with SPEED "
                 "(T5-Base dimensions)", fontsize=10)
    return save(fig, path)
