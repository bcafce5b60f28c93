"""reports/README.md: the figures with a short reading of each, every number taken from the data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from speedsim.report.figures import ok
from speedsim.report.serving import serving_section
from speedsim.simulate.schema import MISPREDICT, OUT_LEN, PAPER, PAPER_EQUAL_LENGTH, WEIGHT_BUDGET

if TYPE_CHECKING:
    from speedsim.report.build import ReportData


def _md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _val(df: pd.DataFrame, **where) -> float:
    """The single per_token_us (or `col`) of the rows matching `where`; NaN if none."""
    col = where.pop("col", "per_token_us")
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel[col].iloc[0]) if len(sel) else float("nan")


def _us(x: float) -> str:
    return "n/a" if x != x else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def _x(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}x"


def _int(x) -> str:
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return ""


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"


# ------------------------------------------------------------------------------ sections

def validation_section(data: ReportData) -> list[str]:
    sections = sorted(set().union(*(set(v["section"]) for v in data.validation.values())))
    rows = []
    for name in ["all", *sections]:
        row = {"section": name}
        for mode, table in data.validation.items():
            part = table if name == "all" else table[table["section"] == name]
            row[f"rows ({mode})"] = len(part)
            row[f"MAPE {mode}"] = _pct(data.mape[mode].get(name, float("nan")))
        rows.append(row)
    cols = ["section"] + [f"{k} ({m})" if k == "rows" else f"{k} {m}" for m in data.validation for k in ("rows", "MAPE")]
    within = []
    for mode, v in data.validation.items():
        err = (v["simulated_us"] - v["measured_us"]).abs() / v["measured_us"]
        within.append(f"{mode} mode: {(err <= 0.10).mean():.0%} of rows within ±10% and {(err <= 0.25).mean():.0%} "
                      f"within ±25%")
    return [
        "## Simulator validation against the measured H200 decode steps",
        "",
        "Every row of `experiments/measured/h200/measured.csv` (one decoder layer with n tokens, shared group "
        "sequential / pipelined / unshared, LM head, GEMV, bandwidth ceilings) simulated on the `h200` profile. "
        "MAPE = mean absolute percentage error of the simulated median time per call. "
        "Same numbers as `speedsim validate --profile h200 --mode graph|eager`.",
        "",
        _md_table(rows, cols),
        "",
        f"![measured vs simulated]({data.figures['parity']})" if "parity" in data.figures else "",
        "",
        f"**Reading.** Points on the diagonal are exact; the bands are ±10% and ±25%. {'; '.join(within)}. "
        "Eager mode adds the host's launch overhead, which the simulator models as one fitted constant per "
        "framework op, so its error is larger than graph mode's, where the device timing dominates (and the "
        f"measured eager rows themselves differ by {data.noise.get('eager', float('nan')):.0%} median between two runs).",
        "",
    ]


PAPER_CONFIGS = ("12x1", "4x1", "4x3", "2x6")


def _paper_rows(p: pd.DataFrame) -> list[dict]:
    """The comparison table: per profile and config, SPEED (or unshared) and shared-sequential."""
    rows = []
    for profile in ("rtx-a5000", "h200"):
        part = p[p["profile"] == profile]
        deep = _val(part, sharing="12x1", method="speed")
        for cfg in PAPER_CONFIGS:
            for method in ("speed", "sequential"):
                sel = part[(part["sharing"] == cfg) & (part["method"] == method)]
                if sel.empty or (method == "sequential" and cfg.endswith("x1")):
                    continue
                r = sel.iloc[0]
                name = ("unshared" if cfg.endswith("x1") else "SPEED") if method == "speed" else "shared sequential"
                rows.append({"profile": profile, "config": cfg, "decoding": name,
                             "µs/token": _us(r["per_token_us"]), "speedup vs 12x1": _x(deep / r["per_token_us"]),
                             "first-exit miss": _pct(r["first_exit_miss"]) if method == "speed" and r["R"] > 1 else "",
                             "tokens": int(r["tokens"]), "val loss (nats/token)": f"{r['val_loss']:.3f}"
                             if r["val_loss"] == r["val_loss"] else "n/a",
                             "test ROUGE-L": f"{r['test_rougeL']:.3f}" if r["test_rougeL"] == r["test_rougeL"] else "n/a"})
    return rows


def _paper_quality(p: pd.DataFrame) -> str:
    """What the trained models' measured quality says, against the paper's claim."""
    quality = []
    speed_rows = p[(p["method"] == "speed") & (p["profile"] == p["profile"].iloc[0])] if len(p) else p
    for cfg in PAPER_CONFIGS:
        sel = speed_rows[speed_rows["sharing"] == cfg]
        if len(sel) and sel["test_rougeL"].iloc[0] == sel["test_rougeL"].iloc[0]:
            quality.append(f"{cfg} {sel['test_rougeL'].iloc[0]:.3f}")
    scores = {q.split()[0]: float(q.split()[1]) for q in quality}
    best = max(scores, key=lambda k: scores[k]) if scores else "12x1"
    ranking = ("" if best == "12x1" else
               f" Here the 12-layer unshared model does not score best ({best} does): these "
               "small models, trained for about 1.5 minutes each on one GPU (under 2,000 steps), are far from the "
               "paper's C4-pretrained ones, and at this stage of training the deeper decoders are still behind the "
               "shallow one, so their quality ranking is not the paper's (details in `reports/models.md`).")
    return (f"Measured test ROUGE-L of the trained models: {', '.join(quality)}; the SPEED paper's claim is "
            "that the shared models keep much of the deep decoder's quality at close to the shallow "
            "decoder's latency." + ranking if quality else
            "The trained models' quality files (`experiments/models/results/`) are not shipped yet, so "
            "the quality columns are empty.")


def paper_section(data: ReportData) -> list[str]:
    head = ["## The SPEED paper's comparison on real exit traces", ""]
    if data.paper is None:
        return head + [
            "Not available yet: the trained models' exit traces (`experiments/traces/*.jsonl.gz`) are not in the "
            f"repository ({data.paper_note}). Run `speedsim report` again once they are.", ""]
    everything = ok(data.paper)
    p = everything[everything["label"] == PAPER]
    equal = everything[everything["label"] == PAPER_EQUAL_LENGTH]
    rows = _paper_rows(p)
    cols = ["profile", "config", "decoding", "µs/token", "speedup vs 12x1", "first-exit miss", "tokens",
            "val loss (nats/token)", "test ROUGE-L"]
    reading = []
    for profile in ("rtx-a5000", "h200"):
        part = p[p["profile"] == profile]
        deep, shallow = _val(part, sharing="12x1", method="speed"), _val(part, sharing="4x1", method="speed")
        s43, s26 = _val(part, sharing="4x3", method="speed"), _val(part, sharing="2x6", method="speed")
        reading.append(f"On {profile}, 4x3 and 2x6 with SPEED run at {_us(s43)} and {_us(s26)} µs/token against "
                       f"{_us(deep)} for the 12-layer unshared decoder ({_x(deep / s43)} and {_x(deep / s26)}) and "
                       f"{_us(shallow)} for the 4-layer one")
    quality_text = _paper_quality(p)
    if data.paper_note:
        head += [f"Partial: {data.paper_note}; those configs are missing below until their traces are shipped.", ""]
    equal_part = []
    if not equal.empty:
        eq_rows = _paper_rows(equal)
        eq_reading = []
        for profile in ("rtx-a5000", "h200"):
            part = equal[equal["profile"] == profile]
            deep = _val(part, sharing="12x1", method="speed")
            s43, s26 = _val(part, sharing="4x3", method="speed"), _val(part, sharing="2x6", method="speed")
            eq_reading.append(f"on {profile} 4x3 and 2x6 run {_x(deep / s43)} and {_x(deep / s26)} faster than 12x1")
        n_len, n_seq = int(equal["out_len"].iloc[0]), int(equal["sequences"].iloc[0])
        equal_part = [
            f"At one output length: the same comparison on {n_seq} synthetic sequences of {n_len} tokens per config, "
            f"each fitted to the config's real trace (`--synthetic fit=NAME,len={n_len}`: settle exits, flip patterns, "
            "burstiness, stops on `<eos>`, source lengths), so that no config gains from shorter outputs "
            "(pipeline fill and drain weigh more in short ones). Quality columns repeat the trained models'.",
            "",
            _md_table(eq_rows, cols),
            "",
            f"**Reading.** At {n_len} tokens " + "; ".join(eq_reading) + ".",
            "",
        ]
    return head + [
        "Each trained config (`experiments/models/`: the GPU recipe's models, d_model 384) decoded 200 of its "
        "test examples; its exit trace drives a T5-Base-sized model (the paper's dimensions) on the paper's GPU "
        "(`rtx-a5000`) and on `h200`. Quality columns are the trained models' own measurements "
        "(`experiments/models/results/`, `reports/models.md`); `speedup vs 12x1` is the 12-layer unshared "
        "decoder's µs/token over this row's. Rows use each config's first 40 test sequences, at the lengths "
        "the model chose.",
        "",
        _md_table(rows, cols),
        "",
        f"![SPEED paper comparison]({data.figures['speed_paper']})" if "speed_paper" in data.figures else "",
        "",
        "**Reading.** " + ". ".join(reading) + ". SPEED's gain over the shared model decoded sequentially grows "
        "with R and shrinks with the first-exit miss rate. " + quality_text,
        "",
        *equal_part,
    ]


def depth_section(data: ReportData) -> list[str]:
    s = ok(data.study, WEIGHT_BUDGET)
    if s.empty:
        return []
    top = int(s["depth"].max())
    rows = []
    for profile in sorted(s["profile"].unique()):
        part = s[s["profile"] == profile]
        deep = part[part["depth"] == top]
        speed, seq = _val(deep, method="speed"), _val(deep, method="sequential")
        uns, shallow = _val(deep, method="unshared"), _val(part[part["R"] == 1], method="speed")
        rows.append({"profile": profile, "unshared, same weights": _us(shallow), "SPEED": _us(speed),
                     "shared sequential": _us(seq), f"unshared, {top} layers": _us(uns),
                     "SPEED vs sequential": _x(seq / speed), f"SPEED vs unshared {top}": _x(uns / speed),
                     "SPEED / same-weights": _x(speed / shallow)})
    sharing = s[s["depth"] == top]["sharing"].iloc[0]
    cols = list(rows[0])
    best = max(rows, key=lambda r: float(r[f"SPEED vs unshared {top}"].rstrip("x")))
    worst = min(rows, key=lambda r: float(r[f"SPEED vs unshared {top}"].rstrip("x")))
    figs = [f"![latency vs depth, {k.removeprefix('latency_vs_depth_')}]({v})"
            for k, v in data.figures.items() if k.startswith("latency_vs_depth_")]
    first = s[s["R"] > 1].iloc[0] if (s["R"] > 1).any() else s.iloc[0]
    return [
        "## Per-token latency vs depth, every profile",
        "",
        f"Left panels: a fixed weight budget of {int(first['U'])} distinct layers applied R times (depth "
        f"{int(first['U'])}R), decoded with SPEED, decoded sequentially, and an unshared decoder of the same depth "
        "(R times the weights); the dotted line is the unshared decoder with the same weights (depth "
        f"{int(first['U'])}). Right panels: depths 6 to 24 reached with R = 1 (unshared), 2, 3, 6; solid SPEED, "
        f"dashed sequential. Workload: {first['model']} dimensions, synthetic exit traces "
        f"({first['workload'].removeprefix('synthetic:')}).",
        "",
        f"At depth {top} ({sharing}), µs per token:",
        "",
        _md_table(rows, cols),
        "",
        *figs,
        "",
        f"**Reading.** Sequential decoding of a shared model costs about what an unshared decoder of the same "
        f"depth costs: every layer pass still reads its weights (they only stay on-chip where the group fits). "
        f"SPEED runs up to R tokens per pass over the group's weights, so its latency grows far more slowly with "
        f"depth: at depth {top} it is {best[f'SPEED vs unshared {top}']} faster than the unshared decoder on "
        f"{best['profile']} and {worst[f'SPEED vs unshared {top}']} on {worst['profile']}, and within "
        f"{best['SPEED / same-weights']}-{worst['SPEED / same-weights']} of the shallow decoder with the same "
        "weights. Devices whose decode is dominated by fixed per-kernel costs (launch, latency) rather than "
        "weight reads gain least.",
        "",
    ]


def traffic_section(data: ReportData) -> list[str]:
    s = ok(data.study, WEIGHT_BUDGET)
    if s.empty or "dram_traffic_vs_depth" not in data.figures:
        return []
    profile = "h200" if "h200" in set(s["profile"]) else sorted(s["profile"].unique())[0]
    top = int(s["depth"].max())
    part = s[(s["profile"] == profile) & (s["depth"] == top)]
    parts = []
    for method in ("unshared", "sequential", "speed"):
        total = _val(part, method=method, col="dram_bytes_per_token")
        w = _val(part, method=method, col="dram_weights_bytes_per_token")
        e = _val(part, method=method, col="dram_embeddings_bytes_per_token")
        parts.append(f"{method} {total / 1e6:.1f} MB/token ({w / total:.0%} weights, {e / total:.0%} "
                     "embeddings/LM head)")
    return [
        "## DRAM traffic per token vs depth, by tensor class",
        "",
        f"![DRAM traffic by tensor class]({data.figures['dram_traffic_vs_depth']})",
        "",
        f"**Reading.** On {profile} at depth {top}: " + "; ".join(parts) + ". Weight reads dominate the unshared and "
        "sequential decoders and grow with depth; SPEED shares each weight read among the tokens in flight, "
        "so its weight traffic per token falls by up to R and the LM head and embeddings (read for every "
        "exit taken) become a larger share, as the SPEED paper notes for small models.",
        "",
    ]


def roofline_section(data: ReportData) -> list[str]:
    if "roofline" not in data.figures or data.steps.empty:
        return []
    notes = []
    for profile in ("h200", "rtx-a5000", "gemmini"):
        if profile not in data.peaks:
            continue
        pk = data.peaks[profile]
        part = data.steps[data.steps["profile"] == profile]
        inten = part["flops"] / part["dram_bytes"]
        by = {m: float(inten[part["method"] == m].median()) for m in ("unshared", "sequential", "speed")}
        notes.append(f"{profile}: ridge at {pk['flops'] / pk['bw']:.0f} FLOP/byte, median step intensity "
                     f"{by['unshared']:.1f} (unshared), {by['sequential']:.1f} (sequential), {by['speed']:.1f} (SPEED)")
    return [
        "## Roofline of each profile with the decode steps",
        "",
        f"![roofline]({data.figures['roofline']})",
        "",
        "**Reading.** Each point is one simulated decode step (its FLOPs over its DRAM bytes, and the FLOP/s it "
        "achieved). " + "; ".join(notes) + ". Decode steps sit far left of every ridge: memory-bound. SPEED "
        "moves its steps right (more FLOPs per weight byte, up to R tokens per read) and up, which is where its "
        "speedup comes from; points below the sloped roof are steps limited by per-kernel latency or by too "
        "little parallel work to keep DRAM busy.",
        "",
    ]


def _diamonds(m: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The fitted traces at the curves' length against the curve at the same realised miss rate."""
    eq = runs[runs["label"] == PAPER_EQUAL_LENGTH]
    deepest = eq[eq["R"] > 1].sort_values("R")
    if deepest.empty:
        return ""
    profile, sharing = deepest["profile"].iloc[-1], deepest["sharing"].iloc[-1]

    def point(df: pd.DataFrame) -> pd.DataFrame:  # realised miss (SPEED row) beside speedup vs sequential
        miss = df[df["method"] == "speed"].set_index("run_key")["first_exit_miss"]
        seq = df[df["method"] == "sequential"]
        return seq.assign(miss=seq["run_key"].map(miss)).sort_values("miss")

    fitted = point(eq[(eq["profile"] == profile) & (eq["sharing"] == sharing)])
    curve = point(m[(m["profile"] == profile) & (m["sharing"] == sharing)])
    if fitted.empty or curve.empty:
        return ""
    miss, got = float(fitted["miss"].iloc[0]), float(fitted["speedup"].iloc[0])
    bound = float(np.interp(miss, curve["miss"], curve["speedup"]))
    n_fit, n_curve = int(fitted["out_len"].iloc[0]), int(curve["out_len"].iloc[0])
    length = "the curves' length" if n_fit == n_curve else f"{n_fit} tokens (the curves: {n_curve})"
    return (f"Diamonds are synthetic traces fitted to the same models at {length}: {profile} {sharing} "
            f"gives {_x(got)} at {miss:.0%} misses where the curve gives {_x(bound)}. The curves settle every miss "
            "at the first verifying exit (`mispredict=P`, the optimistic bound); the trained models' misses settle "
            "later and flush more work in flight.")


