"""Hostile paths at the simulate / serve / profiles entry points (issue 22): every path these commands
take from the user goes through `speedsim.userpath`, so a path the operating system refuses is one line
naming the flag or variable it came from, never a traceback.

The class: a component longer than the file system allows (ENAMETOOLONG), a NUL byte, a symbolic-link
loop (ELOOP), a path through a regular file (ENOTDIR), an empty path, text the file system cannot
encode, and names of odd characters (bytes that are not UTF-8, spaces, unicode). A hypothesis property
test draws entry points x members of the class and requires exit 2, one stderr line, no traceback, and
the line's WHERE naming the flag; a valid path to nothing must still say so ("no such ...").
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PREFIX = "speedsim: error: "
SIM = ("simulate", "--model", "t5base", "--sharing", "4x3", "--baseline", "none", "--profile", "h200")
SERVE = ("serve", "--model", "t5base", "--sharing", "4x3", "--requests", "2", "--profile", "h200")
SYNTH = ("--synthetic", "perfect,len=3")
POISSON = ("--arrivals", "poisson:5")


@dataclass(frozen=True)
class Entry:
    """One path the user gives: the command line around it (`base`; the option given last wins, so
    `--profile` there is replaced), its option and the text before the path (`fit=`), where the refusal
    must say it came from, the suffix that makes a value a path (`--profile X.yaml`), and what a valid path
    to nothing says."""

    where: str
    base: tuple[str, ...]
    option: str
    suffix: str = ""
    prefix: str = ""
    missing: tuple[str, ...] = ("no such",)

    def args(self, path: str) -> tuple[str, ...]:
        return (*self.base, self.option, self.prefix + path)


ENTRIES = {
    "simulate --profile": Entry("--profile", (*SIM, *SYNTH), "--profile", ".yaml"),
    "simulate --trace": Entry("--trace", SIM, "--trace", ".jsonl"),
    "simulate --synthetic fit=": Entry("--synthetic fit=", SIM, "--synthetic", ".jsonl", "fit="),
    "simulate --model-spec": Entry("--model-spec", (*SIM, *SYNTH), "--model-spec", ".yaml"),
    "simulate --timeline": Entry("--timeline", (*SIM, *SYNTH), "--timeline", ".json",
                                 missing=("does not exist",)),
    "serve --profile": Entry("--profile", (*SERVE, *SYNTH, *POISSON), "--profile", ".yaml"),
    "serve --trace": Entry("--trace", (*SERVE, *POISSON), "--trace", ".jsonl"),
    "serve --synthetic fit=": Entry("--synthetic fit=", (*SERVE, *POISSON), "--synthetic", ".jsonl", "fit="),
    "serve --model-spec": Entry("--model-spec", (*SERVE, *SYNTH, *POISSON), "--model-spec", ".yaml"),
    "serve --timeline": Entry("--timeline", (*SERVE, *SYNTH, *POISSON), "--timeline", ".json",
                              missing=("does not exist",)),
    "serve --arrivals trace:": Entry("--arrivals", (*SERVE, *SYNTH), "--arrivals", ".txt", "trace:"),
    "profiles --dir": Entry("--dir", ("profiles",), "--dir", missing=("no *.yaml profiles in",)),
}


def where_of(line: str) -> str:
    """The WHERE of `speedsim: error: WHERE: message`."""
    assert line.startswith(PREFIX), line
    return line[len(PREFIX):].split(": ", 1)[0]


def assert_refused(res: CliResult, where: str, *, exact: bool = True) -> str:
    """Exit 2, one stderr line, no traceback, and the line's WHERE is `where` (or, not `exact`, starts with
    the option's name: `--synthetic fit=` with nothing after it is refused by the --synthetic parser)."""
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1, res.stderr[-2000:]
    got = where_of(lines[0])
    if exact:
        assert got == where, (where, lines[0])
    else:
        assert got.startswith(where.split()[0]), (where, lines[0])
    return lines[0]


def run(*args: str) -> CliResult:
    """The CLI in this process; an exception that escapes it is a result holding "Traceback"."""
    try:
        return run_cli(*args)
    except Exception as err:  # noqa: BLE001 - what escapes the CLI is the failure under test
        return CliResult(-1, "", f"Traceback (escaped run()): {type(err).__name__}: {err}\n")


# ------------------------------------------------------------------------------------ the class

