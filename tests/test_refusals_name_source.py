"""Every refusal names where the bad value came from (issue 22): for every path-taking option of every
command, a path that cannot be used (a component longer than the file system allows, a NUL byte, a
link loop, a path through a regular file) exits 2 with one line that names that option, never another
option and never a traceback.

The options are found by walking the click commands (every `click.Path` option, every option whose
metavar is FILE, DIR or PATH, plus the options that take a name or a path), so a new command or option is covered without editing this file; `BASE` gives
each command the least valid arguments around the option under test.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from conftest import run_cli

from speedsim.cli import cli

# The least valid arguments of each command (paths in them exist or are fresh); the option under test
# replaces its entry or is added. Every command must refuse the bad path before any real work.
BASE: dict[str, tuple[str, ...]] = {
    "profiles": (),
    "validate": ("--profile", "h200"),
    "calibrate": ("--profile", "h200", "--out", "{tmp}/fit.yaml"),
    "data build": ("--source", "{tmp}/src"),
    "train": ("--config", "{tmp}/cfg.yaml", "--out", "{tmp}/run"),
    "trace": ("--checkpoint", "{tmp}/run", "--out", "{tmp}/t.jsonl"),
    "simulate": ("--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
                 "--baseline", "none"),
    "serve": ("--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
              "--arrivals", "poisson:5", "--requests", "2"),
    "measure": ("--device", "cpu", "--out", "{tmp}/m.csv", "--quick", "--sequences", "1", "--max-new-tokens", "1"),
    "sweep": ("{tmp}/spec.yaml", "--out", "{tmp}/sweep"),
    "report": ("--out", "{tmp}/rep"),
    "design": ("--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
               "--method", "speed", "--vary", "memory.dram.bandwidth_GBps", "--target-us-per-token", "100000"),
    "profiles derive": ("--from", "h200", "--set", "kernel.latency_us=1", "--out", "{tmp}/derived.yaml"),
    "sensitivity": ("--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=3",
                    "--baseline", "none", "--params", "kernel.latency_us"),
}
NAME_OR_PATH = {("simulate", "--profile"), ("simulate", "--trace"), ("serve", "--profile"), ("serve", "--trace"),
                ("validate", "--profile"), ("calibrate", "--profile"), ("sensitivity", "--profile"),
                ("sensitivity", "--trace"), ("profiles", "--params"), ("profiles derive", "--from"),
                ("profiles derive", "--reference"), ("design", "--profile"), ("design", "--trace")}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # a group that is also a command (`speedsim profiles`)
                out.append((" ".join((*prefix, name)), command))
            out += _commands(command, (*prefix, name))
        else:
            out.append((" ".join((*prefix, name)), command))
    return out


def _path_options() -> list[tuple[str, str]]:
    found = []
    for name, command in _commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and (isinstance(param.type, click.Path)
                                                   or (param.metavar or "").split()[0:1] in (["FILE"], ["DIR"], ["PATH"])
                                                   or (name, param.opts[0]) in NAME_OR_PATH):
                found.append((name, param.opts[0]))
    return found


def _bad(kind: str, tmp: Path) -> str:
    if kind == "long":
        return str(tmp / ("a" * 300) / "x.yaml")
    if kind == "nul":
        return str(tmp / "a\x00b.yaml")
    if kind == "loop":
        (tmp / "loop.yaml").symlink_to("loop.yaml")
        return str(tmp / "loop.yaml")
    (tmp / "plain").write_text("x\n")  # a path through a regular file (ENOTDIR)
    return str(tmp / "plain" / "x.yaml")


def test_every_command_has_base_arguments() -> None:
    assert {name for name, _ in _commands(cli)} == set(BASE)


@pytest.mark.parametrize("kind", ["long", "nul", "loop", "notdir"])
@pytest.mark.parametrize("command, option", _path_options())
def test_a_bad_path_names_its_option(tmp_path: Path, command: str, option: str, kind: str) -> None:
    base = [a.replace("{tmp}", str(tmp_path)) for a in BASE[command]]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    bad = _bad(kind, tmp_path)
    if option in base:
        base[base.index(option) + 1] = bad
        args = [*command.split(), *base]
    else:
        args = [*command.split(), *base, option, bad]
    res = run_cli(*args)
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and res.returncode == 2 and len(lines) == 1, (args, res)
    assert option in lines[0], (option, lines[0])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))  # nothing half-written left


def test_nothing_is_written_outside_the_tree(tmp_path: Path) -> None:
    """The bad-path cases above run in a temporary directory: the working directory gains nothing."""
    before = set(os.listdir("."))
    run_cli("simulate", *BASE["simulate"], "--timeline", str(tmp_path / ("a" * 300)))
    assert set(os.listdir(".")) == before
