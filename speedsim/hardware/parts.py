"""The parts of a hardware profile: compute units, memory levels, kernel and host costs.

Each is a frozen pydantic model whose numbers carry their unit in their name and lie in a
plausible range (the constants below); `speedsim.hardware.profile.HardwareProfile` puts them
together. What each field means to the cost model (`speedsim.engine.cost`) is said in its
description.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from speedsim.hardware.software import SoftwareSpec, _Frozen
from speedsim.limits import MAX_DEVICES

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]

BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


# Plausible ranges, closed at both ends, of every number of a profile (the software section's are in
# speedsim.hardware.software). A value outside is a typo or a unit mistake, not a device, and the cost
# model turned it into inf, NaN or 400-digit times with exit 0 (a latency of 1e308 ns, 1e-300 GB/s,
# a clock of 1e-300 MHz). Generous: the shipped profiles, the GPUs derived from datasheets and every
# value `speedsim calibrate` may fit (its FreeParameter bounds) lie well inside. A `ranges:` end is
# checked against the same bounds (it must be a value the field takes).
MAX_UNITS = 1_000_000  # compute units (SMs, cores, arrays); the largest GPUs have ~150
MIN_CLOCK_MHz, MAX_CLOCK_MHz = 1.0, 100_000.0  # no chip below 1 MHz or above 100 GHz (profiles: 1-3.7 GHz)
# a whole device's peak per dtype: 1 MFLOP/s (a microcontroller) to 1 EFLOP/s (profiles: 0.002-1979 TFLOPS)
MIN_PEAK_TFLOPS, MAX_PEAK_TFLOPS = 1e-6, 1e6
# achievable fractions of a peak, and a level's usable fraction: under 1% is no kernel and no cache
# (profiles: 0.3-1; calibrate fits 0.05-1)
MIN_FRACTION = 0.01
# bytes one unit keeps in flight, and a unit's shared memory: 10 bytes (less than one load) to 1 GiB
# (profiles: 0.25-23 KiB in flight, 100-228 KiB shared; calibrate fits 0.1-1024 KiB)
MIN_UNIT_KiB, MAX_UNIT_KiB = 0.01, 2.0**20
# a memory level's capacity: 1 KiB to 1 PiB (profiles: 0.25-131,000 MiB)
MIN_CAPACITY_MiB, MAX_CAPACITY_MiB = 2.0**-10, 2.0**30
# a memory level's bandwidth: 1 MB/s to 100 PB/s (profiles: 16-10,000 GB/s)
MIN_BANDWIDTH_GBps, MAX_BANDWIDTH_GBps = 1e-3, 1e8
# a load's latency: 0.1 ns (under a cycle at 10 GHz) to 1 ms (a page fault, not a memory level)
# (profiles: 4-600 ns; calibrate fits 20-2000 ns)
MIN_LATENCY_NS, MAX_LATENCY_NS = 0.1, 1e6
# the soft maximum's exponent: beyond 1000 it is the hard maximum to within 0.07% (profiles: 1-8)
MAX_OVERLAP_EXPONENT = 1000.0
# clock cycles of one serial chain (per row element, key tile or kernel): 1 ms at 1 GHz, 1 s at the
# slowest clock (profiles: 1.4-1816; calibrate fits up to 1e5)
MAX_CYCLES = 1e6
# a fixed time of one kernel, op or step (us): the profiles' are 0.1-20 us; 1e308 summed to inf (NaN output)
MAX_FIXED_US = 1e6
CAPACITY_TOLERANCE = 0.01  # memory_capacity_GiB vs memory.dram.capacity_MiB: rounding, not a contradiction

PeakTFLOPS = Annotated[float, Field(ge=MIN_PEAK_TFLOPS, le=MAX_PEAK_TFLOPS)]


class ComputeSpec(_Frozen):
    """The device's compute units (SMs, cores, systolic arrays)."""

    units: int = Field(gt=0, le=MAX_UNITS, description="independent compute units (SMs, cores, arrays)")
    clock_MHz: float = Field(ge=MIN_CLOCK_MHz, le=MAX_CLOCK_MHz, description="sustained clock of the units")
    matrix_peak_TFLOPS: dict[Dtype, PeakTFLOPS] = Field(
        description="dense peak of the matrix path (tensor cores, systolic array) per dtype, whole device"
    )
    vector_peak_TFLOPS: dict[Dtype, PeakTFLOPS] = Field(
        description="peak of the vector/SIMD path per dtype, whole device (softmax, norms, elementwise)"
    )
    matrix_efficiency: float = Field(
        ge=MIN_FRACTION, le=1,
        description="achievable fraction of the matrix peak for a large, well-shaped GEMM",
    )
    vector_efficiency: float = Field(0.5, ge=MIN_FRACTION, le=1,
                                     description="achievable fraction of the vector peak")
    unit_inflight_KiB: float = Field(
        ge=MIN_UNIT_KiB, le=MAX_UNIT_KiB,
        description="bytes one unit keeps in flight in a pipelined streaming kernel (GEMV, copy). By "
        "Little's law a unit then streams inflight / latency from a memory level, so a kernel with few "
        "blocks cannot use the whole bandwidth, and on-chip hits stream faster than DRAM reads",
    )
    unit_attention_inflight_KiB: float = Field(
        ge=MIN_UNIT_KiB, le=MAX_UNIT_KiB,
        description="bytes in flight per unit in the multi-query attention kernel (several queries: one block "
        "per head and query tile walks the whole key range under the softmax recurrence, and keeps fewer loads "
        "outstanding). The single-query (decode) kernel streams its K/V with unit_inflight_KiB",
    )
    row_reduce_cycles_per_element: float = Field(
        0.0, ge=0, le=MAX_CYCLES,
        description="clock cycles per element of a row reduction run by one unit (a single-row "
        "RMSNorm: one block per row walks its d elements, reduces, then scales). kernels.csv: the norm of "
        "one row takes 1.86 / 3.98 / 6.45 us at d = 768 / 2048 / 4096 (~2.7 cycles per element on the H200)",
    )
    index_cycles: float = Field(
        0.0, ge=0, le=MAX_CYCLES,
        description="clock cycles a kernel over non-contiguous operands spends on offset arithmetic "
        "(an integer division per dimension and operand) before its loads: PyTorch's generic "
        "elementwise_kernel<128, 4> (KV-cache writes, the mask's where, gated activations on slices) and the "
        "reductions over strided partial sums. kernels.csv: such kernels take 1.5-2.3 us where the vectorized "
        "elementwise kernels of the same size take 0.95-1.3 us",
    )
    attention_tile_cycles: float = Field(
        0.0, ge=0, le=MAX_CYCLES,
        description="clock cycles of the dependent chain one attention block runs per key tile (load "
        "K, score, softmax rescale, load V, accumulate), on top of the tile's bytes and FLOPs at one unit's "
        "rates. kernels.csv and the layer rows: ~16 ns per key at d_head 64 whether the KV is in L2 or HBM",
    )
    smem_per_unit_KiB: float | None = Field(
        None, ge=MIN_UNIT_KiB, le=MAX_UNIT_KiB,
        description="shared memory per unit usable by a kernel (GPUs; the staging buffers of "
        "in-flight loads). A profile other GPUs are derived from must give it (speedsim.hardware.derive)",
    )

    @model_validator(mode="before")
    @classmethod
    def _software_fields_moved(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in data:
                if key in SoftwareSpec.model_fields:
                    raise ValueError(f"compute.{key} is a software-stack rule: move it to software.{key}")
        return data


class MemoryLevel(_Frozen):
    """One level of the memory hierarchy."""

    name: str
    capacity_MiB: float = Field(ge=MIN_CAPACITY_MiB, le=MAX_CAPACITY_MiB, description="capacity of the level")
    bandwidth_GBps: float = Field(ge=MIN_BANDWIDTH_GBps, le=MAX_BANDWIDTH_GBps,
                                  description="peak bandwidth (datasheet), reads plus writes")
    efficiency: float = Field(ge=MIN_FRACTION, le=1, description="achievable fraction of the peak bandwidth")
    latency_ns: float = Field(
        ge=MIN_LATENCY_NS, le=MAX_LATENCY_NS,
        description="load-to-use latency of a read served by this level under a streaming load (sets, with "
        "the bytes in flight per unit, a unit's streaming rate)",
    )
    first_byte_ns: float | None = Field(
        None, ge=MIN_LATENCY_NS, le=MAX_LATENCY_NS,
        description="load-to-use latency of the first read of a kernel on an idle level (what a kernel waits "
        "before its first bytes arrive); default: latency_ns",
    )
    usable_fraction: float = Field(
        1.0,
        ge=MIN_FRACTION,
        le=1,
        description="fraction of the capacity that holds data reused across kernels (on-chip levels: "
        "partitioning, replication and other tenants leave less than the whole)",
    )

    @property
    def capacity_bytes(self) -> float:
        return self.capacity_MiB * 2**20

    @property
    def usable_bytes(self) -> float:
        return self.capacity_bytes * self.usable_fraction

    @property
    def first_byte_us(self) -> float:
        return (self.first_byte_ns if self.first_byte_ns is not None else self.latency_ns) / 1e3

    @property
    def achievable_Bps(self) -> float:
        return self.bandwidth_GBps * 1e9 * self.efficiency


class MemorySpec(_Frozen):
    """DRAM (device memory) and the on-chip levels, nearest to the units last."""

    dram: MemoryLevel
    onchip: list[MemoryLevel] = Field(min_length=1, description="on-chip levels, largest (outermost) first")


class KernelSpec(_Frozen):
    """Fixed costs of one kernel on the device."""

    latency_us: float = Field(
        ge=0, le=MAX_FIXED_US,
        description="fixed device time of any kernel (launch on the device, ramp, tail, epilogue)",
    )
    matrix_latency_us: float | None = Field(
        None, ge=0, le=MAX_FIXED_US,
        description="fixed device time of a kernel on the matrix path (GEMM, attention), in place of "
        "latency_us: its pipeline prologue (descriptors, the first stages of operand loads into shared "
        "memory) and epilogue. kernels.csv: GEMM-library kernels take ~1.4 us more than their bytes need, "
        "vectorized elementwise kernels ~0.8 us; default: latency_us",
    )
    attention_latency_us: float | None = Field(
        None, ge=0, le=MAX_FIXED_US,
        description="fixed device time of an attention kernel, in place of matrix_latency_us: the "
        "per-call set-up a framework's attention op does apart from its per-block work. PyTorch's CPU "
        "flash attention allocates its per-thread buffers (and converts a mask) every call: alone, one "
        "item of 16 keys takes ~7-10 us, each further (item x head) block ~0.2-0.4 us "
        "(experiments/measured/cpu-host/ops.csv); fitted with the decode steps, where the mask and the "
        "cache reads come with it, 17.5 us on cpu-host; default: matrix_latency_us",
    )
    overlap_exponent: float = Field(
        4.0,
        ge=1,
        le=MAX_OVERLAP_EXPONENT,
        description="p of the soft maximum (m^p + c^p)^(1/p) that combines memory and compute time: "
        "1 = no overlap, large = perfect overlap",
    )


class LaunchOverhead(_Frozen):
    """Per-kernel issue cost in each execution mode (us)."""

    eager: float = Field(ge=0, le=MAX_FIXED_US,
                         description="framework dispatch + driver launch, paid by the host per framework op")
    graph: float = Field(ge=0, le=MAX_FIXED_US,
                         description="least time from the start of a graph node to the start of the next node of "
                         "another kernel (the next node's launch is prepared while the previous one runs)")

    graph_gap: float = Field(0.0, ge=0, le=MAX_FIXED_US,
                             description="time between the end of a graph node and the start of the next node of "
                             "another kernel (the dependency's resolution on the device), on top of `graph`, which "
                             "bounds how soon after the previous node's start a node can start")

    def __getitem__(self, mode: str) -> float:
        return getattr(self, mode)


class HostSpec(_Frozen):
    """The host that issues kernels, per execution mode."""

    launch_overhead_us: LaunchOverhead
    graph_launch_us: float = Field(0.0, ge=0, le=MAX_FIXED_US, description="host time to launch one whole graph")
    graph_start_us: float = Field(0.0, ge=0, le=MAX_FIXED_US,
                                  description="device time from a graph's start to its first node, paid by every "
                                  "replay of a graph of several nodes (back-to-back replays do not hide it; a "
                                  "one-node graph starts as its kernel: the lmhead graph rows)")
    synchronous: bool = Field(False, description="the host runs each op itself and waits for it (a CPU): "
                              "issue and execution do not overlap")
    graph_capture: bool = Field(True, description="the host captures a step's kernels as one graph and replays "
                                "it with one launch (CUDA graphs). false: an accelerator driven by a host core "
                                "without graph capture, whose graph mode is a compiled program issuing each op "
                                "in turn (launch_overhead_us.graph per op, no graph launch or start); output calls "
                                "it compiled-program mode")
    d2h_copy_us: float = Field(0.0, ge=0, le=MAX_FIXED_US,
                               description="the round trip of a decode step, part 1: copying the step's exit "
                               "predictions (a few bytes) from the device to the host")
    sync_us: float = Field(0.0, ge=0, le=MAX_FIXED_US, description="part 2: the host noticing that the step has "
                           "finished (stream synchronisation, wake-up)")
    controller_us: float = Field(0.0, ge=0, le=MAX_FIXED_US,
                                 description="part 3: the controller's own time per step (compare exits, "
                                 "choose the next step's tokens, prepare its inputs)")
    loop_us: float = Field(0.0, ge=0, le=MAX_FIXED_US,
                           description="a decode loop over static buffers (impl=static): host time per step "
                           "beyond the round trip and the step's input copy (the framework calls that fill "
                           "the inputs, replay the step and read its outputs)")

    @model_validator(mode="after")
    def _program_has_no_graph(self) -> HostSpec:
        if not self.graph_capture and (self.graph_launch_us or self.graph_start_us):
            raise ValueError("graph_capture is false (a compiled program, no graph), so graph_launch_us and "
                             "graph_start_us must be 0")
        return self

    def mode_label(self, mode: str) -> str:
        """What a run in `mode` is on this host: 'eager', 'graph' (captured and replayed graphs) or
        'compiled-program' (graph mode on a host without graph capture)."""
        if mode == "graph" and not self.graph_capture:
            return "compiled-program"
        return mode

    @property
    def round_trip_us(self) -> float:
        """Host time between the end of one decode step and the issue of the next (copy + sync + controller)."""
        return self.d2h_copy_us + self.sync_us + self.controller_us




class InterconnectSpec(_Frozen):
    """The links between devices of one node (tensor and pipeline parallelism, `--tp`, `--pp`).

    A collective over n devices is charged in the alpha-beta form of NCCL's own cost model (its
    `tuning.cc`: a base latency, a latency per algorithm step, bytes over the bus bandwidth; nccl-tests'
    PERFORMANCE.md relates the bus bandwidth to the link's): an all-reduce of S bytes on a ring takes
    latency_us + 2(n-1) hop_latency_us + S 2(n-1)/n / (link_GBps x efficiency), an all-gather of S bytes
    in all latency_us + (n-1) hop_latency_us + S (n-1)/n / (link_GBps x efficiency), a send from one
    device to the next latency_us + hop_latency_us + S / (link_GBps x efficiency). At a decode's few
    kilobytes the latency terms are all of it: the small-message floor."""

    name: str = Field(min_length=1, description="the link: nvlink4, pcie4-x16, ...")
    link_GBps: float = Field(ge=MIN_BANDWIDTH_GBps, le=MAX_BANDWIDTH_GBps,
                             description="one device's link bandwidth, per direction (the datasheet's total over "
                             "both directions, halved)")
    efficiency: float = Field(ge=MIN_FRACTION, le=1.0,
                              description="achievable fraction of link_GBps for a collective's bus bandwidth")
    topology: Literal["switch", "ring"] = Field(description="switch: every device reaches every other at the full "
                                                "link rate (NVSwitch, a PCIe switch); ring: neighbours only")
    devices_per_node: int = Field(ge=2, le=MAX_DEVICES, description="devices the links join (--tp x --pp at most)")
    latency_us: float = Field(ge=0, le=MAX_FIXED_US, description="base latency of one collective (alpha)")
    hop_latency_us: float = Field(ge=0, le=MAX_FIXED_US, description="latency of each step of the ring algorithm")

    @property
    def us_per_byte(self) -> float:
        """The inverse of the achievable link rate (us per byte)."""
        return 1.0 / (self.link_GBps * self.efficiency * 1e3)

    def collective_us(self, op: str, nbytes: float, n: int) -> float:
        """Time (us) of collective `op` (all_reduce, all_gather, send) of `nbytes` among `n` devices."""
        return collective_us(op, nbytes, n, self.latency_us, self.hop_latency_us, self.us_per_byte)


def collective_shape(op: str, n: int) -> tuple[int, float]:
    """(ring steps, bytes each device moves per byte of the message) of collective `op` among `n` devices:
    nccl-tests' bus-bandwidth factors (PERFORMANCE.md)."""
    return {"all_reduce": (2 * (n - 1), 2 * (n - 1) / n), "all_gather": (n - 1, (n - 1) / n),
            "send": (1, 1.0)}[op]


def collective_us(op: str, nbytes: Any, n: int, latency_us: Any, hop_us: Any, us_per_byte: Any) -> Any:
    """The alpha-beta time of a collective (`InterconnectSpec`'s rule; numbers or numpy arrays)."""
    if n <= 1:
        return 0.0 * latency_us
    steps, volume = collective_shape(op, n)
    return latency_us + steps * hop_us + nbytes * volume * us_per_byte