def acceptance_sections(data: ReportData) -> list[str]:
    out = []
    m = ok(data.study, MISPREDICT)
    if not m.empty and "speedup_vs_mispredict" in data.figures:
        notes = []
        for profile in sorted(m["profile"].unique())[:2]:
            for sharing in sorted(m["sharing"].unique()):
                part = m[(m["profile"] == profile) & (m["sharing"] == sharing) & (m["method"] == "sequential")]
                if part.empty:
                    continue
                lo, hi = part["mispredict"].min(), part["mispredict"].max()
                notes.append(f"{profile} {sharing}: {_x(_val(part, mispredict=lo, col='speedup'))} at "
                             f"{lo:.0%} misses, {_x(_val(part, mispredict=hi, col='speedup'))} at {hi:.0%}")
        stars = ""
        if data.paper is not None:
            runs = ok(data.paper)
            sp = runs[(runs["method"] == "speed") & (runs["R"] > 1) & (runs["label"] == PAPER)]
            if len(sp):
                mean_len = float((sp["tokens"] / sp["sequences"]).mean())
                curve_len = int(m["out_len"].iloc[0])
                stars = (f"Stars are the trained models' real exit traces at their own miss rates; their outputs "
                         f"average {mean_len:.0f} tokens against the curves' {curve_len}, so pipeline fill and drain "
                         "cost them more (see the output-length figure below). " + _diamonds(m, runs))
        out += ["## Speedup vs misprediction rate", "",
                f"![speedup vs misprediction]({data.figures['speedup_vs_mispredict']})", "",
                "**Reading.** Speedup of SPEED over the same shared model decoded sequentially (solid) and over an "
                "unshared decoder of the same depth (dashed). " + "; ".join(notes) + ". Every first-exit miss "
                "flushes the tokens launched from it and refills the pipeline, so the gain falls with the miss "
                "rate, and faster for deeper pipelines (more repeats: more work flushed per miss). " + stars, ""]
    n = ok(data.study, OUT_LEN)
    if not n.empty and "speedup_vs_output_length" in data.figures:
        notes = []
        profile = "h200" if "h200" in set(n["profile"]) else sorted(n["profile"].unique())[0]
        for sharing in sorted(n["sharing"].unique()):
            part = n[(n["profile"] == profile) & (n["sharing"] == sharing) & (n["method"] == "sequential")
                     & (n["mispredict"] == n["mispredict"].min())]
            if part.empty:
                continue
            short, long_ = part["out_len"].min(), part["out_len"].max()
            notes.append(f"{sharing}: {_x(_val(part, out_len=short, col='speedup'))} for {short}-token outputs, "
                         f"{_x(_val(part, out_len=long_, col='speedup'))} for {long_}")
        out += ["## Speedup vs output length", "",
                f"![speedup vs output length]({data.figures['speedup_vs_output_length']})", "",
                f"**Reading.** On {profile} with perfect first exits: " + "; ".join(notes) + ". The pipeline "
                "needs R - 1 steps to fill and drains at the end, so short outputs (the SPEED paper's WMT "
                "translations) gain less; long outputs approach the steady-state gain.", ""]
    return out


