"""Benchmark the simulator: simulated kernels per second, and the time to validate the whole H200 CSV.

    python experiments/bench_simulator.py [--repeats 5]

Single process, single thread (the simulator is pure Python); run it under `taskset -c 0` to pin
it to one core. Reports medians. `kernels_per_s` is the engine as sweeps, validation and the
sensitivity's differences run it; `kernels_per_s_by_class` with each program's kernel classes
totalled too (`Engine(detail=True)`, what `simulate` runs for its `by_kernel_class`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from speedsim.engine import Engine
from speedsim.hardware import load_profile
from speedsim.paths import H200_MEASURED
from speedsim.validation import read_measured, validate
from speedsim.workload import BUILTIN_MODELS, KernelRules
from speedsim.workload.patterns import group_distinct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    profile = load_profile("h200")
    rows = read_measured(H200_MEASURED)

    validate_s = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        reports = {mode: validate(profile, rows, BUILTIN_MODELS, mode) for mode in ("graph", "eager")}
        validate_s.append(time.perf_counter() - t)
    n_rows = sum(len(r.results) for r in reports.values())

    rules = KernelRules.from_profile(profile)
    program = group_distinct(BUILTIN_MODELS["t5base"], 3, 8, 2048, rules, "bf16")  # 24 layers + head
    rates: dict[bool, dict[str, float]] = {False: {}, True: {}}
    for detail in (False, True):
        for mode in ("graph", "eager"):
            samples = []
            for _ in range(args.repeats):
                engine = Engine(profile, mode, detail=detail)
                t = time.perf_counter()
                result = engine.run([program] * 20)
                samples.append(result.kernels / (time.perf_counter() - t))
            rates[detail][mode] = statistics.median(samples)

    out = {
        "validate_whole_csv_s": round(statistics.median(validate_s), 3),
        "validated_rows": n_rows,
        "kernels_per_s": {m: round(v) for m, v in rates[False].items()},
        "kernels_per_s_by_class": {m: round(v) for m, v in rates[True].items()},
        "python": sys.version.split()[0],
    }
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
