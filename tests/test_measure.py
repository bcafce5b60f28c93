"""`speedsim measure`: step rows, closed-loop whole decodes and batched steps in the measured-CSV schema."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from speedsim.decode import greedy, speed
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.trace import read_traces
from speedsim.validation import measured as measured_module
from speedsim.validation import read_measured
from speedsim.validation.measure import MeasurePlan, measure, plan_from_options
from speedsim.validation.measure.batch import kv_lengths
from speedsim.validation.measure.loop import LoopBudget, loop_rows, static_decoder
from speedsim.validation.measure.models import Decodable
from speedsim.validation.measure.static import StaticDecoder
from speedsim.validation.measure.timing import Budget, TimingLog
from speedsim.validation.schema import COLUMNS, measured_row

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_SPEC = {"name": "tiny", "d_model": 32, "n_heads": 2, "d_ff": 64, "ffn": "relu", "cross_attention_len": 12,
             "vocab": 300, "encoder_layers": 1}
TINY_CONFIG = {  # a training config (speedsim.train) of the same width, for the --config path
    "name": "tiny",
    "data": {"task": "summarize", "vocab_size": 320, "max_src_tokens": 24, "max_tgt_tokens": 16},
    "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "unique_layers": 2, "repeats": 2, "encoder_layers": 1,
              "max_len": 256},
    "finetune": {"steps": 1, "batch_size": 2, "from_scratch": True},
    "eval": {"max_new_tokens": 8},
}


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPEC))
    return path


def _model(U: int, R: int, encoder: int = 1, tied: bool = False) -> SharedDecoder:
    cfg = SpeedConfig(vocab_size=300, d_model=32, n_heads=2, d_ff=64, unique_layers=U, repeats=R,
                      encoder_layers=encoder, max_len=64, tie_embeddings=tied)
    return SharedDecoder(cfg).eval()


def _sources(*lengths: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(4, 300, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize(("U", "R", "encoder"), [(4, 3, 1), pytest.param(2, 6, 1, marks=pytest.mark.slow), (2, 6, 0)])
def test_static_decoder_matches_the_functional_decoder(U, R, encoder):
    """Over static buffers (no rollback, bucketed masked attention, sources of two lengths), greedy and
    SPEED emit the functional greedy tokens, SPEED takes the functional SPEED's steps and exits, and the
    untied random model makes SPEED flush (so the no-rollback path is exercised)."""
    model = _model(U, R, encoder)
    srcs = _sources(10, 7)
    dec = StaticDecoder(model, src_len=10, kv_len=64, graphs=False, masked_cross=encoder > 0, bucket=16)
    with torch.inference_mode():
        for src in srcs:
            ref = speed(model, src, 24)
            g, s = dec.greedy(src, 24, None), dec.speed(src, 24, None)
            assert g.tokens == s.tokens == greedy(model, src, 24) == ref.tokens
            assert s.exits == ref.exits and s.steps == len(ref.steps)
            assert s.steps > len(s.tokens)  # flushes happened


def test_captured_steps_may_run_again(monkeypatch):
    """Graph capture runs a step several times before its first replay: steps are idempotent, so a
    decoder whose every new step kind runs three times still emits greedy's tokens and exits."""
    import speedsim.validation.measure.static as static

    def fake_capture(fn):  # what torch's capture costs in side effects: two warm-up runs, then replays
        fn()
        fn()
        return fn
    monkeypatch.setattr(static, "capture", fake_capture)
    model = _model(2, 4)
    dec = StaticDecoder(model, src_len=10, kv_len=32, graphs=True, bucket=16)
    src = _sources(10)[0]
    with torch.inference_mode():
        ref = speed(model, src, 20)
        s = dec.speed(src, 20, None)
        assert dec.greedy(src, 20, None).tokens == s.tokens == ref.tokens and s.exits == ref.exits
    assert dec.captures == len(dec._steps) > 3


def test_a_lossy_speed_decode_fails_loudly(monkeypatch, tmp_path):
    """The closed loop refuses to time a SPEED decoder whose tokens differ from greedy's."""
    real = StaticDecoder.speed

    def lossy(self, src, max_new_tokens, eos_id):
        run = real(self, src, max_new_tokens, eos_id)
        run.tokens[-1] += 1
        return run
    monkeypatch.setattr(StaticDecoder, "speed", lossy)
    d = Decodable(_model(2, 2), "tiny", _sources(6), None, 6, "random-untied")
    rec = TimingLog(tmp_path / "x.csv", "cpu", Budget(1, 1, 0))
    with pytest.raises(RuntimeError, match="not lossless"), torch.inference_mode():
        loop_rows(rec, d, tmp_path / "t.jsonl.gz", LoopBudget(passes=1, verify_sequences=1))


