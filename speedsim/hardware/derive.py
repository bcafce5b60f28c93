"""Derive a GPU profile from its datasheet and the rule learned on the calibrated H200.

Only the H200 has measurements in the repository, so the other GPU profiles take
- from their datasheet (`experiments/hardware/gpu_datasheets.yaml`, each number with its source): units, clock,
  matrix and vector peaks, DRAM bandwidth and capacity, L2 capacity, shared memory per unit;
- from the calibrated H200 profile, by this rule:
  - achievable fractions (DRAM, on-chip, matrix, vector), on-chip usable fraction and the soft-max
    exponent carry over unchanged (same kind of memory system), and so does the whole `software`
    section (same software stack: PyTorch, cuBLAS/cuDNN);
  - times that are counts of clock cycles scale with the inverse clock: the fixed kernel
    latencies (vector and matrix path), the graph start, node spacing and gap, and the on-chip load
    latencies (`x h200_clock / clock`); parameters given in cycles (row reduction, attention key
    tile, offset arithmetic) carry over as they are;
  - bytes in flight per unit scale with the unit's shared memory (the staging buffers that
    hold those loads): `x smem_KiB / reference smem_KiB` (the reference profile's
    `compute.smem_per_unit_KiB`, 228 KiB on the H200);
  - DRAM load latency is kept (DRAM technology changes it less than the data here can resolve);
  - on-chip bandwidth = the H200's on-chip bytes per unit per clock x units x clock;
  - host eager overhead (and a closed decode loop's host time, `loop_us`) carries over unless the datasheet entry gives `host_speed` (relative
    single-thread speed of the host CPU, e.g. 0.5 for a Jetson's Arm cores): then it is divided
    by that.

`speedsim profiles derive --datasheet FILE [--gpu NAME] --out FILE` applies this rule to one datasheet entry
(`read_datasheet`: a file of one entry, or a `gpus:` list as the shipped file); the shipped derived profiles
come out of it byte for byte (`tests/test_whatif.py`). `speedsim profiles derive --from NAME --set PATH=VALUE
--out FILE` writes a what-if as a profile (`whatif_profile`), its `sources` saying what was changed from what.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speedsim.errors import UserError, describe
from speedsim.fileio import check_output
from speedsim.hardware.files import (
    PROFILE_FILE,
    PROFILE_SUFFIXES,
    ProfileCheck,
    load_profile,
    save_profile,
    whatif_checked,
)
from speedsim.hardware.parts import InterconnectSpec
from speedsim.hardware.profile import HardwareProfile
from speedsim.hardware.whatif import Override, overrides_dict, parameter_paths
from speedsim.userpath import probe, shown, user_path
from speedsim.yamlio import read_mapping, validate_as


class GpuDatasheet(BaseModel):
    """Published numbers of one GPU (units in the names), with where they came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    units: int = Field(gt=0)
    clock_MHz: float = Field(gt=0)
    smem_per_unit_KiB: float = Field(gt=0)
    matrix_peak_TFLOPS: dict[str, float]
    vector_peak_TFLOPS: dict[str, float]
    dram_name: str
    dram_bandwidth_GBps: float = Field(gt=0)
    memory_capacity_GiB: float = Field(gt=0)
    l2_capacity_MiB: float = Field(gt=0)
    host_speed: float = Field(1.0, gt=0)
    interconnect: InterconnectSpec | None = None  # links to the other GPUs of a node (none: one GPU)
    sources: list[str] = Field(min_length=1)


