"""Hostile input to `speedsim sweep` and `speedsim report` (issue 22), one section per class, each with a
property test generating members of the class:

1. paths: a malformed path (a component over 255 bytes, a NUL byte, a path over 4096 bytes, a name too
   long once a shipped file's suffix is added) in `--out`, `--cache` or a spec's `profile`, `trace`, `fit`,
   `model_specs` or `arrivals`: one line naming the flag, or the spec file and the field;
2. sizes: a spec whose axes multiply past `speedsim.limits.MAX_SWEEP_RUNS` is refused, with the count and
   the axes, before it is expanded; `profile: all` with no profile is refused naming the field;
3. files that are not ours: a sweep directory whose lock, journal or any file the sweep writes is a
   symbolic link is refused naming it, and the link's target is never touched;
4. addresses: a scheduler address of another scheme, a malformed one, or one where no scheduler answers is
   one line naming --scheduler (addresses that fail fast: no network is needed); a journal holding NaN,
   infinities, garbage or edited records resumes, dropping and reporting those lines, never writing NaN;
5. messages name what the user gave: `--cache` (not `--out`) for the report's sweep directories, the
   spec's `model_specs` (not `--model-spec`), a run's field (not a `simulate` flag) in its error row.

Every case exits 2 with ONE line on stderr, `speedsim: error: WHERE: message`, and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_PROFILE, CliResult, run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from speedsim.errors import UserError
from speedsim.limits import MAX_SWEEP_RUNS

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A profile file of round numbers (conftest's TINY_PROFILE): cases do not depend on the shipped ones."""
    path = tmp_path_factory.mktemp("hw") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_PROFILE, sort_keys=False))
    return str(path)


def decode_spec(profile: str, **top: Any) -> dict[str, Any]:
    """A one-run decode sweep on `profile` (synthetic traces of 3 tokens), with `top` keys replaced."""
    return {"name": "t", "fixed": {"model": "t5base", "profile": profile, "out_len": 3, "baselines": []},
            "axes": {"sharing": ["4x3"], "mispredict": [0.1]}, **top}


