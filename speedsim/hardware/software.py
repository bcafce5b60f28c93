"""The software stack a profile runs: kernel selection, block sizes, framework ops per layer piece.

Not the chip: the same GPU under another library picks other kernels. Defaults are the H200's
PyTorch + cuBLAS/cuDNN stack, measured there; each profile states its own `software:` section
and sources.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


# Plausible ranges of the software section's numbers (the chip's are in speedsim.hardware.parts).
# Most framework ops one piece of a decoder takes: the profiles' are 1-12; a count of 10**30 gave
# 4e40 us per token.
MAX_HOST_OPS = 1000
# A tile, block or threshold (keys, queries, rows, features, elements, KiB): at least 1, at most 2**24.
# The profiles' are 1-4096, and 2**20 where a rule is never to apply (a CPU never splits over keys or
# K); 2**24 is 16 times that. attention_decode_query_tile = 10**30 (queries padded to it) gave 3e34 us
# per token with exit 0.
MAX_SOFTWARE_SIZE = 2**24
# `attention_split_fill`, a multiple of the units: 0.01 (never split) to 100 (split whatever the
# batch); the profiles' is 0.8 (FlashAttention's heuristic)
MIN_SPLIT_FILL, MAX_SPLIT_FILL = 0.01, 100.0


class HostOps(_Frozen):
    """Framework ops the host dispatches in eager mode for pieces of a decoder (each op costs
    `host.launch_overhead_us.eager`). Counted with torch.profiler on speedsim's decoder."""

    self_attention: int = Field(
        12, ge=0, le=MAX_HOST_OPS, description="one self-attention call: splitting q/k/v out of the fused "
        "projection, slicing or gathering the cache, the reshapes around scaled_dot_product_attention and the "
        "call itself",
    )
    cross_attention: int = Field(6, ge=0, le=MAX_HOST_OPS,
                                 description="one cross-attention call over a fixed encoder memory")
    pass_bookkeeping: int = Field(
        6, ge=0, le=MAX_HOST_OPS, description="one decoder pass before its layers: the positions, KV slots and "
        "length mask of its tokens (tensor(), arange, compare, index views); no device work",
    )
    kv_write: int = Field(2, ge=0, le=MAX_HOST_OPS,
                          description="one copy of new K (or V) rows into the cache: index, then write")
    embed: int = Field(3, ge=0, le=MAX_HOST_OPS, description="gathering the embeddings of newly launched tokens")
    norm: int = Field(
        1, ge=0, le=MAX_HOST_OPS, description="one RMSNorm call: one fused kernel on a GPU; PyTorch's CPU "
        "rms_norm runs pow, mean (sum, div), add, rsqrt and two muls as separate ops (torch.profiler, "
        "PyTorch 2.13)",
    )


class SoftwareSpec(_Frozen):
    """The software stack on the device (framework, kernel libraries), as far as it shapes a step's
    kernels: which kernel runs an op, how many blocks of work it exposes, and the host ops that
    issue it. Defaults: PyTorch with cuBLAS/cuDNN on Hopper (`DEFAULT_SOFTWARE_SOURCES`)."""

    # kernel selection (kernels.csv): how much parallel work a kernel exposes
    attention_split_keys: int = Field(
        256, gt=0, le=MAX_SOFTWARE_SIZE,
        description="keys per block when the attention kernel splits the key range (flash-decoding)"
    )
    attention_split_min_keys: int = Field(
        1024, gt=0, le=MAX_SOFTWARE_SIZE,
        description="a single-query attention splits its key range only from this many keys "
        "(kernels.csv: the 1025-key self-attention is split, the 512-key cross-attention is not)"
    )
    attention_query_tile: int = Field(64, gt=0, le=MAX_SOFTWARE_SIZE,
                                      description="queries per block of an unsplit attention kernel")
    attention_decode_query_tile: int = Field(
        16, gt=0, le=MAX_SOFTWARE_SIZE,
        description="queries a single-query (decode) attention kernel computes per key tile, padded "
        "(kernels.csv: cudnn ..._sm80_flash_fprop_wmma_f16_knob_35_16x128x64)",
    )
    attention_pad_queries: bool = Field(
        True, description="an attention kernel computes whole query tiles (tensor-core tiles: padded rows cost "
        "as much as real ones); False: only the real queries (a CPU)",
    )
    attention_key_tile: int = Field(
        128, gt=0, le=MAX_SOFTWARE_SIZE,
        description="keys one attention block loads and scores per step of its softmax recurrence "
        "(kernels.csv: the 128 of cudnn's 16x128x64 and 64x128x64 kernels)",
    )
    attention_split_fill: float = Field(
        0.8, ge=MIN_SPLIT_FILL, le=MAX_SPLIT_FILL,
        description="split-KV applies only while batch x heads x query tiles < this x units: once "
        "the unsplit kernel fills the units, the library does not split (FlashAttention's num_splits_heuristic; "
        "kernels.csv: R=4 t5base (48 heads) splits, R=4 dec1b/dec7b (128 heads) do not)",
    )
    gemm_tile_rows: int = Field(
        64, gt=0, le=MAX_SOFTWARE_SIZE,
        description="output features per block of a skinny GEMM/GEMV (sets its parallel work)"
    )
    gemm_tile_k: int = Field(2048, gt=0, le=MAX_SOFTWARE_SIZE,
                             description="input features per block of a split-K GEMV")
    splitk_reduce_block_elements: int = Field(
        512, gt=0, le=MAX_SOFTWARE_SIZE, description="outputs per block of a split-K reduction (kernels.csv: "
        "cublasLt::splitKreduce_kernel<32, 16, ...>, 32 x 16 outputs per block)",
    )
    gemm_row_reuse_min: int = Field(
        1, gt=0, le=MAX_SOFTWARE_SIZE,
        description="a skinny GEMM with fewer rows than this runs one GEMV per row, reading the "
        "weights once per row (MKL on a CPU below 4 rows); 1 = the weights are read once for all rows"
    )
    splitk_min_in_features: int = Field(
        3072, gt=0, le=MAX_SOFTWARE_SIZE,
        description="a GEMV whose output tiles do not fill the units is split over K from this width"
    )
    gemm_tile_tokens: int = Field(
        128, gt=0, le=MAX_SOFTWARE_SIZE,
        description="activation rows (tokens) per block of a GEMM: a GEMM over n rows has "
        "ceil(n / this) row tiles (assumption)",
    )
    gemm_large_tile_features: int = Field(
        128, gt=0, le=MAX_SOFTWARE_SIZE,
        description="output features per block of a large square GEMM (the ceiling gemm rows): "
        "an N x N x N product exposes (N // gemm_tile_tokens) x (N // this) blocks (assumption)",
    )
    elementwise_block_elements: int = Field(
        4096, gt=0, le=MAX_SOFTWARE_SIZE,
        description="output elements per block of an elementwise kernel, a copy of new K/V rows "
        "into the cache, and a split-K reduction (assumption)",
    )
    copy_block_KiB: int = Field(
        64, gt=0, le=MAX_SOFTWARE_SIZE,
        description="bytes per block of a device-to-device copy (the ceiling copy rows) (assumption)"
    )
    host_ops: HostOps = Field(HostOps(), description="host ops per piece of a decoder (eager)")
    sources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOFTWARE_SOURCES), min_length=1,
        description="where these numbers come from: 'measured: <file>', 'rule: ...', 'assumption: ...'",
    )
