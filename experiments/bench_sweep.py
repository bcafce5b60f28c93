"""Benchmark: runs per second of a 1,000-configuration synthetic sweep with 2 local workers.

    python experiments/bench_sweep.py [--workers 2] [--scheduler ADDRESS] [--keep DIR]

The sweep: every shipped profile (8) x 5 sharings (4x3, 2x6, 3x4, 6x2, 2x4) x 5 first-exit
misprediction rates x 5 output lengths (8 to 48 tokens), T5-Base dimensions, one seeded
synthetic sequence per run, SPEED plus both baselines (so 3 simulations per run). Each run's
key is new (fresh output directory), so nothing is skipped. Target: the 1,000 runs in under
2 minutes on a 2-core machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPEC = {
    "name": "bench_sweep",
    "description": "1,000 synthetic runs for the sweep benchmark",
    "fixed": {"model": "t5base", "mode": "graph", "src_len": 64, "seqs": 1, "seed": 0},
    "axes": {
        "profile": ["all"],
        "sharing": ["4x3", "2x6", "3x4", "6x2", "2x4"],
        "mispredict": [0.0, 0.05, 0.1, 0.2, 0.3],
        "out_len": [8, 16, 24, 32, 48],
    },
}


def main() -> int:
    from speedsim.sweep import load_spec, plan, run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write the results here instead of a temp dir")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        spec_path = Path(tmp) / "bench_sweep.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        n = len(plan(load_spec(spec_path)))
        out = args.keep or Path(tmp) / "out"
        t0 = time.perf_counter()
        summary = run_sweep(spec_path, out, workers=args.workers, scheduler=args.scheduler, progress=False)
        seconds = time.perf_counter() - t0
    result = {"runs": n, "ran": summary.ran, "failed": summary.failed, "workers": args.workers,
              "seconds": round(seconds, 2), "runs_per_s": round(summary.ran / seconds, 2),
              "target_s": 120, "met": seconds < 120}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