def derive_gpu(sheet: GpuDatasheet, ref: HardwareProfile, ref_smem_KiB: float | None = None) -> HardwareProfile:
    """Apply the rule above to one datasheet.

    `ref_smem_KiB`: shared memory per unit of the reference device; default: the reference
    profile's `compute.smem_per_unit_KiB`, which it must then give.
    """
    if ref_smem_KiB is None:
        ref_smem_KiB = ref.compute.smem_per_unit_KiB
    if ref_smem_KiB is None:
        raise ValueError(f"profile {ref.name} gives no compute.smem_per_unit_KiB to derive other GPUs from")
    cycles = ref.compute.clock_MHz / sheet.clock_MHz
    inflight = sheet.smem_per_unit_KiB / ref_smem_KiB
    ref_l2 = ref.l2
    l2_bytes_per_unit_clock = ref_l2.bandwidth_GBps / (ref.compute.units * ref.compute.clock_MHz)
    r4 = lambda x: float(f"{x:.4g}")  # noqa: E731
    data = ref.model_dump()
    data.update(name=sheet.name, description=sheet.description, memory_capacity_GiB=sheet.memory_capacity_GiB)
    data["compute"].update(
        units=sheet.units, clock_MHz=sheet.clock_MHz,
        matrix_peak_TFLOPS=dict(sheet.matrix_peak_TFLOPS), vector_peak_TFLOPS=dict(sheet.vector_peak_TFLOPS),
        smem_per_unit_KiB=sheet.smem_per_unit_KiB,
        unit_inflight_KiB=r4(ref.compute.unit_inflight_KiB * inflight),
        unit_attention_inflight_KiB=r4(ref.compute.unit_attention_inflight_KiB * inflight),
    )
    data["memory"]["dram"].update(name=sheet.dram_name, bandwidth_GBps=sheet.dram_bandwidth_GBps,
                                  capacity_MiB=r4(sheet.memory_capacity_GiB * 1024))
    data["memory"]["onchip"] = [dict(data["memory"]["onchip"][0],
                                     capacity_MiB=sheet.l2_capacity_MiB,
                                     bandwidth_GBps=r4(l2_bytes_per_unit_clock * sheet.units * sheet.clock_MHz),
                                     latency_ns=r4(ref_l2.latency_ns * cycles),
                                     first_byte_ns=r4(ref_l2.first_byte_us * 1e3 * cycles))]
    data["kernel"]["latency_us"] = r4(ref.kernel.latency_us * cycles)
    for name in ("matrix_latency_us", "attention_latency_us"):
        if getattr(ref.kernel, name) is not None:
            data["kernel"][name] = r4(getattr(ref.kernel, name) * cycles)
    data["host"]["graph_start_us"] = r4(ref.host.graph_start_us * cycles)
    data["host"]["launch_overhead_us"] = {
        "eager": r4(ref.host.launch_overhead_us["eager"] / sheet.host_speed),
        "graph": r4(ref.host.launch_overhead_us["graph"] * cycles),
        "graph_gap": r4(ref.host.launch_overhead_us.graph_gap * cycles),
    }
    if ref.host.loop_us:  # the decode loop's framework calls run on the host CPU
        data["host"]["loop_us"] = r4(ref.host.loop_us / sheet.host_speed)
    data["interconnect"] = sheet.interconnect.model_dump() if sheet.interconnect is not None else None
    data["ranges"] = derived_ranges(ref, data, cycles, inflight)
    data["software"]["sources"] = [f"rule: the {ref.name} profile's software section, unchanged (same software "
                                   "stack; speedsim.hardware.derive)"]
    data["sources"] = list(sheet.sources) + [
        f"rule: speedsim.hardware.derive from the calibrated {ref.name} profile (efficiencies, latencies, "
        "in-flight bytes; see hw_profiles/README.md)"]
    return HardwareProfile.model_validate(data)


def _span(value: float, *ends: float) -> tuple[float, float]:
    r4 = lambda x: float(f"{x:.4g}")  # noqa: E731
    return r4(min(value, *ends)), r4(max(value, *ends))


