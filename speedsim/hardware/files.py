"""Profile files: discovery in the profile directory, loading (validated) and saving (atomic).

Every path here comes from the user through `speedsim.userpath`, named by where it came from: a
profile's path by `--profile`, the profile directory by `--dir` or `$SPEEDSIM_PROFILES` (the
shipped `hw_profiles/` by its own path). A malformed path, a link loop or a directory that cannot be
searched or listed is a one-line `UserError` there; what a profile file holds is named by its file
and field.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from speedsim.errors import UserError
from speedsim.fileio import write_text
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, apply_settings
from speedsim.paths import PROFILE_DIR, PROFILES_VARIABLE
from speedsim.userpath import one_line, os_errors, path_problem, probe, shown, user_path
from speedsim.yamlio import read_mapping, validate_as, yaml_output

# A check of a loaded profile by a layer above this one (the engine's cost model, which may not be
# imported here): takes the profile and its file, raises `UserError` naming the file.
ProfileCheck = Callable[[HardwareProfile, str], None]

PROFILE_FLAG = "--profile"
PROFILE_SUFFIXES = (".yaml", ".yml")  # a `--profile` ending in one of these is a path, not a name


def load_profile_file(path: Path, check: ProfileCheck | None = None) -> HardwareProfile:
    """Read and validate one profile YAML, then `check` it; raise `UserError` naming the file and field.

    Without `check` only the schema and its ranges are checked: `speedsim.engine.open_profile` passes
    the cost model's check (every rate the profile implies is finite and positive)."""
    profile = validate_as(HardwareProfile, read_mapping(path, "profile"), str(path))
    if check is not None:
        check(profile, str(path))
    return profile


def profile_dir() -> Path:
    return PROFILE_DIR


def profile_dir_source(directory: str | os.PathLike[str] | None = None) -> str:
    """Where a profile directory came from, as messages name it: `--dir` for `directory`, else
    `$SPEEDSIM_PROFILES` when that chose the one in use, else the shipped directory's path."""
    if directory is not None:
        return "--dir"
    return PROFILES_VARIABLE if os.environ.get("SPEEDSIM_PROFILES") else shown(profile_dir())


def profile_dir_label(directory: str | os.PathLike[str] | None = None) -> str:
    """How messages name a profile directory: its source and, for a flag or variable, its path (whole if it
    is well-formed, else shortened)."""
    source = profile_dir_source(directory)
    if source.startswith(("-", "$")):
        path = directory if directory is not None else profile_dir()
        return f"{source} ({one_line(str(path)) if path_problem(path) is None else shown(path)})"
    return source


def list_profile_files(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The `*.yaml` files of `directory` (default: the profile directory in use), sorted; none if it does
    not exist. A malformed path, one that is not a directory, or a directory that cannot be searched or
    listed is a `UserError` naming where it came from (`profile_dir_source`)."""
    where = profile_dir_source(directory)
    path = user_path(directory if directory is not None else profile_dir(), where)
    st = probe(path, where)
    if st is None:
        return []
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{shown(path)} is not a directory", where=where)
    # (os.listdir, not Path.glob: Python 3.11's glob takes a directory it may not read for an empty one)
    with os_errors(where, "cannot list"):
        names = os.listdir(path)
    return sorted(path / name for name in names if name.endswith(".yaml"))


def load_profile(name_or_path: str, check: ProfileCheck | None = None,
                 where: str = PROFILE_FLAG) -> HardwareProfile:
    """A profile by name (`h200`, a file in the profile directory) or by path to a YAML file
    (`load_profile_file`); `where` names the flag (or field) it came from.

    A path (a name ending in .yaml or .yml) that is malformed, unusable or absent is a `UserError` at
    `where` ("no such file"); a name that is no file of the profile directory lists the known ones."""
    user_path(name_or_path, where)
    candidate = Path(name_or_path)
    if candidate.suffix in PROFILE_SUFFIXES:
        if probe(candidate, where) is None:
            raise UserError(f"no such file: {shown(candidate)} (a profile is a name in "
                            f"{profile_dir_label()} or the path of a YAML file)", where=where)
        return load_profile_file(candidate, check)
    probe(profile_dir(), profile_dir_source())  # the directory's own problems name where it came from
    path = profile_dir() / f"{name_or_path}.yaml"
    problem = path_problem(path)  # the name is too long for a file name once .yaml is added
    if problem:
        raise UserError(f"unknown profile '{shown(name_or_path)}': {problem}", where=where)
    if probe(path, where) is None:
        known = ", ".join(p.stem for p in list_profile_files())
        if not known:
            raise UserError(f"unknown profile '{shown(name_or_path)}': no *.yaml profiles in "
                            f"{profile_dir_label()}", where=where)
        raise UserError(f"unknown profile '{shown(name_or_path)}' (known: {known})", where=where)
    profile = load_profile_file(path, check)
    if profile.name != name_or_path:  # as `speedsim profiles` requires of every file
        raise UserError(f"field 'name': '{profile.name}' does not match the file name '{name_or_path}'", where=str(path))
    return profile


SET_FLAG = "--set"


def load_whatif(name_or_path: str, settings: Iterable[str] | Mapping[str, Any] = (),
                check: ProfileCheck | None = None, where: str = PROFILE_FLAG,
                set_where: str = SET_FLAG) -> tuple[HardwareProfile, tuple[Override, ...]]:
    """A profile (`load_profile`) with what-if `settings` applied (`PATH=VALUE` texts or a path -> value
    mapping; `speedsim.hardware.whatif`), and the overrides made. The changed profile is validated as a
    loaded one: its schema and closed ranges, then `check` (the engine's cost-model check), which runs on
    the changed profile exactly as on the file; anything wrong with a setting is a `UserError` at
    `set_where` naming the path. Without settings this is `load_profile` (no overrides)."""
    return whatif_checked(load_profile(name_or_path, check, where), settings, check, set_where)


def whatif_checked(profile: HardwareProfile, settings: Iterable[str] | Mapping[str, Any] = (),
                   check: ProfileCheck | None = None,
                   set_where: str = SET_FLAG) -> tuple[HardwareProfile, tuple[Override, ...]]:
    """`profile` with the what-if `settings` applied (`speedsim.hardware.whatif.apply_settings`: its schema and
    closed ranges), then `check`ed as a loaded profile is (the engine's cost model), naming `set_where`."""
    if not settings:
        return profile, ()
    changed, overrides = apply_settings(profile, settings, set_where)
    if check is not None and overrides:
        check(changed, set_where)
    return changed, overrides


PROFILE_FILE = yaml_output("a hardware profile (YAML)", frozenset({"name", "kind", "compute", "memory"}))


def save_profile(profile: HardwareProfile, path: Path) -> None:
    """Write a profile as YAML, atomically (write then rename)."""
    data = profile.model_dump(mode="json", exclude_none=True)  # an unknown optional number is left out
    write_text(path, yaml.safe_dump(data, sort_keys=False, width=100))
