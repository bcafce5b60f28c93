"""Sizes without bounds, numbers that are finite but not physical, and the paths validation reads
(issue 22): every way a size, a time or a path enters `speedsim validate` and `speedsim calibrate`.

The rules (`speedsim.limits`): a size is a whole number within `MAX_ROW_INTS` (n, ctx, L, R; an
`extra` size is held to the same numbers), 0 is refused where the scenario needs one; work that
would take longer than `MAX_SIM_SECONDS` to simulate is refused before it starts, with the estimate;
a measured time lies in [MIN_TIME_US, MAX_TIME_US]; a relative error is always a finite number.
A bad value exits 2 with one line naming the file and row; a good one gives a finite result, never
`inf`, `nan` or `null`.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_PROFILE, CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedsim.hardware import HardwareProfile
from speedsim.limits import (
    MAX_DECODE_TOKENS,
    MAX_ROW_INTS,
    MAX_SIM_SECONDS,
    MAX_TIME_US,
    MIN_TIME_US,
    Work,
    log_error,
    mean_error,
    relative_error,
)
from speedsim.sharing import MAX_DEPTH, MAX_REPEATS

HEADER = "section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
KHEADER = "scenario,kernel,calls_per_iter,device_us_per_iter\n"
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the tiny profile (conftest's TINY_PROFILE: no shipped profile involved)."""
    path = tmp_path_factory.mktemp("sizes")
    (path / "tiny.yaml").write_text(yaml.safe_dump(TINY_PROFILE, sort_keys=False))
    return path


def _no_constant(name: str) -> float:
    raise AssertionError(f"{name} in the JSON output")


def assert_bad(res: CliResult, *names: str) -> str:
    """Exit 2, one stderr line, no traceback, naming every one of `names`."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-1500:]
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(n in lines[0] for n in names), (names, lines[0])
    return lines[0]


def assert_finite_json(res: CliResult) -> dict:
    """Exit 0 and strict JSON whose every error figure is a finite number (no NaN, Infinity or null)."""
    assert res.returncode == 0, res.stderr[-1500:]
    data = json.loads(res.stdout, parse_constant=_no_constant)
    figures = [*data["mape"].values(), *(w["ape"] for w in data["worst"])]
    figures += [c["ape"] for c in data.get("cells", [])] + [s["ape"] for s in data.get("scenarios", [])]
    assert figures and all(isinstance(v, int | float) and math.isfinite(v) for v in figures), figures
    return data


def validate(work_dir: Path, content: str, *args: str, name: str = "bad.csv",
             flag: str = "--measured") -> CliResult:
    path = work_dir / name
    path.write_text(content)
    return run_cli("validate", flag, str(path), "--profile", str(work_dir / "tiny.yaml"), "--json", *args)


# ------------------------------------------------------------------------------------------ sizes

def around(limit: int) -> st.SearchStrategy[int]:
    """Sizes near 0, at and just beyond `limit`, and far beyond it."""
    return st.one_of(st.integers(0, 3), st.integers(limit - 2, limit + 2), st.integers(limit + 1, 10**30))


SCENARIOS = {"layer": "layer_t5base_n{}_ctx16", "pipelayer": "pipelayer_t5base_R{}_ctx16",
             "lmhead": "lmhead_t5base_n{}", "ctx": "layer_t5base_n2_ctx{}"}
SCENARIO_SIZE = {"layer": "n", "pipelayer": "R", "lmhead": "n", "ctx": "ctx"}


@FAST
@given(kind=st.sampled_from(sorted(SCENARIOS)), data=st.data())
def test_kernel_scenario_sizes(work_dir: Path, kind: str, data: st.DataObject) -> None:
    """A kernel profile's scenario name takes the measured CSV's limits: n or R in 1..MAX, ctx in
    0..MAX; beyond them (n=100000000 simulated 250 billion us) or a scenario of nothing (lmhead n0
    divided by zero): exit 2 naming the row and the size."""
    name = SCENARIO_SIZE[kind]
    limit = MAX_ROW_INTS[name]
    beyond = around(limit).filter(lambda v: v > limit)  # (R at the limit takes a second: a slow test)
    size = data.draw(around(limit) if kind != "pipelayer" else st.one_of(st.integers(0, 3), beyond))
    scenario = SCENARIOS[kind].format(size)
    res = validate(work_dir, KHEADER + f"{scenario},nvjet_gemm,2.0,6.31\n", name="k.csv", flag="--kernels")
    low = 0 if name == "ctx" else 1
    if low <= size <= limit:
        assert_finite_json(res)
    else:
        assert_bad(res, "k.csv:2", f"{name}=")


def test_kernel_scenario_of_thousands_of_digits(work_dir: Path) -> None:
    """A size of 5,000 digits (int() refuses to parse it): the row's error, not a traceback."""
    res = validate(work_dir, KHEADER + f"layer_t5base_n{'9' * 5000}_ctx1,nvjet_gemm,2.0,6.31\n", name="k.csv",
                   flag="--kernels")
    assert len(assert_bad(res, "k.csv:2", "n=")) < 300


