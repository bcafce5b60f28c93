"""Whole decodes in a closed loop: sequential greedy and SPEED, one graph replay per step on CUDA.

Each decode is timed end to end on the host (prefill included, every step's predictions copied
back and acted on by the controller before the next step is launched), divided by the tokens
it emitted. Rows (section `decode`): pattern `sequential` (greedy; with R = 1 this is the
unshared decoder) and `pipelined` (SPEED), n = emitted tokens per sequence, ctx = source
length, L x R = the sharing; `extra` names the exit-trace file of the same decodes, so that
`speedsim validate` simulates exactly these scenarios.

Lossless check: SPEED must emit greedy's tokens. Before timing, the first sources are decoded in
fp64 by the functional greedy decoder and by the static greedy and SPEED decoders (graph-replayed
on CUDA): any difference is an error. The timed decodes compare too: in fp32 (a CPU run) a
difference is an error as well; in bf16 the two may legitimately part
where the top two logits of a random model differ by less than bf16 rounding (a greedy step
computes 1 row, a SPEED step several: other kernels, other rounding); that is reported
(`greedy_match` in `extra`, and on stderr), not hidden.
"""

from __future__ import annotations

import copy
import dataclasses
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
from speedsim.validation.measure.timing import TimingLog, sync


@dataclass(frozen=True)
class LoopBudget:
    """Timed passes over the sources (after one untimed pass that captures the graphs)."""

    passes: int = 3
    verify_sequences: int = 2  # sources also decoded in fp64, by the functional decoder too
    # CUDA's eager mode launches every op from Python (7 ms a token at t5base on an H200, 7x the
    # graph replay): it only shows the order of magnitude, so it decodes fewer sources, once
    eager_sources: int = 2
    eager_passes: int = 1


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
    """SPEED == greedy == the functional decoder, in fp64, on the first sources; else RuntimeError.

    fp64, because a random model's top two logits are often close: in fp32 the rounding of
    differently shaped batches would part them about once in 10^4-10^5 tokens at t5base size.
    """
    ref_model = copy.deepcopy(d.model).double()
    sub = Decodable(ref_model, d.name, d.sources[:sequences], d.eos_id, d.max_new_tokens, d.weights)
    dec = static_decoder(sub, graphs=device == "cuda")
    for i, src in enumerate(sub.sources):
        ref = greedy(ref_model, src, d.max_new_tokens, eos_id=d.eos_id)
        g = dec.greedy(src, d.max_new_tokens, d.eos_id).tokens
        s = dec.speed(src, d.max_new_tokens, d.eos_id).tokens
        if not ref == g == s:
            first = next(j for j in range(min(len(ref), len(g), len(s)) + 1)
                         if j >= min(len(ref), len(g), len(s)) or not ref[j] == g[j] == s[j])
            raise RuntimeError(f"{d.name} {ref_model.config.sharing} source {i}: fp64 decodes differ from position "
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


def loop_rows(rec: TimingLog, d: Decodable, trace_path: Path, budget: LoopBudget) -> None:
    """Time greedy and SPEED whole decodes of `d` (graph and eager modes on CUDA, eager on a CPU).

    The exit traces of the first mode's SPEED decodes are written to `trace_path`. A graph mode
    whose capture fails is reported on stderr and skipped; the eager rows still come.
    """
    verify(d, rec.device, budget.verify_sequences)
    modes = (("graph", True), ("eager", False)) if rec.device == "cuda" else (("eager", False),)
    traced = False
    full = d
    for mode, graphs in modes:
        passes = budget.passes
        if rec.device == "cuda" and not graphs:
            d, passes = dataclasses.replace(full, sources=full.sources[:budget.eager_sources]), budget.eager_passes
        dec = static_decoder(d, graphs)
        try:
            warm = {"greedy": _decode_all(dec, d, "greedy"), "speed": _decode_all(dec, d, "speed")}  # captures
        except Exception as err:  # a failed graph capture loses this mode only (eager re-raises)
            if not graphs:
                raise
            torch.cuda.synchronize()
            sys.stderr.write(f"WARNING {d.name} {d.model.config.sharing}: no graph rows, capture failed "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})\n")
            continue
        match = _check_lossless(d, mode, warm)
        if not traced:
            write_traces(trace_path, _traces(d, warm["speed"]))
            traced = True
        captured = dec.captures
        methods = ["greedy"] + (["speed"] if d.model.config.repeats > 1 else [])
        times, runs = _timed(dec, d, methods, passes, rec.device)
        # one more pass that times each step's device work apart (events around every replay would
        # perturb the timed passes): `replay_us_per_step`, the part the step model predicts
        dec.time_replays = True
        replays = {m: _decode_all(dec, d, m) for m in methods}
        dec.time_replays = False
        speed_exits = [e for r in runs.get("speed", warm["speed"]) for e in r.exits]
        notes = {"first_exit_agree": f"{sum(e[0] == e[-1] for e in speed_exits) / max(1, len(speed_exits)):.3f}",
                 "greedy_match": f"{match}/{len(d.sources)}",
                 # the same greedy decodes again: fewer than all means run-to-run nondeterminism at near-ties
                 "repeat_match": f"{sum(a.tokens == b.tokens for a, b in zip(warm['greedy'], runs['greedy'], strict=True))}"
                                 f"/{len(d.sources)}",
                 "kv_bucket": dec.bucket, "graphs": dec.captures}
        if dec.captures > captured:
            notes["late_captures"] = dec.captures - captured  # a step kind first seen while timing
        for method in methods:
            replay = sum(r.replay_s for r in replays[method]) * 1e6 / max(1, sum(r.steps for r in replays[method]))
            _add_row(rec, d, mode, method, times[method], runs[method], trace_path,
                     {"replay_us_per_step": f"{replay:.1f}", **notes})
        del dec


