"""YAML that PyYAML parses but speedsim's reader does not expect (speedsim.yamlio's rules).

Every YAML input (profile, model spec, sweep spec, training config) goes through
`speedsim.yamlio.read_mapping`. Documents of odd shapes (keys that are lists, mappings, numbers,
booleans, null or dates; anchors, aliases and merges; tags; deep nesting; huge or many documents;
a BOM, CR line ends, tabs, control characters) give either a JSON-like tree with text keys and
finite numbers, equal to what PyYAML reads, or exit 2 with one line naming the file and the line
or field: never another exception, a hang or a crash.

Examples first (each shape, with the line it must name), then property tests: random documents
of these shapes fed to `read_mapping`, to `yaml_output`'s `recognise`, and to each command's
reader through the CLI. Bigger and deeper generators, and the 100,000-deep documents in a
subprocess (with libyaml and with the pure-Python parser), are `@pytest.mark.slow`.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_PROFILE, CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedsim.errors import UserError
from speedsim.yamlio import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_KEY_CHARS,
    MAX_NODES,
    MAX_NUMBER_CHARS,
    read_mapping,
    yaml_output,
)

FAST = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FAST, max_examples=15)
LONG = settings(FAST, max_examples=1000)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yaml")


def _write(path: Path, doc: str | bytes) -> Path:
    path.write_bytes(doc.encode() if isinstance(doc, str) else doc)
    return path


def _refusal(path: Path, doc: str | bytes) -> str:
    """The one-line `UserError` that `read_mapping` gives for `doc` (a test failure if it reads it)."""
    _write(path, doc)
    try:
        data = read_mapping(path, "test input")
    except UserError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message
        assert message.startswith(str(path)), message
        return message
    pytest.fail(f"read as {data!r:.200}, expected a refusal", pytrace=False)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types throughout (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _json_like(data: Any, depth: int = 0) -> bool:
    """A tree of text-keyed dicts, lists, text, finite numbers, booleans and null."""
    if isinstance(data, dict):
        return depth < MAX_DEPTH and all(isinstance(k, str) and k.isprintable() and _json_like(v, depth + 1)
                                         for k, v in data.items())
    if isinstance(data, list):
        return depth < MAX_DEPTH and all(_json_like(v, depth + 1) for v in data)
    if isinstance(data, float):
        return math.isfinite(data)
    return data is None or isinstance(data, str | int)


# ------------------------------------------------------------------------------ examples

LAUGHS = "a0: &a0 [1, 2]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))

# (id, document, the line it names (or None: the file only), words of the message)
REFUSED = [
    # keys that are not text
    ("sequence-key", "? [a, b]\n: 1\n", 1, "key must be text, not a list"),
    ("flow-sequence-key", "{[a]: 1}\n", 1, "key must be text, not a list"),
    ("mapping-key", "name: x\n? {a: 1}\n: 1\n", 2, "key must be text, not a mapping"),
    ("alias-of-mapping-key", "a: &x {b: 1}\nc: 2\n? *x\n: 2\n", 3, "key must be text, not a mapping"),
    ("set-key", "? !!set {x}\n: 1\n", 1, "not a mapping"),
    ("binary-key", "? !!binary aGk=\n: 1\n", 1, "in a key: the tag !!binary is not supported"),
    ("tuple-key", "? !!python/tuple [1, 2]\n: 1\n", 1, "not a list"),
    ("int-key", "name: x\n1: x\n", 2, "key '1' is read as a number"),
    ("float-key", "1.5: x\n", 1, "read as a number"),
    ("hex-key", "0x1f: x\n", 1, "read as a number"),
    ("yes-key", "yes: x\n", 1, "key 'yes' is read as a boolean"),
    ("on-key", "a: 1\non: x\n", 2, "key 'on' is read as a boolean"),
    ("null-key", "null: x\n", 1, "key 'null' is read as null"),
    ("tilde-key", "~: x\n", 1, "read as null"),
    ("empty-key", "? \n: x\n", 1, "an empty key is read as null"),
    ("date-key", "2024-01-01: x\n", 1, "in a key: '2024-01-01' is read as a date"),
    ("tagged-int-key", "!!int '7': x\n", 1, "read as a number"),
    ("control-character-key", '"a\\tb": 1\n', 1, "control character"),
    ("newline-key", '"a\\nb": .inf\n', 1, "control character"),
    ("long-key", f"{'k' * (MAX_KEY_CHARS + 1)}: 1\n", 1, f"at most {MAX_KEY_CHARS}"),
    # duplicates, also through merges
    ("duplicate-key", "a: 1\nb: 2\na: 3\n", 3, "key 'a' is given twice (on line 1 and on line 3"),
    ("merge-overrides", "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", 4, "key 'x' is given twice"),
    ("two-merges-overlap", "a: &a {p: 1}\nb: &b {p: 2}\nc: {<<: [*a, *b]}\n", 3, "a merge adds keys"),
    ("same-merge-twice", "a: &a {pq: 1}\nc: {<<: [*a, *a]}\n", 2, "key 'pq' is given twice"),
    ("merge-of-scalar", "<<: 1\n", 1, "merge takes a mapping or a list of mappings"),
    ("merge-of-list-of-scalars", "a: {<<: [1]}\n", 1, "merge takes a mapping"),
    # anchors and aliases
    ("recursive-alias", "a: &x [*x]\n", 1, "recursive"),
    ("recursive-alias-in-mapping", "a: &x {b: {c: *x}}\n", 1, "recursive"),
    ("recursive-merge", "a: &x {<<: *x}\n", 1, "recursive"),
    ("undefined-alias", "a: *nope\n", 1, "no anchor &nope"),
    ("alias-before-anchor", "a: *x\nb: &x 1\n", 1, "no anchor &x"),
    ("anchor-defined-twice", "a: &x 1\nb: &x 2\nc: *x\n", 2, "defined twice"),
    ("billion-laughs", LAUGHS, 6, "aliases"),
    # tags and values that are not JSON-like
    ("binary", "a: !!binary aGVsbG8=\n", 1, "field 'a': the tag !!binary is not supported"),
    ("set", "a: 1\nb: [0, {c: !!set {x, y}}]\n", 2, "field 'b.1.c': the tag !!set is not supported"),
    ("omap", "a: !!omap [{x: 1}]\n", 1, "!!omap is not supported"),
    ("pairs", "a: !!pairs [{x: 1}, {x: 2}]\n", 1, "!!pairs is not supported"),
    ("pairs-top", "!!pairs [{a: 1}]\n", 1, "field '(top level)': the tag !!pairs"),
    ("python-object", "a: !!python/object:os.system {}\n", 1, "!!python/object:os.system is not supported"),
    ("python-name", "a: !!python/name:os.system ''\n", 1, "not supported"),
    ("python-tuple", "a: !!python/tuple [1]\n", 1, "not supported"),
    ("custom-tag", "a: !foo 1\n", 1, "!foo is not supported"),
    ("tag-directive", "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n", 3, "tag:example.com,2000:x is not"),
    ("date", "a: 2024-01-01\n", 1, "field 'a': '2024-01-01' is read as a date"),
    ("datetime", "a: 2024-01-01 10:00:00\n", 1, "read as a date"),
    ("timestamp-tag", "a: !!timestamp 2024-01-01T00:00:00Z\n", 1, "read as a date"),
    ("impossible-date", "a: 2024-13-45\n", 1, "read as a date"),
    ("map-tag-on-list", "a: !!map [x]\n", 1, "!!map on a list"),
    ("map-tag-on-scalar", "a: !!map x\n", 1, "!!map on a scalar"),
    ("seq-tag-on-map", "a: !!seq {b: 1}\n", 1, "sequence"),
    ("str-tag-on-list", "a: !!str [x]\n", 1, "scalar"),
    ("bool-tag-on-text", "a: !!bool maybe\n", 1, "field 'a': 'maybe' is not a valid !!bool"),
    ("int-tag-on-text", "a: !!int x\n", 1, "not a valid !!int"),
    ("int-tag-on-empty", "a: !!int ''\n", 1, "not a valid !!int"),
    ("float-tag-on-text", "a: !!float x\n", 1, "not a valid !!float"),
    ("binary-int-without-digits", "a: 0b_\n", 1, "'0b_' is not a valid !!int"),
    ("hex-int-without-digits", "a: 0x_\n", 1, "not a valid !!int"),
    ("long-int", f"a: {'1' * (MAX_NUMBER_CHARS + 1)}\n", 1, f"at most {MAX_NUMBER_CHARS}"),
    ("5000-digit-int", f"a: {'7' * 5000}\n", 1, "field 'a': a number of 5,000 characters"),
    ("base-60-int", "a: 1" + ":00" * 20_000 + "\n", 1, "a number of 60,001 characters"),
    ("long-float", f"a: 0.{'1' * MAX_NUMBER_CHARS}\n", 1, "at most"),
    ("inf", "a: {b: [1, .inf]}\n", None, "field 'a.b.1': numbers must be finite"),
    ("nan", "a: .NaN\n", None, "field 'a': numbers must be finite"),
    ("overflowing-float", "a: 1.0e+999\n", None, "field 'a'"),
    ("merged-inf", "c: {<<: {x: .nan}}\n", None, "field 'c.x'"),
    # documents
    ("empty", "", None, "must be a YAML mapping"),
    ("comment-only", "# nothing\n", None, "must be a YAML mapping"),
    ("list", "- a\n", None, "must be a YAML mapping"),
    ("scalar", "just text\n", None, "must be a YAML mapping"),
    ("two-documents", "a: 1\n---\nb: 2\n", 2, "a second document"),
    ("empty-second-document", "a: 1\n---\n", 2, "a second document"),
    ("many-documents", "a: 1\n" + "---\n" * 100_000, 2, "a second document"),
    ("document-end-then-more", "a: 1\n...\nb: 2\n", 3, "not valid YAML"),
    # characters and layout
    ("tab-indent", "a:\n\tb: 1\n", 2, "not valid YAML"),
    ("control-character", "a: b\nc: \x01\n", 2, "#x01"),
    ("control-character-after-multibyte", "a: ééé\nc: \x07\n", 2, "#x07"),
    ("syntax", "a: [1\nb: 2\n", 2, "not valid YAML"),
    # nesting and size
    ("too-deep-lists", "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", 1, f"more than {MAX_DEPTH} levels"),
    ("too-deep-mappings", "a: " + "{b: " * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "\n", 1, "levels deep"),
    ("too-deep-block", "a:\n" + "".join("  " * i + "- \n" for i in range(MAX_DEPTH + 1)), MAX_DEPTH + 1,
     "levels"),
    ("deep-through-an-alias", "a: &x " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\nb: [*x]\n", 2,
     f"more than {MAX_DEPTH} levels deep once its aliases are expanded"),
    ("deep-through-a-chain-of-aliases",
     "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 500)), MAX_DEPTH,
     "once its aliases are expanded"),
    ("100k-deep-lists", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", 1, ""),
    ("100k-deep-mappings", "{a: " * 100_000 + "}" * 100_000 + "\n", 1, "levels deep"),
    ("too-many-values", "a: [" + "1, " * MAX_NODES + "1]\n", 1, f"more than {MAX_NODES:,} values"),
    ("too-many-keys", "".join(f"k{i}: {i}\n" for i in range(MAX_NODES // 2 + 1)), MAX_NODES // 2, "values"),
]

ACCEPTED = [
    # (id, document, what it reads as)
    ("quoted-keys", "'1': a\n\"yes\": b\n'null': c\n'2024-01-01': d\n", {"1": "a", "yes": "b", "null": "c",
                                                                          "2024-01-01": "d"}),
    ("str-tagged-key", "!!str 1: a\n", {"1": "a"}),
    ("bool-and-null-values", "a: yes\nb: ~\nc: off\n", {"a": True, "b": None, "c": False}),
    ("merge", "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  z: 3\n",
     {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 2, "z": 3}}),
    ("merge-list", "a: &a {p: 1}\nb: &b {q: 2}\nc: {<<: [*a, *b], r: 3}\n",
     {"a": {"p": 1}, "b": {"q": 2}, "c": {"p": 1, "q": 2, "r": 3}}),
    ("nested-merge", "a: &a {p: 1}\nb: &b {<<: *a, q: 2}\nc: {<<: *b}\n",
     {"a": {"p": 1}, "b": {"p": 1, "q": 2}, "c": {"p": 1, "q": 2}}),
    ("aliases", "a: &x [1, {b: 2}]\nc: *x\nd: &s text\ne: *s\n",
     {"a": [1, {"b": 2}], "c": [1, {"b": 2}], "d": "text", "e": "text"}),
    ("alias-as-key", "a: &k name\n*k : 1\n", {"a": "name", "name": 1}),
    # YAML 1.1's value and merge signs where a value belongs: text (PyYAML has no constructor for them)
    ("value-and-merge-signs-as-values", "a: =\nb: <<\n", {"a": "=", "b": "<<"}),
    ("numbers", "a: 0x1f\nb: 017\nc: 1_000\nd: 1:30\ne: -1.5e+3\nf: !!float 2\ng: 0o17\n",
     {"a": 31, "b": 15, "c": 1000, "d": 90, "e": -1500.0, "f": 2.0, "g": "0o17"}),  # YAML 1.1: 0o17 is text
    ("bom", "\ufeffa: 1\n", {"a": 1}),
    ("crlf", "a: 1\r\nb:\r\n  - 2\r\n", {"a": 1, "b": [2]}),
    ("cr", "a: 1\rb: 2\r", {"a": 1, "b": 2}),
    ("tab-in-flow", "a: [1,\t2]\n", {"a": [1, 2]}),
    ("explicit-document", "%YAML 1.1\n---\na: 1\n...\n", {"a": 1}),
    ("control-characters-in-values", 'a: "x\\ty\\u0001"\n', {"a": "x\ty\x01"}),
    ("deepest", "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n", None),
    ("deepest-through-an-alias", "a: &x " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\nb: [*x]\n",
     None),
    ("longest-key-and-number", f"{'k' * MAX_KEY_CHARS}: {'9' * MAX_NUMBER_CHARS}\n",
     {"k" * MAX_KEY_CHARS: int("9" * MAX_NUMBER_CHARS)}),
]


# about 0.6 s each (100,000 values parsed before the limit): run at length only
SLOW_EXAMPLES = {"too-many-values", "too-many-keys"}


@pytest.mark.parametrize("doc, line, words", [
    pytest.param(d, n, w, id=i, marks=[pytest.mark.slow] if i in SLOW_EXAMPLES else [])
    for i, d, n, w in REFUSED])
def test_refused(work: Path, doc: str, line: int | None, words: str) -> None:
    """Each shape: one line naming the file, the line (or field), and what is wrong."""
    path = work / "doc.yaml"
    message = _refusal(path, doc)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert message.startswith(where), message
    assert words in message, message


@pytest.mark.parametrize("doc, expected", [pytest.param(d, e, id=i) for i, d, e in ACCEPTED])
def test_accepted(work: Path, doc: str, expected: dict | None) -> None:
    """Valid documents of the same families read as PyYAML reads them."""
    data = read_mapping(_write(work / "doc.yaml", doc), "test input")
    assert _json_like(data)
    assert _pyyaml(doc) is _FAILED or _same(data, _pyyaml(doc))
    if expected is not None:
        assert _same(data, expected)


def test_aliases_read_as_copies(work: Path) -> None:
    """A value an alias shares is read as separate copies: changing one leaves the others."""
    data = read_mapping(_write(work / "doc.yaml", "a: &x {b: [1]}\nc: *x\nd: {<<: *x}\n"), "test input")
    data["a"]["b"].append(2)
    assert data["c"] == {"b": [1]} and data["d"] == {"b": [1]}


def test_not_text_files(work: Path) -> None:
    """Not UTF-8, NUL bytes, UTF-16 with its BOM: one line naming the file."""
    for doc, words in ((b"a: \xff\n", "UTF-8"), (b"a: 1\x00\n", "NUL"), ("a: 1\n".encode("utf-16"), "")):
        assert words in _refusal(work / "doc.yaml", doc)


def test_huge_file_refused_by_size(work: Path) -> None:
    """A 200 MB file is refused by its size, before it is read (a sparse file: nothing is written)."""
    path = work / "huge.yaml"
    with path.open("wb") as fh:
        fh.truncate(200 << 20)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        read_mapping(path, "test input")
    assert time.monotonic() - started < 1
    message = str(err.value)
    assert message == (f"{path}: cannot read test input: {200 << 20:,} bytes, more than the {MAX_BYTES:,} "
                       "a YAML input may have")


def test_size_limit_is_the_documented_one(work: Path) -> None:
    """A long single line just under `MAX_BYTES` is read; one byte more is refused."""
    head, tail = "a: '", "'\n"
    doc = head + "x" * (MAX_BYTES - len(head) - len(tail)) + tail
    assert read_mapping(_write(work / "long.yaml", doc), "test input")["a"] == "x" * (MAX_BYTES - 6)
    assert "bytes, more than the" in _refusal(work / "long.yaml", doc.replace("'\n", "x'\n"))


# ------------------------------------------------------------------------------ generators

KEY_TEXTS = ["a", "b", "name", "'q k'", '"d"', "1", "-2", "0x1f", "1.5", ".inf", ".nan", "yes", "off", "true",
             "null", "~", "2024-01-01", "=", "<<", "''", '"a\\tb"', "1:30", "!!str 5", "!!binary aGk="]
VALUE_TEXTS = [*KEY_TEXTS, "0o17", "1_000", "1e3", "1.0e+999", "-.inf", "2024-01-01T10:00:00Z", "0b_", "._",
               "x y", "", "'it''s'", "99999999999999999999999", "2024-13-45", "!!bool maybe", "!!int ''"]
TAGS = ["", "", "", "", "", "!!str ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!binary ", "!!timestamp ",
        "!!set ", "!!omap ", "!!pairs ", "!!python/object:os.system ", "!!python/tuple ", "!foo ", "!!map ",
        "!!seq ", "! ", "!!merge ", "!!value "]
LAYOUTS = ["plain", "plain", "plain", "bom", "crlf", "cr", "second-document", "directive", "end-marker",
           "tab", "control-character", "block"]


@st.composite
def hostile_docs(draw: st.DrawFn, max_depth: int = 3, max_items: int = 3) -> str:
    """A YAML document (flow style, sometimes laid out otherwise) with random nesting, keys that are
    text, numbers, booleans, null, dates, lists, mappings or aliases, anchors (some reused), aliases
    (some recursive or undefined), `<<` merges and tags."""
    done: list[str] = []
    open_: list[str] = []

    def choose(options: list[str]) -> str:
        return options[draw(st.integers(0, len(options) - 1))]

    def node(depth: int, top: bool = False) -> str:
        kinds = ["scalar", "scalar", "scalar", "alias"] + (["seq", "map"] if depth < max_depth else [])
        if top:
            kinds = ["map"]
        kind = choose(kinds)
        if kind == "alias":
            return "*" + choose([*done, *open_, "nowhere"])
        anchor = None
        if draw(st.integers(0, 3)) == 0:
            anchor = choose([f"a{len(done) + len(open_)}"] * 3 + (done or ["a"]))
            open_.append(anchor)
        prefix = (f"&{anchor} " if anchor else "") + ("" if top else choose(TAGS))
        if kind == "scalar":
            text = choose(VALUE_TEXTS)
        elif kind == "seq":
            text = "[" + ", ".join(node(depth + 1) for _ in range(draw(st.integers(0, max_items)))) + "]"
        else:
            items = []
            for _ in range(draw(st.integers(0, max_items))):
                how = draw(st.integers(0, 5))
                if how == 0:
                    items.append(f"<<: {node(depth + 1)}")
                elif how == 1:
                    items.append(f"? {node(depth + 1)} : {node(depth + 1)}")
                else:
                    items.append(f"{choose(KEY_TEXTS)}: {node(depth + 1)}")
            text = "{" + ", ".join(items) + "}"
        if anchor:
            open_.remove(anchor)
            done.append(anchor)
        return prefix + text

    doc = node(0, top=draw(st.integers(0, 5)) > 0) + "\n"
    layout = choose(LAYOUTS)
    if layout == "bom":
        doc = "\ufeff" + doc
    elif layout == "crlf":
        doc = doc.replace("\n", "\r\n")
    elif layout == "cr":
        doc = doc.replace("\n", "\r")
    elif layout == "second-document":
        doc += "---\n" + node(0) + "\n"
    elif layout == "directive":
        doc = "%YAML 1.1\n---\n" + doc
    elif layout == "end-marker":
        doc += "...\n"
    elif layout == "tab":
        doc = doc.replace(" ", "\t", 1)
    elif layout == "control-character":
        doc = doc[:-1] + "\x05\n"
    elif layout == "block" and doc.startswith("{") and doc.endswith("}\n"):
        doc = "top:\n  " + doc  # the flow mapping nested in a block one
    return doc


SCALAR_KEYS = st.one_of(
    st.text(max_size=6), st.text(max_size=6), st.integers(-3, 1000), st.booleans(), st.none(),
    st.floats(allow_nan=True), st.dates(), st.tuples(st.integers(0, 3)),
    st.text(min_size=MAX_KEY_CHARS - 1, max_size=MAX_KEY_CHARS + 1).filter(str.isprintable))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**101), 10**101), st.floats(),
                   st.text(max_size=8), st.dates(), st.datetimes(), st.binary(max_size=4),
                   st.sets(st.integers(0, 3), max_size=2), st.tuples(st.integers(0, 3)))


def _trees(leaves: st.SearchStrategy, max_leaves: int) -> st.SearchStrategy:
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(SCALAR_KEYS, inner, max_size=3)),
                        max_leaves=max_leaves)


@st.composite
def dumped(draw: st.DrawFn, max_leaves: int = 8) -> tuple[str, Any]:
    """A random Python tree (text and non-text keys; dates, bytes, sets, tuples, NaN among the values;
    a value shared by two keys, which PyYAML writes as an anchor and an alias) and the YAML that
    `yaml.dump` makes of it, in block or flow style."""
    tree = draw(st.dictionaries(SCALAR_KEYS, _trees(LEAVES, max_leaves), max_size=4))
    if draw(st.booleans()):
        shared = draw(_trees(LEAVES, max_leaves))
        tree["shared1"], tree["shared2"] = shared, shared
    text = yaml.dump(tree, Dumper=yaml.Dumper, default_flow_style=draw(st.sampled_from([False, True, None])),
                     allow_unicode=draw(st.booleans()), sort_keys=False)
    return text, tree


def _readable(data: Any, depth: int = 1) -> bool:
    """Whether the rules accept `data` (a Python tree): what `read_mapping` must read, not refuse."""
    if isinstance(data, dict):
        return depth <= MAX_DEPTH and all(
            isinstance(k, str) and k.isprintable() and len(k) <= MAX_KEY_CHARS and _readable(v, depth + 1)
            for k, v in data.items())
    if isinstance(data, list):
        return depth <= MAX_DEPTH and all(_readable(v, depth + 1) for v in data)
    if isinstance(data, bool) or data is None or isinstance(data, str):
        return True
    if isinstance(data, int):
        return len(str(data)) <= MAX_NUMBER_CHARS
    if isinstance(data, float):
        return math.isfinite(data)
    return False  # dates, bytes, sets, tuples


def _pyyaml(doc: str | bytes) -> Any:
    """PyYAML's own reading of `doc` with the parser the reader uses (libyaml if PyYAML has it: the
    two parsers differ on a few syntax details, such as a tab between flow items), or `_FAILED`."""
    try:
        return yaml.load(doc.decode() if isinstance(doc, bytes) else doc, Loader=SAFE_LOADER)
    except yaml.YAMLError:
        return _FAILED


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FAILED = object()


def _read_or_refuse(path: Path, doc: str | bytes, what: str = "test input") -> dict | str:
    """What `read_mapping` makes of `doc`: a JSON-like mapping equal to PyYAML's reading (where
    PyYAML reads it), or the message of a one-line `UserError` naming the file. Anything else fails
    the test."""
    _write(path, doc)
    started = time.monotonic()
    try:
        data = read_mapping(path, what)
    except UserError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message and message.startswith(str(path)), message
        return message
    finally:
        assert time.monotonic() - started < 5, "took more than 5 s"
    assert isinstance(data, dict) and _json_like(data), data
    expected = _pyyaml(doc)
    assert expected is _FAILED or _same(data, expected), data
    return data


# ------------------------------------------------------------------------------ properties

@FAST
@given(doc=hostile_docs())
def test_hostile_documents(work: Path, doc: str) -> None:
    """Random shapes: a JSON-like mapping equal to PyYAML's reading, or one line naming the file."""
    _read_or_refuse(work / "doc.yaml", doc)


