"""Decoding a `SharedDecoder`: sequential greedy, SPEED pipelined greedy, and greedy speculative decoding
(self-speculation from an early exit, a draft model), with KV caches."""

from speedsim.decode.cache import KVCache
from speedsim.decode.drafting import SpecDecode, draft_speculative, predictions_on_path, self_speculative
from speedsim.decode.sequential import DecodeState, decode_step, greedy, greedy_exits, prefill
from speedsim.decode.speculative import SpeedDecode, speculative_step, speed

__all__ = [
    "DecodeState",
    "KVCache",
    "SpecDecode",
    "SpeedDecode",
    "decode_step",
    "draft_speculative",
    "greedy",
    "greedy_exits",
    "predictions_on_path",
    "prefill",
    "self_speculative",
    "speculative_step",
    "speed",
]
