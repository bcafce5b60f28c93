"""Corpus extraction, splits, tokenizer and batching (speedsim.data)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from speedsim.data import (
    IGNORE_INDEX,
    BatchStream,
    Example,
    collate,
    encode_examples,
    load_corpus,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    split_examples,
    train_tokenizer,
)
from speedsim.data.corpus import extract, first_paragraph, split_of
from speedsim.data.dataset import epoch_batches
from speedsim.errors import UserError

MODULE = textwrap.dedent(
    '''
    def add(a, b):
        """Add two numbers.

        Longer explanation that is not part of the target.
        """
        # keep this comment
        return a + b

    def only_doc():
        """Nothing but a docstring."""

    class Box:
        def get(self):
            """Return the
            content."""
            return self.x

        def long(self):
            x = 1
            y = 2
            z = 3
            w = 4
            return x + y + z + w
    '''
)


@pytest.fixture(scope="module")
def fake_stdlib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stdlib")
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text(MODULE)
    (root / "test").mkdir()  # test suites are skipped
    (root / "test" / "test_x.py").write_text(MODULE)
    (root / "broken.py").write_text("def (:\n")  # unparsable files are skipped
    return root


@pytest.fixture(scope="module")
def tok():
    texts = [MODULE, "Return the content.", "def f(x):\n    return x\n"] * 20
    return train_tokenizer(texts, vocab_size=300)


def test_extract_pairs_code_without_docstring_and_first_paragraph(fake_stdlib: Path) -> None:
    """A function with a docstring becomes (code minus docstring, first paragraph)."""
    ex = {e.id.split(":")[1]: e for e in extract(fake_stdlib)["summarize"]}
    assert set(ex) == {"add", "Box.get"}  # only_doc has no code left; test/ is skipped
    assert ex["add"].target == "Add two numbers."
    assert '"""' not in ex["add"].source and "# keep this comment" in ex["add"].source
    assert ex["add"].source.startswith("def add(a, b):")
    assert ex["Box.get"].target == "Return the content."
    assert ex["Box.get"].source.startswith("def get(self):")  # dedented method
    assert ex["add"].module == "pkg.mod"


def test_extract_continuation_splits_function_at_a_line(fake_stdlib: Path) -> None:
    """Continuation examples are a prompt (first lines) and the rest of the function."""
    cont = {e.id.split(":")[1]: e for e in extract(fake_stdlib)["continue"]}
    e = cont["Box.long"]
    assert e.source.startswith("def long(self):")
    assert e.source + e.target == "def long(self):\n    x = 1\n    y = 2\n    z = 3\n    w = 4\n    return x + y + z + w"


def test_split_is_a_deterministic_function_of_the_module() -> None:
    """Every module maps to one split, the same each time, and all splits occur."""
    mods = [f"m{i}" for i in range(300)]
    splits = [split_of(m) for m in mods]
    assert splits == [split_of(m) for m in mods]
    assert set(splits) == {"train", "validation", "test"}


def test_first_paragraph_joins_lines() -> None:
    """The first docstring paragraph is cleaned onto one line."""
    assert first_paragraph("  Do a\n    thing.\n\n    More.") == "Do a thing."


def test_load_corpus_caches_and_splits_by_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stdlib: Path) -> None:
    """The corpus is built once into the cache; modules never straddle splits."""
    import speedsim.data.corpus as corpus

    monkeypatch.setattr(corpus, "stdlib_dir", lambda: fake_stdlib)
    ex = load_corpus("summarize", tmp_path)
    files = list(tmp_path.rglob("*.jsonl"))
    assert {f.name for f in files} == {"summarize.jsonl", "continue.jsonl"}
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary file left behind
    monkeypatch.setattr(corpus, "extract", lambda root=None: pytest.fail("rebuilt a cached corpus"))
    assert load_corpus("summarize", tmp_path) == ex
    for split in ("train", "validation", "test"):
        assert all(e.split == split_of(e.module) for e in split_examples(ex, split))