@FEW
@given(case=dumped())
def test_dumped_trees(work: Path, case: tuple[str, Any]) -> None:
    """What `yaml.dump` writes of a random tree is read back equal if the rules allow the tree
    (text keys, JSON-like finite values), and refused in one line naming the file otherwise."""
    doc, tree = case
    result = _read_or_refuse(work / "doc.yaml", doc)
    # the document means what YAML reads, which `yaml.dump` does not always round-trip: a key of '\x85 '
    # (a NEL, a line break to YAML) is written raw in quotes and read back folded to ' '
    read_back = _pyyaml(doc)
    if read_back is not _FAILED and not _same(read_back, tree):
        tree = read_back
    if _readable(tree):
        assert isinstance(result, dict) and _same(result, tree), result
    else:
        assert isinstance(result, str), f"read {result!r:.200}, expected a refusal"


ANY_DOC = st.one_of(hostile_docs(), dumped().map(lambda case: case[0]))


@FAST
@given(doc=ANY_DOC)
def test_recognise(work: Path, doc: str) -> None:
    """`yaml_output`'s recognise answers (never raises, never hangs): yes exactly when the file reads
    as a mapping with its keys."""
    from speedsim.hardware.files import PROFILE_FILE

    path = _write(work / "out.yaml", doc)
    kind = yaml_output("a test output", frozenset({"a"}))
    result = _read_or_refuse(work / "doc.yaml", doc)
    assert kind.holds(path) == (isinstance(result, dict) and "a" in result)
    assert PROFILE_FILE.holds(path) is False


