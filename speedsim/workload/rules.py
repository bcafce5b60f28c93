"""The software stack's kernel-selection rules, as the workload builders read them."""

from __future__ import annotations

from dataclasses import dataclass

from speedsim.hardware import HardwareProfile
from speedsim.hardware.software import HostOps


@dataclass(frozen=True)
class KernelRules:
    """The software stack's rules for a step's kernels, read from the profile's `software` section
    (what each means, and its source, is in `speedsim.hardware.software.SoftwareSpec`)."""

    tile_rows: int        # output features per GEMV block
    tile_k: int           # input features per block once split-K applies
    splitk_min_in: int    # split-K (and a reduction kernel) when in >= this ...
    units: int            # ... and the output tiles do not fill the device's units
    split_keys: int       # keys per block of split-KV attention
    split_min_keys: int   # split-KV only from this many keys
    query_tile: int       # queries per attention block when not split
    decode_query_tile: int  # queries a single-query attention kernel computes per tile (padded)
    pad_queries: bool     # attention computes whole query tiles (False: only the real queries)
    key_tile: int         # keys per step of an attention block's softmax recurrence
    split_fill: float     # split-KV only while batch x heads < this x units
    reduce_block: int     # outputs per block of a split-K reduction
    row_reuse_min: int    # fewer rows than this: one GEMV per row (weights read once per row)
    tile_tokens: int      # activation rows per GEMM block
    large_tile_features: int  # output features per block of a large square GEMM
    block_elements: int   # output elements per block of elementwise, cache-write and reduce kernels
    copy_block_bytes: int  # bytes per block of a device-to-device copy
    host_ops: HostOps     # framework ops per attention call, pass, cache write, embedding gather

    @classmethod
    def from_profile(cls, profile: HardwareProfile) -> KernelRules:
        sw = profile.software
        return cls(tile_rows=sw.gemm_tile_rows, tile_k=sw.gemm_tile_k, splitk_min_in=sw.splitk_min_in_features,
                   units=profile.compute.units, split_keys=sw.attention_split_keys,
                   split_min_keys=sw.attention_split_min_keys, query_tile=sw.attention_query_tile,
                   decode_query_tile=sw.attention_decode_query_tile, key_tile=sw.attention_key_tile,
                   pad_queries=sw.attention_pad_queries,
                   split_fill=sw.attention_split_fill, reduce_block=sw.splitk_reduce_block_elements,
                   row_reuse_min=sw.gemm_row_reuse_min, tile_tokens=sw.gemm_tile_tokens,
                   large_tile_features=sw.gemm_large_tile_features, block_elements=sw.elementwise_block_elements,
                   copy_block_bytes=sw.copy_block_KiB * 1024, host_ops=sw.host_ops)
