"""The corpus: Python source of the standard library and the installed packages (no download).

One extraction pass (`speedsim.data.extract`, a process pool over files, progress on stderr)
gives three things, each split deterministically by package and module (a hash of
``package/module``, so no module contributes to two splits):

- ``documents``: the text of every module, for pre-training on raw code;
- ``summarize``: function-docstring pairs, the fine-tuning task (code to docstring);
- ``continue``: function prefix to the rest of the function (decoder-only second task).

Files are deduplicated by content hash (vendored copies), pairs by their code. The corpus
lives in one directory (xz-compressed JSON Lines and a ``manifest.json`` with each package's
version, the counts and each file's sha256), small enough to carry to another machine:
`SPEEDSIM_CORPUS=DIR` pins a corpus directory (used as it is, never rebuilt), which is how
a GPU machine with other packages trains on the corpus built here. Otherwise the corpus is
cached under `default_cache_dir()`; a cache that is corrupt or was built from other package
versions is rebuilt, with a message on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import lzma
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speedsim.data.extract import continue_texts, extract_file, pair_texts
from speedsim.data.sources import SourceRoot, explicit_roots, fingerprint, installed_roots
from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output_dir, write_text
from speedsim.procs import pool as process_pool

TASKS = ("summarize", "continue")
SPLITS = ("train", "validation", "test")
# Bump when extraction changes, so stale caches are rebuilt rather than reused.
CORPUS_VERSION = 2
# Per-mille of modules in each split, by hash of "package/module".
SPLIT_PERMILLE = {"train": 900, "validation": 50, "test": 50}
PINNED_ENV = "SPEEDSIM_CORPUS"  # a corpus directory to use as it is (carried from another machine)
MANIFEST = "manifest.json"
DATA_FILES = ("documents.jsonl.xz", "summarize.jsonl.xz", "continue.jsonl.xz")
XZ_PRESET = 3  # xz level: 6 is 3x slower to build for a corpus 8% smaller
POOL_MIN_FILES = 200  # fewer files than this are parsed in-process (a pool costs more than it saves)


@dataclass(frozen=True)
class Example:
    """One (source, target) pair. Text, not token ids: tokenisation is the tokenizer's job."""

    id: str  # "package/module:qualname:lineno"
    module: str  # dotted module name
    split: str  # train | validation | test
    source: str  # encoder input (summarize) or prompt (continue)
    target: str  # docstring prose (summarize) or the rest of the function (continue)


@dataclass(frozen=True)
class Document:
    """One module's source text (pre-training data)."""

    package: str
    module: str
    split: str
    text: str