def test_recognise_examples(work: Path) -> None:
    """Every refused example is not ours (and a profile that speedsim wrote is)."""
    from speedsim.hardware.files import PROFILE_FILE

    for name, doc, *_ in REFUSED:
        if name in SLOW_EXAMPLES:
            continue
        assert PROFILE_FILE.holds(_write(work / "out.yaml", doc)) is False
    assert PROFILE_FILE.holds(_write(work / "out.yaml", yaml.safe_dump(TINY_PROFILE, sort_keys=False)))


# ------------------------------------------------------------------------------ through the CLI

def _commands(path: Path, out: Path) -> dict[str, tuple[str, ...]]:
    """Each command's reader of a YAML file, given `path`."""
    return {
        "profile": ("simulate", "--profile", str(path), "--model", "t5base", "--sharing", "4x3",
                    "--trace", "4x3"),
        "model-spec": ("simulate", "--profile", "h200", "--model-spec", str(path), "--model", "x",
                       "--sharing", "4x3", "--trace", "4x3"),
        "sweep-spec": ("sweep", str(path), "--out", str(out), "--workers", "1"),
        "train-config": ("train", "--config", str(path), "--out", str(out)),
    }


COMMANDS = ["profile", "model-spec", "sweep-spec", "train-config"]


def _assert_cli(res: CliResult, path: Path, reader: dict | str) -> None:
    """Exit 2 and one line naming the file; the reader's own line when the reader refused the file."""
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-2000:])
    assert str(path) in lines[0], lines[0]
    if isinstance(reader, str):
        assert lines[0] == f"speedsim: error: {reader}"


