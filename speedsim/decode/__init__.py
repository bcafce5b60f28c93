"""Decoding a `SharedDecoder`: sequential greedy and SPEED pipelined greedy, with KV caches."""

from speedsim.decode.cache import KVCache
from speedsim.decode.sequential import DecodeState, decode_step, greedy, greedy_exits, prefill
from speedsim.decode.speculative import SpeedResult, speculative_step, speed

__all__ = [
    "DecodeState",
    "KVCache",
    "SpeedResult",
    "decode_step",
    "greedy",
    "greedy_exits",
    "prefill",
    "speculative_step",
    "speed",
]
