"""A byte-level BPE tokenizer trained offline with HF `tokenizers`, saved with checkpoints.

`corpus_tokenizer` trains one per (corpus, vocabulary size) on the corpus's train split
(a deterministic sample of its code and every docstring target) and keeps it in the corpus
directory, so a corpus carried to another machine carries its tokenizers too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from speedsim.data.corpus import Corpus
from speedsim.errors import UserError
from speedsim.fileio import write_text
from speedsim.limits import MAX_VOCAB_SIZE

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2 in this order
DEFAULT_VOCAB_SIZE = 8192  # tokens, specials included: the recipe's vocabulary

TOKENIZER_SAMPLE_BYTES = 16 * 2**20  # code the BPE is trained on: enough for stable merges, seconds to train


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE of at most `vocab_size` tokens (specials included) on `texts`."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is below the 259 a byte-level BPE needs", where="vocab_size")
    if vocab_size > MAX_VOCAB_SIZE:
        raise UserError(f"vocab_size {vocab_size} is above the {MAX_VOCAB_SIZE} this project's BPE trains",
                        where="vocab_size")
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
    """{"pad": id, "bos": id, "eos": id}; a tokenizer without them is a `UserError`."""
    ids = {name.strip("<>"): tok.token_to_id(name) for name in SPECIAL_TOKENS}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise UserError(f"tokenizer lacks the special tokens {', '.join(missing)}", where="tokenizer")
    return {k: int(v) for k, v in ids.items() if v is not None}


def save_tokenizer(tok: Tokenizer, path: Path | str) -> None:
    """Write `tok` as tokenizer.json to `path`, atomically (write then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, tok.to_str())


def tokenizer_from_str(text: str, where: str) -> Tokenizer:
    """Parse a serialised tokenizer; a bad one is a `UserError` naming `where`."""
    try:
        return Tokenizer.from_str(text)
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain `Exception` itself for every parse error
        raise UserError(f"cannot read tokenizer ({str(err).splitlines()[0][:120]})", where=where) from None


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Read a tokenizer.json written by `save_tokenizer`."""
    path = Path(path)
    if not path.exists():
        raise UserError("tokenizer file not found", where=str(path))
    return tokenizer_from_str(path.read_text(encoding="utf-8"), str(path))


def tokenizer_texts(corpus: Corpus) -> list[str]:
    """What the BPE is trained on: every train docstring target and an evenly spread sample of
    train modules of about `TOKENIZER_SAMPLE_BYTES` (deterministic)."""
    docs = corpus.documents("train")
    total = sum(len(d.text) for d in docs)
    every = max(1, round(total / TOKENIZER_SAMPLE_BYTES))
    code = [d.text for i, d in enumerate(docs) if i % every == 0]
    return code + [e.target for e in corpus.examples("summarize") if e.split == "train"]


def corpus_tokenizer(corpus: Corpus, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """The corpus's tokenizer of `vocab_size` tokens: trained once, kept in the corpus directory."""
    path = corpus.directory / f"tokenizer-v{vocab_size}.json"
    if path.exists():
        return load_tokenizer(path)
    tok = train_tokenizer(tokenizer_texts(corpus), vocab_size)
    save_tokenizer(tok, path)
    return tok


def tokenizer_digest(tok: Tokenizer) -> str:
    """A short digest of a tokenizer's serialisation (names caches of token ids)."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:12]