def _cli_case(work: Path, command: str, doc: str | bytes) -> None:
    path = work / f"{command}.yaml"
    reader = _read_or_refuse(path, doc, command.replace("-", " ").replace("train", "training"))
    out = work / f"out-{command}"
    _assert_cli(run_cli(*_commands(path, out)[command]), path, reader)
    assert not out.exists() or not any(out.iterdir()), "a refused input wrote outputs"


CLI_EXAMPLES = [(i, d) for i, d, *_ in REFUSED if not i.startswith(("100k", "too-many", "many-", "base-60"))]


@pytest.mark.parametrize("command, doc", [pytest.param(COMMANDS[k % len(COMMANDS)], d, id=i)
                                          for k, (i, d) in enumerate(CLI_EXAMPLES)])
def test_cli_refused(work: Path, command: str, doc: str) -> None:
    """Each refused shape, through one of the commands in turn: the reader's one line, exit 2, nothing
    written (every command with every shape: `test_cli_refused_by_every_command`)."""
    _cli_case(work, command, doc)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("doc", [pytest.param(d, id=i) for i, d in CLI_EXAMPLES])
def test_cli_refused_by_every_command(work: Path, command: str, doc: str) -> None:
    _cli_case(work, command, doc)


@pytest.mark.parametrize("command", COMMANDS)
@FEW
@given(doc=ANY_DOC)
def test_cli_hostile(work: Path, command: str, doc: str) -> None:
    """Random shapes through each command: exit 2 and one line naming the file (the reader's line
    when it refused the file, else the schema's), never a traceback."""
    _cli_case(work, command, doc)


