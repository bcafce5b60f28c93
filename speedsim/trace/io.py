"""Reading and writing exit traces: JSON Lines, one `ExitTrace` per line, gzip by `.gz` suffix."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from speedsim.errors import UserError, user_error
from speedsim.fileio import write_bytes
from speedsim.trace.schema import ExitTrace


def _open_read(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_traces(path: Path | str) -> Iterator[ExitTrace]:
    """Yield the traces of a .jsonl or .jsonl.gz file; a bad line is a `UserError` naming file:line."""
    path = Path(path)
    if not path.exists():
        raise UserError("trace file not found", where=str(path))
    try:
        with _open_read(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield ExitTrace.model_validate(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"not valid JSON ({err.msg})", where=f"{path}:{lineno}") from None
                except ValidationError as err:
                    raise user_error(err, f"{path}:{lineno}") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read trace file ({type(err).__name__}: {err})", where=str(path)) from None


def read_traces(path: Path | str) -> list[ExitTrace]:
    """All traces of a file (see `iter_traces`)."""
    return list(iter_traces(path))


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
