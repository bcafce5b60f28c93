"""Bad input, organised by input kind: every case exits 2 with ONE line on stderr that names the
file, field, flag or row, and never a traceback (DESIGN.md, CLI contract).

Then property-based fuzzing of the readers (random bytes and random field mutations of a valid
file give a valid result or a `UserError`, never another exception), and a strict JSON parse of
every cheap command's `--json` output (no NaN or Infinity).

Inputs are tiny and every case fails at validation, before any real work: no model is trained,
no report is built (guards below make a case fail fast, not run long, if that ever changes).

Cases that fail in modules owned elsewhere are `xfail(strict=True)` with the owner area in the
reason, so the owner sees them turn green (and must then drop the mark).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_PROFILE, CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedsim.errors import UserError

# ------------------------------------------------------------------------------------- helpers


# Stands for a valid profile file of round numbers (conftest's TINY_PROFILE), so that cases about
# other inputs do not depend on the shipped profiles, which others calibrate and edit.
HW = "@tiny-profile"


@pytest.fixture(scope="module")
def tiny_profile_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hw") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_PROFILE, sort_keys=False))
    return str(path)


@pytest.fixture
def cli(tiny_profile_file: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., CliResult]:
    """conftest's in-process runner, with `HW` replaced by the tiny profile's path and an escaping
    exception returned as a result whose stderr holds "Traceback" (what these tests look for), so
    that a failure (and an expected failure) reports in one line instead of a long traceback.

    In stderr, each test's temporary directory is shown as `<tmp>/`: its name is the test's name,
    which must not be what satisfies a check that the error names a field.
    """
    tmp = re.compile(re.escape(str(tmp_path_factory.getbasetemp())) + r"/[^/\s]+/")

    def run(*args: str) -> CliResult:
        args = tuple(tiny_profile_file if a == HW else a for a in args)
        try:
            res = run_cli(*args)
        except Exception as err:  # noqa: BLE001 - whatever escapes the CLI is the failure reported
            last = traceback.extract_tb(err.__traceback__)[-1]
            res = CliResult(-1, "", f"Traceback (escaped run()): {type(err).__name__}: {err} "
                                    f"[{last.filename}:{last.lineno}]\n")
        return CliResult(res.returncode, res.stdout, tmp.sub("<tmp>/", res.stderr))
    return run


def assert_bad(res: CliResult, *names: str) -> str:
    """Exit 2, exactly one stderr line, no traceback, and the line names every one of `names`.

    A failure is reported as one line (`pytrace=False`): the exit status and stderr say it all.
    """
    lines = res.stderr.strip().splitlines()
    if "Traceback" in res.stderr + res.stdout:
        pytest.fail(f"a traceback: {res.stderr[-1500:]}", pytrace=False)
    if res.returncode != 2:
        pytest.fail(f"exit status {res.returncode}, expected 2; stderr: {res.stderr[-1500:]!r}", pytrace=False)
    if len(lines) != 1:
        pytest.fail(f"{len(lines)} lines on stderr, expected 1: {res.stderr[-1500:]!r}", pytrace=False)
    missing = [name for name in names if name not in lines[0]]
    if missing:
        pytest.fail(f"the error line does not name {missing}: {lines[0]!r}", pytrace=False)
    return lines[0]


def xfail(owner: str, what: str) -> pytest.MarkDecorator:
    """A known failure in a module someone else owns (strict: it must be un-marked once fixed)."""
    return pytest.mark.xfail(strict=True, reason=f"{owner}: {what}")


def case(id_: str, *values: Any, owner: str | None = None, why: str = "") -> Any:
    return pytest.param(*values, id=id_, marks=[xfail(owner, why)] if owner else [])


@pytest.fixture
def fifo_reader(tmp_path: Path) -> Iterator[Callable[[str, bytes], Path]]:
    """`make(name, data)`: a FIFO in tmp_path whose writer feeds `data` to whoever opens it, so a
    reader that (wrongly) reads a FIFO gets data instead of blocking the test forever."""
    made: list[tuple[Path, threading.Thread]] = []

    def make(name: str, data: bytes) -> Path:
        path = tmp_path / name
        os.mkfifo(path)

        def feed() -> None:
            try:
                with open(path, "wb") as fh:
                    fh.write(data)
            except OSError:
                pass

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        made.append((path, thread))
        return path

    yield make
    for path, thread in made:
        if thread.is_alive():  # nobody opened it: open the read end so the writer's open returns
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            thread.join(timeout=2)
            os.close(fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO (a special file, like /dev/null) in tmp_path, for output-path cases."""
    path = tmp_path / "special"
    os.mkfifo(path)
    return path


def _boom(what: str) -> Callable[..., Any]:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise AssertionError(f"{what} started: the bad input was not refused up front")
    return fail


# ------------------------------------------------------------------------------ profile YAML

def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation that sets the dotted `path` (list indices as numbers) to `value`."""
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


def _drop(path: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


PROFILE_TEXT = yaml.safe_dump(TINY_PROFILE, sort_keys=False)
# "billion laughs": 9**8 values once the aliases are expanded (hours to construct and check)
LAUGHS = ("a0: &a0 [1, 2]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))).encode()

PROFILE_CASES = [
    case("utf16", PROFILE_TEXT.encode("utf-16"), "UTF-8"),
    case("binary", bytes(range(256)), "UTF-8"),
    case("nul-bytes", b"name: x\x00\n", "binary"),
    case("empty", b"", "mapping"),
    case("list", b"- a\n- b\n", "mapping"),
    case("bad-yaml", b"name: [x\n", "YAML"),
    case("billion-laughs", LAUGHS, "aliases"),
    case("recursive-alias", b"sources: &s [*s]\n", "recursive"),
    case("duplicate-key", (PROFILE_TEXT + "kind: cpu\n").encode(), "kind"),
    case("duplicate-nested-key", PROFILE_TEXT.replace("  units: 4\n", "  units: 4\n  units: 8\n").encode(), "units"),
    case("inf", _set("memory.dram.bandwidth_GBps", float("inf")), "memory.dram.bandwidth_GBps"),
    case("nan", _set("compute.clock_MHz", float("nan")), "compute.clock_MHz"),
    case("quoted-inf", _set("memory.dram.bandwidth_GBps", "inf"), "memory.dram.bandwidth_GBps"),
    case("overflowing-string", _set("kernel.latency_us", "1e999"), "kernel.latency_us"),
    case("zero-units", _set("compute.units", 0), "compute.units"),
    case("negative-bandwidth", _set("memory.dram.bandwidth_GBps", -1.0), "memory.dram.bandwidth_GBps"),
    case("fractional-units", _set("compute.units", 2.5), "compute.units"),
    case("string-units", _set("compute.units", "four"), "compute.units"),
    case("efficiency-above-1", _set("memory.dram.efficiency", 1.5), "memory.dram.efficiency"),
    case("unknown-dtype", _set("compute.matrix_peak_TFLOPS.fp64", 1.0), "matrix_peak_TFLOPS"),
    case("negative-peak", _set("compute.matrix_peak_TFLOPS.bf16", -1.0), "matrix_peak_TFLOPS"),
    case("unknown-field", _set("colour", "blue"), "colour"),
    case("missing-memory", _drop("memory"), "memory"),
    case("missing-dram-bandwidth", _drop("memory.dram.bandwidth_GBps"), "bandwidth_GBps"),
    case("no-onchip-level", _set("memory.onchip", []), "memory.onchip"),
    case("no-sources", _set("sources", []), "sources"),
    case("unknown-kind", _set("kind", "fpga"), "kind"),
    case("empty-name", _set("name", ""), "name"),
    case("bool-units", _set("compute.units", True), "compute.units"),
    case("bool-efficiency", _set("compute.matrix_efficiency", True), "compute.matrix_efficiency"),
    case("huge-units", _set("compute.units", 10**30), "compute.units"),
    case("default-dtype-without-peak", _set("default_dtype", "fp8"), "default_dtype"),
    case("memory-capacity-contradicts-dram", _set("memory_capacity_GiB", 100.0), "memory_capacity_GiB"),
    case("onchip-larger-than-dram", _set("memory.onchip.0.capacity_MiB", 4096.0), "capacity_MiB"),
    # fixed times and op counts so large that a step summed to inf (NaN and inf printed with exit 0)
    case("huge-attention-latency", _set("kernel.attention_latency_us", 1e308), "kernel.attention_latency_us"),
    case("huge-launch-overhead", _set("host.launch_overhead_us.eager", 1e300), "host.launch_overhead_us.eager"),
    case("huge-norm-ops", lambda d: d.update(software={"host_ops": {"norm": 10**30}}), "software.host_ops.norm"),
    # numbers out of their plausible range (speedsim.hardware.parts' MIN_/MAX_ constants): 1e308 ns
    # of latency, 1e-300 GB/s or a clock of 1e-300 MHz printed inf, NaN or 400-digit times with exit 0
    *[case(f"{'huge' if value > 1 else 'tiny'}-{field.rsplit('.', 1)[-1]}", _set(field, value), field)
      for field, value in [
          ("compute.clock_MHz", 1e-300), ("compute.clock_MHz", 1e300),
          ("compute.matrix_peak_TFLOPS.bf16", 1e-300), ("compute.vector_peak_TFLOPS.fp32", 1e300),
          ("compute.matrix_efficiency", 1e-300), ("compute.vector_efficiency", 1e-300),
          ("compute.unit_inflight_KiB", 1e-300), ("compute.unit_attention_inflight_KiB", 1e300),
          ("compute.smem_per_unit_KiB", 1e-300),
          ("compute.row_reduce_cycles_per_element", 1e300), ("compute.index_cycles", 1e300),
          ("compute.attention_tile_cycles", 1e300),
          ("memory.dram.latency_ns", 1e308), ("memory.onchip.0.latency_ns", 1e-300),
          ("memory.dram.first_byte_ns", 1e308),
          ("memory.dram.bandwidth_GBps", 1e-300), ("memory.onchip.0.bandwidth_GBps", 1e300),
          ("memory.dram.efficiency", 1e-300), ("memory.onchip.0.usable_fraction", 1e-300),
          ("memory.onchip.0.capacity_MiB", 1e-300), ("kernel.overlap_exponent", 1e300)]],
    # both capacities huge (they must agree): the first named is memory_capacity_GiB
    case("huge-capacity", lambda d: (_set("memory_capacity_GiB", 1e300 / 1024)(d),
                                     _set("memory.dram.capacity_MiB", 1e300)(d)), "memory_capacity_GiB"),
    # the software section's sizes (speedsim.hardware.software.MAX_SOFTWARE_SIZE): a decode query tile
    # of 10**30 (queries padded to it) gave 3e34 us per token
    *[case(f"huge-{field}", lambda d, f=field: d.update(software={f: 10**30}), f"software.{field}")
      for field in ("attention_split_keys", "attention_split_min_keys", "attention_query_tile",
                    "attention_decode_query_tile", "attention_key_tile", "gemm_tile_rows", "gemm_tile_k",
                    "splitk_reduce_block_elements", "gemm_row_reuse_min", "splitk_min_in_features",
                    "gemm_tile_tokens", "gemm_large_tile_features", "elementwise_block_elements", "copy_block_KiB")],
    case("tiny-split-fill", lambda d: d.update(software={"attention_split_fill": 1e-300}),
         "software.attention_split_fill"),
    case("huge-split-fill", lambda d: d.update(software={"attention_split_fill": 1e300}),
         "software.attention_split_fill"),
]


@pytest.mark.parametrize("content, field", PROFILE_CASES)
def test_bad_profile(cli, tmp_path: Path, content: bytes | Callable[[dict], None], field: str) -> None:
    """A bad profile YAML (`--profile FILE`): exit 2, one line naming the file and the field."""
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        data = copy.deepcopy(TINY_PROFILE)
        content(data)
        path.write_text(yaml.safe_dump(data))
    res = cli("simulate", "--profile", str(path), "--model", "t5base", "--sharing", "4x3",
              "--synthetic", "perfect,len=3", "--baseline", "none")
    assert_bad(res, "bad.yaml", field)


def _range(low: Any, high: Any) -> dict:
    return {"low": low, "high": high, "reason": "test"}


@pytest.mark.parametrize("ranges, field", [
    case("low-above-high", {"memory.dram.efficiency": _range(0.9, 0.5)}, "memory.dram.efficiency"),
    case("unknown-parameter", {"memory.dram.colour": _range(0.5, 1.0)}, "memory.dram.colour"),
    case("index-out-of-range", {"memory.onchip.5.efficiency": _range(0.5, 1.0)}, "memory.onchip.5.efficiency"),
    case("not-a-number", {"name": _range(0.5, 1.0)}, "name"),
    case("bool-parameter", {"host.synchronous": _range(0, 1)}, "host.synchronous"),
    case("quoted-inf-end", {"compute.clock_MHz": _range(1.0, "inf")}, "compute.clock_MHz"),
    case("no-reason", {"memory.dram.efficiency": {"low": 0.5, "high": 1.0}}, "reason"),
    case("end-outside-the-field", {"memory.dram.efficiency": _range(0.5, 1.5)}, "memory.dram.efficiency"),
    case("negative-end", {"memory.dram.bandwidth_GBps": _range(-1.0, 1.0)}, "memory.dram.bandwidth_GBps"),
    case("fractional-int-end", {"compute.units": _range(2.5, 3.5)}, "compute.units"),
    case("excludes-the-value", {"memory.dram.bandwidth_GBps": _range(5.0, 6.0)}, "memory.dram.bandwidth_GBps"),
    # an end beyond the field's plausible range (`--bounds` ran it: inf and NaN)
    case("end-above-the-range", {"compute.clock_MHz": _range(1000.0, 1e300)}, "compute.clock_MHz"),
    case("end-below-the-range", {"memory.dram.latency_ns": _range(1e-300, 1.0)}, "memory.dram.latency_ns"),
])
def test_bad_profile_range(cli, tmp_path: Path, ranges: dict, field: str) -> None:
    """A profile's `ranges:` that is inconsistent: exit 2 (with --bounds too), one line naming file and parameter."""
    data = copy.deepcopy(TINY_PROFILE)
    data["ranges"] = ranges
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    assert_bad(cli("simulate", "--profile", str(tmp_path / "bad.yaml"), "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", "mispredict=0.3,len=3", "--bounds"), "bad.yaml", field)