# ------------------------------------------------------------------------------ slow: bigger, deeper

@pytest.mark.slow
@LONG
@given(doc=hostile_docs(max_depth=6, max_items=5))
def test_hostile_documents_at_length(work: Path, doc: str) -> None:
    _read_or_refuse(work / "doc.yaml", doc)


@pytest.mark.slow
@LONG
@given(case=dumped(max_leaves=40))
def test_dumped_trees_at_length(work: Path, case: tuple[str, Any]) -> None:
    test_dumped_trees.hypothesis.inner_test(work, case)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
@settings(FAST, max_examples=60)
@given(doc=ANY_DOC)
def test_cli_hostile_at_length(work: Path, command: str, doc: str) -> None:
    _cli_case(work, command, doc)


DEEP = {
    "flow-lists": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "flow-mappings": "a: " + "{b: " * 100_000 + "1" + "}" * 100_000 + "\n",
    "block-lists": "a:\n" + "- " * 100_000 + "x\n",  # compact nested block sequences
    "aliases-of-deep": "a: &x " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\nb: [*x]\n",
}

_CLI = "import sys; from speedsim.cli import main; sys.argv[0] = 'speedsim'; main()"
_PURE_PYTHON = "import yaml; del yaml.CSafeLoader; "  # PyYAML without libyaml: the pure-Python parser


