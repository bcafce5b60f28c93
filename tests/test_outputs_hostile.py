"""Files that are not ours (issue 22): an output that is a symbolic link, and a file of the same format
that speedsim did not write.

The rule (speedsim.fileio): an output path that is a symbolic link is refused, whatever it points to
(renaming over it would replace the link, /dev/stdout for one; writing through it would change a file
that is not ours); an existing regular file is replaced only if it is speedsim's own output of that kind.
A timeline is recognised by the marker speedsim writes at its start, not by the Chrome trace format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedsim.engine.recorder import TIMELINE_FILE, TIMELINE_HEAD

SIM = ("simulate", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3,seqs=1",
       "--baseline", "none")


def _one_line(res, *names: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_a_browsers_trace_is_not_replaced_by_a_timeline(tmp_path: Path) -> None:
    """A Chrome trace that speedsim did not write (a browser's performance trace: same format, no marker)
    is refused by --timeline and left as it was; speedsim's own timeline is replaced."""
    theirs = tmp_path / "profile.json"
    theirs.write_text(json.dumps({"traceEvents": [{"ph": "X", "name": "paint", "ts": 1, "dur": 2}],
                                  "metadata": {"source": "DevTools"}}))
    before = theirs.read_bytes()
    _one_line(run_cli(*SIM, "--timeline", str(theirs)), "--timeline", "not a timeline written by speedsim")
    assert theirs.read_bytes() == before
    ours = tmp_path / "tl.json"
    assert run_cli(*SIM, "--timeline", str(ours)).returncode == 0
    assert ours.read_text().startswith(TIMELINE_HEAD) and TIMELINE_FILE.holds(ours)
    assert json.loads(ours.read_text())["traceEvents"]  # still a Chrome trace (Perfetto opens it)
    assert run_cli(*SIM, "--timeline", str(ours)).returncode == 0  # the last run's timeline is replaced


def test_serve_timeline_carries_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    res = run_cli("serve", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic",
                  "perfect,len=3", "--method", "speed", "--arrivals", "poisson:5", "--requests", "2",
                  "--timeline", str(out))
    assert res.returncode == 0, res.stderr
    assert TIMELINE_FILE.holds(out)


@pytest.mark.parametrize("target_kind", ["ours", "foreign", "empty", "dangling", "loop", "directory", "stdout"])
def test_a_symlinked_output_is_refused_and_its_target_untouched(tmp_path: Path, target_kind: str) -> None:
    """An output path that is a symbolic link is refused whatever it points to (speedsim's own earlier
    output, a user's file, an empty file, nothing, itself, a directory, a device such as /dev/stdout):
    renaming over it would replace the link, writing through it would change its target."""
    link = tmp_path / "tl.json"
    target = tmp_path / "elsewhere" / "t.json"
    target.parent.mkdir()
    if target_kind == "ours":
        assert run_cli(*SIM, "--timeline", str(target)).returncode == 0
    elif target_kind == "foreign":
        target.write_text("my notes\n")
    elif target_kind == "empty":
        target.write_text("")
    elif target_kind == "directory":
        target.mkdir()
    if target_kind == "loop":
        link.symlink_to(link.name)
    elif target_kind == "stdout":
        link.symlink_to("/proc/self/fd/1")
    else:
        link.symlink_to(target)
    before = target.read_bytes() if target.is_file() else None
    _one_line(run_cli(*SIM, "--timeline", str(link)), "--timeline")
    assert link.is_symlink()
    assert (target.read_bytes() if target.is_file() else None) == before
    assert target_kind == "directory" or target.exists() == (before is not None)


@pytest.mark.parametrize("flag", ["--timeline"])
def test_a_path_ending_in_a_slash_is_not_a_file(tmp_path: Path, flag: str) -> None:
    """`out.json/` names a directory: it is refused, not written as `out.json` (pathlib drops the slash)."""
    _one_line(run_cli(*SIM, flag, str(tmp_path / "new.json") + "/"), flag, "ends with '/'")
    assert not (tmp_path / "new.json").exists()


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                     max_size=3), max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(st.sampled_from(["traceEvents", "otherData", "displayTimeUnit", "metadata"]), _JSONISH,
                           min_size=1, max_size=4))
def test_only_the_marker_makes_a_file_ours(tmp_path: Path, doc: dict) -> None:
    """Property: a JSON document is recognised as speedsim's timeline if and only if it starts with the
    marker speedsim writes (any other Chrome-trace-like document, however close, is not)."""
    path = tmp_path / "x.json"
    text = json.dumps(doc)
    path.write_text(text)
    assert TIMELINE_FILE.holds(path) == text.startswith(TIMELINE_HEAD)


def test_report_never_writes_through_a_link(tmp_path: Path) -> None:
    """The report's markdown and figures go through the output checks: a link planted in a report directory is
    refused, its target untouched."""
    from speedsim.errors import UserError
    from speedsim.report.markdown import write_markdown
    from speedsim.report.style import save as save_figure

    target = tmp_path / "mine.md"
    target.write_text("mine\n")
    out = tmp_path / "rep"
    out.mkdir()
    (out / "README.md").symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        write_markdown(out / "README.md", ["# speedsim report", "x"])
    assert target.read_text() == "mine\n" and (out / "README.md").is_symlink()
    import matplotlib.pyplot as plt

    fig = plt.figure()
    (out / "f.png").symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        save_figure(fig, out / "f.png")
    assert target.read_text() == "mine\n" and os.path.islink(out / "f.png")
    write_markdown(out / "new.md", ["# x"])  # a plain new file is written
    assert (out / "new.md").read_text() == "# x\n"
