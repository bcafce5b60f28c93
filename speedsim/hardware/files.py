"""Profile files: discovery in the profile directory, loading (validated) and saving (atomic)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml

from speedsim.errors import UserError
from speedsim.fileio import write_text
from speedsim.hardware.profile import HardwareProfile
from speedsim.paths import PROFILE_DIR
from speedsim.yamlio import read_mapping, validate_as, yaml_output

# A check of a loaded profile by a layer above this one (the engine's cost model, which may not be
# imported here): takes the profile and its file, raises `UserError` naming the file.
ProfileCheck = Callable[[HardwareProfile, str], None]


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


def profile_dir_label(directory: Path | None = None) -> str:
    """How messages name a profile directory: `directory`, else the one in use (and the variable that chose it)."""
    if directory is not None:
        return str(directory)
    return f"$SPEEDSIM_PROFILES ({PROFILE_DIR})" if os.environ.get("SPEEDSIM_PROFILES") else str(PROFILE_DIR)


def list_profile_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or profile_dir()).glob("*.yaml"))


def load_profile(name_or_path: str, check: ProfileCheck | None = None) -> HardwareProfile:
    """A profile by name (`h200`, a file in hw_profiles/) or by path to a YAML file (`load_profile_file`)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return load_profile_file(candidate, check)
    path = profile_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in list_profile_files())
        if not known:
            raise UserError(f"unknown profile '{name_or_path}': no *.yaml profiles in {profile_dir_label()}",
                            where="--profile")
        raise UserError(f"unknown profile '{name_or_path}' (known: {known})", where="--profile")
    profile = load_profile_file(path, check)
    if profile.name != name_or_path:  # as `speedsim profiles` requires of every file
        raise UserError(f"field 'name': '{profile.name}' does not match the file name '{name_or_path}'", where=str(path))
    return profile


PROFILE_FILE = yaml_output("a hardware profile (YAML)", frozenset({"name", "kind", "compute", "memory"}))


def save_profile(profile: HardwareProfile, path: Path) -> None:
    """Write a profile as YAML, atomically (write then rename)."""
    data = profile.model_dump(mode="json", exclude_none=True)  # an unknown optional number is left out
    write_text(path, yaml.safe_dump(data, sort_keys=False, width=100))