def _sweep_of(profile: str) -> str:
    return f"name: t\nfixed: {{model: t5base, profile: '{profile}', out_len: 3, baselines: []}}\n" \
        "axes:\n  sharing: [4x3]\n  mispredict: [0.1]\n"


def _run_on_profile(cli, tmp_path: Path, command: str, profile: Path) -> CliResult:
    """`command` (simulate, serve or sweep) on the profile file `profile`."""
    if command == "sweep":
        (tmp_path / "s.yaml").write_text(_sweep_of(str(profile)))
        return cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--workers", "1")
    extra = ("--requests", "2", "--arrivals", "poisson:1") if command == "serve" else ("--baseline", "none")
    return cli(command, "--profile", str(profile), "--model", "t5base", "--sharing", "4x3",
               "--synthetic", "perfect,len=3", *extra)


@pytest.mark.parametrize("command", ["simulate", "serve", "sweep"])
def test_absurd_profile_refused_by_every_command(cli, tmp_path: Path, command: str) -> None:
    """A profile number out of its plausible range (1e308 ns of DRAM latency: inf and NaN with exit 0):
    simulate, serve and sweep refuse it up front, one line naming the file (a sweep: its spec) and field."""
    data = copy.deepcopy(TINY_PROFILE)
    _set("memory.dram.latency_ns", 1e308)(data)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    res = _run_on_profile(cli, tmp_path, command, tmp_path / "bad.yaml")
    assert_bad(res, "s.yaml" if command == "sweep" else "bad.yaml", "memory.dram.latency_ns")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["simulate", "serve", "sweep"])
def test_profile_whose_cost_model_is_not_finite(cli, tmp_path: Path, tiny_profile_file: str, monkeypatch,
                                                command: str) -> None:
    """The guard behind the fields' ranges: a profile whose cost model has a rate that is not finite
    (here by a DRAM rate made infinite, as a field without a range could) is refused when loaded,
    by every command, one line naming the file (a sweep: its spec) and the rate."""
    from speedsim.hardware.parts import MemoryLevel

    monkeypatch.setattr(MemoryLevel, "achievable_Bps", property(lambda self: math.inf))
    res = _run_on_profile(cli, tmp_path, command, Path(tiny_profile_file))
    assert_bad(res, "s.yaml" if command == "sweep" else "tiny.yaml", "dram_Bpus")


def test_profile_that_is_a_directory(cli, tmp_path: Path) -> None:
    """`--profile DIR.yaml` (a directory): one line naming it."""
    (tmp_path / "dir.yaml").mkdir()
    assert_bad(cli("simulate", "--profile", str(tmp_path / "dir.yaml"), "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", "perfect"), "dir.yaml", "directory")


def test_profile_that_is_a_fifo(cli, fifo_reader) -> None:
    """`--profile FIFO.yaml`: refused as not a regular file (reading it could block forever)."""
    path = fifo_reader("pipe.yaml", PROFILE_TEXT.encode())
    assert_bad(cli("simulate", "--profile", str(path), "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", "perfect"), "pipe.yaml", "regular file")


def test_unknown_profile_name(cli) -> None:
    """`--profile NAME` that is not shipped: one line naming the flag."""
    assert_bad(cli("simulate", "--profile", "no-such-chip", "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", "perfect"), "--profile", "no-such-chip")


def test_profiles_dir_with_a_bad_file(cli, tmp_path: Path) -> None:
    """`speedsim profiles --dir` with an undecodable profile: one line naming that file."""
    (tmp_path / "x.yaml").write_bytes(b"\xff\xfe\x00n")
    assert_bad(cli("profiles", "--dir", str(tmp_path)), "x.yaml")


def test_profiles_dir_with_a_misnamed_profile(cli, tmp_path: Path) -> None:
    """A profile whose `name` differs from its file name: one line naming the file and field."""
    (tmp_path / "other.yaml").write_text(PROFILE_TEXT)
    assert_bad(cli("profiles", "--dir", str(tmp_path)), "other.yaml", "name")


# ------------------------------------------------------------------------------ measured CSV

HEADER = "section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
ROW = "gemv,,eager,W256MiB,1,0,0,0,67.008,66.632,67.546,\n"
BATCH = "batch,t5base,eager,unshared,2,26,12,1,10000,,,impl=static;seed=0;cross=64;lengths=37/16\n"
LINEAR = "op,t5base,eager,linear,4,0,0,0,50,,,in=768;out=2304\n"
ATTENTION = "op,t5base,eager,attention,4,16,0,0,50,,,queries=1\n"
VALIDATION = "validation"

MEASURED_CASES = [
    case("empty", "", "bad.csv"),
    case("utf16", (HEADER + ROW).encode("utf-16"), "bad.csv"),
    case("binary", bytes(range(256)) * 4, "bad.csv"),
    case("missing-column", HEADER.replace("us_median,", "") + ROW, "us_median"),
    case("unknown-section", HEADER + ROW.replace("gemv", "bogus"), "bad.csv:2"),
    case("unknown-mode", HEADER + ROW.replace("eager", "turbo"), "bad.csv:2"),
    case("non-numeric-n", HEADER + ROW.replace("W256MiB,1,", "W256MiB,abc,"), "bad.csv:2"),
    case("negative-n", HEADER + ROW.replace("W256MiB,1,", "W256MiB,-1,"), "bad.csv:2"),
    case("header-only", HEADER, "bad.csv"),
    case("negative-time", HEADER + ROW.replace("67.008", "-67.008"), "bad.csv:2"),
    case("zero-time", HEADER + ROW.replace("67.008", "0"), "bad.csv:2"),
    case("inf-time", HEADER + ROW.replace("67.008", "inf"), "bad.csv:2"),
    case("nan-time", HEADER + ROW.replace("67.008", "nan"), "bad.csv:2"),
    case("overflowing-time", HEADER + ROW.replace("67.008", "1e400"), "bad.csv:2"),
    case("fractional-n", HEADER + ROW.replace("W256MiB,1,", "W256MiB,2.5,"), "bad.csv:2"),
    case("huge-n", HEADER + ROW.replace("W256MiB,1,", "W256MiB,1e30,"), "bad.csv:2"),
    case("conflicting-duplicate-rows", HEADER + ROW + ROW.replace("67.008", "99.0"), "bad.csv:3"),
    case("ragged-row", HEADER + "gemv,,eager\n", "bad.csv:2"),
    case("duplicate-column", HEADER.replace("extra", "n") + ROW, "bad.csv"),
    case("no-header", ROW + ROW.replace("67.008", "68"), "not a header"),  # said "column(s) given twice"
    # batch rows (speedsim measure --parts batch): lengths=A/B/...;cross=S in the extra column
    case("batch-no-lengths", HEADER + BATCH.replace(";lengths=37/16", ""), "lengths"),
    case("batch-fractional-length", HEADER + BATCH.replace("lengths=37/16", "lengths=37.5/16"), "lengths"),
    case("batch-huge-length", HEADER + BATCH.replace("lengths=37/16", "lengths=100000000000000000000/16"), "lengths"),
    case("batch-lengths-not-n", HEADER + BATCH.replace("lengths=37/16", "lengths=37/16/9"), "lengths"),
    case("batch-zero-length", HEADER + BATCH.replace("lengths=37/16", "lengths=0/16"), "lengths"),
    case("batch-lengths-twice", HEADER + BATCH.replace("\n", ";lengths=1/2\n"), "lengths"),
    case("batch-negative-cross", HEADER + BATCH.replace("cross=64", "cross=-64"), "cross"),
    case("batch-empty-cross", HEADER + BATCH.replace("cross=64", "cross="), "cross"),
    case("batch-huge-cross", HEADER + BATCH.replace("cross=64", "cross=1000000000000"), "cross"),
    case("batch-ctx-contradicts-lengths", HEADER + BATCH.replace(",2,26,", ",2,999,"), "ctx"),
    case("batch-zero-repeats", HEADER + BATCH.replace(",12,1,", ",12,0,"), "bad.csv:2"),
    # the error was "sharing: ... out of range", naming no file or row
    case("batch-sharing-out-of-range", HEADER + BATCH.replace(",12,1,", ",4096,2,"), "bad.csv:2"),
    # '²' passed str.isdigit() and then failed int(): a traceback
    case("batch-superscript-cross", HEADER + BATCH.replace("cross=64", "cross=²"), "cross"),
    # op rows (speedsim measure --parts ops): a linear map's in=K;out=N, attention's queries=Q, checked when
    # read (whatever --mode); sizes nothing has (in=1e20 gave a MAPE of 8e19% with exit 0)
    case("op-huge-in", HEADER + LINEAR.replace("in=768", "in=100000000000000000000"), "in="),
    case("op-no-out", HEADER + LINEAR.replace(";out=2304", ""), "out"),
    case("op-huge-queries", HEADER + ATTENTION.replace("queries=1", "queries=100000000000000000000"), "queries"),
    case("op-superscript-queries", HEADER + ATTENTION.replace("queries=1", "queries=²"), "queries"),
    case("op-attention-without-keys", HEADER + ATTENTION.replace(",4,16,", ",4,0,"), "ctx"),
    case("op-zero-n", HEADER + LINEAR.replace(",4,0,", ",0,0,"), "bad.csv:2"),
    # ceiling scenarios of nothing (0 MiB: simulated 0 us) or of sizes no device holds
    case("empty-copy", HEADER + "ceiling,,,copy_0MiB,0,0,0,0,10,,,\n", "copy_0MiB"),
    case("huge-copy", HEADER + "ceiling,,,copy_99999999GiB,0,0,0,0,10,,,\n", "copy_99999999GiB"),
    case("huge-gemm", HEADER + "ceiling,,,gemm_bf16_99999999,0,0,0,0,10,,,\n", "gemm_bf16_99999999"),
    # a decode row's trace: its problems named on the row, not as a --trace flag validate does not have
    case("decode-trace-missing-file", HEADER + "decode,t5base,graph,pipelined,0,0,4,3,10,,,trace=/no/such.jsonl\n",
         "bad.csv:2"),
    case("decode-trace-is-a-directory", HEADER + "decode,t5base,graph,pipelined,0,0,4,3,10,,,trace=/\n",
         "bad.csv:2"),
]


@pytest.mark.parametrize("content, name", MEASURED_CASES)
def test_bad_measured_csv_validate(cli, tmp_path: Path, content: str | bytes, name: str) -> None:
    """`validate --measured BAD.csv`: exit 2, one line naming the file (and row)."""
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_bad(cli("validate", "--measured", str(path), "--profile", HW, "--json"), name)


