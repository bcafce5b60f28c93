"""Writing output files: atomically, to regular files only, never touching what is not ours.

Every file speedsim writes goes through `atomic_write`: the bytes go to a temporary file in
the destination's directory, are flushed and fsynced, and the temporary file is renamed over
the destination. An interrupt leaves either the old file or the new one, never half of one.
A destination that exists and is not a regular file (a directory, a device node such as
/dev/null, a FIFO) is refused before anything is written; so is a symbolic link, whatever it points
to (renaming over it would replace the link, such as /dev/stdout, and writing through it would
change a file that is not ours), and a path that ends with a slash (a directory's name). So is an existing, non-empty file that
is not what the command writes there (`OutputKind`): `--out` naming the command's own input, a
checkpoint, or a user's notes replaces nothing; an earlier output of the same kind is replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from speedsim.errors import UserError
from speedsim.userpath import os_errors, probe, shown, user_path


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at an output path, and how to tell one of those files from anything else.

    `recognise(path)` reads the head of an existing file and says whether it is of this kind (an
    error reading or parsing it counts as no); `check_output` replaces only such files."""

    name: str                          # "an exit-trace file": how a refusal names it
    recognise: Callable[[Path], bool]

    def holds(self, path: Path) -> bool:
        """Whether the file at `path` is of this kind (a file it cannot read or parse is not)."""
        try:
            return bool(self.recognise(path))
        except (OSError, ValueError, UnicodeError, zlib.error):
            return False


def head_text(path: Path, nbytes: int = 1 << 16) -> str:
    """The first `nbytes` of a file (of its decompressed data if it is gzip) as text: its first lines,
    to recognise its kind. Raises OSError, zlib.error or UnicodeDecodeError on other data."""
    with path.open("rb") as fh:
        data = fh.read(nbytes)
    if data[:2] == b"\x1f\x8b":  # a head of a gzip stream decompresses as far as it goes
        data = zlib.decompressobj(wbits=31).decompress(data, nbytes)
    return data.decode("utf-8", errors="strict" if len(data) < nbytes else "ignore")


def check_output(path: Path | str, where: str | None = None, kind: OutputKind | None = None) -> Path:
    """`path` as a Path if speedsim may write it; else a `UserError` naming it (exit 2).

    With `kind`, an existing non-empty file is replaced only if it is of that kind (an earlier
    output); anything else (the command's input, a checkpoint, a user's file) is refused.
    Call it before long work, so a bad output path fails at once rather than at the end.
    """
    label = where or shown(path)
    if isinstance(path, str) and path.endswith(os.sep):
        raise UserError(f"{shown(path)} ends with '{os.sep}': it names a directory, and an output is a file",
                        where=label)
    path = user_path(path, label)
    if probe(path, label, follow=False) is not None and path.is_symlink():
        raise UserError(f"{shown(path)} is a symbolic link; speedsim writes its outputs as regular files and "
                        "never replaces a link (remove it or choose another path)", where=label)
    st = probe(path, label)
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UserError(f"{path} is {what}; outputs are written to regular files only", where=label)
    if st is not None and st.st_size and kind is not None and not kind.holds(path):
        raise UserError(f"{path} exists and is not {kind.name}; speedsim replaces only its own outputs "
                        "(remove the file or choose another path)", where=label)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"directory {parent} does not exist", where=label)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"directory {parent} is not writable", where=label)
    return path


def check_output_dir(path: Path | str, where: str | None = None) -> Path:
    """`path` as a Path if speedsim may write files in it (an existing, writable directory, or
    one it can create); else a `UserError` naming it (exit 2). Call it before long work."""
    label = where or shown(path)
    path = user_path(path, label)
    if probe(path, label, follow=False) is not None:
        if not path.is_dir():
            raise UserError(f"{path} exists and is not a directory", where=label)
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"directory {path} is not writable", where=label)
        return path
    parent = path.absolute().parent
    while probe(parent, label) is None and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create {path}: {parent} is not a directory", where=label)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {path}: directory {parent} is not writable", where=label)
    return path


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", where: str | None = None, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` (text with `mode="w"`, bytes with `"wb"`); on a
    clean exit it is fsynced and renamed over `path`, on an error it is removed."""
    path = check_output(path, where)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as err:
        raise UserError(f"cannot write: {err.strerror}", where=where or str(path)) from None
    try:
        with os_errors(where or shown(path), "cannot write"):  # a full disk, a quota: one line
            with os.fdopen(fd, mode, **open_kwargs) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path | str, text: str, where: str | None = None) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_write(path, "w", where) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: Path | str, data: bytes, where: str | None = None) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb", where) as fh:
        fh.write(data)
    return Path(path)


def read_text_input(path: Path | str, what: str, encoding: str = "utf-8", where: str | None = None) -> str:
    """The text of an input file; a `UserError` naming it (and `where`, the flag, field or row the path
    came from, when given) if the path is malformed, missing, not a regular file (a directory; a FIFO, whose read
    could block), unreadable, not `encoding` text, or binary."""
    if isinstance(path, str) and path.endswith(os.sep):
        raise UserError(f"{shown(path)} ends with '{os.sep}': it names a directory, not a {what}",
                        where=where or shown(path))
    path = user_path(path, where or shown(path))
    label = f"{where} {shown(path)}" if where else shown(path)  # the flag, field or row, and the file
    try:
        st = probe(path, label)
        if st is None:
            raise UserError("no such file", where=label)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"cannot read {what}: it is a directory", where=label)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"cannot read {what}: not a regular file", where=label)
        text = path.read_bytes().decode(encoding)
    except OSError as err:
        raise UserError(f"cannot read {what}: {err.strerror}", where=label) from None
    except UnicodeDecodeError:
        raise UserError(f"cannot read {what}: not UTF-8 text", where=label) from None
    if "\x00" in text:
        raise UserError(f"cannot read {what}: binary data (NUL bytes)", where=label)
    return text
