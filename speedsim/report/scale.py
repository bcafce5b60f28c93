"""The report's "Models at scale" section: SPEED on Llama-3-8B- and Llama-2-70B-sized shared models, 1 to 8 GPUs.

The study is one sweep (`experiments/scale.yaml`; its `reduced:` form in the default report): shared models
with the real models' width, heads, grouped-query attention and vocabulary (the built-in `llama3-8b` and
`llama2-70b` specs) at about their depth as UxR, their exits from synthetic traces fitted to the shipped 4x3
and 2x6 traces, on the A100, H100 and H200 profiles with NVLink:

- blocks `tp`, `tp70`, `unshared70`: SPEED and its baselines under tensor parallelism over 1, 2, 4, 8 GPUs
  (the 70B-sized unshared decoder, 140 GB, from 2 GPUs on);
- block `repeats`: SPEED's pipeline over its repeats (one GPU per repeat), alone and with tp 2 per stage.

`scale_table` reduces it to one row per (profile, model, sharing, method, deployment): time per token and the
GPUs it took. `published_table` is the published batch-1 measurements of the real models (as `speedsim
validate` simulates them), shown beside.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim.report.markdown import md_table, pct, times, us  # noqa: E402
from speedsim.report.studies import run_study_sweep  # noqa: E402
from speedsim.report.style import save  # noqa: E402

STUDY = "scale"
TABLE = ["profile", "model", "sharing", "method", "deployment", "gpus", "tp", "pp", "per_token_us",
         "speedup_vs_unshared"]
METHODS = {"speed": "SPEED", "unshared": "unshared", "sequential": "sequential"}


def run_scale(spec: Path | None, full: bool, cache: Path, workers: int, scheduler: str | None, progress: bool,
              cache_flag: str = "--cache") -> pd.DataFrame | None:
    """The study's table (`scale_table`); None without its spec."""
    study = run_study_sweep(spec, STUDY, full, cache, workers, scheduler, progress, cache_flag)
    if study is None:
        return None
    return scale_table(study[2])


def _int(value: object, default: int = 1) -> int:
    return default if value is None or value != value else int(value)  # type: ignore[call-overload]