def write(directory: Path, spec: dict[str, Any], name: str = "s.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fresh(tmp_path: Path) -> Path:
    """A new directory under `tmp_path` (one per hypothesis example: the fixture's is shared)."""
    path = tmp_path / uuid.uuid4().hex[:12]
    path.mkdir()
    return path


def assert_bad(res: CliResult, *names: str) -> str:
    """Exit 2, exactly one stderr line starting `speedsim: error: `, no traceback, naming every `names`."""
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("speedsim: error: "), lines[0]
    missing = [name for name in names if name not in lines[0]]
    assert not missing, (missing, lines[0])
    for word in ("nan", "inf", "null"):
        assert f" {word} " not in f" {lines[0].lower()} ", lines[0]
    return lines[0]


def boom(what: str) -> Callable[..., Any]:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise AssertionError(f"{what} started: the bad input was not refused up front")
    return fail


def sweep(spec: Path, out: Path | str, *extra: str) -> CliResult:
    return run_cli("sweep", str(spec), "--out", str(out), "--workers", "1", *extra)


# ------------------------------------------------------------------------------------------ 1. paths

# paths no file system takes: a component over NAME_MAX, a NUL byte, a path over PATH_MAX bytes
long_component = st.integers(256, 600).map(lambda n: "c" * n)
bad_paths = st.one_of(
    st.just(""),
    long_component,
    st.tuples(st.sampled_from(["", "d/", "/tmp/", "../"]), long_component,
              st.sampled_from(["", ".yaml", ".jsonl", "/x"])).map("".join),
    st.tuples(st.text(string.ascii_letters, max_size=8), st.text(string.ascii_letters, max_size=8)).map(
        lambda ab: f"{ab[0]}\x00{ab[1]}.yaml"),
    st.integers(21, 40).map(lambda n: "/".join(["p" * 200] * n)),  # 4,220 bytes and more
)
# names a shipped file's suffix (`.yaml`, `.jsonl.gz`) makes too long for the file system
suffixed_names = st.integers(247, 255).map(lambda n: "n" * n)
PATH_FIELDS = ["profile", "trace", "fit", "model_specs", "arrivals"]


def spec_with_path(profile: str, field: str, value: str) -> dict[str, Any]:
    """A valid spec but for `value` in `field` (a file name of that field)."""
    spec = decode_spec(profile)
    if field == "profile":
        spec["fixed"]["profile"] = value
    elif field == "trace":  # a trace run takes no synthetic parameters
        spec["fixed"] = {"model": "t5base", "profile": profile, "baselines": []}
        spec["axes"] = {"sharing": ["4x3"], "trace": [value]}
    elif field == "fit":
        spec["axes"] = {"sharing": ["4x3"], "fit": [value]}
    elif field == "model_specs":
        spec["model_specs"] = [value]
    else:  # a serving run's arrival times
        spec["fixed"] = {"model": "t5base", "profile": profile, "sharing": "4x3", "requests": 2, "out_len": 3,
                         "mispredict": 0.1}
        spec["axes"] = {"arrivals": [f"trace:{value}"]}
    return spec


@FAST
@given(field=st.sampled_from(PATH_FIELDS), value=st.one_of(bad_paths, suffixed_names))
@example(field="trace", value="t" * 300)
@example(field="profile", value="p" * 300 + ".yaml")
@example(field="model_specs", value="a\x00b.yaml")
@example(field="trace", value="t" * 250)  # fine alone, 259 bytes as experiments/traces/NAME.jsonl.gz
def test_bad_path_in_a_spec_field(tmp_path: Path, tiny: str, field: str, value: str) -> None:
    """A file name in a spec field that cannot name a file: one line naming the spec file and the field,
    before any run (no output directory is made)."""
    work = fresh(tmp_path)
    spec = write(work, spec_with_path(tiny, field, value))
    line = assert_bad(sweep(spec, work / "out"), "s.yaml", f"'{field}'")
    assert f"field '{field}'" in line, line
    assert not (work / "out").exists()


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_long_component_in_a_spec_field_names_the_field(tmp_path: Path, tiny: str, field: str) -> None:
    """The issue's case: a 300-character component (OSError errno 36 before) in each field."""
    spec = write(tmp_path, spec_with_path(tiny, field, "x" * 300))
    assert_bad(sweep(spec, tmp_path / "out"), f"s.yaml: field '{field}'", "300 bytes")


@FAST
@given(flag=st.sampled_from(["sweep --out", "sweep SPEC_FILE", "report --out", "report --cache"]), value=bad_paths)
@example(flag="report --cache", value="c" * 300)
@example(flag="report --cache", value="")  # '' was no cache at all: a temporary directory, silently
@example(flag="sweep SPEC_FILE", value="")  # '' was read as '.', "it is a directory"
def test_bad_path_in_a_flag(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch, flag: str,
                            value: str) -> None:
    """`sweep --out`, `sweep SPEC_FILE`, `report --out`, `report --cache` that cannot name a file: one line
    naming the flag (a spec file: the path, or SPEC_FILE when it is empty), before any sweep runs."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", boom("the study"))
    work = fresh(tmp_path)
    monkeypatch.chdir(work)  # a relative path that is accepted by mistake lands here, not in the checkout
    command, name = flag.split()
    if name == "SPEC_FILE":
        res = run_cli("sweep", value, "--out", str(work / "r"))
        name = "SPEC_FILE" if not value else ""
    elif command == "sweep":
        res = sweep(write(work, decode_spec(tiny)), value)
    elif name == "--out":
        res = run_cli("report", "--out", value)
    else:
        res = run_cli("report", "--out", str(work / "r"), "--cache", value)
    assert_bad(res, name)
    assert not (work / "r").exists()


# ------------------------------------------------------------------------------------------ 2. sizes

def _axes_spec(profile: str, a: int, b: int, c: int) -> dict[str, Any]:
    return {"name": "big", "fixed": {"model": "t5base", "profile": profile, "sharing": "4x3", "baselines": []},
            "axes": {"seed": list(range(a)), "src_len": list(range(1, b + 1)), "out_len": list(range(1, c + 1))}}


@FAST
@given(a=st.integers(10, 1000), b=st.integers(10, 1000), delta=st.integers(-3, 3))
@example(a=400, b=200, delta=0)
def test_axes_around_the_run_limit(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch, a: int, b: int,
                                   delta: int) -> None:
    """Axes whose product is just under, at or over MAX_SWEEP_RUNS: counted from their lengths without
    expanding; over the limit, one line naming the spec with the count and each axis's length."""
    from speedsim.sweep import spec as spec_module
    from speedsim.sweep.spec import count_runs, load_spec

    c = max(1, MAX_SWEEP_RUNS // (a * b) + delta)
    total = a * b * c
    path = write(fresh(tmp_path), _axes_spec(tiny, a, b, c))
    monkeypatch.setattr(spec_module, "_expand_block", boom("expanding the spec"))
    if total > MAX_SWEEP_RUNS:
        line = assert_bad(sweep(path, path.parent / "out"), "s.yaml", f"{total:,} runs", f"{MAX_SWEEP_RUNS:,}",
                          f"seed {a:,}", f"src_len {b:,}", f"out_len {c:,}")
        assert line.startswith(f"speedsim: error: {path}: ")
        assert not (path.parent / "out").exists()
    else:
        assert count_runs(load_spec(path), str(path)) == total


@FAST
@given(axes=st.lists(st.integers(1, 4), min_size=1, max_size=3), runs=st.integers(0, 3),
       all_profiles=st.booleans(), blocks=st.integers(0, 2))
def test_count_is_the_number_of_runs(tiny: str, axes: list[int], runs: int, all_profiles: bool,
                                     blocks: int) -> None:
    """On specs with no duplicate runs, the count made before expanding is the number of runs expanded
    (axes multiply, explicit runs add, `profile: all` is every shipped profile)."""
    from speedsim.sweep.spec import SweepSpec, count_runs, expand, shipped_profiles

    names = ["seed", "src_len", "out_len"][:len(axes)]
    block_axes: dict[str, list[Any]] = {n: list(range(1, k + 1)) for n, k in zip(names, axes, strict=True)}
    if all_profiles:
        block_axes["profile"] = ["all", tiny]
    block = {"axes": block_axes, "runs": [{"seed": 1000 + j} for j in range(runs)]}
    data: dict[str, Any] = {"name": "n", "fixed": {"model": "t5base", "profile": tiny, "sharing": "4x3"}}
    if blocks:
        data["blocks"] = [{**block, "label": f"b{i}"} for i in range(blocks)]
    else:
        data.update(block)
    spec = SweepSpec.model_validate(data)
    expected = 1
    for k in axes:
        expected *= k
    expected = ((expected * (len(shipped_profiles()) + 1) if all_profiles else expected) + runs) * max(blocks, 1)
    assert count_runs(spec) == expected == len(expand(spec))


@pytest.mark.parametrize("where, field", [
    ("axes", "axes.profile"), ("fixed", "fixed.profile"), ("runs", "runs[0].profile"),
    ("block", "blocks[0].axes.profile"), ("bundle", "axes.configs[0].profile"),
])
def test_profile_all_with_no_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                                      field: str) -> None:
    """`profile: all` with no profile ($SPEEDSIM_PROFILES an empty directory) gave a sweep of 0 runs and
    exit 0: refused, naming the field and the directory, and nothing is written."""
    import speedsim.hardware.files as files

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SPEEDSIM_PROFILES", str(empty))
    monkeypatch.setattr(files, "PROFILE_DIR", empty)
    fixed: dict[str, Any] = {"model": "t5base", "sharing": "4x3", "out_len": 3}
    cases: dict[str, dict[str, Any]] = {
        "axes": {"name": "a", "fixed": fixed, "axes": {"profile": ["all"]}},
        "fixed": {"name": "a", "fixed": {**fixed, "profile": "all"}, "axes": {"mispredict": [0.1]}},
        "runs": {"name": "a", "fixed": fixed, "runs": [{"profile": "all"}]},
        "block": {"name": "a", "fixed": fixed, "blocks": [{"axes": {"profile": ["all"]}}]},
        "bundle": {"name": "a", "fixed": fixed, "axes": {"configs": [{"profile": "all", "mispredict": 0.1}]}},
    }
    path = write(tmp_path, cases[where])
    assert_bad(sweep(path, tmp_path / "out"), f"s.yaml: field '{field}'", "no *.yaml profiles", str(empty))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ 3. links

OWN_FILES = [".lock", "runs.jsonl", "results.csv", "results.parquet", "inputs.json", "spec.yaml"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny: str) -> tuple[Path, Path]:
    """(spec, directory) of a finished two-run sweep, to copy (not to change)."""
    base = tmp_path_factory.mktemp("finished")
    spec = decode_spec(tiny)
    spec["axes"]["mispredict"] = [0.1, 0.2]
    path = write(base, spec)
    res = sweep(path, base / "out")
    assert res.returncode == 0, res.stderr
    return path, base / "out"


@FAST
@given(name=st.sampled_from(OWN_FILES), target=st.sampled_from(["file", "dangling", "directory", "loop"]),
       state=st.sampled_from(["finished", "new"]))
def test_symlinked_own_file_is_refused(tmp_path: Path, finished: tuple[Path, Path], name: str, target: str,
                                       state: str) -> None:
    """A sweep directory whose lock, journal, table, inputs record or spec copy is a symbolic link (to someone's
    file, to nothing, to a directory, to itself) is refused in one line naming it; the link stays a link
    and what it points at is untouched (exit 0 before, writing the pid into the link's target)."""
    spec, template = finished
    work = fresh(tmp_path)
    out = work / "out"
    if state == "finished":
        shutil.copytree(template, out)
        (out / name).unlink()
    else:
        out.mkdir()
    victim = work / "victim"
    victim.write_text("precious\n")
    (work / "victim-dir").mkdir()
    link_to = {"file": victim, "dangling": work / "nothing", "directory": work / "victim-dir",
               "loop": out / name}[target]
    (out / name).symlink_to(link_to)
    assert_bad(sweep(spec, out), "--out", f"out/{name}", "symbolic link")
    assert (out / name).is_symlink() and os.readlink(out / name) == str(link_to)
    assert victim.read_text() == "precious\n" and not any((work / "victim-dir").iterdir())
    assert not (work / "nothing").exists()


def test_store_opens_its_own_files_without_following_links(tmp_path: Path) -> None:
    """The lock and journal are opened with O_NOFOLLOW: a link put there after the directory was checked
    is refused, not followed."""
    from speedsim.sweep.store import _open_own

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match=r"--out: .*\.lock is a symbolic link"):
        _open_own(tmp_path / ".lock", os.O_RDWR | os.O_CREAT, "r+", "--out")
    assert victim.read_text() == "precious\n"


