"""Whole decodes in a closed loop: sequential greedy and SPEED, one graph replay per step on CUDA.

Each decode is timed end to end on the host (prefill included, every step's predictions copied
back and acted on by the controller before the next step is launched), divided by the tokens
it emitted. Rows (section `decode`): pattern `sequential` (greedy; with R = 1 this is the
unshared decoder) and `pipelined` (SPEED), n = emitted tokens per sequence, ctx = source
length, L x R = the sharing; `extra` names the exit-trace file of the same decodes, so that
`speedsim validate` simulates exactly these scenarios.

Lossless check: SPEED must emit greedy's tokens. In fp32 (a CPU run, and on CUDA a verification
pass before the bf16 timing) any difference is an error. In bf16 the two may legitimately part
where the top two logits of a random model differ by less than bf16 rounding (a greedy step
computes 1 row, a SPEED step several: other kernels, other rounding); that is reported
(`greedy_match` in `extra`, and on stderr), not hidden.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from speedsim.decode import greedy
from speedsim.trace import ExitTrace, write_traces
from speedsim.validation.measure.models import Decodable
from speedsim.validation.measure.static import BUCKET, DecodeRun, StaticDecoder
from speedsim.validation.measure.timing import Recorder, sync


@dataclass(frozen=True)
class LoopBudget:
    """Timed passes over the sources (after one untimed pass that captures the graphs)."""

    passes: int = 3
    verify_sequences: int = 2  # sources also decoded in fp32 and by the functional decoder (CUDA)


def static_decoder(d: Decodable, graphs: bool) -> StaticDecoder:
    """Buffers sized for `d`'s sources and output length."""
    c = d.model.config
    lengths = [len(s) for s in d.sources]
    offset = max(lengths) - 1 if c.decoder_only else 0
    needed = offset + min(d.max_new_tokens, c.max_len - offset) + 1
    kv_len = min(-(-needed // BUCKET) * BUCKET, c.max_len)
    return StaticDecoder(d.model, src_len=max(lengths), kv_len=kv_len, graphs=graphs,
                         masked_cross=len(set(lengths)) > 1 and not c.decoder_only)


def _decode_all(dec: StaticDecoder, d: Decodable, method: str) -> list[DecodeRun]:
    fn = dec.greedy if method == "greedy" else dec.speed
    return [fn(s, d.max_new_tokens, d.eos_id) for s in d.sources]


def verify(d: Decodable, device: str, sequences: int) -> None:
    """SPEED == greedy == the functional decoder, in fp32, on the first sources; else RuntimeError."""
    ref_model = d.model if next(d.model.parameters()).dtype == torch.float32 else copy.deepcopy(d.model).float()
    sub = Decodable(ref_model, d.name, d.sources[:sequences], d.eos_id, d.max_new_tokens, d.weights)
    dec = static_decoder(sub, graphs=device == "cuda")
    for i, src in enumerate(sub.sources):
        ref = greedy(ref_model, src, d.max_new_tokens, eos_id=d.eos_id)
        g = dec.greedy(src, d.max_new_tokens, d.eos_id).tokens
        s = dec.speed(src, d.max_new_tokens, d.eos_id).tokens
        if not ref == g == s:
            first = next(j for j in range(min(len(ref), len(g), len(s)) + 1)
                         if j >= min(len(ref), len(g), len(s)) or not ref[j] == g[j] == s[j])
            raise RuntimeError(f"{d.name} {ref_model.config.sharing} source {i}: fp32 decodes differ from position "
                               f"{first} (functional greedy, static greedy, static SPEED: {ref[first:first + 3]}, "
                               f"{g[first:first + 3]}, {s[first:first + 3]}): the SPEED decoder is not lossless")
    del dec, ref_model


def trace_record(exits: list[list[int]], src_len: int, repeats: int, eos_id: int | None, seq_id: str,
                 model: str) -> ExitTrace:
    """The exit trace of one decode; `eos_id` is kept only if decoding stopped on it."""
    stopped = eos_id is not None and bool(exits) and exits[-1][-1] == eos_id
    return ExitTrace(seq_id=seq_id, src_len=src_len, repeats=repeats, exits=exits,
                     eos_id=eos_id if stopped else None, model=model)


def _traces(d: Decodable, runs: list[DecodeRun]) -> list[ExitTrace]:
    c = d.model.config
    return [trace_record(run.exits, len(src), c.repeats, d.eos_id, str(i), f"{d.name} {c.sharing} {d.weights}")
            for i, (src, run) in enumerate(zip(d.sources, runs, strict=True))]


def loop_rows(rec: Recorder, d: Decodable, trace_path: Path, budget: LoopBudget) -> None:
    """Time greedy and SPEED whole decodes of `d` (graph and eager modes on CUDA, eager on a CPU)."""
    device = rec.device
    c = d.model.config
    fp32 = next(d.model.parameters()).dtype == torch.float32
    verify(d, device, budget.verify_sequences)
    modes = (("graph", True), ("eager", False)) if device == "cuda" else (("eager", False),)
    for mode, graphs in modes:
        dec = static_decoder(d, graphs)
        greedy_runs, speed_runs = _decode_all(dec, d, "greedy"), _decode_all(dec, d, "speed")  # warm-up, captures
        match = sum(g.tokens == s.tokens for g, s in zip(greedy_runs, speed_runs, strict=True))
        if match < len(d.sources):
            if fp32:
                raise RuntimeError(f"{d.name} {c.sharing}: SPEED and greedy decodes differ in fp32 on "
                                   f"{len(d.sources) - match} of {len(d.sources)} sources: not lossless")
            sys.stderr.write(f"WARNING {d.name} {c.sharing} {d.weights} {mode}: bf16 SPEED tokens equal greedy's on "
                             f"{match} of {len(d.sources)} sources (near-tie logits rounded differently; the fp32 "
                             "check passed)\n")
        if mode == modes[0][0]:
            write_traces(trace_path, _traces(d, speed_runs))
        captured = dec.captures
        methods = [("sequential", "greedy", greedy_runs)] + ([("pipelined", "speed", speed_runs)] if c.repeats > 1 else [])
        times: dict[str, list[float]] = {m: [] for _, m, _ in methods}
        for _ in range(budget.passes):  # methods interleaved, so drift hits both alike
            for _, method, _ in methods:
                sync(device)
                t = time.perf_counter()
                runs = _decode_all(dec, d, method)
                sync(device)
                times[method].append(time.perf_counter() - t)
                if method == "speed":
                    speed_runs = runs
        first_agree = sum(e[0] == e[-1] for r in speed_runs for e in r.exits) / max(1, sum(len(r.exits) for r in speed_runs))
        for pattern, method, warm in methods:
            runs = speed_runs if method == "speed" else warm
            tokens = sum(len(r.tokens) for r in runs)
            steps = sum(r.steps for r in runs)
            us = [t * 1e6 / tokens for t in times[method]]
            extra = (f"impl=static;weights={d.weights};trace={trace_path.name};sequences={len(runs)};tokens={tokens};"
                     f"steps={steps};us_per_step={statistics.median(times[method]) * 1e6 / max(1, steps):.1f};"
                     f"host_us_per_step={sum(r.host_s for r in runs) * 1e6 / max(1, steps):.1f};"
                     f"first_exit_agree={first_agree:.3f};greedy_match={match}/{len(runs)};kv_bucket={dec.bucket};"
                     f"graphs={dec.captures}{';late_captures=' + str(dec.captures - captured) if dec.captures > captured else ''}")
            rec.add(section="decode", model=d.name, mode=mode, pattern=pattern, n=round(tokens / len(runs)),
                    ctx=round(statistics.mean(len(s) for s in d.sources)), L=c.unique_layers, R=c.repeats,
                    us_median=statistics.median(us), us_min=min(us), us_max=max(us), extra=extra)
        del dec
