"""One set of documented limits on every size and time a user gives, whichever way it enters.

A size (tokens per step, KV length, layers, repeats, runs in a sweep) can enter speedsim through a
measured CSV's columns or its `extra` fields (`lengths=`, `cross=`, `queries=`, `tokens=`,
`kv_bucket=`), a kernel profile's scenario name (`layer_t5base_n4_ctx1024`), a flag, a sweep
spec's axes or a model spec. The same limits apply to all of them: beyond a limit a value is a
typo, not a workload (a scenario of n=100,000,000 tokens simulated 250 billion microseconds and
printed a MAPE of 6.8 million percent).

Sizes within their limits can still multiply into more work than any input justifies (a group
row of L = R = 4096 is 16.7 million layers). Such work is refused up front, with the estimate,
before any of it starts: `Work` counts what a simulation will do (kernels, and the per-item
accesses of batched kernels), `Work.seconds` turns it into time at the simulator's measured
speed, and `check_work` refuses more than `MAX_SIM_SECONDS`.

A measured time is a number of microseconds in [`MIN_TIME_US`, `MAX_TIME_US`]: below one
nanosecond no kernel, launch or operator runs (and `speedsim measure` rounds to the nanosecond),
above eleven days no timed call lasts. Within those bounds every relative error of a finite
simulated time is finite (`relative_error`).

Every other limit on the size of a user's input is here too, named by what it bounds: a model
spec's dimensions, a sharing's repeats and depth, synthetic workloads and serving runs, exit traces,
arrivals, training, the tokenizer, corpus sources and YAML inputs. The modules that check them
import them from here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from speedsim.errors import UserError

# ----------------------------------------------------------------------------------------- sizes

# Largest sane scenario sizes: tokens per step, KV length, layers, repeats. Beyond them a value is
# a typo, not a measurement (n=1e30 gave a MAPE of 2.7e26%). A kernel profile's scenario names and a
# measured row's `extra` sizes are held to the same numbers (`lengths=`/`cross=`/`kv_bucket=`: ctx;
# `queries=` x n: n; `tokens=`: MAX_DECODE_TOKENS).
MAX_ROW_INTS = {"n": 1 << 20, "ctx": 1 << 24, "L": 1 << 12, "R": 1 << 12}

# Tokens of a whole measured decode (a decode row's `tokens=`): a step's most (n) per sequence, for
# as many sequences as a synthetic workload may have (`speedsim.defaults.MAX_SYNTHETIC_SEQS`, 10,000).
MAX_DECODE_TOKENS = MAX_ROW_INTS["n"] * 10_000

# Largest ceiling scenarios: a copy of 1 TiB, a square GEMM of 65536 (beyond them a typo; 0 simulates
# nothing).
MAX_COPY_BYTES = 1 << 40
MAX_GEMM_N = 1 << 16
# Widest linear map of an op row (in=K, out=N): a hidden size or a vocabulary (the largest are ~2**18).
# Beyond it a typo: in=1e20 gave a MAPE of 8e19%.
MAX_OP_WIDTH = 1 << 20
# Kernel calls in one profiled iteration of a kernel profile (a layer runs tens).
MAX_CALLS_PER_ITER = 1e6

# Runs one sweep spec may expand to (the product of its axes' lengths), checked before expanding.
MAX_SWEEP_RUNS = 100_000

# -------------------------------------------------------------------------------- inputs of other kinds

# a sharing (UxR) (`speedsim.sharing`)
# Bounds that keep nonsense from running for hours or failing deep inside: R is also the
# number of exits an exit trace records (at most 1024, `speedsim.trace.schema`), and no
# decoder speedsim models is deeper than a few hundred layers.
MAX_REPEATS = 1024
MAX_DEPTH = 4096  # U*R layers

# synthetic workloads and serving (`speedsim.defaults`)
MAX_SYNTHETIC_LEN = 65536   # tokens per synthetic sequence (output or source)
MAX_GAMMA = 64              # draft tokens per speculative iteration (--gamma)
MAX_SYNTHETIC_SEQS = 10000
# Tokens of one synthetic workload (sequences x tokens each): about half an hour of simulation.
# Each bound above alone allows 655M tokens, weeks of simulation: a typo, not a study.
MAX_SYNTHETIC_TOKENS = 1 << 20
MAX_REQUESTS = 1_000_000
MAX_BATCH_LIMIT = 4096
MAX_KV_GB = 1e6             # a petabyte: beyond it a typo (1e300 GB overflowed to an infinite capacity)

# a model spec's dimensions (`speedsim.workload.models`)
# Sanity maxima of a model's dimensions: beyond them a value is a typo (the largest published models
# have d_model ~3e4, d_ff ~1e5, vocabularies ~1e6), and byte counts would overflow further in.
MAX_WIDTH = 1 << 17       # d_model
MAX_FFN = 1 << 20         # d_ff
MAX_HEADS = 1 << 12       # n_heads
MAX_VOCAB = 1 << 24       # vocab
MAX_POSITIONS = 1 << 22   # cross_attention_len
MAX_LAYERS = 1 << 12      # encoder_layers
MAX_DEVICES = 1024        # --tp x --pp (one node; `interconnect.devices_per_node` bounds a profile's)

# exit traces (`speedsim.trace.schema`)
MAX_TOKEN_ID = 2**31 - 1  # token ids are vocabulary indices: non-negative and int32-sized

# arrivals (`speedsim.serve.arrivals`)
# Latest arrival, in seconds (about 116 days). Times are microseconds in float64; far beyond this a
# request's work (microseconds) is lost to rounding when added to its arrival time, and its
# latency comes out as zero.
MAX_ARRIVAL_S = 1e7
# `--arrivals load:F`: at most this many times the nominal capacity (beyond, the rate overflows to inf)
MAX_LOAD = 1e3

# training (`speedsim.train.config`)
# Largest model a config may train, in parameters. fp32 weights, their gradients and AdamW's two
# moments take 16 bytes per parameter, so the limit is 32 GiB of training state before any
# activation: what one large workstation or one 80 GB GPU holds (the models of the SPEED paper
# and of experiments/models/ have at most a few hundred million).
MAX_TRAIN_PARAMETERS = 2**31
# A training config's counts: optimizer steps (a day of the recipe's runs is ~1e5), sequences per batch,
# tokens per sequence or decode, examples evaluated. Beyond them a typo that would run for weeks.
MAX_TRAIN_STEPS = 10_000_000
MAX_TRAIN_BATCH = 65_536
MAX_TRAIN_TOKENS = 65_536
MAX_TRAIN_EXAMPLES = 10_000_000

# the tokenizer (`speedsim.data.tokenizer`)
# The largest vocabulary asked of the BPE trainer (a model spec's cap too): the tokenizers library
# allocates for the requested size up front (2**24: 50 MB; 2**31 - 1 aborted the process asking for 141 GB).
MAX_VOCAB_SIZE = 1 << 24

# corpus sources (`speedsim.data.sources`)
# Generated files (Unicode tables, lexer maps, huge literal tables) teach nothing about code.
MAX_FILE_BYTES = 512 * 1024

# YAML inputs (`speedsim.yamlio`): a file's size, read before parsing; values and nesting with every
# alias expanded; a key's and a written number's characters
YAML_MAX_BYTES = 4 << 20       # a YAML input's size (the largest speedsim ships is under 6 KB)
YAML_MAX_NODES = 100_000       # values of a document with every alias expanded
YAML_MAX_DEPTH = 50            # lists and mappings nested in each other (shipped files: 7)
YAML_MAX_KEY_CHARS = 200       # characters of one key (shipped files: 37)
YAML_MAX_NUMBER_CHARS = 100    # characters of one number as written (a 64-bit integer has 20)

# ------------------------------------------------------------------------------- numbers as written

# How a user writes a number (a CSV cell, a flag's value, `--synthetic len=N`, an arrival time): ASCII
# digits with an optional sign, point and exponent. Python's `float()` and `int()` also take '٥٢', '５２'
# and '1_0', which no tool writes: such text is refused, not read as a number it does not look like.
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
PLAIN_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
# what float() reads as not finite: refused as such (not as "not a number") by the callers' own checks
_NOT_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def parse_number(text: str, what: str, where: str, integer: bool = False) -> float:
    """`text` as a number written as `PLAIN_NUMBER` (`PLAIN_INTEGER` with `integer`); inf and nan are
    returned as such (the caller's range check names them); anything else is a `UserError` at `where`."""
    t = str(text).strip()
    if _NOT_FINITE.fullmatch(t) and not integer:
        return float(t)
    if not (PLAIN_INTEGER if integer else PLAIN_NUMBER).fullmatch(t):
        kind = "a whole number" if integer else "a number"
        return _refuse(f"{what} '{text}' is not {kind} written in ASCII digits", where)
    return int(t) if integer else float(t)


def _refuse(message: str, where: str) -> float:
    raise UserError(message, where=where)


# ----------------------------------------------------------------------------------------- times

# A measured time (us): at least a nanosecond (no kernel, launch or operator is faster, and
# `speedsim measure` rounds times to the nanosecond: 5e-324 printed a MAPE of inf%), at most
# 1e12 us, eleven days (no timed call lasts longer; sums of a few such times stay finite).
MIN_TIME_US = 1e-3
MAX_TIME_US = 1e12


def time_problem(value: float) -> str | None:
    """Why `value` (us) cannot be a measured time (a short phrase), or None if it can."""
    if not math.isfinite(value):
        return "is not a finite number"
    if not MIN_TIME_US <= value <= MAX_TIME_US:
        return (f"is outside [{MIN_TIME_US:g}, {MAX_TIME_US:g}] us (a measured time is at least 1 ns "
                "and at most eleven days)")
    return None


def relative_error(simulated: float, measured: float, where: str) -> float:
    """|simulated - measured| / measured, always a finite number: `measured` is a finite time of at
    least `MIN_TIME_US` (a measured time, or a sum of them), and a simulated time that is not a finite
    number >= 0 is a `UserError` at `where` (a profile whose numbers overflow), never an `inf%` or a
    JSON null."""
    if not (math.isfinite(measured) and measured >= MIN_TIME_US):
        raise UserError(f"measured time {measured:g} us is not a finite time of at least {MIN_TIME_US:g} us",
                        where=where)
    if not (math.isfinite(simulated) and simulated >= 0.0):
        raise UserError(f"the simulated time is {simulated:g} us, not a finite time: the profile's numbers "
                        "overflow or vanish", where=where)
    error = abs(simulated - measured) / measured
    if not math.isfinite(error):  # simulated ~1e308 over measured 1e-3
        raise UserError(f"the simulated time {simulated:g} us is beyond any comparison with the measured "
                        f"{measured:g} us", where=where)
    return error


def mean_error(errors: list[float]) -> float:
    """The mean of finite relative errors, itself finite (their plain sum can overflow: it is then the
    sum of each over the count, at most the largest)."""
    if not errors:
        return 0.0
    total = sum(errors)
    return total / len(errors) if math.isfinite(total) else sum(e / len(errors) for e in errors)


def log_error(simulated: float, measured: float, where: str) -> float:
    """log(simulated / measured), always a finite number (a fit's residual): as `relative_error`, and a
    simulated time of 0 is a `UserError` at `where` too (its logarithm is not a number)."""
    relative_error(simulated, measured, where)
    if simulated <= 0.0:
        raise UserError(f"the simulated time is {simulated:g} us: nothing to compare with the measured "
                        f"{measured:g} us", where=where)
    ratio = simulated / measured
    # the quotient's logarithm as the fit has always taken it (a fit's path depends on the last bit); the
    # difference of logarithms where the quotient underflows to 0 (1e-309 / 1e15)
    return math.log(ratio) if ratio > 0.0 else math.log(simulated) - math.log(measured)


# ------------------------------------------------------------------------------------------ work

# The simulator's speed (one core of a shared 2-core cloud VM, about a laptop's): microseconds of wall
# time per simulated kernel (8 to 20 measured: group rows of 32x32 to 256x64 layers), per per-item
# access of a batched kernel (each item's own KV cache or encoder K/V: 2 to 4), and per pair of item
# accesses in one kernel after others over as many items (what is left superlinear in the on-chip
# residency's evictions once `OnChipCache` compacts its dict: a step of 16,384 sequences takes 0.84 s, of
# 8,192 0.27 s, of 2,048 0.03 s; before the compaction 6 s and 1.9 s). Rounded up: an estimate errs long. `tests/test_sizes_hostile.py::test_work_estimate_tracks_the_simulator` checks
# the estimate against timed simulations.
US_PER_KERNEL = 25.0
US_PER_ITEM = 4.0
US_PER_ITEM_PAIR = 0.001
# A whole decode repeats the same kernels step after step, and the engine reuses their cost plans: its
# kernels simulate at this share of a fresh kernel's time (measured 0.16 to 0.45 on the shipped decodes).
DECODE_KERNEL_SHARE = 0.5
# Most simulation one command may do before it is refused (about a minute); a fit (`calibrate`)
# evaluates its rows many times and may take `MAX_FIT_SECONDS`.
MAX_SIM_SECONDS = 60.0
MAX_FIT_SECONDS = 600.0
# Evaluations of each row a fit makes, at most about (`calibrate` of the shipped H200 rows: 35 to 65).
FIT_EVALUATIONS = 100


@dataclass(frozen=True)
class Work:
    """What a simulation will do, counted before it starts: `kernels` simulated (every run counted),
    `items` per-item accesses of their batched kernels, `pairs` the sum over kernels of the square of
    their item accesses, and `us` the wall time that takes (default: at the speeds above)."""

    kernels: float = 0.0
    items: float = 0.0
    pairs: float = 0.0
    us: float = -1.0  # < 0: from the counts

    def __post_init__(self) -> None:
        if self.us < 0:
            object.__setattr__(self, "us", self.kernels * US_PER_KERNEL + self.items * US_PER_ITEM
                               + self.pairs * US_PER_ITEM_PAIR)

    @classmethod
    def layers(cls, count: float, kernels_each: int, item_kernels_each: int, items: float) -> Work:
        """`count` layer instances of `kernels_each` kernels, `item_kernels_each` of which touch each
        of `items` batch items' own tensors."""
        return cls(count * kernels_each, count * item_kernels_each * items,
                   count * item_kernels_each * float(items) ** 2)

    def reused(self) -> Work:
        """The same work when its kernels repeat step after step (a decode: `DECODE_KERNEL_SHARE`)."""
        return replace(self, us=self.us * DECODE_KERNEL_SHARE)

    def __add__(self, other: Work) -> Work:
        return Work(self.kernels + other.kernels, self.items + other.items, self.pairs + other.pairs,
                    self.us + other.us)

    def __mul__(self, runs: float) -> Work:
        return Work(self.kernels * runs, self.items * runs, self.pairs * runs, self.us * runs)

    @property
    def seconds(self) -> float:
        """Estimated wall time of the simulation on a laptop."""
        return self.us / 1e6

    def __str__(self) -> str:
        per = f" and {self.items:.3g} per-item accesses" if self.items else ""
        return f"about {self.kernels:.3g} kernels{per} to simulate, {_duration(self.seconds)}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    if seconds < 86400 * 365:
        return f"~{seconds / 3600:.3g} h"
    return f"~{seconds / (86400 * 365):.3g} years"


def check_work(work: Work, where: str, what: str = "this row", budget: float = MAX_SIM_SECONDS) -> None:
    """A `UserError` at `where` if `work` would take longer than `budget` seconds to simulate."""
    if work.seconds > budget:
        raise UserError(f"{what}: {work}, more than the {_duration(budget)} allowed (speedsim.limits); "
                        "a size is a typo, or split the work", where=where)
