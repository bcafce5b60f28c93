"""Plain-text tables for the terminal."""

from __future__ import annotations

import math

from speedsim.report.markdown import us
from speedsim.serve import ServeResult
from speedsim.simulate import SimulationResult

KEEP_DECIMAL = math.inf  # `us(x, KEEP_DECIMAL)`: the terminal tables show 0.1 µs at every size


def _fmt(value) -> str:
    if isinstance(value, float):  # 4 significant digits, never in scientific notation from 1e4 up
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def format_validation(result: dict, report) -> str:
    out = [f"profile {result['profile']}, mode {result['mode']}: {result['rows']} rows simulated, "
           f"{result['skipped']} skipped"]
    # from the report's own figures: the JSON's are rounded to 4 digits, and rounding twice (0.08351 ->
    # 0.0835 -> "8.3%") would print another figure than the report's markdown ("8.4%")
    mape_rows = [{"section": k, "rows": sum(1 for r in report.results if k == "all" or k in r.groups),
                  "MAPE": f"{v:.1%}"} for k, v in report.mape().items()]
    out.append(format_table(mape_rows, ["section", "rows", "MAPE"]))
    out.append("")
    out.append("worst rows:")
    worst = [{**w, "ape": f"{w['ape']:.1%}"} for w in result["worst"]]
    deployed = ["deployment"] if any("deployment" in w for w in worst) else []
    out.append(format_table(worst, ["section", "pattern", "model", "mode", "n", "ctx", "L", "R", *deployed,
                                    "measured_us", "simulated_us", "ape"]))
    for s in result.get("skipped_rows", []):
        out.append(f"skipped line {s['line']}: {s['reason']}")
    return "\n".join(out)


def format_simulation(r: SimulationResult) -> str:
    """`speedsim simulate`'s table: one row per method, then SPEED's schedule and traffic.

    Times in µs with thousands separators (no scientific notation); prefill per sequence (the
    JSON's `prefill_us` is the sum over sequences); `SPEED speedup` is that baseline's µs/token
    over SPEED's, shown on the baseline's row and blank on SPEED's own.
    """
    sp = r.speed
    out = [f"{r.model} {r.sharing} on {r.profile} ({r.mode_label or r.mode} mode), {r.sequences} sequence(s), "
           f"{sp.tokens} tokens decoded after the prefill (which emits each sequence's first token)"]
    rows = [{"method": m.method, "µs/token": us(m.per_token_us, KEEP_DECIMAL),
             "p50 µs": us(m.p50_token_us, KEEP_DECIMAL), "p99 µs": us(m.p99_token_us, KEEP_DECIMAL),
             "prefill µs/seq": us(m.prefill_us / max(r.sequences, 1), KEEP_DECIMAL),
             "DRAM MB/token": f"{m.dram_bytes_per_token / 1e6:,.2f}",
             "SPEED speedup": "" if m.method == "speed" else f"{m.speedup:.2f}x"} for m in r.methods()]
    out.append(format_table(rows, list(rows[0])))
    s = r.schedule
    out.append(f"steps {s.steps}, flushes {s.flushes}, wasted token passes {s.wasted_token_passes}, "
               f"mean in flight {s.mean_in_flight:.2f}, first-exit misses {s.first_exit_miss:.1%}")
    by = ", ".join(f"{label} {getattr(sp, f'dram_{k}_bytes_per_token') / 1e6:,.2f} MB"
                   for k, label in (("weights", "layer weights"), ("kv", "KV cache"),
                                    ("activations", "activations"), ("embeddings", "embeddings + LM head")))
    out.append(f"SPEED DRAM traffic per token: {by}")
    out.append(f"utilisation: compute {sp.util_compute:.1%} of peak, DRAM {sp.util_dram:.0%}, device busy "
               f"{sp.util_device_busy:.0%}, host {sp.util_host:.0%}")
    return "\n".join(out)


def format_serving(r: ServeResult) -> str:
    """`speedsim serve`'s summary: latency percentiles per request, throughput, batching, utilisation."""
    out = [f"{r.model} {r.sharing} {r.method} on {r.profile} ({r.mode_label or r.mode} mode): {r.requests} requests, "
           f"{r.tokens} output tokens in {r.makespan_us / 1e3:,.1f} ms"]
    rows = [{"latency": name, **{k: us(getattr(getattr(r, name), k), KEEP_DECIMAL)
                                 for k in ("p50", "p90", "p99", "mean")}}
            for name in ("ttft_us", "tpot_us", "e2e_us", "queue_us")]
    out.append(format_table(rows, ["latency", "p50", "p90", "p99", "mean"]))
    u = r.utilization
    out.append(f"throughput {r.throughput_tokens_per_s:,.0f} tokens/s, {r.throughput_requests_per_s:,.1f} requests/s; "
               f"{r.steps} steps, mean batch {r.mean_batch:.2f} requests, {r.mean_tokens_per_step:.2f} token passes "
               f"per step, mean queue {r.mean_queue_length:.2f}")
    out.append(f"utilisation: compute {u.compute:.1%} of peak, DRAM {u.dram:.0%}, KV memory {u.kv:.1%} of "
               f"{r.kv_capacity_bytes / 1e9:,.1f} GB")
    return "\n".join(out)


def format_params(listing: dict) -> str:
    """`speedsim profiles --params NAME`: the parameters a what-if may set, with value and range (where given)."""
    rows = [{"path": r["path"], "value": _number(r["value"]),
             "range": f"{_number(r['low'])} .. {_number(r['high'])}" if "low" in r else ""}
            for r in listing["parameters"]]
    ranged = sum(1 for r in listing["parameters"] if "low" in r)
    out = [f"{listing['profile']} ({listing['file']}): {len(rows)} parameters, {ranged} with a range; set one with "
           "--set PATH=VALUE (a number, or xF: F times this value) or a sweep's set.PATH"]
    out.append(format_table(rows, ["path", "value", "range"]))
    return "\n".join(out)


def _number(value: float) -> str:
    """A parameter's value as its profile file has it (integers without a point), up to 6 digits."""
    return f"{value:.6g}"


def format_derive(summary: dict) -> str:
    """`speedsim profiles derive`: what was written, from what."""
    if "from" in summary:
        what = f"a what-if of {summary['from']}: " + ", ".join(
            f"{path} = {_number(value)}" for path, value in summary["overrides"].items())
    else:
        what = (f"derived from the datasheet of {summary['gpu']} ({summary['datasheet']}) by the rule learned on "
                f"{summary['reference']}")
        if summary["overrides"]:
            what += ", then " + ", ".join(f"{p} = {_number(v)}" for p, v in summary["overrides"].items())
    out = [f"wrote {summary['out']}: profile {summary['profile']}, {what}"]
    out += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(out)
