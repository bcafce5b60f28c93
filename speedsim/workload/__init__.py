"""Step workloads: model specs and the kernels (FLOPs, bytes per tensor class, parallel work) of a step."""

from speedsim.workload.kernels import TENSOR_CLASSES, Access, Kernel, Program
from speedsim.workload.models import (
    BUILTIN_MODELS,
    ModelSpec,
    get_model,
    load_model_spec_file,
    resolve_models,
)
from speedsim.workload.rules import KernelRules

__all__ = [
    "BUILTIN_MODELS",
    "TENSOR_CLASSES",
    "Access",
    "Kernel",
    "KernelRules",
    "ModelSpec",
    "Program",
    "get_model",
    "load_model_spec_file",
    "resolve_models",
]
