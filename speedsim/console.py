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
    if bounds:
        lines += [f"{m.method}: per token {m.per_token_us:.4g} us, bounds [{m.per_token_us_low:.4g}, "
                  f"{m.per_token_us_high:.4g}] us over the profile's ranges" for m in result.methods()]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def serving_text(result: Any) -> str:
    """`speedsim serve`: the serving summary."""
    from speedsim.report.tables import format_serving

    return format_serving(result)

