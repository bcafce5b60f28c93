"""Reading YAML inputs (profiles, model specs, sweep specs, training configs) with one-line user errors.

Every YAML file speedsim reads comes through `read_mapping`, and what it returns is JSON-like: a
tree (no shared parts) of dicts with text keys, lists, text, finite numbers, booleans and null.
YAML can say far more than that; what it says beyond is refused at the reader in one line naming
the file and the line (`FILE:LINE: ...`), the field too where there is one (`FILE:LINE: field
'a.b': ...`), never a traceback, a hang or a crash. The rules:

- The file: a regular file (not a directory; not a FIFO or device, whose read could block or never
  end) of at most `MAX_BYTES` (refused by its size before it is read), UTF-8 text (a leading BOM is
  allowed), no NUL byte, no control character. CR and CRLF are line ends; a tab is refused where
  YAML refuses it (in indentation).
- One document: a second one (a second `---`) is refused, since a file holds one mapping, and so
  is a top level that is not a mapping (an empty file, a list, a scalar).
- Size and shape: at most `MAX_NODES` values and `MAX_DEPTH` levels of lists and mappings, both
  counted with every alias expanded (a "billion laughs" document would take hours to construct; a
  100,000-deep `[[[...]]]`, or aliases of aliases, would exhaust the stack). Both are checked as
  the parser's events arrive, without recursion, so no huge or deep document is ever built.
- Keys: every key of every mapping is text: printable, at most `MAX_KEY_CHARS` characters, and
  given once. No schema speedsim reads has keys of another kind (the profile's
  `matrix_peak_TFLOPS: {bf16: ...}` is keyed by dtype names; nothing is keyed by numbers), so a key
  that YAML reads as a number, boolean, null or date (`1:`, `yes:`, `null:`, `2024-01-01:`) is
  refused with its line (quote it to mean the text), as is a key that is a list or a mapping
  (`? [a, b]`, `{[a]: 1}`, an alias of either).
- Anchors and aliases are allowed (`&x` defined once, before its `*x`), not recursive (`&x [*x]`);
  each use of an alias reads as its own copy. A `<<: *x` (YAML 1.1 merge) adds the keys of `x` (or
  of each mapping in `<<: [*x, *y]`) to the mapping, and they count as given there: a key that a
  merge and the mapping both give, or two merges, is a key given twice, refused like any
  duplicate. (YAML lets one of them win silently, and which one differs between readers.)
- Values: only text, integers, floats, booleans and null, in lists and mappings. Any other tag
  (`!!binary`, `!!set`, `!!omap`, `!!pairs`, `!!timestamp` or a plain `2024-01-01`,
  `!!python/...`, a custom `!foo`) is refused with its field and line; so is a scalar its tag
  cannot read (`!!bool maybe`, `!!int x`, `0b_`) and a number written with more than
  `MAX_NUMBER_CHARS` characters (5,000 digits, or 20,000 base-60 `1:00:00...` parts, raised or
  took long to convert). A plain `=` or `<<` where a value belongs is text. Numbers must be finite:
  `.inf` and `.nan` are refused with their field.

`validate_as` checks the validated model again, so a quoted `"inf"` or `"1e999"` that pydantic
turns into a float is refused too. `yaml_output`'s `recognise` (is an existing output file ours?)
reads with the same rules, and answers no to whatever they refuse.
"""

from __future__ import annotations

import math
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from speedsim.errors import UserError, user_error
from speedsim.fileio import OutputKind, head_text, read_text_input
from speedsim.limits import (
    YAML_MAX_BYTES,
    YAML_MAX_DEPTH,
    YAML_MAX_KEY_CHARS,
    YAML_MAX_NODES,
    YAML_MAX_NUMBER_CHARS,
)
from speedsim.userpath import one_line, probe, shown

M = TypeVar("M", bound=BaseModel)