@pytest.mark.slow
@pytest.mark.parametrize("parser", ["libyaml", "python"])
@pytest.mark.parametrize("shape", list(DEEP))
def test_deep_documents_in_a_subprocess(work: Path, parser: str, shape: str) -> None:
    """100,000 levels (never a C-stack crash: a segfault would kill pytest, hence a subprocess), with
    libyaml and with the pure-Python parser: exit 2 and one line naming the file and line."""
    path = _write(work / f"deep-{shape}.yaml", DEEP[shape])
    code = (_PURE_PYTHON if parser == "python" else "") + _CLI
    res = subprocess.run([sys.executable, "-c", code, "simulate", "--profile", str(path), "--model", "t5base",
                          "--sharing", "4x3", "--trace", "4x3"], capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-2000:])
    assert re.match(rf"speedsim: error: {re.escape(str(path))}:\d+: .*(levels|nesting)", lines[0]), lines[0]


@pytest.mark.slow
def test_pure_python_parser_agrees(work: Path) -> None:
    """Without libyaml (the pure-Python parser PyYAML falls back to) every example is read the same,
    or refused at the same line (syntax messages differ between the two parsers)."""
    docs = [(i, d) for i, d, *_ in REFUSED] + [(i, d) for i, d, _ in ACCEPTED]
    paths = {i: str(_write(work / f"py-{i}.yaml", d)) for i, d in docs}
    script = _PURE_PYTHON + textwrap.dedent("""
        import json, sys
        from speedsim.errors import UserError
        from speedsim.yamlio import read_mapping
        out = {}
        for name, path in json.load(sys.stdin).items():
            try:
                out[name] = ["read", read_mapping(path, "test input")]
            except UserError as err:
                out[name] = ["refused", str(err)]
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", script], input=json.dumps(paths), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    python = json.loads(res.stdout)
    for name, path in paths.items():
        try:
            here: list[Any] = ["read", read_mapping(path, "test input")]
        except UserError as err:
            here = ["refused", str(err)]
        if "not valid YAML" in str(python[name][1]) + str(here[1]):
            continue  # the two parsers differ on some syntax (a tab between flow items)
        assert python[name][0] == here[0], (name, python[name], here)
        assert python[name][1] == (json.loads(json.dumps(here[1])) if here[0] == "read" else here[1]), name

