"""Plain-text tables for the terminal."""

from __future__ import annotations


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


def format_simulation(r: dict) -> str:
    out = [f"{r['model']} {r['sharing']} on {r['profile']} ({r['mode']} mode), {r['sequences']} sequence(s), "
           f"{r['tokens']} decoded tokens"]
    rows = [{"method": "speed", **{k: r[k] for k in ("per_token_us", "p50_token_us", "p99_token_us",
                                                      "prefill_us", "dram_bytes_per_token")}, "speedup": 1.0}]
    for name, b in r["baselines"].items():
        rows.append({"method": name, **{k: b[k] for k in ("per_token_us", "p50_token_us", "p99_token_us",
                                                           "prefill_us", "dram_bytes_per_token")},
                     "speedup": b["speedup"]})
    out.append(format_table(rows, ["method", "per_token_us", "p50_token_us", "p99_token_us", "prefill_us",
                                   "dram_bytes_per_token", "speedup"]))
    out.append(f"steps {r['steps']}, flushes {r['flushes']}, wasted token passes {r['wasted_token_passes']}, "
               f"mean in flight {r['mean_in_flight']:.2f}")
    by = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in r["dram_bytes_by_class"].items())
    u = r["utilization"]
    out.append(f"SPEED DRAM traffic per token: {by}")
    out.append(f"utilisation: compute {u['compute']:.1%} of peak, DRAM {u['dram']:.0%}, device busy "
               f"{u['device_busy']:.0%}, host {u['host']:.0%}")
    return "\n".join(out)
