"""Derive a GPU profile from its datasheet and the rule learned on the calibrated H200.

Only the H200 has measurements in the repository, so the other GPU profiles take
- from their datasheet (`experiments/hardware/gpu_datasheets.yaml`, each number with its source): units, clock,
  matrix and vector peaks, DRAM bandwidth and capacity, L2 capacity, shared memory per unit;
- from the calibrated H200 profile, by this rule:
  - achievable fractions (DRAM, on-chip, matrix, vector), on-chip usable fraction and the soft-max
    exponent carry over unchanged (same kind of memory system), and so does the whole `software`
    section (same software stack: PyTorch, cuBLAS/cuDNN);
  - times that are counts of clock cycles scale with the inverse clock: the fixed kernel
    latencies (vector and matrix path), the graph node spacing and gap, and the on-chip load
    latencies (`x h200_clock / clock`); parameters given in cycles (row reduction, attention key
    tile, offset arithmetic) carry over as they are;
  - bytes in flight per unit scale with the unit's shared memory (the staging buffers that
    hold those loads): `x smem_KiB / reference smem_KiB` (the reference profile's
    `compute.smem_per_unit_KiB`, 228 KiB on the H200);
  - DRAM load latency is kept (DRAM technology changes it less than the data here can resolve);
  - on-chip bandwidth = the H200's on-chip bytes per unit per clock x units x clock;
  - host eager overhead carries over unless the datasheet entry gives `host_speed` (relative
    single-thread speed of the host CPU, e.g. 0.5 for a Jetson's Arm cores): then it is divided
    by that.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from speedsim.hardware.profile import HardwareProfile


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
    if ref.kernel.matrix_latency_us is not None:
        data["kernel"]["matrix_latency_us"] = r4(ref.kernel.matrix_latency_us * cycles)
    data["host"]["launch_overhead_us"] = {
        "eager": r4(ref.host.launch_overhead_us["eager"] / sheet.host_speed),
        "graph": r4(ref.host.launch_overhead_us["graph"] * cycles),
        "graph_gap": r4(ref.host.launch_overhead_us.graph_gap * cycles),
    }
    data["software"]["sources"] = [f"rule: the {ref.name} profile's software section, unchanged (same software "
                                   "stack; speedsim.hardware.derive)"]
    data["sources"] = list(sheet.sources) + [
        f"rule: speedsim.hardware.derive from the calibrated {ref.name} profile (efficiencies, latencies, "
        "in-flight bytes; see hw_profiles/README.md)"]
    return HardwareProfile.model_validate(data)


def load_datasheets(path: Path) -> list[GpuDatasheet]:
    entries = yaml.safe_load(Path(path).read_text())
    return [GpuDatasheet.model_validate(e) for e in entries["gpus"]]
