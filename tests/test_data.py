"""Corpus extraction, splits, tokenizer and batching (speedsim.data)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from speedsim.data import (
    IGNORE_INDEX,
    PINNED_ENV,
    BatchStream,
    Example,
    LMStream,
    collate,
    corpus_tokenizer,
    encode_examples,
    export_corpus,
    load_corpus,
    load_tokenizer,
    open_corpus,
    save_tokenizer,
    special_ids,
    split_examples,
    split_of,
    token_stream,
    train_tokenizer,
)
from speedsim.data.dataset import bucket_pad_to, epoch_batches
from speedsim.data.extract import docstring_target, first_paragraph
from speedsim.errors import UserError

MODULE = textwrap.dedent(
    '''
    def add(a, b):
        """Add two numbers given as arguments.

        Longer explanation that is part of the target.
        """
        # keep this comment
        return a + b

    def only_doc():
        """Nothing but a docstring."""

    def square(x):
        """Square x."""
        return x * x

    class Box:
        def get(self):
            """Return the content
            of the box.

            Returns:
                the content
            """
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
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package directory with one module, a test suite (skipped) and an unparsable file."""
    root = tmp_path_factory.mktemp("src") / "pkg"
    root.mkdir()
    (root / "mod.py").write_text(MODULE)
    (root / "zcopy.py").write_text(MODULE)  # the same bytes (sorted after mod.py): deduplicated
    (root / "tests").mkdir()  # test suites are skipped
    (root / "tests" / "test_x.py").write_text(MODULE)
    (root / "broken.py").write_text("def (:\n")  # unparsable files are skipped
    return root


@pytest.fixture(scope="module")
def tok():
    texts = [MODULE, "Return the content.", "def f(x):\n    return x\n"] * 20
    return train_tokenizer(texts, vocab_size=300)


def _by_qual(examples: list[Example]) -> dict[str, Example]:
    return {e.id.split(":")[1]: e for e in examples}


def test_extract_pairs_code_without_docstring_and_prose(fake_root: Path, tmp_path: Path) -> None:
    """A documented function becomes (code minus docstring, the docstring's leading prose)."""
    corpus = open_corpus(tmp_path, [fake_root], progress=False)
    ex = _by_qual(corpus.examples("summarize"))
    assert set(ex) == {"add", "Box.get"}  # only_doc has no code left; "Square x." is too short
    assert ex["add"].target == "Add two numbers given as arguments.\nLonger explanation that is part of the target."
    assert '"""' not in ex["add"].source and "# keep this comment" in ex["add"].source
    assert ex["add"].source.startswith("def add(a, b):")
    assert ex["Box.get"].target == "Return the content of the box."  # the Returns section is cut
    assert ex["Box.get"].source.startswith("def get(self):")  # dedented method
    assert ex["add"].module == "pkg.mod"


def test_extract_continuation_splits_function_at_a_line(fake_root: Path, tmp_path: Path) -> None:
    """Continuation examples are a prompt (first lines) and the rest of the function."""
    e = _by_qual(open_corpus(tmp_path, [fake_root], progress=False).examples("continue"))["Box.long"]
    assert e.source.startswith("def long(self):")
    assert e.source + e.target == "def long(self):\n    x = 1\n    y = 2\n    z = 3\n    w = 4\n    return x + y + z + w"


def test_docstring_target_stops_at_sections_and_length() -> None:
    """Prose paragraphs are kept (one per line) up to a section header or the character cap."""
    doc = "Summary line.\n\n    Some more\n    words here.\n\n    Parameters\n    ----------\n    x : int\n"
    assert docstring_target(doc) == "Summary line.\nSome more words here."
    assert docstring_target("One.\n\nArgs:\n  x: y") == "One."
    long = "First.\n\n" + "word " * 200
    assert docstring_target(long) == "First."  # the second paragraph would pass the cap


def test_split_is_a_deterministic_function_of_package_and_module() -> None:
    """Every module maps to one split, the same each time, and all splits occur."""
    mods = [f"m{i}" for i in range(300)]
    splits = [split_of(m, "pkg") for m in mods]
    assert splits == [split_of(m, "pkg") for m in mods]
    assert set(splits) == {"train", "validation", "test"}
    assert splits != [split_of(m, "other") for m in mods]  # the package is part of the key


def test_first_paragraph_joins_lines() -> None:
    """The first docstring paragraph is cleaned onto one line."""
    assert first_paragraph("  Do a\n    thing.\n\n    More.") == "Do a thing."


