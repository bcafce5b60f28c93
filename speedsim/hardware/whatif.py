"""What-ifs on a profile: one parameter of a dumped profile set by its dotted path."""

from __future__ import annotations

from typing import Any


def set_parameter(data: dict, path: str, value: float) -> None:
    """Set the parameter at dotted `path` (list indices as numbers) of a dumped profile to `value`;
    an integral float for an int field becomes an int (a range's ends are floats)."""
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    index: Any = int(last) if isinstance(node, list) else last
    old = node[index]
    node[index] = int(value) if isinstance(old, int) and not isinstance(old, bool) and float(value).is_integer() \
        else value