@pytest.mark.parametrize("content, name", [
    case("empty", "", "bad.csv"),
    case("header-only", HEADER, "bad.csv"),
    case("unknown-section", HEADER + ROW.replace("gemv", "bogus"), "bad.csv:2"),
    case("negative-time", HEADER + ROW.replace("67.008", "-1"), "bad.csv:2"),
    case("inf-time", HEADER + ROW.replace("67.008", "inf"), "bad.csv:2"),
])
def test_bad_measured_csv_calibrate(cli, tmp_path: Path, content: str, name: str) -> None:
    """`calibrate --measured BAD.csv`: exit 2, one line naming the file (and row)."""
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_bad(cli("calibrate", "--measured", str(path), "--profile", HW, "--kernels", "none",
                   "--out", str(tmp_path / "fitted.yaml")), name)
    assert not (tmp_path / "fitted.yaml").exists()


@pytest.mark.parametrize("sections, name", [
    case("unknown", "bogus", "bogus"),
    # an empty value fitted every row, as if --sections were not given
    case("empty", "", "empty"),
    case("blank", " ", "empty"),
    case("empty-item", "gemv,", "''"),
    # SECTION/PATTERN that selects no row (a typo) beside one that does: it was silently dropped
    case("pattern-with-no-rows", "gemv,gemv/W1MiB", "gemv/W1MiB"),
    case("no-pattern", "gemv/", "gemv/"),
    case("pattern-of-unknown-section", "bogus/x", "bogus/x"),
])
def test_calibrate_bad_sections(cli, tmp_path: Path, sections: str, name: str) -> None:
    """`calibrate --sections` with no known section, an empty item or a pattern of no row: one line
    naming the flag and the item."""
    (tmp_path / "m.csv").write_text(HEADER + ROW)
    assert_bad(cli("calibrate", "--measured", str(tmp_path / "m.csv"), "--profile", HW, "--kernels", "none",
                   "--out", str(tmp_path / "f.yaml"), "--sections", sections), "--sections", name)
    assert not (tmp_path / "f.yaml").exists()


@pytest.mark.parametrize("second", ["a.csv", "sub/../a.csv"])
def test_calibrate_measured_file_twice(cli, tmp_path: Path, second: str) -> None:
    """`calibrate --measured A --measured A` (its rows were fitted twice, and listed twice in the profile's
    sources): one line naming the flag and the file, no profile written."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.csv").write_text(HEADER + ROW)
    assert_bad(cli("calibrate", "--measured", str(tmp_path / "a.csv"), "--measured", str(tmp_path / second),
                   "--profile", HW, "--kernels", "none", "--out", str(tmp_path / "f.yaml")), "--measured", "a.csv")
    assert not (tmp_path / "f.yaml").exists()


@pytest.mark.parametrize("command", [
    case("validate", "validate"),
    case("calibrate", "calibrate"),
])
def test_measured_csv_that_is_a_directory(cli, tmp_path: Path, command: str) -> None:
    """`--measured DIR`: one line naming it."""
    (tmp_path / "m.csv").mkdir()
    extra = ["--out", str(tmp_path / "f.yaml"), "--kernels", "none"] if command == "calibrate" else []
    assert_bad(cli(command, "--measured", str(tmp_path / "m.csv"), "--profile", HW, *extra), "m.csv")


def test_measured_csv_that_is_a_fifo(cli, fifo_reader) -> None:
    """`--measured FIFO`: refused as not a regular file."""
    path = fifo_reader("m.csv", (HEADER + ROW).encode())
    assert_bad(cli("validate", "--measured", str(path), "--profile", HW), "m.csv")


@pytest.mark.parametrize("content, args, name", [
    # every row eager, --mode graph (the default): an empty table with exit 0
    case("no-row-of-the-mode", HEADER + ROW, (), "--mode"),
    case("no-row-measured", HEADER + ROW.replace("67.008,66.632,67.546", ",,"), ("--mode", "eager"), "bad.csv"),
])
def test_measured_csv_with_nothing_to_compare(cli, tmp_path: Path, content: str, args: tuple[str, ...],
                                              name: str) -> None:
    """`validate` of a file with no measured row of the mode asked for: one line, not an empty table."""
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_bad(cli("validate", "--measured", str(path), "--profile", HW, "--json", *args), name)


@pytest.mark.parametrize("name", ["", " padded "])
def test_calibrate_bad_profile_name(cli, tmp_path: Path, name: str) -> None:
    """`calibrate --name` that is empty (it kept the old name) or padded: one line, no profile written."""
    (tmp_path / "m.csv").write_text(HEADER + ROW)
    assert_bad(cli("calibrate", "--measured", str(tmp_path / "m.csv"), "--profile", HW, "--kernels", "none",
                   "--out", str(tmp_path / "f.yaml"), "--name", name), "--name")
    assert not (tmp_path / "f.yaml").exists()


def test_measured_csv_missing(cli, tmp_path: Path) -> None:
    """`--measured` naming no file: one line naming it."""
    assert_bad(cli("validate", "--measured", str(tmp_path / "none.csv"), "--profile", HW), "none.csv")


# ------------------------------------------------------------------------------ kernel CSV

KHEADER = "scenario,kernel,calls_per_iter,device_us_per_iter\n"
KROW = "layer_t5base_n1_ctx1024,nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT,2.0,6.31\n"


@pytest.mark.parametrize("content, name", [
    case("empty", "", "k.csv"),
    case("missing-column", KHEADER.replace(",device_us_per_iter", "") + KROW, "device_us_per_iter"),
    case("negative-time", KHEADER + KROW.replace("6.31", "-6.31"), "k.csv:2"),
    case("inf-time", KHEADER + KROW.replace("6.31", "inf"), "k.csv:2"),
    case("nan-calls", KHEADER + KROW.replace("2.0", "nan"), "k.csv:2"),
    case("text-time", KHEADER + KROW.replace("6.31", "fast"), "k.csv:2"),
    case("unknown-scenario", KHEADER + KROW.replace("layer_t5base", "blob_t5base"), "k.csv:2"),
    case("utf16", (KHEADER + KROW).encode("utf-16"), "k.csv"),
    case("header-only", KHEADER, "k.csv"),
])
def test_bad_kernel_csv(cli, tmp_path: Path, content: str | bytes, name: str) -> None:
    """`validate --kernels BAD.csv`: exit 2, one line naming the file (and row)."""
    path = tmp_path / "k.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_bad(cli("validate", "--kernels", str(path), "--profile", HW, "--json"), name)


def test_kernel_csv_that_is_a_directory(cli, tmp_path: Path) -> None:
    """`--kernels DIR`: one line naming it."""
    (tmp_path / "k.csv").mkdir()
    assert_bad(cli("validate", "--kernels", str(tmp_path / "k.csv"), "--profile", HW), "k.csv")


# ------------------------------------------------------------------------------ model spec

SPEC = "name: mine\nd_model: 64\nn_heads: 4\nd_ff: 256\nvocab: 1000\n"
WORKLOAD = "workload"

MODEL_SPEC_CASES = [
    case("utf16", SPEC.encode("utf-16"), "UTF-8"),
    case("binary", b"\x00\x01\x02", "binary"),
    case("empty", b"", "mapping"),
    case("list", b"- 1\n", "mapping"),
    case("duplicate-key", (SPEC + "d_ff: 512\n").encode(), "d_ff"),
    case("heads-do-not-divide", SPEC.replace("n_heads: 4", "n_heads: 3").encode(), "n_heads"),
    case("zero-width", SPEC.replace("d_model: 64", "d_model: 0").encode(), "d_model"),
    case("negative-vocab", SPEC.replace("vocab: 1000", "vocab: -5").encode(), "vocab"),
    case("fractional-width", SPEC.replace("d_model: 64", "d_model: 64.5").encode(), "d_model"),
    case("string-width", SPEC.replace("d_ff: 256", "d_ff: wide").encode(), "d_ff"),
    case("inf", SPEC.replace("vocab: 1000", "vocab: .inf").encode(), "vocab"),
    case("quoted-inf", SPEC.replace("d_ff: 256", "d_ff: 'inf'").encode(), "d_ff"),
    case("unknown-ffn", (SPEC + "ffn: tanh\n").encode(), "ffn"),
    case("unknown-field", (SPEC + "layers: 12\n").encode(), "layers"),
    case("missing-name", SPEC.replace("name: mine\n", "").encode(), "name"),
    case("negative-cross-attention", (SPEC + "cross_attention_len: -1\n").encode(), "cross_attention_len"),
    case("bool-heads", SPEC.replace("n_heads: 4", "n_heads: true").encode(), "n_heads"),
    case("huge-vocab", SPEC.replace("vocab: 1000", "vocab: 1000000000000000000000").encode(), "vocab"),
]


@pytest.mark.parametrize("content, field", MODEL_SPEC_CASES)
def test_bad_model_spec(cli, tmp_path: Path, content: bytes, field: str) -> None:
    """`--model-spec BAD.yaml`: exit 2, one line naming the file and field."""
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    assert_bad(cli("simulate", "--profile", HW, "--model", "mine", "--sharing", "4x3",
                   "--synthetic", "perfect,len=3", "--baseline", "none", "--model-spec", str(path)),
               "spec.yaml", field)


def test_model_spec_shadowing_a_builtin(cli, tmp_path: Path) -> None:
    """A --model-spec whose name is a built-in model's: refused, not silently replacing it."""
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("name: mine", "name: t5base"))
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", "perfect,len=3", "--model-spec", str(path)), "spec.yaml", "t5base")


def test_two_model_specs_with_one_name(cli, tmp_path: Path) -> None:
    """Two --model-spec files of one name and different shapes: refused."""
    (tmp_path / "a.yaml").write_text(SPEC)
    (tmp_path / "b.yaml").write_text(SPEC.replace("d_ff: 256", "d_ff: 512"))
    assert_bad(cli("simulate", "--profile", HW, "--model", "mine", "--sharing", "4x3", "--synthetic", "perfect",
                   "--model-spec", str(tmp_path / "a.yaml"), "--model-spec", str(tmp_path / "b.yaml")),
               "b.yaml", "mine")


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_model_spec_that_is_not_a_file(cli, tmp_path: Path, fifo_reader, kind: str) -> None:
    """`--model-spec` that does not exist, is a directory or a FIFO: one line naming it."""
    path = tmp_path / "spec.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        path = fifo_reader("spec.yaml", SPEC.encode())
    assert_bad(cli("simulate", "--profile", HW, "--model", "mine", "--sharing", "4x3", "--synthetic", "perfect",
                   "--model-spec", str(path)), "spec.yaml")


# ------------------------------------------------------------------------------ trace file

REC = {"version": 1, "seq_id": "a", "src_len": 4, "repeats": 3, "exits": [[1, 2, 3], [4, 4, 4]]}


def _lines(*records: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


TRACE_CASES = [
    case("empty", b"", "--trace"),
    case("blank-lines", b"\n\n", "--trace"),
    case("all-sequences-empty", _lines({**REC, "exits": []}), "--trace"),
    case("utf16", _lines(REC).decode().encode("utf-16"), "t.jsonl"),
    case("binary", bytes(range(256)), "t.jsonl"),
    case("not-json", _lines("{not json"), "t.jsonl:1"),
    case("nan", _lines('{"version":1,"seq_id":"a","src_len":NaN,"repeats":3,"exits":[]}'), "t.jsonl:1"),
    case("infinity", _lines('{"version":1,"seq_id":"a","src_len":Infinity,"repeats":3,"exits":[]}'), "t.jsonl:1"),
    case("overflowing-number", _lines('{"version":1,"seq_id":"a","src_len":1e400,"repeats":3,"exits":[]}'),
         "t.jsonl:1"),
    case("no-version", _lines({k: v for k, v in REC.items() if k != "version"}), "t.jsonl:1"),
    case("future-version", _lines({**REC, "version": 2}), "t.jsonl:1"),
    case("bool-version", _lines({**REC, "version": True}), "t.jsonl:1"),
    case("negative-token", _lines({**REC, "exits": [[-1, 2, 3]]}), "t.jsonl:1"),
    case("huge-token", _lines({**REC, "exits": [[10**30, 2, 3]]}), "t.jsonl:1"),
    case("float-token", _lines({**REC, "exits": [[1.0, 2, 3]]}), "t.jsonl:1"),
    case("string-token", _lines({**REC, "exits": [["1", 2, 3]]}), "t.jsonl:1"),
    case("duplicate-seq-id", _lines(REC, REC), "t.jsonl:2"),
    case("duplicate-json-key", _lines('{"version":1,"seq_id":"a","seq_id":"b","src_len":4,"repeats":3,'
                                      '"exits":[[1,2,3],[4,4,4]]}'), "t.jsonl:1"),
    case("row-shorter-than-repeats", _lines({**REC, "exits": [[1, 2]]}), "t.jsonl:1"),
    case("zero-repeats", _lines({**REC, "repeats": 0, "exits": []}), "t.jsonl:1"),
    case("negative-src-len", _lines({**REC, "src_len": -1}), "t.jsonl:1"),
    case("empty-seq-id", _lines({**REC, "seq_id": ""}), "t.jsonl:1"),
    case("negative-eos", _lines({**REC, "eos_id": -5}), "t.jsonl:1"),
    case("unknown-field", _lines({**REC, "colour": 1}), "t.jsonl:1"),
    case("array-record", _lines([1, 2, 3]), "t.jsonl:1"),
    case("deeply-nested", _lines("[" * 100000 + "]" * 100000), "t.jsonl:1"),
    case("repeats-contradict-sharing", _lines({**REC, "repeats": 2, "exits": [[1, 2], [3, 3]]}), "--sharing"),
    case("mixed-repeats", _lines(REC, {**REC, "seq_id": "b", "repeats": 2, "exits": [[1, 2]]}), "--sharing"),
]


@pytest.mark.parametrize("content, name", TRACE_CASES)
def test_bad_trace(cli, tmp_path: Path, content: bytes, name: str) -> None:
    """`simulate --trace BAD.jsonl`: exit 2, one line naming the file:line (or the flag)."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--trace", str(path),
                   "--baseline", "none"), name)


def test_trace_with_a_byte_order_mark_is_read(cli, tmp_path: Path) -> None:
    """A UTF-8 byte-order mark before the first record (some editors write one) is not an error."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _lines(REC))
    res = cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--trace", str(path),
              "--baseline", "none", "--json")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "not-gzip", "unknown-name"])
