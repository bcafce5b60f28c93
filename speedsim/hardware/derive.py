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
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from speedsim.errors import UserError
from speedsim.hardware.profile import HardwareProfile
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
    entries = read_mapping(path, "datasheet file")
    gpus = entries.get("gpus")
    if not isinstance(gpus, list):
        raise UserError("field 'gpus': a list of datasheet entries is required", where=str(path))
    return [validate_as(GpuDatasheet, e, f"{path}: field 'gpus.{i}'") for i, e in enumerate(gpus)]
