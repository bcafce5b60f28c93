"""Hardware profiles: YAML files validated into frozen pydantic models.

Every number carries its unit in its field name (`bandwidth_GBps`, `capacity_MiB`,
`latency_us`); every profile lists its `sources`. A new chip is a new YAML file in
`hw_profiles/`, never a new class.

The cost model that reads these fields is `speedsim.engine.cost`; what each field means to it
is said in the field's description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from speedsim.errors import UserError
from speedsim.fileio import write_text
from speedsim.paths import PROFILE_DIR
from speedsim.yamlio import read_mapping, validate_as

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]

BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


# Sanity maxima: a value beyond them is a typo or a unit mistake, not a device.
MAX_UNITS = 1_000_000  # compute units (SMs, cores, arrays); the largest GPUs have ~150
CAPACITY_TOLERANCE = 0.01  # memory_capacity_GiB vs memory.dram.capacity_MiB: rounding, not a contradiction


class _Frozen(BaseModel):
    # strict: `units: true` is not 1, `efficiency: true` is not 1.0, `"4"` is not 4 (an int is a float)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)


# Where the software section's defaults come from (a profile that keeps them says so in its own
# `software.sources`).
DEFAULT_SOFTWARE_SOURCES = (
    "measured: experiments/measured/h200/kernels.csv (kernel selection of PyTorch + cuBLAS/cuDNN on the H200)",
    "measured: torch.profiler on speedsim's decoder in PyTorch eager (host ops per framework op)",
    "assumption: GEMM token and large-GEMM tiles (128), elementwise blocks (4096 elements), copy blocks "
    "(64 KiB): typical of the CUDA libraries, not fitted",
)


class HostOps(_Frozen):
    """Framework ops the host dispatches in eager mode for pieces of a decoder (each op costs
    `host.launch_overhead_us.eager`). Counted with torch.profiler on speedsim's decoder."""

    self_attention: int = Field(
        12, ge=0, description="one self-attention call: splitting q/k/v out of the fused projection, slicing "
        "or gathering the cache, the reshapes around scaled_dot_product_attention and the call itself",
    )
    cross_attention: int = Field(6, ge=0, description="one cross-attention call over a fixed encoder memory")
    pass_bookkeeping: int = Field(
        6, ge=0, description="one decoder pass before its layers: the positions, KV slots and length mask of "
        "its tokens (tensor(), arange, compare, index views); no device work",
    )
    kv_write: int = Field(2, ge=0, description="one copy of new K (or V) rows into the cache: index, then write")
    embed: int = Field(3, ge=0, description="gathering the embeddings of newly launched tokens")


