"""Serving simulation: many requests on one device (arrivals, queue, KV capacity, batched steps)."""

from __future__ import annotations

import json

import pytest

from speedsim import defaults
from speedsim.errors import UserError
from speedsim.run import RunParams, serve_run
from speedsim.serve import serve
from speedsim.sharing import Sharing
from speedsim.simulate import simulate, synthetic_traces
from speedsim.trace.io import write_traces
from speedsim.workload import BUILTIN_MODELS


def spec(**kw) -> RunParams:
    """A serving run from `speedsim serve`'s options (defaults as the command line's)."""
    base = {"profile": "h200", "model": "t5base", "sharing": "4x3", "method": "speed", "arrivals": "poisson:2000",
            "requests": 24, "synthetic": "mispredict=0.15,len=24,src=64", "trace": None, "max_batch": defaults.MAX_BATCH,
            "kv_capacity_GB": None, "prefill": defaults.PREFILL, "prefill_budget": defaults.PREFILL_BUDGET,
            "seed": defaults.SEED, "mode": defaults.MODE}
    return serve_run(**{**base, **kw})


@pytest.mark.parametrize("method", ["speed", "sequential", "unshared"])
def test_one_request_matches_simulate(tmp_path, h200, method):
    """One request and nothing else on the device: serve's time per output token is simulate's
    per-token time (the single-request path is the same code: engine session, step builders)."""
    traces = synthetic_traces("mispredict=0.2,len=20,src=48,seed=5", 3)
    path = tmp_path / "one.jsonl"
    write_traces(path, traces)
    served = serve(spec(method=method, requests=1, arrivals="poisson:1", trace=str(path), synthetic=None))
    alone = simulate(h200, BUILTIN_MODELS["t5base"], Sharing(4, 3), traces, "graph", ("sequential", "unshared"))
    expected = alone.speed if method == "speed" else alone.baselines[method]
    assert served.tpot_us.mean == pytest.approx(expected.per_token_us, rel=0.01)


def test_deterministic_for_a_seed():
    """The same seed gives the same numbers; another seed other arrivals."""
    a, b, c = serve(spec(seed=3)), serve(spec(seed=3)), serve(spec(seed=4))
    assert a == b
    assert a.e2e_us != c.e2e_us


def test_littles_law_on_the_queue():
    """Time-averaged queue length equals arrival rate times mean queueing time (L = lambda W) over the run."""
    r = serve(spec(requests=60, max_batch=2, arrivals="poisson:8000"))
    assert r.queue_us.mean > 0
    rate = r.requests / r.makespan_us
    assert r.mean_queue_length == pytest.approx(rate * r.queue_us.mean, rel=1e-9)


def test_kv_capacity_bounds_concurrency():
    """With KV room for about two requests, requests queue for memory although the batch has room."""
    one = 24 * 2 * 768 * 2 * 12 + 64 * 2 * 768 * 2 * 4  # KV of 24 positions, 12 caches; encoder K/V of 4 layers
    roomy = serve(spec(requests=30, arrivals="poisson:20000"))
    tight = serve(spec(requests=30, arrivals="poisson:20000", kv_capacity_GB=2.5 * one / 1e9))
    assert tight.mean_batch <= 2.0 + 1e-9 < roomy.mean_batch
    assert tight.queue_us.mean > roomy.queue_us.mean
    assert 0 < tight.utilization.kv <= 1


def test_batching_amortises_weight_reads():
    """Under load a larger batch serves more tokens per second (weights read once per step)."""
    one = serve(spec(requests=40, max_batch=1, arrivals="poisson:20000"))
    many = serve(spec(requests=40, max_batch=16, arrivals="poisson:20000"))
    assert many.throughput_tokens_per_s > 2 * one.throughput_tokens_per_s
    assert many.mean_batch > 4


def test_prefill_on_a_second_stream():
    """Prefill beside decoding on a second stream finishes every request, with its own timing."""
    chunked = serve(spec(prefill="chunked"))
    streamed = serve(spec(prefill="stream"))
    assert streamed.requests == chunked.requests == 24
    assert streamed.ttft_us.mean != chunked.ttft_us.mean


@pytest.mark.parametrize("kw, where", [
    ({"arrivals": "poisson:0"}, "--arrivals"),
    ({"arrivals": "poisson:-3"}, "--arrivals"),
    ({"arrivals": "poisson:abc"}, "--arrivals"),
    ({"arrivals": "poisson:nan"}, "--arrivals"),
    ({"arrivals": "uniform:3"}, "--arrivals"),
    ({"requests": 0}, "--requests"),
    ({"max_batch": 0}, "--max-batch"),
    ({"kv_capacity_GB": 1e-6}, "--kv-capacity-GB"),
    ({"kv_capacity_GB": float("inf")}, "--kv-capacity-GB"),
    ({"method": "beam"}, "--method"),
    ({"arrivals": "load:0"}, "--arrivals"),
    ({"arrivals": "load:-1"}, "--arrivals"),
    ({"arrivals": "load:x"}, "--arrivals"),
    ({"arrivals": "load:nan"}, "--arrivals"),
])
def test_bad_input(kw, where):
    with pytest.raises(UserError, match=where):
        serve(spec(**kw))


@pytest.mark.parametrize("text, row", [("0.5\n0.2\n", ":2"), ("-1\n", ":1"), ("0\nabc\n", ":2"), ("", "")])
def test_bad_arrival_file(tmp_path, text, row):
    path = tmp_path / "arrivals.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=f"{path}{row}"):
        serve(spec(arrivals=f"trace:{path}", requests=1))


