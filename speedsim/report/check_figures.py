"""Figures that check the simulator: each profile's roofline with every simulated decode step on it,
and the measured-vs-simulated parity plot of the validation rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.report.content import profile_order  # noqa: E402
from speedsim.report.style import METHOD_STYLE, TAB10, save  # noqa: E402

# ------------------------------------------------------------------------------ roofline

def roofline(points: pd.DataFrame, peaks: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Each profile's roofline (datasheet and achievable) with every simulated decode step placed on it.

    `points`: profile, method, flops, dram_bytes, us (one row per decode step); `peaks[profile]`:
    flops (datasheet matrix FLOP/s), flops_eff (achievable), bw (datasheet DRAM B/s), bw_eff.
    """
    if points.empty:
        return None
    profiles = profile_order(points)
    cols = min(4, len(profiles))
    rows_n = -(-len(profiles) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.4 * cols, 3.9 * rows_n), squeeze=False, layout="constrained")
    for ax in axes.flat[len(profiles):]:
        ax.axis("off")
    for ax, profile in zip(axes.flat, profiles, strict=False):
        pk = peaks[profile]
        part = points[points["profile"] == profile]
        intensity = part["flops"] / part["dram_bytes"].clip(lower=1.0)
        lo = max(min(0.3, float(intensity.min()) / 2), 1e-2)
        hi = max(pk["flops"] / pk["bw"] * 4, float(intensity.max()) * 2)
        x = np.logspace(np.log10(lo), np.log10(hi), 200)
        ax.plot(x, np.minimum(pk["flops"], pk["bw"] * x) / 1e12, color="k", lw=1.4, label="roofline (datasheet)")
        ax.plot(x, np.minimum(pk["flops_eff"], pk["bw_eff"] * x) / 1e12, color="k", lw=1, ls="--",
                label="achievable")
        for method, style in METHOD_STYLE.items():
            sel = part[part["method"] == method]
            if sel.empty:
                continue
            xi = sel["flops"] / sel["dram_bytes"].clip(lower=1.0)
            yi = sel["flops"] / (sel["us"] * 1e-6) / 1e12
            ax.scatter(xi, yi, s=14, alpha=0.6, color=style["color"], marker=style["marker"],
                       label=style["label"].replace(", same depth", ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(profile, fontsize=10)
        ax.set_xlabel("arithmetic intensity (FLOP per DRAM byte)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    first = points.iloc[0]
    fig.suptitle(f"Roofline of each profile with the simulated decode steps of {first['model']} {first['sharing']} "
                 f"(one point per step; {first['workload']})")
    return save(fig, path)


# ------------------------------------------------------------------------------ validation

def parity(validation: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """Measured vs simulated time of every measured row (log-log), one panel per execution mode."""
    modes = [m for m, v in validation.items() if not v.empty]
    if not modes:
        return None
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 5.4), squeeze=False, layout="constrained")
    sections = ["layer", "group", "lmhead", "gemv", "ceiling", "decode"]
    markers = dict(zip(sections, "os^Dvp", strict=True))
    colors = dict(zip(sections, TAB10, strict=False))
    for ax, mode in zip(axes[0], modes, strict=True):
        v = validation[mode]
        lo = 0.7 * float(min(v["measured_us"].min(), v["simulated_us"].min()))
        hi = 1.4 * float(max(v["measured_us"].max(), v["simulated_us"].max()))
        x = np.array([lo, hi])
        ax.fill_between(x, x / 1.25, x * 1.25, color="tab:gray", alpha=0.15, label="±25%")
        ax.fill_between(x, x / 1.10, x * 1.10, color="tab:green", alpha=0.2, label="±10%")
        ax.plot(x, x, color="k", lw=0.8, label="simulated = measured")
        for section_key, part in v.groupby("section", sort=True):
            section = str(section_key)
            ape = float((abs(part["simulated_us"] - part["measured_us"]) / part["measured_us"]).mean())
            ax.scatter(part["measured_us"], part["simulated_us"], s=16, marker=markers.get(section, "o"),
                       color=colors.get(section, "k"), label=f"{section} ({len(part)} rows, MAPE {ape:.1%})", alpha=0.8)
        mape = float((abs(v["simulated_us"] - v["measured_us"]) / v["measured_us"]).mean())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured time per call (µs)")
        ax.set_ylabel("simulated time per call (µs)")
        ax.set_title(f"{mode} mode: {len(v)} rows, MAPE {mape:.1%}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Simulated vs measured {validation[modes[0]]['profile'].iloc[0]} decode-step times "
                 "(experiments/measured/h200/measured.csv)")
    return save(fig, path)