class SoftwareSpec(_Frozen):
    """The software stack on the device (framework, kernel libraries), as far as it shapes a step's
    kernels: which kernel runs an op, how many blocks of work it exposes, and the host ops that
    issue it. Defaults: PyTorch with cuBLAS/cuDNN on Hopper (`DEFAULT_SOFTWARE_SOURCES`)."""

    # kernel selection (kernels.csv): how much parallel work a kernel exposes
    attention_split_keys: int = Field(
        256, gt=0, description="keys per block when the attention kernel splits the key range (flash-decoding)"
    )
    attention_split_min_keys: int = Field(
        1024, gt=0, description="a single-query attention splits its key range only from this many keys "
        "(kernels.csv: the 1025-key self-attention is split, the 512-key cross-attention is not)"
    )
    attention_query_tile: int = Field(64, gt=0, description="queries per block of an unsplit attention kernel")
    attention_decode_query_tile: int = Field(
        16, gt=0, description="queries a single-query (decode) attention kernel computes per key tile, padded "
        "(kernels.csv: cudnn ..._sm80_flash_fprop_wmma_f16_knob_35_16x128x64)",
    )
    attention_pad_queries: bool = Field(
        True, description="an attention kernel computes whole query tiles (tensor-core tiles: padded rows cost "
        "as much as real ones); False: only the real queries (a CPU)",
    )
    attention_key_tile: int = Field(
        128, gt=0, description="keys one attention block loads and scores per step of its softmax recurrence "
        "(kernels.csv: the 128 of cudnn's 16x128x64 and 64x128x64 kernels)",
    )
    attention_split_fill: float = Field(
        0.8, gt=0, description="split-KV applies only while batch x heads x query tiles < this x units: once "
        "the unsplit kernel fills the units, the library does not split (FlashAttention's num_splits_heuristic; "
        "kernels.csv: R=4 t5base (48 heads) splits, R=4 dec1b/dec7b (128 heads) do not)",
    )
    gemm_tile_rows: int = Field(
        64, gt=0, description="output features per block of a skinny GEMM/GEMV (sets its parallel work)"
    )
    gemm_tile_k: int = Field(2048, gt=0, description="input features per block of a split-K GEMV")
    splitk_reduce_block_elements: int = Field(
        512, gt=0, description="outputs per block of a split-K reduction (kernels.csv: "
        "cublasLt::splitKreduce_kernel<32, 16, ...>, 32 x 16 outputs per block)",
    )
    gemm_row_reuse_min: int = Field(
        1, gt=0, description="a skinny GEMM with fewer rows than this runs one GEMV per row, reading the "
        "weights once per row (MKL on a CPU below 4 rows); 1 = the weights are read once for all rows"
    )
    splitk_min_in_features: int = Field(
        3072, gt=0, description="a GEMV whose output tiles do not fill the units is split over K from this width"
    )
    gemm_tile_tokens: int = Field(
        128, gt=0, description="activation rows (tokens) per block of a GEMM: a GEMM over n rows has "
        "ceil(n / this) row tiles (assumption)",
    )
    gemm_large_tile_features: int = Field(
        128, gt=0, description="output features per block of a large square GEMM (the ceiling gemm rows): "
        "an N x N x N product exposes (N // gemm_tile_tokens) x (N // this) blocks (assumption)",
    )
    elementwise_block_elements: int = Field(
        4096, gt=0, description="output elements per block of an elementwise kernel, a copy of new K/V rows "
        "into the cache, and a split-K reduction (assumption)",
    )
    copy_block_KiB: int = Field(
        64, gt=0, description="bytes per block of a device-to-device copy (the ceiling copy rows) (assumption)"
    )
    host_ops: HostOps = Field(HostOps(), description="host ops per piece of a decoder (eager)")
    sources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOFTWARE_SOURCES), min_length=1,
        description="where these numbers come from: 'measured: <file>', 'rule: ...', 'assumption: ...'",
    )


