"""Shared fixtures: a tiny hardware profile with round numbers, models, and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from hypothesis import settings

from speedsim import cli as speedsim_cli
from speedsim.hardware import HardwareProfile, load_profile
from speedsim.workload import BUILTIN_MODELS, KernelRules, ModelSpec

TINY_PROFILE = {
    "name": "tiny",
    "kind": "gpu",
    "default_dtype": "bf16",
    "memory_capacity_GiB": 1.0,
    "compute": {
        "units": 4, "clock_MHz": 1000.0,
        "matrix_peak_TFLOPS": {"bf16": 1.0}, "vector_peak_TFLOPS": {"bf16": 0.1, "fp32": 0.1},
        "matrix_efficiency": 1.0, "vector_efficiency": 1.0,
        "unit_inflight_KiB": 1000.0, "unit_attention_inflight_KiB": 1000.0,
    },
    "memory": {
        # 1 GB/s = 1000 bytes/us DRAM, 10x faster on-chip, 1 MiB on-chip
        "dram": {"name": "dram", "capacity_MiB": 1024, "bandwidth_GBps": 1.0, "efficiency": 1.0, "latency_ns": 1.0},
        "onchip": [{"name": "sram", "capacity_MiB": 1.0, "bandwidth_GBps": 10.0, "efficiency": 1.0,
                    "latency_ns": 1.0, "usable_fraction": 1.0}],
    },
    "kernel": {"latency_us": 0.0, "overlap_exponent": 64.0},
    "host": {"launch_overhead_us": {"eager": 5.0, "graph": 0.0}, "graph_launch_us": 0.0},
    "sources": ["test fixture"],
}


@pytest.fixture
def tiny_profile() -> HardwareProfile:
    """A 4-unit device with 1 GB/s DRAM, 10 GB/s on-chip (1 MiB), 1 TFLOP/s matrix, no fixed latencies."""
    return HardwareProfile.model_validate(TINY_PROFILE)


@pytest.fixture
def tiny_profile_dict() -> dict:
    import copy

    return copy.deepcopy(TINY_PROFILE)


@pytest.fixture(scope="session")
def h200() -> HardwareProfile:
    return load_profile("h200")


@pytest.fixture
def t5base() -> ModelSpec:
    return BUILTIN_MODELS["t5base"]


@pytest.fixture
def rules(h200) -> KernelRules:
    return KernelRules.from_profile(h200)


@dataclass(frozen=True)
class CliResult:
    """What a `speedsim` invocation left: exit status and the two output streams."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run `speedsim ARGS` in this process (click's CliRunner isolation) and capture its output."""
    with CliRunner().isolation() as (out, err, _):
        code = speedsim_cli.run(list(args))
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def run_cli_subprocess(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `speedsim ARGS` in a subprocess, as a user would (one smoke test per command)."""
    return subprocess.run([sys.executable, "-m", "speedsim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def cli():
    """In-process CLI runner: `cli("simulate", ...)` -> CliResult(returncode, stdout, stderr)."""
    return run_cli


@pytest.fixture
def cli_subprocess():
    """Subprocess CLI runner, for the one end-to-end smoke test of each command."""
    return run_cli_subprocess


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is far faster than several on a shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- corpus and tokenizer (built once)
TINY_VOCAB = 320  # byte-level BPE: 259 reserved, a few merges


def _tiny_module(i: int) -> str:
    """A small module of documented functions (deterministic; every split gets some modules)."""
    ops = ["+", "-", "*", "//", "%"]
    verbs = ["sum", "difference", "product", "quotient", "remainder"]
    out = [f'"""Module {i}: arithmetic helpers."""\n\nimport math\n']
    for j in range(8):
        k = (i + j) % 5
        out.append(
            f"\n\ndef f{i}_{j}(a, b, scale={j + 1}):\n"
            f'    """Return the {verbs[k]} of a and b, scaled by {j + 1}.\n\n'
            f'    The inputs are numbers; case {j} of module {i}.\n    """\n'
            f"    x = (a {ops[k]} (b or 1)) * scale\n"
            f"    if x > {i + j}:\n        x = math.floor(x - {j})\n"
            f"    for _ in range({j % 3}):\n        x += 1\n    return x\n"
        )
    return "".join(out)


@pytest.fixture(scope="session")
def code_corpus(tmp_path_factory):
    """A tiny code corpus (120 generated modules in one package) and its tokenizer, built once:
    {"sources": [dir], "cache_dir": dir, "corpus": Corpus, "tokenizer": Tokenizer}."""
    from speedsim.data import corpus_tokenizer, open_corpus

    root = tmp_path_factory.mktemp("code")
    pkg = root / "tinypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A generated package."""\n')
    for i in range(120):
        (pkg / f"mod{i}.py").write_text(_tiny_module(i))
    cache = tmp_path_factory.mktemp("cache")
    corpus = open_corpus(cache, [pkg], progress=False)
    return {"sources": [str(pkg)], "cache_dir": str(cache), "corpus": corpus,
            "tokenizer": corpus_tokenizer(corpus, TINY_VOCAB)}


# Every property test draws the same examples on every run, and no example database replays old failures:
# the suite is deterministic (a @settings on a test changes only the fields it names).
settings.register_profile("speedsim", derandomize=True, database=None, deadline=None)
settings.load_profile("speedsim")


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread for the whole session: the suite's models are tiny, and on a 2-core machine a
    second thread only contends with the CLI smoke subprocesses (`smoke_session`)."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The CLI smoke tests run last: their subprocesses start with the session (`smoke_session`) and
    run on the core the in-process tests leave idle, so they are done by then."""
    items.sort(key=lambda item: item.path.name == "test_cli_smoke.py")


@pytest.fixture(scope="session", autouse=True)
def smoke_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Starts the subprocesses of the selected CLI smoke tests (`test_cli_smoke.start`) before any test."""
    import test_cli_smoke

    smoke = test_cli_smoke.start(request.session, tmp_path_factory)
    yield smoke
    if smoke is not None:
        smoke.close()
