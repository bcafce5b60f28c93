"""Reading YAML inputs (profiles, model specs, sweep specs, training configs) with one-line user errors.

Every YAML file speedsim reads comes through `read_mapping`, which rejects at the boundary
what would otherwise turn into wrong numbers further in: text that is not UTF-8, a key given
twice in one mapping (YAML would silently keep the last), and numbers that are not finite
(`.inf`, `.nan`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from speedsim.errors import UserError, user_error

M = TypeVar("M", bound=BaseModel)


class _StrictLoader(yaml.SafeLoader):
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


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)  # type: ignore[arg-type]


def _non_finite(data: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN or infinite number in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return path or "(top level)"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def read_mapping(path: Path | str, what: str) -> dict:
    """The YAML mapping in `path`; `UserError` naming the file if it is unreadable, not UTF-8 text,
    not a mapping, has a duplicate key or a number that is not finite."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise UserError(f"cannot read {what}: it is a directory", where=str(path)) from None
    except OSError as err:
        raise UserError(f"cannot read {what}: {err.strerror}", where=str(path)) from None
    except UnicodeDecodeError:
        raise UserError(f"cannot read {what}: not UTF-8 text", where=str(path)) from None
    if "\x00" in text:
        raise UserError(f"cannot read {what}: binary data (NUL bytes)", where=str(path))
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
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
    """`model.model_validate(data)`, with a validation error turned into a `UserError` at `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise user_error(err, where) from None
