"""Hardware profiles (`hw_profiles/*.yaml`) and their schema."""

from speedsim.hardware.profile import (
    BYTES_PER_ELEMENT,
    HardwareProfile,
    list_profile_files,
    load_profile,
    load_profile_file,
    save_profile,
)

__all__ = [
    "BYTES_PER_ELEMENT",
    "HardwareProfile",
    "list_profile_files",
    "load_profile",
    "load_profile_file",
    "save_profile",
]
