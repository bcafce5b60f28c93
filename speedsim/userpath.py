"""Every path a user gives, through one resolver: a malformed path or an operating-system error is a
one-line `UserError` naming where the path came from, never a traceback.

A path enters speedsim from a flag (`--profile FILE`, `--out DIR`), an environment variable
(`$SPEEDSIM_PROFILES`, `$SPEEDSIM_CACHE`), a field of a spec or config file (a sweep spec's
`trace:`, a training config's `data.cache_dir`) or a row's reference to a file (a decode row's
`trace=`). Whatever the source, the rule is the same:

1. `user_path(value, where)` checks the path's shape before the file system sees it: not empty,
   no NUL byte, text the file system can encode, no component longer than the file system allows
   (`NAME_MAX`, 255 bytes on Linux) and no more than `PATH_MAX` bytes in all. `where` names the
   source ("--profile", "$SPEEDSIM_CACHE", "spec.yaml: field 'trace'", "decode.csv:4").
2. `input_file(value, where)` is that check plus "no such file" for an input that must exist.
   Questions about the file (`probe`, `exists`, `is_dir`, `is_file`, `entries`) and reads
   (`os_errors`) turn any `OSError` (a symbolic-link loop, a permission denied, a component that
   is a file) into a `UserError` at `where`; a file that is simply absent is an answer, not an error.

Outputs use the same checks through `speedsim.fileio`.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from speedsim.errors import UserError

NAME_MAX = 255    # bytes in one path component (Linux, macOS and Windows file systems: 255)
PATH_MAX = 4096   # bytes in a whole path (Linux's PATH_MAX)
_SHOWN = 72       # characters of a path a message shows (a path of 4096 characters is not one line)


def one_line(text: str) -> str:
    """`text` with every character that is not printable (a newline or escape in a file name or value,
    a lone surrogate) written as its escape, so that a message stays one line of plain text."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def shown(path: object) -> str:
    """`path` as a message shows it: whole if short, else its start and end around an ellipsis."""
    text = one_line(str(path))
    return text if len(text) <= _SHOWN else f"{text[:40]}...{text[-(_SHOWN - 43):]}"


def path_problem(value: str | os.PathLike[str]) -> str | None:
    """Why `value` cannot name a file (a short phrase), or None if its shape is fine."""
    text = os.fspath(value)
    if not isinstance(text, str):
        return "not a text path"
    if not text:
        return "empty path"
    if "\x00" in text:
        return "the path contains a NUL byte"
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        return "the path has characters the file system cannot encode"
    if len(raw) > PATH_MAX:
        return f"the path is {len(raw):,} bytes long; the file system allows {PATH_MAX:,}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (f"a component of the path is {len(longest):,} bytes long; the file system allows {NAME_MAX} "
                f"({shown(os.fsdecode(longest))})")
    return None


def user_path(value: str | os.PathLike[str], where: str) -> Path:
    """`value` as a Path, if it can name a file; else a `UserError` at `where` saying why."""
    problem = path_problem(value)
    if problem:
        raise UserError(problem, where=where)
    return Path(value)


def input_file(value: str | os.PathLike[str], where: str | None = None) -> Path:
    """`value` as the Path of an input file that exists; else a `UserError` at `where` (the flag, variable
    or field it came from; None: the path itself): a malformed path (`speedsim.userpath.user_path`), an
    operating-system error on it (a link loop, a directory it may not search), or nothing there ("no such
    file", also for a path through a regular file). What the file holds is its reader's to check."""
    label = where or shown(value)
    if isinstance(value, str) and value.endswith(os.sep):
        raise UserError(f"{shown(value)} ends with '{os.sep}': it names a directory, not a file", where=label)
    path = user_path(value, label)
    if probe(path, label) is None:
        raise UserError("no such file" if where is None else f"no such file: {shown(path)}", where=label)
    return path


def _os_message(err: OSError, path: Path | None = None) -> str:
    what = {errno.ELOOP: "too many levels of symbolic links (a link loop)",
            errno.ENAMETOOLONG: "a path component or the path is longer than the file system allows"}
    reason = what.get(err.errno or 0, err.strerror or type(err).__name__)
    name = err.filename if err.filename is not None else path
    return f"{shown(name)}: {reason}" if name is not None else reason


@contextlib.contextmanager
def os_errors(where: str, action: str = "cannot read") -> Iterator[None]:
    """Turn an `OSError` inside the block into a `UserError` at `where`: "`action` NAME: reason"."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{action} {_os_message(err)}", where=where) from None


def probe(value: str | os.PathLike[str], where: str, follow: bool = True) -> os.stat_result | None:
    """The file's status (of the link itself with `follow=False`), or None if nothing is there (a
    dangling link, with `follow`, is nothing); any other `OSError` is a `UserError` at `where`."""
    path = user_path(value, where)
    try:
        return path.stat() if follow else path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise UserError(f"cannot use {_os_message(err, path)}", where=where) from None


def exists(value: str | os.PathLike[str], where: str) -> bool:
    """Whether something is at `value` (following links)."""
    return probe(value, where) is not None


def is_dir(value: str | os.PathLike[str], where: str) -> bool:
    st = probe(value, where)
    return st is not None and stat.S_ISDIR(st.st_mode)


def is_file(value: str | os.PathLike[str], where: str) -> bool:
    """Whether `value` is a regular file (following links)."""
    st = probe(value, where)
    return st is not None and stat.S_ISREG(st.st_mode)


def entries(directory: str | os.PathLike[str], pattern: str, where: str) -> list[Path]:
    """The paths in `directory` matching the glob `pattern`, sorted; an unreadable directory is a
    `UserError` at `where` (a missing one has none)."""
    path = user_path(directory, where)
    if not is_dir(path, where):
        return []
    with os_errors(where, "cannot list"):
        names = os.listdir(path)  # Path.glob would take an unreadable directory for an empty one
    hidden = pattern.startswith(".")  # as glob: a name starting with a dot only for such a pattern
    return sorted(path / name for name in names
                  if fnmatch.fnmatchcase(name, pattern) and (hidden or not name.startswith(".")))
