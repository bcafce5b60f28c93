"""What the commands print: strict JSON (`--json`), and each command's text for a terminal.

Each `*_text` function returns the lines a command prints on stdout, joined by newlines (the
command echoes the text, which adds the last newline); the CLI parses and dispatches, this module
words the results. Tables come from `speedsim.report.tables`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click


def _finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite number replaced by None (JSON has no NaN), and numpy values
    as the Python numbers they hold (an int64 stays an integer, a float32 infinity becomes None)."""
    if hasattr(obj, "dtype") and callable(getattr(obj, "tolist", None)):  # numpy scalar or array, pandas series
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    """Print one strictly valid JSON object on stdout and nothing else (NaN and inf as null)."""
    click.echo(json.dumps(_finite(obj), indent=1, sort_keys=False, default=str, allow_nan=False))


# hardware and validation ---------------------------------------------------------------------

def profiles_text(rows: list[dict]) -> str:
    """`speedsim profiles`: one table row per profile."""
    from speedsim.report.tables import format_table

    return format_table(rows, ["name", "kind", "units", "dtype", "matrix_TFLOPS", "dram_GBps", "onchip_MiB",
                               "memory_GiB", "modes", "kernel_latency_us", "eager_launch_us"])


def kernel_validation_text(profile_name: str, path: Path, report: Any, result: dict[str, Any]) -> str:
    """`speedsim validate --kernels`: error per class, per (scenario, class) cell and per scenario, then
    the kernels no class rule matched. `report` is a `KernelReport`, `result` its `as_json()`."""
    from speedsim.report.tables import format_table

    lines = [f"profile {profile_name}, kernels {path}: {len(report.scenarios)} scenarios, "
             f"{result['unclassified']} unclassified kernel(s)",
             format_table([{"class": k, "MAPE": f"{v:.1%}"} for k, v in result["mape"].items()], ["class", "MAPE"]),
             "",
             format_table([{**c, "ape": f"{c['ape']:.1%}"} for c in report.cells],
                          ["scenario", "class", "measured_us", "simulated_us", "measured_calls", "simulated_calls",
                           "ape"]),
             "",
             format_table([{**s, "ape": f"{s['ape']:.1%}"} for s in report.scenarios],
                          ["scenario", "measured_us", "simulated_us", "ape"])]
    lines += [f"unclassified line {u['line']}: {u['kernel'][:80]}" for u in report.unclassified]
    return "\n".join(lines)


def calibration_text(out: Path, result: Any, sections: str | None) -> str:
    """`speedsim calibrate`: the error before and after the fit, and the fitted values
    (`result` is a `CalibrationResult`)."""
    lines = [f"wrote {out}"]
    scope = f" of sections {sections}" if sections else ""
    for key, before in result.before.items():  # computed by validate (validate --kernels for kernels)
        lines.append(f"  {key:7s} MAPE {before:.1%} -> {result.after[key]:.1%} (as validate computes it, rows{scope})")
    lines += [f"  {key} = {value:.4g}" + (f"  (at the {result.at_bounds[key]} bound of its fit)"
                                          if key in result.at_bounds else "")
              for key, value in result.values.items()]
    return "\n".join(lines)


# data, training and traces -------------------------------------------------------------------

def corpus_text(directory: Path, manifest: dict[str, Any], export_dir: str | None) -> str:
    """`speedsim data build`: the corpus's totals, its splits and its largest packages."""
    m = manifest
    t = m["totals"]
    lines = [f"corpus {directory}: {t['modules']} modules, {t['bytes'] / 1e6:.1f} MB of code, "
             f"{t['summarize']} function-docstring pairs, {t['continue']} continuation examples"]
    for split, c in m["splits"].items():
        lines.append(f"  {split:10s} {c['modules']:6d} modules {c['bytes'] / 1e6:7.1f} MB {c['summarize']:7d} pairs "
                     f"{c['continue']:6d} continuations")
    lines.append(f"  from {len(m['packages'])} packages: " + ", ".join(
        f"{k} {v['version']}" for k, v in sorted(m["packages"].items(), key=lambda kv: -kv[1]["bytes"])[:8]) + ", ...")
    if export_dir:
        lines.append(f"exported to {export_dir}")
    return "\n".join(lines)


def training_text(metrics: dict[str, Any], out_dir: str) -> str:
    """`speedsim train`: where training stopped, or the finished model's validation figures."""
    if not metrics["finished"]:
        return f"{metrics['name']}: stopped in {metrics['stage']} at step {metrics['step']}; re-run to resume"
    stages = ", ".join(f"{k} {v} steps" for k, v in metrics["stages"].items())
    lines = [f"{metrics['name']}: {stages}, {metrics['train_seconds']:.0f} s of training"]
    per_exit = " ".join(f"{x:.3f}" for x in metrics["val_loss_per_exit"])
    lines.append(f"validation loss (nats/token) per exit: {per_exit}")
    if metrics["val_rougeL"] is not None:
        lines.append(f"validation ROUGE-L F1 ({metrics['rouge_examples']} greedy decodes): {metrics['val_rougeL']:.4f}, "
                     f"{metrics['distinct_per_100']:.0f} distinct per 100, {metrics['mean_output_tokens']:.1f} tokens on average")
    lines.append(f"checkpoint: {out_dir}")
    return "\n".join(lines)


