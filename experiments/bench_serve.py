"""Benchmark the serving simulation (issue 11's target: 1,000 requests x 128 output tokens at batch
up to 32 on h200 in under 10 s on one core).

    python experiments/bench_serve.py [--requests 1000] [--len 128] [--max-batch 32]

Reports wall time, SimPy events per second, and how time grows with requests and batch size
(token-steps = decode steps x requests in them; the cost should be linear in them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from speedsim.serve import ServeSpec, serve


def one(requests: int, length: int, max_batch: int, rate: float) -> dict:
    spec = ServeSpec("h200", "t5base", "4x3", "speed", f"poisson:{rate}", requests,
                     synthetic=f"mispredict=0.1,len={length},src=128", max_batch=max_batch)
    t = time.perf_counter()
    r = serve(spec)
    wall = time.perf_counter() - t
    token_steps = r.mean_batch * r.steps
    return {"requests": requests, "len": length, "max_batch": max_batch, "wall_s": round(wall, 3),
            "steps": r.steps, "mean_batch": round(r.mean_batch, 2), "token_steps": round(token_steps),
            "events": r.events, "events_per_s": round(r.events / wall), "us_per_token_step": round(1e6 * wall / token_steps, 1),
            "throughput_tokens_per_s": round(r.throughput_tokens_per_s), "tpot_p99_us": round(r.tpot_us.p99, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--len", type=int, default=128)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--rate", type=float, default=1e5, help="arrivals per second (high: the batch stays full)")
    a = p.parse_args()
    rows = [one(a.requests, a.len, a.max_batch, a.rate)]
    rows += [one(n, a.len, b, a.rate) for n, b in ((a.requests // 4, a.max_batch), (a.requests // 2, a.max_batch),
                                                   (a.requests // 2, a.max_batch // 4))]
    sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
