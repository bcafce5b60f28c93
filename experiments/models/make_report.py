"""The tables of reports/models.md, from the metric files of one recipe (see README.md).

    python experiments/models/make_report.py [RESULTS_DIR [TRACES_DIR]]

Defaults: experiments/models/results and experiments/traces (the shipped traces). Inputs per
config NAME: `NAME.train.json` (the run's metrics.json from `speedsim train`) and
`NAME.trace.json` (the `--json` output of `speedsim trace` on the test split).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "models" / "results"
TRACES = ROOT / "experiments" / "traces"
ORDER = ["12x1", "4x1", "4x1-time", "4x3", "3x4", "2x6", "6x2", "continue-4x3", "continue-2x6"]
# Hooper et al. 2023, T5-Base size, C4-pretrained: first-exit misprediction of 4x3 and 2x6
PAPER_MISS = {"4x3": "6-14%", "2x6": "13-17%", "continue-4x3": "6-14% (4x3)", "continue-2x6": "13-17% (2x6)"}


def load(name: str) -> tuple[dict, dict] | None:
    tr, tc = RESULTS / f"{name}.train.json", RESULTS / f"{name}.trace.json"
    if not (tr.exists() and tc.exists()):
        return None
    return json.loads(tr.read_text()), json.loads(tc.read_text())


def distinct_outputs(name: str) -> int:
    """How many different output sequences the test decodes of `name` contain."""
    from speedsim.trace import read_traces

    return len({tuple(t.tokens) for t in read_traces(TRACES / f"{name}.jsonl.gz")})


def steps(m: dict) -> str:
    return " + ".join(str(m["stages"][s]) for s in ("pretrain", "finetune") if s in m.get("stages", {}))


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> str:
    rows = {n: r for n in ORDER if (r := load(n)) is not None}
    lines = [
        "| config | task | params | steps (pre-train + fine-tune) | train time (s) | val loss (final / first exit, nats/token) | test loss | val ROUGE-L | "
        "test ROUGE-L | distinct / 100 | mean output tokens | first-exit miss | settle exit, 0 .. R-1 | "
        "wasted passes / token | flushes / token | mean in flight | steps / token | output length (mean / median / max) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for n, (m, t) in rows.items():
        le = t["lengths"]
        distinct = t["distinct_per_100"] if "distinct_per_100" in t else 100.0 * distinct_outputs(n) / t["sequences"]
        settle = " · ".join(f"{x:.2f}" for x in t.get("settle_exit_distribution", [])) or "-"
        val_rouge = "-" if m.get("val_rougeL") is None else f"{m['val_rougeL']:.3f}"
        lines.append(
            f"| {n} | {m.get('task') or ('continue' if n.startswith('continue') else 'summarize')} | "
            f"{m['parameters'] / 1e6:.2f} M | "
            f"{steps(m)} | {m['train_seconds']:.0f} | {m['val_loss']:.3f} / {m['val_loss_per_exit'][0]:.3f} | {_num(t.get('loss'))} | "
            f"{val_rouge} | {t['rougeL']:.3f} | {distinct:.0f} | {_num(t.get('mean_output_tokens'), 1)} | "
            f"{pct(t['first_exit_miss'])} | {settle} | {_num(t.get('wasted_passes_per_token'))} | "
            f"{t['flushes_per_token']:.3f} | {t['mean_in_flight']:.2f} | {t['steps_per_token']:.2f} | "
            f"{le['mean']:.1f} / {le['median']:.0f} / {le['max']} |"
        )
    agree = ["| config | test sequences / tokens | agreement with the final exit, exit 0 .. R-1 | val loss per exit |", "|---|---|---|---|"]
    for n, (m, t) in rows.items():
        a = " · ".join(f"{x:.3f}" for x in t["agreement"])
        v = " · ".join(f"{x:.2f}" for x in m["val_loss_per_exit"])
        agree.append(f"| {n} | {t['sequences']} / {t['tokens']} | {a} | {v} |")
    from speedsim.trace import fit, read_traces

    synth = [
        "| config | fitted agreement, exit 0 .. R-1 | fitted burst: P(miss after a miss) | first-exit miss |",
        "|---|---|---:|---:|",
    ]
    for n, (_, t) in rows.items():
        if t["repeats"] > 1:
            f = fit(read_traces(TRACES / f"{n}.jsonl.gz"))
            burst = "-" if f.burst is None else f"{f.burst:.3f}"
            synth.append(f"| {n} | {' · '.join(f'{a:.3f}' for a in f.agreement)} | {burst} | {f.miss_rate:.3f} |")
    agree += ["", "Synthetic-trace parameters fitted to each trace (`speedsim.trace.fit`):", ""] + synth
    paper = ["| config | first-exit misprediction, ours | SPEED paper |", "|---|---:|---:|"]
    for n, ref in PAPER_MISS.items():
        ours = pct(rows[n][1]["first_exit_miss"]) if n in rows else "not run"
        paper.append(f"| {n} | {ours} | {ref} |")
    return "\n".join(lines), "\n".join(agree), "\n".join(paper)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        RESULTS = Path(sys.argv[1]).resolve()
    if len(sys.argv) > 2:
        TRACES = Path(sys.argv[2]).resolve()
    main_table, agree_table, paper_table = main()
    sys.stdout.write(f"{main_table}\n\n{agree_table}\n\n{paper_table}\n")
