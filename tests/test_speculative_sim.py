"""Speculative decoding on the simulator (issue 24): against the paper's analysis, on the command line, and
refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from speedsim.hardware import HardwareProfile
from speedsim.sharing import Sharing
from speedsim.simulate import simulate, synthetic_traces
from speedsim.simulate.speculative import Speculation, speculative_phase
from speedsim.trace.schema import ExitTrace
from speedsim.workload import BUILTIN_MODELS
from speedsim.workload.models import ModelSpec

SIM = ("simulate", "--profile", "h200", "--model", "t5base")


@pytest.fixture(scope="module")
def trace_4x3() -> list[ExitTrace]:
    from speedsim.trace.io import read_traces, resolve_trace

    return read_traces(resolve_trace("4x3"))[:3]


def _weights_bound(tiny_profile_dict: dict) -> HardwareProfile:
    """A device whose every step costs its weight reads: no fixed latencies, no host time, compute 10^6 x
    faster than DRAM, and a 1 MiB on-chip level that holds a step's activations but no weight matrix (each
    of WIDE's is larger: streamed from DRAM on every read). A verify step of g + 1 tokens then reads the
    same weights as one token's step, and a draft step reads the draft's share of them."""
    d = tiny_profile_dict
    d["compute"]["matrix_peak_TFLOPS"] = {"bf16": 1e6}
    d["compute"]["vector_peak_TFLOPS"] = {"bf16": 1e6, "fp32": 1e6}
    d["memory_capacity_GiB"] = 64.0
    d["memory"]["dram"]["capacity_MiB"] = 65536
    d["host"]["launch_overhead_us"] = {"eager": 0.0, "graph": 0.0}
    return HardwareProfile.model_validate(d)


# a decoder-only model whose weights dwarf its KV, activations and head: a step is its layers' weight reads
WIDE = ModelSpec(name="wide", d_model=1024, n_heads=8, d_ff=8192, vocab=64, cross_attention_len=0)


def _one_long(n: int) -> list[ExitTrace]:
    return [ExitTrace(seq_id="s", src_len=1, repeats=1, exits=[[1]] * n)]


@pytest.mark.parametrize(("alpha", "gamma", "depth"), [pytest.param(0.8, 4, 1, marks=pytest.mark.slow),
                                                       pytest.param(0.6, 2, 3, marks=pytest.mark.slow)])
def test_speedup_is_the_papers_when_a_verify_costs_one_step(tiny_profile_dict, alpha, gamma, depth):
    """Leviathan et al. (2023), the speedup of speculative decoding over greedy with i.i.d. acceptance a,
    window g and a draft step costing c of a target step: E / (g c + 1), E = (1 - a^(g+1)) / (1 - a) the
    tokens per iteration. On a device where a verify step costs one target step (checked here from the
    engine's own program times), the simulated speedup is E / (g c + 1) within 2%, with E the iterations'
    own mean (the derivation's E against the formula on long sequences: test_drafting)."""
    from speedsim.engine import Engine

    p = _weights_bound(tiny_profile_dict)
    traces = _one_long(400)
    s = Speculation("specdec", gamma, draft_spec=WIDE, draft_depth=depth, alpha=alpha)
    r = simulate(p, WIDE, Sharing(12, 1), traces, baselines=("sequential",), speculative=[s])
    greedy, spec = r.baselines["sequential"], r.baselines["specdec"]
    phase, acc = speculative_phase(WIDE, Sharing(12, 1), traces, p, s, gamma, None, s.matches(traces))
    times = Engine(p, "graph").run(phase.programs).program_us()
    decode = [(t, e) for t, e, pre in zip(times, phase.emits, phase.prefill, strict=True) if not pre]
    verify = [t for t, e in decode if e]
    draft = [t for t, e in decode if not e]
    step = greedy.per_token_us
    assert sum(verify) / len(verify) == pytest.approx(step, rel=0.01)  # the premise
    c = sum(draft) / len(draft) / step
    assert c == pytest.approx(depth / 12, rel=0.05)
    assert spec.tokens_per_iteration == acc.tokens_per_iteration
    assert spec.tokens_per_iteration == pytest.approx((1 - alpha ** (gamma + 1)) / (1 - alpha), rel=0.1)
    want = acc.tokens_per_iteration / (acc.drafted / acc.iterations * c + 1)
    assert greedy.per_token_us / spec.per_token_us == pytest.approx(want, rel=0.02)
    assert spec.gamma == gamma


def test_perfect_drafts_on_a_fixed_latency_device_save_the_steps_they_skip(tiny_profile_dict):
    """Self-speculation from exit 0 of a 2x6 model with every draft right: each iteration emits g + 1 tokens."""
    p = _weights_bound(tiny_profile_dict)
    traces = synthetic_traces("perfect,len=81,seqs=1,src=4", 6)  # 80 decoded: 20 windows
    r = simulate(p, BUILTIN_MODELS["t5base"], Sharing(2, 6), traces, baselines=("sequential",),
                 speculative=[Speculation("selfspec", 3, draft_exit=0)])
    m = r.baselines["selfspec"]
    assert m.acceptance_rate == 1.0 and m.tokens_per_iteration == pytest.approx(4.0, rel=0.01)
    assert m.per_token_us < r.baselines["sequential"].per_token_us


def test_auto_gamma_is_the_best_window(h200, trace_4x3):
    traces = trace_4x3[:1]
    spec, sharing = BUILTIN_MODELS["t5base"], Sharing(4, 3)
    auto = simulate(h200, spec, sharing, traces, baselines=(), speculative=[Speculation("selfspec", None)])
    best = auto.baselines["selfspec"]
    assert best.gamma in range(1, 6)  # (the sequence has 6 tokens: 5 after the prefill)
    for g in (1, 2, 4):
        fixed = simulate(h200, spec, sharing, traces, baselines=(), speculative=[Speculation("selfspec", g)])
        assert fixed.baselines["selfspec"].per_token_us >= best.per_token_us - 1e-9


def test_time_by_cause_and_memory_of_a_draft_model(h200, trace_4x3):
    r = simulate(h200, BUILTIN_MODELS["t5base"], Sharing(4, 3), trace_4x3[:2], baselines=(),
                 speculative=[Speculation("specdec", 2, draft_spec=BUILTIN_MODELS["t5base"], draft_depth=2, alpha=0.5)])
    m = r.baselines["specdec"]
    assert sum(m.time_by_cause_us_per_token.values()) == pytest.approx(m.per_token_us, rel=1e-6)
    assert m.memory_bytes_by_part["draft_weights"] > 0 and m.memory_bytes > r.speed.memory_bytes


def test_cli_json_gives_the_speculative_figures(cli):
    res = cli(*SIM, "--sharing", "4x3", "--trace", "4x3", "--limit", "2", "--baseline", "none", "--method", "selfspec",
              "--gamma", "3", "--method", "specdec", "--draft-depth", "1", "--draft-accept", "0.6", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    for name in ("selfspec", "specdec"):
        m = got["baselines"][name]
        assert m["gamma"] == 3 and 0 <= m["acceptance_rate"] <= 1 and m["tokens_per_iteration"] >= 1
        assert m["per_token_us"] > 0 and m["time_by_cause_us_per_token"]
    assert "gamma" not in got  # SPEED's own figures carry none
    text = cli(*SIM, "--sharing", "4x3", "--trace", "4x3", "--limit", "2", "--method", "selfspec")
    assert text.returncode == 0 and "selfspec: window " in text.stdout and "tokens per iteration" in text.stdout


@pytest.mark.parametrize(("args", "flag"), [
    (("--sharing", "4x3", "--method", "selfspec", "--gamma", "0"), "--gamma"),
    (("--sharing", "4x3", "--method", "selfspec", "--gamma", "-2"), "--gamma"),
    (("--sharing", "4x3", "--method", "selfspec", "--gamma", "1.5"), "--gamma"),
    (("--sharing", "4x3", "--method", "selfspec", "--gamma", "65"), "--gamma"),
    (("--sharing", "4x3", "--method", "selfspec", "--gamma", "60"), "--gamma"),  # past the 1st sequence's tokens
    (("--sharing", "4x3", "--method", "selfspec", "--draft-exit", "2"), "--draft-exit"),
    (("--sharing", "12x1", "--method", "selfspec"), "--draft-exit"),
    (("--sharing", "4x3", "--draft-exit", "1"), "--draft-exit"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-accept", "0.5"), "--draft-depth"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "2"), "--draft-accept"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "2", "--draft-accept", "1"), "--draft-accept"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "2", "--draft-accept", "nan"), "--draft-accept"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "12", "--draft-accept", "0.5"), "--draft-depth"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "1", "--draft-model", "dec1b",
      "--draft-accept", "0.5"), "--draft-model"),
    (("--sharing", "4x3", "--method", "selfspec", "--method", "selfspec"), "--method"),
    (("--sharing", "4x3", "--draft-accept", "0.5"), "--draft-accept"),
    (("--sharing", "4x3", "--method", "specdec", "--draft-depth", "1", "--draft-model", "nosuch",
      "--draft-accept", "0.5"), "--draft-model"),
])
def test_bad_speculative_options_exit_2_naming_the_flag(cli, args, flag):
    res = cli(*SIM, "--trace" if "12x1" not in args else "--trace", "12x1" if "12x1" in args else "4x3",
              "--limit", "1", *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and flag in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_a_draft_trace_of_other_sequences_is_refused(cli, tmp_path):
    other = ExitTrace(seq_id="not-in-the-target", src_len=4, repeats=2, exits=[[1, 1], [2, 2]])
    path = tmp_path / "draft.jsonl"
    path.write_text(other.model_dump_json() + "\n")
    res = cli(*SIM, "--sharing", "12x1", "--trace", "12x1", "--limit", "1", "--method", "specdec", "--draft-depth", "2",
              "--draft-trace", str(path))
    assert res.returncode == 2 and "--draft-trace" in res.stderr and "has no sequence" in res.stderr, res.stderr


def test_a_draft_trace_drives_the_acceptance(cli, tmp_path):
    """A draft trace whose draft predicts the target's own tokens: every draft accepted. One whose target tokens
    are not the target trace's, or with one exit per position, is refused naming the flag."""
    from speedsim.trace.io import read_traces, resolve_trace

    target = read_traces(resolve_trace("12x1"))[:2]
    paths = iter(tmp_path / f"draft{i}.jsonl" for i in range(3))  # (a process reads a trace file once)

    def write(rows) -> Path:
        path = next(paths)
        path.write_text("".join(ExitTrace(seq_id=t.seq_id, src_len=t.src_len, repeats=len(rows(t)[0]),
                                          exits=rows(t)).model_dump_json() + "\n" for t in target))
        return path

    for bad, says in ((lambda t: [[tok] for tok in t.tokens], "two"),
                      (lambda t: [[tok, (tok + 1) % 100] for tok in t.tokens], "not on the target's path")):
        res = cli(*SIM, "--sharing", "12x1", "--trace", "12x1", "--limit", "2", "--method", "specdec", "--draft-depth",
                  "2", "--draft-trace", str(write(bad)))
        assert res.returncode == 2 and "--draft-trace" in res.stderr and says in res.stderr, res.stderr
    path = write(lambda t: [[tok, tok] for tok in t.tokens])
    res = cli(*SIM, "--sharing", "12x1", "--trace", "12x1", "--limit", "2", "--method", "specdec", "--draft-depth", "2",
              "--draft-trace", str(path), "--gamma", "4", "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["baselines"]["specdec"]
    assert m["acceptance_rate"] == 1.0 and not math.isnan(m["per_token_us"])


def test_windows_of_several_lengths_share_the_layer_weights(h200):
    """A batch of a 3-token and a 1-token window: one qkv/FFN kernel over all 4 rows, attention per length;
    one window alone is exactly the single-sequence step."""
    from speedsim.workload import KernelRules
    from speedsim.workload.steps import Seq, StepContext, window_batch, window_step

    rules = KernelRules.from_profile(h200)
    spec = BUILTIN_MODELS["t5base"].model_copy(update={"cross_attention_len": 16})
    a = Seq(StepContext(spec, Sharing(2, 3), 16, "bf16", rules), "q0.")
    b = Seq(StepContext(spec, Sharing(2, 3), 16, "bf16", rules), "q1.")
    both = window_batch([(a, 5, 3), (b, 9, 1)], range(3))
    names = [k.name for k in both.kernels]
    assert names.count("L0.qkv") == 3 and names.count("L0.attn") == 6  # per repeat: one qkv, attention per length
    alone = window_step(a, 5, 3, range(3))
    assert [k.name for k in alone.kernels] == [k.name for k in window_batch([(a, 5, 3)], range(3)).kernels]


def test_serving_checks_the_window_against_every_request(tmp_path):
    """--gamma is checked against the longest request, not only the ones its window is chosen on."""
    from speedsim.run import serve_run
    from speedsim.serve import serve
    from speedsim.trace.io import write_traces

    short = synthetic_traces("perfect,len=4,seqs=9,src=8", 3)
    long = synthetic_traces("perfect,len=40,seqs=1,src=8", 3)
    path = tmp_path / "t.jsonl"
    write_traces(path, [*short, *long])
    run = serve_run(profile="h200", model="t5base", sharing="4x3", trace=str(path), synthetic=None, method="selfspec",
                    arrivals="poisson:1e9", requests=40, max_batch=8, kv_capacity_GB=None, prefill="chunked",
                    prefill_budget=512, seed=0, mode="graph", speculative={"gamma": 10})
    assert serve(run).requests == 40  # a long request can fill 10 drafts though the first ones cannot


def test_a_fitted_acceptance_model_recovers_its_chain_and_runs_from_the_cli(cli, tmp_path):
    """The two-state model fitted to matches it generated gives back its rate and P(match | match); one
    fitted to i.i.d. matches has stay == rate; --draft-fit reads a draft trace."""
    from speedsim.pipeline.speculation import AcceptanceModel, iid_matches

    chain = AcceptanceModel(0.7, 0.9)
    fit = AcceptanceModel.fit([chain.matches(20_000, seed) for seed in range(3)])
    assert fit.rate == pytest.approx(0.7, abs=0.01) and fit.stay == pytest.approx(0.9, abs=0.01)
    iid = AcceptanceModel.fit([iid_matches(20_000, 0.6, 1)])
    assert iid.stay == pytest.approx(iid.rate, abs=0.01)
    path = tmp_path / "d.jsonl"
    matches = chain.matches(200, 5)
    path.write_text(ExitTrace(seq_id="a", src_len=4, repeats=2,
                              exits=[[1 if m else 2, 1] for m in matches]).model_dump_json() + "\n")
    res = cli(*SIM, "--sharing", "12x1", "--trace", "12x1", "--limit", "2", "--method", "specdec", "--draft-depth", "2",
              "--draft-fit", str(path), "--gamma", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert 0.0 <= json.loads(res.stdout)["baselines"]["specdec"]["acceptance_rate"] <= 1.0
    from speedsim.simulate.scenario import fitted_acceptance

    assert fitted_acceptance(str(path), "--draft-fit") == AcceptanceModel.fit([matches])
    bad = cli(*SIM, "--sharing", "12x1", "--trace", "12x1", "--method", "specdec", "--draft-depth", "2",
              "--draft-fit", str(path), "--draft-accept", "0.5")
    assert bad.returncode == 2 and "--draft-accept" in bad.stderr