def trace_text(stats: dict[str, Any], traces: int, out_file: str, split: str) -> str:
    """`speedsim trace`: the traces written, their exit statistics and the decodes' quality."""
    lengths = stats["lengths"]
    lines = [f"wrote {traces} traces ({stats['tokens']} tokens) to {out_file}",
             "agreement with the final exit, per exit: " + " ".join(f"{a:.3f}" for a in stats["agreement"]),
             "settle exit distribution: " + " ".join(f"{a:.3f}" for a in stats["settle_exit_distribution"]),
             f"first-exit misprediction: {stats['first_exit_miss']:.4f}"]
    if "wasted_passes_per_token" in stats:
        lines.append(f"wasted token passes per emitted token: {stats['wasted_passes_per_token']:.4f}")
    lines.append(f"output length (tokens): mean {lengths['mean']:.1f}, median {lengths['median']:.0f}, min {lengths['min']}, max {lengths['max']}")
    lines.append(f"{split}: loss {stats['loss']:.4f} nats/token, ROUGE-L F1 {stats['rougeL']:.4f}, "
                 f"{stats['distinct_per_100']:.0f} distinct outputs per 100")
    if "draft_out" in stats:
        lines.append(f"draft {stats['draft_model']}: {stats['draft_traces']} traces to {stats['draft_out']}; its "
                     f"prediction is the target's token at {stats['path_acceptance']:.1%} of the positions after the "
                     "first")
    return "\n".join(lines)


# measurement, sweeps and reports -------------------------------------------------------------

def measure_text(summary: dict[str, Any]) -> str:
    """`speedsim measure`: the CSV written."""
    return f"wrote {summary['out']} ({summary['rows']} rows, {summary['elapsed_s']} s); model spec {summary['model_spec']}"


def sweep_text(summary: Any, out: Path) -> str:
    """`speedsim sweep`: runs done, skipped and failed (`summary` is a `SweepSummary`)."""
    return (f"{summary.name}: {summary.total} runs, {summary.skipped} already done, {summary.ran} ran, "
            f"{summary.failed} failed, in {summary.seconds:.1f} s; table: {out / 'results.parquet'}")


def dropped_journal_lines_text(lines: Sequence[int], out: Path) -> str:
    """`speedsim sweep`, on stderr: the journal lines that were not valid records (their runs ran again)."""
    return (f"dropped invalid journal line(s) {', '.join(map(str, lines))} of "
            f"{out / 'runs.jsonl'}; those runs ran again")


def failed_runs_text(failed: int, out: Path) -> str:
    """`speedsim sweep`, on stderr: why it exits 1."""
    return (f"speedsim: {failed} run(s) failed on bad input (status/error columns of "
            f"{out / 'results.csv'}); exit 1 (--allow-failures to exit 0)")


def report_text(summary: dict[str, Any]) -> str:
    """`speedsim report`: what was written, and the validation's error per mode."""
    lines = [f"wrote {summary['readme']} and {len(summary['figures'])} figures ({summary['study_runs']} runs, "
             f"{summary['failed_runs']} failed rows); SPEED-paper comparison: {summary['paper']}"]
    for mode, mape in summary["mape"].items():
        lines.append(f"  h200 {mode} MAPE: " + ", ".join(f"{k} {v:.1%}" for k, v in mape.items()))
    return "\n".join(lines)


def simulation_text(result: Any, bounds: bool) -> str:
    """`speedsim simulate`: the methods' table, each method's bounds (`--bounds`) and the run's notes."""
    from speedsim.report.tables import format_simulation

    lines = [format_simulation(result)]
    lines += [f"{m.method}: window {m.gamma:g} draft tokens, "
              + (f"acceptance {m.acceptance_rate:.3f}" if m.acceptance_rate == m.acceptance_rate else "nothing drafted")
              + f", {m.tokens_per_iteration:.2f} tokens per iteration" for m in result.methods() if m.gamma == m.gamma]
    if bounds:
        lines += [f"{m.method}: per token {m.per_token_us:.4g} us, bounds [{m.per_token_us_low:.4g}, "
                  f"{m.per_token_us_high:.4g}] us over the profile's ranges" for m in result.methods()]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def serving_text(result: Any) -> str:
    """`speedsim serve`: the serving summary."""
    from speedsim.report.tables import format_serving

    return format_serving(result)



