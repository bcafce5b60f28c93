"""The report's "SPEED and its rivals" section: SPEED against greedy speculative decoding, per profile.

The study is one sweep (`experiments/rivals.yaml`; its `reduced:` form in the default report): on every
profile, t5base dimensions,

- block `shared`: the shared 4x3 and 2x6 models on their shipped exit traces, SPEED and self-speculation
  from an early exit of the same model (each draft exit a run; the window auto);
- block `draft`: the 12-layer model (12x1) decoded greedily (its `sequential` baseline) and by draft-model
  speculation with a 2-layer draft of the same width, acceptance i.i.d. at published greedy rates.

`rivals_table` reduces it to one row per (profile, method): SPEED of each shared model, the best
self-speculation of each shared model (the exit and window with the least time per token), draft-model
speculation at each acceptance rate, and the 12x1 greedy decoder every speedup is measured against.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from speedsim import defaults  # noqa: E402
from speedsim.report.markdown import md_table, times  # noqa: E402
from speedsim.report.studies import run_study_sweep  # noqa: E402
from speedsim.report.style import save  # noqa: E402

TABLE = ["profile", "method", "model", "per_token_us", "speedup_vs_greedy", "draft_exit", "gamma", "alpha",
         "acceptance_rate", "tokens_per_iteration", "test_rougeL", "limit"]
DRAFT_DEPTH, TARGET_DEPTH = 2, 12   # the draft block's draft and target depths (experiments/rivals.yaml)


STUDY = "rivals"


def run_rivals(spec: Path | None, full: bool, cache: Path, workers: int, scheduler: str | None, progress: bool,
               cache_flag: str = "--cache") -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The rivals table (`rivals_table`) and the table under load (`load_table`) of the study; Nones without
    its spec."""
    study = run_study_sweep(spec, STUDY, full, cache, workers, scheduler, progress, cache_flag)
    if study is None:
        return None, None
    _, runs, results = study
    order = list(dict.fromkeys(r.profile for r in runs))
    return rivals_table(results, order), load_table(results, order)


LOAD = ["profile", "method", "model", "max_batch", "mean_batch", "tokens_per_s", "tpot_p50_us", "throughput_vs_greedy"]


def _serving(results: pd.DataFrame) -> pd.Series:
    """Which rows are serving runs (their `requests` set)."""
    return results["requests"].notna() if "requests" in results else pd.Series(False, index=results.index)


def load_table(results: pd.DataFrame, profiles: list[str] | None = None) -> pd.DataFrame | None:
    """Per profile, method and batch: tokens per second with every batch slot busy, the median time per
    output token, and the throughput over the 12x1 model served greedily at the same batch."""
    ok = results[(results["status"] == "ok") & _serving(results)].copy()
    if ok.empty:
        return None
    ok["max_batch"] = ok["max_batch"].fillna(defaults.MAX_BATCH)  # (a run at the default leaves it out)
    rows = []
    for profile in profiles or list(dict.fromkeys(ok["profile"])):
        part = ok[ok["profile"] == profile]
        for batch in sorted(set(part["max_batch"])):
            at = part[part["max_batch"] == batch]
            greedy = at[at["method"] == "unshared"]
            if greedy.empty:
                continue
            base = float(greedy["tokens_per_s"].iloc[0])
            for _, r in at.iterrows():
                method = {"unshared": "greedy", "speed": "SPEED"}.get(str(r["method"]), str(r["method"]))
                model = f"12x1 + {DRAFT_DEPTH}-layer draft" if method == "specdec" else str(r["sharing"])
                rows.append({"profile": profile, "method": method, "model": model, "max_batch": int(batch),
                             "mean_batch": float(r["mean_batch"]), "tokens_per_s": float(r["tokens_per_s"]), "tpot_p50_us": float(r["tpot_p50_us"]),
                             "throughput_vs_greedy": float(r["tokens_per_s"]) / base})
    table = pd.DataFrame(rows, columns=LOAD)
    order = {m: i for i, m in enumerate(("greedy", "SPEED", "selfspec", "specdec"))}
    table["_p"] = table["profile"].map({p: i for i, p in enumerate(dict.fromkeys(table["profile"]))})
    table["_m"] = table["method"].map(order)
    return table.sort_values(["_p", "_m", "model", "max_batch"], kind="stable").drop(columns=["_p", "_m"]) \
        .reset_index(drop=True)