def test_corrupt_corpus_cache_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_stdlib: Path) -> None:
    """A damaged cache line is a UserError naming the file and line."""
    import speedsim.data.corpus as corpus

    monkeypatch.setattr(corpus, "stdlib_dir", lambda: fake_stdlib)
    load_corpus("summarize", tmp_path)
    path = next(tmp_path.rglob("summarize.jsonl"))
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(UserError, match=r"summarize\.jsonl:\d+"):
        load_corpus("summarize", tmp_path)


def test_unknown_task_and_split_are_user_errors() -> None:
    """Bad task or split names are UserErrors."""
    with pytest.raises(UserError, match="task"):
        load_corpus("translate")
    with pytest.raises(UserError, match="split"):
        split_examples([], "dev")


def test_tokenizer_round_trips_code_and_reserves_specials(tok, tmp_path: Path) -> None:
    """Byte-level BPE decodes code exactly; <pad>, <bos>, <eos> are ids 0, 1, 2; save/load keeps it."""
    assert special_ids(tok) == {"pad": 0, "bos": 1, "eos": 2}
    code = "def f(x):\n    return x  # é\n"
    assert tok.decode(tok.encode(code).ids) == code
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path / "tokenizer.json").encode(code).ids == tok.encode(code).ids


def test_corrupt_tokenizer_is_user_error(tmp_path: Path) -> None:
    """An unreadable tokenizer file is a UserError naming it."""
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(UserError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


def _examples(n: int) -> list[Example]:
    return [Example(f"m:f{i}:1", "m", "train", "def f(x):\n" + "    x += 1\n" * (i % 5), "Return the content.") for i in range(n)]


def test_encoder_decoder_layout(tok) -> None:
    """Targets are <bos> text <eos>; over-long targets are dropped; sources are truncated."""
    enc = encode_examples(_examples(3), tok, max_src_tokens=4, max_tgt_tokens=64, decoder_only=False)
    assert all(e.tgt[0] == 1 and e.tgt[-1] == 2 and len(e.src) <= 4 for e in enc)
    assert encode_examples(_examples(3), tok, max_src_tokens=4, max_tgt_tokens=3, decoder_only=False) == []
    b = collate(enc, pad_id=0, decoder_only=False)
    assert torch.equal(b.tgt_in[:, 1:], b.labels[:, :-1].clamp(min=0)) or (b.labels == IGNORE_INDEX).any()
    assert b.src_pad_mask is not None and b.src_pad_mask.shape == b.src.shape


def test_decoder_only_labels_cover_the_continuation_only(tok) -> None:
    """Decoder-only: one sequence <bos> prompt continuation; loss only on the continuation."""
    enc = encode_examples(_examples(2), tok, max_src_tokens=50, max_tgt_tokens=50, decoder_only=True)
    b = collate(enc, pad_id=0, decoder_only=True)
    assert b.src is None
    for i, e in enumerate(enc):
        labels = b.labels[i][b.labels[i] != IGNORE_INDEX].tolist()
        assert labels == e.tgt
        assert b.tgt_in[i, 0] == 1


def test_batch_stream_is_a_pure_function_of_step(tok) -> None:
    """stream[step] is the same batch whatever was read before (exact resume)."""
    enc = encode_examples(_examples(40), tok, 32, 32, decoder_only=False)
    a = BatchStream(enc, 4, seed=3, pad_id=0, decoder_only=False)
    b = BatchStream(enc, 4, seed=3, pad_id=0, decoder_only=False)
    steps = [0, 1, 12, 25, 3]
    first = [a[s].tgt_in for s in steps]
    second = [b[s].tgt_in for s in reversed(steps)][::-1]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_epoch_batches_use_each_example_at_most_once() -> None:
    """An epoch's batches are disjoint, full, and differ between epochs."""
    lengths = list(range(50))
    e0 = epoch_batches(50, lengths, 8, seed=1, epoch=0)
    flat = [i for b in e0 for i in b]
    assert len(e0) == 6 and all(len(b) == 8 for b in e0) and len(set(flat)) == len(flat)
    assert e0 == epoch_batches(50, lengths, 8, seed=1, epoch=0)
    assert e0 != epoch_batches(50, lengths, 8, seed=1, epoch=1)
