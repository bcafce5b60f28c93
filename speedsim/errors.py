"""User-facing errors: the CLI turns these into one line on stderr and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a field, a row). The message names which and why."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