# ------------------------------------------------------------------------------------------ 4. addresses

SCHEMES = ["tcp", "ws", "tls", "wss", "ucx", "inproc", "http", "udp", "TCP", ""]
hosts = st.one_of(st.sampled_from(["127.0.0.1", "localhost", "sched-1.example.org", "[::1]", "", "-", "a_b",
                                   "héllo", "[zz]", "[::1", "a..b", "a.", "h" * 64]),
                  st.text(st.characters(blacklist_characters=":/[]"), max_size=12))
ports = st.one_of(st.integers(-5, 70_000).map(str), st.text(st.characters(blacklist_characters=":/"), max_size=6),
                  st.none())


def _valid(scheme: str, host: str, port: str | None) -> bool:
    """The rule, independently: scheme tcp, ws or none; a DNS name, IPv4 or bracketed IPv6; port 1..65535."""
    import ipaddress
    import re

    if scheme.lower() not in ("tcp", "ws", ""):
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    elif not (len(host) <= 253 and all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label)
                                       for label in host.split("."))):
        return False
    return port is not None and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


@FAST
@given(scheme=st.sampled_from(SCHEMES), host=hosts, port=ports)
@example(scheme="tls", host="127.0.0.1", port="1")
@example(scheme="ucx", host="127.0.0.1", port="1")
@example(scheme="tcp", host="a\nb", port="1")
def test_scheduler_address_rule(scheme: str, host: str, port: str | None) -> None:
    """`check_scheduler` accepts exactly the addresses of the rule (tcp:// or ws://, or no scheme; a host
    name or IP address; a port in 1..65535) and refuses any other in one line naming --scheduler."""
    from speedsim.sweep.runner import check_scheduler

    address = (f"{scheme}://" if scheme else "") + host + (f":{port}" if port is not None else "")
    if scheme == "inproc":
        return  # a scheduler in this process (a library caller's LocalCluster): whatever Dask names it
    try:
        assert check_scheduler(address) == address
        accepted = True
    except UserError as err:
        accepted = False
        assert str(err).startswith("--scheduler: ") and "\n" not in str(err), str(err)
    assert accepted == _valid(scheme, host, port), address


