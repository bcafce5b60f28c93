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
- `inputs.json`: a digest of each input the runs read (written by the runner).

Every one of these files is the sweep's own: one that is a symbolic link (or a directory, a FIFO) is
refused, naming it, before anything is read or written, and the lock and journal are opened with
`O_NOFOLLOW`, so a sweep never reads or writes through a link into a file that is not its own.

A run key appears at most once: re-running a sweep skips keys already in the journal
(finished successfully), and failed runs are retried. A line of the journal that is not a
valid record (a torn write, a hand edit; see `_record`: a record as a sweep writes it, so no NaN or
infinity, which JSON has no words for) is dropped and reported, and its run runs again; every
valid line is kept.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import stat
import time
from pathlib import Path
from typing import IO, Any

import pandas as pd

from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output, check_output_dir, write_text
from speedsim.simulate.schema import NUMERIC
from speedsim.sweep.execute import COLUMNS
from speedsim.userpath import os_errors, probe, shown

JOURNAL = "runs.jsonl"
LOCK = ".lock"
PARQUET = "results.parquet"
CSV = "results.csv"
INPUTS = "inputs.json"  # digests of the inputs the runs read (written by the runner)
SPEC_COPY = "spec.yaml"  # a copy of the spec (written by the runner)
OWN_FILES = (LOCK, JOURNAL, PARQUET, CSV, INPUTS, SPEC_COPY)  # every file a sweep writes in its directory
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_LINK = ("{} is a symbolic link; a sweep writes its own files only, never through a link (remove it, or use "
         "a new directory)")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None (read back as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultStore:
    """Journal plus table of one sweep's results in `directory`. Messages about the directory name
    `where`, the flag it came from (`--out`; `--cache` for the report's sweeps)."""

    def __init__(self, directory: Path | str, flush_every_s: float = 2.0, where: str = "--out"):
        self.where = where
        self.dir = check_output_dir(directory, where)
        if self.dir.is_dir():
            for name in OWN_FILES:  # a link, FIFO or directory there would be written through, block or break
                _check_own_file(self.dir / name, where)
            _check_ours(self.dir, where)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create {self.dir}: {err.strerror}", where=where) from None
        self._lock = _take_lock(self.dir, where)
        try:
            self.flush_every_s = flush_every_s
            self._dirty = False
            self._last_flush = time.monotonic()
            with os_errors(where):
                self._runs, self.bad_lines = read_journal(self.dir / JOURNAL)
            if self.bad_lines:  # keep every valid record, drop the rest, so appends start clean
                text = "".join(_line(k, rows) for k, rows in self._runs.items())
                write_text(self.dir / JOURNAL, text, where=where)
                self._dirty = True
            self._fh = _open_own(self.dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a", where)
        except BaseException:
            self._lock.close()
            raise

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
        self.add_many([(key, rows)])

    def add_many(self, runs: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Record finished runs (key, rows) at once: appended to the journal with one write and one sync (a
        batch of a hardware grid: thousands of runs), the table rebuilt when due."""
        runs = [(key, [{k: _clean(v) for k, v in r.items()} for r in rows]) for key, rows in runs]
        with os_errors(self.where, "cannot write"):
            self._fh.write("".join(_line(key, rows) for key, rows in runs))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        for key, rows in runs:
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
        with atomic_write(self.dir / PARQUET, "wb", where=self.where) as fh:
            df.to_parquet(fh, index=False)
        with atomic_write(self.dir / CSV, "w", where=self.where, newline="") as fh:
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
    run key, method order). A function of the runs alone, so a read-only reader needs no store.
    A column of numbers is numbers (NaN where missing or not a number); any other column that mixes
    kinds of value (text and numbers: a hand-edited journal) is text, so the table can be sorted and
    written (a sweep's own rows never mix them)."""
    rows = [r for key in sorted(runs) for r in runs[key]]
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    for col in NUMERIC:  # numbers, NaN where missing (JSON null)
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in df.columns:
        if col not in NUMERIC and df[col].dtype == object and len({_kind(v) for v in df[col]} - {None}) > 1:
            df[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    order = {"speed": 0, "unshared": 1, "sequential": 2, "": 3}
    df = df.assign(_o=df["method"].map(order).fillna(9)).sort_values(["label", "run_key", "_o"], kind="stable")
    return df.drop(columns="_o").reset_index(drop=True)


def _kind(value: Any) -> str | None:
    """What kind of value a table cell holds: text, a truth value, a number, or None (missing)."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return None
    return "text" if isinstance(value, str) else "bool" if isinstance(value, bool) else "number"


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _cell(value: Any) -> bool:
    """Whether `value` is a table cell a sweep writes: text, a truth value, None, an integer of 64 bits or
    a finite number (never NaN or an infinity: JSON has no words for them, and `_line` writes none)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return value is None or isinstance(value, str | bool)


def _sweeps_line(line: str) -> bool:
    """Whether a journal line was a sweep's record, valid or not (one whose values were edited since, a NaN
    in it): a JSON object with a text "key" and a list of "rows". What tells a sweep's journal from
    another tool's file of the same name (`_journal_kind`); `_record` says whether it can be used."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return (isinstance(record, dict) and isinstance(record.get("key"), str)
            and isinstance(record.get("rows"), list))


def _record(line: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The (key, rows) of a journal line, or None if it is not a complete, valid record: a record as a
    sweep writes it (`_line`), a line ending in a newline holding {"key": KEY, "rows": [ROW, ...]}, at
    least one row, each an object of table cells (`_cell`: no NaN, no infinity, no nested value) whose
    run_key is KEY, whose status is "ok" or "error" and whose method and label are text."""
    try:
        record = json.loads(line, parse_constant=_no_constant) if line.endswith("\n") else None
        key, rows = record["key"], record["rows"]  # type: ignore[index]
    except (ValueError, TypeError, KeyError, RecursionError):  # json.JSONDecodeError is a ValueError
        return None
    if not isinstance(key, str) or not isinstance(rows, list) or not rows:
        return None
    for row in rows:
        if not isinstance(row, dict) or row.get("run_key") != key or row.get("status") not in ("ok", "error"):
            return None
        if not isinstance(row.get("method"), str) or not isinstance(row.get("label", ""), str):
            return None
        if not all(_cell(v) for v in row.values()):
            return None
    return key, rows


def _check_own_file(path: Path, where: str) -> None:
    """Refuse a file the sweep writes (`OWN_FILES`) that is a symbolic link (the sweep would read or write
    its target, a file that is not the sweep's), a directory or a special file; the link, and what it
    points at, are left alone."""
    st = probe(path, where, follow=False)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise UserError(_LINK.format(shown(path)), where=where)
    check_output(path, where)


def _open_own(path: Path, flags: int, mode: str, where: str) -> IO[str]:
    """`path`, a file of the sweep's, opened with `flags` (`O_NOFOLLOW`: a link put there since it was
    checked is refused, not followed) as a text file in `mode`; a `UserError` at `where` if it cannot be."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(_LINK.format(shown(path)), where=where) from None
        raise UserError(f"cannot open {shown(path)}: {err.strerror}", where=where) from None
    return os.fdopen(fd, mode, encoding="utf-8", errors="replace")


def _check_ours(directory: Path, where: str = "--out") -> None:
    """Refuse a directory that holds files and is not a sweep's output, so no file of someone else's is
    overwritten (a results.csv of another tool). Decided by the sweep's own files, never by a name
    alone: its journal holds a run record, or (a sweep stopped before its first run was recorded) holds
    no complete line while every other file there is one a sweep writes, with a sweep's content."""
    with os_errors(where, "cannot list"):
        entries = {p.name for p in directory.iterdir()}
    if not entries:
        return
    journal = _journal_kind(directory / JOURNAL, where) if JOURNAL in entries else f"no {JOURNAL}"
    if journal == "runs":
        return
    if journal == "empty":
        strange = sorted(n for n in entries - {JOURNAL} if not _sweep_file(directory / n))
        if not strange:
            return
        journal = f"{strange[0]} is not a sweep's"
    raise UserError(f"{directory} is not empty and is not a sweep's output ({journal}); use a new or empty "
                    "directory, so no file of yours is overwritten", where=where)


def _journal_kind(path: Path, where: str = "--out") -> str:
    """'runs' if a journal holds a sweep's record (read up to the first; `_sweeps_line`, even one no longer
    valid), 'empty' if it holds no complete line (a sweep stopped before its first record, or during its
    write), else why it is not a journal."""
    complete = False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if _sweeps_line(line):
                    return "runs"
                complete = complete or line.endswith("\n")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}", where=where) from None
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


def _take_lock(directory: Path, where: str = "--out") -> IO[str]:
    """An exclusive, non-blocking flock on DIR/.lock holding our pid; a UserError naming the holder."""
    fh = _open_own(directory / LOCK, os.O_RDWR | os.O_CREAT, "r+", where)  # closed by ResultStore.close
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = " ".join(fh.read(64).split()) or "unknown"
        fh.close()
        raise UserError(f"another sweep (pid {holder}) is writing to {directory}; wait for it or use another "
                        "directory", where=where) from None
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