class ComputeSpec(_Frozen):
    """The device's compute units (SMs, cores, systolic arrays)."""

    units: int = Field(gt=0, le=MAX_UNITS, description="independent compute units (SMs, cores, arrays)")
    clock_MHz: float = Field(gt=0, description="sustained clock of the units")
    matrix_peak_TFLOPS: dict[Dtype, float] = Field(
        description="dense peak of the matrix path (tensor cores, systolic array) per dtype, whole device"
    )
    vector_peak_TFLOPS: dict[Dtype, float] = Field(
        description="peak of the vector/SIMD path per dtype, whole device (softmax, norms, elementwise)"
    )
    matrix_efficiency: float = Field(
        gt=0, le=1, description="achievable fraction of the matrix peak for a large, well-shaped GEMM"
    )
    vector_efficiency: float = Field(0.5, gt=0, le=1, description="achievable fraction of the vector peak")
    unit_inflight_KiB: float = Field(
        gt=0,
        description="bytes one unit keeps in flight in a pipelined streaming kernel (GEMV, copy). By "
        "Little's law a unit then streams inflight / latency from a memory level, so a kernel with few "
        "blocks cannot use the whole bandwidth, and on-chip hits stream faster than DRAM reads",
    )
    unit_attention_inflight_KiB: float = Field(
        gt=0,
        description="bytes in flight per unit in an attention kernel that walks the whole key range in one "
        "block (no split over keys): the softmax recurrence keeps fewer loads outstanding",
    )
    row_reduce_cycles_per_element: float = Field(
        0.0, ge=0, description="clock cycles per element of a row reduction run by one unit (a single-row "
        "RMSNorm: one block per row walks its d elements, reduces, then scales). kernels.csv: the norm of "
        "one row takes 1.86 / 3.98 / 6.45 us at d = 768 / 2048 / 4096 (~2.7 cycles per element on the H200)",
    )
    index_cycles: float = Field(
        0.0, ge=0, description="clock cycles a kernel over non-contiguous operands spends on offset arithmetic "
        "(an integer division per dimension and operand) before its loads: PyTorch's generic "
        "elementwise_kernel<128, 4> (KV-cache writes, the mask's where, gated activations on slices) and the "
        "reductions over strided partial sums. kernels.csv: such kernels take 1.5-2.3 us where the vectorized "
        "elementwise kernels of the same size take 0.95-1.3 us",
    )
    attention_tile_cycles: float = Field(
        0.0, ge=0, description="clock cycles of the dependent chain one attention block runs per key tile (load "
        "K, score, softmax rescale, load V, accumulate), on top of the tile's bytes and FLOPs at one unit's "
        "rates. kernels.csv and the layer rows: ~16 ns per key at d_head 64 whether the KV is in L2 or HBM",
    )
    smem_per_unit_KiB: float | None = Field(
        None, gt=0, description="shared memory per unit usable by a kernel (GPUs; the staging buffers of "
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
    capacity_MiB: float = Field(gt=0, description="capacity of the level")
    bandwidth_GBps: float = Field(gt=0, description="peak bandwidth (datasheet), reads plus writes")
    efficiency: float = Field(gt=0, le=1, description="achievable fraction of the peak bandwidth")
    latency_ns: float = Field(gt=0, description="load-to-use latency of a read served by this level under a "
                              "streaming load (sets, with the bytes in flight per unit, a unit's streaming rate)")
    first_byte_ns: float | None = Field(None, gt=0, description="load-to-use latency of the first read of a "
                                        "kernel on an idle level (what a kernel waits before its first bytes "
                                        "arrive); default: latency_ns")
    usable_fraction: float = Field(
        1.0,
        gt=0,
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
        ge=0, description="fixed device time of any kernel (launch on the device, ramp, tail, epilogue)"
    )
    matrix_latency_us: float | None = Field(
        None, ge=0, description="fixed device time of a kernel on the matrix path (GEMM, attention), in place "
        "of latency_us: its pipeline prologue (descriptors, the first stages of operand loads into shared "
        "memory) and epilogue. kernels.csv: GEMM-library kernels take ~1.4 us more than their bytes need, "
        "vectorized elementwise kernels ~0.8 us; default: latency_us",
    )
    overlap_exponent: float = Field(
        4.0,
        ge=1,
        description="p of the soft maximum (m^p + c^p)^(1/p) that combines memory and compute time: "
        "1 = no overlap, large = perfect overlap",
    )


class LaunchOverhead(_Frozen):
    """Per-kernel issue cost in each execution mode (us)."""

    eager: float = Field(ge=0, description="framework dispatch + driver launch, paid by the host per framework op")
    graph: float = Field(ge=0, description="least time from the start of a graph node to the start of the next "
                         "node of another kernel (the next node's launch is prepared while the previous one runs)")

    graph_gap: float = Field(0.0, ge=0, description="time between the end of a graph node and the start of the "
                             "next node of another kernel (the dependency's resolution on the device), on top of "
                             "`graph`, which bounds how soon after the previous node's start a node can start")

    def __getitem__(self, mode: str) -> float:
        return getattr(self, mode)


class HostSpec(_Frozen):
    """The host that issues kernels, per execution mode."""

    launch_overhead_us: LaunchOverhead
    graph_launch_us: float = Field(0.0, ge=0, description="host time to launch one whole graph")
    graph_start_us: float = Field(0.0, ge=0, description="device time from a graph's start to its first node, paid "
                                  "by every replay of a graph of several nodes (back-to-back replays do not hide it; "
                                  "a one-node graph starts as its kernel: the lmhead graph rows)")
    synchronous: bool = Field(False, description="the host runs each op itself and waits for it (a CPU): "
                              "issue and execution do not overlap")
    d2h_copy_us: float = Field(0.0, ge=0, description="the round trip of a decode step, part 1: copying the "
                               "step's exit predictions (a few bytes) from the device to the host")
    sync_us: float = Field(0.0, ge=0, description="part 2: the host noticing that the step has finished "
                           "(stream synchronisation, wake-up)")
    controller_us: float = Field(0.0, ge=0, description="part 3: the controller's own time per step (compare "
                                 "exits, choose the next step's tokens, prepare its inputs)")

    @property
    def round_trip_us(self) -> float:
        """Host time between the end of one decode step and the issue of the next (copy + sync + controller)."""
        return self.d2h_copy_us + self.sync_us + self.controller_us


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


class ParameterRange(_Frozen):
    """Where a parameter not fitted to this device's measurements may lie, and why."""

    low: float
    high: float
    reason: str = Field(min_length=1, description="why the value is uncertain and where the ends come from")

    @model_validator(mode="after")
    def _ordered(self) -> ParameterRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} > high {self.high:g}")
        return self


