"""`speedsim serve`: many requests on one device, from a serving run's `RunParams` to a `ServeResult`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from speedsim.engine import CountingEnvironment, Engine, Recorder
from speedsim.engine.core import gc_paused
from speedsim.engine.recorder import TIMELINE_FILE
from speedsim.errors import UserError
from speedsim.fileio import check_output, write_text
from speedsim.hardware.whatif import overrides_dict
from speedsim.pipeline import Policy
from speedsim.run import RunParams, TraceWorkload, check_decodable
from speedsim.serve.arrivals import load_fraction, parse_arrivals
from speedsim.serve.metrics import RequestRecord, ServeResult, Utilization, latency_summary
from speedsim.serve.requests import make_requests, weights_bytes
from speedsim.serve.server import ServerConfig, run_server
from speedsim.sharing import Sharing
from speedsim.simulate.core import effective_mode
from speedsim.simulate.scenario import (
    NAMED_BY_PATH,
    Sources,
    cached_models,
    cached_traces,
    cached_whatif,
    deployed,
    run_workload,
    speculation_of,
)
from speedsim.simulate.speculative import SPECULATIVE, best_window, check_window, draft_weights_bytes
from speedsim.trace.schema import ExitTrace
from speedsim.trace.synthetic import generate
from speedsim.workload import get_model

AUTO_SAMPLE = 8  # serving's auto window: chosen on the first requests' traces, each decoded alone


def _traces(run: RunParams, repeats: int, rng: np.random.Generator, base_dir: str | Path,
            sources: Sources) -> list[ExitTrace]:
    """One trace per request: sampled with replacement from a trace file, or generated."""
    requests = run.requests or 0
    workload = run_workload(run, repeats, base_dir, sources)
    if isinstance(workload, TraceWorkload):
        loaded = cached_traces(str(workload.path), sources.trace)[: workload.limit]
        pool = [t for t in loaded if len(t.exits) >= 1]
        check_decodable([len(t.exits) for t in pool], decode=False)
        return [pool[i] for i in rng.integers(0, len(pool), size=requests)]
    spec, _ = workload.spec(repeats, sources.fit)
    return generate(spec, requests, seed=workload.seed + run.serve_seed, name=f"synthetic:{workload.text}")


def nominal_rate(s: RunParams, model_specs: Sequence[str | Path] = (), base_dir: str | Path = "",
                 sources: Sources = NAMED_BY_PATH) -> float:
    """Requests per second that keep `s.max_batch` requests in flight, each as fast as alone (one request,
    batch 1): the loose upper bound that `--arrivals load:F` takes a fraction F of."""
    alone = s.model_copy(update={"requests": 1, "max_batch": 1, "arrivals": "poisson:1"})
    alone_us = _alone_e2e_us(alone, tuple(str(p) for p in model_specs), str(base_dir), sources)
    return s.max_batch / (alone_us * 1e-6)


@lru_cache(maxsize=64)
def _alone_e2e_us(alone: RunParams, model_specs: tuple[str, ...], base_dir: str, sources: Sources) -> float:
    """One request's own latency (us), simulated once per process for every load of a study."""
    return serve(alone, model_specs=model_specs, base_dir=base_dir, sources=sources).e2e_us.mean


def _load_rate(s: RunParams, model_specs: Sequence[str | Path], base_dir: str | Path,
               sources: Sources) -> float | None:
    """`load:F` arrivals: F x the nominal rate (requests/s); None for other arrivals."""
    fraction = load_fraction(s.arrivals or "")
    return None if fraction is None else fraction * nominal_rate(s, model_specs, base_dir, sources)


