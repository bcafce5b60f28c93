"""Issue 25's model side: grouped-query attention, head widths, tied embeddings, weight-only quantisation and
the KV cache's precision, in the model spec, the kernels, the footprint and the functional decoder; the
published models' built-in specs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from speedsim.errors import UserError
from speedsim.hardware.files import load_profile
from speedsim.sharing import Sharing
from speedsim.workload import BUILTIN_MODELS, KernelRules
from speedsim.workload.kernels import KV, WEIGHTS
from speedsim.workload.layers import decoder_layer
from speedsim.workload.models import (
    MODEL_SOURCES,
    PUBLISHED_MODELS,
    ModelSpec,
    weight_bytes,
    with_precision,
)
from speedsim.workload.steps import memory_footprint

# parameter counts the models' releases state (billions): Llama-2 6.74/13.0/69.0 (Touvron et al. 2023; the
# Hugging Face model cards), Llama-3 8.03/70.6, Mistral 7.24, T5 0.223/0.738/2.85/11.3 (the Hugging Face
# checkpoints' parameter counts); the embedding and LM head count once when tied
PUBLISHED_PARAMS_B = {"llama2-7b": 6.74, "llama2-13b": 13.0, "llama2-70b": 69.0, "llama3-8b": 8.03,
                      "llama3-70b": 70.6, "mistral-7b": 7.24, "t5-base": 0.223, "t5-large": 0.738,
                      "t5-3b": 2.85, "t5-11b": 11.3}


def params_b(m: ModelSpec) -> float:
    layers = m.n_layers * m.layer_weight_elements() + m.encoder_layers * m.layer_weight_elements(cross=False)
    return (layers + (1 if m.tied_embeddings else 2) * m.head_weight_elements()) / 1e9


@pytest.fixture(scope="module")
def rules():
    return KernelRules.from_profile(load_profile("h200"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_MODELS))
def test_published_models_have_their_published_size_and_a_source(name):
    m = PUBLISHED_MODELS[name]
    assert params_b(m) == pytest.approx(PUBLISHED_PARAMS_B[name], rel=0.006)
    assert MODEL_SOURCES[name] and BUILTIN_MODELS[name] is m


def test_old_names_keep_their_dimensions():
    assert BUILTIN_MODELS["dec7b"].layer_weight_elements() == BUILTIN_MODELS["llama2-7b"].layer_weight_elements()
    t5 = BUILTIN_MODELS["t5base"]
    assert (t5.kv_heads, t5.d_head, t5.q_width, t5.kv_width, t5.group) == (12, 64, 768, 768, 1)


def test_head_dim_other_than_d_model_over_heads():
    t5 = PUBLISHED_MODELS["t5-3b"]
    assert (t5.d_head, t5.q_width) == (128, 4096)
    mats = dict(zip(("qkv", "o", "xq", "xo", "xkv", "w1", "w2"), t5.layer_matrices(), strict=True))
    assert mats["qkv"] == (1024, 3 * 4096) and mats["o"] == (4096, 1024) and mats["xkv"] == (1024, 2 * 4096)


def _bytes(program, tclass):
    return sum(a.read_bytes + a.write_bytes for k in program.kernels for a in k.all_accesses if a.tclass == tclass)


def test_grouped_query_attention_reads_and_writes_a_group_less_kv(rules):
    mha = PUBLISHED_MODELS["llama2-7b"]
    gqa = mha.model_copy(update={"name": "gqa", "n_kv_heads": 8})
    kv_len = 2048
    a = decoder_layer(mha, "L0", [kv_len], ["kv"], 1, "bf16", rules)
    b = decoder_layer(gqa, "L0", [kv_len], ["kv"], 1, "bf16", rules)
    assert _bytes(b, KV) == pytest.approx(_bytes(a, KV) / 4)
    # the fused QKV projection shrinks by the K and V heads left out: d x (d + 2 d / 4) against d x 3d
    assert _bytes(b, WEIGHTS) == _bytes(a, WEIGHTS) - 2 * 4096 * (4096 - 1024) * 2
    # the attention FLOPs are the query heads' (the same)
    attn = [[k for k in p.kernels if k.name == "L0.attn"][0] for p in (a, b)]
    assert attn[0].flops == attn[1].flops
    assert attn[1].parallel_work < attn[0].parallel_work  # one block per K/V head (query heads packed)
    need = [memory_footprint(m, Sharing(32, 1), 4096, 1, "bf16")["kv"] for m in (mha, gqa)]
    assert need[1] == need[0] / 4 == 32 * 4096 * 2 * 1024 * 2


def test_multi_query_attention_is_one_kv_head(rules):
    mqa = PUBLISHED_MODELS["llama2-7b"].model_copy(update={"name": "mqa", "n_kv_heads": 1})
    assert mqa.kv_width == 128 and mqa.group == 32
    layer = decoder_layer(mqa, "L0", [512], ["kv"], 1, "bf16", rules)
    assert _bytes(layer, KV) == pytest.approx(2 * 513 * 128 * 2 + 2 * 128 * 2)  # reads 513 positions, writes 1


@pytest.mark.parametrize("fmt, per_element", [("int4", 0.5 + 2 / 128), ("fp8", 1.0)])
def test_weight_only_quantisation_reads_the_stored_bytes_and_charges_dequantisation(rules, fmt, per_element):
    base = PUBLISHED_MODELS["llama3-8b"]
    q = with_precision(base, fmt)
    a = decoder_layer(base, "L0", [64], ["kv"], 1, "bf16", rules)
    b = decoder_layer(q, "L0", [64], ["kv"], 1, "bf16", rules)
    assert _bytes(b, WEIGHTS) == pytest.approx(_bytes(a, WEIGHTS) / 2 * per_element)
    gemv = [k for k in b.kernels if k.name == "L0.w1"][0]
    assert gemv.dequant_ops > 0 and gemv.flops == [k for k in a.kernels if k.name == "L0.w1"][0].flops
    assert all(k.dequant_ops == 0 for k in a.kernels)
    # int8 weight-only: one fp16 scale per output channel
    assert weight_bytes("int8", "bf16", 4096, 1024) == 4096 * 1024 + 2 * 1024
    # a format that is the run's own is not quantised (gemmini's int8)
    assert weight_bytes("int8", "int8", 4096, 1024) == 4096 * 1024


def test_kv_dtype_halves_the_cache(rules):
    base = PUBLISHED_MODELS["llama3-8b"]
    a = decoder_layer(base, "L0", [1000], ["kv"], 1, "bf16", rules)
    b = decoder_layer(with_precision(base, kv_dtype="fp8"), "L0", [1000], ["kv"], 1, "bf16", rules)
    assert _bytes(b, KV) == pytest.approx(_bytes(a, KV) / 2)
    assert _bytes(b, WEIGHTS) == _bytes(a, WEIGHTS)


def test_tied_embeddings_hold_one_table():
    t5 = PUBLISHED_MODELS["t5-base"]
    untied = t5.model_copy(update={"tied_embeddings": False})
    a, b = (memory_footprint(m, Sharing(12, 1), 64, 512, "bf16")["embeddings"] for m in (t5, untied))
    assert b == 2 * a == 2 * 32128 * 768 * 2


@pytest.mark.parametrize("fields, where", [
    ({"n_kv_heads": 5}, "n_kv_heads"), ({"n_kv_heads": 64}, "n_kv_heads"), ({"head_dim": 0}, "head_dim"),
    ({"weight_dtype": "int3"}, "weight_dtype"), ({"kv_dtype": "int4"}, "kv_dtype"),
])
def test_bad_dimensions_name_their_field(fields, where):
    with pytest.raises(ValueError, match=where):
        ModelSpec(name="m", d_model=4096, n_heads=32, d_ff=11008, vocab=32000, **fields)


def test_quantised_decode_is_faster_where_weights_bound_it():
    from speedsim.run import simulate_run
    from speedsim.simulate import build_scenario, run_scenario

    def per_token(**deployment):
        run = simulate_run(profile="h200", model="llama3-8b", sharing="32x1", trace=None,
                           synthetic="perfect,len=16,seqs=1", baselines=(), mode="graph", src_len=None, limit=None,
                           launch_exit=0, max_in_flight=None, device_control=False, bounds=False,
                           deployment=deployment)
        return run_scenario(build_scenario(run)).speed.per_token_us

    bf16, int8, int4 = per_token(), per_token(weight_dtype="int8"), per_token(weight_dtype="int4")
    assert int4 < int8 < bf16
    assert bf16 / int4 < 4  # the LM head, latencies and dequantisation stay


# ------------------------------------------------------------------ the functional decoder: GQA


def _mha_twin(model):
    """The multi-head model with each key/value head repeated for its query heads (same function)."""
    from speedsim.model import SharedDecoder

    cfg = dataclasses.replace(model.config, n_kv_heads=None)
    twin = SharedDecoder(cfg).double()
    state = dict(model.state_dict())
    c = model.config
    H, G, D = c.n_heads, c.kv_heads, c.head_dim
    for name, w in list(state.items()):
        if name.endswith("attn.qkv.weight") and w.shape[0] != 3 * c.d_model:
            q, k, v = w.split([H * D, G * D, G * D])
            rep = [t.view(G, D, -1).repeat_interleave(H // G, dim=0).reshape(H * D, -1) for t in (k, v)]
            state[name] = torch.cat([q, *rep])
    twin.load_state_dict(state)
    return twin


@pytest.mark.parametrize("kv_heads, encoder", [(2, 0), (1, 2)])
def test_grouped_query_decoder_is_attention_with_repeated_heads(kv_heads, encoder):
    from speedsim.decode import greedy, greedy_exits, speed
    from speedsim.model import SharedDecoder, SpeedConfig

    cfg = SpeedConfig(vocab_size=40, d_model=32, n_heads=4, n_kv_heads=kv_heads, d_ff=48, unique_layers=2, repeats=3,
                      encoder_layers=encoder, max_len=32, init_std=0.3, seed=3)
    model = SharedDecoder(cfg).double().eval()
    twin = _mha_twin(model).eval()
    src = torch.randint(4, 40, (1, 6), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(4, 40, (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        given = src if encoder else None
        assert torch.allclose(model(given, tgt), twin(given, tgt), atol=1e-10)
        ids = src[0].tolist()
        out = greedy(model, ids, max_new_tokens=10)
        assert out == greedy(twin, ids, max_new_tokens=10)
        # SPEED's pipelined decode (the cache holds the key/value heads only) is the sequential one
        assert speed(model, ids, max_new_tokens=10).exits == greedy_exits(model, ids, max_new_tokens=10)
    assert model.layers[0].attn.qkv.weight.shape[0] == (4 + 2 * kv_heads) * 8
    assert math.prod(model.state_dict()["layers.0.attn.qkv.weight"].shape) < 3 * 32 * 32


def test_bad_kv_heads_in_a_decoder_config():
    from speedsim.model import SpeedConfig

    with pytest.raises(UserError, match="n_kv_heads"):
        SpeedConfig(vocab_size=40, d_model=32, n_heads=4, n_kv_heads=3)


# ------------------------------------------------------------------ the command line


def test_precision_flags_and_refusals_on_the_command_line():
    from tests.conftest import run_cli

    args = ("simulate", "--profile", "h200", "--model", "llama3-8b", "--sharing", "8x4", "--synthetic",
            "perfect,len=8,seqs=1", "--baseline", "sequential", "--json")
    import json

    plain = json.loads(run_cli(*args).stdout)
    quant = json.loads(run_cli(*args, "--weight-dtype", "int4", "--kv-dtype", "fp8").stdout)
    assert quant["per_token_us"] < plain["per_token_us"]
    bad = run_cli(*args, "--weight-dtype", "int3")
    assert bad.returncode == 2 and "--weight-dtype" in bad.stderr and "\n" not in bad.stderr.strip()


def test_a_baseline_that_does_not_fit_is_named_with_how_to_leave_it_out():
    from tests.conftest import run_cli

    out = run_cli("simulate", "--profile", "a100-80gb", "--model", "llama2-70b", "--sharing", "10x8", "--synthetic",
                  "perfect,len=4,seqs=1")
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "\n" not in line and "--baseline" in line and "unshared baseline (llama2-70b 80x1)" in line
    assert "llama2-70b 10x8 fits" in line and "--baseline sequential" in line
    ok = run_cli("simulate", "--profile", "a100-80gb", "--model", "llama2-70b", "--sharing", "10x8", "--synthetic",
                 "perfect,len=4,seqs=1", "--baseline", "sequential")
    assert ok.returncode == 0


# ------------------------------------------------------------------ devices: tensor parallelism, the interconnect


def _sim(profile="a100-80gb", model="llama2-7b", sharing="32x1", **deployment):
    from speedsim.run import simulate_run
    from speedsim.simulate import build_scenario, run_scenario

    run = simulate_run(profile=profile, model=model, sharing=sharing, trace=None, synthetic="perfect,len=8,seqs=1",
                       baselines=(), mode="graph", src_len=None, limit=None, launch_exit=0, max_in_flight=None,
                       device_control=False, bounds=False, deployment=deployment)
    return run_scenario(build_scenario(run)).speed


def test_a_shard_divides_heads_ffn_and_vocabulary():
    from speedsim.workload.models import shard

    m = PUBLISHED_MODELS["llama3-70b"]
    s = shard(m, 8)
    assert (s.n_heads, s.kv_heads, s.d_head, s.d_ff, s.vocab, s.d_model, s.tp) == (8, 1, 128, 3584, 16032, 8192, 8)
    # the layer's matrices are a tp-th of the whole (the K/V heads too: 8 of them on 8 devices)
    assert s.layer_weight_elements() - 2 * 8192 == (m.layer_weight_elements() - 2 * 8192) // 8
    mqa = m.model_copy(update={"n_kv_heads": 1})
    assert shard(mqa, 8).kv_heads == 1  # one K/V head, replicated on every device
    with pytest.raises(UserError, match="does not divide"):
        shard(PUBLISHED_MODELS["llama2-13b"], 3)


def test_collectives_follow_the_alpha_beta_rule():
    from speedsim.hardware.parts import collective_us

    link = load_profile("h200").interconnect
    # NCCL's ring: 6.6 + 2 (n - 1) 0.6 us plus the bus bytes: 15.0 us for a 4 KB all-reduce on 8 GPUs (measured:
    # about 15.4 us, the profile's source)
    assert link.collective_us("all_reduce", 4096, 8) == pytest.approx(15.0 + 4096 * 14 / 8 / (450e3 * 0.822))
    assert link.collective_us("all_gather", 8e6, 4) == pytest.approx(6.6 + 3 * 0.6 + 8e6 * 3 / 4 / (450e3 * 0.822))
    assert collective_us("all_reduce", 1e9, 1, 6.6, 0.6, 1.0) == 0.0


def test_tensor_parallel_decode_charges_two_all_reduces_a_layer_and_the_logits_gather():
    one, eight = _sim(), _sim(tp=8)
    assert eight.per_token_us < one.per_token_us
    share = eight.time_by_cause_us_per_token["interconnect"]
    assert share > 0 and one.time_by_cause_us_per_token["interconnect"] == 0
    link = load_profile("a100-80gb").interconnect
    # 32 layers x 2 all-reduces of one token's 4096 bf16 values, the gather of 32000 logits
    expect = 64 * link.collective_us("all_reduce", 4096 * 2, 8) + link.collective_us("all_gather", 32000 * 2, 8)
    assert share == pytest.approx(expect, rel=1e-9)
    # a device reads an eighth of the layers' weights
    assert eight.dram_weights_bytes_per_token == pytest.approx(one.dram_weights_bytes_per_token / 8, rel=0.01)


def test_a_model_too_large_for_one_device_fits_on_eight():
    from tests.conftest import run_cli

    args = ("simulate", "--profile", "h100-sxm", "--model", "llama2-70b", "--sharing", "80x1", "--synthetic",
            "perfect,len=4,seqs=1", "--baseline", "none")
    one = run_cli(*args)
    assert one.returncode == 2 and "--model" in one.stderr and "GiB" in one.stderr
    assert run_cli(*args, "--tp", "8").returncode == 0


@pytest.mark.parametrize("args, where", [
    (("--profile", "h200", "--model", "llama2-13b", "--tp", "3"), "--tp: 3 does not divide llama2-13b's 40"),
    (("--profile", "h200", "--model", "llama2-7b", "--tp", "16"), "--tp: tp 16 x pp 1 = 16 devices"),
    (("--profile", "jetson-agx-orin", "--model", "dec1b", "--tp", "2"), "--tp: jetson-agx-orin has no interconnect"),
    (("--profile", "h200", "--model", "llama2-7b", "--tp", "0"), "--tp: must be a whole number of devices"),
])
def test_bad_parallelism_is_one_line_naming_the_flag(args, where):
    from tests.conftest import run_cli

    out = run_cli("simulate", "--sharing", "4x2", "--synthetic", "perfect,len=4,seqs=1", *args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and where in out.stderr, out.stderr


# ------------------------------------------------------------------ published measurements


def test_published_rows_are_simulated_as_deployed(tmp_path):
    from speedsim.validation.measured import read_measured
    from speedsim.validation.validate import validate

    path = tmp_path / "p.csv"
    path.write_text("section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
                    "published,llama2-7b,graph,unshared,16,5,32,1,9000,,,tp=1;prefill=included;source=x\n"
                    "published,llama2-7b,graph,unshared,16,5,32,1,3000,,,tp=8;prefill=excluded;source=x\n"
                    "published,llama2-7b,graph,unshared,16,5,32,1,5000,,,weight_dtype=int4;prefill=excluded;source=x\n")
    report = validate(load_profile("a100-80gb"), read_measured(path), BUILTIN_MODELS, "graph")
    sims = [r.simulated_us for r in report.results]
    assert sims[1] < sims[2] < sims[0]
    mape = report.mape()
    assert set(mape) == {"all", "published", "published tp1", "published tp8"}
    assert [r.deployment for r in report.results] == ["tp1", "tp8", "tp1, weight int4"]


@pytest.mark.parametrize("extra, problem", [
    ("tp=1;source=x", "prefill=included or prefill=excluded"),
    ("tp=1;prefill=included", "source="),
    ("tp=0;prefill=included;source=x", "tp=0"),
    ("weight_dtype=int3;prefill=included;source=x", "weight_dtype=int3"),
    ("tp=1;pp=2;prefill=included;source=x", "'pp' is not a key"),
    ("prefill=included;source=x;garbage", "'garbage' is not a key"),
])
def test_bad_published_rows_name_their_line(tmp_path, extra, problem):
    from speedsim.validation.measured import read_measured

    path = tmp_path / "p.csv"
    path.write_text("section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
                    f"published,llama2-7b,graph,unshared,16,5,32,1,9000,,,{extra}\n")
    with pytest.raises(UserError, match=problem) as err:
        read_measured(path)
    assert err.value.where == f"{path}:2"


# ------------------------------------------------------------------ pipeline parallelism


def _programs(spec, sharing="8x4"):
    from speedsim.workload.steps import StepContext, pipelined_step, sequential_token, unshared_token

    rules = KernelRules.from_profile(load_profile("h200"))
    ctx = StepContext(spec, Sharing.parse(sharing), 16, "bf16", rules)
    return (pipelined_step(ctx, [(5, 0), (4, 1), (3, 2), (2, 3)], 1), sequential_token(ctx, 5),
            unshared_token(ctx, 5))


def _sends(program):
    return [k for k in program.kernels if k.kind == "send"]


def test_layer_stages_send_at_each_boundary_and_hold_a_share_of_the_layers():
    from speedsim.workload.models import stage_ends, staged

    assert stage_ends(8, 4) == {1, 3, 5} and stage_ends(32, 1) == frozenset() and stage_ends(10, 4) == {1, 4, 7}
    spec = PUBLISHED_MODELS["llama3-8b"]
    speed, sequential, unshared = _programs(staged(spec, 4))
    assert len(_sends(speed)) == 3 + 1            # three boundaries, then back to the first stage
    assert len(_sends(sequential)) == 4 * 3 + 3   # each of the four passes, and between them
    assert len(_sends(unshared)) == 3
    assert not any(_sends(p) for p in _programs(spec))
    one = memory_footprint(spec, Sharing(8, 4), 64, 1, "bf16")
    four = memory_footprint(staged(spec, 4), Sharing(8, 4), 64, 1, "bf16")
    assert four["weights"] == one["weights"] / 4 and four["kv"] == one["kv"] / 4
    assert four["embeddings"] == one["embeddings"] / 2  # one end's table


def test_the_pipeline_over_repeats_runs_the_busiest_device():
    from speedsim.workload.models import staged

    spec = PUBLISHED_MODELS["llama3-8b"]
    rep = staged(spec, 4, True)
    speed, sequential, unshared = _programs(rep)
    whole, *_ = _programs(spec)
    # one device's step: its one token through the 8 shared layers and the head, then on to the next device
    attn = [k for k in speed.kernels if k.kclass == "attention"]
    assert len(attn) == 8 and len(_sends(speed)) == 1
    assert len([k for k in whole.kernels if k.kclass == "attention"]) == 8  # (one call over the 4 tokens)
    assert len(_sends(sequential)) == 3 and len(_sends(unshared)) == 3
    m = memory_footprint(rep, Sharing(8, 4), 64, 1, "bf16")
    one = memory_footprint(spec, Sharing(8, 4), 64, 1, "bf16")
    assert m["weights"] == one["weights"] and m["kv"] == one["kv"] / 4  # the layers on every device


def test_tensor_parallelism_beats_the_repeat_pipeline_for_one_sequence():
    one = _sim("h200", "llama3-8b", "8x4")
    tp = _sim("h200", "llama3-8b", "8x4", tp=4)
    rep = _sim("h200", "llama3-8b", "8x4", pp=4, pp_over="repeats")
    assert tp.per_token_us < rep.per_token_us < one.per_token_us * 1.01


@pytest.mark.parametrize("args, where", [
    (("--pp", "3", "--pp-over", "repeats"), "--pp: the pipeline over repeats runs one repeat per device: pp 4"),
    (("--pp", "5"), "--pp: 5 stages for the 4 shared layers"),
    (("--pp-over", "repeats"), "--pp-over: repeats needs"),
    (("--pp", "2", "--method", "selfspec"), "--pp: pipeline parallelism is not modelled for speculative"),
    (("--pp", "4", "--tp", "4"), "--tp: tp 4 x pp 4 = 16 devices"),
])
def test_bad_pipelines_are_one_line_naming_the_flag(args, where):
    from tests.conftest import run_cli

    out = run_cli("simulate", "--profile", "h200", "--model", "llama3-8b", "--sharing", "4x4", "--synthetic",
                  "perfect,len=4,seqs=1", *args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and where in out.stderr, out.stderr


# ------------------------------------------------------------------ the report's pieces


def test_scale_table_pairs_each_speed_row_with_its_unshared_decoder():
    import pandas as pd

    from speedsim.report.scale import scale_table

    rows = []
    for tp, speed, unshared in ((1, 100.0, 300.0), (2, 60.0, 150.0)):
        rows += [{"status": "ok", "profile": "h200", "model": "m", "sharing": "4x3", "method": "speed", "tp": tp,
                  "pp": None, "per_token_us": speed},
                 {"status": "ok", "profile": "h200", "model": "m", "sharing": "4x3", "method": "unshared", "tp": tp,
                  "pp": None, "per_token_us": unshared}]
    rows.append({"status": "ok", "profile": "h200", "model": "m", "sharing": "4x3", "method": "speed", "tp": None,
                 "pp": 3, "per_token_us": 90.0})
    rows.append({"status": "error", "profile": "h200", "model": "m", "sharing": "4x3", "method": "speed", "tp": 8,
                 "pp": None, "per_token_us": None})
    table = scale_table(pd.DataFrame(rows))
    speed = table[table["method"] == "SPEED"].set_index("deployment")
    assert list(speed.index) == ["tp 1", "tp 2", "pp 3 over repeats"]
    assert speed.loc["tp 1", "speedup_vs_unshared"] == 3.0 and speed.loc["tp 2", "speedup_vs_unshared"] == 2.5
    assert speed.loc["pp 3 over repeats", "gpus"] == 3 and math.isnan(speed.loc["pp 3 over repeats",
                                                                                "speedup_vs_unshared"])


def test_published_rows_off_by_more_than_15_percent_each_have_a_reason(tmp_path):
    from speedsim.report.build import run_published_validation
    from speedsim.report.validation_md import _why

    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "a100-80gb.csv").write_text(
        "section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
        "published,llama2-7b,graph,unshared,16,5,32,1,5081,,,weight_dtype=int4;prefill=included;source=x\n"
        "published,llama2-7b,graph,unshared,16,5,32,1,3045,,,tp=8;prefill=included;source=x\n"
        "published,llama2-7b,graph,unshared,16,5,32,1,9500,,,tp=1;prefill=included;source=x\n")
    table, mape = run_published_validation(folder)
    assert list(mape) == ["all", "profile a100-80gb", "tp1", "tp8"]
    assert mape["all"] == pytest.approx(table["ape"].mean())
    reasons = [_why(r) for _, r in table.iterrows()]
    assert "int4" in reasons[0] and "all-reduce" in reasons[1]


def test_collectives_of_two_streams_contend_for_the_links():
    from speedsim.engine import DeviceModel
    from speedsim.engine.des import run_programs
    from speedsim.workload.kernels import ALL_REDUCE, Program
    from speedsim.workload.primitives import collective

    profile = load_profile("h200")
    link = profile.interconnect
    model = DeviceModel.of(profile, "graph")
    big = Program([collective("x.all_reduce", ALL_REDUCE, 64e6, 8, "bf16")])
    alone = link.collective_us("all_reduce", 64e6, 8)
    one = run_programs(model, [big], shared=True)
    two = run_programs(model, [big, Program(list(big.kernels))], streams=[0, 1])
    bytes_us = alone - link.latency_us - 14 * link.hop_latency_us
    assert one.time_by_cause_us["interconnect"] == pytest.approx(alone)
    # at once on two streams (the second issued a graph launch later): the links carry both collectives' bytes
    # back to back, so the second ends 2 x bytes after the first began moving; its latency hides under them
    assert two.total_us - one.total_us == pytest.approx(2 * bytes_us - alone, abs=0.5)  # (a node gap aside)
    assert two.time_by_cause_us["wait"] > bytes_us / 2
    no_links = run_programs(DeviceModel.of(profile.model_copy(update={"interconnect": None}), "graph"),
                            [big, Program(list(big.kernels))], streams=[0, 1])
    assert no_links.time_by_cause_us["wait"] == pytest.approx(0.0, abs=1e-9)  # (no links: each alone, free)


def test_a_spec_file_gives_dimensions_not_a_deployment(tmp_path):
    from tests.conftest import run_cli

    spec = tmp_path / "m.yaml"
    spec.write_text("name: m\nd_model: 256\nn_heads: 8\nd_ff: 512\nvocab: 1000\ntp: 3\n")
    out = run_cli("simulate", "--profile", "h200", "--model", "m", "--model-spec", str(spec), "--sharing", "2x2",
                  "--synthetic", "perfect,len=4,seqs=1")
    assert out.returncode == 2 and f"{spec}: field 'tp'" in out.stderr and "--tp" in out.stderr


def test_serving_a_model_whose_weights_do_not_fit_names_the_model():
    from tests.conftest import run_cli

    out = run_cli("serve", "--profile", "h100-sxm", "--model", "llama2-70b", "--sharing", "80x1", "--synthetic",
                  "perfect,len=4", "--requests", "2", "--arrivals", "poisson:1")
    assert out.returncode == 2 and out.stderr.startswith("speedsim: error: --model:") and "GiB of weights" in out.stderr


def test_a_weight_group_sets_the_scales_of_integer_weights():
    base = PUBLISHED_MODELS["llama2-7b"]
    g128, g32 = with_precision(base, "int4"), with_precision(base, "int4", weight_group=32)
    assert weight_bytes("int4", "bf16", 4096, 4096, 32) == 4096 * 4096 / 2 + 4096 * 128 * 2
    assert g32.layer_weight_bytes("bf16") > g128.layer_weight_bytes("bf16")
    rules = KernelRules.from_profile(load_profile("h200"))
    a = decoder_layer(g128, "L0", [64], ["kv"], 1, "bf16", rules)
    b = decoder_layer(g32, "L0", [64], ["kv"], 1, "bf16", rules)
    assert _bytes(b, WEIGHTS) / _bytes(a, WEIGHTS) == pytest.approx((0.5 + 2 / 32) / (0.5 + 2 / 128), rel=1e-3)
    with pytest.raises(UserError, match="--weight-group"):
        with_precision(base, weight_group=32)  # bf16 weights have no scales: it would be ignored


# ------------------------------------------------------------------------- published GEMV kernels

KERNELS = Path(__file__).resolve().parents[1] / "experiments" / "measured" / "published" / "kernels"


def test_published_gemvs_simulate_as_their_shape():
    """Each published GEMV row is one `linear` of its outN_inK shape at one row, timed as validate times a
    kernel row; both files validate whole (nothing skipped)."""
    from speedsim.engine import open_profile
    from speedsim.engine.drivers import time_call
    from speedsim.validation import read_measured, validate
    from speedsim.workload.kernels import Program
    from speedsim.workload.primitives import linear

    for csv in sorted(KERNELS.glob("*.csv")):
        profile = open_profile(csv.stem)
        rows = read_measured(csv)
        report = validate(profile, rows, BUILTIN_MODELS, "graph")
        assert len(report.results) == len(rows) > 0
        r = next(r for r in report.results if len(set(r.row.pattern[3:].split("_in"))) == 2)  # (not square)
        out_f, in_f = (int(x) for x in r.row.pattern[3:].split("_in"))
        want = time_call(profile, Program(linear("w", "w", 1, in_f, out_f, profile.default_dtype,
                                                 KernelRules.from_profile(profile))), "graph")
        assert r.simulated_us == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("pattern, message", [("out0_in4096", "features are 1 to"),
                                              ("out4096_in2000000", "features are 1 to"),
                                              ("out4096_in", "unknown pattern"), ("in4096_out4096", "unknown pattern")])
def test_bad_gemv_shapes_are_refused(tmp_path, pattern, message):
    from speedsim.engine import open_profile
    from speedsim.validation import read_measured, validate

    csv = tmp_path / "k.csv"
    csv.write_text("section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
                   f"gemv,,,{pattern},1,0,0,0,100,,,\n")
    with pytest.raises(UserError, match=message):
        validate(open_profile("h200"), read_measured(csv), BUILTIN_MODELS, "graph")