def _num(row: pd.Series, key: str) -> float:
    value = row.get(key, np.nan)
    return float(value) if value is not None and value == value else float("nan")


def _row(profile: str, base: float, r: pd.Series, method: str, model: str, alpha: float = float("nan")) -> dict:
    limit = r.get("limit")
    return {"profile": profile, "method": method, "model": model, "per_token_us": float(r["per_token_us"]),
            "speedup_vs_greedy": base / float(r["per_token_us"]),
            "draft_exit": _num(r, "draft_exit") if method == "selfspec" else float("nan"),
            "gamma": _num(r, "gamma_simulated"), "alpha": alpha, "acceptance_rate": _num(r, "acceptance_rate"),
            "tokens_per_iteration": _num(r, "tokens_per_iteration"), "test_rougeL": _num(r, "test_rougeL"),
            "limit": 0 if limit is None or limit != limit else int(limit)}


def rivals_table(results: pd.DataFrame, profiles: list[str] | None = None) -> pd.DataFrame:
    """One row per profile and method (see the module docstring), the profiles in the order given (default:
    as the results list them)."""
    ok = results[(results["status"] == "ok") & ~_serving(results)]
    rows = []
    for profile in profiles or list(dict.fromkeys(ok["profile"])):
        part = ok[ok["profile"] == profile]
        greedy = part[(part["sharing"] == "12x1") & (part["method"] == "sequential")]
        if greedy.empty:
            continue
        base = float(greedy["per_token_us"].iloc[0])

        g = greedy.iloc[0]
        rows.append(_row(profile, base, g, "greedy", "12x1"))
        for sharing in ("4x3", "2x6"):
            shared = part[part["sharing"] == sharing]
            speed = shared[shared["method"] == "speed"]
            if not speed.empty:
                rows.append(_row(profile, base, speed.iloc[0], "SPEED", sharing))
            spec = shared[shared["method"] == "selfspec"].copy()
            if not spec.empty:
                spec["draft_exit"] = spec["draft_exit"].fillna(0.0)  # (the default exit's column is empty)
                best = spec.sort_values(["per_token_us", "draft_exit"], kind="stable").iloc[0]
                rows.append(_row(profile, base, best, "selfspec", sharing))
        draft = part[(part["sharing"] == "12x1") & (part["method"] == "specdec")]
        for _, r in draft.sort_values("draft_accept", kind="stable").iterrows():
            rows.append(_row(profile, base, r, "specdec", f"12x1 + {DRAFT_DEPTH}-layer draft", _num(r, "draft_accept")))
    return pd.DataFrame(rows, columns=TABLE)


def formula_speedup(row: pd.Series) -> float:
    """The speedup Leviathan et al.'s analysis gives a draft-model row: E / (g c + 1), E its tokens per
    iteration, g its window and c the draft's cost as a share of a target step by depth (2 of 12 layers):
    what the row would reach if every step cost its layers' share and a verify of g + 1 tokens one step."""
    c = DRAFT_DEPTH / TARGET_DEPTH
    return float(row["tokens_per_iteration"]) / (float(row["gamma"]) * c + 1.0)


def rivals_figure(table: pd.DataFrame, path: Path) -> Path | None:
    """Speedup over the 12-layer greedy decoder, per profile, of every method of the table (the draft model's
    at its best α)."""
    if table.empty:
        return None
    methods = [(m, mod) for m, mod in dict.fromkeys(zip(table["method"], table["model"], strict=True)) if m != "greedy"]
    profiles = list(dict.fromkeys(table["profile"]))
    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    width = 0.8 / max(len(methods), 1)
    for i, (method, model) in enumerate(methods):
        part = table[(table["method"] == method) & (table["model"] == model)]
        values = []
        for p in profiles:
            cell = part[part["profile"] == p]
            values.append(float(cell["speedup_vs_greedy"].max()) if len(cell) else np.nan)
        label = f"{method} {model}" if method != "specdec" else "specdec (12x1, 2-layer draft), best alpha"
        ax.bar(np.arange(len(profiles)) + (i - (len(methods) - 1) / 2) * width, values, width, label=label)
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(profiles)), profiles)
    ax.set_ylabel("speedup over 12x1 greedy")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    return save(fig, path)


