"""Benchmark: simulate a 1,000-token SPEED decode of a 12-layer-deep model (issue 4's target: < 1 s).

    python experiments/bench_simulate.py [--repeats 5] [--mode graph|eager]

Times `speedsim.simulate.simulate` end to end (schedule replay, step workloads, SimPy engine)
for t5base dimensions shared 4x3 (12 layers deep) and the 12x1 unshared baseline separately;
reports the median wall time, simulated kernels and SimPy events per second. Single process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from speedsim.hardware import load_profile
from speedsim.sharing import Sharing
from speedsim.simulate import simulate, synthetic_traces
from speedsim.workload import BUILTIN_MODELS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", default="graph", choices=["graph", "eager"])
    args = parser.parse_args()
    profile = load_profile("h200")
    spec = BUILTIN_MODELS["t5base"]
    traces = synthetic_traces("mispredict=0.1,len=1001,seed=0", 3)
    out = {}
    for label, baselines in (("speed_4x3", ()), ("speed_4x3_plus_both_baselines", ("unshared", "sequential"))):
        times, result = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = simulate(profile, spec, Sharing(4, 3), traces, args.mode, baselines)
            times.append(time.perf_counter() - t)
        assert result is not None
        wall = statistics.median(times)
        kernels = sum(m.kernels for m in result.methods())
        events = sum(m.events for m in result.methods())
        out[label] = {"tokens": result.speed.tokens, "wall_s": round(wall, 3), "kernels": kernels,
                      "kernels_per_s": round(kernels / wall), "events": events, "events_per_s": round(events / wall)}
    sys.stdout.write(json.dumps({"mode": args.mode, **out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
