"""Regenerate the derived GPU profiles in hw_profiles/ from datasheets + the calibrated H200.

    python experiments/hardware/derive_profiles.py [--check]

The rule is `speedsim.hardware.derive` (documented there and in hw_profiles/README.md); one GPU at a time,
the same profile comes out of `speedsim profiles derive --datasheet experiments/hardware/gpu_datasheets.yaml
--gpu NAME --out hw_profiles/NAME.yaml` (tests/test_whatif.py checks it byte for byte).
With --check, exits 1 if a shipped profile differs from what the rule gives.
"""

from __future__ import annotations

import sys

from speedsim.hardware import load_profile, load_profile_file, save_profile
from speedsim.hardware.derive import REFERENCE, load_datasheets, profile_from_datasheet
from speedsim.paths import PROFILE_DIR, ROOT


def main(check: bool) -> int:
    ref = load_profile(REFERENCE)
    status = 0
    for sheet in load_datasheets(ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml"):
        profile = profile_from_datasheet(sheet, ref)
        path = PROFILE_DIR / f"{sheet.name}.yaml"
        if check:
            if not path.exists() or load_profile_file(path) != profile:
                sys.stderr.write(f"{path}: differs from the derivation rule\n")
                status = 1
        else:
            save_profile(profile, path)
            sys.stdout.write(f"wrote {path}\n")
    return status


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