def rivals_section(table: pd.DataFrame | None, figure: str | None, spec_name: str, full: bool,
                   load: pd.DataFrame | None = None) -> list[str]:
    """The section (empty without the study)."""
    if table is None or table.empty:
        return []
    limit = int(table["limit"].max())
    workload = (f"the first {limit} sequences of each shipped exit trace" if limit else "the whole shipped exit traces")
    form = "the whole study" if full else "its reduced form; `speedsim report --full` runs the whole traces"
    lines = ["## SPEED and its rivals: speculative decoding on the same hardware", "",
             f"`{spec_name}` ({form}, {workload}), t5base dimensions, graph mode. SPEED on the shared 4x3 and 2x6 "
             "models; self-speculation on the same models (drafts from an early exit, repeats 0..E of the shared "
             "layers, verified by the full depth, the drafts' early repeats reused; the exit and window with the "
             "least time per token); draft-model speculation with the 12-layer model as target and a 2-layer draft "
             "of the same width, its drafts accepted i.i.d. at the greedy rates Leviathan et al. (2023, arXiv "
             "2211.17192, Table 3, T=0) measured for T5-XXL with T5-small drafts (0.65 CNN/DM, 0.75 En-De) and a "
             "T5-large draft (0.82 En-De): no trained draft/target pair of ours exists yet (it needs the GPU run of "
             "experiments/models/README.md). Every speedup is over the 12-layer model decoded greedily on the same "
             "profile; the 12x1 model has one exit, so it has no self-speculation. Quality: the test ROUGE-L each "
             "trained model measured (speculation is lossless: the target's).", ""]
    if figure:
        lines += [f"![SPEED and its rivals]({figure})", ""]
    rows = []
    for _, r in table.iterrows():
        cfg = []
        if r["method"] == "selfspec":
            cfg.append(f"exit {int(r['draft_exit'])}")
        if r["gamma"] == r["gamma"]:
            cfg.append(f"γ {int(r['gamma'])}")
        if r["alpha"] == r["alpha"]:
            cfg.append(f"α {r['alpha']:.2f}")
        rows.append({"profile": r["profile"], "method": r["method"], "model": r["model"],
                     "µs/token": f"{r['per_token_us']:,.1f}", "speedup": times(float(r["speedup_vs_greedy"])),
                     "config": ", ".join(cfg),
                     "tokens/iteration": f"{r['tokens_per_iteration']:.2f}" if r["tokens_per_iteration"] == r["tokens_per_iteration"] else "",
                     "test ROUGE-L": f"{r['test_rougeL']:.3f}" if r["test_rougeL"] == r["test_rougeL"] else ""})
    lines += [md_table(rows, list(rows[0])), ""]
    lines += ["**Reading.**", "", *_reading(table), ""]
    lines += _load_lines(load)
    return lines