def test_trace_that_is_not_a_trace_file(cli, tmp_path: Path, fifo_reader, kind: str) -> None:
    """`--trace` missing, a directory, a FIFO, a .gz that is not gzip, an unknown shipped name: one line."""
    path: Path | str = tmp_path / "t.jsonl"
    name = "t.jsonl"
    if kind == "directory":
        Path(path).mkdir()
    elif kind == "fifo":
        path = fifo_reader("t.jsonl", _lines(REC))
    elif kind == "not-gzip":
        path = tmp_path / "t.jsonl.gz"
        path.write_bytes(b"not gzip at all")
        name = "t.jsonl.gz"
    elif kind == "unknown-name":
        path = name = "no-such-trace"
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--trace", str(path)),
               name)


def test_trace_and_synthetic_together(cli, tmp_path: Path) -> None:
    """`--trace` and `--synthetic` contradict each other: one line naming both flags."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(_lines(REC))
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--trace", str(path),
                   "--synthetic", "perfect"), "--trace", "--synthetic")


# ------------------------------------------------------------------------------ synthetic spec

SYNTHETIC_CASES = [
    "", " ", "len=3,,seqs=1", "colour=blue", "perfect=1", "perfect,mispredict=0.5", "mispredict=0.5,perfect",
    "agree=0.5/1/1,mispredict=0.1", "len=4,len=5", "mispredict=0.1,mispredict=0.2", "len=4", "seqs=2,seed=1",
    "seed=-1", "seed=99999999999999999999999", "seed=1e3", "src=0", "len=0", "len=-3", "len=2.5", "len=1e9",
    "len=99999999", "seqs=0", "seqs=1.5", "mispredict=inf", "mispredict=nan", "mispredict=-0.1", "mispredict=1.5",
    "mispredict=0x1", "burst=nan", "burst=2", "agree=0.5", "agree=0.5/1/1/1", "agree=0.5/0.4/1", "agree=nan/1",
    "agree=0.5/0.7/0.9", "agree=0.5//1", "agree=", "fit=/no/such/trace.jsonl",
    # a burst that contradicts a miss rate of 1 (every miss follows a miss) gave the numbers of a rate of 0.5
    "mispredict=1,burst=0", "agree=0/0/1,burst=0.5",
    # one token per sequence: nothing to decode (the error named --trace, which was not given)
    "perfect,len=1", "mispredict=0.2,len=1,seqs=4",
    # each within its own bound, together weeks of simulation
    "perfect,seqs=10000,len=65536",
]


@pytest.mark.parametrize("text", SYNTHETIC_CASES, ids=[s or "(empty)" for s in SYNTHETIC_CASES])
def test_bad_synthetic(cli, text: str) -> None:
    """`--synthetic TEXT` that is empty, repeats or contradicts keys, or has values out of range: one line."""
    res = cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--synthetic", text,
              "--baseline", "none")
    assert_bad(res, "trace.jsonl" if text.startswith("fit=") else "--synthetic")


FIT_CASES = {
    "empty": (b"", ""),
    "mixed-repeats": (_lines(REC, {**REC, "seq_id": "b", "repeats": 2, "exits": [[1, 2]]}), ""),
    "one-token-sequences": (_lines({**REC, "exits": [[1, 2, 3]]}, {**REC, "seq_id": "b", "exits": []}), ""),
    "burst-below-all-miss": (_lines({**REC, "exits": [[1, 2, 3]] * 4}), ",burst=0.5"),
    "other-repeats": (_lines({**REC, "repeats": 2, "exits": [[1, 2], [3, 3]]}), ""),
}


@pytest.mark.parametrize("kind", list(FIT_CASES))
def test_synthetic_fit_to_a_bad_trace(cli, tmp_path: Path, kind: str) -> None:
    """`--synthetic fit=TRACE` of a trace with nothing to fit (or nothing to decode, or an R other than
    --sharing's), or with a burst its miss rate contradicts: one line naming the flag and file."""
    path = tmp_path / "t.jsonl"
    content, more = FIT_CASES[kind]
    path.write_bytes(content)
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3",
                   "--synthetic", f"fit={path}{more}"), "--synthetic", "t.jsonl")


# ------------------------------------------------------------------------------ sharing

SHARING_CASES = ["0x3", "4x0", "4", "x3", "axb", "-1x3", "4x3x2", "", "4.5x2", "4x", "1e3x1", "4*3", "100000x100000",
                 "1x2000", "5000x1"]


@pytest.mark.parametrize("text", SHARING_CASES, ids=[s or "(empty)" for s in SHARING_CASES])
def test_bad_sharing(cli, text: str) -> None:
    """`--sharing` that is not UxR with 1 <= R <= 1024 and depth <= 4096: one line naming the flag."""
    assert_bad(cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", text,
                   "--synthetic", "perfect,len=3"), "--sharing")


# ------------------------------------------------------------------------------ serve options

SERVE = ("serve", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
         "--requests", "2")

SERVE_CASES = [
    case("rate-zero", ("--arrivals", "poisson:0"), "--arrivals"),
    case("rate-nan", ("--arrivals", "poisson:nan"), "--arrivals"),
    case("rate-inf", ("--arrivals", "poisson:inf"), "--arrivals"),
    case("rate-missing", ("--arrivals", "poisson:"), "--arrivals"),
    # so low that the arrivals overflow to infinity (null latencies, a warning on stderr)
    case("rate-denormal", ("--arrivals", "poisson:1e-320"), "--arrivals"),
    case("rate-too-low", ("--arrivals", "poisson:1e-9"), "--arrivals"),
    case("unknown-process", ("--arrivals", "uniform:3"), "--arrivals"),
    case("trace-without-file", ("--arrivals", "trace:"), "--arrivals"),  # said ".: ... it is a directory"
    case("zero-requests", ("--arrivals", "poisson:1", "--requests", "0"), "--requests"),
    case("huge-requests", ("--arrivals", "poisson:1", "--requests", "10000000000000000000000"), "--requests"),
    case("zero-batch", ("--arrivals", "poisson:1", "--max-batch", "0"), "--max-batch"),
    case("huge-batch", ("--arrivals", "poisson:1", "--max-batch", "10000000000000000000000"), "--max-batch"),
    case("zero-kv", ("--arrivals", "poisson:1", "--kv-capacity-GB", "0"), "--kv-capacity-GB"),
    case("nan-kv", ("--arrivals", "poisson:1", "--kv-capacity-GB", "nan"), "--kv-capacity-GB"),
    # 1e300 GB is an infinite number of bytes: the KV utilisation came out null
    case("huge-kv", ("--arrivals", "poisson:1", "--kv-capacity-GB", "1e300"), "--kv-capacity-GB"),
    case("kv-below-one-request", ("--arrivals", "poisson:1", "--kv-capacity-GB", "1e-9"), "--kv-capacity-GB"),
    case("zero-prefill-budget", ("--arrivals", "poisson:1", "--prefill-budget", "0"), "--prefill-budget"),
    case("negative-seed", ("--arrivals", "poisson:1", "--seed", "-1"), "--seed"),
    case("unknown-prefill", ("--arrivals", "poisson:1", "--prefill", "eager"), "--prefill"),
    case("fit-of-other-repeats", ("--arrivals", "poisson:1", "--synthetic", "fit=2x6"), "--synthetic"),
    case("trace-and-synthetic", ("--arrivals", "poisson:1", "--trace", "4x3"), "--trace"),
]


@pytest.mark.parametrize("args, flag", SERVE_CASES)
def test_bad_serve_option(cli, args: tuple[str, ...], flag: str) -> None:
    """`serve` with an arrival spec, count, capacity or workload out of range: one line naming the flag."""
    assert_bad(cli(*SERVE, *args), flag)


ARRIVAL_FILES = {
    "empty": b"",
    "header-only": b"time\n",
    "unsorted": b"0\n2\n1\n",
    "negative": b"-1\n0\n",
    "nan": b"0\nnan\n",
    "text": b"0\nsoon\n",
    "utf16": "0\n1\n".encode("utf-16"),
    "binary": bytes(range(256)),
    # 1e300 s: a request's work is lost to rounding when added to its arrival, its latency 0 (exit 0)
    "far-future": b"0\n1e300\n",
    "too-few": b"0\n",
}


@pytest.mark.parametrize("kind", [*ARRIVAL_FILES, "missing", "directory", "fifo"])
def test_bad_arrival_file(cli, tmp_path: Path, fifo_reader, kind: str) -> None:
    """`--arrivals trace:FILE` that is not a sorted list of enough times in range: one line naming the file."""
    path = tmp_path / "arrivals.txt"
    if kind in ARRIVAL_FILES:
        path.write_bytes(ARRIVAL_FILES[kind])
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        path = fifo_reader("arrivals.txt", b"0\n1\n")
    assert_bad(cli(*SERVE, "--arrivals", f"trace:{path}"), "arrivals.txt")


# ------------------------------------------------------------------------------ sweep spec

SWEEP = ("name: t\nfixed: {model: t5base, profile: '@tiny-profile', out_len: 3, baselines: []}\n"
         "axes:\n  sharing: [4x3]\n  mispredict: [0.1]\n")

