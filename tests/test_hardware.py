"""Hardware profiles: every shipped file validates; bad files fail with one line naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from speedsim.errors import UserError
from speedsim.hardware import HardwareProfile, list_profile_files, load_profile, load_profile_file
from speedsim.hardware.derive import derive_gpu, load_datasheets
from speedsim.paths import ROOT

REQUIRED = {"h200", "h100-sxm", "a100-80gb", "rtx-a5000", "l4", "jetson-agx-orin", "gemmini", "cpu-host"}


def test_required_profiles_ship_and_validate():
    """Every profile the issue names is shipped, and each file loads, has sources, and matches its name."""
    names = {p.stem for p in list_profile_files()}
    assert REQUIRED <= names
    for path in list_profile_files():
        profile = load_profile_file(path)
        assert profile.name == path.stem
        assert profile.sources


def test_profiles_command_json(cli):
    """`speedsim profiles --json` lists every profile with key numbers, and nothing else on stdout."""
    out = cli("profiles", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["profiles"]
    assert {r["name"] for r in rows} >= REQUIRED
    h200 = next(r for r in rows if r["name"] == "h200")
    assert h200["dram_GBps"] == 4800 and h200["units"] == 132


def test_derived_profiles_follow_the_rule():
    """The shipped non-H200 GPU profiles are exactly what the documented derivation rule gives."""
    ref = load_profile("h200")
    for sheet in load_datasheets(ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml"):
        assert load_profile(sheet.name) == derive_gpu(sheet, ref)


def test_derivation_scales_cycle_times_with_clock():
    """A GPU at half the H200's clock gets twice its per-kernel latency and the same efficiencies."""
    ref = load_profile("h200")
    sheet = load_datasheets(ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml")[0]
    half = sheet.model_copy(update={"clock_MHz": ref.compute.clock_MHz / 2})
    derived = derive_gpu(half, ref)
    assert derived.kernel.latency_us == pytest.approx(2 * ref.kernel.latency_us, rel=1e-3)
    assert derived.memory.dram.efficiency == ref.memory.dram.efficiency


def test_derivation_scales_inflight_bytes_with_the_reference_profiles_smem():
    """In-flight bytes per unit scale by smem / the reference profile's compute.smem_per_unit_KiB
    (not a number in code): halving the reference's shared memory doubles the derived in-flight bytes."""
    ref = load_profile("h200")
    sheet = load_datasheets(ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml")[0]
    half = ref.model_copy(update={"compute": ref.compute.model_copy(
        update={"smem_per_unit_KiB": ref.compute.smem_per_unit_KiB / 2})})
    assert derive_gpu(sheet, half).compute.unit_inflight_KiB == pytest.approx(
        2 * derive_gpu(sheet, ref).compute.unit_inflight_KiB, rel=1e-3)


def test_derivation_needs_the_reference_smem():
    """A reference profile without compute.smem_per_unit_KiB cannot have GPUs derived from it."""
    ref = load_profile("h200")
    bare = ref.model_copy(update={"compute": ref.compute.model_copy(update={"smem_per_unit_KiB": None})})
    sheet = load_datasheets(ROOT / "experiments" / "hardware" / "gpu_datasheets.yaml")[0]
    with pytest.raises(ValueError, match="smem_per_unit_KiB"):
        derive_gpu(sheet, bare)


def test_software_section_defaults_to_the_h200_stack(tiny_profile_dict):
    """A profile without a `software:` section gets the values the H200 profile states explicitly."""
    assert "software" not in tiny_profile_dict
    h200 = load_profile("h200").software
    assert HardwareProfile.model_validate(tiny_profile_dict).software.model_dump(exclude={"sources"}) == \
        h200.model_dump(exclude={"sources"})


def test_software_rule_under_compute_is_refused_naming_its_new_place(tmp_path, tiny_profile_dict):
    """A kernel-selection rule left under `compute:` (its old place) is a one-line error naming `software.`."""
    tiny_profile_dict["compute"]["gemm_tile_rows"] = 64
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_profile_dict))
    with pytest.raises(UserError, match="software.gemm_tile_rows"):
        load_profile_file(path)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["compute"].pop("units"), "compute.units"),
    (lambda d: d["memory"]["dram"].__setitem__("bandwidth_GBps", -5), "memory.dram.bandwidth_GBps"),
    (lambda d: d["kernel"].__setitem__("latency_us", "fast"), "kernel.latency_us"),
    (lambda d: d["host"]["launch_overhead_us"].pop("eager"), "host.launch_overhead_us"),
    (lambda d: d.__setitem__("sources", []), "sources"),
    (lambda d: d.__setitem__("software", {"copy_block_KiB": 0}), "software.copy_block_KiB"),
])
def test_bad_profile_names_the_field(tmp_path, tiny_profile_dict, mutate, field):
    """A missing, negative or mistyped field is a UserError naming the file and the field."""
    mutate(tiny_profile_dict)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_profile_dict))
    with pytest.raises(UserError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.slow
def test_bad_profile_cli_exit_2(tmp_path, tiny_profile_dict):
    """`speedsim profiles` on a directory with a broken file exits 2 with one line, no traceback."""
    tiny_profile_dict["memory"]["dram"]["efficiency"] = 1.5
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_profile_dict))
    out = subprocess.run([sys.executable, "-m", "speedsim.cli", "profiles", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "memory.dram.efficiency" in out.stderr


def test_unknown_profile_exit_2(cli):
    """An unknown profile name exits 2 naming it."""
    out = cli("validate", "--profile", "no-such-chip")
    assert out.returncode == 2
    assert "no-such-chip" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("ranges", "needle"), [
    ({"kernel.latency_us": {"low": 2.0, "high": 1.0, "reason": "x"}}, "ranges.kernel.latency_us"),
    ({"kernel.no_such": {"low": 1.0, "high": 2.0, "reason": "x"}}, "kernel.no_such"),
])
def test_bad_range_names_the_field(tmp_path, tiny_profile_dict, ranges, needle):
    """A range with low > high, or one naming no parameter, is a UserError naming the field."""
    tiny_profile_dict["ranges"] = ranges
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_profile_dict))
    with pytest.raises(UserError) as err:
        load_profile_file(path)
    assert needle in str(err.value)


