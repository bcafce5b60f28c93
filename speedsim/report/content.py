"""What the report shows: the study's tables, gathered once by `build`, read by the figures and the markdown."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class ReportData:
    """Everything the figures and the markdown read."""

    study: pd.DataFrame
    paper: pd.DataFrame | None
    paper_note: str
    validation: dict[str, pd.DataFrame]
    mape: dict[str, dict[str, float]]
    steps: pd.DataFrame
    peaks: dict[str, dict[str, float]]
    specs: list[str]
    noise: dict[str, float] = field(default_factory=dict)   # median run-vs-rerun difference of measured rows, per mode
    cpu: pd.DataFrame | None = None                          # cpu-host validation, one row per measured row
    cpu_mape: dict[str, float] = field(default_factory=dict)
    decodes: pd.DataFrame | None = None                      # H200 whole decodes (closed loop), one row per decode
    decodes_mape: dict[str, float] = field(default_factory=dict)
    decodes_fitted: tuple[str, ...] = ()      # the sharings whose rows h200's host.loop_us was fitted on
    decodes_loop_us: float = float("nan")
    serving: pd.DataFrame | None = None                      # latency-throughput curves (speedsim serve)
    serving_limit: pd.DataFrame | None = None                # where SPEED stops beating 12x1, per profile
    design: pd.DataFrame | None = None                       # design-space grid: SPEED 4x3 vs 12x1 on what-ifs
    design_causes: pd.DataFrame | None = None                # time by cause at each panel's extreme points
    design_sensitivity: pd.DataFrame | None = None           # elasticities of SPEED's time, per profile
    design_full: bool = False                                # whether the design-space grid was the whole one
    rivals: pd.DataFrame | None = None                       # SPEED against speculative decoding, per profile
    rivals_load: pd.DataFrame | None = None                  # ... served, per batch size
    scale: pd.DataFrame | None = None                        # Llama-sized shared models on 1-8 GPUs
    published: pd.DataFrame | None = None                    # published batch-1 decodes, simulated as deployed
    published_mape: dict[str, float] = field(default_factory=dict)  # ... MAPE in all, per GPU, per TP degree
    published_kernels: pd.DataFrame | None = None            # published batch-1 GEMV kernel times, simulated
    figures: dict[str, str] = field(default_factory=dict)


def ok(df: pd.DataFrame, label: str | None = None) -> pd.DataFrame:
    """The rows of a results table that ran (status ok), of one block `label` if given."""
    out = df[df["status"] == "ok"]
    return out[out["label"] == label] if label is not None else out


def profile_order(df: pd.DataFrame, preferred: tuple[str, ...] = ("h200", "rtx-a5000")) -> list[str]:
    """The profiles in `df`, the preferred ones first, then the rest by name."""
    names = sorted(df["profile"].unique())
    return [p for p in preferred if p in names] + [p for p in names if p not in preferred]


def pick(df: pd.DataFrame, col: str = "per_token_us", **where) -> float:
    """The `col` value of the first row matching every `where` column == value; NaN if none."""
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel[col].iloc[0]) if len(sel) else float("nan")
