"""Request arrivals for a serving simulation: a Poisson process or the times in a file.

`--arrivals poisson:RATE` draws exponential gaps of mean 1/RATE seconds from a seeded
`numpy.random.Generator`; `--arrivals trace:FILE` reads one arrival time in seconds per line
(or the first column of a CSV with a header), non-negative and sorted; `--arrivals load:F` is a
Poisson process at F times the run's nominal capacity (`speedsim.serve.run.nominal_rate`, which
`load_fraction` leaves to the caller). Times come back in microseconds, the engine's unit.

A `trace:FILE` path that is malformed, unusable or absent is a `UserError` naming `--arrivals`
(`speedsim.userpath.input_file`); what the file holds is named by file:line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from speedsim.errors import UserError
from speedsim.fileio import read_text_input
from speedsim.limits import MAX_ARRIVAL_S, MAX_LOAD, parse_number
from speedsim.userpath import input_file

WHERE = "--arrivals"


def load_fraction(text: str) -> float | None:
    """F of `load:F` arrivals (finite, > 0); None for other arrivals."""
    kind, _, value = text.partition(":")
    if kind != "load":
        return None
    fraction = parse_number(value, "load", WHERE)
    if not (math.isfinite(fraction) and 0 < fraction <= MAX_LOAD):
        raise UserError(f"load must be a number in (0, {MAX_LOAD:g}] (times the nominal capacity), got '{value}'",
                        where=WHERE)
    return fraction


def check_arrivals(text: str, requests: int, seed: int, base_dir: str | Path = "") -> None:
    """Refuse arrivals a serving run would refuse (a sweep's plan calls this before any run starts)."""
    if load_fraction(text) is None:
        parse_arrivals(text, requests, seed, base_dir)


def parse_arrivals(text: str, requests: int, seed: int, base_dir: str | Path = "") -> np.ndarray:
    """Arrival times (us, sorted, starting at the first arrival) of `requests` requests; a relative
    `trace:FILE` is read from `base_dir` (a sweep spec's directory)."""
    kind, _, value = text.partition(":")
    if kind == "poisson":
        rate = parse_number(value, "rate (requests per second)", WHERE)
        if not math.isfinite(rate) or rate <= 0:
            raise UserError(f"rate must be a finite number > 0 requests/s, got '{value}'", where=WHERE)
        if requests / rate > MAX_ARRIVAL_S:  # (an infinite span too: a rate of 5e-324/s)
            span = f"about {requests / rate:.3g} s" if math.isfinite(requests / rate) else "longer than any run"
            raise UserError(f"rate {value}/s is too low: {requests} requests would arrive over {span}, beyond "
                            f"{MAX_ARRIVAL_S:g} s", where=WHERE)
        gaps = np.random.default_rng(seed).exponential(1e6 / rate, size=requests)
        times = np.cumsum(gaps) - gaps[0]
        if times[-1] > MAX_ARRIVAL_S * 1e6:
            raise UserError(f"rate {value}/s is too low: the last of {requests} requests would arrive at "
                            f"{times[-1] / 1e6:.3g} s, beyond {MAX_ARRIVAL_S:g} s", where=WHERE)
        return times
    if kind == "trace":
        if not value.strip():
            raise UserError("'trace:' needs a file of arrival times, trace:FILE", where=WHERE)
        times = read_arrival_file(input_file(Path(base_dir) / value if base_dir else value, WHERE))
        if len(times) < requests:
            raise UserError(f"{value} has {len(times)} arrival times, fewer than --requests {requests}",
                            where=WHERE)
        return times[:requests]
    raise UserError(f"'{text}' is not poisson:RATE_PER_S, trace:FILE or load:F", where=WHERE)


def read_arrival_file(path: Path) -> np.ndarray:
    """Arrival times in seconds, one per line (or a CSV's first column after a header), as us."""
    # a regular file of UTF-8 text (a FIFO would block, a device never end); a byte-order mark is no time
    # lines end at '\n' only (str.splitlines also ends them at U+2028 or a form feed: the line numbers
    # of the messages would drift from the file's)
    lines = read_text_input(path, "arrival times", encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
    times: list[float] = []
    for lineno, line in enumerate(lines, 1):
        cell = line.split(",")[0].strip()
        if not cell or cell.startswith("#"):
            continue
        try:
            t = parse_number(cell, "arrival time", f"{path}:{lineno}")
        except UserError:
            if lineno == 1 and not times and not any(c.isdigit() for c in cell):  # a CSV header
                continue
            raise UserError(f"'{cell}' is not a time in seconds written in ASCII digits",
                            where=f"{path}:{lineno}") from None
        if not math.isfinite(t) or t < 0 or t > MAX_ARRIVAL_S:
            raise UserError(f"arrival time {cell} must be a number in [0, {MAX_ARRIVAL_S:g}] seconds",
                            where=f"{path}:{lineno}")
        if times and t < times[-1] / 1e6:
            raise UserError(f"arrival times must be sorted ({cell} s comes after {times[-1] / 1e6:g} s)",
                            where=f"{path}:{lineno}")
        times.append(t * 1e6)
    if not times:
        raise UserError("no arrival times", where=str(path))
    return np.asarray(times) - times[0]