def serve(s: RunParams, timeline: Path | None = None, model_specs: Sequence[str | Path] = (),
          base_dir: str | Path = "", sources: Sources = NAMED_BY_PATH) -> ServeResult:
    """Simulate the serving run `s` (`s.requests` requests); a `ServeResult`. `base_dir`: the directory
    relative trace paths are read from (a sweep spec's); `sources`: where its paths came from
    (`speedsim.simulate.scenario.COMMAND_LINE` for serve's flags)."""
    if not s.serving:
        raise UserError("a serving run needs a number of requests", where="--requests")
    if timeline is not None:
        check_output(timeline, "--timeline", TIMELINE_FILE)
    sharing = Sharing.parse(s.sharing)
    profile, overrides = cached_whatif(s.profile, s.overrides)
    spec = deployed(get_model(s.model, cached_models(tuple(str(p) for p in model_specs), sources.model_specs)), s,
                    profile)
    rng = np.random.default_rng(s.serve_seed)
    requests_n = s.requests or 0
    rate = _load_rate(s, model_specs, base_dir, sources)
    arrivals = parse_arrivals(f"poisson:{rate:.6g}" if rate is not None else s.arrivals or "", requests_n,
                              s.serve_seed, base_dir)
    policy = Policy(launch_exit=s.launch_exit, max_in_flight=s.max_in_flight)
    policy.check(sharing.repeats)
    src_len = s.src_len if s.trace is not None else None  # (a synthetic workload's own source length otherwise)
    mode, _ = effective_mode(profile, s.mode)  # a CPU host has no graph mode: the result says eager
    speculation, gamma = None, 1
    with gc_paused():  # each request's schedule: many small objects, no cycles
        traces = _traces(s, sharing.repeats, rng, base_dir, sources)
        if s.serve_method in SPECULATIVE:
            speculation = replace(speculation_of(s, s.serve_method, spec, sharing, base_dir, model_specs, sources),
                                  seed=s.serve_seed)  # (the i.i.d. acceptance draws follow --seed)
            check_window(speculation, traces)  # against every request, not the sample the window is chosen on
            # auto: the window that decodes a sample of the requests' traces fastest one at a time
            gamma = speculation.gamma or best_window(speculation, profile, spec, sharing, traces[:AUTO_SAMPLE], mode,
                                                     src_len)[0]
        requests = make_requests(traces, arrivals, spec, sharing, profile, s.serve_method, policy, src_len,
                                 speculation, gamma)
    weights = weights_bytes(spec, sharing, profile, s.serve_method)
    if speculation is not None:
        weights += draft_weights_bytes(speculation, profile.default_dtype)
    capacity = s.kv_capacity_GB * 1e9 if s.kv_capacity_GB is not None \
        else profile.memory_capacity_GiB * 2**30 - weights
    largest = max(requests, key=lambda r: r.kv_bytes)
    if capacity <= 0 and speculation is not None and speculation.method == "specdec" and s.kv_capacity_GB is None:
        raise UserError(f"the target's and the draft's weights ({weights / 1e9:.3f} GB) fill {profile.name}'s memory",
                        where="--draft-model")
    if s.kv_capacity_GB is None and weights >= profile.memory_capacity_GiB * 2**30:  # before any KV: the model
        devices = f" on each of {spec.tp * spec.pp} GPUs" if spec.tp * spec.pp > 1 else ""
        raise UserError(f"{s.serve_method} ({spec.name} {sharing}{devices}) needs {weights / 2**30:.2f} GiB of weights "
                        f"but {profile.name} has {profile.memory_capacity_GiB:.2f} GiB", where="--model")
    if capacity <= 0 or largest.kv_bytes > capacity:
        raise UserError(f"one request needs {largest.kv_bytes / 1e9:.3f} GB of KV ({largest.tokens} tokens, source "
                        f"{largest.src_len}) but only {max(capacity, 0) / 1e9:.3f} GB is free for KV next to "
                        f"{weights / 1e9:.3f} GB of weights on {profile.name}", where="--kv-capacity-GB")
    recorder = Recorder() if timeline else None
    env = CountingEnvironment()
    session = Engine(profile, mode, recorder=recorder).session(env, streams=2 if s.prefill == "stream" else 1)
    config = ServerConfig(s.serve_method, s.max_batch, capacity, s.prefill, s.prefill_budget, speculation,
                          sharing.repeats)
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
        profile=profile.name, model=spec.name, sharing=str(sharing), method=s.serve_method, mode=mode,
        mode_label=profile.host.mode_label(mode), **facts,
        mean_batch=server.batch_sum / max(server.steps, 1),
        mean_tokens_per_step=server.token_sum / max(server.steps, 1),
        mean_queue_length=server.queue_area / span,
        steps=server.steps, events=env.processed,
        utilization=Utilization(compute=result.flops / (span * 1e-6 * peak),
                                dram=result.busy_us["dram"] / span,
                                kv=server.kv_area / (span * capacity)),
        kv_capacity_bytes=capacity,
        rate_per_s=rate,
        overrides=overrides_dict(overrides),
    )


def _write_timeline(path: Path, recorder: Recorder, queue: list[tuple[float, int]]) -> None:
    """The Chrome trace: one track per stream, and the waiting queue's length as a counter track."""
    trace = recorder.chrome_trace()
    trace["traceEvents"].append({"ph": "M", "pid": 3, "name": "process_name", "args": {"name": "queue"}})
    trace["traceEvents"] += [{"ph": "C", "pid": 3, "ts": t, "name": "waiting requests", "args": {"waiting": n}}
                             for t, n in queue]
    write_text(path, json.dumps(trace))
