"""What a corpus directory holds: its data files and manifest, the tasks and splits, and its records.

Shared by the builder (`speedsim.data.build`) and the reader (`speedsim.data.corpus`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

TASKS = ("summarize", "continue")
SPLITS = ("train", "validation", "test")
# Bump when extraction changes, so stale caches are rebuilt rather than reused.
CORPUS_VERSION = 2
# Per-mille of modules in each split, by hash of "package/module".
SPLIT_PERMILLE = {"train": 900, "validation": 50, "test": 50}
MANIFEST = "manifest.json"
DATA_FILES = ("documents.jsonl.xz", "summarize.jsonl.xz", "continue.jsonl.xz")


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


def split_of(module: str, package: str = "") -> str:
    """Deterministic split of a module: sha256 of "package/module", modulo 1000."""
    key = f"{package}/{module}" if package else module
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 1000
    if h < SPLIT_PERMILLE["train"]:
        return "train"
    if h < SPLIT_PERMILLE["train"] + SPLIT_PERMILLE["validation"]:
        return "validation"
    return "test"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