def _check_lossless(d: Decodable, mode: str, warm: dict[str, list[DecodeRun]]) -> int:
    """How many sources SPEED decoded to greedy's tokens; fewer than all is an error in fp32."""
    match = sum(g.tokens == s.tokens for g, s in zip(warm["greedy"], warm["speed"], strict=True))
    if match < len(d.sources):
        sharing = d.model.config.sharing
        if next(d.model.parameters()).dtype == torch.float32:
            raise RuntimeError(f"{d.name} {sharing}: SPEED and greedy decodes differ in fp32 on "
                               f"{len(d.sources) - match} of {len(d.sources)} sources: not lossless")
        sys.stderr.write(f"WARNING {d.name} {sharing} {d.weights} {mode}: bf16 SPEED tokens equal greedy's on "
                         f"{match} of {len(d.sources)} sources (near-tie logits rounded differently; the fp64 "
                         "check passed)\n")
    return match


def _timed(dec: StaticDecoder, d: Decodable, methods: list[str], passes: int,
           device: str) -> tuple[dict[str, list[float]], dict[str, list[DecodeRun]]]:
    """Seconds per pass over all sources for each method (methods interleaved: drift hits both alike)."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    runs: dict[str, list[DecodeRun]] = {}
    for _ in range(passes):
        for method in methods:
            sync(device)
            t = time.perf_counter()
            runs[method] = _decode_all(dec, d, method)
            sync(device)
            times[method].append(time.perf_counter() - t)
    return times, runs


def _add_row(rec: TimingLog, d: Decodable, mode: str, method: str, times: list[float], runs: list[DecodeRun],
             trace_path: Path, notes: dict[str, object]) -> None:
    c = d.model.config
    tokens = sum(len(r.tokens) for r in runs)
    steps = max(1, sum(r.steps for r in runs))
    us = [t * 1e6 / tokens for t in times]
    extra = {"impl": "static", "weights": d.weights, "trace": trace_path.name, "sequences": len(runs),
             "tokens": tokens, "steps": steps, "us_per_step": f"{statistics.median(times) * 1e6 / steps:.1f}",
             "host_us_per_step": f"{sum(r.host_s for r in runs) * 1e6 / steps:.1f}",
             "prefill_us_per_seq": f"{sum(r.prefill_s for r in runs) * 1e6 / len(runs):.0f}",
             # per token without the prefill (eager, Python-bound on a GPU: a large share of us_* there)
             "us_per_token_no_prefill": f"{(statistics.median(times) - sum(r.prefill_s for r in runs)) * 1e6 / tokens:.1f}",
             **notes}
    rec.add(section="decode", model=d.name, mode=mode, pattern="pipelined" if method == "speed" else "sequential",
            n=round(tokens / len(runs)), ctx=round(statistics.mean(len(s) for s in d.sources)), L=c.unique_layers,
            R=c.repeats, us_median=statistics.median(us), us_min=min(us), us_max=max(us),
            extra=";".join(f"{k}={v}" for k, v in extra.items()))
