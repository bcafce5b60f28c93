"""Corpora and tokenizer: code-to-docstring and code continuation from the stdlib's source."""

from speedsim.data.corpus import SPLITS, TASKS, Example, default_cache_dir, load_corpus, split_examples
from speedsim.data.dataset import IGNORE_INDEX, Batch, BatchStream, Encoded, collate, encode_examples
from speedsim.data.tokenizer import (
    cached_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    tokenizer_from_str,
    train_tokenizer,
)

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "TASKS",
    "Batch",
    "BatchStream",
    "Encoded",
    "Example",
    "cached_tokenizer",
    "collate",
    "default_cache_dir",
    "encode_examples",
    "load_corpus",
    "load_tokenizer",
    "save_tokenizer",
    "special_ids",
    "split_examples",
    "tokenizer_from_str",
    "train_tokenizer",
]