def derived_ranges(ref: HardwareProfile, data: dict, cycles: float, inflight: float) -> dict[str, dict]:
    """A range, with its reason, for every parameter of a derived profile (none is fitted to its device).

    Rule-scaled numbers span the rule and its alternative (a time that is a cycle count vs a fixed
    time; in-flight bytes set by shared memory vs by the load machinery, unchanged); achievable
    fractions and per-cycle work span what is published for other GPUs or an assumed +-30%.
    """
    c, k, host, l2 = data["compute"], data["kernel"], data["host"], data["memory"]["onchip"][0]
    ref_c, ref_l2 = ref.compute, ref.l2
    clock = f"the {ref.name} value as clock cycles (the rule) or as a fixed time"
    smem = f"bytes in flight scaled by shared memory per unit (the rule, x{inflight:.3g}) or the {ref.name}'s"
    out: dict[str, tuple[tuple[float, float], str]] = {
        "kernel.latency_us": (_span(k["latency_us"], ref.kernel.latency_us), clock),
        "host.launch_overhead_us.graph": (_span(host["launch_overhead_us"]["graph"],
                                                ref.host.launch_overhead_us.graph), clock),
        "memory.onchip.0.latency_ns": (_span(l2["latency_ns"], ref_l2.latency_ns), clock),
        "memory.onchip.0.first_byte_ns": (_span(l2["first_byte_ns"], ref_l2.first_byte_us * 1e3), clock),
        "compute.unit_inflight_KiB": (_span(c["unit_inflight_KiB"], ref_c.unit_inflight_KiB), smem),
        "compute.unit_attention_inflight_KiB": (_span(c["unit_attention_inflight_KiB"],
                                                      ref_c.unit_attention_inflight_KiB), smem),
        "memory.dram.efficiency": (_span(data["memory"]["dram"]["efficiency"], 0.8),
                                   "achievable DRAM fraction not measured on this device: 0.87-0.90 is published "
                                   "for HBM on A100/H100, GDDR and LPDDR reach less (0.8 assumed)"),
        "memory.onchip.0.efficiency": (_span(l2["efficiency"], 0.4, 0.8),
                                       "L2 bandwidth is not measured on any device here (assumption)"),
        "memory.onchip.0.usable_fraction": (_span(l2["usable_fraction"], 0.5, 0.9),
                                            "share of the L2 that keeps data between kernels: partitioning and "
                                            "replication are not measured (assumption)"),
        "compute.matrix_efficiency": (_span(c["matrix_efficiency"], 0.7),
                                      "large-GEMM fraction of the dense peak: 0.78-0.82 measured on the H200, less "
                                      "on smaller GPUs (0.7 assumed)"),
        "host.launch_overhead_us.eager": (_span(host["launch_overhead_us"]["eager"],
                                                0.5 * host["launch_overhead_us"]["eager"],
                                                2.0 * host["launch_overhead_us"]["eager"]),
                                          "host CPU speed relative to the H200's host: x0.5 to x2 (assumption)"),
    }
    if k.get("matrix_latency_us") is not None and ref.kernel.matrix_latency_us is not None:
        out["kernel.matrix_latency_us"] = (_span(k["matrix_latency_us"], ref.kernel.matrix_latency_us), clock)
    if ref.host.graph_start_us:
        out["host.graph_start_us"] = (_span(host["graph_start_us"], ref.host.graph_start_us), clock)
    if ref.host.launch_overhead_us.graph_gap:
        out["host.launch_overhead_us.graph_gap"] = (_span(host["launch_overhead_us"]["graph_gap"],
                                                          ref.host.launch_overhead_us.graph_gap), clock)
    for name in ("row_reduce_cycles_per_element", "attention_tile_cycles", "index_cycles"):
        if c.get(name):
            out[f"compute.{name}"] = (_span(c[name], 0.7 * c[name], 1.3 * c[name]),
                                      f"cycles measured on the {ref.name}; another architecture's work per "
                                      "cycle differs (+-30% assumed)")
    for path, r in ref.ranges.items():  # the reference's own uncertain values (host round trip, ...)
        if path.startswith("host.") and path not in out:
            out[path] = ((r.low, r.high), f"as on the {ref.name}: {r.reason}")
    return {path: {"low": lo, "high": hi, "reason": why} for path, ((lo, hi), why) in sorted(out.items())}


def load_datasheets(path: Path) -> list[GpuDatasheet]:
    """The datasheet figures in `path` (a YAML mapping with a `gpus:` list), read by the project's YAML
    reader; a malformed file or entry is a `UserError` naming it."""
    return _datasheets(read_mapping(path, "datasheet file"), path)


