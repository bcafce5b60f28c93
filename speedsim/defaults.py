"""Every default and size limit of a run, here and nowhere else.

The command line's option defaults, the typed run model (`speedsim.run.RunParams`), sweep specs,
the serving study and the synthetic-trace parser all read them from this module, so that a
default cannot differ between `speedsim simulate`, `speedsim serve` and a sweep.
"""

from __future__ import annotations

from typing import Literal

# ------------------------------------------------------------------ what a run simulates
MODEL = "t5base"            # model dimensions (a built-in spec)
MODE: Literal["graph", "eager"] = "graph"  # execution mode: graph or eager
BASELINES: tuple[Literal["unshared", "sequential"], ...] = ("unshared", "sequential")  # what SPEED is compared with
LAUNCH_EXIT = 0             # the exit whose prediction launches the next token

# ------------------------------------------------------------------ synthetic workloads
OUT_LEN = 64                # output tokens per sequence
SRC_LEN = 128               # source (encoder input or prompt) tokens
SEQS = 1                    # sequences
SEED = 0                    # seed of every random draw of a run

# ------------------------------------------------------------------ serving
METHODS = ("speed", "sequential", "unshared")   # the decoding methods a server can run
PREFILL_MODES = ("chunked", "stream")
METHOD: Literal["speed", "sequential", "unshared"] = "speed"  # the decoding method served: speed, sequential or unshared
MAX_BATCH = 32              # requests decoding at once
PREFILL: Literal["chunked", "stream"] = "chunked"  # chunked: prefills join the decode steps; stream: a second stream
PREFILL_BUDGET = 512        # chunked: source tokens prefilled per step (at least one request)
