"""The checks of a run's exit traces, one set for `simulate`, `serve` and sweeps.

- every sequence has the run's R exits (`check_trace_repeats`; for a file, naming its line);
- there is something to decode after the prefill (`check_decodable`): a sequence, and one of more
  than one token (a serving run takes prefill-only requests: `decode=False` checks only the first).

`check_trace_file` applies both to a trace file before any run starts (a sweep's plan); a run
applies them to the traces it loaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from speedsim.errors import UserError
from speedsim.sharing import Sharing
from speedsim.trace.io import iter_traces, open_trace_text
from speedsim.trace.schema import ExitTrace


def check_trace_repeats(traces: Sequence[ExitTrace], sharing: Sharing, where: str = "--trace") -> None:
    """A `UserError` naming the first sequence whose number of exits is not the sharing's R."""
    for trace in traces:
        if trace.repeats != sharing.repeats:
            raise UserError(f"trace '{trace.seq_id}' has R={trace.repeats} exits but --sharing is {sharing}",
                            where=where)


def check_decodable(lengths: Sequence[int], decode: bool = True) -> None:
    """A `UserError` if there are no sequences (of `lengths` output tokens) or, for a decode (`decode`),
    if every one has at most one token: nothing is decoded after the prefill."""
    if not lengths:
        raise UserError("no sequences to simulate", where="--trace")
    if decode and all(n <= 1 for n in lengths):
        raise UserError("every sequence is empty or has one token: nothing is decoded after the prefill",
                        where="--trace")


@lru_cache(maxsize=64)
def trace_sequences(path: str) -> tuple[tuple[str, int, int], ...]:
    """(seq_id, R, generated positions) of each sequence of a trace file, in order.

    The whole file is read and validated, so a bad line or a sequence with another R anywhere in it
    fails before a run does (a shipped trace, 200 sequences, reads in a few milliseconds).
    """
    return tuple((t.seq_id, t.repeats, len(t.exits)) for t in iter_traces(path))


def _line_of(path: Path, index: int) -> int:
    """Line number of the `index`-th sequence of a trace file (blank lines hold none, as `iter_traces` reads)."""
    with open_trace_text(path) as fh:
        return next(itertools.islice((n for n, line in enumerate(fh, 1) if line.strip()), index, None))


def check_trace_file(path: Path, sharing: Sharing, limit: int | None = None, decode: bool = True) -> None:
    """Refuse a trace file whose simulated sequences (the first `limit`) a run would refuse: another R
    than the sharing's (any sequence, naming its line), or nothing to decode after the prefill."""
    if not path.exists():
        raise UserError(f"no trace file {path}")
    seqs = trace_sequences(str(path))[:limit]
    if not seqs:
        raise UserError(f"{path}: trace file has no sequences")
    for i, (seq_id, r, _) in enumerate(seqs):
        if r != sharing.repeats:
            raise UserError(f"{path}:{_line_of(path, i)}: sequence '{seq_id}' has R={r} exits but sharing is "
                            f"{sharing}")
    if decode and all(n <= 1 for _, _, n in seqs):
        raise UserError(f"{path}: every sequence{f' of the first {limit}' if limit else ''} "
                        "has at most one token: nothing is decoded after the prefill")