def write_readme(data: ReportData, out: Path) -> Path:
    lines = [
        "# speedsim report",
        "",
        "Generated by `speedsim report` from the sweep specs "
        + ", ".join(f"`{s}`" for s in data.specs) + " and `experiments/speed_paper.yaml`, the measured H200 "
        "data and the hardware profiles; do not edit by hand. Regenerate with `speedsim report` (the reduced "
        "default study, about a minute on 2 cores) or `speedsim report --full` (the full `latency_vs_depth.yaml` "
        "and `acceptance.yaml`). The tidy result tables behind every figure are in `data/` (one row per run and "
        "decoding method; `speedup` = that method's µs/token over SPEED's). All latencies are simulated "
        "per-token decode times (prefill excluded). Also here: [validation.md](validation.md) (the simulator's "
        "error per measured row, generated with this report) and [models.md](models.md) (the trained models' "
        "quality and exit statistics, from `experiments/models/make_report.py`).",
        "",
    ]
    lines += validation_section(data)
    lines += paper_section(data)
    lines += depth_section(data)
    lines += traffic_section(data)
    lines += roofline_section(data)
    lines += acceptance_sections(data)
    lines += serving_section(data.serving, data.serving_limit, data.figures.get("serving"), "experiments/serving.yaml")
    failed = data.study[data.study["status"] != "ok"] if not data.study.empty else data.study
    if len(failed):
        lines += ["## Failed runs", "", _md_table(
            [{"label": r["label"], "profile": r["profile"], "sharing": r["sharing"], "error": r["error"]}
             for _, r in failed.iterrows()], ["label", "profile", "sharing", "error"]), ""]
    path = out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines).replace("\n\n\n", "\n\n")
    path.write_text(text.rstrip() + "\n")
    return path
