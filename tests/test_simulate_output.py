"""What `simulate` reports beside latency: each method's memory footprint, and the mode it really ran in."""

from __future__ import annotations

import json

import pytest

from speedsim.hardware import BYTES_PER_ELEMENT, load_profile
from speedsim.sharing import Sharing
from speedsim.simulate import simulate, synthetic_traces
from speedsim.workload import BUILTIN_MODELS


def test_each_method_reports_its_own_memory_footprint(h200):
    """SPEED and the shared sequential baseline hold U layers, the unshared baseline all U*R: each method's
    `memory_bytes` is its own (the sum of its parts), in the JSON (SPEED's at the top, as every SPEED figure)
    and in its sweep row."""
    r = simulate(h200, BUILTIN_MODELS["t5base"], Sharing(4, 3), synthetic_traces("mispredict=0.1,len=16", 3))
    speed, unshared, sequential = r.speed, r.baselines["unshared"], r.baselines["sequential"]
    assert unshared.memory_bytes > speed.memory_bytes == sequential.memory_bytes > 0
    extra_layers = (12 - 4) * BUILTIN_MODELS["t5base"].layer_weight_elements() * BYTES_PER_ELEMENT[h200.default_dtype]
    assert unshared.memory_bytes_by_part["weights"] - speed.memory_bytes_by_part["weights"] == extra_layers
    for m in r.methods():
        assert sum(m.memory_bytes_by_part.values()) == m.memory_bytes
    out = r.to_dict()
    assert out["memory_bytes"] == speed.memory_bytes and out["memory_bytes_by_part"]["kv"] > 0
    assert out["baselines"]["unshared"]["memory_bytes"] == unshared.memory_bytes
    assert {row["method"]: row["memory_bytes"] for row in r.to_rows()} == {
        "speed": speed.memory_bytes, "unshared": unshared.memory_bytes, "sequential": sequential.memory_bytes}
    assert all("memory_bytes_by_part" not in row for row in r.to_rows())  # rows stay flat


def test_graph_mode_on_a_host_without_one_is_reported_as_eager():
    """cpu-host's host runs each op itself: `--mode graph` gives eager's numbers, labelled eager, with a note."""
    cpu = load_profile("cpu-host")
    traces = synthetic_traces("mispredict=0.1,len=8", 3)
    graph = simulate(cpu, BUILTIN_MODELS["t5base"], Sharing(4, 3), traces, "graph", ("sequential",))
    eager = simulate(cpu, BUILTIN_MODELS["t5base"], Sharing(4, 3), traces, "eager", ("sequential",))
    assert graph.mode == eager.mode == "eager"
    assert graph.speed == eager.speed and graph.baselines == eager.baselines
    assert any("no graph mode" in n for n in graph.notes) and not any("graph" in n for n in eager.notes)
    assert {row["mode"] for row in graph.to_rows()} == {"eager"}  # sweep rows (and the report's titles) too


def test_a_device_with_a_graph_mode_keeps_it(h200):
    """On a GPU, graph mode is simulated and labelled as such, without a note."""
    r = simulate(h200, BUILTIN_MODELS["t5base"], Sharing(4, 3), synthetic_traces("perfect,len=8", 3), "graph", ())
    assert r.mode == "graph" and not r.notes


def test_an_accelerator_without_graph_capture_is_not_labelled_graph_mode(cli):
    """gemmini has no graph capture (host.graph_capture false): its graph mode is a compiled program, and the
    table, the JSON, the serving summary and `speedsim profiles` say so; its numbers are graph mode's."""
    args = ("--profile", "gemmini", "--model", "t5base", "--sharing", "4x3", "--synthetic", "perfect,len=4,seqs=1")
    table = cli("simulate", *args, "--baseline", "none")
    assert table.returncode == 0, table.stderr
    assert "on gemmini (compiled-program mode)" in table.stdout.splitlines()[0]
    assert "note: gemmini has no graph capture" in table.stdout
    out = json.loads(cli("simulate", *args, "--baseline", "none", "--json").stdout)
    assert out["mode"] == "graph" and out["mode_label"] == "compiled-program"
    eager = json.loads(cli("simulate", *args, "--baseline", "none", "--json", "--mode", "eager").stdout)
    assert eager["mode_label"] == "eager" and eager["per_token_us"] > out["per_token_us"]
    served = cli("serve", *args, "--method", "speed", "--arrivals", "poisson:5", "--requests", "2")
    assert "speed on gemmini (compiled-program mode)" in served.stdout.splitlines()[0], served.stderr
    rows = {line.split()[0]: line for line in cli("profiles").stdout.splitlines()[2:]}
    assert "compiled-program, eager" in rows["gemmini"] and "graph, eager" in rows["h200"]
    assert " eager " in rows["cpu-host"] and "graph" not in rows["cpu-host"]


def test_a_compiled_program_has_no_graph_launch(h200):
    """A host without graph capture cannot be given a graph launch or start time (it has no graph)."""
    host = h200.host.model_dump()
    with pytest.raises(ValueError, match="graph_capture is false"):
        type(h200.host).model_validate({**host, "graph_capture": False})
    assert type(h200.host).model_validate({**host, "graph_capture": False, "graph_launch_us": 0,
                                           "graph_start_us": 0}).mode_label("graph") == "compiled-program"


def test_cli_says_the_mode_it_ran(cli):
    """The table's header and the JSON's `mode` agree, and the note is printed with both."""
    args = ("simulate", "--profile", "cpu-host", "--model", "t5base", "--sharing", "4x3", "--synthetic",
            "perfect,len=6", "--baseline", "none", "--mode", "graph")
    table = cli(*args)
    assert table.returncode == 0, table.stderr
    assert "on cpu-host (eager mode)" in table.stdout.splitlines()[0]
    assert "note: cpu-host has no graph mode" in table.stdout
    out = json.loads(cli(*args, "--json").stdout)
    assert out["mode"] == "eager" and any("no graph mode" in n for n in out["notes"])
