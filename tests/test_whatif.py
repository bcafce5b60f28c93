"""What-ifs on a profile (issue 23 items 1-3): `--set PATH=VALUE` on every command that takes a profile, `set.PATH`
axes in sweep specs, and `speedsim profiles derive` (a what-if, or a datasheet, written as a profile).

Also a property of the model itself: raising a bandwidth, a peak rate or an achievable fraction, or lowering a
latency (a time or a cycle count), of the H200 never makes a t5base 4x3 decode slower, for any method.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedsim.engine import check_profile, open_profile
from speedsim.errors import UserError
from speedsim.hardware.files import load_whatif
from speedsim.hardware.whatif import parameter_paths
from speedsim.paths import PROFILE_DIR, ROOT
from speedsim.run import RunParams, simulate_run
from speedsim.run.options import settings_options
from speedsim.simulate import build_scenario, run_scenario
from speedsim.sweep.spec import SweepSpec, count_runs, expand, plan

TRACE_ARGS = ("--model", "t5base", "--sharing", "4x3", "--trace", "4x3", "--limit", "3")
DATASHEETS = ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml"
DERIVED = ("a100-80gb", "h100-sxm", "l4", "rtx-a5000", "jetson-agx-orin")


def assert_bad(res, *names: str) -> str:
    """Exit 2 with one stderr line, no traceback, naming each of `names`."""
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-1500:]
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("speedsim: error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------ parsing

def test_settings_become_the_runs_overrides_in_the_order_given():
    pairs = settings_options(["memory.dram.bandwidth_GBps=x2", " kernel.latency_us = 0.5 "])
    assert pairs == (("memory.dram.bandwidth_GBps", "x2"), ("kernel.latency_us", "0.5"))
    run = RunParams(profile="h200", sharing="4x3", overrides=pairs)
    assert run.overrides == pairs
    # a number (a sweep's YAML) is kept as its text: the value as given
    assert RunParams(profile="h200", sharing="4x3", overrides={"kernel.latency_us": 1}).overrides == \
        (("kernel.latency_us", "1"),)


@pytest.mark.parametrize("bad", [{"kernel.latency_us": True}, {"kernel.latency_us": [1, 2]},
                                 {"kernel.latency_us": {"a": 1}}, {"kernel.latency_us": ""}, {"": 1}])
def test_a_run_refuses_overrides_that_are_no_path_and_value(bad):
    with pytest.raises(ValueError):
        RunParams(profile="h200", sharing="4x3", overrides=bad)


def test_keys_of_runs_without_what_ifs_stay_as_they_were():
    """`overrides` is a later field: left out of the key at its default (the key computed at commit 3d193d8)."""
    plain = RunParams(profile="h200", sharing="4x3", mispredict=0.1)
    assert plain.key == "11df9f3aa4fb2ada"
    assert "overrides" not in plain.canonical()
    changed = RunParams(profile="h200", sharing="4x3", mispredict=0.1, overrides={"kernel.latency_us": "x2"})
    assert changed.key != plain.key and changed.canonical()["overrides"] == [["kernel.latency_us", "x2"]]


@pytest.mark.parametrize(("setting", "path", "value"), [
    ("memory.dram.bandwidth_GBps=x2", "memory.dram.bandwidth_GBps", 9600.0),
    ("memory.onchip.0.capacity_MiB=x0.5", "memory.onchip.0.capacity_MiB", 30.0),
    ("host.launch_overhead_us.graph=1", "host.launch_overhead_us.graph", 1.0),
    ("compute.matrix_peak_TFLOPS.bf16=X0.5", "compute.matrix_peak_TFLOPS.bf16", 494.7),
    ("compute.units=x2", "compute.units", 264.0),
])
def test_a_path_names_the_number_it_sets(setting, path, value):
    base = open_profile("h200")
    profile, overrides = load_whatif("h200", [setting], check=check_profile)
    assert [(o.path, o.value) for o in overrides] == [(path, pytest.approx(value))]
    changed = parameter_paths(profile)
    assert changed[path] == pytest.approx(value)
    # (the units carry the peaks with them: `couple_peaks`, tested below)
    carried = ("compute.matrix_peak_TFLOPS.", "compute.vector_peak_TFLOPS.") if path == "compute.units" else ()
    assert {k: v for k, v in changed.items() if k != path and not k.startswith(carried)} == {
        k: v for k, v in parameter_paths(base).items() if k != path and not k.startswith(carried)}
    assert profile.name == f"h200 ({overrides[0].label})"
    if path == "compute.units":
        assert profile.compute.units == 264 and isinstance(profile.compute.units, int)


def test_the_engines_check_runs_on_the_changed_profile_as_on_the_loaded_one():
    seen: list[tuple[str, str]] = []

    def check(profile, where):
        seen.append((profile.name, where))
        check_profile(profile, where)

    load_whatif("h200", ["kernel.latency_us=1"], check=check)
    assert seen == [("h200", str(PROFILE_DIR / "h200.yaml")), ("h200 (kernel.latency_us=1)", "--set")]
    seen.clear()
    load_whatif("h200", (), check=check)  # no what-if: the profile as loaded, checked once
    assert seen == [("h200", str(PROFILE_DIR / "h200.yaml"))]


def test_an_overridden_parameter_has_no_range_any_more():
    l4 = open_profile("l4")
    assert "kernel.latency_us" in l4.ranges
    profile, _ = load_whatif("l4", ["kernel.latency_us=x0.5"], check=check_profile)
    assert "kernel.latency_us" not in profile.ranges
    assert set(profile.ranges) == set(l4.ranges) - {"kernel.latency_us"}


# ------------------------------------------------------------------------------------------------ bad input

BAD_SETTINGS = [
    ("memory.dram.bw=x2", "memory.dram.bw"),                       # unknown path
    ("memory.dram=5", "memory.dram"),                              # a section
    ("memory.onchip=5", "memory.onchip"),                          # a list
    ("memory.dram.bandwidth_GBps=[1,2]", "memory.dram.bandwidth_GBps"),  # a list as the value
    ("memory.dram.bandwidth_GBps=x0", "memory.dram.bandwidth_GBps"),
    ("memory.dram.bandwidth_GBps=x-1", "memory.dram.bandwidth_GBps"),
    ("memory.dram.bandwidth_GBps=xnan", "memory.dram.bandwidth_GBps"),
    ("memory.dram.bandwidth_GBps=inf", "memory.dram.bandwidth_GBps"),
    ("memory.dram.bandwidth_GBps=fast", "memory.dram.bandwidth_GBps"),
    ("memory.dram.efficiency=1.5", "memory.dram.efficiency"),      # outside the field's closed range
    ("kernel.latency_us=-1", "kernel.latency_us"),
    ("compute.units=x1.3", "compute.units"),                       # an integer field
    ("name=h100", "name"),                                         # text, not a parameter
    ("ranges.memory.dram.first_byte_ns.low=1", "ranges"),          # the ranges are not parameters
    ("memory.dram.bandwidth_GBps", "memory.dram.bandwidth_GBps"),  # no value
]


@pytest.mark.parametrize(("setting", "named"), BAD_SETTINGS)
def test_simulate_refuses_a_bad_setting_naming_the_flag_and_path(cli, tmp_path, setting, named):
    timeline = tmp_path / "timeline.json"
    res = cli("simulate", "--profile", "h200", *TRACE_ARGS, "--set", setting, "--timeline", str(timeline))
    assert_bad(res, "--set", named)
    assert not timeline.exists()


def test_the_same_path_twice_with_different_values_is_refused(cli):
    res = cli("simulate", "--profile", "h200", *TRACE_ARGS, "--set", "kernel.latency_us=x2",
              "--set", "kernel.latency_us=x3", "--json")
    assert_bad(res, "--set", "kernel.latency_us")
    same = cli("simulate", "--profile", "h200", *TRACE_ARGS, "--set", "memory.dram.bandwidth_GBps=x2",
               "--set", "memory.dram.bandwidth_GBps=9600", "--json")
    assert same.returncode == 0, same.stderr


@pytest.mark.parametrize("command", [
    ("serve", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--trace", "4x3", "--method", "speed",
     "--arrivals", "poisson:100", "--requests", "3"),
    ("validate", "--profile", "h200"),
    ("profiles", "--params", "h200"),
])
def test_every_command_refuses_a_bad_setting(cli, command):
    assert_bad(cli(*command, "--set", "memory.dram.bandwidth_GBps=x0"), "--set", "memory.dram.bandwidth_GBps")


# ------------------------------------------------------------------------------------------------ recording

def _simulate(cli, *args: str) -> dict:
    res = cli("simulate", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_simulate_records_what_was_set_in_json_and_title(cli):
    plain = _simulate(cli, "--profile", "h200", *TRACE_ARGS)
    assert "overrides" not in plain  # (the output of a run without what-ifs is as before)
    out = _simulate(cli, "--profile", "h200", *TRACE_ARGS, "--set", "memory.dram.bandwidth_GBps=x2",
                    "--set", "kernel.latency_us=0.5")
    assert out["overrides"] == {"memory.dram.bandwidth_GBps": 9600.0, "kernel.latency_us": 0.5}
    assert out["profile"] == "h200 (memory.dram.bandwidth_GBps x2, kernel.latency_us=0.5)"
    assert list(out)[:2] == ["profile", "overrides"]
    text = cli("simulate", "--profile", "h200", *TRACE_ARGS, "--set", "memory.dram.bandwidth_GBps=x2")
    assert text.returncode == 0, text.stderr
    assert "on h200 (memory.dram.bandwidth_GBps x2)" in text.stdout.splitlines()[0]
    assert out["per_token_us"] <= plain["per_token_us"]  # a faster DRAM, a shorter fixed latency


def test_a_what_if_simulates_as_the_profile_derived_from_it(cli, tmp_path):
    """`--set` and the profile `profiles derive --from --set` writes are the same chip: the same numbers."""
    out = tmp_path / "h200-fast.yaml"
    res = cli("profiles", "derive", "--from", "h200", "--set", "memory.dram.bandwidth_GBps=x0.25",
              "--set", "host.launch_overhead_us.graph=x2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    by_set = _simulate(cli, "--profile", "h200", *TRACE_ARGS, "--set", "memory.dram.bandwidth_GBps=x0.25",
                       "--set", "host.launch_overhead_us.graph=x2")
    by_file = _simulate(cli, "--profile", str(out), *TRACE_ARGS)
    assert by_file["profile"] == "h200-fast"
    for key in ("per_token_us", "prefill_us", "dram_bytes_per_token"):
        assert by_set[key] == by_file[key]
    for name, base in by_set["baselines"].items():
        assert base["per_token_us"] == by_file["baselines"][name]["per_token_us"]


@pytest.mark.slow  # (three simulations or a fit: CI's slow run keeps the suite under a minute)
def test_bounds_run_on_the_what_if_profile(cli):
    nominal = _simulate(cli, "--profile", "l4", *TRACE_ARGS, "--bounds")
    out = _simulate(cli, "--profile", "l4", *TRACE_ARGS, "--bounds", "--set", "kernel.latency_us=x0.5")
    assert out["overrides"] == {"kernel.latency_us": pytest.approx(0.3491)}
    for res in (out, *out["baselines"].values()):
        assert math.isfinite(res["per_token_us_low"]) and math.isfinite(res["per_token_us_high"])
        assert res["per_token_us_low"] <= res["per_token_us"] <= res["per_token_us_high"]
    # the fast end no longer moves kernel.latency_us (its range is gone): the what-if's value stays at both ends
    assert out["per_token_us"] < nominal["per_token_us"]


def test_serve_records_what_was_set(cli):
    args = ("serve", "--profile", "h200", "--model", "t5base", "--sharing", "4x3", "--trace", "4x3", "--method",
            "speed", "--arrivals", "poisson:200", "--requests", "4")
    plain = cli(*args, "--json")
    assert plain.returncode == 0 and "overrides" not in json.loads(plain.stdout)
    res = cli(*args, "--set", "host.launch_overhead_us.graph=x2", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["overrides"] == {"host.launch_overhead_us.graph": pytest.approx(0.3024)}
    assert out["profile"] == "h200 (host.launch_overhead_us.graph x2)"
    text = cli(*args, "--set", "host.launch_overhead_us.graph=x2")
    assert "on h200 (host.launch_overhead_us.graph x2)" in text.stdout.splitlines()[0]


MEASURED = ("section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra\n"
            "lmhead,t5base,graph,lmhead,1,0,0,0,14.5,14.4,14.7,\n"
            "lmhead,t5base,graph,lmhead,4,0,0,0,15.3,15.2,15.5,\n")


def test_validate_records_what_was_set(cli, tmp_path):
    measured = tmp_path / "m.csv"
    measured.write_text(MEASURED)
    plain = json.loads(cli("validate", "--profile", "h200", "--measured", str(measured), "--json").stdout)
    res = cli("validate", "--profile", "h200", "--measured", str(measured), "--set",
              "memory.dram.bandwidth_GBps=x0.25", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "overrides" not in plain and out["overrides"] == {"memory.dram.bandwidth_GBps": 1200.0}
    assert out["profile"] == "h200 (memory.dram.bandwidth_GBps x0.25)"
    assert out["mape"]["all"] != plain["mape"]["all"]


@pytest.mark.slow  # (three simulations or a fit: CI's slow run keeps the suite under a minute)
def test_calibrate_starts_from_the_what_if(cli, tmp_path):
    measured = tmp_path / "m.csv"
    measured.write_text(MEASURED)
    out = tmp_path / "h200-wide.yaml"
    res = cli("calibrate", "--measured", str(measured), "--profile", "h200", "--kernels", "none", "--out", str(out),
              "--set", "memory.dram.bandwidth_GBps=x2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["profile"] == "h200-wide" and summary["overrides"] == {"memory.dram.bandwidth_GBps": 9600.0}
    fitted = yaml.safe_load(out.read_text())
    assert fitted["name"] == "h200-wide" and fitted["memory"]["dram"]["bandwidth_GBps"] == 9600.0  # not fitted
    assert any("memory.dram.bandwidth_GBps 4800 -> 9600 (x2)" in s for s in fitted["sources"])
    bad = tmp_path / "bad.yaml"
    assert_bad(cli("calibrate", "--measured", str(measured), "--profile", "h200", "--kernels", "none", "--out",
                   str(bad), "--set", "memory.dram.efficiency=2"), "--set", "memory.dram.efficiency")
    assert not bad.exists()


# ------------------------------------------------------------------------------------------------ profiles --params

def test_profiles_params_lists_paths_values_and_ranges(cli):
    res = cli("profiles", "--params", "l4", "--json")
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    l4 = open_profile("l4")
    rows = {r["path"]: r for r in listing["parameters"]}
    assert listing["profile"] == "l4" and rows.keys() == parameter_paths(l4).keys()
    assert rows["memory.dram.bandwidth_GBps"] == {"path": "memory.dram.bandwidth_GBps", "value": 300.0}
    r = l4.ranges["kernel.latency_us"]
    assert (rows["kernel.latency_us"]["low"], rows["kernel.latency_us"]["high"]) == (r.low, r.high)
    text = cli("profiles", "--params", "l4")
    assert text.returncode == 0
    line = next(x for x in text.stdout.splitlines() if x.startswith("kernel.latency_us "))
    assert f"{r.low:.6g} .. {r.high:.6g}" in line
    changed = json.loads(cli("profiles", "--params", "l4", "--set", "kernel.latency_us=x2", "--json").stdout)
    assert changed["overrides"] == {"kernel.latency_us": pytest.approx(2 * l4.kernel.latency_us)}
    row = next(r for r in changed["parameters"] if r["path"] == "kernel.latency_us")
    assert "low" not in row  # a what-if's parameter has no range


def test_profiles_params_refusals(cli, tmp_path):
    assert_bad(cli("profiles", "--params", "nope"), "--params", "nope")
    assert_bad(cli("profiles", "--set", "kernel.latency_us=1"), "--set")
    assert_bad(cli("profiles", "--dir", str(tmp_path), "--params", "h200"), "--params")


def test_profiles_lists_as_before(cli):
    res = cli("profiles", "--json")
    assert res.returncode == 0 and {p["name"] for p in json.loads(res.stdout)["profiles"]} >= {"h200", *DERIVED}


# ------------------------------------------------------------------------------------------------ sweeps

def _spec(**top) -> SweepSpec:
    return SweepSpec.model_validate({"name": "t", **top})


BASE = {"model": "t5base", "trace": "4x3", "limit": 2, "sharing": "4x3"}


def test_set_axes_join_the_product_and_keep_other_keys():
    spec = _spec(fixed={**BASE, "set.kernel.latency_us": "x0.5"},
                 axes={"profile": ["h200", "l4"], "set.memory.dram.bandwidth_GBps": ["x0.5", "x1", 9600]})
    runs = expand(spec)
    assert len(runs) == 6 == count_runs(spec)
    assert {r.overrides for r in runs} == {(("kernel.latency_us", "x0.5"), ("memory.dram.bandwidth_GBps", v))
                                           for v in ("x0.5", "x1", "9600")}
    without = expand(_spec(fixed=BASE, axes={"profile": ["h200", "l4"]}))
    assert [r.key for r in without] == [RunParams(**BASE, profile=p).key for p in ("h200", "l4")]
    assert not {r.key for r in runs} & {r.key for r in without}


def test_set_keys_in_bundles_and_runs():
    spec = _spec(fixed={**BASE, "profile": "h200"},
                 axes={"chip": [{"set.memory.dram.bandwidth_GBps": "x2"}, {"set.kernel.latency_us": 1}]},
                 runs=[{"set.compute.clock_MHz": "x1.5"}])
    assert [r.overrides for r in plan(spec)] == [(("memory.dram.bandwidth_GBps", "x2"),),
                                                 (("kernel.latency_us", "1"),), (("compute.clock_MHz", "x1.5"),)]


def test_the_run_count_limit_counts_set_axes():
    ten = list(range(1, 11))
    spec = _spec(fixed={**BASE, "profile": "h200"},
                 axes={"set.compute.clock_MHz": ten, "set.kernel.latency_us": ten, "set.memory.dram.latency_ns": ten,
                       "set.host.sync_us": ten, "set.host.d2h_copy_us": [*ten, 11]})
    with pytest.raises(UserError, match=r"110,000 runs.*set\.host\.d2h_copy_us 11"):
        count_runs(spec)


@pytest.mark.parametrize(("block", "key"), [
    ({"axes": {"profile": ["h200", "a100-80gb"], "set.compute.matrix_peak_TFLOPS.fp8": ["x2"]}},
     "set.compute.matrix_peak_TFLOPS.fp8"),  # not a parameter of every profile of the sweep
    ({"axes": {"profile": ["h200"], "set.memory.dram.bw": ["x2"]}}, "set.memory.dram.bw"),
    ({"axes": {"profile": ["h200"], "set.memory.dram": [1]}}, "set.memory.dram"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": [[1, 2]]}}, "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": [{"a": 1}]}},
     "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": [True]}}, "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": ["x0"]}}, "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": ["x-1"]}}, "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.bandwidth_GBps": ["xnan"]}}, "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.memory.dram.efficiency": [0.5, 1.5]}}, "set.memory.dram.efficiency"),
    ({"fixed": {"set.memory.dram.bandwidth_GBps": [1, 2]}, "axes": {"profile": ["h200"]}},
     "set.memory.dram.bandwidth_GBps"),
    ({"axes": {"profile": ["h200"], "set.": [1]}}, "set."),
    ({"axes": {"profile": ["h200"], "overrides": [1]}}, "overrides"),
])
def test_a_bad_set_key_is_refused_up_front_naming_it(cli, tmp_path, block, key):
    spec = {"name": "bad", "fixed": {**BASE, **block.get("fixed", {})}, "axes": block["axes"]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert_bad(cli("sweep", str(path), "--out", str(out), "--workers", "1"), str(path), f"'{key}'")
    assert not out.exists()


def test_set_keys_that_clash_together_name_every_key():
    spec = _spec(fixed={**BASE, "profile": "h200"},
                 axes={"set.memory.dram.capacity_MiB": ["x1", 50], "set.memory.onchip.0.capacity_MiB": ["x1"]})
    with pytest.raises(UserError, match=r"set\.memory\.dram\.capacity_MiB"):
        plan(spec)


def test_a_sweep_row_carries_a_column_per_set_parameter(cli, tmp_path):
    spec = {"name": "bw", "fixed": {**BASE, "profile": "h200"},
            "axes": {"set.memory.dram.bandwidth_GBps": ["x0.5", 9600], "mode": ["graph"]}}
    path = tmp_path / "bw.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--json")
    assert res.returncode == 0, res.stderr
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "results.csv")
    speed = table[table["method"] == "speed"].set_index("set.memory.dram.bandwidth_GBps")
    assert sorted(speed.index) == ["9600", "x0.5"]
    assert speed.loc["x0.5", "value.memory.dram.bandwidth_GBps"] == 2400.0
    assert speed.loc["9600", "value.memory.dram.bandwidth_GBps"] == 9600.0
    assert "overrides" not in table.columns
    assert table["status"].eq("ok").all()
    # each row is the simulation of `simulate --set` at that point
    direct = _simulate(cli, "--profile", "h200", *TRACE_ARGS[:-1], "2", "--set", "memory.dram.bandwidth_GBps=x0.5")
    assert speed.loc["x0.5", "per_token_us"] == pytest.approx(direct["per_token_us"], rel=1e-12)
    lines = (tmp_path / "out" / "runs.jsonl").read_text().splitlines()
    assert all(not isinstance(v, list | dict) for line in lines for row in json.loads(line)["rows"]
               for v in row.values())


# ------------------------------------------------------------------------------------------------ profiles derive

@pytest.mark.parametrize("name", DERIVED)
def test_the_shipped_derived_profiles_come_out_of_derive_byte_for_byte(cli, tmp_path, name):
    out = tmp_path / f"{name}.yaml"
    res = cli("profiles", "derive", "--datasheet", str(DATASHEETS), "--gpu", name, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (PROFILE_DIR / f"{name}.yaml").read_bytes()


def test_derive_reads_a_one_entry_datasheet(cli, tmp_path):
    entries = yaml.safe_load(DATASHEETS.read_text())["gpus"]
    one = tmp_path / "l4-sheet.yaml"
    one.write_text(yaml.safe_dump(next(e for e in entries if e["name"] == "l4"), sort_keys=False))
    out = tmp_path / "l4.yaml"
    res = cli("profiles", "derive", "--datasheet", str(one), "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (PROFILE_DIR / "l4.yaml").read_bytes()
    assert json.loads(res.stdout)["gpu"] == "l4"
    assert_bad(cli("profiles", "derive", "--datasheet", str(one), "--gpu", "a100-80gb", "--out", str(out)), "--gpu")
    assert_bad(cli("profiles", "derive", "--datasheet", str(DATASHEETS), "--out", str(tmp_path / "x.yaml")),
               "--gpu", "l4")


def test_derive_writes_a_what_if_that_says_what_changed(cli, tmp_path):
    directory = tmp_path / "profiles"
    directory.mkdir()
    out = directory / "h200-2xbw.yaml"
    res = cli("profiles", "derive", "--from", "h200", "--set", "memory.dram.bandwidth_GBps=x2", "--out", str(out),
              "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["profile"] == "h200-2xbw" and summary["from"] == "h200"
    assert summary["overrides"] == {"memory.dram.bandwidth_GBps": 9600.0}
    written = yaml.safe_load(out.read_text())
    h200 = yaml.safe_load((PROFILE_DIR / "h200.yaml").read_text())
    assert written["memory"]["dram"]["bandwidth_GBps"] == 9600.0
    assert written["sources"][:-1] == h200["sources"]
    assert "what-if of the h200 profile: memory.dram.bandwidth_GBps 4800 -> 9600 (x2)" in written["sources"][-1]
    assert written["ranges"] == h200["ranges"]  # (the bandwidth had no range)
    listed = cli("profiles", "--dir", str(directory), "--json")  # its name matches its file: listed
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)["profiles"]] == ["h200-2xbw"]
    named = cli("profiles", "derive", "--from", "h200", "--set", "kernel.latency_us=1", "--name", "other",
                "--out", str(tmp_path / "x.yaml"))
    assert named.returncode == 0 and "note:" in named.stdout


@pytest.mark.parametrize(("args", "named"), [
    (("--from", "h200"), "--set"),
    (("--from", "h200", "--datasheet", str(DATASHEETS), "--set", "kernel.latency_us=1"), "--from/--datasheet"),
    ((), "--from/--datasheet"),
    (("--from", "h200", "--gpu", "l4", "--set", "kernel.latency_us=1"), "--gpu"),
    (("--from", "nope", "--set", "kernel.latency_us=1"), "--from"),
    (("--from", "h200", "--set", "kernel.latency_us=x0"), "--set"),
    (("--from", "h200", "--set", "kernel.latency_us=1", "--name", " bad"), "--name"),
    (("--datasheet", str(DATASHEETS), "--gpu", "nope"), "--gpu"),
    (("--datasheet", "no-such-sheet.yaml"), "--datasheet"),
    (("--datasheet", str(DATASHEETS), "--gpu", "l4", "--reference", "cpu-host"), "--reference"),
])
def test_derive_refusals_write_nothing(cli, tmp_path, args, named):
    out = tmp_path / "new.yaml"
    assert_bad(cli("profiles", "derive", *args, "--out", str(out)), named)
    assert not out.exists()


@pytest.mark.parametrize("existing", ["not a profile\n", "name: x\nkind: gpu\n", "a: 1\n"])
def test_derive_never_replaces_a_file_that_is_not_a_profile(cli, tmp_path, existing):
    out = tmp_path / "mine.yaml"
    out.write_text(existing)
    assert_bad(cli("profiles", "derive", "--from", "h200", "--set", "kernel.latency_us=1", "--out", str(out)),
               "--out")
    assert out.read_text() == existing
    assert_bad(cli("profiles", "derive", "--from", "h200", "--set", "kernel.latency_us=1",
                   "--out", str(tmp_path / "x.txt")), "--out")


def test_derive_replaces_an_earlier_profile(cli, tmp_path):
    out = tmp_path / "mine.yaml"
    for value in ("1", "2"):
        res = cli("profiles", "derive", "--from", "h200", "--set", f"kernel.latency_us={value}", "--out", str(out))
        assert res.returncode == 0, res.stderr
    assert yaml.safe_load(out.read_text())["kernel"]["latency_us"] == 2.0


def test_profiles_keeps_its_group_options_before_derive(cli, tmp_path):
    assert_bad(cli("profiles", "--json", "derive", "--from", "h200", "--set", "kernel.latency_us=1",
                   "--out", str(tmp_path / "x.yaml")), "derive")
    assert not (tmp_path / "x.yaml").exists()


# ------------------------------------------------------------------------------------------------ monotonicity

def _is_rate(path: str) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return leaf.endswith(("_GBps", "efficiency")) or "_TFLOPS." in path


def _is_time(path: str) -> bool:
    """A time (`_us`, `_ns`, also a table of them: `host.launch_overhead_us.graph`) or a cycle count.
    (`speedsim.hardware.bounds.slower_when_larger` must agree: `test_bounds_reads_a_table_of_times_as_times`.)"""
    parts = path.split(".")
    return any(p.endswith(("_us", "_ns")) for p in parts) or "cycles" in parts[-1]


H200_PARAMETERS = parameter_paths(open_profile("h200"))
RATES = sorted(p for p in H200_PARAMETERS if _is_rate(p))
TIMES = sorted(p for p in H200_PARAMETERS if _is_time(p))
_BASE: dict[int, dict[str, float]] = {}


def _per_token(settings: tuple[str, ...], limit: int) -> dict[str, float]:
    run = simulate_run(profile="h200", model="t5base", sharing="4x3", trace="4x3", synthetic=None,
                       baselines=("unshared", "sequential"), mode="graph", src_len=None, limit=limit, launch_exit=0,
                       max_in_flight=None, device_control=False, bounds=False, settings=settings)
    return {m.method: m.per_token_us for m in run_scenario(build_scenario(run)).methods()}


def _faster_setting(path: str, fraction: float) -> str:
    """A setting that makes `path` faster by `fraction` of the way its field allows: a rate raised (an
    achievable fraction towards 1, others up to x8), a time lowered (down to x1/8, not below its floor)."""
    value = H200_PARAMETERS[path]
    if path in RATES:
        top = 1.0 if path.endswith("efficiency") else value * 8
        return f"{path}={value + fraction * (top - value)!r}"
    return f"{path}=x{1 - fraction * 7 / 8!r}"


def _check_never_slower(settings: tuple[str, ...], limit: int) -> None:
    if limit not in _BASE:
        _BASE[limit] = _per_token((), limit)
    base = _BASE[limit]
    try:
        changed = _per_token(settings, limit)
    except UserError as err:  # below a field's floor (a latency of at least 0.1 ns): not a chip to compare
        assert "greater than or equal" in str(err), err
        return
    slower = {m: f"{changed[m]:.6g} us > {base[m]:.6g} us" for m in base if changed[m] > base[m] * (1 + 1e-12)}
    assert not slower, f"{', '.join(settings)} made the decode slower (a modelling bug): {slower}"


def test_the_parameter_classes_cover_the_h200():
    assert {"memory.dram.bandwidth_GBps", "memory.onchip.0.bandwidth_GBps", "compute.matrix_peak_TFLOPS.bf16",
            "compute.vector_peak_TFLOPS.bf16", "memory.dram.efficiency"} <= set(RATES)
    assert {"kernel.latency_us", "host.launch_overhead_us.graph", "memory.dram.latency_ns", "host.sync_us",
            "compute.attention_tile_cycles"} <= set(TIMES)


@pytest.mark.parametrize("path", RATES + TIMES)
def test_a_faster_parameter_never_slows_a_decode(path):
    """Every rate of the h200 raised (x8, or an achievable fraction to 1) and every time lowered (x1/8), one at a
    time, on the first 2 sequences of the 4x3 trace."""
    _check_never_slower((_faster_setting(path, 1.0),), limit=2)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(RATES + TIMES), st.floats(0.01, 1.0), min_size=1, max_size=3))
def test_faster_parameters_together_never_slow_a_decode(changes):
    _check_never_slower(tuple(_faster_setting(p, f) for p, f in changes.items()), limit=3)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(RATES + TIMES), st.floats(0.01, 1.0), min_size=1, max_size=3))
def test_faster_parameters_together_never_slow_a_decode_at_length(changes):
    """The same property over many more combinations (CI)."""
    _check_never_slower(tuple(_faster_setting(p, f) for p, f in changes.items()), limit=3)


@pytest.mark.slow
@pytest.mark.parametrize("path", RATES + TIMES)
def test_a_faster_parameter_never_slows_the_whole_trace(path):
    """On 12 sequences of the trace (the whole one took ~20 min here; the everyday test runs 5)."""
    for fraction in (0.01, 1.0):
        _check_never_slower((_faster_setting(path, fraction),), limit=12)



def test_bounds_reads_a_table_of_times_as_times():
    from speedsim.hardware.bounds import slower_when_larger

    assert all(slower_when_larger(p) for p in TIMES)


def test_units_and_clock_carry_the_peaks_with_them():
    """Twice the units (or the clock) is twice every whole-device peak, each unit as strong as before, unless the
    what-if sets a peak too."""
    from speedsim.hardware import load_profile
    from speedsim.hardware.whatif import apply_settings

    base = load_profile("h200")
    more, _ = apply_settings(base, ["compute.units=x2"])
    assert more.compute.units == 2 * base.compute.units
    for table in ("matrix_peak_TFLOPS", "vector_peak_TFLOPS"):
        for dtype, peak in getattr(base.compute, table).items():
            assert getattr(more.compute, table)[dtype] == pytest.approx(2 * peak)
    both, _ = apply_settings(base, ["compute.units=x2", "compute.clock_MHz=x0.5", "compute.matrix_peak_TFLOPS.bf16=500"])
    assert both.compute.matrix_peak_TFLOPS["bf16"] == 500
    assert both.compute.matrix_peak_TFLOPS["fp8"] == pytest.approx(base.compute.matrix_peak_TFLOPS["fp8"])
    assert both.compute.vector_peak_TFLOPS["bf16"] == pytest.approx(base.compute.vector_peak_TFLOPS["bf16"])
