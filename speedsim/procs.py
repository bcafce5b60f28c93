"""Worker processes that never outlive the process that started them.

Every process pool speedsim starts comes from here (`pool` for `multiprocessing`'s `Pool`, `ProcessPool`
for `concurrent.futures`), so two things are decided once:

- The start method is ``spawn``: each worker is a fresh interpreter. A forked worker inherits the
  parent mid-flight: a lock another thread held at the fork (tqdm's monitor thread, an I/O buffer) stays
  held in the child for ever, and so does the parent's Python-level SIGTERM handler (`speedsim.signals`).
  Such a handler runs only between bytecodes, so a worker blocked in C never runs it: `Pool.terminate()`
  takes the task queue's lock, SIGTERMs the workers and joins them; a forked worker that was about to
  block on that lock caught the SIGTERM, blocked, and the parent waited for it for ever (`data build`
  hung under load; issue 20). A spawned worker has the default SIGTERM action: the kernel ends it.
- `init_worker` runs first in every worker: it makes the worker die with its parent however the parent
  ends (an exception, Ctrl-C, SIGTERM, SIGKILL), and leaves Ctrl-C to the parent.

Start a pool's workers from a thread that outlives the pool (the main thread, as speedsim does): on Linux
the kernel signals a worker when the *thread* that started it exits. A spawned worker imports the parent's
main module, so a script that starts a pool needs the `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

CONTEXT = multiprocessing.get_context("spawn")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5  # how often a worker without PR_SET_PDEATHSIG checks that its parent lives
JOIN_TIMEOUT_S = 5.0  # how long `ProcessPool.end_now` waits for a killed worker to be reaped


def init_worker(parent: int) -> None:
    """Make this worker (started by process `parent`) die with its parent, and ignore Ctrl-C.

    A terminal's Ctrl-C signals the whole process group; the parent answers it (it records what finished
    and ends the pool), so a worker ignores SIGINT rather than print a traceback or report the interrupt
    as its task's result. SIGTERM keeps its default action, so `Pool.terminate()` ends a worker whatever
    it is blocked in.
    """
    if not _kill_on_parent_death():
        # no PR_SET_PDEATHSIG (not Linux): a daemon thread polls the parent instead, as an orphan's parent
        # becomes another process on POSIX (within PARENT_POLL_S, unless C code holds the GIL all that time)
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above took effect: nothing will signal us
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # last: tests read it (/proc SigIgn) as "initialised"


def _kill_on_parent_death() -> bool:
    """Ask Linux to SIGKILL this process when its parent thread exits; False where that is not available.
    The kernel does it at once, even while the worker runs C code that holds the GIL (a watcher thread
    would wait for it); SIGKILL, not SIGTERM, as it cannot be caught, ignored or deferred."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def pool(workers: int) -> multiprocessing.pool.Pool:
    """A `multiprocessing.Pool` of `workers` spawned processes that die with this one. Use it as a context
    manager: leaving the block terminates the workers (SIGTERM), which then die at once."""
    return CONTEXT.Pool(workers, initializer=init_worker, initargs=(os.getpid(),))


class ProcessPool(ProcessPoolExecutor):
    """A `ProcessPoolExecutor` of `max_workers` spawned processes that die with this one; `end_now()`
    ends them without waiting for the tasks they are running."""

    def __init__(self, max_workers: int) -> None:
        # the workers are this process's children started after this line (they start with the first
        # submits); the ones before are someone else's
        self._children_before = set(multiprocessing.active_children())
        super().__init__(max_workers, mp_context=CONTEXT, initializer=init_worker, initargs=(os.getpid(),))

    def end_now(self) -> None:
        """Cancel the queued tasks and kill the workers now: leaving a `with ProcessPoolExecutor` block, or
        `shutdown()`, would wait for every running task, and so would the interpreter at exit."""
        workers = set(multiprocessing.active_children()) - self._children_before
        self.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            proc.kill()
        for proc in workers:
            proc.join(JOIN_TIMEOUT_S)
