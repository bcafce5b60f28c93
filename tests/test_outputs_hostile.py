"""Files that are not ours (issue 22): an output that is a symbolic link, and a file of the same format
that speedsim did not write.

The rule (speedsim.fileio): an output is written beside its path and renamed over it, so a symbolic
link at the path is replaced as a link and its target is never opened for writing; before that, the
file the path names (the link's target) is replaced only if it is speedsim's own output of that kind.
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


def test_a_symlinked_output_is_replaced_as_a_link(tmp_path: Path) -> None:
    """An output path that is a link to speedsim's own earlier output: the link is replaced by the new
    file; the link's target keeps its bytes."""
    target = tmp_path / "old.json"
    assert run_cli(*SIM, "--timeline", str(target)).returncode == 0
    before = target.read_bytes()
    link = tmp_path / "tl.json"
    link.symlink_to(target)
    assert run_cli(*SIM, "--synthetic", "perfect,len=5,seqs=1", "--timeline", str(link)).returncode == 0
    assert not link.is_symlink() and TIMELINE_FILE.holds(link)
    assert target.read_bytes() == before


@pytest.mark.parametrize("target_kind", ["foreign", "dangling", "loop", "directory"])
def test_a_symlinked_output_never_writes_its_target(tmp_path: Path, target_kind: str) -> None:
    """A link to a user's file is refused (its target untouched); a dangling link is replaced (nothing is
    created at its target); a link loop and a link to a directory are refused naming the flag."""
    link = tmp_path / "tl.json"
    target = tmp_path / "elsewhere" / "notes.txt"
    target.parent.mkdir()
    if target_kind == "foreign":
        target.write_text("my notes\n")
    elif target_kind == "directory":
        target.mkdir()
    if target_kind == "loop":
        link.symlink_to(link.name)
    else:
        link.symlink_to(target)
    res = run_cli(*SIM, "--timeline", str(link))
    if target_kind == "dangling":
        assert res.returncode == 0, res.stderr
        assert not link.is_symlink() and not target.exists()
        return
    _one_line(res, "--timeline")
    assert link.is_symlink()
    if target_kind == "foreign":
        assert target.read_text() == "my notes\n"


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
    """The report's markdown and figures are written atomically: a link planted in a report directory is
    replaced, its target untouched."""
    from speedsim.report.markdown import write_markdown
    from speedsim.report.style import save as save_figure

    target = tmp_path / "mine.md"
    target.write_text("mine\n")
    out = tmp_path / "rep"
    out.mkdir()
    (out / "README.md").symlink_to(target)
    write_markdown(out / "README.md", ["# speedsim report", "x"])
    assert target.read_text() == "mine\n" and not (out / "README.md").is_symlink()
    import matplotlib.pyplot as plt

    fig = plt.figure()
    (out / "f.png").symlink_to(target)
    save_figure(fig, out / "f.png")
    assert target.read_text() == "mine\n" and not os.path.islink(out / "f.png")