LAYER = "layer,t5base,graph,multitoken,{n},{ctx},0,0,52,,,\n"
OP = "op,t5base,graph,attention,{n},16,0,0,50,,,queries={q}\n"
BATCH = "batch,t5base,graph,unshared,2,0,2,1,100,,,impl=static;cross={cross};lengths={a}/{b}\n"  # ctx 0: any
DECODE = "decode,t5base,graph,pipelined,8,0,4,3,10,,,trace=none.jsonl;{key}={value}\n"


@FAST
@given(column=st.sampled_from(["n", "ctx"]), data=st.data())
def test_measured_row_sizes(work_dir: Path, column: str, data: st.DataObject) -> None:
    """A measured row's n and ctx: whole numbers in [1 or 0, MAX]; else exit 2 naming the row."""
    limit = MAX_ROW_INTS[column]
    size = data.draw(around(limit))
    sizes = {"n": 1, "ctx": 16, column: size}
    res = validate(work_dir, HEADER + LAYER.format(**sizes))
    if (1 if column == "n" else 0) <= size <= limit:
        assert_finite_json(res)
    else:
        assert_bad(res, "bad.csv:2")


@FAST
@given(L=around(MAX_ROW_INTS["L"]), R=around(MAX_ROW_INTS["R"]))
def test_measured_group_sharing(work_dir: Path, L: int, R: int) -> None:
    """A group row's L x R: both >= 1 and a sharing a model can have (L = R = 4096 ran for minutes);
    what is left is simulated or refused for its work, with the estimate."""
    valid = 1 <= L and 1 <= R <= MAX_REPEATS and L * R <= MAX_DEPTH
    if valid and L * R > 64:  # thousands of layers: simulated for seconds (the slow test below)
        return
    res = validate(work_dir, HEADER + f"group,t5base,graph,sequential,1,16,{L},{R},200,,,\n")
    if valid:
        assert_finite_json(res)
    else:
        line = assert_bad(res, "bad.csv:2")
        assert f"{L}x{R}" in line or "L >= 1" in line or "is outside [0, 4096]" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("L, R", [(MAX_DEPTH, 1), (MAX_DEPTH // MAX_REPEATS, MAX_REPEATS)])
def test_measured_group_at_the_limit(work_dir: Path, L: int, R: int) -> None:
    """The deepest group a sharing allows is simulated within the budget: a finite result."""
    for pattern in ("sequential", "pipelined", "distinct"):
        assert_finite_json(validate(work_dir, HEADER + f"group,t5base,graph,{pattern},1,16,{L},{R},200,,,\n"))


@FAST
@given(field=st.sampled_from(["lengths", "cross", "queries"]), data=st.data())
def test_measured_extra_sizes(work_dir: Path, field: str, data: st.DataObject) -> None:
    """The sizes of `extra` (a batch row's lengths= and cross=, an op row's queries=) take the same limits."""
    if field == "queries":
        value = data.draw(around(MAX_ROW_INTS["n"]))
        content, ok = OP.format(n=1, q=value), 1 <= value <= MAX_ROW_INTS["n"]
    else:
        value = data.draw(around(MAX_ROW_INTS["ctx"]))
        sizes = {"cross": 64, "a": 30, "b": 22, ("a" if field == "lengths" else field): value}
        content = BATCH.format(**sizes)
        ok = (0 if field == "cross" else 1) <= value <= MAX_ROW_INTS["ctx"]
    res = validate(work_dir, HEADER + content)
    if ok:
        assert_finite_json(res)
    else:
        assert_bad(res, "bad.csv:2", f"{field}=")


@FAST
@given(key=st.sampled_from(["tokens", "kv_bucket"]), data=st.data())
def test_decode_extra_sizes(work_dir: Path, key: str, data: st.DataObject) -> None:
    """A decode row's `tokens=` and `kv_bucket=` are whole numbers in 1..their limit, checked when the
    file is read (whatever the mode), naming the row."""
    limit = MAX_DECODE_TOKENS if key == "tokens" else MAX_ROW_INTS["ctx"]
    value = data.draw(st.one_of(st.sampled_from(["0", "-1", "1.5", "²", "1e3", ""]), around(limit).filter(
        lambda v: not 1 <= v <= limit).map(str)))
    res = validate(work_dir, HEADER + DECODE.format(key=key, value=value), "--mode", "eager")
    assert_bad(res, "bad.csv:2", f"{key}=")


@pytest.mark.parametrize("row, name", [
    ("lmhead,t5base,graph,lmhead,0,0,0,0,14,,,\n", "n >= 1"),
    ("layer,t5base,graph,multitoken,0,16,0,0,52,,,\n", "n >= 1"),
    ("gemv,,graph,W16MiB,0,0,0,0,27,,,\n", "n >= 1"),
    ("group,t5base,graph,pipelined,1,16,0,3,52,,,\n", "L >= 1"),
    ("decode,t5base,eager,pipelined,8,0,4,0,10,,,trace=none.jsonl\n", "R >= 1"),
])
def test_zero_size_rows(work_dir: Path, row: str, name: str) -> None:
    """A scenario of nothing (n = 0 tokens, L or R = 0): refused naming the row, not simulated as 1."""
    assert_bad(validate(work_dir, HEADER + row), "bad.csv:2", name)


# ------------------------------------------------------------------------------------------- work

@FAST
@given(n=st.integers(3000, 20000), R=st.integers(64, 1024))
def test_work_beyond_the_budget_is_refused_with_its_estimate(work_dir: Path, n: int, R: int) -> None:
    """Sizes within their limits whose product is more work than a minute: refused before simulating,
    naming the row, with the estimate (a batch of n sequences at R repeats: n x R items per kernel)."""
    lengths = "/".join(["10"] * n)
    start = time.monotonic()
    res = validate(work_dir, HEADER + f"batch,t5base,graph,pipelined,{n},10,1,{R},200,,,"
                                      f"impl=static;cross=64;lengths={lengths}\n")
    line = assert_bad(res, "bad.csv:2", "kernels", "to simulate", "allowed")
    assert time.monotonic() - start < 10, "refused only after simulating"
    assert any(unit in line for unit in (" h,", "years", "min,")), line


def test_work_of_a_whole_file_is_refused_naming_it(work_dir: Path) -> None:
    """Rows each within the budget, together beyond it: refused naming the file (not a row)."""
    rows = "".join(f"group,t5base,graph,sequential,1,{16 + i},64,64,200,,,\n" for i in range(60))
    line = assert_bad(validate(work_dir, HEADER + rows), "bad.csv: 60 rows", "allowed")
    assert not re.search(r"bad\.csv:\d", line)


@pytest.mark.slow
def test_work_estimate_tracks_the_simulator(h200: HardwareProfile) -> None:
    """The estimate (`speedsim.limits` speeds) is honest: within a small factor of the time a simulation
    takes, for shapes of many kernels, many items per kernel and both."""
    from speedsim.engine import time_call
    from speedsim.workload import BUILTIN_MODELS, KernelRules
    from speedsim.workload.patterns import program_for_row, row_work

    rules = KernelRules.from_profile(h200)

    def row(section: str, pattern: str, n: int = 1, L: int = 0, R: int = 0, extra: str = "") -> dict:
        return {"section": section, "pattern": pattern, "n": n, "ctx": 512, "L": L, "R": R, "model": "t5base",
                "extra": extra}
    shapes = [row("group", "sequential", L=32, R=32), row("group", "distinct", L=32, R=32),
              row("group", "pipelined", L=2, R=1024),
              row("batch", "unshared", n=4096, L=1, R=1, extra="lengths=" + "/".join(["1000"] * 4096))]
    for r in shapes:
        estimate = (row_work(r, BUILTIN_MODELS, rules, "bf16") * 3).seconds
        start = time.perf_counter()
        time_call(h200, program_for_row(r, BUILTIN_MODELS, rules, "bf16", "x")[0], "graph")
        took = time.perf_counter() - start
        assert took < 3 * estimate + 0.5 and estimate < 30 * took + 0.5, \
            (r["section"], r["pattern"], took, estimate)


@pytest.mark.slow
@SLOW
@given(R=st.integers(4000, MAX_ROW_INTS["R"]), ctx=st.integers(0, 64))
def test_kernel_scenarios_at_the_limit(work_dir: Path, R: int, ctx: int) -> None:
    """At the limit, a pipelined layer of 4096 repeats is simulated: a finite result."""
    res = validate(work_dir, KHEADER + f"pipelayer_t5base_R{R}_ctx{ctx},nvjet_gemm,2.0,6.31\n", name="k.csv",
                   flag="--kernels")
    assert_finite_json(res)


# ------------------------------------------------------------------------------------------ times

def times() -> st.SearchStrategy[str]:
    """Times as text: subnormal, zero, sub-nanosecond, physical, huge, overflowing, not numbers."""
    return st.one_of(
        st.sampled_from(["5e-324", "1e-310", "0", "-0.0", "0.0", "1e-4", "0.000999", "0.001", "1e12",
                         "1.0000001e12", "1e300", "1e308", "1e400", "inf", "-inf", "nan", "-5", "", "fast"]),
        st.floats(min_value=0, max_value=1e-3, exclude_max=True).map(repr),
        st.floats(min_value=1e-3, max_value=1e6).map(repr),
        st.floats(min_value=1e12, max_value=1e308, exclude_min=True).map(repr),
    )


def _is_time(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return MIN_TIME_US <= value <= MAX_TIME_US


@FAST
@given(column=st.sampled_from(["us_median", "us_min", "us_max"]), value=times())
def test_measured_time_columns(work_dir: Path, column: str, value: str) -> None:
    """Every time column of a measured row: a measured time (1 ns to 11 days) or exit 2 naming the row
    and the column (5e-324 printed a MAPE of inf% with exit 0); the median within min..max."""
    cells = {"us_median": "27", "us_min": "1e-3", "us_max": "1e12", column: value}
    row = f"gemv,,graph,W16MiB,1,0,0,0,{cells['us_median']},{cells['us_min']},{cells['us_max']},\n"
    res = validate(work_dir, HEADER + row)
    if value == "":
        if column == "us_median":  # not measured: nothing to compare
            assert_bad(res, "bad.csv", "nothing to compare")
        else:
            assert_finite_json(res)
    elif not _is_time(value):
        assert_bad(res, "bad.csv:2", column)
    elif float(cells["us_min"]) <= float(cells["us_median"]) <= float(cells["us_max"]):
        assert_finite_json(res)
    else:
        assert_bad(res, "bad.csv:2", "outside the row's us_min..us_max")


@FAST
@given(key=st.sampled_from(["prefill_us_per_seq", "us_per_step", "replay_us_per_step", "host_us_per_step",
                            "us_per_token_no_prefill", "prefill_us"]), value=times())
def test_extra_time_fields(work_dir: Path, key: str, value: str) -> None:
    """A time in `extra` (a decode's components): the same floor and ceiling, whatever the row."""
    res = validate(work_dir, HEADER + f"gemv,,graph,W16MiB,1,0,0,0,27,,,{key}={value}\n")
    if _is_time(value):
        assert_finite_json(res)
    else:
        assert_bad(res, "bad.csv:2", f"{key}=")


@FAST
@given(value=times())
def test_kernel_csv_times(work_dir: Path, value: str) -> None:
    """A kernel profile's device time: the same floor and ceiling."""
    res = validate(work_dir, KHEADER + f"layer_t5base_n1_ctx16,nvjet_gemm,2.0,{value}\n", name="k.csv",
                   flag="--kernels")
    if _is_time(value):
        assert_finite_json(res)
    else:
        assert_bad(res, "k.csv:2", "device_us_per_iter")


@FAST
@given(value=times().filter(lambda v: not _is_time(v) and v != ""))
def test_calibrate_refuses_unphysical_times(work_dir: Path, value: str) -> None:
    """`calibrate` reads the same rows: an unphysical time is exit 2 naming the row (5e-324 crashed it),
    and no profile is written."""
    (work_dir / "m.csv").write_text(HEADER + f"gemv,,eager,W16MiB,1,0,0,0,{value},,,\n")
    out = work_dir / "fitted.yaml"
    res = run_cli("calibrate", "--measured", str(work_dir / "m.csv"), "--profile",
                  str(work_dir / "tiny.yaml"), "--kernels", "none", "--out", str(out))
    assert_bad(res, "m.csv:2", "us_median")
    assert not out.exists()


@given(measured=st.floats(allow_nan=True, allow_infinity=True),
       simulated=st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=200, deadline=None)
def test_relative_errors_are_finite(measured: float, simulated: float) -> None:
    """Every relative error, log error and mean of errors is a finite number, or a `UserError`."""
    from speedsim.errors import UserError

    for fn in (relative_error, log_error):
        try:
            value = fn(simulated, measured, "x.csv:2")
        except UserError as err:
            assert str(err).startswith("x.csv:2: ")
            continue
        assert math.isfinite(value)
        assert MIN_TIME_US <= measured < math.inf and math.isfinite(simulated)
        if fn is relative_error:
            assert math.isfinite(mean_error([value, value, 1e308 if value else 0.0]))


def test_work_counts() -> None:
    """`Work` adds and scales its counts, and its time follows them."""
    one = Work.layers(2, 10, 3, 4)
    assert (one.kernels, one.items, one.pairs) == (20, 24, 96)
    both = (one + one) * 3
    assert both.kernels == 120 and math.isclose(both.seconds, 6 * one.seconds)
    assert MAX_SIM_SECONDS > 0 and "kernels" in str(both)


# ------------------------------------------------------------------------------------------ paths

def components() -> st.SearchStrategy[str]:
    """Path components: too long, with odd characters, dots."""
    return st.one_of(st.integers(256, 400).map(lambda n: "a" * n), st.text(min_size=1, max_size=30).filter(
        lambda s: "/" not in s and "\x00" not in s and ";" not in s and "\n" not in s and "\r" not in s
        and s.strip() == s and "," not in s and '"' not in s), st.sampled_from([".", "..", "é" * 130]))


@FAST
@given(parts=st.lists(components(), min_size=1, max_size=3))
def test_decode_row_trace_paths(work_dir: Path, parts: list[str]) -> None:
    """A decode row's `trace=` goes through the one path resolver: a component over 255 bytes, a link
    loop, nothing there or a file that is no trace: one line naming the row, never a traceback."""
    (work_dir / "loop").unlink(missing_ok=True)
    os.symlink("loop", work_dir / "loop")
    name = "/".join(parts)
    res = validate(work_dir, HEADER + f"decode,t5base,eager,pipelined,8,0,4,3,10,,,trace={name}\n",
                   "--mode", "eager")
    assert_bad(res, "bad.csv:2")


@pytest.mark.parametrize("name, says", [
    ("loop", "link loop"), ("loop/x.jsonl", "link loop"), ("a" * 300, "255"), ("sub/" + "b" * 4100, "4,096"),
    ("/", "trace"), ("missing.jsonl", "not found"),
])
def test_decode_row_trace_path_cases(work_dir: Path, name: str, says: str) -> None:
    (work_dir / "loop").unlink(missing_ok=True)
    os.symlink("loop", work_dir / "loop")
    res = validate(work_dir, HEADER + f"decode,t5base,eager,pipelined,8,0,4,3,10,,,trace={name}\n",
                   "--mode", "eager")
    line = assert_bad(res, "bad.csv:2", says)
    assert len(line) < 400


def test_decode_row_trace_with_a_nul_byte(work_dir: Path) -> None:
    """A NUL byte in a row (a trace= name): the file is refused as binary, in one line naming it."""
    path = work_dir / "bad.csv"
    path.write_bytes((HEADER + "decode,t5base,eager,pipelined,8,0,4,3,10,,,trace=a\x00b\n").encode())
    assert_bad(run_cli("validate", "--measured", str(path), "--profile", str(work_dir / "tiny.yaml"),
                       "--mode", "eager"), "bad.csv", "NUL")


@pytest.mark.parametrize("command", ["validate-measured", "validate-kernels", "calibrate-measured",
                                     "calibrate-kernels"])
@pytest.mark.parametrize("name, says", [("loop", "link loop"), ("a\x00b", "NUL"), ("c" * 300, "255")])
def test_input_paths(work_dir: Path, command: str, name: str, says: str) -> None:
    """`--measured` and `--kernels` of validate and calibrate: a link loop (a traceback from resolve()),
    a NUL byte or a long component: one line."""
    (work_dir / "loop").unlink(missing_ok=True)
    os.symlink("loop", work_dir / "loop")
    (work_dir / "m.csv").write_text(HEADER + "gemv,,eager,W16MiB,1,0,0,0,27,,,\n")
    path = name if name.startswith("c") or "\x00" in name else str(work_dir / name)
    verb, what = command.split("-")
    args = [verb, f"--{what}", path, "--profile", str(work_dir / "tiny.yaml")]
    if verb == "calibrate":
        args += ["--out", str(work_dir / "f.yaml")]
        args += ["--kernels", "none"] if what == "measured" else ["--measured", str(work_dir / "m.csv")]
    assert_bad(run_cli(*args), says)
    assert not (work_dir / "f.yaml").exists()


def test_fit_loop_decode_row_of_an_unknown_model(work_dir: Path) -> None:
    """`calibrate --fit-loop` on a decode row of a model nobody defined: its row's error (a KeyError was
    a traceback)."""
    (work_dir / "x.jsonl").write_text("")
    (work_dir / "d.csv").write_text(HEADER + "decode,bogus,graph,pipelined,8,0,4,3,10,,,impl=static;trace=x.jsonl\n")
    res = run_cli("calibrate", "--measured", str(work_dir / "d.csv"), "--profile", str(work_dir / "tiny.yaml"),
                  "--fit-loop", "4x3", "--out", str(work_dir / "f.yaml"))
    assert_bad(res, "d.csv:2", "bogus")
    assert not (work_dir / "f.yaml").exists()