def _datasheets(entries: dict, path: Path) -> list[GpuDatasheet]:
    gpus = entries.get("gpus")
    if not isinstance(gpus, list):
        raise UserError("field 'gpus': a list of datasheet entries is required", where=str(path))
    return [validate_as(GpuDatasheet, e, f"{path}: field 'gpus.{i}'") for i, e in enumerate(gpus)]


DATASHEET_FLAG = "--datasheet"


def read_datasheet(path: str | Path, gpu: str | None = None, where: str = DATASHEET_FLAG,
                   gpu_where: str = "--gpu") -> GpuDatasheet:
    """One GPU's published figures from a datasheet file (`speedsim profiles derive --datasheet FILE`).

    The file is either one entry (a mapping with the `GpuDatasheet` fields: name, description, units,
    clock_MHz, smem_per_unit_KiB, matrix_peak_TFLOPS, vector_peak_TFLOPS, dram_name, dram_bandwidth_GBps,
    memory_capacity_GiB, l2_capacity_MiB, optional host_speed, sources) or a `gpus:` list of entries, as
    `experiments/hardware/gpu_datasheets.yaml` is; then `gpu` names the entry (by its `name`), which may be
    left out only when the list has one. A malformed file or entry is a `UserError` naming it; a `gpu` that
    names no entry (or one given for a one-entry file that names another GPU) names `gpu_where`."""
    path = user_path(path, where)
    if probe(path, where) is None:
        raise UserError(f"no such file: {shown(path)}", where=where)
    data = read_mapping(path, "datasheet file")
    if "gpus" not in data:
        sheet = validate_as(GpuDatasheet, data, str(path))
        if gpu is not None and gpu != sheet.name:
            raise UserError(f"{shown(path)} holds the datasheet of '{sheet.name}', not '{gpu}'", where=gpu_where)
        return sheet
    sheets = _datasheets(data, path)
    names = [s.name for s in sheets]
    if gpu is None:
        if len(sheets) == 1:
            return sheets[0]
        raise UserError(f"{shown(path)} holds {len(sheets)} GPUs: name one with --gpu ({', '.join(names)})",
                        where=gpu_where)
    if gpu not in names:
        raise UserError(f"no GPU '{gpu}' in {shown(path)} (it holds {', '.join(names) or 'none'})", where=gpu_where)
    return sheets[names.index(gpu)]


def profile_from_datasheet(sheet: GpuDatasheet, ref: HardwareProfile, where: str = DATASHEET_FLAG,
                           ref_where: str = "--reference") -> HardwareProfile:
    """`derive_gpu(sheet, ref)`, with a reference that gives no shared memory per unit a `UserError` at
    `ref_where`, and a datasheet whose figures make no valid profile (a peak or capacity outside a field's
    range) one at `where`."""
    if ref.compute.smem_per_unit_KiB is None:
        raise UserError(f"profile {ref.name} gives no compute.smem_per_unit_KiB to derive other GPUs from",
                        where=ref_where)
    try:
        return derive_gpu(sheet, ref)
    except ValidationError as err:
        raise UserError(f"the profile derived for {sheet.name} from {ref.name} is not valid: {describe(err)}",
                        where=where) from None


# ---------------------------------------------------------------------------------- what-ifs as profiles

def _number(value: float) -> str:
    return f"{value:.6g}"


def whatif_source(base: HardwareProfile, overrides: Iterable[Override]) -> str:
    """The `sources` line of a what-if written as a profile: what was changed from what."""
    old = parameter_paths(base)
    changes = ", ".join(f"{o.path} {_number(old[o.path])} -> {_number(o.value)}"
                        + (f" (x{o.scale:g})" if o.scale is not None else "") for o in overrides)
    return f"rule: what-if of the {base.name} profile: {changes}; every other number and range as in {base.name} (--set)"