SWEEP_CASES = [
    case("utf16", SWEEP.encode("utf-16"), "UTF-8"),
    case("binary", b"\x89PNG\x00\x00", "UTF-8"),
    case("nul-bytes", b"name: t\x00\n", "binary"),
    case("empty", b"", "mapping"),
    case("list", b"- a\n", "mapping"),
    case("duplicate-key", (SWEEP + "name: u\n").encode(), "name"),
    case("billion-laughs", LAUGHS, "aliases"),
    case("unknown-key", (SWEEP + "colour: blue\n").encode(), "colour"),
    case("unknown-axis", SWEEP.replace("mispredict:", "colour:").encode(), "colour"),
    case("empty-axis", SWEEP.replace("[0.1]", "[]").encode(), "mispredict"),
    case("scalar-axis", SWEEP.replace("[0.1]", "0.1").encode(), "axes.mispredict"),
    case("no-runs", b"name: t\nfixed: {model: t5base}\n", "no axes"),
    case("agree-and-mispredict", SWEEP.replace("out_len: 3", "out_len: 3, agree: 0.5/1/1").encode(), "agree"),
    case("sharing-and-unique", SWEEP.replace("out_len: 3", "out_len: 3, unique: 4").encode(), "unique"),
    case("depth-not-multiple", SWEEP.replace("sharing: [4x3]", "depth: [7]\n  repeats: [3]").encode(), "depth"),
    case("fractional-unique", SWEEP.replace("sharing: [4x3]", "unique: [2.5]\n  repeats: [3]").encode(), "unique"),
    case("bool-repeats", SWEEP.replace("sharing: [4x3]", "unique: [4]\n  repeats: [true]").encode(), "repeats"),
    case("zero-depth", SWEEP.replace("sharing: [4x3]", "depth: [0]\n  repeats: [3]").encode(), "depth"),
    case("inf", SWEEP.replace("[0.1]", "[.inf]").encode(), "mispredict"),
    case("nan", SWEEP.replace("[0.1]", "[.nan]").encode(), "mispredict"),
    case("quoted-nan", SWEEP.replace("[0.1]", "['nan']").encode(), "mispredict"),
    case("zero-out-len", SWEEP.replace("out_len: 3", "out_len: 0").encode(), "out_len"),
    case("fractional-out-len", SWEEP.replace("out_len: 3", "out_len: 2.5").encode(), "out_len"),
    case("bool-out-len", SWEEP.replace("out_len: 3", "out_len: true").encode(), "out_len"),
    case("string-out-len", SWEEP.replace("out_len: 3", "out_len: long").encode(), "out_len"),
    case("negative-seed", SWEEP.replace("out_len: 3", "out_len: 3, seed: -1").encode(), "seed"),
    case("huge-seqs", SWEEP.replace("out_len: 3", "out_len: 3, seqs: 1000000000000").encode(), "seqs"),
    case("zero-limit", SWEEP.replace("out_len: 3", "out_len: 3, limit: 0").encode(), "limit"),
    case("unknown-profile", SWEEP.replace("'@tiny-profile'", "nope").encode(), "profile"),
    case("unknown-model", SWEEP.replace("model: t5base", "model: nope").encode(), "model"),
    case("bad-sharing", SWEEP.replace("[4x3]", "[4x0]").encode(), "sharing"),
    case("huge-sharing", SWEEP.replace("[4x3]", "[100000x100000]").encode(), "sharing"),
    case("missing-trace", SWEEP.replace("mispredict: [0.1]", "trace: [/no/such.jsonl]").encode(), "trace"),
    case("agree-too-short", SWEEP.replace("mispredict: [0.1]", "agree: ['0.5']").encode(), "agree"),
    case("blocks-not-a-list", (SWEEP + "blocks: 3\n").encode(), "blocks"),
    case("run-not-a-mapping", b"name: t\nruns: [3]\n", "runs"),
    case("label-not-text", (SWEEP + "blocks:\n  - {label: 3, axes: {sharing: [2x6]}}\n").encode(), "label"),
    case("missing-model-spec", (SWEEP + "model_specs: [/no/such/spec.yaml]\n").encode(), "spec.yaml"),
    case("trace-with-synthetic-parameters", SWEEP.replace("mispredict: [0.1]", "trace: [4x3]").encode(), "out_len"),
    case("limit-without-trace", SWEEP.replace("out_len: 3", "out_len: 3, limit: 2").encode(), "limit"),
    case("launch-exit-beyond-r", SWEEP.replace("out_len: 3", "out_len: 3, launch_exit: 3").encode(), "launch_exit"),
    case("unknown-mode", SWEEP.replace("out_len: 3", "out_len: 3, mode: turbo").encode(), "mode"),
    case("unknown-baseline", SWEEP.replace("baselines: []", "baselines: [bogus]").encode(), "baselines"),
    case("quoted-inf-src-len", SWEEP.replace("out_len: 3", "out_len: 3, src_len: 'inf'").encode(), "src_len"),
    # empty text: an empty fit or agree silently meant a perfect model, an empty trace synthetic traces
    case("empty-fit", SWEEP.replace("mispredict: [0.1]", "fit: ['']").encode(), "fit"),
    case("empty-agree", SWEEP.replace("mispredict: [0.1]", "agree: ['']").encode(), "agree"),
    case("blank-trace", SWEEP.replace("mispredict: [0.1]", "trace: ['  ']").encode(), "trace"),
    # a ',' in fit or agree smuggled a parameter into the run's --synthetic text
    case("fit-with-a-comma", SWEEP.replace("mispredict: [0.1]", "fit: ['4x3,burst=0.9']").encode(), "fit"),
    case("missing-fit", SWEEP.replace("mispredict: [0.1]", "fit: [/no/such.jsonl]").encode(), "fit"),
    case("fit-of-other-repeats", SWEEP.replace("mispredict: [0.1]", "fit: [2x6]").encode(), "R=6"),
    case("fit-with-limit", SWEEP.replace("mispredict: [0.1]", "fit: [4x3]\n  limit: [2]").encode(), "limit"),
    case("fit-with-trace", SWEEP.replace("mispredict: [0.1]", "fit: [4x3]\n  trace: [4x3]").encode(), "fit"),
    case("burst-contradicts-miss-rate", SWEEP.replace("[0.1]", "[1.0]\n  burst: [0.0]").encode(), "burst"),
    case("one-token-outputs", SWEEP.replace("out_len: 3", "out_len: 1").encode(), "len=1"),
    case("text-bounds", SWEEP.replace("out_len: 3", "out_len: 3, bounds: 'yes'").encode(), "bounds"),
    # beyond int64: the results table could not hold it (a traceback after every run had run)
    case("huge-max-in-flight", SWEEP.replace("out_len: 3", "out_len: 3, max_in_flight: 100000000000000000000000")
         .encode(), "max_in_flight"),
]


@pytest.mark.parametrize("content, key", SWEEP_CASES)
def test_bad_sweep_spec(cli, tmp_path: Path, tiny_profile_file: str, content: bytes, key: str) -> None:
    """`sweep BAD.yaml`: exit 2, one line naming the file (or spec file) and the key; nothing is run."""
    path = tmp_path / "sweep.yaml"
    path.write_bytes(content.replace(HW.encode(), tiny_profile_file.encode()))
    out = tmp_path / "out"
    line = assert_bad(cli("sweep", str(path), "--out", str(out), "--workers", "1"), key)
    assert "sweep.yaml" in line or "spec.yaml" in line
    assert not (out / "runs.jsonl").exists() or not (out / "runs.jsonl").read_text()


def test_sweep_of_a_trace_with_nothing_to_decode(cli, tmp_path: Path, tiny_profile_file: str) -> None:
    """A trace whose sequences (or first `limit` of them) have one token each: refused when the sweep is
    planned, naming the key and the file, not found by a run after others have run."""
    trace = tmp_path / "one.jsonl"
    trace.write_text('{"version": 1, "seq_id": "a", "src_len": 4, "repeats": 3, "exits": [[1, 1, 1]]}\n'
                     '{"version": 1, "seq_id": "b", "src_len": 4, "repeats": 3, "exits": [[1, 1, 1], [2, 2, 2]]}\n')
    for limit, bad in ((1, True), (None, False)):
        spec = tmp_path / "sweep.yaml"
        spec.write_text(f"name: t\nfixed: {{model: t5base, profile: '{tiny_profile_file}', baselines: []}}\n"
                        f"runs:\n  - {{sharing: 4x3, trace: {trace}{f', limit: {limit}' if limit else ''}}}\n")
        res = cli("sweep", str(spec), "--out", str(tmp_path / f"out{limit}"), "--workers", "1")
        if bad:
            assert "one.jsonl" in assert_bad(res, "trace")
        else:
            assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_sweep_spec_that_is_not_a_file(cli, tmp_path: Path, fifo_reader, kind: str) -> None:
    """A sweep spec that does not exist, is a directory or a FIFO: one line naming it."""
    path = tmp_path / "sweep.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        path = fifo_reader("sweep.yaml", SWEEP.encode())
    assert_bad(cli("sweep", str(path), "--out", str(tmp_path / "out")), "sweep.yaml")


# ------------------------------------------------------------------------------ train config

TRAIN: dict[str, Any] = {
    "name": "tiny",
    "data": {"task": "summarize", "vocab_size": 320, "max_src_tokens": 48, "max_tgt_tokens": 40},
    "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "unique_layers": 2, "repeats": 2, "encoder_layers": 1,
              "max_len": 64},
    "pretrain": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2,
                 "prefix_tokens": 16, "target_tokens": 16},
    "finetune": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2},
    "eval": {"val_examples": 8, "rouge_examples": 3, "max_new_tokens": 6},
}
TRAIN_OWNER = "train"


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad config must fail before any stage starts: fail fast (not train) if one does."""
    import speedsim.train.loop as loop

    monkeypatch.setattr(loop, "_resume", _boom("training"))


TRAIN_CASES = [
    case("utf16", yaml.safe_dump(TRAIN).encode("utf-16"), "UTF-8"),
    case("binary", b"\x00\xff\x00", "tiny.yaml"),
    case("empty", b"", "mapping"),
    case("duplicate-key", (yaml.safe_dump(TRAIN) + "name: again\n").encode(), "name"),
    case("billion-laughs", LAUGHS, "aliases"),
    case("inf-lr", _set("pretrain.lr", float("inf")), "pretrain.lr"),
    case("quoted-inf-lr", _set("pretrain.lr", "inf"), "pretrain.lr"),
    case("nan-weight-decay", _set("finetune.weight_decay", float("nan")), "finetune.weight_decay"),
    case("zero-steps", _set("pretrain.steps", 0), "pretrain.steps"),
    case("fractional-steps", _set("pretrain.steps", 2.5), "pretrain.steps"),
    case("string-batch", _set("pretrain.batch_size", "many"), "pretrain.batch_size"),
    case("too-many-threads", _set("threads", 100000), "threads"),
    case("max-len-too-short", _set("model.max_len", 8), "max_len"),
    case("dropout-above-1", _set("model.dropout", 1.5), "dropout"),
    case("exit-weights-wrong-count", _set("model.exit_weights", [1.0]), "exit_weights"),
    case("negative-exit-weight", _set("model.exit_weights", [-1.0, 1.0]), "exit_weights"),
    case("heads-do-not-divide", _set("model.n_heads", 3), "n_heads"),
    case("unknown-model-field", _set("model.colour", 1), "colour"),
    case("unknown-section", _set("train", {"steps": 3}), "train"),
    case("unknown-task", _set("data.task", "translate"), "task"),
    case("task-contradicts-model", _set("data.task", "continue"), "task"),
    case("zero-repeats", _set("model.repeats", 0), "repeats"),
    case("missing-name", _drop("name"), "name"),
    case("no-stage", lambda c: (c.pop("pretrain"), c.pop("finetune")), "stage"),
    case("scratch-contradicts-pretrain", _set("finetune.from_scratch", True), "from_scratch"),
    case("zero-max-new-tokens", _set("eval.max_new_tokens", 0), "eval.max_new_tokens"),
    case("warmup-longer-than-stage", _set("pretrain.warmup_steps", 100), "warmup_steps"),
    case("bool-steps", _set("pretrain.steps", True), "pretrain.steps"),
    case("negative-seed", _set("seed", -1), "seed"),
    case("huge-width", _set("model.d_model", 10**12), "d_model"),
    case("null-encoder-layers", _set("model.encoder_layers", None), "encoder_layers"),
    case("text-encoder-layers", _set("model.encoder_layers", "two"), "encoder_layers"),
    case("missing-source-directory", _set("data.sources", ["/no/such/dir"]), "sources"),
    # finite but absurd rates: NaN losses and exit 0, as with lr: .inf
    case("huge-lr", _set("pretrain.lr", 1e308), "pretrain.lr"),
    case("huge-weight-decay", _set("finetune.weight_decay", 1e10), "finetune.weight_decay"),
    # layer_lr_scale: a fraction of the stage's lr, in (0, 1]
    case("zero-layer-lr-scale", _set("pretrain.layer_lr_scale", 0), "pretrain.layer_lr_scale"),
    case("layer-lr-scale-above-1", _set("finetune.layer_lr_scale", 3), "finetune.layer_lr_scale"),
    case("nan-layer-lr-scale", _set("pretrain.layer_lr_scale", float("nan")), "pretrain.layer_lr_scale"),
    case("text-layer-lr-scale", _set("pretrain.layer_lr_scale", "1/3"), "pretrain.layer_lr_scale"),
    case("layer-lr-scale-in-model", _set("model.layer_lr_scale", 0.5), "layer_lr_scale"),
    # empty text or list: silently the default (an empty cache_dir meant ~/.cache/speedsim)
    case("empty-cache-dir", _set("data.cache_dir", ""), "cache_dir"),
    case("empty-sources", _set("data.sources", []), "sources"),
    case("empty-name", _set("name", ""), "name"),
    # finetune.fixed_shape (pad every batch to one shape): a boolean of the finetune stage only
    case("text-fixed-shape", _set("finetune.fixed_shape", "yes"), "finetune.fixed_shape"),
    case("integer-fixed-shape", _set("finetune.fixed_shape", 1), "finetune.fixed_shape"),
    case("null-fixed-shape", _set("finetune.fixed_shape", None), "finetune.fixed_shape"),
    case("fixed-shape-in-pretrain", _set("pretrain.fixed_shape", True), "pretrain.fixed_shape"),
    # finetune.pad_multiple (a few shapes) and data.min_tgt_tokens (a task of longer outputs)
    case("zero-pad-multiple", _set("finetune.pad_multiple", 0), "finetune.pad_multiple"),
    case("pad-multiple-and-fixed-shape", lambda c: (_set("finetune.pad_multiple", 16)(c),
                                                    _set("finetune.fixed_shape", True)(c)), "pad_multiple"),
    case("pad-multiple-in-pretrain", _set("pretrain.pad_multiple", 16), "pretrain.pad_multiple"),
    case("negative-min-tgt-tokens", _set("data.min_tgt_tokens", -1), "data.min_tgt_tokens"),
    case("min-tgt-tokens-beyond-max", _set("data.min_tgt_tokens", 10**6), "data.min_tgt_tokens"),
]


@pytest.mark.parametrize("content, field", TRAIN_CASES)
def test_bad_train_config(cli, tmp_path: Path, no_training, content: bytes | Callable[[dict], Any],
                          field: str) -> None:
    """`train --config BAD.yaml`: exit 2, one line naming the file and field, before any training."""
    path = tmp_path / "tiny.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        data = copy.deepcopy(TRAIN)
        data["data"]["cache_dir"] = str(tmp_path / "cache")
        content(data)
        path.write_text(yaml.safe_dump(data))
    assert_bad(cli("train", "--config", str(path), "--out", str(tmp_path / "run")), "tiny.yaml", field)
    assert not (tmp_path / "run").exists()


def test_train_cache_dir_that_is_a_file(cli, tmp_path: Path, no_training) -> None:
    """`data.cache_dir` naming a regular file: refused with the config, naming the field."""
    (tmp_path / "afile").write_text("x")
    data = copy.deepcopy(TRAIN)
    data["data"]["cache_dir"] = str(tmp_path / "afile")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert_bad(cli("train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run")), "cache_dir")


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_train_config_that_is_not_a_file(cli, tmp_path: Path, fifo_reader, no_training, kind: str) -> None:
    """`train --config` that does not exist, is a directory or a FIFO: one line naming it."""
    path = tmp_path / "tiny.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        path = fifo_reader("tiny.yaml", yaml.safe_dump(TRAIN).encode())
    assert_bad(cli("train", "--config", str(path), "--out", str(tmp_path / "run")), "tiny.yaml")


# ------------------------------------------------------------------------------ checkpoint

@pytest.mark.parametrize("kind, name", [
    ("missing", "ck"), ("empty-directory", "ck"), ("garbage", "finetune.pt"), ("text-file", "ck.pt"),
    ("missing-fields", "ck.pt"), ("not-a-dict", "ck.pt"), ("wrong-format", "ck.pt"), ("stage-is-a-directory", "ck"),
])
def test_bad_checkpoint(cli, tmp_path: Path, kind: str, name: str) -> None:
    """`trace --checkpoint BAD`: exit 2, one line naming the run directory or file; nothing written."""
    import torch

    path = tmp_path / "ck"
    if kind == "empty-directory":
        path.mkdir()
    elif kind == "garbage":
        path.mkdir()
        (path / "finetune.pt").write_bytes(b"\x00garbage")
    elif kind == "stage-is-a-directory":
        (path / "finetune.pt").mkdir(parents=True)
    elif kind != "missing":
        path = tmp_path / "ck.pt"
        if kind == "text-file":
            path.write_text("not a checkpoint\n")
        else:
            obj = {"missing-fields": {"format": 2}, "not-a-dict": [1, 2]}.get(kind)
            if kind == "wrong-format":
                from speedsim.train.checkpoint import REQUIRED

                obj = {**dict.fromkeys(REQUIRED, 0), "format": 999}
            torch.save(obj, path)
    out = tmp_path / "t.jsonl"
    assert_bad(cli("trace", "--checkpoint", str(path), "--out", str(out)), name)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--max-new-tokens", "--limit"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_trace_counts_below_one(cli, tmp_path: Path, flag: str, value: str) -> None:
    """`trace --max-new-tokens 0` / `--limit 0`: refused (not silently the default), naming the flag."""
    assert_bad(cli("trace", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "t.jsonl"), flag, value), flag)


# ------------------------------------------------------------------------------ measure options

@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad measure options must fail before a model is built or anything is timed: fail fast if not."""
    import speedsim.validation.measure.run as run

    monkeypatch.setattr(run, "TimingLog", _boom("timing"))
    monkeypatch.setattr(run, "from_spec", _boom("building the model"))


