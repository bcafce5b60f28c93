"""The closed decode loop of the static-buffer decoder (impl=static): its programs, the whole-decode
model, the fit of `host.loop_us`, and the decode rows `validate` refuses."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from speedsim.hardware import load_profile
from speedsim.sharing import Sharing
from speedsim.simulate.loop import static_loop
from speedsim.trace.io import read_traces
from speedsim.validation.loop_fit import fit_loop_rows, with_loop_us
from speedsim.validation.measured import read_measured
from speedsim.workload import KernelRules, resolve_models
from speedsim.workload.static import bucket_length, buffer_length, greedy_step, prefill_passes, speed_step
from speedsim.workload.steps import StepContext, with_source

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "experiments/measured/h200/closed-loop"
CPU = ROOT / "experiments/measured/cpu-host/closed-loop"


def _ctx(unique: int, repeats: int, profile: str = "h200") -> StepContext:
    spec = resolve_models((H200 / "decode.t5base.yaml",))["t5base"]
    p = load_profile(profile)
    return StepContext(with_source(spec, 512), Sharing(unique, repeats), 512, p.default_dtype,
                       KernelRules.from_profile(p))


def test_bucket_lengths_follow_the_measured_decoder():
    """Keys read: rounded up to the bucket, never past the buffer; the buffer: offset + tokens + 1, rounded up."""
    assert [bucket_length(p, 192, 64) for p in (0, 62, 63, 64, 127, 128, 191, 500)] == [64, 64, 64, 128, 128, 192,
                                                                                       192, 192]
    assert buffer_length(0, 128, None, 64) == 192 and buffer_length(19, 30, None, 64) == 64
    assert buffer_length(0, 600, 512, 64) == 512


def test_static_steps_attend_over_the_padded_bucket():
    """Every self-attention of a static step walks the whole bucket, whatever the token's position."""
    ctx = _ctx(12, 1)
    for length in (64, 128):
        attn = [k for k in greedy_step(ctx, length).kernels if k.name.endswith(".attn")]
        assert len(attn) == 12
        assert all(k.items.nbytes == (2.0 * length * 768 * 2,) for k in attn)


def test_speed_step_gathers_caches_only_for_non_consecutive_repeats():
    """Two index_select copies per layer when the in-flight repeats are not consecutive (a slice otherwise)."""
    ctx = _ctx(4, 3)
    steady = speed_step(ctx, [0, 1, 2], 64)
    gappy = speed_step(ctx, [0, 2], 64)
    assert not any("kv_gather" in k.name for k in steady.kernels)
    assert sum("kv_gather" in k.name for k in gappy.kernels) == 2 * 4
    # the exit runs on every in-flight row: LM head, argmax over the vocabulary, the output copy
    assert [k.name for k in steady.kernels[-4:]][1:] == ["lm_head", "argmax", "out.copy"]


def test_prefill_reads_one_prediction_per_repeat_then_loads_the_buffers():
    """The functional prefill: one program per exit the host reads, then the copy into the static buffers."""
    passes = prefill_passes(_ctx(4, 3))
    assert len(passes) == 3 + 1
    assert passes[0].kernels[0].name == "embed" and any(k.name.startswith("E0.") for k in passes[0].kernels)
    assert [k.name for k in passes[-1].kernels][:2] == ["load.k", "load.v"]


@pytest.mark.parametrize("sharing,method", [pytest.param("12x1", "greedy", marks=pytest.mark.slow),
                                            pytest.param("4x3", "speed", marks=pytest.mark.slow),
                                            pytest.param("2x6", "speed", marks=pytest.mark.slow)])
def test_loop_steps_are_the_measured_decodes_and_linear_in_loop_us(sharing, method):
    """The replayed schedule has the measured decodes' steps (the trace of the same decodes); one more
    microsecond of loop host time per step adds steps/tokens microseconds per token, exactly."""
    rows = {(r.L, r.R, r.pattern): r for r in read_measured(H200 / "decode.csv") if r.mode == "graph"}
    s = Sharing.parse(sharing)
    row = rows[(s.unique, s.repeats, "pipelined" if method == "speed" else "sequential")]
    traces = read_traces(H200 / row.extra_field("trace"))
    spec = resolve_models((H200 / "decode.t5base.yaml",))["t5base"]
    p = load_profile("h200")
    a = static_loop(with_loop_us(p, 0.0), spec, s, traces, "graph", method)
    b = static_loop(with_loop_us(p, 100.0), spec, s, traces, "graph", method)
    assert abs(a.steps - int(row.extra_field("steps"))) <= 2 and a.tokens == int(row.extra_field("tokens"))
    assert b.per_token_us - a.per_token_us == pytest.approx(100.0 * a.steps / a.tokens, rel=1e-9)
    assert a.prefill_us_per_seq > 0 and 0 < a.device_us_per_step < a.step_us