@FAST
@given(text=st.text(max_size=40))
def test_any_scheduler_text_is_an_address_or_one_line(text: str) -> None:
    from speedsim.sweep.runner import check_scheduler

    try:
        check_scheduler(text)
    except UserError as err:
        assert str(err).startswith("--scheduler: ") and "\n" not in str(err) and "\r" not in str(err)


@FAST
@given(scheme=st.sampled_from(["tls", "wss", "ucx", "http", "udp", "ftp"]))
def test_unsupported_scheme_is_refused_before_anything(tmp_path: Path, tiny: str, scheme: str) -> None:
    """`--scheduler tls://...` or `ucx://...` gave a traceback: one line naming the flag and the scheme,
    and no output directory."""
    work = fresh(tmp_path)
    assert_bad(sweep(write(work, decode_spec(tiny)), work / "out", "--scheduler", f"{scheme}://127.0.0.1:1"),
               "--scheduler", f"{scheme}://", "tcp://")
    assert not (work / "out").exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "127.0.0.1:1", "ws://127.0.0.1:1", "inproc://nobody"])
def test_no_scheduler_there_is_one_line(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch,
                                        address: str) -> None:
    """An address where no scheduler answers (port 1 here, or an in-process name that is none): one line
    naming --scheduler after a short timeout, and no output directory."""
    from speedsim.sweep import runner

    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT_S", 0.2)
    assert_bad(sweep(write(tmp_path, decode_spec(tiny)), tmp_path / "out", "--scheduler", address),
               "--scheduler", "cannot reach")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["tls://127.0.0.1:1", "ucx://127.0.0.1:1", "tcp://127.0.0.1:1"])
