"""Reading YAML inputs (profiles, model specs, sweep specs) with one-line user errors."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from speedsim.errors import UserError, user_error

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: Path | str, what: str) -> dict:
    """The YAML mapping in `path`; `UserError` naming the file if it is unreadable or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {what}: {err.strerror}", where=str(path)) from None
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {str(err).splitlines()[0]}", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"a {what} must be a YAML mapping", where=str(path))
    return data


def validate_as(model: type[M], data: dict, where: str) -> M:
    """`model.model_validate(data)`, with a validation error turned into a `UserError` at `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise user_error(err, where) from None
