"""A byte-level BPE tokenizer trained offline with HF `tokenizers`, saved with checkpoints."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from speedsim.errors import UserError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2 in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE of at most `vocab_size` tokens (specials included) on `texts`."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is below the 259 a byte-level BPE needs", where="vocab_size")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: code keeps its exact leading whitespace.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """{"pad": id, "bos": id, "eos": id}."""
    return {name.strip("<>"): tok.token_to_id(name) for name in SPECIAL_TOKENS}


def save_tokenizer(tok: Tokenizer, path: Path | str) -> None:
    """Write `tok` as tokenizer.json to `path`, atomically (write then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(tok.to_str(), encoding="utf-8")
    os.replace(tmp, path)


def tokenizer_from_str(text: str, where: str) -> Tokenizer:
    """Parse a serialised tokenizer; a bad one is a `UserError` naming `where`."""
    try:
        return Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises plain Exception subclasses
        raise UserError(f"cannot read tokenizer ({str(err).splitlines()[0][:120]})", where=where) from None


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Read a tokenizer.json written by `save_tokenizer`."""
    path = Path(path)
    if not path.exists():
        raise UserError("tokenizer file not found", where=str(path))
    return tokenizer_from_str(path.read_text(encoding="utf-8"), str(path))


def cached_tokenizer(texts: list[str], vocab_size: int, cache_dir: Path, tag: str) -> Tokenizer:
    """Train once per (texts, vocab_size) and reuse from `cache_dir` afterwards."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"{tag}-v{vocab_size}-{digest}.json"
    if path.exists():
        return load_tokenizer(path)
    tok = train_tokenizer(texts, vocab_size)
    save_tokenizer(tok, path)
    return tok
