"""A config's data: its corpus and tokenizer, fine-tuning examples and pre-training windows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from speedsim.data import (
    PINNED_ENV,
    Corpus,
    Encoded,
    LMStream,
    corpus_tokenizer,
    default_cache_dir,
    encoded_splits,
    open_corpus,
    special_ids,
    token_stream,
)
from speedsim.train.config import TrainConfig


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()


_OPENED: dict[tuple[str, ...], Corpus] = {}  # corpora this process has opened and checked


def corpus_of(cfg: TrainConfig, progress: bool = True) -> Corpus:
    """The corpus a config trains on (built and cached on first use; checked once per process)."""
    key = (str(cache_dir(cfg)), os.environ.get(PINNED_ENV, ""), *(cfg.data.sources or ()))
    if key not in _OPENED:
        _OPENED[key] = open_corpus(cache_dir(cfg), cfg.data.sources, progress)
    return _OPENED[key]


def prepare_data(
    cfg: TrainConfig, tok: Tokenizer | None = None, progress: bool = False
) -> tuple[Tokenizer, dict[str, list[Encoded]]]:
    """The tokenizer (the corpus's, unless given) and every split of the fine-tuning task, tokenised."""
    corpus = corpus_of(cfg, progress)
    if tok is None:
        tok = corpus_tokenizer(corpus, cfg.data.vocab_size)
    d = cfg.data
    return tok, encoded_splits(corpus, d.task, tok, d.max_src_tokens, d.max_tgt_tokens, cfg.decoder_only, cache_dir(cfg),
                               d.min_tgt_tokens)


def pretraining_streams(
    cfg: TrainConfig, tok: Tokenizer, progress: bool = True
) -> tuple[LMStream, list[np.ndarray]]:
    """(train windows addressed by step, fixed validation windows) of the pre-training stage."""
    assert cfg.pretrain is not None
    corpus = corpus_of(cfg, progress)
    bos = special_ids(tok)["bos"]
    p = cfg.pretrain
    train = token_stream(corpus, "train", tok, cache_dir(cfg), progress)
    val = token_stream(corpus, "validation", tok, cache_dir(cfg), progress)
    stream = LMStream(train, p.batch_size, cfg.prefix_tokens, p.target_tokens, cfg.seed, bos)
    val_stream = LMStream(val, cfg.eval.batch_size, cfg.prefix_tokens, p.target_tokens, cfg.seed, bos)
    return stream, val_stream.fixed(cfg.eval.val_examples)
