"""Decoding a `SharedDecoder`: sequential greedy and SPEED pipelined greedy, with KV caches."""

from speedsim.decode.cache import KVCache
from speedsim.decode.sequential import DecodeState, decode_step, greedy, greedy_trace, prefill
from speedsim.decode.speculative import SpeedResult, speculative_step, speed

__all__ = [
    "DecodeState",
    "KVCache",
    "SpeedResult",
    "decode_step",
    "greedy",
    "greedy_trace",
    "prefill",
    "speculative_step",
    "speed",
]