# characters of generated names: letters, digits, blanks, punctuation and non-ASCII; not the separator,
# NUL (its own kind), nor ',' and '=' (`--synthetic` items are split there)
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/,=\x00")
NAMES = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@st.composite
def bad_paths(draw: st.DrawFn) -> tuple[str, str, int]:
    """(kind, name, n): how to build a member of the class in a fresh directory (`realise`)."""
    kind = draw(st.sampled_from(["long", "long-inner", "nul", "loop", "loop-inner", "notdir", "empty",
                                 "unencodable", "missing", "missing-bytes"]))
    return kind, draw(NAMES), draw(st.integers(256, 700))


def realise(kind: str, name: str, n: int, suffix: str, d: Path) -> str:
    """The path of `kind` in the fresh directory `d` (a link loop or a regular file is made there)."""
    name = name.encode("utf-8")[:100].decode("utf-8", "ignore") or "x"
    if kind == "long":  # a last component of n bytes
        return str(d / (("a" * n)[: n - len(suffix)] + suffix))
    if kind == "long-inner":
        return str(d / ("é" * (n // 2 + 1)) / f"{name}{suffix}")
    if kind == "nul":
        return str(d / f"{name[:1]}\x00{name[1:]}{suffix}")
    if kind in ("loop", "loop-inner"):
        link = d / f"{name}{suffix}"
        os.symlink(link.name, link)  # points at itself: ELOOP
        return str(link / f"x{suffix}" if kind == "loop-inner" else link)
    if kind == "notdir":
        (d / "plain").write_text("not a directory\n")
        return str(d / "plain" / f"{name}{suffix}")
    if kind == "empty":
        return ""
    if kind == "unencodable":  # a lone surrogate that surrogateescape cannot turn into a byte
        return str(d / f"{name}\ud800{suffix}")
    if kind == "missing-bytes":  # bytes that are not UTF-8 (surrogateescape): a valid name of nothing
        return str(d / "no-such-dir" / f"{name}\udcff\udcfe{suffix}")
    return str(d / "no-such-dir" / f"{name}{suffix}")


def check(entry: Entry, kind: str, path: str) -> str:
    res = run(*entry.args(path))
    line = assert_refused(res, entry.where, exact=kind != "empty")
    if kind.startswith("missing"):
        assert any(word in line for word in entry.missing), line
    return line


@pytest.mark.parametrize("kind", ["long", "long-inner", "nul", "loop", "loop-inner", "notdir", "empty",
                                  "unencodable", "missing", "missing-bytes"])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_point_refuses_each_kind(tmp_path: Path, entry: str, kind: str) -> None:
    """Each member of the class at each entry point: one line naming the flag."""
    e = ENTRIES[entry]
    check(e, kind, realise(kind, "x", 300, e.suffix, tmp_path))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.sampled_from(list(ENTRIES)), bad=bad_paths())
def test_hostile_paths_property(tmp_path: Path, entry: str, bad: tuple[str, str, int]) -> None:
    """Property: any generated member of the class, at any entry point, is refused in one line naming the
    flag it was given to; a valid name of nothing says so."""
    e = ENTRIES[entry]
    kind, name, n = bad
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    check(e, kind, realise(kind, name, n, e.suffix, d))


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.sampled_from(list(ENTRIES)), bad=bad_paths())
def test_hostile_paths_property_long(tmp_path: Path, entry: str, bad: tuple[str, str, int]) -> None:
    """The property above, at more examples (CI's slow run)."""
    e = ENTRIES[entry]
    kind, name, n = bad
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    check(e, kind, realise(kind, name, n, e.suffix, d))


# ------------------------------------------------------------------------------ specific answers

def test_missing_files_say_so(tmp_path: Path) -> None:
    """A well-formed path to nothing: "no such file" with the path, at the flag; an unknown shipped trace
    name names it."""
    missing = str(tmp_path / "none.yaml")
    line = assert_refused(run(*SIM, *SYNTH, "--profile", missing), "--profile")
    assert f"no such file: {missing}" in line
    line = assert_refused(run(*SIM, *SYNTH, "--model-spec", missing), "--model-spec")
    assert f"no such file: {missing}" in line
    line = assert_refused(run(*SIM, "--trace", str(tmp_path / "t.jsonl")), "--trace")
    assert "no such trace file" in line and "t.jsonl" in line
    line = assert_refused(run(*SIM, "--trace", "no-such-trace"), "--trace")
    assert "no-such-trace" in line
    line = assert_refused(run(*SIM, "--profile", "no-such-chip", *SYNTH), "--profile")
    assert "unknown profile 'no-such-chip' (known: " in line and "h200" in line


def test_long_profile_path_message(tmp_path: Path) -> None:
    """The issue's reproduction: a 300-byte component in --profile said OSError [Errno 36] in a traceback."""
    line = assert_refused(run(*SIM, "--trace", "4x3", "--profile", f"/tmp/{'a' * 300}.yaml"), "--profile")
    assert "305 bytes long; the file system allows 255" in line
    assert len(line) < 300  # the path is shown shortened


def test_profile_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x\n")
    line = assert_refused(run("profiles", "--dir", str(tmp_path / "f")), "--dir")
    assert "is not a directory" in line


def test_profile_dir_that_cannot_be_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory whose listing the system refuses (EACCES; as root, simulated): one line at --dir. (Python
    3.11's Path.glob took such a directory for an empty one: "no *.yaml profiles found".)"""
    real = os.listdir

    def refuse(path: str | os.PathLike[str] = ".") -> list[str]:
        if Path(path) == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", refuse)
    line = assert_refused(run("profiles", "--dir", str(tmp_path)), "--dir")
    assert "cannot list" in line and "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_directories(tmp_path: Path) -> None:
    """Directories the user may not list or search: one line at the flag."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert_refused(run("profiles", "--dir", str(locked)), "--dir")
        assert_refused(run(*SIM, *SYNTH, "--profile", str(locked / "p.yaml")), "--profile")
        assert_refused(run(*SIM, "--trace", str(locked / "t.jsonl")), "--trace")
    finally:
        locked.chmod(0o700)


def test_valid_paths_still_work(tmp_path: Path) -> None:
    """The checks refuse nothing valid: a shipped trace name, a profile by path, a model spec, a timeline."""
    from speedsim.paths import PROFILE_DIR

    spec = tmp_path / "m.yaml"
    spec.write_text("name: mine\nd_model: 64\nn_heads: 4\nd_ff: 128\nvocab: 100\n")
    res = run(*SIM, "--profile", str(PROFILE_DIR / "h200.yaml"), "--trace", "4x3", "--limit", "1",
              "--model-spec", str(spec), "--timeline", str(tmp_path / "t.json"), "--json")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "t.json").is_file()
    res = run("profiles", "--dir", str(PROFILE_DIR), "--json")
    assert res.returncode == 0 and "h200" in res.stdout, res.stderr


# --------------------------------------------------------------------------- environment variables

@pytest.fixture
def profiles_variable(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """`set(value)`: $SPEEDSIM_PROFILES as paths.py reads it at import (its PROFILE_DIR patched too), with
    the profile cache cleared before and after."""
    import speedsim.hardware.files as files_module
    from speedsim.simulate.scenario import cached_profile

    def set_(value: str) -> None:
        monkeypatch.setenv("SPEEDSIM_PROFILES", value)
        monkeypatch.setattr(files_module, "PROFILE_DIR", Path(value))

    cached_profile.cache_clear()
    yield set_
    cached_profile.cache_clear()


@pytest.mark.parametrize("kind", ["long", "long-inner", "loop", "loop-inner", "notdir", "missing-bytes"])
@pytest.mark.parametrize("command", ["profiles", "simulate"])
def test_profiles_variable(tmp_path: Path, profiles_variable, kind: str, command: str) -> None:
    """$SPEEDSIM_PROFILES naming a path the system refuses: one line whose WHERE is the variable; naming
    nothing (a path through a file, a missing directory): no profiles, the line names the variable and,
    for `--profile h200`, the flag."""
    profiles_variable(realise(kind, "p", 300, "", tmp_path))
    res = run("profiles") if command == "profiles" else run(*SIM, *SYNTH)
    refused = kind.startswith(("long", "loop"))
    where = "$SPEEDSIM_PROFILES" if refused or command == "profiles" else "--profile"
    line = assert_refused(res, where)
    assert "$SPEEDSIM_PROFILES" in line
    if not refused:
        assert "no *.yaml profiles in" in line, line


@pytest.mark.parametrize("kind", ["long", "loop"])
def test_data_variable(tmp_path: Path, kind: str) -> None:
    """$SPEEDSIM_DATA (read as the package is imported) naming a path the system refuses: one line naming
    the variable (it was an OSError traceback). A fresh process: the data root is chosen at import."""
    value = realise(kind, "data", 300, "", tmp_path)
    res = subprocess.run([sys.executable, "-m", "speedsim.cli", "profiles"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "SPEEDSIM_DATA": value})
    assert_refused(CliResult(res.returncode, res.stdout, res.stderr), "$SPEEDSIM_DATA")
