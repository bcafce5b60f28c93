"""Decoding a `SharedDecoder`: sequential greedy and SPEED pipelined greedy, with KV caches."""

from speedsim.decode.cache import KVCache
from speedsim.decode.sequential import DecodeState, decode_step, greedy, greedy_exits, prefill
from speedsim.decode.speculative import SpeedDecode, speculative_step, speed

__all__ = [
    "DecodeState",
    "KVCache",
    "SpeedDecode",
    "decode_step",
    "greedy",
    "greedy_exits",
    "prefill",
    "speculative_step",
    "speed",
]