@pytest.mark.slow
def test_fit_recovers_a_known_loop_time(tmp_path):
    """Rows whose measured times are what the model gives with loop_us = 73: the fit finds 73, and the
    rows of the sharings it did not see are held out."""
    p = load_profile("h200")
    rows = [r for r in read_measured(H200 / "decode.csv") if r.mode == "graph"]
    models = resolve_models((H200 / "decode.t5base.yaml",))
    # measured := simulated at 73 us, then fit from 0
    made = []
    for k in rows:
        at = static_loop(with_loop_us(p, 73.0), models["t5base"], k.sharing,
                         read_traces(H200 / k.extra_field("trace")), "graph",
                         "speed" if k.pattern == "pipelined" else "greedy")
        made.append(dataclasses.replace(k, us_median=at.per_token_us))
    fit = fit_loop_rows(with_loop_us(p, 0.0), made, models, ("12x1", "4x3"), str(H200 / "decode.csv"))
    assert fit.value == pytest.approx(73.0, rel=1e-3)
    assert {(r.row.L, r.fitted) for r in fit.rows} == {(12, True), (4, True), (2, False)}
    assert all(abs(r.error) < 1e-3 for r in fit.rows)


@pytest.mark.recipe
def test_shipped_loop_us_are_the_fits_of_their_recipes():
    """hw_profiles/README.md's loop recipes give the shipped values (h200 and cpu-host)."""
    for profile, d, spec in (("h200", H200, "decode.t5base.yaml"), ("cpu-host", CPU, "decode.speed-4x3.yaml")):
        p = load_profile(profile)
        fit = fit_loop_rows(p, read_measured(d / "decode.csv"), resolve_models((d / spec,)), ("12x1", "4x3"),
                            str(d / "decode.csv"))
        assert fit.value == p.host.loop_us > 0


def _copy_rows(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """The H200 closed-loop files in tmp_path, the CSV's first graph row changed by `edit(row)`."""
    for f in H200.glob("decode.*"):
        shutil.copy(f, tmp_path / f.name)
    with open(H200 / "decode.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    edit(rows[0])
    out = tmp_path / "decode.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _set_extra(key: str, value: str | None):  # type: ignore[no-untyped-def]
    def edit(row: dict) -> None:
        items = [i for i in row["extra"].split(";") if not i.startswith(f"{key}=")]
        row["extra"] = ";".join(items + ([f"{key}={value}"] if value is not None else []))
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set_extra("trace", None), "needs trace=FILE"),
    (_set_extra("trace", "gone.jsonl.gz"), "not found"),
    (_set_extra("tokens", "500"), "holds 512 tokens, the row tokens=500"),
    (_set_extra("prefill_us_per_seq", "0"), "prefill_us_per_seq=0"),
    (_set_extra("replay_us_per_step", "-3"), "replay_us_per_step=-3"),
    (_set_extra("host_us_per_step", "nan"), "host_us_per_step=nan"),
    (_set_extra("kv_bucket", "0"), "kv_bucket=0"),
])
def test_bad_decode_rows_exit_2_naming_file_and_row(tmp_path, cli, edit, message):
    path = _copy_rows(tmp_path, edit)
    res = cli("validate", "--measured", str(path), "--profile", "h200", "--mode", "graph",
              "--model-spec", str(tmp_path / "decode.t5base.yaml"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:2" in lines[0] and message in lines[0], lines


@pytest.mark.slow
def test_calibrate_fit_loop_cli(tmp_path, cli):
    """`calibrate --fit-loop`: writes the profile with loop_us, reports fitted and held-out rows."""
    out = tmp_path / "p.yaml"
    res = cli("calibrate", "--profile", "h200", "--measured", str(H200 / "decode.csv"), "--model-spec",
              str(H200 / "decode.t5base.yaml"), "--fit-loop", "12x1,4x3", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["parameters"]["host.loop_us"] == load_profile(str(out)).host.loop_us == load_profile("h200").host.loop_us
    assert {r["role"] for r in got["rows"]} == {"fitted", "held out"}
    res = cli("calibrate", "--profile", "h200", "--measured", str(H200 / "decode.csv"), "--model-spec",
              str(H200 / "decode.t5base.yaml"), "--fit-loop", "3x4", "--out", str(out))
    assert res.returncode == 2 and "--fit-loop" in res.stderr and len(res.stderr.strip().splitlines()) == 1
