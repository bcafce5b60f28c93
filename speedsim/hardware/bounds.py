"""The two ends of a profile's uncertainty: every ranged parameter at its fast or its slow end.

A profile's `ranges` give, for each parameter not fitted to that device's own measurements, a
low and a high value with the reason. `at_end(profile, "fast")` sets each of them to the end
that makes kernels faster, `at_end(profile, "slow")` to the other; `speedsim simulate --bounds`
runs both and reports `per_token_us_low` and `per_token_us_high`.

Which end is fast follows from the parameter's unit: a time (`_us`, `_ns`) or a count of clock
cycles (`cycles`) is fast when low; everything else (efficiencies, bytes in flight, bandwidths,
usable fractions) is fast when high. The model is monotone in each of these but one: a larger
usable on-chip fraction can let a tensor that streamed before (an LM head) become resident and
evict a shared group. So the bounds reported are the extremes of three runs (nominal, fast end,
slow end), not a guaranteed envelope of every mix inside the ranges.
"""

from __future__ import annotations

from typing import Literal

from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import set_parameter


def slower_when_larger(path: str) -> bool:
    """Whether a larger value of the parameter at `path` makes kernels slower (a time or a cycle count)."""
    # a time may sit in a table of times (`host.launch_overhead_us.graph`): any part of the path counts
    return any(part.endswith(("_us", "_ns")) for part in path.split(".")) or "cycles" in path.rsplit(".", 1)[-1]


def at_end(profile: HardwareProfile, end: Literal["fast", "slow"]) -> HardwareProfile:
    """`profile` with every ranged parameter at its fast (or slow) end; the ranges themselves are kept."""
    if not profile.ranges:
        return profile
    data = profile.model_dump()
    for path, r in profile.ranges.items():
        fast = r.low if slower_when_larger(path) else r.high
        slow = r.high if slower_when_larger(path) else r.low
        set_parameter(data, path, fast if end == "fast" else slow)
    data["name"] = f"{profile.name} ({end} end)"
    return HardwareProfile.model_validate(data)
