"""Hardware profiles (`hw_profiles/*.yaml`) and their schema."""

from speedsim.hardware.files import list_profile_files, load_profile, load_profile_file, save_profile
from speedsim.hardware.parts import BYTES_PER_ELEMENT
from speedsim.hardware.profile import HardwareProfile

__all__ = [
    "BYTES_PER_ELEMENT",
    "HardwareProfile",
    "list_profile_files",
    "load_profile",
    "load_profile_file",
    "save_profile",
]
