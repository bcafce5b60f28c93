"""No process outlives its parent (`speedsim.procs`): the workers of `data build`'s and a sweep's pools die
when the command is SIGKILLed, as does a pool worker whose parent is. Linux only: workers are found through
/proc, and PR_SET_PDEATHSIG is what ends them."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import _tiny_module

from speedsim import procs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

START_S = 60  # how long a command may take to start its pool's workers (a loaded 2-core machine)
DIE_S = 5  # how long its workers may live on once it is killed


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        new = _children(todo.pop()) - found
        found |= new
        todo += new
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie lasts until PID 1 reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][0] != "Z"
    except (OSError, IndexError):
        return False


def _initialised_worker(pid: int) -> bool:
    """A spawned pool worker that has run `procs.init_worker` (its last step makes SIGINT ignored)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return b"spawn_main" in cmdline and bool(ignored & (1 << (signal.SIGINT - 1)))


def _kill_and_check(proc: subprocess.Popen, workers: int = 2) -> None:
    """Once `proc` has `workers` initialised pool workers, SIGKILL it: every process below it must die."""
    try:
        deadline = time.monotonic() + START_S
        below: set[int] = set()
        while proc.poll() is None and time.monotonic() < deadline:
            below = _descendants(proc.pid)
            if sum(_initialised_worker(pid) for pid in below) >= workers:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the command ended before its pool started"
        assert sum(_initialised_worker(pid) for pid in below) >= workers, f"no pool after {START_S} s"
        proc.kill()
        proc.wait(timeout=DIE_S)
        deadline = time.monotonic() + DIE_S
        while any(_alive(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [pid for pid in below if _alive(pid)], "a worker outlived the killed command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DIE_S)


def _speedsim(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "speedsim.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_data_build_workers_die_with_it(tmp_path):
    """SIGKILL of `data build` while its extraction pool runs (>= POOL_MIN_FILES files) leaves no worker."""
    from speedsim.data.build import POOL_MIN_FILES

    pkg = tmp_path / "src" / "manypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A generated package."""\n')
    for i in range(POOL_MIN_FILES + 10):
        (pkg / f"mod{i}.py").write_text(_tiny_module(i))
    _kill_and_check(_speedsim("data", "build", "--source", str(pkg), env={"SPEEDSIM_CACHE": str(tmp_path / "cache")}))


@pytest.mark.slow
def test_sweep_workers_die_with_it(tmp_path):
    """SIGKILL of `sweep --workers 2` mid-run leaves no worker (before, they lived on under PID 1)."""
    spec = {"name": "slow", "fixed": {"model": "t5base", "out_len": 400, "src_len": 64},
            "axes": {"profile": ["h200"], "sharing": ["4x3", "2x6", "3x4", "6x2"], "mispredict": [0.1, 0.2, 0.3]}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    _kill_and_check(_speedsim("sweep", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "o"), "--workers", "2"))


POOL_PARENT = """
import os, time
from speedsim import procs

with procs.pool(1) as pool:
    print(pool.apply(os.getpid), flush=True)  # the worker's pid, once it has run init_worker
    time.sleep(60)
"""


def test_a_pool_worker_dies_when_its_parent_is_killed():
    """`init_worker`: a worker whose parent is SIGKILLed (no cleanup runs in the parent) dies with it."""
    parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([parent.stdout], [], [], START_S)
        assert ready, f"no worker after {START_S} s"
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.kill()
        parent.wait(timeout=DIE_S)
        deadline = time.monotonic() + DIE_S
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(worker)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=DIE_S)
        parent.stdout.close()


def test_a_worker_whose_parent_is_already_gone_exits():
    """`init_worker` closes the race of a parent that died before the kernel was told to kill the worker:
    a worker started by another parent than the one it was given exits at once."""
    proc = procs.CONTEXT.Process(target=procs.init_worker, args=(os.getppid(),))  # not this process
    proc.start()
    try:
        proc.join(timeout=START_S)
        assert proc.exitcode == 1
    finally:
        proc.kill()
        proc.join(timeout=DIE_S)
