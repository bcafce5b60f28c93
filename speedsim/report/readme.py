"""reports/README.md: the figures with a short reading of each, every number taken from the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from speedsim.report.content import ReportData, ok, pick
from speedsim.report.design_space import design_space_section
from speedsim.report.markdown import md_table, times, us, write_markdown
from speedsim.report.paper_md import paper_section
from speedsim.report.rivals import rivals_section
from speedsim.report.scale import scale_section
from speedsim.report.serving import serving_section
from speedsim.report.validation_md import validation_section, whole_decode_section
from speedsim.simulate.schema import (
    FIXED_DEPTH,
    MISPREDICT,
    OUT_LEN,
    PAPER,
    PAPER_EQUAL_LENGTH,
    WEIGHT_BUDGET,
)

# ------------------------------------------------------------------------------ sections

def _fixed_depth_text(fixed: pd.DataFrame) -> str:
    """The right panels of the latency-vs-depth figures, from the fixed-depth runs that ran."""
    if fixed.empty:
        return ""
    lo, hi = int(fixed["depth"].min()), int(fixed["depth"].max())
    depths = f"depth {lo}" if lo == hi else f"depths {lo} to {hi}"
    repeats = ", ".join("1 (unshared)" if r == 1 else str(r) for r in sorted(int(r) for r in fixed["R"].unique()))
    return f" Right panels: {depths} reached with R = {repeats}; solid SPEED, dashed sequential."


def depth_section(data: ReportData) -> list[str]:
    s = ok(data.study, WEIGHT_BUDGET)
    if s.empty:
        return []
    top = int(s["depth"].max())
    rows = []
    for profile in sorted(s["profile"].unique()):
        part = s[s["profile"] == profile]
        deep = part[part["depth"] == top]
        speed, seq = pick(deep, method="speed"), pick(deep, method="sequential")
        uns, shallow = pick(deep, method="unshared"), pick(part[part["R"] == 1], method="speed")
        rows.append({"profile": profile, "unshared, same weights": us(shallow), "SPEED": us(speed),
                     "shared sequential": us(seq), f"unshared, {top} layers": us(uns),
                     "SPEED vs sequential": times(seq / speed), f"SPEED vs unshared {top}": times(uns / speed),
                     "SPEED / same-weights": times(speed / shallow)})
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
        f"{int(first['U'])}).{_fixed_depth_text(ok(data.study, FIXED_DEPTH))} Workload: {first['model']} "
        "dimensions, synthetic exit traces "
        f"({first['workload'].removeprefix('synthetic:')}).",
        "",
        f"At depth {top} ({sharing}), µs per token:",
        "",
        md_table(rows, cols),
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
        total = pick(part, method=method, col="dram_bytes_per_token")
        w = pick(part, method=method, col="dram_weights_bytes_per_token")
        e = pick(part, method=method, col="dram_embeddings_bytes_per_token")
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
            f"gives {times(got)} at {miss:.0%} misses where the curve gives {times(bound)}. The curves settle every miss "
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
                notes.append(f"{profile} {sharing}: {times(pick(part, mispredict=lo, col='speedup'))} at "
                             f"{lo:.0%} misses, {times(pick(part, mispredict=hi, col='speedup'))} at {hi:.0%}")
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
            notes.append(f"{sharing}: {times(pick(part, out_len=short, col='speedup'))} for {short}-token outputs, "
                         f"{times(pick(part, out_len=long_, col='speedup'))} for {long_}")
        out += ["## Speedup vs output length", "",
                f"![speedup vs output length]({data.figures['speedup_vs_output_length']})", "",
                f"**Reading.** On {profile} with perfect first exits: " + "; ".join(notes) + ". The pipeline "
                "needs R - 1 steps to fill and drains at the end, so short outputs (the SPEED paper's WMT "
                "translations) gain less; long outputs approach the steady-state gain.", ""]
    return out


REPORT_TITLE = "# speedsim report"  # README.md's first line, by which `build` knows an earlier report


def write_readme(data: ReportData, out: Path) -> Path:
    lines = [
        REPORT_TITLE,
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
    lines += validation_section(data) + whole_decode_section(data)
    lines += paper_section(data)
    lines += depth_section(data)
    lines += traffic_section(data)
    lines += roofline_section(data)
    lines += acceptance_sections(data)
    lines += serving_section(data.serving, data.serving_limit, data.figures.get("serving"), "experiments/serving.yaml")
    lines += design_space_section(data.design, data.design_causes, data.design_sensitivity, data.figures,
                                  "experiments/design_space.yaml", data.design_full)
    lines += rivals_section(data.rivals, data.figures.get("rivals"), "experiments/rivals.yaml", data.design_full,
                            data.rivals_load)
    lines += scale_section(data.scale, data.figures.get("scale"), data.published, "experiments/scale.yaml",
                           data.design_full)
    failed = data.study[data.study["status"] != "ok"] if not data.study.empty else data.study
    if len(failed):
        lines += ["## Failed runs", "", md_table(
            [{"label": r["label"], "profile": r["profile"], "sharing": r["sharing"], "error": r["error"]}
             for _, r in failed.iterrows()], ["label", "profile", "sharing", "error"]), ""]
    return write_markdown(out / "README.md", lines)
