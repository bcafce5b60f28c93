"""Time of one kernel on a profile, given where its bytes come from.

    t = fixed + first_byte + softmax_p(t_memory, t_compute)

    fixed      = kernel.latency_us (vector path), kernel.matrix_latency_us (GEMM: pipeline prologue
                 and epilogue) or kernel.attention_latency_us (an attention call's set-up; default
                 the matrix path's), + compute.index_cycles / clock for a kernel over
                 non-contiguous operands (offset arithmetic before its loads)
    first_byte = the idle load latency of the level its first bytes come from (DRAM or on-chip)
    t_memory   = max(dram_bytes / dram_rate, onchip_bytes / onchip_rate,         bandwidths
                     waves * (dram_bytes / unit_dram_rate + hit_bytes / unit_onchip_rate) / blocks,
                     serial work of one block (below))
    t_compute  = flops / (path_peak * efficiency * wave_utilisation)

A unit's streaming rate is Little's law: bytes in flight per unit / loaded latency of the level;
blocks run in waves of `units`, so a partial last wave streams with fewer units. (`onchip_bytes`
counts every byte through the on-chip level; `hit_bytes` = onchip - dram are served on-chip.)

Serial work of one block, where the kernel has it:
- a single-row norm (`row_elements`): one block walks the row, `row_reduce_cycles_per_element`
  per element (kernels.csv: 1.86 / 3.98 / 6.45 us at d = 768 / 2048 / 4096);
- attention (`key_tiles`): one block walks its key tiles, each `attention_tile_cycles` of
  dependent chain plus its K/V bytes at one unit's rate and its FLOPs (queries padded to the
  kernel's tile) at one unit's share of the matrix peak; the single-query kernel loads then
  computes, the multi-query one overlaps the two (kernels.csv and the layer rows: ~16 ns per key
  at d_head 64 whether the KV is in L2 or HBM, ~20 ns at d_head 128).

`softmax_p` is the soft maximum (m^p + c^p)^(1/p): memory and compute overlap well but not
perfectly near the ridge. The roofline is the closed-form lower bound every simulated kernel
time must respect: DRAM bytes at the datasheet bandwidth or FLOPs at the datasheet peak
(`KernelPlan.compute_floor_us`), whichever is larger; the engine sums it per program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np

from speedsim.errors import UserError
from speedsim.hardware import load_profile
from speedsim.hardware.parts import collective_us
from speedsim.hardware.profile import HardwareProfile
from speedsim.workload.kernels import ATTN, COLLECTIVE, MULTI_QUERY, Kernel


@dataclass(frozen=True)
class CostModel:
    """The profile's numbers the per-kernel formula needs, unpacked once for speed (bytes/us, FLOP/us)."""

    units: int
    latency_us: float
    matrix_latency_us: float     # the fixed time of a matrix-path kernel (GEMM)
    attention_latency_us: float  # ... and of an attention kernel
    p: float
    dram_Bpus: float
    onchip_Bpus: float
    unit_dram_Bpus: float        # per-unit streaming rate from DRAM (inflight / DRAM latency)
    unit_onchip_Bpus: float      # ... and from on-chip memory
    attn_dram_Bpus: float        # the same for the multi-query attention kernel (its own bytes in flight)
    attn_onchip_Bpus: float
    dram_latency_us: float       # first-byte latency of a kernel whose reads reach DRAM ...
    onchip_latency_us: float     # ... or only the on-chip level
    row_us_per_element: float    # one unit's serial time per element of a row reduction
    index_us: float              # offset arithmetic of a kernel over non-contiguous operands
    tile_us: float               # one attention block's fixed chain per key tile
    unit_matrix_FLOPpus: dict[str, float]  # one unit's share of the achievable matrix rate
    matrix_FLOPpus: dict[str, float]
    vector_FLOPpus: dict[str, float]
    dram_peak_Bpus: float
    matrix_datasheet_FLOPpus: dict[str, float]
    vector_datasheet_FLOPpus: dict[str, float]
    # the interconnect (`InterconnectSpec`; 0 without one: no collective is then built)
    link_latency_us: float = 0.0
    link_hop_us: float = 0.0
    link_us_per_byte: float = 0.0

    @classmethod
    def from_profile(cls, profile: HardwareProfile, where: str | None = None) -> CostModel:
        """The cost model of `profile`; a `UserError` at `where` (default: the profile's name) if one
        of its numbers is not finite or a rate is not positive (`check`)."""
        model = cls._unpack(profile)
        model.check(where or f"profile '{profile.name}'")
        return model

    def check(self, where: str) -> None:
        """Raise `UserError` at `where` unless every rate (bytes or FLOPs per us) is finite and > 0 and
        every other number (times, the overlap exponent) finite and >= 0.

        The profile's fields have plausible ranges; this is the guard at the end of the chain, over
        every number of the model (a field added to it is checked too), against a field with none:
        1e308 ns of latency or 1e-300 GB/s printed inf and NaN with exit 0."""
        for f in fields(self):
            value = getattr(self, f.name)
            rate = f.name.endswith("pus")  # Bpus, FLOPpus
            for key, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                if not (math.isfinite(v) and (v > 0 if rate else v >= 0)):
                    name = f.name if key is None else f"{f.name}[{key}]"
                    what, bound = ("rate", "> 0") if rate else ("number", ">= 0")
                    raise UserError(f"the profile implies a cost-model {what} {name} = {v:g} (must be finite and "
                                    f"{bound}): a number of the profile is out of any plausible range", where=where)

    @classmethod
    def _unpack(cls, profile: HardwareProfile) -> CostModel:
        c, m = profile.compute, profile.memory
        matrix_latency_us = (profile.kernel.latency_us if profile.kernel.matrix_latency_us is None
                             else profile.kernel.matrix_latency_us)
        dtypes = set(c.matrix_peak_TFLOPS) | set(c.vector_peak_TFLOPS) | {"bf16", "fp16", "fp32", "tf32", "int8"}
        link = profile.interconnect
        return cls(
            units=c.units,
            latency_us=profile.kernel.latency_us,
            matrix_latency_us=matrix_latency_us,
            attention_latency_us=(matrix_latency_us if profile.kernel.attention_latency_us is None
                                  else profile.kernel.attention_latency_us),
            p=profile.kernel.overlap_exponent,
            dram_Bpus=m.dram.achievable_Bps / 1e6,
            onchip_Bpus=profile.l2.achievable_Bps / 1e6,
            # bytes / ns = GB/s = 1e3 bytes/us
            unit_dram_Bpus=c.unit_inflight_KiB * 1024 / m.dram.latency_ns * 1e3,
            unit_onchip_Bpus=c.unit_inflight_KiB * 1024 / profile.l2.latency_ns * 1e3,
            attn_dram_Bpus=c.unit_attention_inflight_KiB * 1024 / m.dram.latency_ns * 1e3,
            attn_onchip_Bpus=c.unit_attention_inflight_KiB * 1024 / profile.l2.latency_ns * 1e3,
            dram_latency_us=m.dram.first_byte_us,
            onchip_latency_us=profile.l2.first_byte_us,
            row_us_per_element=c.row_reduce_cycles_per_element / c.clock_MHz,
            tile_us=c.attention_tile_cycles / c.clock_MHz,
            index_us=c.index_cycles / c.clock_MHz,
            unit_matrix_FLOPpus={d: profile.matrix_peak(d) / 1e6 / c.units for d in dtypes},
            matrix_FLOPpus={d: profile.matrix_peak(d) / 1e6 for d in dtypes},
            vector_FLOPpus={d: profile.vector_peak(d) / 1e6 for d in dtypes},
            dram_peak_Bpus=m.dram.bandwidth_GBps * 1e3,
            matrix_datasheet_FLOPpus={d: profile.matrix_peak(d, achievable=False) / 1e6 for d in dtypes},
            vector_datasheet_FLOPpus={d: profile.vector_peak(d, achievable=False) / 1e6 for d in dtypes},
            link_latency_us=link.latency_us if link else 0.0,
            link_hop_us=link.hop_latency_us if link else 0.0,
            link_us_per_byte=link.us_per_byte if link else 0.0,
        )

    def plan(self, k: Kernel) -> KernelPlan:
        """What kernel `k`'s time needs that does not depend on where its bytes come from (the engine
        works it out once per kernel object, then times each run of it with `plan_us`)."""
        if k.kclass == COLLECTIVE:  # the interconnect's time, all of it fixed (alpha-beta: `collective_us`)
            t = collective_us(k.kind, k.message_bytes, k.peers, self.link_latency_us, self.link_hop_us,
                              self.link_us_per_byte)
            return KernelPlan(1, 1, TileWalk.NONE, 0.0, 0.0, 0.0, 0.0, 0, None, None, t, 0.0)
        work = k.parallel_work
        units = self.units
        waves = -(-work // units)
        walk = TileWalk.NONE
        d_rate = c_rate = math_us = 0.0
        wave_tiles = 0
        if k.key_tiles:  # one block per unit walks its key tiles one after the other
            # the multi-query kernel keeps fewer loads in flight per unit than the single-query one
            multi = k.kind == MULTI_QUERY
            walk = TileWalk.OVERLAPPED if multi else TileWalk.SERIAL
            d_rate, c_rate = ((self.attn_dram_Bpus, self.attn_onchip_Bpus) if multi
                              else (self.unit_dram_Bpus, self.unit_onchip_Bpus))
            math_us = k.tile_flops / self.unit_matrix_FLOPpus[k.dtype]
            wave_tiles = waves * k.key_tiles
        # one block per row walks the row serially
        row_us = waves * k.row_elements * self.row_us_per_element if k.row_elements else None
        t_comp = None
        if k.flops:
            util = work / (waves * units)
            peak = (self.matrix_FLOPpus if k.matrix else self.vector_FLOPpus)[k.dtype]
            t_comp = k.flops / (peak * util)
            if k.dequant_ops:  # weights dequantised on the way, on the vector path, overlapped like any compute
                t_comp = t_comp + k.dequant_ops / (self.vector_FLOPpus[k.dtype] * util)
        fixed = (self.attention_latency_us if k.kclass == ATTN else self.matrix_latency_us) if k.matrix \
            else self.latency_us
        if k.indexed:
            fixed = fixed + self.index_us  # (not +=: `plan` also runs on a cost model of arrays, `plan_us_many`)
        peak_sheet = (self.matrix_datasheet_FLOPpus if k.matrix else self.vector_datasheet_FLOPpus)[k.dtype]
        floor = k.flops / peak_sheet
        if k.dequant_ops:
            floor = floor + k.dequant_ops / self.vector_datasheet_FLOPpus[k.dtype]
        return KernelPlan(waves, work, walk, d_rate, c_rate, k.tile_bytes, math_us, wave_tiles, row_us, t_comp,
                          fixed, floor)

    def plan_us(self, plan: KernelPlan, dram_bytes: float, onchip_bytes: float) -> float:
        """Device time (us) of a kernel with `plan`, alone on the device, moving `onchip_bytes` through
        on-chip memory, `dram_bytes` of them from DRAM (with concurrent streams the engine shares DRAM)."""
        return self.plan_parts(plan, dram_bytes, onchip_bytes)[0]

    def plan_parts(self, plan: KernelPlan, dram_bytes: float,
                   onchip_bytes: float) -> tuple[float, float, float, float]:
        """(time, fixed latency, DRAM transfer, on-chip transfer) of a kernel with `plan` (`plan_us`):
        its time, exactly as `plan_us` gives it, and the parts of it charged to three causes; the rest,
        time minus the three, is compute. The rule (the Euler split of a homogeneous formula, so that a
        cause's share of a kernel is the kernel time's elasticity in that cause's time):

        - fixed latency: the kernel's fixed time and the first byte's load latency;
        - the soft maximum body = (m^p + c^p)^(1/p) of memory time m and compute time c: m's share
          m^p / (m^p + c^p) of the body to memory, the rest to compute;
        - memory time is a maximum: all of it to the term that bounds it. DRAM or on-chip bandwidth;
          the units' streaming (Little's law), split between DRAM and on-chip in proportion to its two
          terms; an attention block's walk of its key tiles: the tile chain and the tile FLOPs to
          compute, its loads split DRAM / on-chip (overlapped walk: whichever of load and FLOPs bounds);
          a row reduction's serial walk: compute (cycles on one unit).
        """
        hits = onchip_bytes - dram_bytes
        bw_dram = dram_bytes / self.dram_Bpus
        bw_chip = onchip_bytes / self.onchip_Bpus
        t_bw = max(bw_dram, bw_chip)
        # memory time's attribution: fractions to DRAM and to on-chip transfer (the rest: compute)
        f_dram, f_chip = (1.0, 0.0) if bw_dram >= bw_chip else (0.0, 1.0)
        walk = plan.tile_walk
        if walk:
            d_part = dram_bytes / plan.tile_dram_Bpus
            c_part = hits / plan.tile_onchip_Bpus
            per_byte = (d_part + c_part) / onchip_bytes if onchip_bytes else 0.0
            load = plan.tile_bytes * per_byte
            # the multi-query kernel's producer warps load the next tile while its consumers compute
            # (warp-specialized, TMA); the single-query kernel loads, then computes
            math_us = plan.tile_math_us
            tile = self.tile_us + (max(load, math_us) if walk is TileWalk.OVERLAPPED else load + math_us)
            t_walk = plan.wave_tiles * tile
            t_mem = max(t_bw, t_walk)
            if t_walk > t_bw:  # the walk bounds it (so tile > 0): its loads' share to DRAM / on-chip
                loading = load if walk is TileWalk.SERIAL or load >= math_us else 0.0
                moved = d_part + c_part
                f_dram = f_chip = 0.0
                if loading > 0.0 and moved > 0.0:
                    share = loading / tile
                    f_dram, f_chip = share * d_part / moved, share * c_part / moved
        else:
            # blocks run in waves of `units`: a partial last wave streams with fewer units
            d_part = dram_bytes / self.unit_dram_Bpus
            c_part = hits / self.unit_onchip_Bpus
            t_units = (d_part + c_part) * plan.waves / plan.blocks
            t_mem = max(t_bw, t_units)
            if t_units > t_bw:
                moved = d_part + c_part
                f_dram, f_chip = d_part / moved, c_part / moved
        row_us = plan.row_us
        if row_us is not None and row_us > t_mem:
            t_mem = row_us
            f_dram = f_chip = 0.0
        t_comp = plan.compute_us
        if t_comp is None:
            t_body = memory = t_mem
        else:  # smooth_max(t_mem, t_comp, p) written out, and memory's share of it (`memory_share`)
            p = self.p
            hi, lo = (t_mem, t_comp) if t_mem >= t_comp else (t_comp, t_mem)
            if hi <= 0.0:
                t_body = memory = 0.0
            else:
                r = (lo / hi) ** p
                t_body = hi * (1.0 + r) ** (1.0 / p)
                memory = t_body / (1.0 + r) if t_mem >= t_comp else t_body * r / (1.0 + r)
        # the first bytes arrive one idle load latency after the start: from DRAM, or from on-chip memory
        first = self.dram_latency_us if dram_bytes else (self.onchip_latency_us if onchip_bytes else 0.0)
        return plan.fixed_us + first + t_body, plan.fixed_us + first, memory * f_dram, memory * f_chip


    def plan_us_many(self, plan: KernelPlan, dram_bytes: float, onchip_bytes: float) -> Any:
        """`plan_us` over many hardware points at once (`speedsim.design.grid`): this cost model's numbers and
        `plan`'s (`plan` of a cost model whose fields are numpy arrays, one value per point) are arrays, the
        bytes are one kernel run's, the same at every point (residency depends on the on-chip level only).
        The same operations in the same order as `plan_parts`'s time, each branch on a time an elementwise
        maximum or selection (`tests/test_dse.py` checks the two agree kernel by kernel)."""
        hits = onchip_bytes - dram_bytes
        bw_dram = dram_bytes / self.dram_Bpus
        bw_chip = onchip_bytes / self.onchip_Bpus
        t_bw = np.maximum(bw_dram, bw_chip)
        walk = plan.tile_walk
        if walk:
            d_part = dram_bytes / plan.tile_dram_Bpus
            c_part = hits / plan.tile_onchip_Bpus
            per_byte = (d_part + c_part) / onchip_bytes if onchip_bytes else 0.0
            load = plan.tile_bytes * per_byte
            math_us = plan.tile_math_us
            tile = self.tile_us + (np.maximum(load, math_us) if walk is TileWalk.OVERLAPPED else load + math_us)
            t_mem = np.maximum(t_bw, plan.wave_tiles * tile)
        else:
            d_part = dram_bytes / self.unit_dram_Bpus
            c_part = hits / self.unit_onchip_Bpus
            t_mem = np.maximum(t_bw, (d_part + c_part) * plan.waves / plan.blocks)
        if plan.row_us is not None:
            t_mem = np.maximum(t_mem, plan.row_us)
        t_comp = plan.compute_us
        if t_comp is None:
            t_body = t_mem
        else:  # smooth_max(t_mem, t_comp, p), elementwise
            hi, lo = np.maximum(t_mem, t_comp), np.minimum(t_mem, t_comp)
            positive = hi > 0.0
            safe = np.where(positive, hi, 1.0)
            t_body = np.where(positive, safe * (1.0 + (lo / safe) ** self.p) ** (1.0 / self.p), 0.0)
        first = self.dram_latency_us if dram_bytes else (self.onchip_latency_us if onchip_bytes else 0.0)
        return plan.fixed_us + first + t_body


class TileWalk(IntEnum):
    """How one block walks an attention kernel's key tiles."""

    NONE = 0        # not an attention kernel
    OVERLAPPED = 1  # multi-query: the next tile loads while this one computes
    SERIAL = 2      # single-query: each tile loads, then computes


class KernelPlan(NamedTuple):
    """The parts of a kernel's time that do not depend on where its bytes come from (`CostModel.plan`)."""

    waves: int                  # blocks / units, rounded up
    blocks: int                 # the kernel's parallel work
    tile_walk: TileWalk
    tile_dram_Bpus: float       # attention: one unit's streaming rate from DRAM as it walks its tiles ...
    tile_onchip_Bpus: float     # ... and from on-chip memory
    tile_bytes: float           # attention: K/V bytes of one key tile
    tile_math_us: float         # attention: one tile's FLOPs at one unit's share of the matrix peak
    wave_tiles: int             # attention: waves x key tiles
    row_us: float | None        # a row reduction's serial walk of one row
    compute_us: float | None    # FLOPs at the achievable peak, with the last wave's utilisation
    fixed_us: float             # the kernel's fixed latency
    compute_floor_us: float     # FLOPs at the datasheet peak: the roofline's compute term


def smooth_max(a: float, b: float, p: float) -> float:
    """(a^p + b^p)^(1/p): the soft maximum used to combine memory and compute time (a, b >= 0)."""
    hi, lo = (a, b) if a >= b else (b, a)
    if hi <= 0.0:
        return 0.0
    return hi * (1.0 + (lo / hi) ** p) ** (1.0 / p)


def memory_share(m: float, c: float, p: float) -> float:
    """m's share m^p / (m^p + c^p) of the soft maximum of `m` and `c` (m, c >= 0; 1 where both are 0):
    the elasticity of (m^p + c^p)^(1/p) in m."""
    if m >= c:
        if m <= 0.0:
            return 1.0
        return 1.0 / (1.0 + (c / m) ** p)
    r = (m / c) ** p
    return r / (1.0 + r)


def check_profile(profile: HardwareProfile, where: str) -> None:
    """The cost model's check of a profile (`CostModel.check`), naming `where` (its file)."""
    CostModel.from_profile(profile, where=where)


def open_profile(name_or_path: str) -> HardwareProfile:
    """A profile by name or path, validated end to end: its schema and ranges, then every rate the cost
    model derives from it (finite and positive); a bad one is refused naming its file before any run."""
    return load_profile(name_or_path, check=check_profile)
