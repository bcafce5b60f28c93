"""Key numbers of every profile, for `speedsim profiles`; one profile's parameters, for `--params`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speedsim.errors import UserError
from speedsim.hardware.files import (
    PROFILE_SUFFIXES,
    ProfileCheck,
    list_profile_files,
    load_profile,
    load_profile_file,
    profile_dir,
    profile_dir_label,
    profile_dir_source,
    whatif_checked,
)
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, overrides_dict, parameter_paths
from speedsim.userpath import one_line, shown, user_path


def profile_table(directory: str | os.PathLike[str] | None = None,
                  check: ProfileCheck | None = None) -> list[dict]:
    """Validate (and `check`) every profile file of `directory` (`--dir`; default: the profile directory in
    use); one row of key numbers each. No profiles (a directory that does not exist, or holds no *.yaml
    file) and the first invalid file are a `UserError`: the former names where the directory came from
    (`--dir`, `$SPEEDSIM_PROFILES`), the latter the file."""
    files = list_profile_files(directory)
    if not files:
        where = profile_dir_source(directory)
        folder = directory if directory is not None else profile_dir()
        found = "found" if where == shown(folder) else f"in {one_line(str(folder))}"  # (flag, variable: which)
        raise UserError(f"no *.yaml profiles {found}", where=where)
    rows = []
    for path in files:
        p = load_profile_file(path, check)
        if p.name != path.stem:
            raise UserError(f"field 'name': '{p.name}' does not match the file name '{path.stem}'", where=str(path))
        rows.append({
            "name": p.name,
            "kind": p.kind,
            "units": p.compute.units,
            "clock_MHz": p.compute.clock_MHz,
            "dtype": p.default_dtype,  # the dtype its runs compute in, and of the peak beside it
            "matrix_TFLOPS": p.matrix_peak(p.default_dtype, achievable=False) / 1e12,
            "dram_GBps": p.memory.dram.bandwidth_GBps,
            "dram_efficiency": p.memory.dram.efficiency,
            "onchip_MiB": p.l2.capacity_MiB,
            "onchip_GBps": p.l2.bandwidth_GBps,
            "memory_GiB": p.memory_capacity_GiB,
            "kernel_latency_us": p.kernel.latency_us,
            # the execution modes it runs (--mode graph on a synchronous host runs eager)
            "modes": "eager" if p.host.synchronous else f"{p.host.mode_label('graph')}, eager",
            "eager_launch_us": p.host.launch_overhead_us["eager"],
            "graph_node_us": p.host.launch_overhead_us["graph"],
            "file": str(path),
            "sources": list(p.sources),
        })
    return rows


def parameter_rows(profile: HardwareProfile) -> list[dict]:
    """`speedsim profiles --params NAME`: every parameter a what-if (`--set PATH=VALUE`) or a sweep's `set.PATH`
    may set, in the profile's order, with its value and, where the profile gives one, its range (`low`,
    `high`: what `simulate --bounds` runs)."""
    rows = []
    for path, value in parameter_paths(profile).items():
        row: dict = {"path": path, "value": value}
        if path in profile.ranges:
            row.update(low=profile.ranges[path].low, high=profile.ranges[path].high)
        rows.append(row)
    return rows


def with_overrides_record(obj: dict, overrides: Iterable[Override]) -> dict:
    """A command's `--json` object with `overrides` (path -> value: what a what-if set) after its `profile`,
    when any was set; `obj` unchanged otherwise (its output is as before what-ifs existed)."""
    record = overrides_dict(overrides)
    if not record:
        return obj
    out: dict = {}
    for key, value in obj.items():
        out[key] = value
        if key == "profile":
            out["overrides"] = record
    out.setdefault("overrides", record)
    return out


PARAMS_FLAG = "--params"


def profile_parameters(name: str, directory: str | os.PathLike[str] | None = None, settings: Sequence[str] = (),
                       check: ProfileCheck | None = None) -> dict:
    """`speedsim profiles --params NAME [--dir DIR] [--set PATH=VALUE ...]`: the profile `name` (a name in
    `directory`, default the profile directory in use, or a YAML path), with what-if `settings` applied,
    and its parameters (`parameter_rows`); a `UserError` at --params (or --set) for anything wrong."""
    user_path(name, PARAMS_FLAG)
    if directory is None or Path(name).suffix in PROFILE_SUFFIXES:
        profile = load_profile(name, check, where=PARAMS_FLAG)
        path = Path(name) if Path(name).suffix in PROFILE_SUFFIXES else profile_dir() / f"{name}.yaml"
    else:
        files = {p.stem: p for p in list_profile_files(directory)}
        if name not in files:
            raise UserError(f"unknown profile '{shown(name)}' in {profile_dir_label(directory)} (known: "
                            f"{', '.join(files) or 'none'})", where=PARAMS_FLAG)
        path = files[name]
        profile = load_profile_file(path, check)
        if profile.name != path.stem:
            raise UserError(f"field 'name': '{profile.name}' does not match the file name '{path.stem}'",
                            where=str(path))
    profile, overrides = whatif_checked(profile, settings, check)
    listing = {"profile": profile.name, "file": str(path), "parameters": parameter_rows(profile)}
    return with_overrides_record(listing, overrides)
