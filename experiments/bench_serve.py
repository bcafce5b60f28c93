"""Benchmark the serving simulation (issue 11's target: 1,000 requests x 128 output tokens at batch
up to 32 on h200 in under 10 s on one core).

    python experiments/bench_serve.py [--requests 1000] [--len 128] [--max-batch 32] [--repeat 1]

Prints one JSON object: `rows`, one per run (the target run first, then a quarter and half of
its requests at the same batch, and half at a quarter of the batch), and `scaling`.

Each row has wall and CPU seconds (CPU time is steadier on a shared machine), SimPy events per
second, and the cost per token-step (token-steps = decode steps x requests in them, the unit of
the simulator's work: every step serves each request's KV and encoder K/V in every layer).
`scaling` says how time grows: the CPU time per token-step of every row relative to the target
run's (1.0 everywhere = linear in token-steps, whatever the number of requests or the batch),
and a least-squares fit over the rows of CPU seconds = per_step x steps + per_token_step x
token-steps (a step's shared kernels and weights, and each request's KV in it; a smaller batch
pays the per-step part over fewer requests).
With `--repeat N` every run is repeated N times and its medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from speedsim.run import RunParams
from speedsim.serve import serve


def one(requests: int, length: int, max_batch: int, rate: float, repeat: int = 1) -> dict:
    spec = RunParams(profile="h200", model="t5base", sharing="4x3", serve_method="speed", arrivals=f"poisson:{rate}",
                     requests=requests, mispredict=0.1, out_len=length, src_len=128, max_batch=max_batch)
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        r = serve(spec)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    token_steps = r.mean_batch * r.steps
    return {"requests": requests, "len": length, "max_batch": max_batch, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "steps": r.steps, "mean_batch": round(r.mean_batch, 2),
            "token_steps": round(token_steps), "events": r.events, "events_per_s": round(r.events / wall),
            "us_per_token_step": round(1e6 * cpu / token_steps, 1),
            "throughput_tokens_per_s": round(r.throughput_tokens_per_s), "tpot_p99_us": round(r.tpot_us.p99, 1)}


def scaling(rows: list[dict]) -> dict:
    """How CPU time grows across the rows (see the module docstring)."""
    base = rows[0]["cpu_s"] / rows[0]["token_steps"]
    relative = [round(r["cpu_s"] / r["token_steps"] / base, 3) for r in rows]
    # cpu = per_step x steps + per_token_step x token_steps: a step's own work (its shared kernels,
    # the weights) and each request's in it (its KV and encoder K/V in every layer)
    a = np.array([[r["steps"], r["token_steps"]] for r in rows], dtype=float)
    (per_step, per_token_step), *_ = np.linalg.lstsq(a, np.array([r["cpu_s"] for r in rows]), rcond=None)
    return {"cpu_per_token_step_relative": relative, "fit_us_per_step": round(float(1e6 * per_step), 1),
            "fit_us_per_token_step": round(float(1e6 * per_token_step), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--len", type=int, default=128)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--rate", type=float, default=1e5, help="arrivals per second (high: the batch stays full)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (medians are reported)")
    a = p.parse_args()
    cases = [(a.requests, a.max_batch), (a.requests // 4, a.max_batch), (a.requests // 2, a.max_batch),
             (a.requests // 2, max(1, a.max_batch // 4))]
    rows = [one(n, a.len, b, a.rate, a.repeat) for n, b in cases]
    sys.stdout.write(json.dumps({"rows": rows, "scaling": scaling(rows)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
