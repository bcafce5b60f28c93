"""What-ifs on a profile: parameters set by their dotted paths (`--set PATH=VALUE`).

A path names a number of the profile exactly as `ranges:` does (`memory.dram.bandwidth_GBps`,
`memory.onchip.0.capacity_MiB`, `host.launch_overhead_us.graph`, `compute.matrix_peak_TFLOPS.bf16`);
`parameter_paths(profile)` lists them. A value is a number or `xF`, F times the profile's own value.
The changed profile is validated as a loaded one is (every field's closed range and every check
between fields), so a what-if can never simulate a profile that could not be written as a file; a
parameter set by a what-if loses its `ranges:` entry (the range was the uncertainty of the value that
was replaced). The result's name says what was set: "h200 (memory.dram.bandwidth_GBps x2)". The two
capacities of device memory (`memory.dram.capacity_MiB`, `memory_capacity_GiB`) move together: setting
one scales the other by the same factor. The compute units and the clock carry the whole-device peaks
(`compute.matrix_peak_TFLOPS.*`, `compute.vector_peak_TFLOPS.*`) with them: "twice the units" is twice
the peak, each unit as strong as before, unless the what-if sets a peak too.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from speedsim.errors import UserError

if TYPE_CHECKING:
    from speedsim.hardware.profile import HardwareProfile

# Parts of a profile that are not physical parameters: texts, and the uncertainty ranges themselves.
_NOT_PARAMETERS = frozenset({"name", "description", "kind", "default_dtype", "sources", "ranges"})
_SCALE = re.compile(r"^[xX](.+)$")


def set_parameter(data: dict, path: str, value: float) -> None:
    """Set the parameter at dotted `path` (list indices as numbers) of a dumped profile to `value`;
    an integral float for an int field becomes an int (a range's ends are floats)."""
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    index: Any = int(last) if isinstance(node, list) else last
    old = node[index]
    node[index] = int(value) if isinstance(old, int) and not isinstance(old, bool) and float(value).is_integer() \
        else value


def _numbers(node: Any, prefix: str) -> Iterable[tuple[str, float]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if not prefix and key in _NOT_PARAMETERS:
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            yield path, float(value)
        else:
            yield from _numbers(value, path)


def parameter_paths(profile: HardwareProfile) -> dict[str, float]:
    """Every number of `profile` that a what-if may set, by dotted path, with its value."""
    return dict(_numbers(profile.model_dump(), ""))


@dataclass(frozen=True)
class Override:
    """One parameter set by a what-if: its path, the value it got, and the factor when given as `xF`."""

    path: str
    value: float
    scale: float | None = None

    @property
    def label(self) -> str:
        return f"{self.path} x{self.scale:g}" if self.scale is not None else f"{self.path}={self.value:g}"


def split_setting(text: str, where: str = "--set") -> tuple[str, str]:
    """`PATH=VALUE` as (path, value text); a `UserError` at `where` for anything else."""
    path, sep, value = str(text).partition("=")
    if not sep or not path.strip() or not value.strip():
        raise UserError(f"'{text}' is not PATH=VALUE (e.g. memory.dram.bandwidth_GBps=x2)", where=where)
    return path.strip(), value.strip()


def _value(path: str, text: str, old: float, where: str) -> tuple[float, float | None]:
    scaled = _SCALE.match(text)
    try:
        number = float(scaled.group(1) if scaled else text)
    except ValueError:
        raise UserError(f"{path}: '{text}' is not a number or xF (F times the profile's value)", where=where) from None
    if not math.isfinite(number):
        raise UserError(f"{path}: '{text}' is not a finite number", where=where)
    if scaled:
        if number <= 0:
            raise UserError(f"{path}: the factor in '{text}' must be a number > 0", where=where)
        value = old * number
        if not math.isfinite(value):
            raise UserError(f"{path}: {old:g} x {number:g} is not a finite number", where=where)
        return value, number
    return number, None


def overrides_of(profile: HardwareProfile, settings: Iterable[tuple[str, Any]], where: str = "--set") -> tuple[Override, ...]:
    """The `Override`s that (path, value) `settings` make on `profile`, checked: a path of the profile
    (`parameter_paths`), a number or `xF`, and a path set once (or twice to the same value)."""
    known = parameter_paths(profile)
    chosen: dict[str, Override] = {}
    for path, raw in settings:
        if path not in known:
            close = difflib.get_close_matches(path, list(known), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (`speedsim profiles --params NAME` lists them)"
            raise UserError(f"'{path}' is not a numeric parameter of profile {profile.name}{hint}", where=where)
        value, scale = _value(path, str(raw).strip(), known[path], where)
        new = Override(path, value, scale)
        old = chosen.setdefault(path, new)
        if old.value != new.value:
            raise UserError(f"{path} is set twice, to {old.label} and {new.label}", where=where)
    return tuple(chosen.values())


def with_overrides(profile: HardwareProfile, overrides: Iterable[Override], where: str = "--set", *,
                   keep_ranges: bool = True, data: dict | None = None) -> HardwareProfile:
    """`profile` with each override applied, validated as a loaded profile; named after what was set.

    `keep_ranges=False` drops every `ranges:` entry, and with it the trials of their ends (~0.6 ms of a
    what-if's ~0.65 ms, used by `--bounds` only): a grid of thousands of points validates each point's
    values and the checks between fields, as a loaded profile, and nothing else. `data`: a copy of
    `profile.model_dump()` that may be changed (the caller's, to save dumping the profile again)."""
    from pydantic import ValidationError

    from speedsim.errors import describe
    from speedsim.hardware.profile import HardwareProfile

    overrides = tuple(overrides)
    if not overrides:
        return profile
    data = profile.model_dump() if data is None else data
    for o in overrides:
        set_parameter(data, o.path, o.value)
    couple_capacities(data, profile, {o.path for o in overrides})
    couple_peaks(data, profile, {o.path for o in overrides})
    data["ranges"] = {k: v for k, v in data["ranges"].items()
                      if keep_ranges and k not in {o.path for o in overrides}}
    data["name"] = f"{profile.name} ({', '.join(o.label for o in overrides)})"
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{', '.join(o.label for o in overrides)} on {profile.name}: {describe(err)}",
                        where=where) from None


# Two fields say how much device memory there is (the DRAM level's capacity and the capacity a model must fit
# in, a little less on most profiles): a what-if of one scales the other by the same factor unless it sets both.
_CAPACITIES = ("memory.dram.capacity_MiB", "memory_capacity_GiB")


def couple_capacities(data: dict, profile: HardwareProfile, given: set[str]) -> None:
    """In the dumped `data` of `profile` with the paths `given` set: scale the capacity not given with the
    one that was (both given, or neither: nothing to do)."""
    dram, device = _CAPACITIES
    if (dram in given) == (device in given):
        return
    old_dram, old_device = profile.memory.dram.capacity_MiB, profile.memory_capacity_GiB
    if dram in given:
        data["memory_capacity_GiB"] = old_device * data["memory"]["dram"]["capacity_MiB"] / old_dram
    else:
        data["memory"]["dram"]["capacity_MiB"] = old_dram * data["memory_capacity_GiB"] / old_device


# A whole-device peak is units x clock x work per unit and cycle: a what-if of the units or the clock carries the
# matrix and vector peaks with it (each unit as strong as before) unless it sets the peak too.
_PEAK_TABLES = ("matrix_peak_TFLOPS", "vector_peak_TFLOPS")


def couple_peaks(data: dict, profile: HardwareProfile, given: set[str]) -> None:
    """In the dumped `data` of `profile` with the paths `given` set: scale every peak not given by the change of
    `compute.units` x `compute.clock_MHz` (neither given: nothing to do)."""
    c = profile.compute
    scale = 1.0
    if "compute.units" in given:
        scale *= data["compute"]["units"] / c.units
    if "compute.clock_MHz" in given:
        scale *= data["compute"]["clock_MHz"] / c.clock_MHz
    if scale == 1.0:
        return
    for table in _PEAK_TABLES:
        for dtype, peak in getattr(c, table).items():
            if f"compute.{table}.{dtype}" not in given:
                data["compute"][table][dtype] = peak * scale


def apply_settings(profile: HardwareProfile, settings: Iterable[str] | Mapping[str, Any],
                   where: str = "--set") -> tuple[HardwareProfile, tuple[Override, ...]]:
    """`profile` with `settings` applied (`PATH=VALUE` texts, or a path -> value mapping), and the
    overrides made; a `UserError` at `where` naming the path for anything wrong."""
    pairs = list(settings.items()) if isinstance(settings, Mapping) else [split_setting(s, where) for s in settings]
    overrides = overrides_of(profile, pairs, where)
    return with_overrides(profile, overrides, where), overrides


def overrides_dict(overrides: Iterable[Override]) -> dict[str, float]:
    """The `--json` record of what was set: path -> the value it got."""
    return {o.path: o.value for o in overrides}
