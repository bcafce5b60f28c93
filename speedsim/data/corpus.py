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
versions is rebuilt, with a message on stderr. Building is `speedsim.data.build`; what the
directory holds is `speedsim.data.layout`.

`$SPEEDSIM_CACHE`, `$SPEEDSIM_CORPUS`, the source paths and an export directory are user paths:
their problems (a malformed path, a link loop, a file where a directory belongs) are one-line
`UserError`s naming the variable or the flag or field they came from (`speedsim.userpath`).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speedsim.data.build import build_corpus
from speedsim.data.extract import continue_texts, pair_texts
from speedsim.data.layout import (
    CORPUS_VERSION,
    DATA_FILES,
    MANIFEST,
    SPLITS,
    TASKS,
    Document,
    Example,
    sha256_file,
)
from speedsim.data.sources import SourceRoot, explicit_roots, fingerprint, installed_roots
from speedsim.errors import UserError
from speedsim.fileio import atomic_write, check_output_dir
from speedsim.userpath import is_dir, os_errors, probe, shown, user_path

PINNED_ENV = "SPEEDSIM_CORPUS"  # a corpus directory to use as it is (carried from another machine)
CACHE_ENV = "SPEEDSIM_CACHE"


def default_cache_dir() -> Path:
    """`$SPEEDSIM_CACHE` if set (a path that cannot name a directory is a `UserError` naming the
    variable), else `~/.cache/speedsim`."""
    env = os.environ.get(CACHE_ENV)
    return user_path(env, f"${CACHE_ENV}") if env else Path.home() / ".cache" / "speedsim"


def _note(message: str) -> None:
    sys.stderr.write(f"speedsim: {message}\n")


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
        if not path.exists() or path.stat().st_size != want.get("bytes") or sha256_file(path) != want.get("sha256"):
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


def pinned_corpus(directory: Path | str, where: str | None = None) -> Corpus:
    """A carried corpus directory, used as it is; a damaged one is a `UserError` (it cannot be rebuilt
    here) naming it, or `where` (`$SPEEDSIM_CORPUS`) for a path that cannot name a directory."""
    directory = user_path(directory, where or str(directory))
    if where is not None:
        probe(directory, where)  # a link loop or a denied search: a UserError naming the variable
    manifest = read_manifest(directory)
    if isinstance(manifest, str):
        raise UserError(f"not a usable corpus: {manifest}",
                        where=f"{where} {shown(directory)}" if where else shown(directory))
    return Corpus(directory, manifest)


def open_corpus(
    cache_dir: Path | str | None = None, sources: Sequence[Path | str] | None = None, progress: bool = True,
    source_where: str | Sequence[str] | None = None,
) -> Corpus:
    """The corpus of `sources` (directories or files; default: the stdlib and every installed
    package), built on first use and cached; `$SPEEDSIM_CORPUS` pins a directory instead.

    `source_where` names where the sources came from (`--source`, or one config field per source),
    for their errors (`explicit_roots`); by default each path names itself."""
    pinned = os.environ.get(PINNED_ENV)
    if pinned and sources is None:
        return pinned_corpus(pinned, f"${PINNED_ENV}")
    # $SPEEDSIM_CACHE naming a file: one line, not a traceback after a "rebuilding" note (a read-only
    # cache that is built is fine: nothing is written to it)
    _check_cache_dir(Path(cache_dir) if cache_dir else default_cache_dir(),
                     f"${CACHE_ENV}" if cache_dir is None and os.environ.get(CACHE_ENV) else None)
    roots = installed_roots() if sources is None else explicit_roots(sources, source_where)
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
    label = where or str(path)
    here = user_path(path, label)
    while probe(here, label) is None and here != here.parent:  # a link loop: a UserError, not "absent"
        here = here.parent
    if not is_dir(here, label):
        what = "is not a directory" if here == path else f"cannot be created: {here} is not a directory"
        raise UserError(f"cache {path} {what}", where=label)


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
    with os_errors(where or str(out), "cannot list"):  # a directory we may write but not read
        names = [p.name for p in out.iterdir()] if out.is_dir() else []
    if names:
        try:
            ours = "corpus_version" in json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            ours = all(_corpus_file(name) for name in names)
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