def test_report_scheduler(tmp_path: Path, tiny: str, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """`report --scheduler`: an unsupported scheme before the study; no scheduler there, when the study's
    first sweep connects; one line naming the flag either way."""
    import speedsim.report.build as build
    from speedsim.sweep import runner

    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT_S", 0.2)
    monkeypatch.setattr(build, "DEFAULT_STUDY", (write(tmp_path, decode_spec(tiny)),))
    monkeypatch.setattr(build, "run_paper", boom("the paper sweep"))
    if not address.startswith("tcp"):
        monkeypatch.setattr(build, "run_study", boom("the study"))
    assert_bad(run_cli("report", "--out", str(tmp_path / "r"), "--scheduler", address), "--scheduler")


# ------------------------------------------------------------------------------------------ 4. journals

def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} written into JSON")
    return json.loads(text, parse_constant=refuse)


def _mutations(record: dict[str, Any]) -> st.SearchStrategy[str]:
    """Lines made from a valid record: a number made NaN or infinite, out of range, nested, a wrong key,
    status or label, another parameter's kind (valid: a column of mixed kinds), no rows."""
    row = record["rows"][0]
    numbers = sorted(k for k, v in row.items() if isinstance(v, float))

    def edit(field: str, value: Any) -> str:
        rows = [dict(r) for r in record["rows"]]
        rows[0][field] = value
        return json.dumps({"key": record["key"], "rows": rows}, allow_nan=True)

    return st.one_of(
        st.tuples(st.sampled_from(numbers), st.sampled_from([float("nan"), float("inf"), float("-inf")])).map(
            lambda fv: edit(*fv)),
        st.sampled_from(numbers).map(lambda f: edit(f, 10 ** 30)),
        st.sampled_from(numbers).map(lambda f: edit(f, "1e400")).map(lambda s: s.replace('"1e400"', "1e400")),
        st.sampled_from(numbers).map(lambda f: edit(f, [1, 2])),
        st.just(edit("run_key", "0000000000000000")),
        st.just(edit("status", "weird")),
        st.just(edit("label", 5)),
        st.just(edit("profile", 5)),  # valid: the table shows the column as text
        st.just(json.dumps({"key": record["key"], "rows": []})),
    )


garbage = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), max_size=30),
    st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                 max_leaves=6).map(lambda v: json.dumps(v, allow_nan=True)),
    st.just('{"key": "k", "rows": [{"run_'),
)


def _sweeps_line(line: str) -> bool:
    """A line that was a sweep's record (valid or not), by the rule of `store._sweeps_line`, restated."""
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("key"), str) and isinstance(value.get("rows"), list)


