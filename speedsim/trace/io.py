"""Reading and writing exit traces: JSON Lines, one `ExitTrace` per line, gzip by `.gz` suffix."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from speedsim.errors import UserError
from speedsim.trace.schema import ExitTrace


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        if mode.startswith("w"):
            # no name and mtime=0 in the header: the same traces give byte-identical files
            raw = gzip.GzipFile(filename="", mode="wb", fileobj=path.open("wb"), mtime=0)
            return _OwningText(raw)
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(mode, encoding="utf-8")


class _OwningText(io.TextIOWrapper):
    """Text over a GzipFile that also closes the file object the GzipFile was given."""

    def __init__(self, raw: gzip.GzipFile):
        super().__init__(raw, encoding="utf-8")  # type: ignore[arg-type]
        self._file = raw.fileobj

    def close(self) -> None:
        super().close()
        if self._file is not None:
            self._file.close()


def iter_traces(path: Path | str) -> Iterator[ExitTrace]:
    """Yield the traces of a .jsonl or .jsonl.gz file; a bad line is a `UserError` naming file:line."""
    path = Path(path)
    if not path.exists():
        raise UserError("trace file not found", where=str(path))
    try:
        with _open_text(path, "r") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield ExitTrace.model_validate(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"not valid JSON ({err.msg})", where=f"{path}:{lineno}") from None
                except ValidationError as err:
                    e = err.errors()[0]
                    field = ".".join(str(p) for p in e["loc"]) or "record"
                    raise UserError(f"{field}: {e['msg']}", where=f"{path}:{lineno}") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read trace file ({type(err).__name__}: {err})", where=str(path)) from None


def read_traces(path: Path | str) -> list[ExitTrace]:
    """All traces of a file (see `iter_traces`)."""
    return list(iter_traces(path))


def write_traces(path: Path | str, traces: Iterable[ExitTrace]) -> int:
    """Write traces atomically (temporary file, then rename); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix on the temporary name so gzip is chosen the same way
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    n = 0
    try:
        with _open_text(tmp, "w") as f:
            for tr in traces:
                f.write(tr.model_dump_json(exclude_none=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