def test_static_decoder_kv_sized_to_the_decode():
    """The KV buffer covers offset + new tokens + 1, rounded up to the bucket, within max_len."""
    d = Decodable(_model(2, 2, encoder=0), "tiny", _sources(20, 5), None, 30, "random-untied")
    dec = static_decoder(d, graphs=False)
    assert dec.kv_len == 64 and not dec.masked_cross  # 19 + 30 + 1 = 50 -> 64


@pytest.mark.slow
def test_measure_spec_writes_loop_and_batch_rows(tmp_path, tiny_spec):
    """Random weights at a model spec: one sequential row per UxR, one pipelined row per shared UxR, each
    naming an exit trace of its R; batch rows for every B at mean KV length ctx; both CSVs read back."""
    out = tmp_path / "m.csv"
    plan = MeasurePlan(parts=("loop", "batch"), sharings=plan_from_options(sharings="12x1,4x3,2x6").sharings,
                       quick=True)
    summary = measure("cpu", out, plan=plan, model="tiny", model_specs=(tiny_spec,))
    rows = read_measured(out)
    decode = {(r.pattern, r.L, r.R): r for r in rows if r.section == "decode"}
    assert set(decode) == {("sequential", 12, 1), ("sequential", 4, 3), ("pipelined", 4, 3),
                           ("sequential", 2, 6), ("pipelined", 2, 6)}
    for row in decode.values():
        assert row.mode == "eager" and row.model == "tiny" and row.us_median > 0
        assert row.n == 8 and row.ctx == 12 and row.extra_field("impl") == "static"
        traces = read_traces(out.parent / row.extra_field("trace"))
        assert len(traces) == 2 and all(t.repeats == row.R and len(t.exits) == row.n for t in traces)
        # the parts of a whole decode, each timed: the prefill, the steps' device work, the loop's host work
        parts = {k: float(row.extra_field(k)) for k in ("prefill_us_per_seq", "replay_us_per_step",
                                                         "host_us_per_step", "us_per_token_no_prefill")}
        assert all(v > 0 for v in parts.values()), parts  # (timed in passes of their own: no order between them)
    assert decode[("pipelined", 2, 6)].extra_field("greedy_match") == "2/2"
    batch = read_measured(summary["batch"])
    assert {(r.pattern, r.L, r.R) for r in batch} == {("unshared", 12, 1), ("pipelined", 4, 3), ("pipelined", 2, 6)}
    for r in batch:
        lengths = [int(x) for x in r.extra_field("lengths").split("/")]
        assert r.section == "batch" and r.n == len(lengths) in (1, 4) and r.ctx == round(sum(lengths) / r.n)


def test_batch_only_run_writes_its_rows_to_out(tmp_path, tiny_spec):
    """With only the batch part, `--out` is the batch CSV (no empty step CSV beside it)."""
    out = tmp_path / "batch.csv"
    plan = MeasurePlan(parts=("batch",), sharings=plan_from_options(sharings="2x2").sharings, batch_sizes=(2,),
                       batch_ctxs=(8,), quick=True)
    summary = measure("cpu", out, plan=plan, model="tiny", model_specs=(tiny_spec,))
    assert summary["batch"] == str(out) and summary["rows"] == 2
    assert {(r.section, r.pattern, r.n) for r in read_measured(out)} == {("batch", "unshared", 2),
                                                                       ("batch", "pipelined", 2)}
    assert not (tmp_path / "batch.batch.csv").exists()


def test_validate_simulates_every_whole_decode_row(tmp_path, tiny_spec, cli):
    """`speedsim validate` simulates the closed-loop decode rows from the traces they name."""
    out = tmp_path / "m.csv"
    plan = MeasurePlan(parts=("loop",), sharings=plan_from_options(sharings="4x3").sharings, quick=True)
    summary = measure("cpu", out, plan=plan, model="tiny", model_specs=(tiny_spec,))
    res = cli("validate", "--measured", str(out), "--profile", "cpu-host", "--mode", "eager",
              "--model-spec", summary["model_spec"], "--json")
    assert res.returncode == 0, res.stderr
    out_json = json.loads(res.stdout)
    assert out_json["rows"] == 2
    # every recorded part of a whole decode is compared with its simulated counterpart
    for row in out_json["worst"]:
        assert set(row["parts"]) == {"prefill_us_per_seq", "us_per_token_no_prefill", "replay_us_per_step",
                                     "host_us_per_step"}
        assert all(p["simulated"] > 0 and p["measured"] > 0 for p in row["parts"].values())


