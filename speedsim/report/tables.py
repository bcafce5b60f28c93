"""Plain-text tables for the terminal."""

from __future__ import annotations

from speedsim.simulate import SimulationResult


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
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
    mape_rows = [{"section": k, "rows": sum(1 for r in report.results if k in ("all", r.row.section)),
                  "MAPE": f"{v:.1%}"} for k, v in result["mape"].items()]
    out.append(format_table(mape_rows, ["section", "rows", "MAPE"]))
    out.append("")
    out.append("worst rows:")
    worst = [{**w, "ape": f"{w['ape']:.1%}"} for w in result["worst"]]
    out.append(format_table(worst, ["section", "pattern", "model", "mode", "n", "ctx", "L", "R", "measured_us",
                                    "simulated_us", "ape"]))
    for s in result.get("skipped_rows", []):
        out.append(f"skipped line {s['line']}: {s['reason']}")
    return "\n".join(out)


def format_simulation(r: SimulationResult) -> str:
    """`speedsim simulate`'s table: one row per method, then SPEED's schedule and traffic."""
    out = [f"{r.model} {r.sharing} on {r.profile} ({r.mode} mode), {r.sequences} sequence(s), "
           f"{r.speed.tokens} decoded tokens"]
    cols = ["per_token_us", "p50_token_us", "p99_token_us", "prefill_us", "dram_bytes_per_token", "speedup"]
    rows = [{"method": m.method, **{k: getattr(m, k) for k in cols}} for m in r.methods()]
    out.append(format_table(rows, ["method", *cols]))
    s = r.schedule
    out.append(f"steps {s.steps}, flushes {s.flushes}, wasted token passes {s.wasted_token_passes}, "
               f"mean in flight {s.mean_in_flight:.2f}")
    sp = r.speed
    by = ", ".join(f"{k} {getattr(sp, f'dram_{k}_bytes_per_token') / 1e6:.2f} MB"
                   for k in ("weights", "kv", "activations", "embeddings"))
    out.append(f"SPEED DRAM traffic per token: {by}")
    out.append(f"utilisation: compute {sp.util_compute:.1%} of peak, DRAM {sp.util_dram:.0%}, device busy "
               f"{sp.util_device_busy:.0%}, host {sp.util_host:.0%}")
    return "\n".join(out)