def _load_lines(load: pd.DataFrame | None) -> list[str]:
    """Under load: tokens per second per batch size, each method's and its ratio to greedy, and who wins."""
    if load is None or load.empty:
        return []
    batches = sorted(set(load["max_batch"]))
    rows = []
    for (profile, method, model), part in load.groupby(["profile", "method", "model"], sort=False):
        cells = {f"batch {b}": (f"{float(c['tokens_per_s'].iloc[0]):,.0f} ({float(c['throughput_vs_greedy'].iloc[0]):.2f}x; "
                                f"{float(c['mean_batch'].iloc[0]):.1f})"
                                if len(c := part[part["max_batch"] == b]) else "") for b in batches}
        rows.append({"profile": profile, "method": method, "model": model, **cells})
    profiles = ", ".join(dict.fromkeys(load["profile"]))
    lines = ["### Under load", "",
             f"The same methods served on {profiles} (`speedsim serve`, continuous batching; all requests arrive at "
             "once, four times the batch limit of them, or eight at batch 1; each speculative request takes its next "
             "draft or verify step every server step, the drafting requests batched through the drafter and the "
             "verifying ones through the target): tokens per second over the whole run, and in brackets the ratio "
             "to the 12x1 model served greedily at the same batch limit and the mean batch the run kept. "
             "Self-speculation from exit 2 of the 2x6 model, the draft model at α 0.75; the window of each is the "
             "one that decodes the first 8 requests fastest alone (a batch is not tuned for).", "",
             md_table(rows, list(rows[0])), ""]
    for profile, part in load.groupby("profile", sort=False):
        wins = []
        for b in batches:
            at = part[part["max_batch"] == b].sort_values("tokens_per_s", ascending=False, kind="stable")
            if len(at):
                top = at.iloc[0]
                wins.append(f"batch {b}: {top['method']} {top['model']} ({float(top['throughput_vs_greedy']):.2f}x)")
        spec = part[part["method"].isin(["selfspec", "specdec"])]
        trend = ""
        if len(spec) and len(batches) > 1:
            best = [float(spec[spec["max_batch"] == b]["throughput_vs_greedy"].max()) for b in batches]
            path = " -> ".join(f"{v:.2f}x" for v in best)
            falls = all(a > b for a, b in zip(best, best[1:], strict=False))
            trend = (f"; speculation's best ratio to greedy, batch {batches[0]} to {batches[-1]}: {path}"
                     + (" (falling: greedy gains more from batching than speculation does)" if falls else ""))
        lines.append(f"- **{str(profile)}**: fastest at " + ", ".join(wins) + trend + ".")
    return lines + [""]


def _reading(table: pd.DataFrame) -> list[str]:
    """Which method wins where, and by how much, from the table; where the hardware departs from the
    paper's formula for the draft-model rows."""
    out = []
    for profile in dict.fromkeys(table["profile"]):
        part = table[(table["profile"] == profile) & (table["method"] != "greedy")]
        best = part.sort_values("per_token_us", kind="stable").iloc[0]
        speed = part[part["method"] == "SPEED"].sort_values("per_token_us", kind="stable")
        rivals = part[part["method"] != "SPEED"].sort_values("per_token_us", kind="stable")
        if speed.empty or rivals.empty:
            continue
        s, r = speed.iloc[0], rivals.iloc[0]
        lead = float(r["per_token_us"]) / float(s["per_token_us"])
        who = (f"SPEED {s['model']} is fastest ({times(float(s['speedup_vs_greedy']))} over greedy), "
               f"{lead - 1:.1%} less time per token than the best rival, {r['method']} {r['model']} "
               f"({times(float(r['speedup_vs_greedy']))})"
               if best["method"] == "SPEED" else
               f"{best['method']} {best['model']} is fastest ({times(float(best['speedup_vs_greedy']))} over greedy), "
               f"{1 / lead - 1:.1%} less time per token than SPEED {s['model']} ({times(float(s['speedup_vs_greedy']))})")
        draft = part[part["method"] == "specdec"]
        gap = ""
        if not draft.empty:
            d = draft.sort_values("alpha", kind="stable").iloc[-1]
            f, s_ = formula_speedup(d), float(d["speedup_vs_greedy"])
            c_eff = (float(d["tokens_per_iteration"]) / s_ - 1.0) / float(d["gamma"])
            gap = (f"; the draft model at α {d['alpha']:.2f} reaches {times(s_)} where the paper's E/(γc+1) with "
                   f"c = {DRAFT_DEPTH}/{TARGET_DEPTH} (its share of the layers) gives {times(f)} ({s_ / f - 1:+.0%}): "
                   f"the simulated speedup implies c = {c_eff:.2f} of a greedy step per draft token (verify included), "
                   f"{c_eff / (DRAFT_DEPTH / TARGET_DEPTH):.1f}x its share of the layers")
        out.append(f"- **{profile}**: {who}{gap}.")
    return out