MEASURE_OWNER = "validation (measure)"
MEASURE_CASES = [
    case("unknown-part", ("--parts", "bogus"), "--parts"),
    case("empty-parts", ("--parts", ","), "--parts"),
    case("zero-sharing", ("--sharings", "0x3"), "--sharings"),
    case("huge-sharing", ("--sharings", "100000x1"), "--sharings"),
    case("empty-sharing-item", ("--sharings", "4x3,,2x6"), "--sharings"),  # silently dropped
    case("empty-batch-item", ("--batch-sizes", "1,,4"), "--batch-sizes"),
    case("unknown-lm-head", ("--lm-head", "foo"), "--lm-head"),
    case("zero-batch", ("--batch-sizes", "0"), "--batch-sizes"),
    case("fractional-batch", ("--batch-sizes", "1.5"), "--batch-sizes"),
    case("text-batch-ctx", ("--batch-ctx", "abc"), "--batch-ctx"),
    case("unknown-model", ("--model", "nope"), "--model"),
    case("zero-sequences", ("--sequences", "0"), "--sequences"),
    case("checkpoint-and-config", ("--checkpoint", ".", "--config", "x.yaml"), "--config"),
    case("too-many-threads", ("--threads", "100000"), "--threads"),
    case("huge-batch-ctx", ("--batch-ctx", "1000000000", "--parts", "batch"), "--batch-ctx"),
    case("huge-batch", ("--batch-sizes", "100000000", "--parts", "batch"), "--batch-sizes"),
    case("huge-max-new-tokens", ("--max-new-tokens", "100000000"), "--max-new-tokens"),
    case("huge-sequences", ("--sequences", "100000000"), "--sequences"),
    # not `ops` alone: its rows went to m.ops.csv beside an empty m.csv
    case("part-twice", ("--parts", "ops,ops"), "--parts"),
]


