"""One end-to-end smoke test per command: `speedsim COMMAND` in a subprocess, as a user runs it.

Every other CLI test calls the command in-process (the `cli` fixture); these check that each command
starts, runs on the smallest input that exercises it, exits 0 and prints a sane line. The
subprocesses start together with the test session (`conftest.py`; most of their time is Python and
torch starting up, on the core the in-process tests leave idle), these tests run last, and each
waits for its own; `train` starts once `data build` has cached the corpus it trains on, and `trace`
once `train` has written its checkpoint. (`simulate`'s is `tests/test_simulate.py::test_cli_simulate_json_and_timeline`.)
`report`'s whole study takes far longer than a smoke test: its test is `--help` and an argument
error (exit 2, one line), both through the real entry point.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import _tiny_module

TIMEOUT_S = 180
KILL_WAIT_S = 10  # how long a killed case's pipes may take to close
MEASURED = ("section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
            "lmhead,t5base,graph,lmhead,1,0,0,0,14.5,14.4,14.7,\n"
            "lmhead,t5base,graph,lmhead,4,0,0,0,15.3,15.2,15.5,\n")
TINY_SPEC = {"name": "tiny", "d_model": 32, "n_heads": 2, "d_ff": 64, "ffn": "relu", "cross_attention_len": 12,
             "vocab": 300, "encoder_layers": 1}
SWEEP = {"name": "smoke", "description": "one tiny run", "fixed": {"model": "t5base", "mode": "graph", "seed": 0},
         "blocks": [{"label": "smoke", "axes": {"profile": ["h200"], "sharing": ["2x2"], "mispredict": [0.1],
                                                "out_len": [8]}}]}


def _train_config(sources: Path, cache: Path) -> dict:
    """A tiny encoder-decoder, one step of each stage, on the corpus and tokenizer `data build` cached."""
    return {
        "name": "tiny",
        "data": {"task": "summarize", "vocab_size": 320, "max_src_tokens": 48, "max_tgt_tokens": 40,
                 "sources": [str(sources)], "cache_dir": str(cache)},
        "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "unique_layers": 2, "repeats": 2, "encoder_layers": 1,
                  "max_len": 64, "dropout": 0.1},
        "pretrain": {"steps": 1, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 1, "eval_every": 1,
                     "prefix_tokens": 16, "target_tokens": 16},
        "finetune": {"steps": 1, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 1, "eval_every": 1},
        "eval": {"val_examples": 2, "rouge_examples": 1, "max_new_tokens": 4},
    }


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str          # a regular expression one line of stdout (exit 0) or stderr (exit 2) matches
    code: int = 0
    after: str = ""      # the case whose process must finish first


def _cases(d: Path) -> dict[str, Case]:
    pkg = d / "src" / "tinypkg"
    return {
        "profiles": Case(("profiles",), r"^cpu-host\s+cpu\s+1\s"),
        "validate": Case(("validate", "--measured", str(d / "m.csv"), "--profile", "h200"),
                         r"^profile h200, mode graph: 2 rows simulated, 0 skipped$"),
        "calibrate": Case(("calibrate", "--measured", str(d / "m.csv"), "--profile", "h200", "--out",
                           str(d / "fit.yaml")), r"^  graph +MAPE \d+\.\d% -> \d+\.\d%"),
        "data build": Case(("data", "build", "--source", str(pkg), "--vocab-size", "320"),
                           r"^corpus .*: 31 modules, .* function-docstring pairs"),
        "train": Case(("train", "--config", str(d / "train.yaml"), "--out", str(d / "run")),
                      rf"^checkpoint: {re.escape(str(d / 'run'))}$", after="data build"),
        "trace": Case(("trace", "--checkpoint", str(d / "run"), "--out", str(d / "t.jsonl.gz"), "--limit", "1",
                       "--max-new-tokens", "2"), r"^wrote 1 traces \(\d+ tokens\) to ", after="train"),
        "serve": Case(("serve", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic",
                       "perfect,len=8", "--arrivals", "poisson:100", "--requests", "2"),
                      r"^t5base 4x3 speed on h200 \(graph mode\): 2 requests, 16 output tokens in "),
        "measure": Case(("measure", "--device", "cpu", "--parts", "batch", "--sharings", "2x2", "--model", "tiny",
                         "--model-spec", str(d / "tiny.yaml"), "--batch-sizes", "2", "--batch-ctx", "8", "--quick",
                         "--out", str(d / "batch.csv")), r"^wrote .*batch\.csv \(2 rows"),
        "sweep": Case(("sweep", str(d / "sweep.yaml"), "--out", str(d / "sweep"), "--workers", "1"),
                      r"^smoke: 1 runs, 0 already done, 1 ran, 0 failed"),
        "sensitivity": Case(("sensitivity", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic",
                             "perfect,len=8", "--baseline", "none", "--params", "kernel.latency_us"),
                            r"^t5base 4x3 on h200 \(graph mode\): elasticity "),
        "design": Case(("design", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic",
                        "perfect,len=8", "--method", "speed", "--vary", "kernel.latency_us", "--target-us-per-token",
                        "100000"), r"^t5base 4x3 on h200 \(graph mode\), speed: target 100,000 µs per token"),
        "report --help": Case(("report", "--help"), r"^Usage: speedsim report \[OPTIONS\]$"),
        "report bad --out": Case(("report", "--out", str(d / "m.csv")), r"^speedsim: error: --out: .*m\.csv", code=2),
    }


class Smoke:
    """The module's subprocesses: started together, each awaited by its own test; a case that waits
    for another starts as soon as that one exits 0 (one thread watches every waiting case). Each case runs
    in its own process group, killed whole (its workers too) when the case overruns; no wait is unbounded."""

    def __init__(self, d: Path, names: set[str]) -> None:
        pkg = d / "src" / "tinypkg"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text('"""A generated package."""\n')
        for i in range(30):
            (pkg / f"mod{i}.py").write_text(_tiny_module(i))
        (d / "m.csv").write_text(MEASURED)
        (d / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
        (d / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
        (d / "train.yaml").write_text(yaml.safe_dump(_train_config(pkg, d / "cache")))
        self.cases = _cases(d)
        # nothing written under ~/.cache; one thread each, as several run at once
        self.env = {**os.environ, "SPEEDSIM_CACHE": str(d / "cache"), "OMP_NUM_THREADS": "1"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.done: dict[str, tuple[int, str, str]] = {}
        self.outlived: set[str] = set()  # cases that exited while a process they started held their pipes
        self.lock = threading.Lock()
        self.closed = False
        for name in sorted(names):
            if not self.cases[name].after:
                self._start(name)
        # the later cases of a chain start once the case before has exited 0 (its output stays unread
        # until its test asks: the pipes of these small commands never fill); `settled[name]` is set
        # when the watcher has started `name` or given up on it
        waiting = [n for n in sorted(names) if self.cases[n].after]
        self.settled = {n: threading.Event() for n in waiting}
        self.chain = threading.Thread(target=self._start_waiting, args=(waiting,), daemon=True)
        self.chain.start()

    def _start(self, name: str) -> None:
        with self.lock:
            if self.closed or name in self.procs:
                return
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "speedsim.cli", *self.cases[name].args],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env=self.env, start_new_session=True)

    def _start_waiting(self, waiting: list[str]) -> None:
        """Start each waiting case once the case it waits for has exited 0, in dependency order."""
        pending = list(waiting)
        while pending and not self.closed:
            for name in list(pending):
                first = self.procs.get(self.cases[name].after)
                code = first.poll() if first is not None else None
                if code is not None:
                    pending.remove(name)
                    if code == 0:
                        self._start(name)
                    self.settled[name].set()
            time.sleep(0.05)

    def result(self, name: str) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `name`, once it has run (after the case it waits for)."""
        if name not in self.done:
            first = self.cases[name].after
            if first:
                code = self.result(first)[0]
                assert code == 0, f"{first} failed, so {name} has nothing to run on"
                self.settled[name].wait(timeout=TIMEOUT_S)  # the watcher has started it by now
                self._start(name)  # (a no-op then)
            proc = self.procs[name]
            try:
                out, err = proc.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                if proc.poll() is not None:  # it exited, but something it started still holds its pipes
                    self.outlived.add(name)
                _kill_group(proc)
                out, err = proc.communicate(timeout=KILL_WAIT_S)
            self.done[name] = (proc.returncode, out, err)
        return self.done[name]

    def close(self) -> None:
        with self.lock:
            self.closed = True
        for p in self.procs.values():
            if p.poll() is None:
                _kill_group(p)
                try:
                    p.communicate(timeout=KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass  # its pipes close with this process


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a case (`start_new_session`): the command and every process it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start(session: pytest.Session, tmp_path_factory: pytest.TempPathFactory) -> Smoke | None:
    """The smoke subprocesses of the tests selected in `session` (and what they wait for), started now;
    None when none is selected."""
    selected = {item.callspec.params["command"] for item in session.items
                if item.path.name == "test_cli_smoke.py" and hasattr(item, "callspec")}
    if not selected:
        return None
    cases = _cases(Path("."))
    while missing := {cases[n].after for n in selected if cases[n].after} - selected:
        selected |= missing
    return Smoke(tmp_path_factory.mktemp("smoke"), selected)


@pytest.fixture
def smoke(smoke_session: Smoke | None) -> Smoke:
    """The session's smoke subprocesses (`conftest.smoke_session` started them with the session)."""
    assert smoke_session is not None
    return smoke_session


# the commands that start torch and train or decode a model: seconds of CPU each, which on a shared 2-core
# machine the in-process tests wait for; CI runs them (`pytest -m slow`)
TORCH_COMMANDS = ("data build", "train", "trace", "measure")


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in TORCH_COMMANDS else c
                                     for c in _cases(Path("."))])
