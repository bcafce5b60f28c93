"""The results table of a sweep, written as runs finish and safe to interrupt.

Layout of an output directory:

- `runs.jsonl`: the journal. Each finished run appends one line (its key and its rows) and
  flushes it to disk before the next is accepted, so a killed sweep loses at most the run
  that was being written; a torn last line is ignored when reading (that run runs again).
- `results.parquet` and `results.csv`: the tidy table (one row per run and method), rebuilt
  from the journal by write-then-rename (never half-written), at most every
  `flush_every_s` seconds while the sweep runs and once at its end.
- `spec.yaml`: a copy of the spec the sweep ran.

A run key appears at most once: re-running a sweep skips keys already in the journal
(finished successfully), and failed runs are retried.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from speedsim.fileio import atomic_write
from speedsim.simulate.schema import NUMERIC
from speedsim.sweep.execute import COLUMNS

JOURNAL = "runs.jsonl"
PARQUET = "results.parquet"
CSV = "results.csv"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None (read back as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultStore:
    """Journal plus table of one sweep's results in `directory`."""

    def __init__(self, directory: Path | str, flush_every_s: float = 2.0):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_every_s = flush_every_s
        self._runs: dict[str, list[dict[str, Any]]] = {}
        self._dirty = False
        self._last_flush = time.monotonic()
        self._read_journal()
        self._fh = open(self.dir / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    # ---------------------------------------------------------------- reading

    def _read_journal(self) -> None:
        path = self.dir / JOURNAL
        if not path.exists():
            return
        good = 0
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn last line of an interrupted sweep
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                self._runs[record["key"]] = record["rows"]  # a retried run replaces its failure
                good += len(line.encode("utf-8"))
        if good != path.stat().st_size:
            with open(path, "r+b") as fh:  # drop the torn tail so appends start on a line boundary
                fh.truncate(good)
            self._dirty = True

    def finished(self) -> set[str]:
        """Keys of runs that completed successfully (skipped on resume)."""
        return {k for k, rows in self._runs.items() if rows and rows[0].get("status") == "ok"}

    def failed(self) -> dict[str, str]:
        return {k: rows[0].get("error", "") for k, rows in self._runs.items() if rows[0].get("status") != "ok"}

    # ---------------------------------------------------------------- writing

    def add(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Record a finished run: append to the journal now, rebuild the table when due."""
        rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
        self._fh.write(json.dumps({"key": key, "rows": rows}, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._runs[key] = rows
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.write_table()

    def frame(self) -> pd.DataFrame:
        """The tidy table: one row per run and method, sorted by (label, run key, method order)."""
        rows = [r for key in sorted(self._runs) for r in self._runs[key]]
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
        if self._dirty or not (self.dir / PARQUET).exists():
            self.write_table()
        self._fh.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_results(directory: Path | str) -> pd.DataFrame:
    """The results table of a finished (or interrupted) sweep directory, journal included."""
    directory = Path(directory)
    if (directory / JOURNAL).exists():
        store = ResultStore.__new__(ResultStore)
        store.dir, store._runs, store._dirty = directory, {}, False
        # read-only: parse the journal without truncating or opening it for append
        with open(directory / JOURNAL, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                store._runs[record["key"]] = record["rows"]
        return store.frame()
    return pd.read_parquet(directory / PARQUET)