@pytest.mark.parametrize("args, flag", MEASURE_CASES)
def test_bad_measure_option(cli, tmp_path: Path, no_measuring, args: tuple[str, ...], flag: str) -> None:
    """`measure` with a bad option: exit 2, one line naming the flag, before any model is built."""
    assert_bad(cli("measure", "--device", "cpu", "--quick", "--out", str(tmp_path / "m.csv"), *args), flag)
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("kind", ["config", "model-spec", "checkpoint"])
def test_measure_bad_input_files(cli, tmp_path: Path, no_measuring, kind: str) -> None:
    """`measure --config/--model-spec/--checkpoint` of a bad file: one line naming the file."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes("name: x\n".encode("utf-16"))
    if kind == "checkpoint":
        bad = tmp_path / "finetune.pt"
        bad.write_bytes(b"\x00garbage")
    assert_bad(cli("measure", "--device", "cpu", "--quick", "--out", str(tmp_path / "m.csv"), f"--{kind}",
                   str(tmp_path if kind == "checkpoint" else bad)), bad.name)


# ------------------------------------------------------------------------------ output paths

SIM_ARGS = ("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
            "--baseline", "none")


def _target(tmp_path: Path, fifo: Path, kind: str, name: str) -> Path:
    """An output path of `kind`: an existing directory, a FIFO, a path under a missing directory or under a file."""
    if kind == "directory":
        (tmp_path / name).mkdir()
        return tmp_path / name
    if kind == "fifo":
        return fifo
    if kind == "missing-parent":
        return tmp_path / "no" / "such" / name
    if kind == "link-to-fifo":
        (tmp_path / name).symlink_to(fifo)
        return tmp_path / name
    (tmp_path / "afile").write_text("mine\n")
    if kind == "someone-elses-file":  # a regular file, but not one this command writes
        return tmp_path / "afile"
    return tmp_path / "afile" / name


def _untouched(tmp_path: Path, fifo: Path) -> None:
    """Nothing was written: the FIFO is still a FIFO and no temporary file is left anywhere."""
    import stat

    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    if (tmp_path / "afile").exists():
        assert (tmp_path / "afile").read_text() == "mine\n"


OUTPUT_KINDS = ["directory", "fifo", "missing-parent", "under-a-file", "link-to-fifo", "someone-elses-file"]


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_timeline_output(cli, tmp_path: Path, fifo: Path, kind: str) -> None:
    """`simulate --timeline` to a directory, a special file or an impossible path: one line naming the flag."""
    assert_bad(cli(*SIM_ARGS, "--timeline", str(_target(tmp_path, fifo, kind, "tl.json"))), "--timeline")
    _untouched(tmp_path, fifo)


def test_timeline_replaces_an_earlier_timeline(cli, tmp_path: Path) -> None:
    """An output of the same kind (the last run's timeline) is replaced: the refusal is for other files."""
    out = tmp_path / "tl.json"
    for _ in range(2):
        assert cli(*SIM_ARGS, "--timeline", str(out)).returncode == 0
    assert json.loads(out.read_text())["traceEvents"]


def test_calibrate_output_that_is_its_input(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibrate --measured m.csv --out m.csv` would replace the measurements with a profile: refused."""
    import speedsim.validation.calibrate as calibrate

    monkeypatch.setattr(calibrate, "calibrate", _boom("the fit"))
    (tmp_path / "m.csv").write_text(HEADER + ROW)
    assert_bad(cli("calibrate", "--measured", str(tmp_path / "m.csv"), "--profile", HW, "--kernels", "none",
                   "--out", str(tmp_path / "m.csv")), "--out", "not a hardware profile")
    assert (tmp_path / "m.csv").read_text() == HEADER + ROW


def test_trace_output_in_the_checkpoint(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`trace --out RUN/finetune.pt` (the checkpoint it decodes with) or `RUN/metrics.json`: refused."""
    import speedsim.train as train

    monkeypatch.setattr(train, "record_traces", _boom("decoding"))
    (tmp_path / "finetune.pt").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)  # a zip, as torch.save writes
    (tmp_path / "metrics.json").write_text('{"steps": 3}\n')
    for name in ("finetune.pt", "metrics.json"):
        before = (tmp_path / name).read_bytes()
        assert_bad(cli("trace", "--checkpoint", str(tmp_path), "--out", str(tmp_path / name)), "--out",
                   "not an exit-trace file")
        assert (tmp_path / name).read_bytes() == before


def test_output_kinds_recognise_their_own_files_only(tmp_path: Path) -> None:
    """Each kind of output recognises the shipped files of its kind and none of the others' (nor
    text, binary data or a truncated gzip)."""
    import gzip

    from speedsim.engine.recorder import TIMELINE_FILE, TIMELINE_MARK
    from speedsim.hardware.files import PROFILE_FILE
    from speedsim.paths import H200_MEASURED, PROFILE_DIR, TRACE_DIR
    from speedsim.trace import ExitTrace
    from speedsim.trace.io import TRACE_FILE, write_traces
    from speedsim.validation.measure.run import ENV_FILE, SPEC_FILE
    from speedsim.validation.schema import MEASURED_CSV
    (tmp_path / "tl.json").write_text(json.dumps({**TIMELINE_MARK, "traceEvents": [], "displayTimeUnit": "ns"}))
    plain = tmp_path / "4x3.jsonl"
    plain.write_bytes(gzip.decompress((TRACE_DIR / "4x3.jsonl.gz").read_bytes()))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes((TRACE_DIR / "4x3.jsonl.gz").read_bytes()[:300])  # the head of a gzip: still a trace
    long = tmp_path / "long.jsonl.gz"  # a first record longer than the head read to recognise it
    write_traces(long, [ExitTrace(seq_id="s", src_len=1, repeats=12, exits=[[123456] * 12] * 1000)])
    write_traces(tmp_path / "none.jsonl.gz", [])  # no sequences: a gzip stream of nothing
    cpu = H200_MEASURED.parent.parent / "cpu-host"
    own = {TRACE_FILE: [TRACE_DIR / "4x3.jsonl.gz", plain, cut, long, tmp_path / "none.jsonl.gz",
                        cpu / "measured.traces.jsonl.gz"],
           PROFILE_FILE: [PROFILE_DIR / "h200.yaml"],
           MEASURED_CSV: [H200_MEASURED, cpu / "batch.csv"], TIMELINE_FILE: [tmp_path / "tl.json"],
           ENV_FILE: [cpu / "batch.env.yaml", cpu / "measured.env.yaml"],  # the latter from before `parts:`
           SPEC_FILE: [cpu / "batch.speed-4x3.yaml"]}
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + bytes(64))
    others = [tmp_path / "notes.txt", tmp_path / "blob.bin", tmp_path / "bad.gz"]
    for kind, files in own.items():
        for path in files:
            assert kind.recognise(path), (kind.name, path)
        for other_kind, other_files in own.items():
            for path in other_files if other_kind is not kind else []:
                assert not kind.holds(path), (kind.name, path)
        for path in others:
            assert not kind.holds(path), (kind.name, path)


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_calibrate_output(cli, tmp_path: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """`calibrate --out` that cannot be written is refused before the fit."""
    import speedsim.validation.calibrate as calibrate

    monkeypatch.setattr(calibrate, "calibrate", _boom("the fit"))
    (tmp_path / "m.csv").write_text(HEADER + ROW)
    assert_bad(cli("calibrate", "--measured", str(tmp_path / "m.csv"), "--profile", HW, "--kernels", "none",
                   "--out", str(_target(tmp_path, fifo, kind, "fitted.yaml"))), "--out")
    _untouched(tmp_path, fifo)


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_measure_output(cli, tmp_path: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """`measure --out` that cannot be written is refused before any timing."""
    import speedsim.validation.measure.run as run

    monkeypatch.setattr(run, "_base", _boom("measuring"))
    assert_bad(cli("measure", "--device", "cpu", "--quick", "--out", str(_target(tmp_path, fifo, kind, "m.csv"))),
               "--out")
    _untouched(tmp_path, fifo)


@pytest.mark.parametrize("name", ["m.batch.csv", "m.ops.csv", "m.env.yaml"])
@pytest.mark.parametrize("what", ["directory", "someone-elses-file"])
def test_measure_output_beside(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, what: str) -> None:
    """`measure --out m.csv` whose file beside it is a directory or a file it did not write: refused before
    any timing (a directory was refused when written, after minutes of timing; a user's file was replaced)."""
    import speedsim.validation.measure.run as run

    monkeypatch.setattr(run, "_base", _boom("measuring"))
    if what == "directory":
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_text("mine: 1\n")
    assert_bad(cli("measure", "--device", "cpu", "--quick", "--parts", "steps,batch,ops", "--out",
                   str(tmp_path / "m.csv")), "--out", name)
    assert not (tmp_path / "m.csv").exists()
    assert what == "directory" or (tmp_path / name).read_text() == "mine: 1\n"


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_trace_output(cli, tmp_path: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """`trace --out` that cannot be written is refused before decoding."""
    import speedsim.train as train

    monkeypatch.setattr(train, "record_traces", _boom("decoding"))
    assert_bad(cli("trace", "--checkpoint", str(tmp_path), "--out", str(_target(tmp_path, fifo, kind, "t.jsonl"))),
               "--out")
    _untouched(tmp_path, fifo)


@pytest.mark.parametrize("kind", ["file", "fifo", "under-a-file"])
def test_sweep_output(cli, tmp_path: Path, tiny_profile_file: str, fifo: Path, kind: str) -> None:
    """`sweep --out` that is a file, a special file or under a file: one line naming the flag."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace(HW, tiny_profile_file))
    out = {"file": tmp_path / "afile", "fifo": fifo, "under-a-file": tmp_path / "afile" / "out"}[kind]
    (tmp_path / "afile").write_text("mine\n")
    assert_bad(cli("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "1"), "--out")
    _untouched(tmp_path, fifo)


@pytest.mark.parametrize("name", ["runs.jsonl", ".lock", "results.csv", "spec.yaml"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_sweep_output_holding_a_special_file(cli, tmp_path: Path, tiny_profile_file: str, name: str,
                                             kind: str) -> None:
    """A sweep --out whose journal, lock, table or spec copy is a FIFO or a directory: refused (no hang, no
    traceback), and the special file is left alone."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace(HW, tiny_profile_file))
    out = tmp_path / "out"
    out.mkdir()
    if name != "runs.jsonl":
        (out / "runs.jsonl").write_text("")  # a sweep's directory, so the special file is what is refused
    if kind == "fifo":
        os.mkfifo(out / name)
    else:
        (out / name).mkdir()
    assert_bad(cli("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "1"), "--out", name)
    assert (out / name).is_dir() if kind == "directory" else (out / name).is_fifo()


@pytest.mark.parametrize("command", ["sweep", "report"])
def test_output_directory_of_someone_else(cli, tmp_path: Path, tiny_profile_file: str,
                                          monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """`sweep/report --out DIR` where DIR holds files that are not a sweep's or a report's: refused, not
    overwritten (a project's README.md, a results.csv of another tool)."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", _boom("the study"))
    (tmp_path / "s.yaml").write_text(SWEEP.replace(HW, tiny_profile_file))
    out = tmp_path / "project"
    out.mkdir()
    (out / "README.md").write_text("# my project\n")
    (out / "results.csv").write_text("mine\n")
    args = (str(tmp_path / "s.yaml"), "--out", str(out), "--workers", "1") if command == "sweep" else ("--out", str(out))
    assert_bad(cli(command, *args), "--out", "project")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "results.csv"]
    assert (out / "README.md").read_text() == "# my project\n"


@pytest.mark.parametrize("flag, kind", [("--out", "file"), ("--out", "fifo"), ("--out", "under-a-file"),
                                        ("--cache", "file")])
def test_report_output(cli, tmp_path: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch, flag: str,
                       kind: str) -> None:
    """`report --out FILE` (or `--cache FILE`) is refused before any sweep runs, not after minutes of work."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", _boom("the study"))
    (tmp_path / "afile").write_text("mine\n")
    target = {"file": tmp_path / "afile", "fifo": fifo, "under-a-file": tmp_path / "afile" / "r"}[kind]
    args = ["--out", str(target)] if flag == "--out" else ["--out", str(tmp_path / "r"), "--cache", str(target)]
    assert_bad(cli("report", *args), flag)
    _untouched(tmp_path, fifo)


@pytest.mark.parametrize("kind", [
    "file", "under-a-file",
])
def test_train_output_that_is_a_file(cli, tmp_path: Path, no_training, kind: str) -> None:
    """`train --out FILE` (or a path under a file): one line naming the flag."""
    (tmp_path / "afile").write_text("mine\n")
    data = copy.deepcopy(TRAIN)
    data["data"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "afile" if kind == "file" else tmp_path / "afile" / "run"
    assert_bad(cli("train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out)), "--out")
    assert (tmp_path / "afile").read_text() == "mine\n"


@pytest.mark.parametrize("files", [
    {".DS_Store": "x"},  # hidden files are not a run's or in its way
    {".finetune.pt.k2j3.tmp": "torn"},  # an interrupted checkpoint write
    {"metrics.json": '{"stages": {"finetune": 3}}\n', "tokenizer.json": '{"model": {"type": "BPE"}}\n'},  # checkpoints deleted
    {"finetune.pt": "a checkpoint, say", "notes.txt": "mine\n"},  # a run's directory, with the user's notes
])
def test_train_output_directory_that_is_a_runs(tmp_path: Path, files: dict[str, str]) -> None:
    """Directories a run may be written or resumed in are not refused (only the checks are run here)."""
    from speedsim.train.checkpoint import check_run_dir

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert check_run_dir(tmp_path) == tmp_path


def test_export_cut_short_is_an_export(tmp_path: Path) -> None:
    """An export interrupted before its manifest (copied last) is re-run into, not refused."""
    from speedsim.data.corpus import check_export_dir

    for name in ("documents.jsonl.xz", "tokenizer-v8192.json", ".summarize.jsonl.xz.x81k.tmp"):
        (tmp_path / name).write_text("")
    assert check_export_dir(tmp_path) == tmp_path
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(UserError, match="holds other files"):
        check_export_dir(tmp_path)


@pytest.mark.parametrize("files, flag", [
    ({"metrics.json": '{"mine": 1}\n', "tokenizer.json": "[1, 2]\n"}, "--out"),  # both were overwritten
    ({"notes.txt": "mine\n"}, "--out"),
    ({"finetune.pt": "a checkpoint, say", "metrics.json": "mine\n"}, "metrics.json"),  # a traceback after training
    ({"finetune.pt": "a checkpoint, say", "metrics.json": "[1]\n"}, "metrics.json"),
])
def test_train_output_directory_of_other_files(cli, tmp_path: Path, no_training, files: dict[str, str],
                                               flag: str) -> None:
    """`train --out DIR` where DIR holds files but no run (or a run whose metrics are not a JSON object):
    one line before any training, and every file left as it was."""
    data = copy.deepcopy(TRAIN)
    data["data"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    assert_bad(cli("train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out)), flag)
    assert {p.name: p.read_text() for p in out.iterdir()} == files


# ------------------------------------------------------------------------------ scheduler address

@pytest.mark.parametrize("address", ["notanaddress", "", "http://host:8786", "tcp://:8786", "tcp://host:99999",
                                     "tcp://host:0", "tcp://host", "host:port"])
def test_bad_scheduler_address(cli, tmp_path: Path, tiny_profile_file: str, address: str) -> None:
    """`sweep --scheduler` that is not a Dask address: one line naming the flag, before any run."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace(HW, tiny_profile_file))
    out = tmp_path / "out"
    assert_bad(cli("sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--scheduler", address), "--scheduler")
    assert not out.exists()


def test_report_bad_scheduler_address(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report --scheduler` that is not an address: one line, before the study runs."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", _boom("the study"))
    assert_bad(cli("report", "--out", str(tmp_path / "r"), "--scheduler", "notanaddress"), "--scheduler")


# ------------------------------------------------------------------------------ command-line flags

@pytest.mark.parametrize("args, flag", [
    (("sweep", "s.yaml", "--out", "o", "--workers", "0"), "--workers"),
    (("simulate", "--profile", HW), "--model"),
    (("simulate", "--colour", "blue"), "--colour"),
    (("simulate", *SIM_ARGS[1:], "--limit", "0"), "--limit"),
    (("simulate", *SIM_ARGS[1:], "--mode", "turbo"), "--mode"),
    (("validate", "--worst", "-1"), "--worst"),
    (("sweep", "s.yaml", "--out", "o", "--workers", "100000000000"), "--workers"),
    (("report", "--out", "r", "--workers", "100000000000"), "--workers"),
    (("simulate", *SIM_ARGS[1:], "--launch-exit", "3"), "--launch-exit"),
    (("simulate", *SIM_ARGS[1:], "--src-len", "1e3"), "--src-len"),
    # sources too long for the device's memory: the message named --model
    (("simulate", *SIM_ARGS[1:], "--src-len", "100000000"), "--src-len"),
    (("measure", "--device", "tpu", "--out", "m.csv"), "--device"),
    (("no-such-command",), "no-such-command"),
])
def test_bad_flags_one_line(cli, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], flag: str) -> None:
    """A bad flag (a value out of range, a missing or unknown option): one line naming the flag, exit 2."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", _boom("the study"))
    assert_bad(cli(*args), flag)


@pytest.mark.parametrize("args, flag", [
    (("--source", "/no/such/directory"), "--source"),
    (("--vocab-size", "10"), "--vocab-size"),
    pytest.param(("--vocab-size", "100000000000000000000"), "--vocab-size", id="vocab-beyond-int32"),  # a traceback
    # the BPE trainer allocated for it up front: the process aborted asking for 141 GB
    pytest.param(("--vocab-size", "2000000000"), "--vocab-size", id="vocab-beyond-what-bpe-can-allocate"),
    (("--export", "@a-file"), "--export"),
    pytest.param(("--export", "@a-file/export"), "--export", id="export-under-a-file"),
    pytest.param(("--export", "@a-dir"), "--export", id="export-to-a-directory-of-other-files"),  # overwrote them
])
def test_data_build_bad_options(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                flag: str) -> None:
    """`data build` with a missing source, a vocabulary too small or too large, an export path that is a file
    or a directory of someone else's files: one line, before the corpus is built."""
    import speedsim.data as data

    monkeypatch.setattr(data, "open_corpus", _boom("building the corpus"))
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "manifest.json").write_text('{"mine": true}\n')
    args = tuple(a.replace("@a-file", str(tmp_path / "afile")).replace("@a-dir", str(tmp_path / "adir")) for a in args)
    assert_bad(cli("data", "build", *args), flag)
    assert (tmp_path / "adir" / "manifest.json").read_text() == '{"mine": true}\n'