def test_derived_profiles_range_every_rule_scaled_parameter():
    """Every derived GPU profile gives a range (with a reason) for its rule-scaled numbers, and the
    profile's own value lies inside it."""
    data = load_profile("l4")
    for path in ("kernel.latency_us", "compute.unit_inflight_KiB", "memory.dram.efficiency",
                 "memory.onchip.0.efficiency", "host.controller_us"):
        assert path in data.ranges and data.ranges[path].reason
    flat = data.model_dump()
    r = data.ranges["compute.unit_inflight_KiB"]
    assert r.low <= flat["compute"]["unit_inflight_KiB"] <= r.high


def test_fast_and_slow_ends_move_each_parameter_its_way(h200):
    """The fast end puts times low and efficiencies high; the slow end the reverse."""
    from speedsim.hardware.bounds import at_end

    fast, slow = at_end(h200, "fast"), at_end(h200, "slow")
    assert fast.host.controller_us == h200.ranges["host.controller_us"].low
    assert slow.host.controller_us == h200.ranges["host.controller_us"].high
    assert fast.l2.efficiency == h200.ranges["memory.onchip.0.efficiency"].high


def test_range_ends_of_an_integer_field_are_integers(tiny_profile_dict):
    """A range over an integer field (compute.units) with whole-number ends runs at both ends as
    integers; `--bounds` then gets a valid profile."""
    from speedsim.hardware.bounds import at_end

    tiny_profile_dict["ranges"] = {"compute.units": {"low": 2.0, "high": 8.0, "reason": "test"}}
    profile = HardwareProfile.model_validate(tiny_profile_dict)
    assert at_end(profile, "fast").compute.units == 8 and at_end(profile, "slow").compute.units == 2