# what bounds the time -------------------------------------------------------------------------

def _shares(by_cause: dict[str, float]) -> str:
    """Time by cause as shares of its total, the largest first; causes under 0.05% left out."""
    from speedsim.engine import CAUSE_LABELS

    total = sum(by_cause.values())
    if not total > 0:
        return "no time"
    parts = sorted(((v / total, c) for c, v in by_cause.items() if v / total >= 0.0005), reverse=True)
    return ", ".join(f"{CAUSE_LABELS.get(c, c)} {share:.1%}" for share, c in parts)


def time_by_cause_text(result: Any) -> str:
    """`speedsim simulate`: each method's decode time by cause, as shares (one line per method)."""
    return "\n".join(f"{m.method}: time by cause: {_shares(dict(m.time_by_cause_us_per_token))}"
                     for m in result.methods() if m.time_by_cause_us_per_token)


def kernel_classes_text(result: Any) -> str:
    """`speedsim simulate --by-kernel`: per method, its decode kernels by class, per token: count, time and
    its share, DRAM bytes, bytes moved, FLOPs, arithmetic intensity (FLOP per byte moved), bounding cause."""
    from speedsim.engine import CAUSE_LABELS
    from speedsim.report.tables import format_table

    lines: list[str] = []
    for m in result.methods():
        classes = m.by_kernel_class
        if not classes:
            continue
        total = sum(c["time_us_per_token"] for c in classes.values())
        rows = [{"class": name, "kernels": f"{c['kernels_per_token']:,.1f}", "µs": f"{c['time_us_per_token']:,.1f}",
                 "share": f"{c['time_us_per_token'] / total:.1%}" if total else "",
                 "DRAM MB": f"{c['dram_bytes_per_token'] / 1e6:,.3f}", "moved MB": f"{c['bytes_per_token'] / 1e6:,.3f}",
                 "MFLOP": f"{c['flops_per_token'] / 1e6:,.3f}", "FLOP/B": f"{c['arithmetic_intensity']:.3g}",
                 "bound": CAUSE_LABELS.get(c["bound"], c["bound"])} for name, c in classes.items()]
        lines += ["", f"{m.method}: decode kernels by class, per token (µs: kernel time, the node rule included)",
                  format_table(rows, list(rows[0]))]
    return "\n".join(lines)


def simulate_text(result: Any, bounds: bool, by_kernel: bool = False) -> str:
    """`speedsim simulate`: `simulation_text`'s table and bounds, each method's time by cause, its kernel
    classes (`by_kernel`), then the run's notes."""
    from dataclasses import replace

    lines = [simulation_text(replace(result, notes=()), bounds)]
    causes = time_by_cause_text(result)
    if causes:
        lines.append(causes)
    if by_kernel:
        lines.append(kernel_classes_text(result))
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def sensitivity_text(result: Any) -> str:
    """`speedsim sensitivity`: the per-token times and time by cause, then the elasticities, one row per
    parameter ranked by magnitude (those under 5e-4 for every method on one line), how one-sided and
    integer differences were taken, and what was skipped (`result` is a `SensitivityResult`)."""
    from speedsim.report.tables import format_table

    r = result
    label = r.mode_label or r.mode
    lines = [f"{r.model} {r.sharing} on {r.profile} ({label} mode): elasticity d ln(time per token) / d ln(parameter), "
             f"central differences at ±{r.step:g} relative",
             "per token: " + ", ".join(f"{m} {r.per_token_us[m]:,.1f} µs" for m in r.methods)]
    lines += [f"{m}: time by cause: {_shares(dict(r.time_by_cause_us_per_token[m]))}" for m in r.methods]
    shown = [d for d in r.parameters if d.magnitude >= 5e-4]
    flat = [d.path for d in r.parameters if d.magnitude < 5e-4]
    if shown:
        rows = [{"parameter": d.path, "value": f"{d.value:g}",
                 **{m: f"{d.elasticity[m]:+.3f}" for m in r.methods},
                 "difference": d.kind} for d in shown]
        lines += ["", format_table(rows, list(rows[0]))]
    if flat:
        lines.append(f"no effect (|elasticity| < 5e-4 for every method): {', '.join(flat)}")
    lines += [f"{d.path}: {d.note}" for d in r.parameters if d.note]
    lines += [f"skipped {path}: {why}" for path, why in r.skipped.items()]
    return "\n".join(lines)


# the chip that meets a target -----------------------------------------------------------------

