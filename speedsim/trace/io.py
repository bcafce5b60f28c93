"""Reading and writing exit traces: JSON Lines, one `ExitTrace` per line, gzip by `.gz` suffix.

A trace's path comes from the user (`--trace`, `--synthetic fit=`, a sweep spec's `trace:`): the
readers take `where`, the flag or field it came from, and check the path there first
(`speedsim.userpath`: malformed, unusable or absent is a one-line `UserError` at `where`);
without `where` the path names itself. What the file holds is named by file:line.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from speedsim.errors import UserError, user_error
from speedsim.fileio import OutputKind, head_text, write_bytes
from speedsim.paths import TRACE_DIR
from speedsim.trace.schema import ExitTrace
from speedsim.userpath import exists, path_problem, probe, shown, user_path


def open_trace_text(path: Path) -> IO[str]:
    """A trace file's text, decompressed if its name ends in .gz, without a byte-order mark."""
    # utf-8-sig: a byte-order mark (some editors write one) is not part of the first record
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return path.open("r", encoding="utf-8-sig")


def _parse(line: str, where: str) -> ExitTrace:
    try:
        record = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise UserError(f"not valid JSON ({getattr(err, 'msg', err)})", where=where) from None
    if not isinstance(record, dict) or "version" not in record:
        raise UserError("not an exit trace record (a JSON object with a 'version' field)", where=where)
    try:
        return ExitTrace.model_validate(record)
    except ValidationError as err:
        raise user_error(err, where) from None


# how `write_traces` starts every record (pydantic writes the fields in order): a first line longer than
# the head read to recognise a file (a long sequence at large R) is recognised by it
_RECORD_START = re.compile(r'\{"version":\d+,"seq_id":')


def _is_trace_file(path: Path) -> bool:
    """Whether a file's first record is an exit-trace record (a JSON object with its fields); a trace of
    no sequences (an empty gzip stream) counts as one."""
    first = next((line for line in head_text(path).lstrip("\ufeff").splitlines() if line.strip()), None)
    if first is None or _RECORD_START.match(first):
        return True
    record = json.loads(first)
    return isinstance(record, dict) and {"version", "seq_id", "exits"} <= record.keys()


TRACE_FILE = OutputKind("an exit-trace file (JSON lines of speedsim trace records)", _is_trace_file)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict; a key given twice is an error (JSON would silently keep the last)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' is given twice")
        out[key] = value
    return out


def iter_traces(path: Path | str, where: str | None = None) -> Iterator[ExitTrace]:
    """Yield the traces of a .jsonl or .jsonl.gz file; a bad line is a `UserError` naming file:line.

    Each sequence id appears once per file (a repeated id is an error, not a silent duplicate). A path
    that is malformed, unusable or absent is a `UserError` at `where` (the flag or field it came from;
    None: the file), one that is not a regular file names the file.
    """
    label = where or shown(path)
    path = user_path(path, label)
    st = probe(path, label)
    if st is None:
        raise UserError("trace file not found" if where is None else f"no such trace file: {shown(path)}",
                        where=label)
    if not stat.S_ISREG(st.st_mode):
        raise UserError("not a regular file", where=str(path))
    seen: set[str] = set()
    try:
        with open_trace_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                trace = _parse(line, f"{path}:{lineno}")
                if trace.seq_id in seen:
                    raise UserError(f"seq_id '{trace.seq_id}' appears twice", where=f"{path}:{lineno}")
                seen.add(trace.seq_id)
                yield trace
    except (OSError, EOFError, UnicodeDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read trace file ({type(err).__name__}: {err})", where=str(path)) from None


def resolve_trace(name: str | Path, base_dir: str | Path = "", where: str | None = None) -> Path:
    """A shipped trace name (`4x3`: experiments/traces/4x3.jsonl.gz) or a path (absolute, or
    relative to `base_dir` when it exists there, else to the working directory). Nothing need be
    there (`iter_traces` says so); a malformed name, or an operating-system error asking whether a
    candidate exists (a link loop), is a `UserError` at `where` (the flag or field it came from; None:
    the name itself)."""
    text = str(name)
    label = where or shown(text)
    user_path(text, label)
    shipped = TRACE_DIR / f"{text}.jsonl.gz"
    bare = "/" not in text and not text.endswith((".jsonl", ".gz"))  # a name, not a path: shipped or nothing
    # (a candidate the file system could not hold, such as a name of 250 characters and .jsonl.gz, is none)
    if bare or path_problem(shipped) is None and exists(shipped, label):
        return shipped
    path = Path(text)
    if not path.is_absolute() and base_dir:
        based = Path(base_dir) / path
        if path_problem(based) is None and exists(based, label):
            return based
    return path


def read_traces(path: Path | str, where: str | None = None) -> list[ExitTrace]:
    """All traces of a file (see `iter_traces`)."""
    return list(iter_traces(path, where))


def write_traces(path: Path | str, traces: Iterable[ExitTrace]) -> int:
    """Write traces atomically (`speedsim.fileio`), gzip if the name ends in .gz; how many were written.

    A gzip header without a name and with mtime 0 makes the same traces give byte-identical files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [tr.model_dump_json(exclude_none=False) + "\n" for tr in traces]
    data = "".join(lines).encode("utf-8")
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    write_bytes(path, data)
    return len(lines)