def _unbounded_numbers(schema: dict, defs: dict, path: str) -> list[str]:
    """Dotted paths of the numbers in a JSON schema (a model's, with `$defs`) that lack a lower or an
    upper bound; a dict's values (`additionalProperties`) and an optional number (`anyOf`) included."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name == "ParameterRange":  # its ends are checked against the ranged field's own bounds
            return []
        return _unbounded_numbers(defs[name], defs, path)
    found: list[str] = []
    for option in schema.get("anyOf", []):
        found += _unbounded_numbers(option, defs, path)
    if schema.get("type") in ("number", "integer"):
        low = "minimum" in schema or "exclusiveMinimum" in schema
        high = "maximum" in schema or "exclusiveMaximum" in schema
        if not (low and high):
            found.append(path)
    for key, sub in schema.get("properties", {}).items():
        found += _unbounded_numbers(sub, defs, f"{path}.{key}" if path else key)
    if isinstance(schema.get("additionalProperties"), dict):
        found += _unbounded_numbers(schema["additionalProperties"], defs, f"{path}.*")
    if isinstance(schema.get("items"), dict):
        found += _unbounded_numbers(schema["items"], defs, f"{path}.0")
    return found


def test_every_number_of_a_profile_has_a_closed_range():
    """Every numeric field of a profile and its nested models (the software section, dict values such
    as the peaks) has a lower and an upper bound, so that a field added later cannot take 1e308 or
    1e-300 and print inf or NaN (the bounds are the MIN_/MAX_ constants of speedsim.hardware)."""
    schema = HardwareProfile.model_json_schema()
    assert _unbounded_numbers(schema, schema["$defs"], "") == []


def test_every_value_calibrate_may_fit_is_a_valid_profile():
    """Each end of every parameter `speedsim calibrate` fits or anchors lies inside the field's range,
    on each calibrated profile: a fit never writes a profile the loader refuses."""
    from speedsim.hardware.whatif import set_parameter
    from speedsim.validation.calibrate import (
        ANCHORS,
        DEVICE_PARAMETERS,
        EAGER_ONLY_PARAMETERS,
        EAGER_PARAMETER,
    )

    parameters = [*DEVICE_PARAMETERS, *(p for _, p in ANCHORS), EAGER_PARAMETER, *EAGER_ONLY_PARAMETERS]
    for name in ("h200", "cpu-host"):
        profile = load_profile(name)
        for parameter in parameters:
            for value in (parameter.low, parameter.high):
                data = profile.model_dump(exclude={"ranges"})
                set_parameter(data, ".".join(str(k) for k in parameter.path), value)
                HardwareProfile.model_validate(data)


@pytest.mark.slow
def test_profile_directory_from_the_environment(tmp_path, monkeypatch, cli) -> None:
    """`$SPEEDSIM_PROFILES` naming a directory without profiles: the message names the variable and the
    directory (it said "hw_profiles", and "known: " with nothing after it); set but empty: the shipped ones
    (it made the working directory the profile directory)."""
    import os

    import speedsim.hardware.files as files_module
    from speedsim.simulate.scenario import cached_profile

    cached_profile.cache_clear()  # an earlier test's h200, loaded before the variable was set

    missing = str(tmp_path / "no-such-dir")
    monkeypatch.setenv("SPEEDSIM_PROFILES", missing)
    monkeypatch.setattr(files_module, "PROFILE_DIR", tmp_path / "no-such-dir")  # as paths.py sets it from the variable
    for args in (("profiles",), ("simulate", "--profile", "h200", "--model", "t5base", "--sharing", "4x3",
                                 "--synthetic", "perfect")):
        res = cli(*args)
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
        assert "$SPEEDSIM_PROFILES" in res.stderr and missing in res.stderr
    (tmp_path / "notes.yaml").write_text("mine: 1\n")
    res = subprocess.run([sys.executable, "-m", "speedsim.cli", "profiles", "--json"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "SPEEDSIM_PROFILES": ""})
    assert res.returncode == 0, res.stderr
    assert "h200" in res.stdout and "notes" not in res.stdout


def test_profile_by_name_must_carry_that_name(tmp_path, monkeypatch, h200) -> None:
    """`--profile NAME` reads NAME.yaml of the profile directory; a file whose `name:` differs (a calibrated
    copy renamed by hand) is refused as `speedsim profiles` refuses it, not simulated under the other name."""
    import speedsim.hardware.files as files_module
    from speedsim.hardware import save_profile

    save_profile(h200, tmp_path / "mine.yaml")  # name: h200
    monkeypatch.setattr(files_module, "PROFILE_DIR", tmp_path)
    with pytest.raises(UserError, match="'h200' does not match the file name 'mine'"):
        load_profile("mine")
    save_profile(h200.model_copy(update={"name": "mine"}), tmp_path / "mine.yaml")
    assert load_profile("mine").name == "mine"


def test_the_cost_model_check_is_called_not_registered(tiny_profile_dict, tmp_path, monkeypatch):
    """The cost model's check of a loaded profile is an explicit call (`open_profile`, or a `check` passed
    to the loader), not a hook filled in at import: the schema loader alone takes a profile whose implied
    DRAM rate is infinite, and `open_profile` refuses it naming its file and the rate."""
    import math

    from speedsim.engine import check_profile, open_profile
    from speedsim.hardware.parts import MemoryLevel

    tiny_profile_file = str(tmp_path / "tiny.yaml")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**tiny_profile_dict, "name": "tiny"}))
    monkeypatch.setattr(MemoryLevel, "achievable_Bps", property(lambda self: math.inf))
    assert load_profile(tiny_profile_file).name == "tiny"
    for load in (lambda: open_profile(tiny_profile_file), lambda: load_profile(tiny_profile_file, check=check_profile)):
        with pytest.raises(UserError, match=r"tiny\.yaml.*dram_Bpus"):
            load()


def test_profiles_list_each_peak_for_the_profile_own_dtype():
    """`speedsim profiles` names each profile's default dtype beside its matrix peak in that dtype (gemmini's
    int8 peak was listed under a bf16 column)."""
    from speedsim.hardware.summary import profile_table

    rows = {r["name"]: r for r in profile_table()}
    assert rows["gemmini"]["dtype"] == "int8"
    for name, row in rows.items():
        profile = load_profile(name)
        assert row["matrix_TFLOPS"] == profile.matrix_peak(profile.default_dtype, achievable=False) / 1e12
