"""SIGTERM as an unwinding exception, so that an interrupted command leaves no partial output.

`timeout`, `kill` or a batch scheduler stop a command with SIGTERM, whose default action ends the
process at once: `atomic_write`'s temporary file would stay behind. `install_sigterm_handler`
makes SIGTERM raise `Terminated` in the process that installed it, which unwinds like Ctrl-C's
KeyboardInterrupt (both are `BaseException`s), so every `atomic_write` removes its temporary file.
"""

from __future__ import annotations

import os
import signal


class Terminated(BaseException):
    """SIGTERM arrived (`timeout`, `kill`, a batch scheduler): unwinds like Ctrl-C, so that `atomic_write`
    removes its temporary file and a partial output never replaces a finished one."""


_MAIN_PID = 0  # the process that installed the handler: forked workers differ


def _on_sigterm(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:  # a worker forked with this handler: dies as it would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated


def install_sigterm_handler() -> None:
    """From now on SIGTERM raises `Terminated` in this process (and ends a forked child as before)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)
