"""The results schema: every column of a sweep's table and every block label the report reads.

One definition, used by the sweep that writes rows (`SimulationResult.to_rows`), the store
that orders them, and the report that reads them. Units: us, bytes, FLOP.
"""

from __future__ import annotations

from dataclasses import fields

from speedsim.simulate.result import MethodResult, ScheduleSummary

# Per-run bookkeeping columns, first in every row.
STATUS = ["run_key", "method", "status", "error"]
# Derived from the run's parameters: UxR and what decoded (`trace:NAME` or `synthetic:TEXT`).
DERIVED = ["U", "R", "depth", "workload"]
# Simulated figures, in table order: a subset of `MethodResult`'s and `ScheduleSummary`'s fields
# (kernels and e2e_per_token_us stay in the JSON only), plus `sequences`.
METRICS = [
    "per_token_us", "p50_token_us", "p99_token_us", "prefill_us", "decode_us", "total_us", "tokens",
    "sequences", "dram_bytes_per_token", "dram_weights_bytes_per_token", "dram_kv_bytes_per_token",
    "dram_activations_bytes_per_token", "dram_embeddings_bytes_per_token", "onchip_bytes_per_token",
    "flops_per_token", "memory_bytes", "util_compute", "util_dram", "util_device_busy", "util_host", "roofline_us_per_token",
    "host_us_per_token", "per_token_us_low", "per_token_us_high",
    "speedup", "steps", "flushes", "wasted_token_passes", "mean_in_flight", "first_exit_miss",
]
# Measured quality of the trained model behind a shipped trace (NaN for synthetic workloads).
QUALITY = ["val_loss", "val_loss_first_exit", "val_rougeL", "test_rougeL"]
# Numeric columns (NaN where missing).
NUMERIC = METRICS + QUALITY + DERIVED[:3]

# Labels of the sweep-spec blocks the report reads (experiments/default.yaml and the full specs).
WEIGHT_BUDGET = "weight_budget"   # fixed unique layers, growing repeats
FIXED_DEPTH = "fixed_depth"       # fixed depth, growing repeats
MISPREDICT = "mispredict"         # speedup against the first-exit misprediction rate
OUT_LEN = "out_len"               # speedup against the output length
PAPER = "paper"                   # the SPEED paper's comparison on real traces
PAPER_EQUAL_LENGTH = "equal-length"  # the same, on traces fitted to them at one output length


def columns(params: list[str]) -> list[str]:
    """The table's columns, given the run-parameter columns of the sweep."""
    return STATUS + params + DERIVED + METRICS + QUALITY


def _result_fields() -> set[str]:
    return {f.name for f in fields(MethodResult)} | {f.name for f in fields(ScheduleSummary)} | {"sequences"}


assert set(METRICS) <= _result_fields(), "every metric column is a result field"
