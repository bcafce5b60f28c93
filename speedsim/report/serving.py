"""The serving part of the report: latency-throughput curves and where SPEED stops paying off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.report.markdown import md_table  # noqa: E402
from speedsim.report.style import METHOD_STYLE, TAB10, save  # noqa: E402


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
        ax.set_title(profile)
        ax.set_xlabel("achieved throughput (output tokens/s)")
        ax.set_ylabel("p99 time per output token (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