def test_corpus_is_cached_deduplicated_and_counted(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built once; identical files count once; the manifest has versions and per-split counts."""
    import speedsim.data.corpus as corpus_mod

    c = open_corpus(tmp_path, [fake_root], progress=False)
    pkg = c.manifest["packages"]["pkg"]
    assert pkg["version"] == "local" and pkg["modules"] == 1 and pkg["duplicates"] == 1 and pkg["unparsed"] == 1
    assert sum(s["summarize"] for s in c.manifest["splits"].values()) == c.manifest["totals"]["summarize"] == 2
    assert not list(tmp_path.rglob(".*tmp"))  # no temporary file left behind
    monkeypatch.setattr(corpus_mod, "build_corpus", lambda *a, **k: pytest.fail("rebuilt a cached corpus"))
    again = open_corpus(tmp_path, [fake_root], progress=False)
    assert again.examples("summarize") == c.examples("summarize")
    assert [d.text for d in again.documents()] == [MODULE]


def test_corrupt_or_stale_cache_is_rebuilt_with_a_message(fake_root: Path, tmp_path: Path, capsys) -> None:
    """A damaged data file or a manifest from other sources is rebuilt, saying so on stderr."""
    c = open_corpus(tmp_path, [fake_root], progress=False)
    data = c.directory / "summarize.jsonl.xz"
    data.write_bytes(data.read_bytes()[:-8] + b"garbage!")
    again = open_corpus(tmp_path, [fake_root], progress=False)
    assert "corrupt" in capsys.readouterr().err and again.examples("summarize") == c.examples("summarize")
    manifest = json.loads((c.directory / "manifest.json").read_text())
    manifest["fingerprint"], manifest["packages"]["pkg"]["version"] = "0" * 16, "0.9"
    (c.directory / "manifest.json").write_text(json.dumps(manifest))
    open_corpus(tmp_path, [fake_root], progress=False)
    assert "other package versions (pkg 0.9 -> local)" in capsys.readouterr().err


def test_pinned_corpus_is_used_as_is_and_must_be_intact(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exported corpus pinned with $SPEEDSIM_CORPUS is read without rebuilding; a damaged one is a UserError."""
    c = open_corpus(tmp_path / "cache", [fake_root], progress=False)
    out = export_corpus(c, tmp_path / "carry")
    monkeypatch.setenv(PINNED_ENV, str(out))
    pinned = open_corpus(tmp_path / "elsewhere")
    assert pinned.directory == out and pinned.examples("summarize") == c.examples("summarize")
    (out / "documents.jsonl.xz").write_bytes(b"x")
    with pytest.raises(UserError, match="carry: not a usable corpus"):
        open_corpus(tmp_path / "elsewhere")


def test_unknown_task_and_split_are_user_errors(fake_root: Path, tmp_path: Path) -> None:
    """Bad task or split names and missing source directories are UserErrors."""
    with pytest.raises(UserError, match="task"):
        load_corpus("translate", tmp_path, [fake_root])
    with pytest.raises(UserError, match="split"):
        split_examples([], "dev")
    with pytest.raises(UserError, match="nowhere: source directory not found"):
        open_corpus(tmp_path, [tmp_path / "nowhere"])


def test_corpus_tokenizer_is_kept_with_the_corpus(code_corpus: dict) -> None:
    """The corpus's tokenizer is trained once and stored in the corpus directory."""
    c, tok = code_corpus["corpus"], code_corpus["tokenizer"]
    assert (c.directory / f"tokenizer-v{tok.get_vocab_size()}.json").exists()
    assert corpus_tokenizer(c, tok.get_vocab_size()).to_str() == tok.to_str()


def test_token_stream_and_lm_windows(code_corpus: dict, tmp_path: Path) -> None:
    """Pre-training ids are cached; windows are a pure function of step; both layouts line up."""
    c, tok = code_corpus["corpus"], code_corpus["tokenizer"]
    ids = token_stream(c, "train", tok, tmp_path, progress=False)
    assert ids.dtype == np.uint16 and int((ids == 2).sum()) == len(c.documents("train"))  # one <eos> per module
    assert np.array_equal(token_stream(c, "train", tok, tmp_path, progress=False), ids)
    dec = LMStream(ids, 3, src_len=0, tgt_len=8, seed=1, bos_id=1)
    b = dec[5]
    assert b.src is None and b.tgt_in.shape == (3, 8) and torch.equal(b.tgt_in[:, 1:], b.labels[:, :-1])
    assert torch.equal(dec[5].labels, b.labels) and not torch.equal(dec[6].labels, b.labels)
    encdec = LMStream(ids, 3, src_len=6, tgt_len=8, seed=1, bos_id=1)[5]
    assert encdec.src.shape == (3, 6) and (encdec.tgt_in[:, 0] == 1).all() and encdec.n_tokens == 24
    assert torch.equal(encdec.tgt_in[:, 1:], encdec.labels[:, :-1])


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


def _varied(n: int) -> list[Example]:
    return [Example(f"m:f{i}:1", "m", "train", "def f(x):\n" + "    x += 1\n" * (i % 7),
                    "Return the content" + " and more" * (i % 9) + ".") for i in range(n)]


@pytest.mark.parametrize("decoder_only", [False, True])
def test_pad_multiple_rounds_shapes_and_keeps_the_loss(tok, decoder_only: bool) -> None:
    """`pad_multiple`: every batch's lengths are multiples (or the caps), few shapes, and the
    padding changes neither the labelled tokens nor the model's loss."""
    from speedsim.model import SharedDecoder, SpeedConfig, exit_loss

    caps = (40, 40)
    enc = encode_examples(_varied(60), tok, caps[0], caps[1], decoder_only=decoder_only)
    stream = BatchStream(enc, 4, seed=0, pad_id=0, decoder_only=decoder_only, pad_multiple=8, caps=caps)
    shapes = set()
    for step in range(stream.per_epoch):
        b = stream[step]
        T = b.tgt_in.shape[1]
        assert T % 8 == 0 or T == sum(caps) - 1 if decoder_only else T % 8 == 0 or T == caps[1] - 1
        if b.src is not None:
            assert b.src.shape[1] % 8 == 0 or b.src.shape[1] == caps[0]
        shapes.add((None if b.src is None else b.src.shape[1], T))
    assert len(shapes) < stream.per_epoch  # shapes repeat
    items = enc[:4]
    tight = collate(items, 0, decoder_only)
    loose = collate(items, 0, decoder_only, bucket_pad_to(items, 16, caps, decoder_only))
    assert loose.n_tokens == tight.n_tokens and loose.tgt_in.shape[1] >= tight.tgt_in.shape[1]
    cfg = SpeedConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_heads=2, d_ff=64, unique_layers=1, repeats=2,
                      encoder_layers=0 if decoder_only else 1, max_len=96)
    model = SharedDecoder(cfg).eval()

    def loss(b):  # type: ignore[no-untyped-def]
        return exit_loss(model(b.src, b.tgt_in, b.src_pad_mask, b.tgt_pad_mask), b.labels)

    with torch.no_grad():
        assert torch.allclose(loss(tight), loss(loose), atol=1e-5)