class HardwareProfile(_Frozen):
    """A whole device: compute, memory hierarchy, kernel and host costs, and where each came from."""

    name: str = Field(min_length=1, pattern=r"^\S(.*\S)?$",
                      description="the profile's name (its file name without .yaml); no leading or trailing blanks")
    description: str = ""
    kind: Literal["gpu", "accelerator", "cpu"]
    default_dtype: Dtype = "bf16"
    memory_capacity_GiB: float = Field(gt=0, description="device memory a model must fit in")
    compute: ComputeSpec
    memory: MemorySpec
    kernel: KernelSpec
    host: HostSpec
    software: SoftwareSpec = Field(
        SoftwareSpec(), description="the software stack's kernel selection and host ops"
    )
    sources: list[str] = Field(
        min_length=1, description="datasheet URLs, 'measured: <file>', or 'rule: <what was derived how>'"
    )
    ranges: dict[str, ParameterRange] = Field(
        default_factory=dict, description="parameter path (e.g. 'compute.unit_inflight_KiB', "
        "'memory.onchip.0.efficiency') -> its range, for every parameter not fitted to this device "
        "(`speedsim simulate --bounds` runs the two ends)",
    )

    @model_validator(mode="after")
    def _ranges_name_numbers(self) -> HardwareProfile:
        """Each range names a number of the profile, contains its value, and both ends are values
        the field itself accepts (`--bounds` runs them)."""
        data = self.model_dump()
        for path, r in self.ranges.items():
            value: object = data
            for key in path.split("."):
                if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                    value = value[int(key)]
                elif isinstance(value, dict) and key in value:
                    value = value[key]
                else:
                    raise ValueError(f"ranges: '{path}' is not a parameter of the profile")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"ranges: '{path}' is not a number")
            if not r.low <= value <= r.high:
                raise ValueError(f"ranges: '{path}' [{r.low:g}, {r.high:g}] excludes the profile's own value {value:g}")
            for end, v in (("low", r.low), ("high", r.high)):
                trial = self.model_dump(exclude={"ranges"})
                try:
                    set_parameter(trial, path, v)
                    HardwareProfile.model_validate(trial)
                except (ValueError, ValidationError) as err:
                    why = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
                    raise ValueError(f"ranges: '{path}' {end} end {v:g} is not a value the field takes ({why})") \
                        from None
        return self

    @model_validator(mode="after")
    def _consistent_memory(self) -> HardwareProfile:
        dram_GiB = self.memory.dram.capacity_MiB / 1024
        if abs(self.memory_capacity_GiB - dram_GiB) > CAPACITY_TOLERANCE * dram_GiB:
            raise ValueError(f"memory_capacity_GiB {self.memory_capacity_GiB:g} contradicts memory.dram.capacity_MiB "
                             f"{self.memory.dram.capacity_MiB:g} ({dram_GiB:.4g} GiB)")
        for i, level in enumerate(self.memory.onchip):
            if level.capacity_MiB >= self.memory.dram.capacity_MiB:
                raise ValueError(f"memory.onchip.{i}.capacity_MiB {level.capacity_MiB:g} is not smaller than "
                                 f"memory.dram.capacity_MiB {self.memory.dram.capacity_MiB:g}")
        return self

    @model_validator(mode="after")
    def _default_dtype_has_a_peak(self) -> HardwareProfile:
        if self.default_dtype not in self.compute.matrix_peak_TFLOPS | self.compute.vector_peak_TFLOPS:
            raise ValueError(f"default_dtype '{self.default_dtype}' has no peak rate in compute.matrix_peak_TFLOPS "
                             "or compute.vector_peak_TFLOPS")
        return self

    @model_validator(mode="after")
    def _positive_peaks(self) -> HardwareProfile:
        for path, table in (("compute.matrix_peak_TFLOPS", self.compute.matrix_peak_TFLOPS),
                            ("compute.vector_peak_TFLOPS", self.compute.vector_peak_TFLOPS)):
            if not table:
                raise ValueError(f"{path} is empty")
            for dtype, value in table.items():
                if value <= 0:
                    raise ValueError(f"{path}.{dtype} must be > 0")
        return self

    @property
    def l2(self) -> MemoryLevel:
        """The outermost on-chip level (L2 on GPUs, scratchpad on accelerators, LLC on CPUs)."""
        return self.memory.onchip[0]

    def matrix_peak(self, dtype: str, achievable: bool = True) -> float:
        """FLOP/s of the matrix path for `dtype` (achievable, or the datasheet peak).

        A dtype the matrix path does not list (fp32 on a GPU without TF32) runs on the vector path.
        """
        if dtype not in self.compute.matrix_peak_TFLOPS:
            return self.vector_peak(dtype, achievable)
        eff = self.compute.matrix_efficiency if achievable else 1.0
        return self.compute.matrix_peak_TFLOPS[dtype] * 1e12 * eff

    def vector_peak(self, dtype: str, achievable: bool = True) -> float:
        """FLOP/s of the vector path for `dtype` (the slowest listed rate if `dtype` is not listed)."""
        table = self.compute.vector_peak_TFLOPS
        peak = table[dtype] if dtype in table else min(table.values())
        return peak * 1e12 * (self.compute.vector_efficiency if achievable else 1.0)


def load_profile_file(path: Path) -> HardwareProfile:
    """Read and validate one profile YAML; raise `UserError` naming the file and field."""
    return validate_as(HardwareProfile, read_mapping(path, "profile"), str(path))


def profile_dir() -> Path:
    return PROFILE_DIR


def list_profile_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or profile_dir()).glob("*.yaml"))


def load_profile(name_or_path: str) -> HardwareProfile:
    """A profile by name (`h200`, a file in hw_profiles/) or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return load_profile_file(candidate)
    path = profile_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in list_profile_files())
        raise UserError(f"unknown profile '{name_or_path}' (known: {known})", where="--profile")
    return load_profile_file(path)


def save_profile(profile: HardwareProfile, path: Path) -> None:
    """Write a profile as YAML, atomically (write then rename)."""
    data = profile.model_dump(mode="json", exclude_none=True)  # an unknown optional number is left out
    write_text(path, yaml.safe_dump(data, sort_keys=False, width=100))