def scale_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per profile, model, sharing, method and deployment (the repeat pipeline: `pp R`, with its tp);
    the speedup over the unshared decoder of the same depth at the same tensor-parallel degree, where it ran."""
    ok = results[results["status"] == "ok"].copy()
    rows = []
    seen = set()
    for _, r in ok.iterrows():
        tp, pp = _int(r.get("tp")), _int(r.get("pp"))
        repeats = pp > 1
        deployment = (f"pp {pp} over repeats" + (f" x tp {tp}" if tp > 1 else "")) if repeats else f"tp {tp}"
        key = (r["profile"], r["model"], r["sharing"], r["method"], deployment)
        if key in seen:  # (SPEED of the 70B-sized model runs in two blocks: the same run)
            continue
        seen.add(key)
        rows.append({"profile": r["profile"], "model": r["model"], "sharing": r["sharing"],
                     "method": METHODS.get(str(r["method"]), str(r["method"])), "deployment": deployment,
                     "gpus": tp * pp, "tp": tp, "pp": pp, "per_token_us": float(r["per_token_us"])})
    table = pd.DataFrame(rows, columns=TABLE[:-1])
    base = table[table["method"] == "unshared"].set_index(["profile", "model", "sharing", "tp"])["per_token_us"]
    lookup = {k: float(v) for k, v in base.items()}
    table["speedup_vs_unshared"] = [
        lookup.get((r["profile"], r["model"], r["sharing"], r["tp"]), np.nan) / float(r["per_token_us"])
        if r["pp"] == 1 else np.nan for _, r in table.iterrows()]
    order = {p: i for i, p in enumerate(("a100-80gb", "h100-sxm", "h200"))}
    table["_p"] = table["profile"].map(lambda p: order.get(p, len(order)))
    table["_m"] = table["method"].map({"SPEED": 0, "sequential": 1, "unshared": 2})
    return (table.sort_values(["_p", "model", "sharing", "_m", "pp", "tp"], kind="stable")
            .drop(columns=["_p", "_m"]).reset_index(drop=True))


def scale_figure(table: pd.DataFrame, path: Path) -> Path | None:
    """Per-token time against GPUs: one panel per model and profile; tensor parallelism as lines (SPEED per
    sharing, the unshared decoder), the repeat pipeline as points."""
    if table.empty:
        return None
    models = list(dict.fromkeys(table["model"]))
    profiles = list(dict.fromkeys(table["profile"]))
    fig, axes = plt.subplots(len(models), len(profiles), figsize=(3.4 * len(profiles), 3.0 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        for j, profile in enumerate(profiles):
            ax = axes[i][j]
            part = table[(table["model"] == model) & (table["profile"] == profile)]
            colour = {sh: f"C{k}" for k, sh in enumerate(sorted(set(part["sharing"]),
                                                                  key=lambda x: int(x.split("x")[1])))}
            for (sharing, method), line in part[part["pp"] == 1].groupby(["sharing", "method"], sort=False):
                if method == "sequential":
                    continue
                line = line.sort_values("gpus")
                ax.plot(line["gpus"], line["per_token_us"] / 1e3, marker="o", ms=3, color=colour[sharing],
                        label=f"SPEED {sharing}" if method == "SPEED" else f"unshared, depth of {sharing}",
                        ls="--" if method == "unshared" else "-", alpha=0.6 if method == "unshared" else 1.0)
            rep = part[part["pp"] > 1]
            for sharing, pts in rep.groupby("sharing", sort=False):
                ax.scatter(pts["gpus"], pts["per_token_us"] / 1e3, marker="D", s=24, zorder=3, color=colour[sharing],
                           edgecolor="black", linewidth=0.5, label=f"SPEED {sharing}, repeat pipeline")
            ax.set_xscale("log", base=2)
            ax.set_xticks([1, 2, 3, 4, 6, 8], ["1", "2", "3", "4", "6", "8"])
            ax.set_title(f"{model}-sized, {profile}", fontsize=8)
            ax.set_xlabel("GPUs", fontsize=8)
            ax.set_ylabel("ms per token", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, path)


def scale_section(table: pd.DataFrame | None, figure: str | None, published: pd.DataFrame | None, spec_name: str,
                  full: bool) -> list[str]:
    """The section (empty without the study)."""
    if table is None or table.empty:
        return []
    form = "the whole study" if full else "its reduced form; `speedsim report --full` decodes more sequences"
    lines = ["## Models at scale: Llama-3-8B- and Llama-2-70B-sized shared models on 1 to 8 GPUs", "",
             f"`{spec_name}` ({form}), graph mode, bf16. Shared models with the real models' width, heads, "
             "grouped-query attention (8 key/value heads) and vocabulary at about their depth: 11x3 and 5x6 for "
             "the 32-layer Llama-3-8B, 27x3 and 13x6 for the 80-layer Llama-2-70B, their exits from synthetic "
             "traces fitted to the shipped 4x3 and 2x6 traces; the unshared and sequential baselines at the same "
             "depth. Tensor parallelism (`--tp`) splits heads, FFN and vocabulary over NVLink (two all-reduces a "
             "layer, NCCL's ring latency); SPEED's repeat pipeline (`--pp R --pp-over repeats`) puts each repeat "
             "on a GPU of its own, every GPU holding the U shared layers. Times are per output token, prefill "
             "excluded; speedups are over the unshared decoder of the same depth at the same tensor-parallel "
             "degree.", ""]
    if figure:
        lines += [f"![models at scale]({figure})", ""]
    rows = []
    for (profile, model, sharing), part in table.groupby(["profile", "model", "sharing"], sort=False):
        for method, m in part.groupby("method", sort=False):
            cells: dict[str, str] = {}
            for _, r in m.iterrows():
                label = f"{r['gpus']} GPU" + ("s" if r["gpus"] > 1 else "") + (" (repeats)" if r["pp"] > 1 else "")
                cells[label] = us(float(r["per_token_us"])) + (
                    f" ({times(float(r['speedup_vs_unshared']))})" if r["speedup_vs_unshared"] == r["speedup_vs_unshared"]
                    and method == "SPEED" else "")
            rows.append({"profile": profile, "model": f"{model}-sized {sharing}", "method": method, **cells})
    cols = ["profile", "model", "method"]
    for row in rows:
        cols += [k for k in row if k not in cols]
    head, rest = cols[:3], cols[3:]
    rest.sort(key=lambda c: (int(c.split()[0]), "repeats" in c))
    lines += ["µs per token (SPEED: its speedup over the unshared decoder in brackets); blank: not run (the "
              "70B-sized unshared decoder on one GPU does not fit).", "",
              md_table(rows, head + rest), ""]
    lines += ["**Reading.**", "", *_reading(table), ""]
    lines += _published_lines(published)
    return lines


def _reading(table: pd.DataFrame) -> list[str]:
    """What tensor parallelism buys SPEED, and where its repeat pipeline stands against it, from the table."""
    out = []
    speed = table[table["method"] == "SPEED"]
    for (profile, model), part in speed.groupby(["profile", "model"], sort=False):
        tp = part[part["pp"] == 1]
        for sharing, s in tp.groupby("sharing", sort=False):
            s = s.sort_values("gpus")
            one, most = s.iloc[0], s.iloc[-1]
            if len(s) > 1:
                gain = float(one["per_token_us"]) / float(most["per_token_us"])
                sp = s.dropna(subset=["speedup_vs_unshared"])
                trend = ""
                if len(sp) > 1:
                    first, last = sp.iloc[0], sp.iloc[-1]
                    trend = (f"; its speedup over the unshared decoder goes from {times(float(first['speedup_vs_unshared']))}"
                             f" on {int(first['gpus'])} to {times(float(last['speedup_vs_unshared']))} on "
                             f"{int(last['gpus'])}")
                out.append(f"- **{profile}, {model}-sized {sharing}**: {int(most['gpus'])} GPUs make SPEED "
                           f"{gain:.2f}x faster than {int(one['gpus'])}{trend}.")
        rep = part[part["pp"] > 1]
        verdicts = []
        for _, r in rep.iterrows():
            same = tp[tp["sharing"] == r["sharing"]]
            fewer = same[same["gpus"] <= r["gpus"]].sort_values("per_token_us", kind="stable")
            if fewer.empty:
                continue
            best = fewer.iloc[0]
            ratio = float(r["per_token_us"]) / float(best["per_token_us"])
            word = "beats" if ratio < 1 else "loses to"
            verdicts.append(f"{r['sharing']} on {r['gpus']} GPUs ({r['deployment']}) {word} tensor parallelism on "
                            f"{int(best['gpus'])} ({ratio:.2f}x its time)")
        if verdicts:
            out.append(f"- **{profile}, {model}-sized, the repeat pipeline**: " + "; ".join(verdicts) + ".")
    if out:
        out.append("- Why: at batch 1 a decode step streams the shared layers' weights once whatever the number of "
                   "tokens in flight; the repeat pipeline gives each repeat a GPU but every GPU still streams all U "
                   "layers, so it saves only the other tokens' KV reads and compute, while tensor parallelism divides "
                   "every GPU's weight stream by the degree. The pipeline's one saving, no all-reduce inside a layer, is "
                   "smaller on these NVLink nodes than the weight stream tensor parallelism divides; and it holds "
                   "the shared layers on every GPU.")
    return out


def _published_lines(published: pd.DataFrame | None) -> list[str]:
    if published is None or published.empty:
        return []
    rows = [{"GPU": r["profile"], "model": r["model"], "deployment": r["deployment"], "framework": r["framework"],
             "measured µs/token": us(float(r["measured_us"])), "simulated": us(float(r["simulated_us"])),
             "error": pct(float(r["ape"]))} for _, r in published.iterrows()]
    return ["### The real models, published", "",
            "Published batch-1 decodes of the unshared real models (`experiments/measured/published/`, their sources "
            "there), each simulated as deployed: nothing fitted to them. Errors and their reasons: "
            "[validation.md](validation.md).", "",
            md_table(rows, ["GPU", "model", "deployment", "framework", "measured µs/token", "simulated", "error"]), ""]
