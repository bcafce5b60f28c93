"""Building a corpus directory: extract every source file (a process pool of `speedsim.procs`), split,
deduplicate and count, write the data files (xz streams compressed in parallel), then the manifest."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import lzma
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speedsim.data.extract import extract_file, pair_texts
from speedsim.data.layout import (
    CORPUS_VERSION,
    DATA_FILES,
    MANIFEST,
    SPLIT_PERMILLE,
    SPLITS,
    TASKS,
    Document,
    sha256_file,
    split_of,
)
from speedsim.data.sources import SourceRoot
from speedsim.fileio import atomic_write, write_text
from speedsim.procs import pool as process_pool

XZ_PRESET = 3  # xz level: 6 is 3x slower to build for a corpus 8% smaller
POOL_MIN_FILES = 200  # fewer files than this are parsed in-process (a pool costs more than it saves)


class _Builder:
    """Collects the extraction results of every file, deduplicated, with per-package counts."""

    def __init__(self, roots: Sequence[SourceRoot]):
        self.roots = roots
        self.seen_files: set[str] = set()
        self.seen_code: set[str] = set()
        self.docs: list[Document] = []
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in TASKS}  # examples as spans into docs
        self.split_of_task = {t: dict.fromkeys(SPLITS, 0) for t in TASKS}
        self.packages: dict[str, dict[str, Any]] = {
            r.package: {"version": r.version, "files": len(r.files), "modules": 0, "duplicates": 0,
                        "unparsed": 0, "bytes": 0, "summarize": 0, "continue": 0}
            for r in roots
        }

    def add(self, package: str, module: str, result: Any) -> None:
        counts = self.packages[package]
        if result is None:
            counts["unparsed"] += 1
            return
        sha, text, pairs, cont = result
        if sha in self.seen_files:
            counts["duplicates"] += 1
            return
        self.seen_files.add(sha)
        doc = len(self.docs)
        split = split_of(module, package)
        counts["modules"] += 1
        counts["bytes"] += len(text.encode())
        self.docs.append(Document(package, module, split, text))
        src_lines = text.splitlines(keepends=True)
        for qual, span, target in pairs:
            key = hashlib.sha256((pair_texts(src_lines, span) or "").encode()).hexdigest()
            if key not in self.seen_code:  # the same function copied into two modules
                self.seen_code.add(key)
                self.records["summarize"].append({"doc": doc, "qual": qual, "span": span, "target": target})
                self.split_of_task["summarize"][split] += 1
                counts["summarize"] += 1
        for qual, span in cont:
            self.records["continue"].append({"doc": doc, "qual": qual, "span": span})
            self.split_of_task["continue"][split] += 1
            counts["continue"] += 1

    def split_counts(self) -> dict[str, dict[str, int]]:
        out = {s: {"modules": 0, "bytes": 0, "summarize": 0, "continue": 0} for s in SPLITS}
        for d in self.docs:
            out[d.split]["modules"] += 1
            out[d.split]["bytes"] += len(d.text.encode())
        for task, counts in self.split_of_task.items():
            for split, n in counts.items():
                out[split][task] = n
        return out


def _jobs(roots: Sequence[SourceRoot]) -> list[tuple[str, str, str]]:
    jobs, seen = [], set()
    for root in roots:
        for f in root.files:
            if (root.package, f.module) not in seen:  # foo.py beside foo/__init__.py: keep one
                seen.add((root.package, f.module))
                jobs.append((root.package, f.module, str(f.path)))
    return jobs


def _workers() -> int:
    return min(len(os.sched_getaffinity(0)), 8)


def _pmap(fn: Callable[[Any], Any], items: Sequence[Any], desc: str, unit: str, parallel: bool, progress: bool) -> Iterator[Any]:
    """`map(fn, items)` in order, in a process pool if `parallel`, with a progress bar on stderr. A pool's
    workers are fresh interpreters (`speedsim.procs`) that import `fn`'s module."""
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, file=sys.stderr)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        if parallel:
            pool = stack.enter_context(process_pool(_workers()))
            results: Iterator[Any] = pool.imap(fn, items, chunksize=max(1, min(16, len(items) // (8 * _workers()))))
        else:
            results = map(fn, items)
        for result in results:
            yield result
            bar.update(1)


def _write_jsonl_xz(path: Path, records: list[dict[str, Any]], progress: bool) -> None:
    """JSON Lines, xz-compressed as independent streams compressed in parallel (an xz reader
    reads concatenated streams as one file)."""
    lines = [json.dumps(rec, ensure_ascii=False) + "\n" for rec in records]
    per = max(1, -(-len(lines) // (4 * _workers())))
    chunks = ["".join(lines[i : i + per]).encode() for i in range(0, len(lines), per)] or [b""]
    # lzma's own function, not one of this package's: a worker need not import speedsim.data (and torch)
    compress = functools.partial(lzma.compress, preset=XZ_PRESET)
    with atomic_write(path, "wb") as fh:
        for blob in _pmap(compress, chunks, f"compress {path.name}", "chunk", len(lines) >= POOL_MIN_FILES, progress):
            fh.write(blob)


def build_corpus(out_dir: Path, roots: Sequence[SourceRoot], source_fingerprint: str, progress: bool = True) -> dict[str, Any]:
    """Extract every root into `out_dir` (data files first, the manifest last); returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    b = _Builder(roots)
    jobs = _jobs(roots)
    results = _pmap(extract_file, [p for _, _, p in jobs], "corpus", "file", len(jobs) >= POOL_MIN_FILES, progress)
    for (package, module, _), result in zip(jobs, results, strict=True):
        b.add(package, module, result)
    _write_jsonl_xz(out_dir / DATA_FILES[0], [asdict(d) for d in b.docs], progress)
    for task in TASKS:
        _write_jsonl_xz(out_dir / f"{task}.jsonl.xz", b.records[task], progress)
    splits = b.split_counts()
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "fingerprint": source_fingerprint,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "split_permille": SPLIT_PERMILLE,
        "totals": {k: sum(s[k] for s in splits.values()) for k in ("modules", "bytes", "summarize", "continue")},
        "splits": splits,
        "packages": b.packages,
        "files": {name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size} for name in DATA_FILES},
    }
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