def default_cache_dir() -> Path:
    """`$SPEEDSIM_CACHE` if set, else `~/.cache/speedsim`."""
    env = os.environ.get("SPEEDSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "speedsim"


def split_of(module: str, package: str = "") -> str:
    """Deterministic split of a module: sha256 of "package/module", modulo 1000."""
    key = f"{package}/{module}" if package else module
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 1000
    if h < SPLIT_PERMILLE["train"]:
        return "train"
    if h < SPLIT_PERMILLE["train"] + SPLIT_PERMILLE["validation"]:
        return "validation"
    return "test"


def _note(message: str) -> None:
    sys.stderr.write(f"speedsim: {message}\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ building
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
        "files": {name: {"sha256": _sha256(out_dir / name), "bytes": (out_dir / name).stat().st_size} for name in DATA_FILES},
    }
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


# ------------------------------------------------------------------------------ the cache
def read_manifest(directory: Path) -> dict[str, Any] | str:
    """The manifest of a complete, intact corpus directory, or why it is not one."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({type(err).__name__})"
    if not isinstance(manifest, dict) or manifest.get("corpus_version") != CORPUS_VERSION:
        return f"corpus format {manifest.get('corpus_version') if isinstance(manifest, dict) else '?'}, expected {CORPUS_VERSION}"
    for name in DATA_FILES:
        path = directory / name
        want = manifest.get("files", {}).get(name, {})
        if not path.exists() or path.stat().st_size != want.get("bytes") or _sha256(path) != want.get("sha256"):
            return f"{name} is missing or does not match the manifest"
    return manifest


@dataclass(frozen=True)
class Corpus:
    """A complete corpus directory and its manifest."""

    directory: Path
    manifest: dict[str, Any]
    _docs: list[Document] | None = field(default=None, repr=False, compare=False)  # read once, on first use

    def examples(self, task: str) -> list[Example]:
        """All examples of `task` (every split), in corpus order."""
        if task not in TASKS:
            raise UserError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})", where="task")
        docs = self.documents()
        lines: dict[int, list[str]] = {}
        out = []
        for rec in self._records(f"{task}.jsonl.xz"):
            d = docs[rec["doc"]]
            if rec["doc"] not in lines:
                lines[rec["doc"]] = d.text.splitlines(keepends=True)
            src_lines = lines[rec["doc"]]
            ex_id = f"{d.package}/{d.module}:{rec['qual']}:{rec['span'][0]}"
            if task == "summarize":
                source, target = pair_texts(src_lines, rec["span"]) or "", rec["target"]
            else:
                source, target = continue_texts(src_lines, rec["span"])
            out.append(Example(ex_id, d.module, d.split, source, target))
        return out

    def documents(self, split: str | None = None) -> list[Document]:
        """The module texts of `split` (all splits if None), in corpus order."""
        if split is not None:
            return [d for d in self.documents() if d.split == split]
        if self._docs is None:
            object.__setattr__(self, "_docs", [Document(**rec) for rec in self._records(DATA_FILES[0])])
        return self._docs  # type: ignore[return-value]

    def _records(self, name: str) -> Iterator[dict[str, Any]]:
        path = self.directory / name
        try:
            with lzma.open(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise UserError(f"corrupt corpus ({err.msg}); delete it to rebuild", where=f"{path}:{lineno}") from None
        except (lzma.LZMAError, EOFError, OSError) as err:
            raise UserError(f"corrupt corpus ({err}); delete it to rebuild", where=str(path)) from None


def _cache_dir_for(cache_dir: Path, sources: Sequence[Path | str] | None) -> Path:
    if sources is None:
        return cache_dir / f"corpus-v{CORPUS_VERSION}-installed"
    key = hashlib.sha256("\0".join(str(Path(s).resolve()) for s in sources).encode()).hexdigest()[:12]
    return cache_dir / f"corpus-v{CORPUS_VERSION}-sources-{key}"


def pinned_corpus(directory: Path | str) -> Corpus:
    """A carried corpus directory, used as it is; a damaged one is a `UserError` (it cannot be rebuilt here)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if isinstance(manifest, str):
        raise UserError(f"not a usable corpus: {manifest}", where=str(directory))
    return Corpus(directory, manifest)


def open_corpus(
    cache_dir: Path | str | None = None, sources: Sequence[Path | str] | None = None, progress: bool = True
) -> Corpus:
    """The corpus of `sources` (directories or files; default: the stdlib and every installed
    package), built on first use and cached; `$SPEEDSIM_CORPUS` pins a directory instead."""
    pinned = os.environ.get(PINNED_ENV)
    if pinned and sources is None:
        return pinned_corpus(pinned)
    # $SPEEDSIM_CACHE naming a file: one line, not a traceback after a "rebuilding" note (a read-only
    # cache that is built is fine: nothing is written to it)
    _check_cache_dir(Path(cache_dir) if cache_dir else default_cache_dir(),
                     "$SPEEDSIM_CACHE" if cache_dir is None and os.environ.get("SPEEDSIM_CACHE") else None)
    roots = installed_roots() if sources is None else explicit_roots(sources)
    want = fingerprint(roots, extra=f"v{CORPUS_VERSION}")
    directory = _cache_dir_for(Path(cache_dir) if cache_dir else default_cache_dir(), sources)
    manifest = read_manifest(directory)
    if isinstance(manifest, dict) and manifest.get("fingerprint") == want:
        return Corpus(directory, manifest)
    if isinstance(manifest, dict):
        _note(f"corpus cache {directory} was built from other package versions ({_changed(manifest, roots)}); rebuilding")
    elif manifest != "no manifest":
        _note(f"corpus cache {directory} is corrupt ({manifest}); rebuilding")
    return Corpus(directory, build_corpus(directory, roots, want, progress))


def _check_cache_dir(path: Path, where: str | None) -> None:
    """A `UserError` naming `where` (default: the path) if the cache directory is, or would be created
    under, something that is not a directory."""
    here = path
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        what = "is not a directory" if here == path else f"cannot be created: {here} is not a directory"
        raise UserError(f"cache {path} {what}", where=where or str(path))


def _changed(manifest: dict[str, Any], roots: Sequence[SourceRoot]) -> str:
    old = {k: v.get("version") for k, v in manifest.get("packages", {}).items()}
    new = {r.package: r.version for r in roots}
    diffs = [f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    return ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "") if diffs else "source files changed"


def _corpus_file(name: str) -> bool:
    """Whether a file name is one a corpus directory holds (or `atomic_write`'s temporary file of one)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rsplit(".", 2)[0]
    return name in DATA_FILES or name == MANIFEST or (name.startswith("tokenizer-") and name.endswith(".json"))


def check_export_dir(out_dir: Path | str, where: str | None = None) -> Path:
    """`out_dir` as a Path if a corpus may be exported to it: a new or empty directory, or an earlier
    export, whole (its manifest names a corpus format) or cut short (only corpus files: the manifest is
    copied last); a directory of other files is refused (`UserError`)."""
    out = check_output_dir(out_dir, where)
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = "corpus_version" in json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            ours = all(_corpus_file(p.name) for p in out.iterdir())
        if not ours:
            raise UserError(f"{out} holds other files and no exported corpus; export to a new or empty directory",
                            where=where or str(out))
    return out


def export_corpus(corpus: Corpus, out_dir: Path | str) -> Path:
    """Copy a corpus directory (data, manifest, tokenizers) to `out_dir`, to carry elsewhere."""
    out = check_export_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in sorted(corpus.directory.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for src in sorted(files, key=lambda p: p.name == MANIFEST):  # the manifest last: it marks the copy complete
        with atomic_write(out / src.name, "wb") as fh, src.open("rb") as f:
            shutil.copyfileobj(f, fh)
    return out


def load_corpus(task: str = "summarize", cache_dir: Path | str | None = None, sources: Sequence[Path | str] | None = None) -> list[Example]:
    """All examples of `task` (every split) of the corpus `open_corpus` returns."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})", where="task")
    return open_corpus(cache_dir, sources).examples(task)


def split_examples(examples: list[Example], split: str) -> list[Example]:
    """The examples of one split, in corpus order."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})", where="split")
    return [e for e in examples if e.split == split]
