"""Key numbers of every profile, for `speedsim profiles`."""

from __future__ import annotations

import os

from speedsim.errors import UserError
from speedsim.hardware.files import (
    ProfileCheck,
    list_profile_files,
    load_profile_file,
    profile_dir,
    profile_dir_source,
)
from speedsim.userpath import one_line, shown


def profile_table(directory: str | os.PathLike[str] | None = None,
                  check: ProfileCheck | None = None) -> list[dict]:
    """Validate (and `check`) every profile file of `directory` (`--dir`; default: the profile directory in
    use); one row of key numbers each. No profiles (a directory that does not exist, or holds no *.yaml
    file) and the first invalid file are a `UserError`: the former names where the directory came from
    (`--dir`, `$SPEEDSIM_PROFILES`), the latter the file."""
    files = list_profile_files(directory)
    if not files:
        where = profile_dir_source(directory)
        folder = directory if directory is not None else profile_dir()
        found = "found" if where == shown(folder) else f"in {one_line(str(folder))}"  # (flag, variable: which)
        raise UserError(f"no *.yaml profiles {found}", where=where)
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
            # the execution modes it runs (--mode graph on a synchronous host runs eager)
            "modes": "eager" if p.host.synchronous else f"{p.host.mode_label('graph')}, eager",
            "eager_launch_us": p.host.launch_overhead_us["eager"],
            "graph_node_us": p.host.launch_overhead_us["graph"],
            "file": str(path),
            "sources": list(p.sources),
        })
    return rows
