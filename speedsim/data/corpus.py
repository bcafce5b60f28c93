"""Offline corpora built from the Python standard library's own source (no download).

Two tasks share one extraction pass over `sysconfig.get_paths()["stdlib"]`:

- ``summarize`` (encoder-decoder, the default): every function or method with a docstring
  becomes a pair (its code without the docstring, the docstring's first paragraph).
- ``continue`` (decoder-only): every function long enough is cut at a line boundary into a
  prompt (its first lines) and a target (the rest), so outputs are longer.

Examples are split by module (a hash of the dotted module name), so no module contributes
to two splits. The corpus is built once and cached as JSON Lines; files are written to a
temporary name and renamed, so an interrupted build never leaves a half-written cache.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from speedsim.errors import UserError

TASKS = ("summarize", "continue")
SPLITS = ("train", "validation", "test")
# Bump when extraction changes, so stale caches are rebuilt rather than reused.
CORPUS_VERSION = 1
# Per-mille of modules in each split, by hash of the module name.
SPLIT_PERMILLE = {"train": 800, "validation": 100, "test": 100}
# Directories of the stdlib that are not the library itself (vendored packages, test suites
# full of near-duplicate functions).
SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "dist-packages"}
# Continuation task: functions with fewer lines than this are skipped; the prompt is this
# fraction of the function's lines (at least the signature line).
MIN_CONTINUE_LINES = 6
PROMPT_FRACTION = 0.4


@dataclass(frozen=True)
class Example:
    """One (source, target) pair. Text, not token ids: tokenisation is the tokenizer's job."""

    id: str  # "module:qualname:lineno"
    module: str  # dotted module name; decides the split
    split: str  # train | validation | test
    source: str  # encoder input (summarize) or prompt (continue)
    target: str  # docstring paragraph (summarize) or the rest of the function (continue)


def default_cache_dir() -> Path:
    """`$SPEEDSIM_CACHE` if set, else `~/.cache/speedsim`."""
    env = os.environ.get("SPEEDSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "speedsim"


def stdlib_dir() -> Path:
    """The directory holding the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(module: str) -> str:
    """Deterministic split of a module: sha256 of its dotted name, modulo 1000."""
    h = int.from_bytes(hashlib.sha256(module.encode()).digest()[:8], "big") % 1000
    if h < SPLIT_PERMILLE["train"]:
        return "train"
    if h < SPLIT_PERMILLE["train"] + SPLIT_PERMILLE["validation"]:
        return "validation"
    return "test"


def first_paragraph(doc: str) -> str:
    """The first paragraph of a docstring, cleaned and joined onto one line."""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(para.split())


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def iter_stdlib_files(root: Path | None = None) -> Iterator[tuple[str, Path]]:
    """(module name, path) of every stdlib .py file, in sorted (deterministic) order."""
    root = root or stdlib_dir()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                yield _module_name(root, path), path


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, outer before inner."""
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield qual, child
                stack.append((qual + ".", child))


def _function_lines(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The function's own source lines (from `def`, decorators excluded), dedented."""
    seg = lines[node.lineno - 1 : node.end_lineno]
    return textwrap.dedent("".join(seg)).splitlines()


def _strip_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """Function source without its docstring lines; None if nothing but the docstring is left."""
    doc = node.body[0]
    start, end = doc.lineno - node.lineno, doc.end_lineno - node.lineno  # type: ignore[operator]
    kept = lines[:start] + lines[end + 1 :]
    if len(node.body) == 1 or len(kept) <= 1:
        return None
    return "\n".join(line.rstrip() for line in kept)


def extract(root: Path | None = None) -> dict[str, list[Example]]:
    """Both tasks' examples from the stdlib at `root` (default: this interpreter's)."""
    out: dict[str, list[Example]] = {t: [] for t in TASKS}
    for module, path in iter_stdlib_files(root):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately invalid (lib2to3 fixtures)
        split = split_of(module)
        src_lines = text.splitlines(keepends=True)
        for qual, node in _functions(tree):
            ex_id = f"{module}:{qual}:{node.lineno}"
            lines = _function_lines(src_lines, node)
            doc = ast.get_docstring(node, clean=False)
            if doc:
                target = first_paragraph(doc)
                code = _strip_docstring(lines, node)
                if code and len(target.split()) >= 2:
                    out["summarize"].append(Example(ex_id, module, split, code, target))
            if len(lines) >= MIN_CONTINUE_LINES:
                cut = max(1, int(len(lines) * PROMPT_FRACTION))
                prompt = "\n".join(lines[:cut]) + "\n"
                rest = "\n".join(lines[cut:])
                out["continue"].append(Example(ex_id, module, split, prompt, rest))
    return out


def _cache_file(cache_dir: Path, task: str) -> Path:
    tag = f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return cache_dir / f"corpus-v{CORPUS_VERSION}-{tag}" / f"{task}.jsonl"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_corpus(task: str = "summarize", cache_dir: Path | str | None = None) -> list[Example]:
    """All examples of `task` (every split), building and caching the corpus on first use."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})", where="task")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = _cache_file(cache_dir, task)
    if not path.exists():
        built = extract()
        for t, examples in built.items():  # both tasks come from one pass: cache both
            body = "".join(json.dumps(asdict(e)) + "\n" for e in examples)
            _atomic_write_text(_cache_file(cache_dir, t), body)
    examples = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                examples.append(Example(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as err:
                raise UserError(f"corrupt corpus cache ({err}); delete it to rebuild", where=f"{path}:{lineno}") from None
    return examples


def split_examples(examples: list[Example], split: str) -> list[Example]:
    """The examples of one split, in corpus order."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})", where="split")
    return [e for e in examples if e.split == split]
