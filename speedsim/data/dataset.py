"""Token-id examples and deterministic, length-bucketed batches for training.

Encoder-decoder (``summarize``): `src` = code tokens (truncated to `max_src_tokens`),
`tgt` = ``<bos> docstring <eos>``; examples whose target does not fit `max_tgt_tokens` are
dropped (a truncated docstring would teach the model to stop mid-sentence).

Decoder-only (``continue``): one sequence ``<bos> prompt continuation <eos>``; the loss is
taken on the continuation only. The prompt is cut to `max_src_tokens`, the continuation to
`max_tgt_tokens` (it then ends without ``<eos>``: long functions are simply cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from speedsim.data.corpus import Example
from speedsim.data.tokenizer import special_ids

IGNORE_INDEX = -100  # label value that the exit loss skips


@dataclass(frozen=True)
class Encoded:
    """One tokenised example. For decoder-only tasks `src` is the prompt (with <bos>)."""

    id: str
    src: list[int]  # encoder input ids, or the decoder-only prompt ids starting with <bos>
    tgt: list[int]  # target ids: "<bos> ... <eos>" (enc-dec) or the continuation (dec-only)
    reference: str  # target text, for ROUGE


def encode_examples(
    examples: list[Example],
    tok: Tokenizer,
    max_src_tokens: int,
    max_tgt_tokens: int,
    decoder_only: bool,
) -> list[Encoded]:
    """Tokenise `examples`; see the module docstring for the layout of each task."""
    ids = special_ids(tok)
    bos, eos = ids["bos"], ids["eos"]
    srcs = tok.encode_batch([e.source for e in examples])
    tgts = tok.encode_batch([e.target for e in examples])
    out = []
    for e, s, t in zip(examples, srcs, tgts, strict=True):
        if decoder_only:
            prompt = [bos] + s.ids[: max_src_tokens - 1]
            cont = (t.ids + [eos])[:max_tgt_tokens]
            reference = tok.decode(cont, skip_special_tokens=True)
            out.append(Encoded(e.id, prompt, cont, reference))
        else:
            if len(t.ids) + 2 > max_tgt_tokens:
                continue
            out.append(Encoded(e.id, s.ids[:max_src_tokens], [bos] + t.ids + [eos], e.target))
    return out


@dataclass(frozen=True)
class Batch:
    """Padded tensors of one batch. Lengths in tokens; pad masks are True at padding."""

    src: torch.Tensor | None  # (B, S) encoder input, None for decoder-only
    src_pad_mask: torch.Tensor | None  # (B, S) bool
    tgt_in: torch.Tensor  # (B, T) decoder input
    tgt_pad_mask: torch.Tensor  # (B, T) bool
    labels: torch.Tensor  # (B, T) next-token targets, IGNORE_INDEX where no loss
    n_tokens: int  # number of labelled tokens


def collate(items: list[Encoded], pad_id: int, decoder_only: bool) -> Batch:
    """Pad a list of examples into a `Batch`."""
    if decoder_only:
        seqs = [it.src + it.tgt for it in items]
        T = max(len(s) for s in seqs) - 1
        tgt_in = torch.full((len(items), T), pad_id, dtype=torch.long)
        labels = torch.full((len(items), T), IGNORE_INDEX, dtype=torch.long)
        for i, (it, s) in enumerate(zip(items, seqs, strict=True)):
            tgt_in[i, : len(s) - 1] = torch.tensor(s[:-1])
            # position p predicts s[p + 1]; only continuation tokens are labelled
            p0 = len(it.src) - 1
            labels[i, p0 : len(s) - 1] = torch.tensor(s[p0 + 1 :])
        return Batch(None, None, tgt_in, tgt_in == pad_id, labels, int((labels != IGNORE_INDEX).sum()))
    S = max(len(it.src) for it in items)
    T = max(len(it.tgt) for it in items) - 1
    src = torch.full((len(items), S), pad_id, dtype=torch.long)
    tgt_in = torch.full((len(items), T), pad_id, dtype=torch.long)
    labels = torch.full((len(items), T), IGNORE_INDEX, dtype=torch.long)
    src_mask = torch.ones((len(items), S), dtype=torch.bool)
    tgt_mask = torch.ones((len(items), T), dtype=torch.bool)
    for i, it in enumerate(items):
        src[i, : len(it.src)] = torch.tensor(it.src)
        src_mask[i, : len(it.src)] = False
        n = len(it.tgt) - 1
        tgt_in[i, :n] = torch.tensor(it.tgt[:-1])
        labels[i, :n] = torch.tensor(it.tgt[1:])
        tgt_mask[i, :n] = False
    return Batch(src, src_mask, tgt_in, tgt_mask, labels, int((labels != IGNORE_INDEX).sum()))


def _length(it: Encoded) -> int:
    return len(it.src) + len(it.tgt)


def epoch_batches(n_items: int, lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches of one epoch: a pure function of (seed, epoch), so resuming is exact.

    Shuffle, sort by length within windows of 50 batches (less padding), cut into batches,
    shuffle the batches. The last incomplete batch is dropped.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_items)
    window = 50 * batch_size
    sorted_order: list[int] = []
    for w in range(0, n_items, window):
        chunk = order[w : w + window]
        sorted_order.extend(sorted(chunk.tolist(), key=lambda i: lengths[i]))
    batches = [sorted_order[b : b + batch_size] for b in range(0, n_items - batch_size + 1, batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


class BatchStream:
    """The training batches, addressed by global step: `stream[step]` is always the same batch."""

    def __init__(self, items: list[Encoded], batch_size: int, seed: int, pad_id: int, decoder_only: bool):
        if len(items) < batch_size:
            raise ValueError(f"{len(items)} training examples, fewer than one batch of {batch_size}")
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.pad_id, self.decoder_only = pad_id, decoder_only
        self.lengths = [_length(it) for it in items]
        self.per_epoch = len(items) // batch_size
        self._epoch, self._batches = -1, []  # type: tuple[int, list[list[int]]]

    def __getitem__(self, step: int) -> Batch:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(len(self.items), self.lengths, self.batch_size, self.seed, epoch)
        return collate([self.items[i] for i in self._batches[k]], self.pad_id, self.decoder_only)
