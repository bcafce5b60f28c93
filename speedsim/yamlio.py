"""Reading YAML inputs (profiles, model specs, sweep specs, training configs) with one-line user errors.

Every YAML file speedsim reads comes through `read_mapping`, which rejects at the boundary
what would otherwise turn into wrong numbers further in: a path that is not a regular file (a
directory; a FIFO or device, whose read could block or never end), text that is not UTF-8, a
key given twice in one mapping (YAML would silently keep the last), and numbers that are not
finite (`.inf`, `.nan`). `validate_as` checks the validated model again, so a quoted `"inf"`
or `"1e999"` that pydantic turns into a float is refused too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from speedsim.errors import UserError, user_error
from speedsim.fileio import OutputKind, head_text, read_text_input

M = TypeVar("M", bound=BaseModel)


# libyaml's parser when PyYAML was built with it (6x faster on a profile), else the pure-Python one;
# both with PyYAML's safe constructors and resolver, so they read the same documents the same way.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):  # type: ignore[valid-type, misc]
    """A safe loader that refuses duplicate keys in a mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


MAX_NODES = 100_000  # YAML nodes of a document with every alias expanded


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Nodes of `node` with aliases expanded (a shared node counts once per use), memoised; a
    node that contains itself (`a: &x [*x]`) is a `YAMLError`."""
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise yaml.YAMLError("a recursive alias (a value that contains itself)")
        return size
    memo[id(node)] = None  # in progress
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    size = 1 + sum(_expanded_size(child, memo) for child in children)
    memo[id(node)] = size
    return size


def _load(text: str) -> Any:
    """The document in `text`; a `UserError` (no file named) if aliases expand it past `MAX_NODES`
    (a "billion laughs" document would otherwise take hours to construct and check)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES:,} values once its aliases are expanded")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _non_finite(data: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN or infinite number in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return path or "(top level)"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list | tuple) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def read_mapping(path: Path | str, what: str) -> dict:
    """The YAML mapping in `path`; `UserError` naming the file if it is unreadable, not UTF-8 text,
    not a mapping, has a duplicate key or a number that is not finite."""
    path = Path(path)
    text = read_text_input(path, what)
    try:
        data = _load(text)
    except yaml.MarkedYAMLError as err:
        line = f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""
        raise UserError(f"not valid YAML: {err.problem}{line}", where=str(path)) from None
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {' '.join(str(err).split())}", where=str(path)) from None
    except RecursionError:
        raise UserError("not valid YAML: nested too deeply", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"a {what} must be a YAML mapping", where=str(path))
    bad = _non_finite(data)
    if bad:
        raise UserError(f"field '{bad}': numbers must be finite (no .inf or .nan)", where=str(path))
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
    """The `OutputKind` of a YAML mapping that speedsim writes with (at least) these top-level keys."""

    def recognise(path: Path) -> bool:
        try:
            data = yaml.load(head_text(path, 1 << 20), Loader=_SafeBase)
        except yaml.YAMLError:
            return False
        return isinstance(data, dict) and keys <= data.keys()

    return OutputKind(name, recognise)
