"""The serving part of the report: latency-throughput curves and where SPEED stops paying off.

The study is a sweep of serving runs (`experiments/serving.yaml`); `serving_tables` reads its
results in the spec's order: `curves` (label `curves`: per profile, config and load, the achieved
tokens/s and the p50/p99 time per output token) and, from the `crossover` runs (saturated
throughput per profile, config and batch size), `speed_limit`: the smallest batch at which SPEED no
longer beats the unshared 12-layer decoder, and why.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.errors import UserError  # noqa: E402
from speedsim.report.markdown import md_table  # noqa: E402
from speedsim.report.style import METHOD_STYLE, TAB10, finish_panel, save  # noqa: E402
from speedsim.run import RunParams  # noqa: E402
from speedsim.serve.arrivals import load_fraction  # noqa: E402

CURVES = ["profile", "sharing", "method", "load", "rate_per_s", "tokens_per_s", "tpot_p50_us", "tpot_p99_us",
          "ttft_p99_us", "mean_batch"]
CROSSOVER = ["profile", "sharing", "method", "batch", "tokens_per_s", "tpot_p50_us", "util_compute", "util_dram",
             "token_passes_per_step"]


def serving_tables(runs: list[RunParams], results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The curves table and the speed-limit table of a serving sweep's `results`, in the order of its
    planned `runs` (the spec's: profile, config, then load or batch)."""
    by_key = {str(r["run_key"]): r for _, r in results.iterrows()}
    curves, crossover = [], []
    for run in runs:
        row = by_key.get(run.key)
        if row is None or row["status"] != "ok":  # the study is the report's: a failed run is an error
            raise UserError(f"serving run {run.key} ({run.label}, {run.profile}, {run.sharing} {run.serve_method}) "
                            f"failed: {'not run' if row is None else row['error']}", where="serving study")
        if run.label == "curves":
            load = load_fraction(run.arrivals or "")
            if load is None:
                raise UserError(f"a curves run's arrivals must be load:F, not {run.arrivals}", where="serving study")
            curves.append({"profile": run.profile, "sharing": run.sharing, "method": run.serve_method, "load": load,
                           **{c: float(row[c]) for c in CURVES[4:]}})
        elif run.label == "crossover":
            crossover.append({"profile": run.profile, "sharing": run.sharing, "method": run.serve_method,
                              "batch": run.max_batch, **{c: float(row[c]) for c in CROSSOVER[4:]}})
    return pd.DataFrame(curves, columns=CURVES), speed_limit(pd.DataFrame(crossover, columns=CROSSOVER))


def speed_limit(table: pd.DataFrame, deep: str = "12x1") -> pd.DataFrame:
    """Per profile and SPEED config, the smallest batch at which its saturated throughput no longer
    beats the unshared `deep` decoder's (NaN: it beats it at every batch studied), and why."""
    out = []
    deep_rows = table[(table["sharing"] == deep) & (table["method"] == "unshared")]
    base = {(str(r["profile"]), int(r["batch"])): float(r["tokens_per_s"]) for _, r in deep_rows.iterrows()}
    for (profile, sharing), part in table[table["method"] == "speed"].groupby(["profile", "sharing"], sort=True):
        lost = None
        for _, row in part.sort_values("batch").iterrows():
            other = base.get((str(profile), int(row["batch"])))
            if other is not None and row["tokens_per_s"] <= other:
                lost = row
                break
        why = ""
        if lost is not None:
            why = (f"compute-bound steps ({lost['util_compute']:.0%} of the matrix peak)"
                   if lost["util_compute"] > 0.5 else
                   f"{lost['token_passes_per_step'] / lost['batch']:.1f} token passes per request per step "
                   "(pipeline depth and flushes) against one for the unshared decoder")
        out.append({"profile": profile, "sharing": sharing,
                    "batch_where_speed_stops_winning": int(lost["batch"]) if lost is not None else None,
                    "why": why})
    return pd.DataFrame(out)


def serving_figure(table: pd.DataFrame, path: Path) -> Path | None:
    """p99 time per output token against achieved tokens/s, one panel per profile."""
    if table.empty:
        return None
    profiles = list(dict.fromkeys(table["profile"]))
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4.4), squeeze=False, layout="constrained")
    configs = list(dict.fromkeys(zip(table["sharing"], table["method"], strict=True)))
    colors = dict(zip(configs, TAB10, strict=False))
    for ax, profile in zip(axes[0], profiles, strict=True):
        part = table[table["profile"] == profile]
        for cfg in configs:
            rows = part[(part["sharing"] == cfg[0]) & (part["method"] == cfg[1])].sort_values("tokens_per_s")
            if rows.empty:
                continue
            ax.plot(rows["tokens_per_s"], rows["tpot_p99_us"] / 1e3, marker=METHOD_STYLE[cfg[1]]["marker"],
                    color=colors[cfg], label=f"{cfg[0]} {cfg[1]}")
        finish_panel(ax, profile, "achieved throughput (output tokens/s)", "p99 time per output token (ms)")
    fig.suptitle("Serving: p99 time per output token against throughput (real exit traces, rising arrival rate)")
    return save(fig, path)


def serving_section(curves: pd.DataFrame | None, limit: pd.DataFrame | None, figure: str | None,
                    spec_name: str) -> list[str]:
    """The report's serving section (empty if the study did not run)."""
    if curves is None or limit is None:
        return []
    rows = [{"profile": r["profile"], "SPEED config": r["sharing"],
             "batch where SPEED stops beating 12x1": "beyond the batches studied"
             if pd.isna(r["batch_where_speed_stops_winning"]) else int(r["batch_where_speed_stops_winning"]),
             "why": r["why"] or "-"} for _, r in limit.iterrows()]
    return ["## Serving: many requests on one device", "",
            f"`speedsim serve` over `{spec_name}`: requests drawn from the real exit traces arrive as a Poisson "
            "process, wait for KV memory and a batch slot, and decode in batched steps (SPEED requests at their "
            "own repeats; the weights read once per step for the whole batch); the step's results reach the host "
            "before the next step. Each curve raises the arrival rate.", "",
            f"![serving curves]({figure})" if figure else "", "",
            "Saturated throughput (every batch slot busy) against the unshared 12-layer decoder at the same batch "
            "size: the smallest batch at which SPEED's tokens/s no longer exceeds it.", "",
            md_table(rows, ["profile", "SPEED config", "batch where SPEED stops beating 12x1", "why"]), "",
            "**Reading.** At batch 1 SPEED's pipelined steps beat the deep unshared decoder, as in the single-request "
            "figures; as the batch grows the unshared decoder amortises its weight reads over the batch too, while "
            "each SPEED request keeps several token passes in flight per step (and pays for its flushes), so its "
            "advantage shrinks and then reverses.", ""]