# the reader's limits (`speedsim.limits`, the one set of size limits)
MAX_BYTES, MAX_NODES, MAX_DEPTH = YAML_MAX_BYTES, YAML_MAX_NODES, YAML_MAX_DEPTH
MAX_KEY_CHARS, MAX_NUMBER_CHARS = YAML_MAX_KEY_CHARS, YAML_MAX_NUMBER_CHARS

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_KEY_KINDS = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that speedsim does not read: `problem`, at `problem_mark`'s line."""

    def __init__(self, problem: str, mark: Any):  # a yaml.Mark (libyaml's or PyYAML's), or None
        super().__init__(problem=problem, problem_mark=mark)


class _Unread:
    """A value speedsim does not read (a date, `!!binary` data, a tag it does not know, a scalar its
    tag cannot read): refused with its field and line when the document becomes a tree (`_tree`),
    or with its line where it is a key."""

    __slots__ = ("problem", "mark")

    def __init__(self, problem: str, mark: Any):
        self.problem = problem
        self.mark = mark


def _show(text: str, limit: int = 60) -> str:
    """`text` for a one-line message: control characters escaped, cut to `limit` characters."""
    text = one_line(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _kind(node: yaml.Node) -> str:
    """What a node is, as a message says it."""
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "mapping" if isinstance(node, yaml.MappingNode) else "scalar"


def _tag(tag: str | None) -> str:
    """A tag as YAML writes it: `!!binary` for the standard ones, else as given."""
    tag = tag or "?"
    return _show(f"!!{tag.removeprefix(_YAML_TAG)}" if tag.startswith(_YAML_TAG) else tag)


# libyaml's parser when PyYAML was built with it (6x faster on a profile), else the pure-Python one;
# both with PyYAML's safe constructors and resolver, so they read the same documents the same way.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):  # type: ignore[valid-type, misc]
    """A safe loader whose constructors make only JSON-like values, with text keys given once."""


def _flatten(node: yaml.MappingNode) -> dict[int, yaml.Mark]:
    """Replace the `<<` merges of `node` by the pairs they merge (recursively, in place; none
    dropped, so a key merged twice or also given stays twice). For each merged pair's key node
    (by id), where the `<<` that merged it is."""
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    own: list[tuple[yaml.Node, yaml.Node]] = []
    by: dict[int, yaml.Mark] = {}
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            own.append((key_node, value_node))
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise _Refused(f"a '<<' merge takes a mapping or a list of mappings, not a {_kind(source)}",
                               source.start_mark)
            _flatten(source)
            merged.extend(source.value)
            by.update((id(key), key_node.start_mark) for key, _ in source.value)
    node.value = merged + own
    return by


def _key(loader: _StrictLoader, node: yaml.Node) -> str:
    """The text of a key node; `_Refused` if it is anything else (a list, a number, null, ...)."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Refused(f"a key must be text, not a {_kind(node)}", node.start_mark)
    key = loader.construct_object(node)
    if isinstance(key, _Unread):
        raise _Refused(f"in a key: {key.problem}", key.mark)
    if not isinstance(key, str):
        shown_key = f"key '{_show(node.value)}'" if node.value else "an empty key"
        raise _Refused(f"{shown_key} is read as {_KEY_KINDS.get(type(key), type(key).__name__)}, not text "
                       "(keys are text: put it in quotes)", node.start_mark)
    if not key.isprintable():
        raise _Refused(f"key '{_show(key)}' has a control character (keys are printable text)",
                       node.start_mark)
    if len(key) > MAX_KEY_CHARS:
        raise _Refused(f"a key of {len(key):,} characters (at most {MAX_KEY_CHARS})", node.start_mark)
    return key


def _mapping(loader: _StrictLoader, node: yaml.Node, deep: bool = False) -> dict[str, Any]:
    """A mapping with its merges flattened, refusing a key that is not text or is given twice."""
    if not isinstance(node, yaml.MappingNode):
        raise _Refused(f"{_tag(node.tag)} on a {_kind(node)} (it tags a mapping)", node.start_mark)
    merged = _flatten(node)
    seen: dict[str, yaml.Node] = {}
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _key(loader, key_node)
        if key in seen:
            first, second = (f"by the '<<' merge on line {merged[id(n)].line + 1}" if id(n) in merged
                             else f"on line {n.start_mark.line + 1}" for n in (seen[key], key_node))
            by_merge = {id(seen[key]), id(key_node)} & merged.keys()
            note = "; a merge adds keys, it does not replace them" if by_merge else ""
            raise _Refused(f"key '{_show(key)}' is given twice ({first} and {second}{note})",
                           merged.get(id(key_node), key_node.start_mark))
        seen[key] = key_node
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


Constructor = Callable[[Any, yaml.Node], Any]


def _scalar(construct: Constructor, number: bool) -> Constructor:
    """`construct` (a safe scalar constructor) refusing what it cannot read, with its line."""

    def checked(loader: _StrictLoader, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise _Refused(f"{_tag(node.tag)} on a {_kind(node)} (it tags a scalar)", node.start_mark)
        if number and len(node.value) > MAX_NUMBER_CHARS:
            return _Unread(f"a number of {len(node.value):,} characters (at most {MAX_NUMBER_CHARS})",
                           node.start_mark)
        try:
            return construct(loader, node)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            return _Unread(f"'{_show(node.value)}' is not a valid {_tag(node.tag)}", node.start_mark)

    return checked


def _text(loader: _StrictLoader, node: yaml.Node) -> str:
    """A plain `=` or `<<` where a value belongs (YAML 1.1's value and merge tags): the text."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Refused(f"{_tag(node.tag)} on a {_kind(node)}", node.start_mark)
    return str(node.value)


def _date(_loader: _StrictLoader, node: yaml.Node) -> _Unread:
    return _Unread(f"'{_show(str(node.value))}' is read as a date or time, which speedsim does not read "
                   "(put it in quotes if it is text)", node.start_mark)


def _unsupported(_loader: _StrictLoader, node: yaml.Node) -> _Unread:
    return _Unread(f"the tag {_tag(node.tag)} is not supported (speedsim reads mappings, lists, text, "
                   "numbers, true/false and null)", node.start_mark)


_SAFE = _SafeBase.yaml_constructors
# Exactly these tags are read; any other (`!!binary`, `!!set`, `!!omap`, `!!pairs`, `!!python/...`,
# `!foo`, and any a later PyYAML adds to its safe loader) is `_unsupported`.
_StrictLoader.yaml_constructors = {
    None: _unsupported,
    **{_YAML_TAG + name: _SAFE[_YAML_TAG + name] for name in ("null", "str", "seq")},
    **{_YAML_TAG + name: _scalar(_SAFE[_YAML_TAG + name], number=name != "bool")
       for name in ("int", "float", "bool")},
    _YAML_TAG + "map": _mapping,
    _YAML_TAG + "timestamp": _date,
    _YAML_TAG + "value": _text,
    _MERGE_TAG: _text,  # `<<` as a key is a merge (`_flatten`); as a value, the text
}
_StrictLoader.yaml_multi_constructors = {}  # none (PyYAML's safe loader has none either)


def _compose(loader: _StrictLoader) -> yaml.Node | None:
    """The node of the one document in the stream (None if there is none), composed from the parser's
    events without recursion. `_Refused` at the line where the document passes `MAX_NODES` values or
    `MAX_DEPTH` levels (both with its aliases expanded), reuses an anchor, uses an undefined or
    recursive alias, has a key that is a list or mapping, or where a second document starts."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # document start
    anchors: dict[str, yaml.Node] = {}
    done: dict[int, tuple[int, int]] = {}  # id(node) -> its values and levels, aliases expanded
    # the collections being read: [node, values before it, a mapping's key waiting for its value, levels]
    open_: list[list[Any]] = []
    count = 0
    root: yaml.Node | None = None
    while root is None:
        event = loader.get_event()
        node: yaml.Node
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                name = _show(str(event.anchor))
                raise _Refused(f"the alias *{name} has no anchor &{name} before it", event.start_mark)
            node = anchors[event.anchor]
            if id(node) not in done:
                raise _Refused("a recursive alias (a value that contains itself)", event.start_mark)
            count += done[id(node)][0]
        elif isinstance(event, yaml.CollectionEndEvent):
            node, before, _, levels = open_.pop()
            node.end_mark = event.end_mark
            done[id(node)] = (count - before, levels + 1)
        else:
            if event.anchor is not None and event.anchor in anchors:
                raise _Refused(f"the anchor &{_show(event.anchor)} is defined twice (first on line "
                               f"{anchors[event.anchor].start_mark.line + 1})", event.start_mark)
            count += 1
            if isinstance(event, yaml.ScalarEvent):
                tag = event.tag if event.tag not in (None, "!") else \
                    loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                start: Any = event.start_mark  # libyaml's marks, typed apart from PyYAML's
                end: Any = event.end_mark
                node = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
                done[id(node)] = (1, 0)
            else:
                kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
                tag = event.tag if event.tag not in (None, "!") else \
                    loader.resolve(kind, None, event.implicit)
                node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
                open_.append([node, count - 1, None, 0])
            if event.anchor is not None:
                anchors[event.anchor] = node
        if count > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values once its aliases are expanded", event.start_mark)
        levels = len(open_) + (0 if isinstance(event, yaml.CollectionStartEvent) else done[id(node)][1])
        if levels > MAX_DEPTH:
            expanded = " once its aliases are expanded" if isinstance(event, yaml.AliasEvent) else ""
            raise _Refused(f"lists and mappings nested more than {MAX_DEPTH} levels deep{expanded}",
                           event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            continue  # placed in its parent when it ends
        if not open_:
            root = node
            break
        parent = open_[-1]
        parent[3] = max(parent[3], done[id(node)][1])
        if isinstance(parent[0], yaml.SequenceNode):
            parent[0].value.append(node)
        elif parent[2] is None:
            if not isinstance(node, yaml.ScalarNode):  # at the alias or the collection, not its anchor
                mark = event.start_mark if isinstance(event, yaml.AliasEvent) else node.start_mark
                raise _Refused(f"a key must be text, not a {_kind(node)}", mark)
            parent[2] = node
        else:
            parent[0].value.append((parent[2], node))
            parent[2] = None
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        raise _Refused("a second document (a file holds one mapping)", loader.peek_event().start_mark)
    return root


def _tree(data: Any, path: str = "") -> Any:
    """`data` as a tree (a value an alias shares becomes a copy at each use, so that changing one
    does not change the others); the first value speedsim does not read (`_Unread`) is `_Refused`
    with its field (`path`, dotted) and line."""
    if isinstance(data, dict):
        return {key: _tree(value, f"{path}.{key}" if path else key) for key, value in data.items()}
    if isinstance(data, list):
        return [_tree(value, f"{path}.{i}" if path else str(i)) for i, value in enumerate(data)]
    if isinstance(data, _Unread):
        raise _Refused(f"field '{path or '(top level)'}': {data.problem}", data.mark)
    if data is None or isinstance(data, str | int | float):
        return data
    raise TypeError(f"the YAML reader made a {type(data).__name__}")  # not reached: a bug if it is


def _load(text: str) -> Any:
    """The document in `text` as a JSON-like tree; a `yaml.YAMLError` (`_Refused`: valid YAML that
    speedsim does not read) for anything the module docstring's rules refuse."""
    loader = _StrictLoader(text)
    try:
        node = _compose(loader)
        return None if node is None else _tree(loader.construct_document(node))
    finally:
        loader.dispose()


def _line(text: str, err: yaml.YAMLError) -> int | None:
    """The 1-based line of a YAML error, if it has one."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        return mark.line + 1 if mark is not None else None
    if isinstance(err, yaml.reader.ReaderError):  # libyaml counts bytes of UTF-8, PyYAML characters
        before = text.encode()[:err.position].decode(errors="ignore") if _SafeBase is not yaml.SafeLoader \
            else text[:err.position]
        return before.count("\n") + 1
    return None


def _problem(err: yaml.YAMLError) -> str:
    """What a YAML error says, on one line and without its position."""
    if isinstance(err, yaml.MarkedYAMLError):
        words = err.problem or err.context or "not valid"
    elif isinstance(err, yaml.reader.ReaderError):
        char = f"#x{ord(err.character):04x}" if isinstance(err.character, str) else f"#x{err.character:02x}"
        words = f"unacceptable character {char}: {err.reason}"
    else:
        words = str(err)
    return _show(" ".join(words.split()), 200)


def _non_finite(data: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN or infinite number in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return path or "(top level)"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list | tuple) \
        else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _too_big(path: Path, what: str, label: str) -> None:
    """A `UserError` if `path` is a regular file of more than `MAX_BYTES` (refused before it is read)."""
    st = probe(path, label)
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > MAX_BYTES:
        raise UserError(f"cannot read {what}: {st.st_size:,} bytes, more than the {MAX_BYTES:,} a YAML input "
                        "may have", where=label)


def read_mapping(path: Path | str, what: str) -> dict:
    """The YAML mapping in `path`, as a JSON-like tree; a `UserError` naming the file, and the line or
    field, for anything the module docstring's rules refuse (unreadable, too big, not UTF-8, not one
    mapping, a key that is not text or is given twice, a value that is not JSON-like or not finite)."""
    label = shown(path)
    _too_big(Path(path), what, label)
    text = read_text_input(path, what)
    if len(text) > MAX_BYTES:  # it grew since its size was checked
        raise UserError(f"cannot read {what}: more than the {MAX_BYTES:,} bytes a YAML input may have",
                        where=label)
    try:
        data = _load(text)
    except yaml.YAMLError as err:
        line = _line(text, err)
        prefix = "" if isinstance(err, _Refused) else "not valid YAML: "
        raise UserError(prefix + _problem(err), where=f"{label}:{line}" if line else label) from None
    except RecursionError:  # not expected within MAX_DEPTH; kept so that it can never be a traceback
        raise UserError(f"lists and mappings nested too deeply (at most {MAX_DEPTH} levels)",
                        where=label) from None
    if not isinstance(data, dict):
        raise UserError(f"a {what} must be a YAML mapping", where=label)
    bad = _non_finite(data)
    if bad:
        raise UserError(f"field '{bad}': numbers must be finite (no .inf or .nan)", where=label)
    return data


def validate_as(model: type[M], data: dict, where: str) -> M:
    """`model.model_validate(data)`, with a validation error turned into a `UserError` at `where`.

    A number that is not finite after validation (a string such as `"inf"` or `"1e999"` that
    pydantic converted to a float) is a `UserError` naming its field.
    """
    try:
        result = model.model_validate(data)
    except ValidationError as err:
        raise user_error(err, where) from None
    bad = _non_finite(result.model_dump())
    if bad:
        raise UserError(f"field '{bad}': numbers must be finite (no inf or nan)", where=where)
    return result


def yaml_output(name: str, keys: frozenset[str]) -> OutputKind:
    """The `OutputKind` of a YAML mapping that speedsim writes with (at least) these top-level keys.

    An existing file is recognised by its first MiB, read with `read_mapping`'s rules: whatever they
    refuse (or a head cut mid-document that is not valid YAML) is not ours."""

    def recognise(path: Path) -> bool:
        try:
            data = _load(head_text(path, 1 << 20))
        except (yaml.YAMLError, RecursionError):
            return False
        return isinstance(data, dict) and keys <= data.keys()

    return OutputKind(name, recognise)