@pytest.mark.slow
@FAST
@given(data=st.data())
def test_journal_with_bad_lines_resumes(tmp_path: Path, finished: tuple[Path, Path], data: st.DataObject) -> None:
    """A journal mixing valid records, NaN/infinite/out-of-range numbers, edited records and garbage: the
    valid records are kept (a retried run's last wins), every other line is dropped and reported by number,
    the journal is rewritten as strict JSON (no NaN), and the table is built; a file of that name holding no
    sweep's line at all is another tool's, refused naming --out."""
    from speedsim.sweep import ResultStore, read_results

    _, template = finished
    valid = [json.loads(line) for line in (template / "runs.jsonl").read_text().splitlines()]
    kinds = st.one_of(st.sampled_from(range(len(valid))), _mutations(valid[0]), _mutations(valid[1]), garbage)
    lines = data.draw(st.lists(kinds, min_size=1, max_size=8))
    text = "".join((json.dumps(valid[x]) if isinstance(x, int) else x) + "\n" for x in lines)
    torn = data.draw(st.booleans())
    if torn:
        text += '{"key": "torn", "ro'
    out = fresh(tmp_path) / "out"
    shutil.copytree(template, out)
    (out / "runs.jsonl").write_text(text)
    good = {i + 1 for i, x in enumerate(lines) if isinstance(x, int) or "profile\": 5" in x and "NaN" not in x}
    expect_keys = {valid[x]["key"] for x in lines if isinstance(x, int)} | \
                  {json.loads(x)["key"] for x in lines if not isinstance(x, int) and "profile\": 5" in x}
    ours = any(_sweeps_line(x if not isinstance(x, int) else json.dumps(valid[x])) for x in lines)
    if not ours:
        with pytest.raises(UserError, match="--out: .*not a sweep's output"):
            ResultStore(out)
        return
    store = ResultStore(out)
    try:
        assert store.keys() == expect_keys
        assert set(store.bad_lines) == {i + 1 for i in range(len(lines))} - good | ({len(lines) + 1} if torn else set())
        store.write_table()  # the table of what is kept (a column of mixed kinds included) can be built
    finally:
        store.close()
    journal = (out / "runs.jsonl").read_text()
    for line in journal.splitlines():
        _strict_json(line)
    assert "NaN" not in journal and "Infinity" not in journal
    assert set(read_results(out)["run_key"]) == expect_keys
    import pandas as pd

    assert set(pd.read_parquet(out / "results.parquet")["run_key"]) == expect_keys


def test_resume_journal_with_nan_and_garbage(tmp_path: Path, finished: tuple[Path, Path]) -> None:
    """The issue's case: a journal holding a NaN value and a garbage line crashed the resume on rewriting
    it (ValueError: Out of range float values); now both lines are dropped and reported, their run runs
    again, and the journal holds strict JSON."""
    spec, template = finished
    out = tmp_path / "out"
    shutil.copytree(template, out)
    first, second = (out / "runs.jsonl").read_text().splitlines()
    record = json.loads(first)
    record["rows"][0]["decode_us"] = float("nan")
    (out / "runs.jsonl").write_text(json.dumps(record) + "\ngarbage\n" + second + "\n")
    res = sweep(spec, out)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "1, 2" in res.stderr and "1 ran" in res.stdout, (res.stdout, res.stderr)
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(_strict_json(line) for line in lines)


# ------------------------------------------------------------------------------------------ 5. messages

