"""One run of a sweep: `RunParams` in, tidy result rows out (one per method: speed and each baseline).

Runs in worker processes (or Dask workers), so everything it needs is loaded here and cached
per process: profiles, model specs, trace files. A failing run returns one row with
`status = "error"` and the error text instead of raising.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from speedsim.experiments.spec import RunParams, trace_path

# Columns of the results table, after the run's parameters (see `RunParams`). Units: us, bytes, FLOP.
DERIVED = ["U", "R", "depth", "workload"]
METRICS = [
    "per_token_us", "p50_token_us", "p99_token_us", "prefill_us", "decode_us", "total_us", "tokens",
    "sequences", "dram_bytes_per_token", "dram_weights_bytes_per_token", "dram_kv_bytes_per_token",
    "dram_activations_bytes_per_token", "dram_embeddings_bytes_per_token", "onchip_bytes_per_token",
    "flops_per_token", "util_compute", "util_dram", "util_device_busy", "util_host", "roofline_us_per_token",
    "speedup", "steps", "flushes", "wasted_token_passes", "mean_in_flight", "first_exit_miss",
]
QUALITY = ["val_loss", "val_loss_first_exit", "val_rougeL", "test_rougeL"]
STATUS = ["run_key", "method", "status", "error"]
PARAMS = [k for k in RunParams.model_fields]
COLUMNS = STATUS + PARAMS + DERIVED + METRICS + QUALITY


@lru_cache(maxsize=32)
def _profile(name: str):
    from speedsim.hardware import load_profile

    return load_profile(name)


@lru_cache(maxsize=16)
def _models(spec_files: tuple[str, ...]):
    from speedsim.workload import resolve_models

    return resolve_models([Path(p) for p in spec_files])


@lru_cache(maxsize=16)
def _trace_file(path: str):
    from speedsim.trace.io import read_traces

    return tuple(read_traces(path))


@lru_cache(maxsize=256)
def _synthetic(text: str, repeats: int):
    from speedsim.simulate import synthetic_traces

    return tuple(synthetic_traces(text, repeats))


def quality_of(trace: str | None) -> dict[str, float]:
    """Measured quality of the trained model that produced a shipped trace (NaN when not shipped).

    Read from experiments/models/results/NAME.train.json (validation loss in nats/token, ROUGE-L)
    and NAME.trace.json (test ROUGE-L of the traced decodes).
    """
    from speedsim.paths import ROOT

    out = dict.fromkeys(QUALITY, math.nan)
    if not trace or "/" in trace:
        return out
    results = ROOT / "experiments" / "models" / "results"
    try:
        train = json.loads((results / f"{trace}.train.json").read_text())
        out["val_loss"] = float(train["val_loss"])
        out["val_loss_first_exit"] = float(train["val_loss_per_exit"][0])
        if train.get("val_rougeL") is not None:
            out["val_rougeL"] = float(train["val_rougeL"])
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        pass
    try:
        out["test_rougeL"] = float(json.loads((results / f"{trace}.trace.json").read_text())["rougeL"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    return out


def _first_exit_miss(traces) -> float:
    n = miss = 0
    for t in traces:
        for row in t.exits:
            n += 1
            miss += row[0] != row[-1]
    return miss / n if n else math.nan


def _metrics(r: dict) -> dict[str, Any]:
    by = r["dram_bytes_by_class"]
    u = r["utilization"]
    return {
        "per_token_us": r["per_token_us"], "p50_token_us": r["p50_token_us"], "p99_token_us": r["p99_token_us"],
        "prefill_us": r["prefill_us"], "decode_us": r["decode_us"], "total_us": r["total_us"],
        "tokens": r["tokens"], "dram_bytes_per_token": r["dram_bytes_per_token"],
        **{f"dram_{k}_bytes_per_token": by[k] for k in ("weights", "kv", "activations", "embeddings")},
        "onchip_bytes_per_token": r["onchip_bytes_per_token"], "flops_per_token": r["flops_per_token"],
        "util_compute": u["compute"], "util_dram": u["dram"], "util_device_busy": u["device_busy"],
        "util_host": u["host"], "roofline_us_per_token": r["roofline_us_per_token"],
    }


def execute(params: dict[str, Any], model_specs: tuple[str, ...] = (), base_dir: str = "") -> list[dict[str, Any]]:
    """Simulate one run; its rows (speed first, then each baseline), or one error row."""
    from speedsim.pipeline import Policy
    from speedsim.sharing import Sharing
    from speedsim.simulate import simulate
    from speedsim.workload import get_model

    run = RunParams.model_validate(params)
    head = {"run_key": run.key, **run.model_dump(mode="json")}
    head["baselines"] = ",".join(run.baselines)
    sharing_text = run.sharing
    try:
        sharing = Sharing.parse(sharing_text)
        head.update(U=sharing.unique, R=sharing.repeats, depth=sharing.depth,
                    workload=f"trace:{run.trace}" if run.trace else f"synthetic:{run.synthetic(sharing.repeats)}")
        profile = _profile(run.profile)
        spec = get_model(run.model, _models(model_specs))
        if run.trace:
            traces = list(_trace_file(str(trace_path(run.trace, base_dir))))
            src_len = run.src_len
        else:
            traces = list(_synthetic(run.synthetic(sharing.repeats), sharing.repeats))
            src_len = None
        if run.limit:
            traces = traces[: run.limit]
        policy = Policy(launch_exit=run.launch_exit, max_in_flight=run.max_in_flight)
        policy.check(sharing.repeats)
        result = simulate(profile, spec, sharing, traces, run.mode, tuple(run.baselines), policy, src_len)
    except Exception as err:  # noqa: BLE001 - a failing run is recorded, the sweep goes on
        return [{**head, "method": "", "status": "error", "error": f"{type(err).__name__}: {err}"}]
    quality = quality_of(run.trace)
    common = {**head, "status": "ok", "error": "", "sequences": result["sequences"], **quality}
    rows = [{**common, "method": "speed", **_metrics(result), "speedup": 1.0,
             "steps": result["steps"], "flushes": result["flushes"],
             "wasted_token_passes": result["wasted_token_passes"], "mean_in_flight": result["mean_in_flight"],
             "first_exit_miss": _first_exit_miss(traces)}]
    for name, base in result["baselines"].items():
        rows.append({**common, "method": name, **_metrics(base), "speedup": base["speedup"]})
    return rows
