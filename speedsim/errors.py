"""User-facing errors: the CLI turns these into one line on stderr and exit status 2."""

from __future__ import annotations

from pydantic import ValidationError


class UserError(Exception):
    """Bad input from the user (a file, a field, a row). The message names which and why."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def describe(err: ValidationError) -> str:
    """The first problem of a pydantic error as `field 'a.b': message`."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = "missing field" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"field '{loc}': {msg}{more}"


def user_error(err: ValidationError, where: str, *, with_field: bool = True) -> UserError:
    """The one-line `UserError` for a pydantic error at `where` (a file, a flag, a row).

    `with_field=False` drops the `field '...'` prefix, for inputs with a single anonymous value
    (a command-line spec whose keys are not the model's field names).
    """
    if with_field:
        return UserError(describe(err), where=where)
    return UserError(err.errors()[0]["msg"].removeprefix("Value error, "), where=where)
