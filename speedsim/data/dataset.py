"""Token-id examples and deterministic batches for fine-tuning and pre-training.

Fine-tuning batches (`BatchStream`) are length-bucketed examples:

Encoder-decoder (``summarize``): `src` = code tokens (truncated to `max_src_tokens`),
`tgt` = ``<bos> docstring <eos>``; examples whose target does not fit `max_tgt_tokens` are
dropped (a truncated docstring would teach the model to stop mid-sentence), and so are those
whose target text is shorter than `min_tgt_tokens` (a task of longer outputs, when asked for).

Decoder-only (``continue``): one sequence ``<bos> prompt continuation <eos>``; the loss is
taken on the continuation only. The prompt is cut to `max_src_tokens`, the continuation to
`max_tgt_tokens` (it then ends without ``<eos>``: long functions are simply cut).

Pre-training batches (`LMStream`) are windows of the concatenated token ids of a split's
modules (`token_stream`): causal LM for a decoder-only model, prefix-to-continuation for an
encoder-decoder model (see `lm_batch`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from speedsim.data.corpus import Corpus, Example
from speedsim.data.tokenizer import special_ids, tokenizer_digest
from speedsim.fileio import atomic_write

IGNORE_INDEX = -100  # label value that the exit loss skips
SOURCE_CHARS_PER_TOKEN = 12  # characters of source kept per source token before tokenising (generous)


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
    min_tgt_tokens: int = 0,
) -> list[Encoded]:
    """Tokenise `examples`; see the module docstring for the layout of each task. Examples whose
    target text is shorter than `min_tgt_tokens` tokens are dropped (both tasks)."""
    ids = special_ids(tok)
    bos, eos = ids["bos"], ids["eos"]
    # Sources are cut before tokenising (code averages 3.5 characters per token here), so a
    # 5,000-character function costs what its first `max_src_tokens` tokens cost.
    srcs = tok.encode_batch([e.source[: max_src_tokens * SOURCE_CHARS_PER_TOKEN] for e in examples])
    tgts = tok.encode_batch([e.target for e in examples])
    out = []
    for e, s, t in zip(examples, srcs, tgts, strict=True):
        if len(t.ids) < min_tgt_tokens:
            continue
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


def collate(items: list[Encoded], pad_id: int, decoder_only: bool, pad_to: tuple[int, int] | None = None) -> Batch:
    """Pad a list of examples into a `Batch`: to the longest example, or to at least `pad_to`
    (source, target) tokens, so that every batch of a stage has one shape."""
    min_s, min_t = pad_to or (0, 0)
    if decoder_only:
        seqs = [it.src + it.tgt for it in items]
        T = max(max(len(s) for s in seqs), min_s + min_t) - 1
        tgt_in = torch.full((len(items), T), pad_id, dtype=torch.long)
        labels = torch.full((len(items), T), IGNORE_INDEX, dtype=torch.long)
        for i, (it, s) in enumerate(zip(items, seqs, strict=True)):
            tgt_in[i, : len(s) - 1] = torch.tensor(s[:-1])
            # position p predicts s[p + 1]; only continuation tokens are labelled
            p0 = len(it.src) - 1
            labels[i, p0 : len(s) - 1] = torch.tensor(s[p0 + 1 :])
        return Batch(None, None, tgt_in, tgt_in == pad_id, labels, int((labels != IGNORE_INDEX).sum()))
    S = max(max(len(it.src) for it in items), min_s)
    T = max(max(len(it.tgt) for it in items), min_t) - 1
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


def _bucket_order(it: Encoded, multiple: int, decoder_only: bool) -> int:
    """Sort key of `pad_multiple` batches. A target token costs every decoder pass and exit, a source
    token two encoder layers: batches of one padded target length, then of similar sources, waste the
    least. Decoder-only: the sequence's length (prompt and continuation are one sequence)."""
    if decoder_only:
        return len(it.src) + len(it.tgt)
    return -(-(len(it.tgt) - 1) // multiple) * 1_000_000 + len(it.src)


def _round_up(n: int, multiple: int, cap: int) -> int:
    return max(n, min(cap, -(-n // multiple) * multiple))


def bucket_pad_to(items: list[Encoded], multiple: int, caps: tuple[int, int], decoder_only: bool) -> tuple[int, int]:
    """The `pad_to` of `collate` that rounds a batch's source and target lengths up to a multiple of
    `multiple` tokens, at most `caps` (the data's length caps) unless the batch is longer: few
    distinct shapes. Decoder-only: the prompt and continuation of each sequence are one length."""
    if decoder_only:
        return 0, _round_up(max(len(it.src) + len(it.tgt) for it in items) - 1, multiple, caps[0] + caps[1] - 1) + 1
    return (_round_up(max(len(it.src) for it in items), multiple, caps[0]),
            _round_up(max(len(it.tgt) - 1 for it in items), multiple, caps[1] - 1) + 1)


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
    """The training batches, addressed by global step: `stream[step]` is always the same batch.

    Padding: to each batch's longest example (default); to one shape, `pad_to`; or, with
    `pad_multiple` (and `caps`, the data's length caps), to lengths rounded up to a multiple,
    batches then grouped by target length first (`bucket_pad_to`).
    """

    def __init__(
        self, items: list[Encoded], batch_size: int, seed: int, pad_id: int, decoder_only: bool,
        pad_to: tuple[int, int] | None = None, pad_multiple: int | None = None, caps: tuple[int, int] | None = None,
    ):
        if len(items) < batch_size:
            raise ValueError(f"{len(items)} training examples, fewer than one batch of {batch_size}")
        if pad_multiple is not None and (pad_to is not None or caps is None):
            raise ValueError("pad_multiple needs the length caps and excludes pad_to")
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.pad_id, self.decoder_only, self.pad_to = pad_id, decoder_only, pad_to
        self.pad_multiple, self.caps = pad_multiple, caps
        self.lengths = [_length(it) if pad_multiple is None else _bucket_order(it, pad_multiple, decoder_only)
                        for it in items]
        self.per_epoch = len(items) // batch_size
        self._epoch, self._batches = -1, []  # type: tuple[int, list[list[int]]]

    def __getitem__(self, step: int) -> Batch:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(len(self.items), self.lengths, self.batch_size, self.seed, epoch)
        items = [self.items[i] for i in self._batches[k]]
        pad_to = self.pad_to
        if self.pad_multiple is not None and self.caps is not None:
            pad_to = bucket_pad_to(items, self.pad_multiple, self.caps, self.decoder_only)
        return collate(items, self.pad_id, self.decoder_only, pad_to)


# ------------------------------------------------------------------------------ pre-training
def token_stream(corpus: Corpus, split: str, tok: Tokenizer, cache_dir: Path, progress: bool = True) -> np.ndarray:
    """Every module of `split`, tokenised and concatenated, each followed by <eos> (1-D ids).

    Cached as .npy under `cache_dir/tokens/`, named by the corpus's data digest and the
    tokenizer's, so a rebuilt corpus or another tokenizer never reuses stale ids.
    """
    corpus_digest = corpus.manifest["files"]["documents.jsonl.xz"]["sha256"][:12]
    path = Path(cache_dir) / "tokens" / f"{corpus_digest}-{tokenizer_digest(tok)}-{split}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a torn cache file: tokenise again
    texts = [d.text for d in corpus.documents(split)]
    eos = special_ids(tok)["eos"]
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.int32
    parts = []
    chunk = 256  # modules per encode_batch call (the tokenizer parallelises inside a call)
    for i in tqdm(range(0, len(texts), chunk), desc=f"tokenise {split}", unit="chunk", disable=not progress, file=sys.stderr):
        for enc in tok.encode_batch(texts[i : i + chunk]):
            parts.append(np.asarray(enc.ids + [eos], dtype=dtype))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        np.save(fh, ids, allow_pickle=False)
    return ids


def lm_batch(windows: np.ndarray, src_len: int, bos_id: int) -> Batch:
    """A pre-training batch from token windows (B, src_len + T) (no padding: every label counts).

    Decoder-only (`src_len == 0`): causal LM, the decoder reads w[:-1] and predicts w[1:].
    Encoder-decoder, prefix-to-continuation: the encoder reads the first `src_len` tokens, the
    decoder starts from <bos> and predicts the continuation w[src_len:].
    """
    w = torch.from_numpy(windows.astype(np.int64))  # (B, L)
    if src_len == 0:
        tgt_in, labels, src, src_mask = w[:, :-1], w[:, 1:], None, None
    else:
        src, cont = w[:, :src_len], w[:, src_len:]  # (B, S), (B, T)
        bos = torch.full((w.shape[0], 1), bos_id, dtype=torch.long)
        tgt_in, labels = torch.cat([bos, cont[:, :-1]], dim=1), cont  # (B, T) each
        src_mask = torch.zeros_like(src, dtype=torch.bool)
    tgt_mask = torch.zeros_like(tgt_in, dtype=torch.bool)
    return Batch(src, src_mask, tgt_in.contiguous(), tgt_mask, labels.contiguous(), labels.numel())


class LMStream:
    """Pre-training batches addressed by global step: windows of `src_len + tgt_len` tokens
    (plus one for decoder-only) at offsets drawn from (seed, step), so resuming is exact."""

    def __init__(self, tokens: np.ndarray, batch_size: int, src_len: int, tgt_len: int, seed: int, bos_id: int):
        self.width = src_len + tgt_len + (1 if src_len == 0 else 0)
        if len(tokens) <= self.width:
            raise ValueError(f"{len(tokens)} pre-training tokens, fewer than one window of {self.width}")
        self.tokens, self.batch_size, self.src_len, self.seed, self.bos_id = tokens, batch_size, src_len, seed, bos_id

    def windows(self, starts: np.ndarray) -> np.ndarray:
        return np.stack([self.tokens[s : s + self.width] for s in starts])  # (B, width)

    def __getitem__(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.width, size=self.batch_size)
        return lm_batch(self.windows(starts), self.src_len, self.bos_id)

    def fixed(self, n_windows: int) -> list[np.ndarray]:
        """`n_windows` evenly spaced windows (a validation set that never changes)."""
        starts = np.linspace(0, len(self.tokens) - self.width - 1, num=n_windows).astype(np.int64)
        return [self.windows(starts[i : i + self.batch_size]) for i in range(0, n_windows, self.batch_size)]


# ------------------------------------------------------------------------------ cached splits
def encoded_splits(
    corpus: Corpus, task: str, tok: Tokenizer, max_src_tokens: int, max_tgt_tokens: int, decoder_only: bool, cache_dir: Path,
    min_tgt_tokens: int = 0,
) -> dict[str, list[Encoded]]:
    """Every split of `task`, tokenised (`encode_examples`), cached as .npz under
    `cache_dir/tokens/` by corpus, tokenizer and lengths (training, evaluation and tracing
    processes of one config share it)."""
    corpus_digest = corpus.manifest["files"][f"{task}.jsonl.xz"]["sha256"][:12]
    key = f"{corpus_digest}-{tokenizer_digest(tok)}-{task}-s{max_src_tokens}-t{max_tgt_tokens}-{int(decoder_only)}"
    if min_tgt_tokens:
        key += f"-m{min_tgt_tokens}"
    path = Path(cache_dir) / "tokens" / f"{key}.npz"
    if path.exists():
        try:
            return _load_encoded(path)
        except (OSError, ValueError, KeyError):
            pass  # a torn cache file: tokenise again
    examples = corpus.examples(task)
    enc = {s: encode_examples([e for e in examples if e.split == s], tok, max_src_tokens, max_tgt_tokens, decoder_only,
                              min_tgt_tokens) for s in ("train", "validation", "test")}
    arrays: dict[str, np.ndarray] = {}
    meta = {}
    for split, items in enc.items():
        for part in ("src", "tgt"):
            seqs = [getattr(it, part) for it in items]
            arrays[f"{split}.{part}"] = np.asarray([t for seq in seqs for t in seq], dtype=np.int32)
            arrays[f"{split}.{part}_len"] = np.asarray([len(seq) for seq in seqs], dtype=np.int64)
        meta[split] = [[it.id, it.reference] for it in items]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle
    return enc


def _load_encoded(path: Path) -> dict[str, list[Encoded]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        out = {}
        for split, rows in meta.items():
            parts = {}
            for part in ("src", "tgt"):
                cuts = np.cumsum(z[f"{split}.{part}_len"])[:-1]
                parts[part] = [a.tolist() for a in np.split(z[f"{split}.{part}"], cuts)] if rows else []
            out[split] = [Encoded(i, s, t, ref) for (i, ref), s, t in zip(rows, parts["src"], parts["tgt"], strict=True)]
    return out