def whatif_profile(base: HardwareProfile, settings: Iterable[str] | Mapping[str, Any], name: str,
                   check: ProfileCheck | None = None, set_where: str = "--set",
                   name_where: str = "--name") -> tuple[HardwareProfile, tuple[Override, ...]]:
    """`base` with the what-if `settings` (`speedsim.hardware.whatif.apply_settings`), as a profile of its own:
    named `name`, its description and `sources` saying what was changed from what (`whatif_source`), checked
    by `check` (the engine's cost model) as a loaded profile is. A bad setting is a `UserError` at
    `set_where`, a name the profile cannot take one at `name_where`."""
    changed, overrides = whatif_checked(base, settings, check, set_where)
    data = changed.model_dump()
    labels = ", ".join(o.label for o in overrides)
    description = base.description.rstrip()
    data.update(name=name, sources=[*base.sources, whatif_source(base, overrides)],
                description=f"{description} -- what-if of {base.name}: {labels}" if description
                else f"what-if of {base.name}: {labels}")
    try:
        return HardwareProfile.model_validate(data), overrides
    except ValidationError as err:
        raise UserError(describe(err), where=name_where) from None


def renamed(profile: HardwareProfile, name: str, where: str = "--name") -> HardwareProfile:
    """`profile` under another name, the name checked as the profile's own field (a `UserError` at `where`)."""
    if name == profile.name:
        return profile
    try:
        return HardwareProfile.model_validate({**profile.model_dump(), "name": name})
    except ValidationError as err:
        raise UserError(describe(err), where=where) from None


REFERENCE = "h200"  # the calibrated profile the datasheet rule was learned on


def derive_to_file(out: str | Path, *, from_name: str | None = None, datasheet: str | Path | None = None,
                   gpu: str | None = None, reference: str | None = None, name: str | None = None,
                   settings: Sequence[str] = (), check: ProfileCheck | None = None) -> dict[str, Any]:
    """`speedsim profiles derive`: write a what-if of the profile `from_name` (at least one of `settings`), or
    the profile the rule derives from a `datasheet` entry (`gpu`) and the `reference` profile (default the
    H200's; `settings` then apply to the derived profile), to `out`, a profile YAML; what was written.

    Its name is `name`, else `out`'s file name without its suffix (as `speedsim profiles` requires of a file in
    its directory). `out` is refused, before anything is read, unless it is a new file or an earlier profile
    (`PROFILE_FILE`); nothing is written on any refusal (a `UserError` naming the flag)."""
    if (from_name is None) == (datasheet is None):
        raise UserError("give exactly one of --from NAME (a what-if) or --datasheet FILE", where="--from/--datasheet")
    if from_name is not None:
        for flag, value in (("--gpu", gpu), ("--reference", reference)):
            if value is not None:
                raise UserError("applies to --datasheet only", where=flag)
        if not settings:
            raise UserError("a what-if of --from sets at least one parameter: --set PATH=VALUE", where="--set")
    path = check_output(out, "--out", PROFILE_FILE)
    if path.suffix not in PROFILE_SUFFIXES:
        raise UserError(f"{shown(path)}: a profile file's name ends in .yaml or .yml (--profile reads it then)",
                        where="--out")
    new_name = path.stem if name is None else name
    name_where = "--out" if name is None else "--name"
    overrides: tuple[Override, ...] = ()
    if from_name is not None:
        base = load_profile(from_name, check, where="--from")
        profile, overrides = whatif_profile(base, settings, new_name, check, name_where=name_where)
        origin = {"from": base.name}
    else:
        assert datasheet is not None
        sheet = read_datasheet(datasheet, gpu)
        ref = load_profile(reference or REFERENCE, check, where="--reference")
        derived = profile_from_datasheet(sheet, ref)
        if check is not None:
            check(derived, DATASHEET_FLAG)
        if settings:
            profile, overrides = whatif_profile(derived, settings, new_name, check, name_where=name_where)
        else:
            profile = renamed(derived, new_name, name_where)
        origin = {"datasheet": str(datasheet), "gpu": sheet.name, "reference": ref.name}
    save_profile(profile, path)
    notes = [] if profile.name == path.stem else [
        f"the profile's name '{profile.name}' is not its file's name '{path.stem}': `speedsim profiles` takes it "
        f"only as {profile.name}.yaml, --profile reads it by its path"]
    return {"profile": profile.name, "out": str(path), **origin, "overrides": overrides_dict(overrides),
            "sources": list(profile.sources), "notes": notes}
