"""The results table of a sweep, written as runs finish and safe to interrupt.

Layout of an output directory:

- `runs.jsonl`: the journal. Each finished run appends one line (its key and its rows) and
  flushes it to disk before the next is accepted, so a killed sweep loses at most the run
  that was being written; a torn last line is ignored when reading (that run runs again).
- `results.parquet` and `results.csv`: the tidy table (one row per run and method), rebuilt
  from the journal by write-then-rename (never half-written), at most every
  `flush_every_s` seconds while the sweep runs and once at its end.
- `spec.yaml`: a copy of the spec the sweep ran.
- `.lock`: held (flock) by the one sweep writing here, with its pid; a second sweep into the
  same directory is refused with that pid.

A run key appears at most once: re-running a sweep skips keys already in the journal
(finished successfully), and failed runs are retried. A line of the journal that is not a
valid record (a torn write, a hand edit) is dropped and reported; every valid line is kept.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output, check_output_dir, write_text
from speedsim.simulate.schema import NUMERIC
from speedsim.sweep.execute import COLUMNS

JOURNAL = "runs.jsonl"
LOCK = ".lock"
PARQUET = "results.parquet"
CSV = "results.csv"
INPUTS = "inputs.json"  # digests of the inputs the runs read (written by the runner)
SPEC_COPY = "spec.yaml"  # a copy of the spec (written by the runner)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None (read back as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultStore:
    """Journal plus table of one sweep's results in `directory`."""

    def __init__(self, directory: Path | str, flush_every_s: float = 2.0):
        self.dir = check_output_dir(directory, "--out")
        if self.dir.is_dir():
            for name in (LOCK, JOURNAL, PARQUET, CSV):  # a FIFO or directory there would block or break a write
                check_output(self.dir / name, "--out")
            _check_ours(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create {self.dir}: {err.strerror}", where="--out") from None
        self._lock = _take_lock(self.dir)
        self.flush_every_s = flush_every_s
        self._dirty = False
        self._last_flush = time.monotonic()
        self._runs, self.bad_lines = read_journal(self.dir / JOURNAL)
        if self.bad_lines:  # keep every valid record, drop the rest, so appends start clean
            write_text(self.dir / JOURNAL, "".join(_line(k, rows) for k, rows in self._runs.items()))
            self._dirty = True
        self._fh = open(self.dir / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    # ---------------------------------------------------------------- reading

    def keys(self) -> set[str]:
        """Keys of every recorded run, finished or failed."""
        return set(self._runs)

    def finished(self) -> set[str]:
        """Keys of runs that completed successfully (skipped on resume)."""
        return {k for k, rows in self._runs.items() if rows and rows[0].get("status") == "ok"}

    def failed(self) -> dict[str, str]:
        return {k: rows[0].get("error", "") for k, rows in self._runs.items() if rows[0].get("status") != "ok"}

    # ---------------------------------------------------------------- writing

    def add(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Record a finished run: append to the journal now, rebuild the table when due."""
        rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
        self._fh.write(_line(key, rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._runs[key] = rows
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.write_table()

    def frame(self) -> pd.DataFrame:
        """The tidy table: one row per run and method, sorted by (label, run key, method order)."""
        return results_frame(self._runs)

    def write_table(self) -> None:
        """Rebuild results.parquet and results.csv from every recorded run (write, then rename)."""
        df = self.frame()
        with atomic_write(self.dir / PARQUET, "wb") as fh:
            df.to_parquet(fh, index=False)
        with atomic_write(self.dir / CSV, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        self._dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        try:
            if self._dirty or not (self.dir / PARQUET).exists():
                self.write_table()
        finally:
            self._fh.close()
            self._lock.close()  # releases the flock

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def results_frame(runs: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """The tidy table of recorded runs (key -> rows): one row per run and method, sorted by (label,
    run key, method order). A function of the runs alone, so a read-only reader needs no store."""
    rows = [r for key in sorted(runs) for r in runs[key]]
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    for col in NUMERIC:  # numbers, NaN where missing (JSON null)
        df[col] = pd.to_numeric(df[col], errors="coerce")
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    order = {"speed": 0, "unshared": 1, "sequential": 2, "": 3}
    df = df.assign(_o=df["method"].map(order).fillna(9)).sort_values(["label", "run_key", "_o"], kind="stable")
    return df.drop(columns="_o").reset_index(drop=True)


def _line(key: str, rows: list[dict[str, Any]]) -> str:
    return json.dumps({"key": key, "rows": rows}, sort_keys=True, allow_nan=False) + "\n"


def read_journal(path: Path) -> tuple[dict[str, list[dict[str, Any]]], list[int]]:
    """The runs recorded in a journal (a retried run's last record wins) and the numbers of lines
    that are not valid records (a torn last write, a corrupted line), which are skipped."""
    runs: dict[str, list[dict[str, Any]]] = {}
    bad: list[int] = []
    if not path.exists():
        return runs, bad
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            record = _record(line)
            if record is None:
                bad.append(lineno)
            else:
                runs[record[0]] = record[1]
    return runs, bad


def _record(line: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The (key, rows) of a journal line, or None if it is not a complete, valid record."""
    try:
        record = json.loads(line) if line.endswith("\n") else None
        key, rows = record["key"], record["rows"]  # type: ignore[index]
    except (json.JSONDecodeError, TypeError, KeyError):
        return None
    if not isinstance(key, str) or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return None
    return key, rows


def _check_ours(directory: Path) -> None:
    """Refuse a directory that holds files and is not a sweep's output, so no file of someone else's is
    overwritten (a results.csv of another tool). Decided by the sweep's own files, never by a name
    alone: its journal holds a run record, or (a sweep stopped before its first run was recorded) holds
    no complete line while every other file there is one a sweep writes, with a sweep's content."""
    entries = {p.name for p in directory.iterdir()}
    if not entries:
        return
    journal = _journal_kind(directory / JOURNAL) if JOURNAL in entries else f"no {JOURNAL}"
    if journal == "runs":
        return
    if journal == "empty":
        strange = sorted(n for n in entries - {JOURNAL} if not _sweep_file(directory / n))
        if not strange:
            return
        journal = f"{strange[0]} is not a sweep's"
    raise UserError(f"{directory} is not empty and is not a sweep's output ({journal}); use a new or empty "
                    "directory, so no file of yours is overwritten", where="--out")


def _journal_kind(path: Path) -> str:
    """'runs' if a journal holds a run record (read up to the first), 'empty' if it holds no complete line
    (a sweep stopped before its first record, or during its write), else why it is not a journal."""
    complete = False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if _record(line) is not None:
                    return "runs"
                complete = complete or line.endswith("\n")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}", where="--out") from None
    return f"{JOURNAL} holds no run record" if complete else "empty"


TABLE_HEAD = list(COLUMNS[:3])  # run_key, method, status: the first columns of every results table a sweep wrote


def _sweep_file(path: Path) -> bool:
    """Whether `path` reads as a file a sweep writes beside its journal: the lock (a pid, or empty), the
    table (CSV or Parquet), the inputs record, the spec copy, or a temporary file of an interrupted write."""
    name = path.name
    if path.is_symlink() or not path.is_file():  # a directory, or a FIFO whose read would block
        return False
    if name.startswith(".") and name.endswith(".tmp"):  # `atomic_write`'s, left by a kill
        return name[1:].startswith((JOURNAL, CSV, PARQUET, INPUTS, SPEC_COPY))
    try:
        if name == LOCK:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(64).strip()
            return not text or text.isdigit()
        if name == CSV:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n").split(",")[:3] == TABLE_HEAD
        if name == PARQUET:
            import pyarrow.parquet as pq

            return pq.read_schema(path).names[:3] == TABLE_HEAD
        if name == INPUTS:
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
        if name == SPEC_COPY:
            from speedsim.sweep.spec import load_spec

            load_spec(path)
            return True
    except (OSError, ValueError, UserError):  # pyarrow's ArrowInvalid and UnicodeDecodeError are ValueErrors
        return False
    return False


def _take_lock(directory: Path):
    """An exclusive, non-blocking flock on DIR/.lock holding our pid; a UserError naming the holder."""
    fh = open(directory / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - closed by ResultStore.close
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise UserError(f"another sweep (pid {holder}) is writing to {directory}; wait for it or use another "
                        "directory", where="--out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def read_results(directory: Path | str) -> pd.DataFrame:
    """The results table of a finished (or interrupted) sweep directory, journal included (read-only)."""
    directory = Path(directory)
    if (directory / JOURNAL).exists():
        runs, _ = read_journal(directory / JOURNAL)
        return results_frame(runs)
    return pd.read_parquet(directory / PARQUET)