def test_pad_multiple_groups_batches_by_target_length(tok) -> None:
    """Batches of similar targets: less target padding than grouping by total length."""
    enc = encode_examples(_varied(200), tok, 40, 40, decoder_only=False)

    def target_padding(stream: BatchStream) -> int:
        return sum(int(stream[s].tgt_pad_mask.sum()) for s in range(stream.per_epoch))

    plain = BatchStream(enc, 8, seed=0, pad_id=0, decoder_only=False)
    bucketed = BatchStream(enc, 8, seed=0, pad_id=0, decoder_only=False, pad_multiple=1, caps=(40, 40))
    assert target_padding(bucketed) < target_padding(plain)


def test_min_tgt_tokens_drops_short_targets(tok) -> None:
    """`min_tgt_tokens`: examples whose target text has fewer tokens are dropped, the rest kept whole."""
    every = encode_examples(_varied(40), tok, 40, 60, decoder_only=False)
    long = encode_examples(_varied(40), tok, 40, 60, decoder_only=False, min_tgt_tokens=8)
    assert 0 < len(long) < len(every)
    assert all(len(e.tgt) - 2 >= 8 for e in long)
    assert [e for e in every if len(e.tgt) - 2 >= 8] == long
    every = encode_examples(_varied(40), tok, 40, 60, decoder_only=True)  # a continuation: text and <eos>
    long = encode_examples(_varied(40), tok, 40, 60, decoder_only=True, min_tgt_tokens=8)
    assert 0 < len(long) < len(every) and [e for e in every if len(e.tgt) - 1 >= 8] == long


def test_epoch_batches_use_each_example_at_most_once() -> None:
    """An epoch's batches are disjoint, full, and differ between epochs."""
    lengths = list(range(50))
    e0 = epoch_batches(50, lengths, 8, seed=1, epoch=0)
    flat = [i for b in e0 for i in b]
    assert len(e0) == 6 and all(len(b) == 8 for b in e0) and len(set(flat)) == len(flat)
    assert e0 == epoch_batches(50, lengths, 8, seed=1, epoch=0)
    assert e0 != epoch_batches(50, lengths, 8, seed=1, epoch=1)


def test_encoded_splits_are_cached_and_equal(code_corpus: dict, tmp_path: Path) -> None:
    """Tokenised fine-tuning splits read back from their cache equal the freshly encoded ones."""
    from speedsim.data import encoded_splits

    c, tok = code_corpus["corpus"], code_corpus["tokenizer"]
    fresh = encoded_splits(c, "summarize", tok, 32, 40, False, tmp_path)
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    cached = encoded_splits(c, "summarize", tok, 32, 40, False, tmp_path)
    assert cached == fresh and all(fresh[s] for s in ("train", "validation", "test"))
    assert all(len(e.src) <= 32 and e.tgt[0] == 1 and e.tgt[-1] == 2 for e in fresh["test"])
    cut = sorted(len(e.tgt) - 2 for e in fresh["train"])[len(fresh["train"]) // 2] + 1  # above the median
    longer = encoded_splits(c, "summarize", tok, 32, 40, False, tmp_path, min_tgt_tokens=cut)  # its own cache file
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 2
    assert longer["train"] == [e for e in fresh["train"] if len(e.tgt) - 2 >= cut] != fresh["train"]