def test_data_build_vocab_cap_is_the_tokenizers() -> None:
    """The CLI's --vocab-size range (written out, so that --help needs no tokenizers import) is the BPE's."""
    from speedsim.cli import data_build_cmd
    from speedsim.data import MAX_VOCAB_SIZE

    (option,) = [p for p in data_build_cmd.params if p.name == "vocab_size"]
    assert option.type.max == MAX_VOCAB_SIZE


@pytest.mark.parametrize("what", ["empty-directory", "text-file", "directory-without-python"])
def test_data_build_source_without_python(cli, tmp_path: Path, what: str) -> None:
    """`data build --source` with nothing to read built an empty corpus with exit 0 (training then found
    0 examples): refused, naming the source."""
    src = tmp_path / "src"
    if what == "text-file":
        src.write_bytes(bytes(range(256)))
    else:
        src.mkdir()
        if what == "directory-without-python":
            (src / "notes.txt").write_text("mine\n")
    assert_bad(cli("data", "build", "--source", str(src)), "src", "Python source")


@pytest.mark.parametrize("target", ["a-file", "under-a-file"])
def test_cache_that_is_a_file(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """`$SPEEDSIM_CACHE` naming a file: one line naming the variable (it printed "corrupt; rebuilding", then
    a traceback)."""
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text('def f(x):\n    """Return x."""\n    return x\n')
    cache = tmp_path / "afile" if target == "a-file" else tmp_path / "afile" / "cache"
    monkeypatch.setenv("SPEEDSIM_CACHE", str(cache))
    monkeypatch.delenv("SPEEDSIM_CORPUS", raising=False)
    assert_bad(cli("data", "build", "--source", str(tmp_path / "src")), "$SPEEDSIM_CACHE")
    assert (tmp_path / "afile").read_text() == "mine\n"


# ====================================================================== fuzzing the readers

FUZZ = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["inf", "-inf", "nan", "1e999", "0", "-1", "2.5", "4x3", ""]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in nested dicts and lists (dict keys and list indices)."""
    out = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> dict:
    """`base` with one to three random edits: a value replaced, a key removed, or a key added."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            node[path[-1]] = draw(ANY_VALUE)
        elif action == "delete":
            del node[path[-1]]
        elif isinstance(node, dict):
            node[draw(st.text(min_size=1, max_size=5))] = draw(ANY_VALUE)
    return data


def _finite_everywhere(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_everywhere(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_finite_everywhere(v) for v in obj)
    return True


def _mapping_or_user_error(path: Path, data: bytes) -> None:
    """`read_mapping` of `data` gives a finite mapping or a `UserError`, nothing else."""
    from speedsim.yamlio import read_mapping

    path.write_bytes(data)
    try:
        result = read_mapping(path, "fuzz")
    except UserError:
        return
    assert isinstance(result, dict) and _finite_everywhere(result)


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_read_mapping_bytes(fuzz_dir: Path, data: bytes) -> None:
    """Random bytes as YAML: a finite mapping or a `UserError`, nothing else."""
    _mapping_or_user_error(fuzz_dir / "m.yaml", data)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("ab:{}[]-,.!&*#|>'\"\n 019eEinfa\t")), max_size=80))
def test_fuzz_read_mapping_yaml_like(fuzz_dir: Path, text: str) -> None:
    """YAML-ish text (anchors, flow mappings, tags, quotes): a finite mapping or a `UserError`."""
    _mapping_or_user_error(fuzz_dir / "m.yaml", text.encode())


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated(TINY_PROFILE).map(lambda d: yaml.safe_dump(d).encode())))
def test_fuzz_profile_reader(fuzz_dir: Path, data: bytes) -> None:
    """Random bytes or a mutated valid profile: a profile with finite numbers, or a `UserError`."""
    from speedsim.hardware import load_profile_file

    path = fuzz_dir / "p.yaml"
    path.write_bytes(data)
    try:
        profile = load_profile_file(path)
    except UserError:
        return
    assert _finite_everywhere(profile.model_dump())


MEASURED_CELLS = st.one_of(st.sampled_from(["", "0", "-1", "2.5", "1e30", "1e400", "inf", "nan", "NaN", "abc", "gemv",
                                            "eager", "graph", "W256MiB", '"', ",", "\n"]),
                           st.text(max_size=5))


@st.composite
def measured_csv(draw: st.DrawFn) -> bytes:
    """A valid measured CSV with random cells replaced (or random bytes)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    lines = [HEADER.rstrip("\n").split(","), ROW.rstrip("\n").split(",")]
    for _ in range(draw(st.integers(1, 4))):
        r = draw(st.integers(0, 1))
        lines[r][draw(st.integers(0, 11))] = draw(MEASURED_CELLS)
    return "".join(",".join(cells) + "\n" for cells in lines).encode()


@FUZZ
@given(data=measured_csv())
def test_fuzz_measured_reader(fuzz_dir: Path, data: bytes) -> None:
    """A mutated measured CSV: rows or a `UserError`, never another exception."""
    from speedsim.validation import read_measured

    path = fuzz_dir / "m.csv"
    path.write_bytes(data)
    try:
        rows = read_measured(path)
    except UserError:
        return
    assert all(isinstance(r.n, int) and r.n >= 0 for r in rows)


@st.composite
def trace_file(draw: st.DrawFn) -> bytes:
    """Random bytes, or JSON Lines of mutated valid records, or a valid record with a line of noise."""
    kind = draw(st.sampled_from(["bytes", "mutated", "noise"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "noise":
        return _lines(REC) + draw(st.text(max_size=30)).encode() + b"\n"
    records = draw(st.lists(mutated(REC), min_size=1, max_size=3))
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@FUZZ
@given(data=trace_file(), gz=st.booleans())
def test_fuzz_trace_reader(fuzz_dir: Path, data: bytes, gz: bool) -> None:
    """Random or mutated trace files (plain or gzip): valid traces or a `UserError`."""
    import gzip

    from speedsim.trace.io import read_traces

    path = fuzz_dir / ("t.jsonl.gz" if gz else "t.jsonl")
    path.write_bytes(gzip.compress(data, mtime=0) if gz and data[:1] != b"\x1f" else data)
    try:
        traces = read_traces(path)
    except UserError:
        return
    for tr in traces:
        assert all(len(row) == tr.repeats for row in tr.exits)
        assert all(0 <= tok <= 2**31 - 1 for row in tr.exits for tok in row)


SWEEP_BASE = yaml.safe_load(SWEEP)


@FUZZ
@given(data=st.one_of(st.binary(max_size=120), mutated(SWEEP_BASE).map(lambda d: yaml.safe_dump(d).encode())))
def test_fuzz_sweep_spec(fuzz_dir: Path, tiny_profile_file: str, data: bytes) -> None:
    """Random bytes or a mutated valid sweep spec through `load_spec` and `plan`: runs or a `UserError`."""
    from speedsim.sweep import load_spec, plan

    path = fuzz_dir / "s.yaml"
    path.write_bytes(data.replace(HW.encode(), tiny_profile_file.encode()))
    try:
        runs = plan(load_spec(path))
    except UserError:
        return
    assert runs and all(_finite_everywhere(r.model_dump()) for r in runs)


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.lists(st.sampled_from([
    "perfect", "mispredict=0.1", "agree=0.5/0.9", "agree=0.5/1/1", "len=4", "seqs=2", "src=8", "burst=0.5", "seed=3",
    "len=0", "mispredict=nan", "seed=-1", "agree=", "colour=1", "", "len=2.5", "burst=1e-9"]), max_size=4).map(",".join)),
       repeats=st.integers(1, 4))
def test_fuzz_synthetic_text(text: str, repeats: int) -> None:
    """The `--synthetic` text parser: a spec whose numbers are finite and in range, or a `UserError`."""
    from speedsim.trace.workload import parse_synthetic

    try:
        spec, seqs, seed = parse_synthetic(text, repeats)
    except UserError:
        return
    assert _finite_everywhere(spec.model_dump()) and len(spec.agreement) == repeats
    assert 1 <= seqs and 0 <= seed and all(n >= 1 for n in spec.lengths)


@FUZZ
@given(text=st.one_of(st.text(max_size=12), st.from_regex(r"\s*-?\d{1,6}\s*[xX*]\s*-?\d{1,6}\s*", fullmatch=True)))
def test_fuzz_sharing_text(text: str) -> None:
    """`UxR` text: a `Sharing` with 1 <= R <= 1024 and depth <= 4096, or a `UserError`."""
    from speedsim.sharing import MAX_DEPTH, MAX_REPEATS, Sharing

    try:
        shared = Sharing.parse(text)
    except UserError:
        return
    assert 1 <= shared.repeats <= MAX_REPEATS and 1 <= shared.unique and shared.depth <= MAX_DEPTH


# ====================================================================== strict JSON output

def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in --json output is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("args", [
    ("profiles", "--json"),
    ("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--synthetic",
     "mispredict=0.3,len=6,seqs=2", "--json"),
    ("simulate", "--profile", HW, "--model", "t5base", "--sharing", "2x6", "--synthetic", "perfect,len=4",
     "--baseline", "none", "--mode", "eager", "--json"),
    ("simulate", "--profile", HW, "--model", "t5base", "--sharing", "12x1", "--synthetic", "perfect,len=2",
     "--json"),
    ("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--synthetic", "mispredict=0.5,len=4",
     "--bounds", "--device-control", "--json"),
], ids=["profiles", "simulate", "simulate-eager", "simulate-r1", "simulate-bounds"])
def test_json_is_strict(cli, args: tuple[str, ...]) -> None:
    """`--json` prints one strictly valid JSON object (no NaN or Infinity) and nothing else on stdout."""
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert isinstance(_strict(res.stdout), dict)


def test_emit_json_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command prints --json through `emit_json`: NaN and infinities (numpy's too) become null,
    numpy integers stay integers, and anything else JSON lacks is a string, never a traceback."""
    import numpy as np

    from speedsim.console import emit_json

    emit_json({"nan": math.nan, "inf": [math.inf, -math.inf], "np_nan": np.float64("nan"), "f32": np.float32("inf"),
               "i64": np.int64(3), "flag": np.bool_(True), "array": np.array([1.0, np.nan]), "path": Path("/x"),
               "nested": {"t": (1.5, np.float16("-inf"))}})
    out = _strict(capsys.readouterr().out)
    assert out == {"nan": None, "inf": [None, None], "np_nan": None, "f32": None, "i64": 3, "flag": True,
                   "array": [1.0, None], "path": "/x", "nested": {"t": [1.5, None]}}


def test_json_is_strict_simulate_trace(cli, tmp_path: Path) -> None:
    """A trace whose only decoded token follows the prefill, and one that is empty: still strict JSON."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(_lines(REC, {**REC, "seq_id": "b", "exits": []}))
    res = cli("simulate", "--profile", HW, "--model", "t5base", "--sharing", "4x3", "--trace", str(path), "--json")
    assert res.returncode == 0, res.stderr
    assert isinstance(_strict(res.stdout), dict)


def test_json_is_strict_validate(cli, tmp_path: Path) -> None:
    """`validate --json` on rows with and without a measured time: strict JSON."""
    path = tmp_path / "m.csv"
    path.write_text(HEADER + ROW + ROW.replace("W256MiB,1,", "W256MiB,2,").replace("67.008", ""))
    res = cli("validate", "--measured", str(path), "--profile", HW, "--mode", "eager", "--json")
    assert res.returncode == 0, res.stderr
    assert isinstance(_strict(res.stdout), dict)


def test_json_is_strict_validate_kernels(cli, tmp_path: Path) -> None:
    """`validate --kernels --json` on a one-kernel profile: strict JSON."""
    path = tmp_path / "k.csv"
    path.write_text(KHEADER + KROW)
    res = cli("validate", "--kernels", str(path), "--profile", HW, "--json")
    assert res.returncode == 0, res.stderr
    assert isinstance(_strict(res.stdout), dict)


def test_json_is_strict_sweep(cli, tmp_path: Path, tiny_profile_file: str) -> None:
    """`sweep --json` on a tiny spec: strict JSON, and its results table has no infinite number."""
    (tmp_path / "s.yaml").write_text(SWEEP.replace(HW, tiny_profile_file))
    res = cli("sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--workers", "1", "--json")
    assert res.returncode == 0, res.stderr
    summary = _strict(res.stdout)
    assert summary["runs"] == 1 and summary["failed"] == 0
    for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines():
        _strict(line)
