"""Key numbers of every profile, for `speedsim profiles`."""

from __future__ import annotations

from pathlib import Path

from speedsim.errors import UserError
from speedsim.hardware.files import ProfileCheck, list_profile_files, load_profile_file, profile_dir_label


def profile_table(directory: Path | None = None, check: ProfileCheck | None = None) -> list[dict]:
    """Validate (and `check`) every profile file; one row of key numbers each. The first invalid file is a
    `UserError`."""
    files = list_profile_files(directory)
    if not files:
        raise UserError("no *.yaml profiles found", where=profile_dir_label(directory))
    rows = []
    for path in files:
        p = load_profile_file(path, check)
        if p.name != path.stem:
            raise UserError(f"field 'name': '{p.name}' does not match the file name '{path.stem}'", where=str(path))
        rows.append({
            "name": p.name,
            "kind": p.kind,
            "units": p.compute.units,
            "clock_MHz": p.compute.clock_MHz,
            "dtype": p.default_dtype,  # the dtype its runs compute in, and of the peak beside it
            "matrix_TFLOPS": p.matrix_peak(p.default_dtype, achievable=False) / 1e12,
            "dram_GBps": p.memory.dram.bandwidth_GBps,
            "dram_efficiency": p.memory.dram.efficiency,
            "onchip_MiB": p.l2.capacity_MiB,
            "onchip_GBps": p.l2.bandwidth_GBps,
            "memory_GiB": p.memory_capacity_GiB,
            "kernel_latency_us": p.kernel.latency_us,
            "eager_launch_us": p.host.launch_overhead_us["eager"],
            "graph_node_us": p.host.launch_overhead_us["graph"],
            "file": str(path),
            "sources": list(p.sources),
        })
    return rows