def design_text(result: Any) -> str:
    """`speedsim design`: the answer (the least change of the parameter that meets the target, or why
    none does and the cause that then holds the time), the time by cause there, and how it was found
    (`result` is a `speedsim.design.DesignResult`)."""
    from speedsim.design.search import REL_TOL
    from speedsim.engine import CAUSE_LABELS

    r = result
    label = r.mode_label or r.mode
    p = r.parameter
    lines = [f"{r.model} {r.sharing} on {r.profile} ({label} mode), {r.method}: target {r.target_us_per_token:,.6g} µs "
             f"per token; at {p} = {r.base_value:g} it takes {r.base_per_token_us:,.2f} µs"]
    if r.already_met:
        lines.append(f"already met: no change of {p} is needed (scale 1)")
    elif r.reachable:
        lines.append(f"meets it at {p} = {r.value:.6g} (x{r.scale:.5g}): {r.per_token_us:,.2f} µs per token")
        if r.miss_scale is not None:
            lines.append(f"  bracketed to {REL_TOL:.1%} of the scale: at x{r.miss_scale:.5g} it still misses")
    else:
        cause = CAUSE_LABELS.get(r.bound_by, r.bound_by)
        share = r.time_by_cause_us_per_token[r.bound_by] / r.per_token_us if r.per_token_us > 0 else 0.0
        where = {"range": f"within its range [{r.field_range.low:g}, {r.field_range.high:g}]",
                 "refused": "within the values the profile takes",
                 "no gain": "by changing it"}.get(r.limit, "")
        lines.append(f"cannot be reached {where}: {r.limit_note}")
        lines.append(f"the time is then held by {cause}: {r.time_by_cause_us_per_token[r.bound_by]:,.2f} µs per "
                     f"token ({share:.1%})" + (f"; its other parameters: {', '.join(r.levers)}" if r.levers else ""))
    lines.append(f"time by cause there: {_shares(dict(r.time_by_cause_us_per_token))}")
    pairs = ", ".join(f"x{a:.4g} to x{b:.4g}" for a, b in r.non_monotone[:3]) \
        + (f" and {len(r.non_monotone) - 3} more" if len(r.non_monotone) > 3 else "")
    lines.append(f"{r.evaluations} decode simulation(s); per-token time "
                 + ("monotone in the scale over them" if r.monotone else
                    f"NOT monotone in the scale over them (it rises from {pairs}): "
                    + ("the answer is a crossing, not surely the least change" if r.reachable and not r.already_met
                       else "a value between those tried may still do better")))
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


def serve_design_text(result: Any) -> str:
    """`speedsim design --serve`: the highest rate that keeps the metric's mean over the seeds under the
    target, the interval of the seeds' own rates, and the rates simulated (`result` is a
    `speedsim.design.ServeDesignResult`)."""
    from speedsim.design.search import METRICS
    from speedsim.report.tables import format_table

    r = result
    what = METRICS.get(r.metric, r.metric)
    lines = [f"{r.model} {r.sharing} on {r.profile} ({r.mode} mode), serving {r.method}: {what} at most "
             f"{r.target_us:,.6g} µs; {r.requests} requests per run, max batch {r.max_batch}, seeds "
             f"{r.seeds[0]}..{r.seeds[-1]} (nominal capacity {r.nominal_rate_per_s:,.1f} requests/s)"]
    if not r.reachable:
        lines.append(f"cannot be reached by lowering the load: even at {r.rate_per_s:,.4g} requests/s (requests "
                     f"practically alone) the mean {r.metric} is {r.metric_us:,.1f} µs")
    else:
        lines.append(f"highest rate that meets it (the mean over the seeds): {r.rate_per_s:,.4g} requests/s, "
                     f"mean {r.metric} {r.metric_us:,.1f} µs" + (
                         f"; at {r.miss_rate_per_s:,.4g}/s it misses ({r.miss_metric_us:,.1f} µs)"
                         if r.miss_rate_per_s is not None and r.miss_metric_us is not None else
                         f" (met at every rate up to {r.rate_max_per_s:,.4g}/s, the highest tried)"))
    if r.reachable:
        lines.append(f"the seeds' own rates: {', '.join(f'{v:,.4g}' for v in r.per_seed_rate_per_s)} requests/s; "
                     f"interval [{r.interval_per_s[0]:,.4g}, {r.interval_per_s[1]:,.4g}] "
                     f"({r.interval_confidence:.2%} confidence for the median seed's rate)")
    rows = [{"rate/s": f"{p.rate_per_s:,.4g}", f"mean {r.metric} µs": f"{p.mean_us:,.1f}",
             "meets": "yes" if p.mean_us <= r.target_us else "no",
             "by seed µs": " ".join(f"{v:,.0f}" for v in p.metric_us)} for p in r.points]
    lines += ["", format_table(rows, list(rows[0]))]
    lines.append(f"{r.runs} serving simulations; mean " + (
        "monotone in the rate over them" if r.monotone else
        "NOT monotone in the rate over them (between " + ", ".join(f"{a:,.4g} and {b:,.4g}/s" for a, b in r.non_monotone)
        + ")"))
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)