@pytest.mark.parametrize("name", ["default", "speed_paper", "serving-reduced"])
def test_report_cache_subdirectory_names_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`report --cache DIR` where a sweep's directory under it is a file named --out: it names --cache (and
    the directory), before the study runs."""
    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", boom("the study"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / name).write_text("mine\n")
    line = assert_bad(run_cli("report", "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "c")),
                      "--cache", f"c/{name}")
    assert "--out" not in line
    assert (tmp_path / "c" / name).read_text() == "mine\n"


def test_sweep_store_messages_name_the_flag_given(tmp_path: Path, finished: tuple[Path, Path], tiny: str) -> None:
    """Every message about a sweep's directory names the flag it came from: the report's sweeps give
    `--cache` (an edited spec into a used directory said `--out`)."""
    from speedsim.sweep import run_sweep

    _, template = finished
    out = tmp_path / "default"
    shutil.copytree(template, out)
    edited = write(tmp_path, decode_spec(tiny, axes={"sharing": ["2x6"], "mispredict": [0.3]}), "e.yaml")
    with pytest.raises(UserError, match=r"^--cache: .*different spec.*new --cache directory") as err:
        run_sweep(edited, out, workers=1, progress=False, out_flag="--cache")
    assert "--out" not in str(err.value)
    (out / "runs.jsonl").unlink()
    (out / "runs.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"^--cache: .*runs\.jsonl is a symbolic link"):
        run_sweep(edited, out, workers=1, progress=False, out_flag="--cache")


def test_report_without_a_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No usable temporary directory for the report's sweeps: one line naming $TMPDIR, not a traceback."""
    import tempfile

    import speedsim.report.build as build

    monkeypatch.setattr(build, "run_study", boom("the study"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no" / "such"))
    assert_bad(run_cli("report", "--out", str(tmp_path / "r")), "$TMPDIR", "temporary directory")


@pytest.mark.parametrize("sub", ["data", "figures"])
def test_report_directory_whose_subdirectory_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      sub: str) -> None:
    """An earlier report's directory whose data/ or figures/ is a file: refused before the study (it was a
    traceback after it), the file left alone."""
    import speedsim.report.build as build
    from speedsim.report.readme import REPORT_TITLE

    monkeypatch.setattr(build, "run_study", boom("the study"))
    out = tmp_path / "r"
    out.mkdir()
    (out / "README.md").write_text(f"{REPORT_TITLE}\n")
    (out / sub).write_text("mine\n")
    assert_bad(run_cli("report", "--out", str(out)), "--out", f"r/{sub}")
    assert (out / sub).read_text() == "mine\n"


def test_unknown_model_points_at_the_specs_model_specs(tmp_path: Path, tiny: str) -> None:
    spec = decode_spec(tiny)
    spec["fixed"]["model"] = "gpt9"
    line = assert_bad(sweep(write(tmp_path, spec), tmp_path / "out"), "s.yaml", "'model'", "gpt9", "model_specs")
    assert "--model-spec" not in line


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_model_spec_file_that_is_not_one(tmp_path: Path, tiny: str, problem: str) -> None:
    if problem == "directory":
        (tmp_path / "m.yaml").mkdir()
    spec = write(tmp_path, decode_spec(tiny, model_specs=["m.yaml"]))
    assert_bad(sweep(spec, tmp_path / "out"), "s.yaml: field 'model_specs'", "m.yaml")


def test_run_error_names_the_field_not_a_simulate_flag() -> None:
    """A run that fails on bad input in a sweep records an error naming its field ('model'; 'baselines' for
    the unshared baseline that alone does not fit), not the flag of `speedsim simulate` that sets it (`--model`),
    which the sweep's user never gave."""
    from speedsim.sweep.execute import execute

    rows = execute({"profile": "l4", "model": "dec7b", "sharing": "64x2", "out_len": 8, "src_len": 16})
    assert rows[0]["status"] == "error"
    assert rows[0]["error"].startswith("UserError: field 'model': ") and "--model" not in rows[0]["error"]
    rows = execute({"profile": "l4", "model": "dec7b", "sharing": "32x4", "out_len": 8, "src_len": 16})
    assert rows[0]["error"].startswith("UserError: field 'baselines': the unshared baseline (dec7b 128x1)")
    assert "baselines: [sequential]" in rows[0]["error"]


# ------------------------------------------------------------------------------------------ at length

@pytest.mark.slow
@SLOW
@given(field=st.sampled_from(PATH_FIELDS), value=st.one_of(bad_paths, suffixed_names))
def test_bad_path_in_a_spec_field_at_length(tmp_path: Path, tiny: str, field: str, value: str) -> None:
    test_bad_path_in_a_spec_field.hypothesis.inner_test(tmp_path, tiny, field, value)  # type: ignore[attr-defined]


@pytest.mark.slow
@SLOW
@given(scheme=st.sampled_from(SCHEMES), host=hosts, port=ports)
def test_scheduler_address_rule_at_length(scheme: str, host: str, port: str | None) -> None:
    test_scheduler_address_rule.hypothesis.inner_test(scheme, host, port)  # type: ignore[attr-defined]


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_journal_with_bad_lines_at_length(tmp_path: Path, finished: tuple[Path, Path], data: st.DataObject) -> None:
    test_journal_with_bad_lines_resumes.hypothesis.inner_test(tmp_path, finished, data)  # type: ignore[attr-defined]