def test_measure_cli_config_quick_writes_step_rows(tmp_path, cli):
    """The --config path: layer, group, LM head and functional whole-decode rows, a model spec and traces."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "m" / "cpu.csv"
    out.parent.mkdir()
    res = cli("measure", "--device", "cpu", "--config", str(cfg), "--out", str(out), "--parts", "steps",
              "--quick", "--json")
    assert res.returncode == 0, res.stderr
    rows = read_measured(out)
    assert {r.section for r in rows} == {"layer", "group", "lmhead", "decode"}
    decode = [r for r in rows if r.section == "decode"]
    assert {r.pattern for r in decode} == {"sequential", "pipelined"}
    assert all(r.extra_field("impl") == "functional" and r.L == 2 and r.R == 2 for r in decode)
    assert (out.parent / "cpu.traces.jsonl.gz").exists()
    assert json.loads(res.stdout)["model"] == "speed-tiny"


@pytest.mark.parametrize(("flag", "value"), [("--parts", "steps,nope"), ("--sharings", "4by3"),
                                             ("--batch-sizes", "0,2"), ("--lm-head", "shared")])
def test_bad_options_exit_2_naming_the_flag(tmp_path, flag, value, cli):
    res = cli("measure", "--device", "cpu", "--out", str(tmp_path / "x.csv"), flag, value)
    assert res.returncode == 2 and flag in res.stderr and "Traceback" not in res.stderr


def test_kv_lengths_spread_around_ctx_and_reproducible():
    lengths = kv_lengths(32, 128)
    assert lengths == kv_lengths(32, 128) and len(set(lengths)) > 8
    assert all(64 <= n <= 192 for n in lengths) and 100 < sum(lengths) / 32 < 156


def test_schema_is_defined_once_and_read_back():
    """The reader uses the schema's columns; a row with an unknown column is refused; `batch` rows read."""
    assert measured_module.COLUMNS is COLUMNS
    with pytest.raises(ValueError, match="sequences"):
        measured_row(section="batch", sequences=3)
    assert measured_row(section="batch", us_median=1.23456)["us_median"] == 1.235


def test_measure_cuda_without_gpu_is_a_user_error(tmp_path, tiny_spec, cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA path is measured for real instead")
    res = cli("measure", "--device", "cuda", "--model", "tiny", "--model-spec", str(tiny_spec),
              "--out", str(tmp_path / "x.csv"))
    assert res.returncode == 2 and "CUDA" in res.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_cuda_graph_replay_rows(tmp_path, tiny_spec):  # pragma: no cover - runs only where a GPU is
    """On CUDA every whole decode is timed replayed from CUDA graphs and eagerly, after the fp32 check;
    batch rows come in both modes too."""
    out = tmp_path / "cuda.csv"
    plan = MeasurePlan(parts=("loop", "batch"), sharings=plan_from_options(sharings="2x3").sharings, quick=True)
    summary = measure("cuda", out, plan=plan, model="tiny", model_specs=(tiny_spec,))
    decode = read_measured(out)
    assert {(r.pattern, r.mode) for r in decode} == {(p, m) for p in ("sequential", "pipelined")
                                                     for m in ("graph", "eager")}
    graph = [r for r in decode if r.mode == "graph"]
    assert all(int(r.extra_field("graphs")) > 0 and r.extra_field("late_captures") is None for r in graph)
    assert {r.mode for r in read_measured(summary["batch"])} == {"graph", "eager"}


def test_ops_only_run_writes_single_op_rows_that_validate(tmp_path, tiny_spec, cli):
    """`--parts ops`: every op kind at the model's shapes, in `--out`; each row names its shape and
    simulates as that shape (two linear rows of the same row count but other shapes differ)."""
    out = tmp_path / "ops.csv"
    summary = measure("cpu", out, plan=MeasurePlan(parts=("ops",), quick=True), model="tiny",
                      model_specs=(tiny_spec,))
    rows = read_measured(out)
    assert summary["ops"] == str(out) and summary["rows"] == len(rows)
    assert {r.pattern for r in rows} == {"linear", "attention", "norm", "kv_write"}
    assert all(r.section == "op" and r.mode == "eager" and r.us_median > 0 for r in rows)
    linear = [r for r in rows if r.pattern == "linear" and r.n == 1]
    assert len({r.extra for r in linear}) == len(linear) >= 4
    res = cli("validate", "--measured", str(out), "--profile", "cpu-host", "--mode", "eager",
              "--model-spec", summary["model_spec"], "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == len(rows)


def test_batch_and_ops_without_steps_write_no_empty_out(tmp_path, tiny_spec):
    """`--parts batch,ops`: the batch rows in `--out`, the op rows beside it, and no header-only file."""
    out = tmp_path / "m.csv"
    plan = MeasurePlan(parts=("batch", "ops"), sharings=plan_from_options(sharings="2x2").sharings, batch_sizes=(2,),
                       batch_ctxs=(8,), quick=True)
    summary = measure("cpu", out, plan=plan, model="tiny", model_specs=(tiny_spec,))
    assert summary["batch"] == str(out) and summary["ops"] == str(tmp_path / "m.ops.csv")
    assert {r.section for r in read_measured(out)} == {"batch"}
    assert {r.section for r in read_measured(tmp_path / "m.ops.csv")} == {"op"}
    assert not (tmp_path / "m.batch.csv").exists()