def test_arrival_file_and_cli_timeline(cli, tmp_path):
    """`speedsim serve --json` from an arrivals file: strict JSON; the timeline has a queue counter track."""
    arrivals = tmp_path / "a.csv"
    arrivals.write_text("t_s\n0\n0.0001\n0.0001\n0.0005\n")
    timeline = tmp_path / "t.json"
    out = cli("serve", "--profile", "h200", "--model", "t5base", "--sharing", "2x6", "--synthetic",
              "mispredict=0.1,len=16", "--arrivals", f"trace:{arrivals}", "--requests", "4", "--timeline",
              str(timeline), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    for key in ("ttft_us", "tpot_us", "e2e_us", "queue_us"):
        assert set(result[key]) == {"p50", "p90", "p99", "mean"}
    assert {"compute", "dram", "kv"} <= set(result["utilization"]) and result["requests"] == 4
    events = json.loads(timeline.read_text())["traceEvents"]
    assert any(e["ph"] == "C" for e in events) and any(e["ph"] == "X" for e in events)


def test_serve_on_a_host_without_graph_mode_runs_eager(cli):
    """cpu-host has no graph mode: `serve --mode graph` simulates, and reports, eager (as simulate does)."""
    args = ("serve", "--profile", "cpu-host", "--model", "t5base", "--sharing", "4x3", "--synthetic",
            "mispredict=0.1,len=8", "--method", "speed", "--arrivals", "poisson:5", "--requests", "3", "--json")
    graph, eager = (json.loads(cli(*args, "--mode", m).stdout) for m in ("graph", "eager"))
    assert graph["mode"] == "eager" and graph == eager


def test_load_arrivals_are_a_fraction_of_the_nominal_capacity():
    """`load:F` is a Poisson process at F x max_batch / (one request's own latency, alone at batch 1), as
    the serving study defines it; the result records the rate it came to."""
    alone = serve(spec(requests=1, max_batch=1, arrivals="poisson:1"))
    loaded = serve(spec(requests=6, max_batch=4, arrivals="load:0.5"))
    assert loaded.rate_per_s == pytest.approx(0.5 * 4 / (alone.e2e_us.mean * 1e-6), rel=1e-12)
    same = serve(spec(requests=6, max_batch=4, arrivals=f"poisson:{loaded.rate_per_s:.6g}"))
    assert same.tpot_us == loaded.tpot_us and same.rate_per_s is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"serve_method": "unshared"}, "serve_method"),   # serving fields on a decode run
    ({"max_batch": 8}, "max_batch"),
    ({"arrivals": "poisson:1"}, "arrivals"),
    ({"requests": 4, "arrivals": "poisson:1", "bounds": True}, "bounds"),   # decode fields on a serving run
    ({"requests": 4, "arrivals": "poisson:1", "baselines": ("sequential",)}, "baselines"),
    ({"requests": 4}, "arrivals"),
])
def test_a_run_refuses_fields_it_would_ignore(fields, field):
    """A decode run takes no serving field and a serving run no decode-only one (they would be silently
    ignored, and two runs that differ only there would be the same run under two keys); the message
    starts with the field, and the command line names its flag."""
    from pydantic import ValidationError

    from speedsim.run.params import flag_of, run_from_options

    base = {"profile": "h200", "sharing": "4x3", "mispredict": 0.1}
    with pytest.raises(ValidationError, match=f"{field}: "):
        RunParams(**base, **fields)
    with pytest.raises(UserError, match=flag_of(field)):
        run_from_options(**base, **fields)


@pytest.mark.parametrize(("method", "extra"), [("selfspec", {"gamma": 3}),
                                               ("specdec", {"gamma": 2, "draft_depth": 1, "draft_accept": 0.6})])
def test_one_speculative_request_matches_simulate(tmp_path, h200, method, extra):
    """Issue 24: one speculative request alone is simulate's decode of its trace (same window, same steps)."""
    from speedsim.simulate.speculative import Speculation

    traces = synthetic_traces("mispredict=0.2,len=30,src=48,seed=5", 3)
    path = tmp_path / "one.jsonl"
    write_traces(path, traces)
    served = serve(spec(method=method, requests=1, arrivals="poisson:1", trace=str(path), synthetic=None,
                        speculative=extra))
    s = (Speculation("selfspec", 3) if method == "selfspec" else
         Speculation("specdec", 2, draft_spec=BUILTIN_MODELS["t5base"], draft_depth=1, alpha=0.6))
    alone = simulate(h200, BUILTIN_MODELS["t5base"], Sharing(4, 3), traces[:1], "graph", (), speculative=[s])
    assert served.tpot_us.mean == pytest.approx(alone.baselines[method].per_token_us, rel=0.01)


def test_batched_speculation_shares_the_weight_reads():
    """Eight speculative requests at once: more tokens per second than one at a time, and each one's
    tokens slower than alone (the batch's draft and verify steps run together)."""
    one = serve(spec(method="selfspec", requests=16, max_batch=1, arrivals="poisson:100000", speculative={"gamma": 3}))
    eight = serve(spec(method="selfspec", requests=16, max_batch=8, arrivals="poisson:100000",
                       speculative={"gamma": 3}))
    assert eight.throughput_tokens_per_s > 1.5 * one.throughput_tokens_per_s
    assert eight.tpot_us.p50 > one.tpot_us.p50
