"""`speedsim serve`: many requests on one device, from names to a `ServeResult`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedsim.engine import Engine, Recorder
from speedsim.engine.recorder import TIMELINE_FILE
from speedsim.engine.sim import CountingEnvironment, Session, gc_paused
from speedsim.errors import UserError
from speedsim.fileio import check_output, write_text
from speedsim.pipeline import Policy
from speedsim.serve.arrivals import parse_arrivals
from speedsim.serve.metrics import RequestRecord, ServeResult, Utilization, latency_summary
from speedsim.serve.requests import METHODS, make_requests, weights_bytes
from speedsim.serve.server import PREFILL_MODES, ServerConfig, run_server
from speedsim.sharing import Sharing
from speedsim.simulate.core import effective_mode
from speedsim.simulate.scenario import cached_models, cached_profile, cached_traces
from speedsim.trace.io import resolve_trace
from speedsim.trace.schema import ExitTrace
from speedsim.trace.synthetic import generate, parse_synthetic
from speedsim.workload import get_model

MAX_REQUESTS = 1_000_000
MAX_BATCH = 4096
MAX_KV_GB = 1e6  # a petabyte: beyond it a typo (1e300 GB overflowed to an infinite capacity, kv utilisation null)


@dataclass(frozen=True)
class ServeSpec:
    """One serving simulation's inputs, by name (what `speedsim serve` and sweeps pass)."""

    profile: str
    model: str
    sharing: str
    method: str
    arrivals: str
    requests: int
    trace: str | None = None
    synthetic: str | None = None
    max_batch: int = 32
    kv_capacity_GB: float | None = None
    prefill: str = "chunked"
    prefill_budget: int = 512
    seed: int = 0
    mode: str = "graph"
    model_specs: tuple[str, ...] = ()


def _check(s: ServeSpec) -> None:
    if s.method not in METHODS:
        raise UserError(f"unknown method '{s.method}' (known: {', '.join(METHODS)})", where="--method")
    if not 1 <= s.requests <= MAX_REQUESTS:
        raise UserError(f"must be in 1..{MAX_REQUESTS}, got {s.requests}", where="--requests")
    if not 1 <= s.max_batch <= MAX_BATCH:
        raise UserError(f"must be in 1..{MAX_BATCH}, got {s.max_batch}", where="--max-batch")
    if s.prefill not in PREFILL_MODES:
        raise UserError(f"unknown prefill '{s.prefill}' (known: {', '.join(PREFILL_MODES)})", where="--prefill")
    if s.prefill_budget < 1:
        raise UserError(f"must be >= 1 token, got {s.prefill_budget}", where="--prefill-budget")
    if s.kv_capacity_GB is not None and not (math.isfinite(s.kv_capacity_GB) and 0 < s.kv_capacity_GB <= MAX_KV_GB):
        raise UserError(f"must be a number in (0, {MAX_KV_GB:g}] GB, got {s.kv_capacity_GB}", where="--kv-capacity-GB")
    if s.seed < 0:
        raise UserError(f"must be >= 0, got {s.seed}", where="--seed")
    if (s.trace is None) == (s.synthetic is None):
        raise UserError("give exactly one of --trace FILE or --synthetic SPEC", where="--trace/--synthetic")


def _traces(s: ServeSpec, repeats: int, rng: np.random.Generator) -> list[ExitTrace]:
    """One trace per request: sampled with replacement from a trace file, or generated."""
    if s.trace is not None:
        pool = [t for t in cached_traces(str(resolve_trace(s.trace))) if len(t.exits) >= 1]
        if not pool:
            raise UserError("the trace file has no sequences", where="--trace")
        return [pool[i] for i in rng.integers(0, len(pool), size=s.requests)]
    spec, _, seed = parse_synthetic(s.synthetic or "", repeats)
    return generate(spec, s.requests, seed=seed + s.seed, name=f"synthetic:{s.synthetic}")


def serve(s: ServeSpec, timeline: Path | None = None) -> ServeResult:
    """Simulate serving `s.requests` requests; a `ServeResult`."""
    _check(s)
    if timeline is not None:
        check_output(timeline, "--timeline", TIMELINE_FILE)
    sharing = Sharing.parse(s.sharing)
    profile = cached_profile(s.profile)
    spec = get_model(s.model, cached_models(tuple(s.model_specs)))
    rng = np.random.default_rng(s.seed)
    arrivals = parse_arrivals(s.arrivals, s.requests, s.seed)
    with gc_paused():  # each request's schedule: many small objects, no cycles
        requests = make_requests(_traces(s, sharing.repeats, rng), arrivals, spec, sharing, profile, s.method,
                                 Policy())
    weights = weights_bytes(spec, sharing, profile, s.method)
    capacity = s.kv_capacity_GB * 1e9 if s.kv_capacity_GB is not None \
        else profile.memory_capacity_GiB * 2**30 - weights
    largest = max(requests, key=lambda r: r.kv_bytes)
    if capacity <= 0 or largest.kv_bytes > capacity:
        raise UserError(f"one request needs {largest.kv_bytes / 1e9:.3f} GB of KV ({largest.tokens} tokens, source "
                        f"{largest.src_len}) but only {max(capacity, 0) / 1e9:.3f} GB is free for KV next to "
                        f"{weights / 1e9:.3f} GB of weights on {profile.name}", where="--kv-capacity-GB")
    recorder = Recorder() if timeline else None
    mode, _ = effective_mode(profile, s.mode)  # a CPU host has no graph mode: the result says eager
    engine = Engine(profile, mode, recorder=recorder)  # type: ignore[arg-type]
    env = CountingEnvironment()
    session = Session(engine, env, streams=2 if s.prefill == "stream" else 1)
    config = ServerConfig(s.method, s.max_batch, capacity, s.prefill, s.prefill_budget,
                          profile.host.round_trip_us)
    server = run_server(session, config, requests)
    records = [RequestRecord(r.rid, r.arrival_us, r.admitted_us, r.first_token_us, r.done_us, r.tokens, r.src_len)
               for r in server.requests]
    result = session.result()
    facts = latency_summary(records)
    span = facts["makespan_us"]
    peak = profile.matrix_peak(profile.default_dtype, False)
    if recorder is not None and timeline is not None:
        _write_timeline(timeline, recorder, server.queue_samples)
    return ServeResult(
        profile=profile.name, model=spec.name, sharing=str(sharing), method=s.method, mode=mode, **facts,
        mean_batch=server.batch_sum / max(server.steps, 1),
        mean_tokens_per_step=server.token_sum / max(server.steps, 1),
        mean_queue_length=server.queue_area / span,
        steps=server.steps, events=env.processed,
        utilization=Utilization(compute=result.flops / (span * 1e-6 * peak),
                                dram=result.busy_us["dram"] / span,
                                kv=server.kv_area / (span * capacity)),
        kv_capacity_bytes=capacity,
    )


def _write_timeline(path: Path, recorder: Recorder, queue: list[tuple[float, int]]) -> None:
    """The Chrome trace: one track per stream, and the waiting queue's length as a counter track."""
    trace = recorder.chrome_trace()
    trace["traceEvents"].append({"ph": "M", "pid": 3, "name": "process_name", "args": {"name": "queue"}})
    trace["traceEvents"] += [{"ph": "C", "pid": 3, "ts": t, "name": "waiting requests", "args": {"waiting": n}}
                             for t, n in queue]
    write_text(path, json.dumps(trace))
