"""Kernels of a decode step as plain records: FLOPs, bytes per tensor, exposed parallel work.

A kernel is a plain record (`Kernel`): what it computes (FLOPs on the matrix or vector path),
which tensors it touches and how many bytes it reads and writes of each (`Access`, tagged with
a tensor class: weights, kv, activations, embeddings), and how many independent blocks of
work it exposes to the device (`parallel_work`). The engine decides where each byte comes
from (on-chip or DRAM) by tracking which tensors are resident.

The kernels themselves are built by `speedsim.workload.primitives` (one GEMV, norm, cache write,
attention call, ...) under the software stack's `speedsim.workload.rules.KernelRules`, and put
together into decoder layers and the LM head by `speedsim.workload.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WEIGHTS, KV, ACTIVATIONS, EMBEDDINGS = "weights", "kv", "activations", "embeddings"
TENSOR_CLASSES = (WEIGHTS, KV, ACTIVATIONS, EMBEDDINGS)

# Kernel kinds: how the engine bounds a kernel's memory rate per unit of parallel work.
# STREAM: pipelined loads (GEMV/GEMM, copies, elementwise, and the single-query attention kernel);
# MULTI_QUERY: the multi-query attention kernel, whose block per head and query tile walks its whole
# key range under the softmax recurrence with fewer loads in flight (the profile's
# `unit_attention_inflight_KiB`) and loads the next key tile while it computes this one.
STREAM, MULTI_QUERY = "stream", "multi_query"
# ... and a collective's operation (kernels of class COLLECTIVE: their time is the interconnect's)
ALL_REDUCE, ALL_GATHER, SEND = "all_reduce", "all_gather", "send"

ACT = "act"  # all activation buffers share one identity: small and always recently written

# Kernel classes: what a kernel does, for per-class validation against measured kernel profiles
# (`speedsim.validation.kernels` maps measured kernel names onto the same classes). Not a kind:
# every attention kernel is of class ATTN, whichever its kind.
NORM, GEMM, ATTN, REDUCE, ELEMENTWISE, COPY, MASK, COLLECTIVE = (
    "norm", "gemm", "attention", "reduce", "elementwise", "copy", "mask", "collective")
KERNEL_CLASSES = (NORM, GEMM, ATTN, REDUCE, ELEMENTWISE, COPY, MASK, COLLECTIVE)


@dataclass(frozen=True, slots=True)
class Access:
    """Bytes one kernel reads and writes of one tensor."""

    tensor: str          # identity used for on-chip residency ("L0.qkv", "kv.L1.r2", "lm_head")
    tclass: str          # one of TENSOR_CLASSES
    read_bytes: float
    write_bytes: float = 0.0
    footprint_bytes: float = 0.0  # bytes of the tensor that stay live (for residency); 0 = read+write


@dataclass(frozen=True, slots=True)
class ItemAccesses:
    """Each batch item's own tensor in one kernel (its KV cache, its encoder K/V): item i reads,
    or writes, all `nbytes[i]` bytes of tensor `tensors[i]`, which is also that tensor's footprint.

    The same traffic as one `Access` per item (`expand()`), served in item order after the
    kernel's `accesses`; kept as two tuples because a batched step has hundreds of items and
    builds them every step.
    """

    tclass: str                  # one of TENSOR_CLASSES
    tensors: tuple[str, ...]
    nbytes: tuple[float, ...]
    write: bool = False          # False: each item reads its bytes; True: writes them

    def expand(self) -> tuple[Access, ...]:
        """One `Access` per item."""
        if self.write:
            return tuple(Access(t, self.tclass, 0.0, n) for t, n in zip(self.tensors, self.nbytes, strict=True))
        return tuple(Access(t, self.tclass, n, footprint_bytes=n) for t, n in zip(self.tensors, self.nbytes, strict=True))


@dataclass(frozen=True, slots=True)
class Kernel:
    """One device kernel."""

    name: str
    flops: float
    accesses: tuple[Access, ...]
    parallel_work: int           # independent blocks (CTAs, tiles) the kernel exposes
    matrix: bool = False         # runs on the matrix path (tensor cores / systolic array)
    kind: str = STREAM           # one of STREAM, MULTI_QUERY
    dtype: str = "bf16"
    host_ops: int = 1            # framework ops the host dispatches for it in eager mode (views included)
    launches: bool = True        # False: host-side framework work only, nothing runs on the device
    kclass: str = ELEMENTWISE    # one of KERNEL_CLASSES
    row_elements: int = 0        # a row reduction: elements one block walks serially (norms)
    key_tiles: int = 0           # attention: key tiles one block walks under the softmax recurrence
    tile_bytes: float = 0.0      # ... the K and V bytes of one such tile
    tile_flops: float = 0.0      # ... and its FLOPs, queries padded to the kernel's query tile
    indexed: bool = False        # operands are not contiguous: offsets are computed per element first
    items: ItemAccesses | None = None  # each batch item's own tensor, after `accesses`
    dequant_ops: float = 0.0     # vector work of dequantising weights stored in another format (per run)
    peers: int = 1               # a collective: the devices it joins (tensor or pipeline parallelism)
    message_bytes: float = 0.0   # ... and the bytes it reduces, gathers or sends

    @property
    def all_accesses(self) -> tuple[Access, ...]:
        """Every access in the order the kernel makes them: `accesses`, then one per item."""
        return self.accesses if self.items is None else self.accesses + self.items.expand()


@dataclass
class Program:
    """The kernels of one step (or one measured call), in issue order."""

    kernels: list[Kernel] = field(default_factory=list)

    def add(self, *kernels: Kernel) -> None:
        self.kernels.extend(kernels)

    def extend(self, other: Program) -> None:
        self.kernels.extend(other.kernels)

    def __len__(self) -> int:
        return len(self.kernels)

    @property
    def flops(self) -> float:
        return sum(k.flops for k in self.kernels)
