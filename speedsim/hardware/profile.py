"""Hardware profiles: YAML files validated into frozen pydantic models.

Every number carries its unit in its field name (`bandwidth_GBps`, `capacity_MiB`,
`latency_us`); every profile lists its `sources`. A new chip is a new YAML file in
`hw_profiles/`, never a new class. The parts of a profile (compute, memory, kernel, host) and
the plausible ranges of their numbers are in `speedsim.hardware.parts`; reading and writing the
files is `speedsim.hardware.files`.

The cost model that reads these fields is `speedsim.engine.cost`; what each field means to it
is said in the field's description.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from speedsim.hardware.parts import (
    CAPACITY_TOLERANCE,
    ComputeSpec,
    Dtype,
    HostSpec,
    InterconnectSpec,
    KernelSpec,
    MAX_CAPACITY_MiB,
    MemoryLevel,
    MemorySpec,
    MIN_CAPACITY_MiB,
)
from speedsim.hardware.software import SoftwareSpec, _Frozen
from speedsim.hardware.whatif import set_parameter


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
    memory_capacity_GiB: float = Field(ge=MIN_CAPACITY_MiB / 1024, le=MAX_CAPACITY_MiB / 1024,
                                       description="device memory a model must fit in")
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
    interconnect: InterconnectSpec | None = Field(
        None, description="links to the other devices of a node (tensor and pipeline parallelism); none: one "
        "device only")
    ranges: dict[str, ParameterRange] = Field(
        default_factory=dict, description="parameter path (e.g. 'compute.unit_inflight_KiB', "
        "'memory.onchip.0.efficiency') -> its range, for every parameter not fitted to this device "
        "(`speedsim simulate --bounds` runs the two ends)",
    )

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
    def _peaks_given(self) -> HardwareProfile:
        for path, table in (("compute.matrix_peak_TFLOPS", self.compute.matrix_peak_TFLOPS),
                            ("compute.vector_peak_TFLOPS", self.compute.vector_peak_TFLOPS)):
            if not table:  # each value is in range by its type (PeakTFLOPS)
                raise ValueError(f"{path} is empty")
        return self

    @model_validator(mode="after")
    def _ranges_name_numbers(self) -> HardwareProfile:
        """Each range names a number of the profile, contains its value, and both ends are values
        the field itself accepts (`--bounds` runs them). Last of the checks (pydantic runs them in order):
        a profile that breaks a check between fields is refused for that, not through a range end's trial."""
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
