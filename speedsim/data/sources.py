"""Where the corpus's Python source comes from: the standard library and installed packages.

A `SourceRoot` is one package (or the standard library) at one version with its `.py`
files. `installed_roots()` finds them without importing anything: the stdlib directory of
the running interpreter, and every installed distribution's RECORD (`importlib.metadata`).
`explicit_roots(paths)` makes roots of given directories or files (tests build tiny corpora
from these). A root set's `fingerprint` says which sources a corpus was built from, so a
cache built from other package versions is recognised and rebuilt.

Given sources are user paths (`--source`, a config's `data.sources`), checked through
`speedsim.userpath`: a malformed path, a missing one, a link loop, a source given twice, or two
sources of one package name (their modules would collide) is a `UserError` at the flag or field.
Inside a source directory only regular `.py` files are sources: a dangling symbolic link is not a
source file and is skipped (so is a FIFO or device named `.py`, whose read could block); a
symbolic-link loop is an error naming the link.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speedsim.errors import UserError
from speedsim.userpath import probe, shown, user_path

STDLIB = "python-stdlib"  # package name the standard library is recorded under
# Directories that hold no library code of their own (test suites full of near-duplicate
# functions, vendored site-packages inside the stdlib, caches).
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "testing", "idle_test", "__pycache__"})
# Distributions left out: this project itself (the corpus must not contain its own trainer).
SKIP_DISTRIBUTIONS = frozenset({"speedsim"})


@dataclass(frozen=True)
class SourceFile:
    """One module: its dotted name and where to read it."""

    module: str  # dotted module name, e.g. "numpy.linalg._linalg"
    path: Path


@dataclass(frozen=True)
class SourceRoot:
    """One package (or the stdlib) at one version, with its modules in sorted order."""

    package: str  # distribution name, or STDLIB
    version: str  # distribution version, the interpreter version for the stdlib, "local" for explicit roots
    files: tuple[SourceFile, ...] = field(repr=False)


def _skipped(parts: Iterable[str]) -> bool:
    return any(p in SKIP_DIRS or p.startswith(".") for p in parts)


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _walk(base: Path, top: Path, where: str | None = None) -> Iterator[SourceFile]:
    """Every kept .py file under `top` (a directory or one file), module names relative to `base`.

    With `where` (a user's source: the flag or field it came from), only regular files are kept: a
    dangling link is skipped, a link loop or an unreadable entry is a `UserError` at `where`."""
    if top.is_file():
        yield SourceFile(_module_name(top.relative_to(base)), top)
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not _skipped([d]))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                if where is not None:
                    st = probe(path, where)  # None: a dangling link; ELOOP, EACCES: a UserError naming it
                    if st is None or not stat.S_ISREG(st.st_mode):
                        continue
                yield SourceFile(_module_name(path.relative_to(base)), path)


def stdlib_root() -> SourceRoot:
    """The running interpreter's standard library (its test suites and site-packages skipped)."""
    base = Path(sysconfig.get_paths()["stdlib"])
    version = ".".join(str(v) for v in sys.version_info[:3])
    return SourceRoot(STDLIB, version, tuple(_walk(base, base)))


def _distribution_files(dist: md.Distribution) -> tuple[SourceFile, ...]:
    out = []
    for rel in dist.files or []:
        if rel.suffix != ".py" or rel.parts[0].endswith((".dist-info", ".egg-info", ".data")) or _skipped(rel.parts[:-1]):
            continue
        if rel.parts[0] == ".." or rel.is_absolute():  # scripts installed outside site-packages
            continue
        path = Path(str(dist.locate_file(rel)))
        out.append(SourceFile(_module_name(Path(*rel.parts)), path))
    return tuple(sorted(out, key=lambda f: f.module))


def installed_roots() -> list[SourceRoot]:
    """The stdlib and every installed distribution that ships .py files, sorted by name."""
    roots = {STDLIB: stdlib_root()}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not name or name in SKIP_DISTRIBUTIONS or name in roots:
            continue  # a distribution found twice on the path: the first one wins, as for imports
        files = _distribution_files(dist)
        if files:
            roots[name] = SourceRoot(name, dist.version, files)
    return [roots[k] for k in sorted(roots)]


def explicit_roots(paths: Iterable[Path | str], where: str | Sequence[str] | None = None) -> list[SourceRoot]:
    """One root per given directory (a package: modules named from its parent) or .py file.

    `where` names where the paths came from: one flag for all (`--source`), or one label per path
    (`config.yaml: field 'data.sources.0'`); by default each path names itself. A path that is
    malformed, missing, a link loop, not a .py file or a directory holding some, the same directory
    as an earlier one, or a package named like an earlier one, is a `UserError` there."""
    paths = list(paths)
    labels = [where] * len(paths) if where is None or isinstance(where, str) else list(where)
    assert len(labels) == len(paths), (labels, paths)
    roots: list[SourceRoot] = []
    seen: dict[tuple[int, int], Path] = {}  # (device, inode) of each source -> the path that gave it
    named: dict[str, Path] = {}
    for p, given_where in zip(paths, labels, strict=True):
        label = given_where or shown(p)
        named_here = "" if given_where is None else f": {shown(p)}"  # a flag or field: the message names the path
        path = user_path(p, label)
        st = probe(path, label)
        if st is None:
            raise UserError(f"source directory not found{named_here}", where=label)
        if not stat.S_ISDIR(st.st_mode) and (not stat.S_ISREG(st.st_mode) or path.suffix != ".py"):
            raise UserError(f"not a Python source (.py) file or a directory of them{named_here}", where=label)
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first is not path:  # the same modules twice: counted twice, and a cache of its own
            also = f" (also as {shown(first)})" if str(first) != str(path) else ""
            raise UserError(f"{shown(path)} is given twice{also}", where=label)
        other = named.setdefault(path.stem, path)
        if other is not path:  # modules are keyed by package: the second's would silently be dropped
            raise UserError(f"{shown(path)} and {shown(other)} are both package '{path.stem}' (their modules "
                            "would collide); give one of them under another name", where=label)
        files = tuple(_walk(path.parent, path, label))
        if not files:  # an empty corpus would only fail later, at training ("0 train examples")
            raise UserError(f"no Python source (.py) files here{named_here}", where=label)
        roots.append(SourceRoot(path.stem, "local", files))
    return roots


def fingerprint(roots: Iterable[SourceRoot], extra: str = "") -> str:
    """A digest of which sources a corpus comes from: package names and versions, and for
    explicit ("local") roots the modules' names, sizes and modification times."""
    h = hashlib.sha256(extra.encode())
    for root in roots:
        h.update(f"\0{root.package}\0{root.version}".encode())
        if root.version == "local":
            for f in root.files:
                st = f.path.stat()
                h.update(f"\0{f.module}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