def test_command_runs_in_a_subprocess(smoke: Smoke, command: str) -> None:
    """`speedsim COMMAND` on its smallest input: the expected exit status, a sane line, no traceback (and
    on an error, exactly one line on stderr)."""
    code, out, err = smoke.result(command)
    case = smoke.cases[command]
    assert command not in smoke.outlived, f"a process that {command} started outlived it, holding its pipes"
    assert code == case.code, (command, code, err[-2000:])
    assert "Traceback" not in err
    lines = (out if case.code == 0 else err).splitlines()
    assert any(re.search(case.expect, line) for line in lines), (command, case.expect, out[-2000:], err[-500:])
    if case.code == 2:
        assert len(err.strip().splitlines()) == 1 and not out


SIGTERM_MID_WRITE = """
import os, signal, sys
import speedsim.fileio as fileio
import speedsim.simulate.core as core
from speedsim import cli


def write_text(path, text, where=None):  # the timeline's write, terminated half way
    with fileio.atomic_write(path, "w", where) as fh:
        fh.write(text[:100])
        os.kill(os.getpid(), signal.SIGTERM)
        fh.write(text[100:])


core.write_text = write_text
sys.argv = ["speedsim", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.slow  # (a Dask cluster or a subprocess: CI's slow run)
def test_sigterm_mid_write_keeps_the_old_output(tmp_path: Path) -> None:
    """SIGTERM (`timeout`, `kill`, a batch scheduler) while an output is written: exit 143 with one line,
    the earlier output intact and no temporary file left (before, a 266 MB `.tl.json.*.tmp` stayed)."""
    out = tmp_path / "tl.json"
    old = '{"otherData": {"generator": "speedsim", "kind": "timeline"}, "traceEvents": []}'
    out.write_text(old)
    res = subprocess.run([sys.executable, "-c", SIGTERM_MID_WRITE, "simulate", "--profile", "h200", "--model", "t5base",
                          "--sharing", "4x3", "--synthetic", "perfect,len=3,seqs=1", "--baseline", "none",
                          "--timeline", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 143, res.stderr
    assert res.stderr.strip() == "speedsim: terminated"
    assert out.read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tl.json"]
