"""Sweeps: spec expansion and checks, resumable results table, failures, Dask, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from speedsim.errors import UserError
from speedsim.sweep import ResultStore, load_spec, plan, read_results, run_sweep
from speedsim.sweep.spec import RunParams
from speedsim.sweep.store import JOURNAL

SMALL = {
    "name": "small",
    "fixed": {"model": "t5base", "out_len": 8, "src_len": 32},
    "axes": {"profile": ["h200", "l4"], "sharing": ["4x3", "2x6"], "mispredict": [0.0, 0.3]},
}


def write_spec(tmp_path, spec: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def numbers(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["run_key", "method"]).reset_index(drop=True)


def test_product_and_explicit_runs_expand(tmp_path):
    """Axes multiply, explicit runs add, `profile: all` is every shipped profile, depth/repeats give UxR."""
    spec = load_spec(write_spec(tmp_path, {
        "name": "x", "fixed": {"model": "t5base"},
        "blocks": [
            {"label": "a", "axes": {"profile": ["h200"], "depth": [6, 12], "repeats": [2, 3]}},
            {"label": "b", "axes": {"profile": ["all"], "sharing": ["4x3"]}},
            {"label": "c", "runs": [{"profile": "l4", "unique": 2, "repeats": 4}]},
        ]}))
    runs = plan(spec)
    a = [r for r in runs if r.label == "a"]
    assert sorted(r.sharing for r in a) == ["2x3", "3x2", "4x3", "6x2"]
    assert len([r for r in runs if r.label == "b"]) >= 8
    assert [r.sharing for r in runs if r.label == "c"] == ["2x4"]
    assert len({r.key for r in runs}) == len(runs)


@pytest.mark.parametrize("change, needle", [
    ({"axes": {**SMALL["axes"], "colour": ["blue"]}}, "colour"),
    ({"axes": {**SMALL["axes"], "profile": ["h900"]}}, "profile"),
    ({"axes": {**SMALL["axes"], "mispredict": []}}, "mispredict"),
    ({"axes": {**SMALL["axes"], "model": ["gpt9"]}}, "model"),
    ({"axes": {**SMALL["axes"], "sharing": ["4by3"]}}, "sharing"),
    ({"axes": {**SMALL["axes"], "trace": ["no-such-trace"]}}, "trace"),
    ({"axes": {}}, "empty"),
])
def test_bad_spec_fails_before_any_run(tmp_path, change, needle):
    path = write_spec(tmp_path, {**SMALL, **change})
    with pytest.raises(UserError, match=needle):
        run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_bad_spec_exit_2_names_key(cli, tmp_path):
    path = write_spec(tmp_path, {**SMALL, "axes": {**SMALL["axes"], "colour": ["blue"]}})
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    assert "colour" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_sweep_writes_table_and_resume_skips_finished(tmp_path):
    """A second invocation runs nothing and leaves the table unchanged; numbers are deterministic."""
    path = write_spec(tmp_path, SMALL)
    first = run_sweep(path, tmp_path / "a", workers=1, progress=False)
    assert (first.total, first.ran, first.failed) == (8, 8, 0)
    table = pd.read_parquet(tmp_path / "a" / "results.parquet")
    assert len(table) == 8 * 3 and set(table["method"]) == {"speed", "unshared", "sequential"}
    assert (tmp_path / "a" / "results.csv").exists()
    again = run_sweep(path, tmp_path / "a", workers=1, progress=False)
    assert (again.skipped, again.ran) == (8, 0)
    pd.testing.assert_frame_equal(table, pd.read_parquet(tmp_path / "a" / "results.parquet"))
    other = run_sweep(path, tmp_path / "b", workers=1, progress=False)
    assert other.ran == 8
    pd.testing.assert_frame_equal(numbers(table), numbers(read_results(tmp_path / "b")))


def test_interrupted_sweep_loses_and_duplicates_nothing(tmp_path):
    """Interrupt after 3 runs (and tear the journal's last line); resuming completes the table exactly once."""
    path = write_spec(tmp_path, SMALL)
    seen = []

    def stop_after_three(key, rows):
        seen.append(key)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, tmp_path / "out", workers=1, progress=False, on_run=stop_after_three)
    assert len(read_results(tmp_path / "out")["run_key"].unique()) == 3
    with open(tmp_path / "out" / JOURNAL, "a") as fh:
        fh.write('{"key": "torn", "rows": [{"run_')  # a write cut short by a kill
    resumed = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert (resumed.skipped, resumed.ran) == (3, 5)
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert table["run_key"].nunique() == 8 and len(table) == 24
    assert not table.duplicated(["run_key", "method"]).any()
    full = run_sweep(path, tmp_path / "full", workers=1, progress=False)
    assert full.ran == 8
    pd.testing.assert_frame_equal(numbers(table), numbers(pd.read_parquet(tmp_path / "full" / "results.parquet")))
    lines = (tmp_path / "out" / JOURNAL).read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["key"] for line in lines)


def test_a_bug_stops_the_sweep(tmp_path, monkeypatch):
    """A programming error in a run is not data: the sweep stops with the run's parameters."""
    from speedsim.sweep import execute

    def broken(*_args, **_kwargs):
        raise KeyError("per_token_us")

    monkeypatch.setattr(execute, "_simulate", broken)
    path = write_spec(tmp_path, {"name": "b", "runs": [{"profile": "h200", "sharing": "4x3"}]})
    with pytest.raises(execute.RunFailed, match=r"KeyError.*per_token_us") as err:
        run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert '"profile": "h200"' in str(err.value)


def test_failing_run_is_recorded_and_sweep_continues(tmp_path):
    """A model too large for the device (dec7b 32x4 unshared on an L4) fails; the other runs finish."""
    path = write_spec(tmp_path, {"name": "f", "fixed": {"out_len": 8, "src_len": 16},
                                 "runs": [{"profile": "l4", "model": "dec7b", "sharing": "32x4"},
                                          {"profile": "h200", "model": "t5base", "sharing": "4x3"}]})
    summary = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert (summary.ran, summary.failed) == (2, 1)
    table = read_results(tmp_path / "out")
    bad = table[table["status"] == "error"]
    assert len(bad) == 1 and "GiB" in bad["error"].iloc[0] and bad["profile"].iloc[0] == "l4"
    assert (table[table["status"] == "ok"]["per_token_us"] > 0).all()
    # failures are retried on resume (and fail again here), successes are skipped
    again = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert (again.skipped, again.ran, again.failed) == (1, 1, 1)
    assert ResultStore(tmp_path / "out").failed()


def test_dask_local_cluster_matches_local_run(tmp_path):
    import distributed
    path = write_spec(tmp_path, SMALL)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        summary = run_sweep(path, tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False)
    assert (summary.ran, summary.failed) == (8, 0)
    run_sweep(path, tmp_path / "local", workers=1, progress=False)
    pd.testing.assert_frame_equal(numbers(read_results(tmp_path / "dask")),
                                  numbers(read_results(tmp_path / "local")))


def test_cli_sweep_process_pool_json(cli, tmp_path):
    path = write_spec(tmp_path, SMALL)
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["runs"] == 8 and summary["ran"] == 8 and summary["failed"] == 0
    assert pd.read_csv(tmp_path / "out" / "results.csv")["run_key"].nunique() == 8


def test_cli_sweep_on_dask_scheduler(cli, tmp_path):
    """`--scheduler ADDRESS` sends the runs to an existing cluster (here a LocalCluster in this process)."""
    import distributed
    path = write_spec(tmp_path, {**SMALL, "axes": {**SMALL["axes"], "profile": ["h200"]}})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address,
                  "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ran"] == 4
    assert read_results(tmp_path / "out")["status"].eq("ok").all()


@pytest.mark.parametrize("name, at_least", [("latency_vs_depth", 150), ("acceptance", 100), ("default", 100)])
def test_shipped_specs_plan(name, at_least):
    """The shipped sweep specs expand and pass every check (profiles, models, sharing, synthetic traces)."""
    from speedsim.paths import ROOT

    runs = plan(load_spec(ROOT / "experiments" / f"{name}.yaml"))
    assert len(runs) >= at_least


def test_speed_paper_spec_needs_the_shipped_traces():
    """speed_paper.yaml plans when the real traces are shipped, and otherwise names the missing trace."""
    from speedsim.paths import ROOT, TRACE_DIR

    spec = load_spec(ROOT / "experiments" / "speed_paper.yaml")
    names = {"12x1", "4x1", "4x3", "2x6"}
    if all((TRACE_DIR / f"{n}.jsonl.gz").exists() for n in names):
        runs = plan(spec)
        assert {r.trace for r in runs if r.label == "paper"} == names and {r.profile for r in runs} == {"rtx-a5000", "h200"}
        assert {r.fit for r in runs if r.label == "equal-length"} == names  # the same configs at one output length
    else:
        with pytest.raises(UserError, match="trace"):
            plan(spec)


def test_second_sweep_into_one_directory_is_refused(tmp_path):
    """The output directory is locked: a second writer gets a UserError naming the holder's pid."""
    first = ResultStore(tmp_path / "out")
    try:
        with pytest.raises(UserError, match=rf"pid {os.getpid()}"):
            ResultStore(tmp_path / "out")
    finally:
        first.close()
    ResultStore(tmp_path / "out").close()  # released with the first store


def test_corrupt_journal_line_keeps_the_valid_records(tmp_path):
    """A bad line in the middle of runs.jsonl is dropped and reported; the records after it stay."""
    path = write_spec(tmp_path, {**SMALL, "axes": {**SMALL["axes"], "profile": ["h200"], "mispredict": [0.0]}})
    run_sweep(path, tmp_path / "out", workers=1, progress=False)
    journal = tmp_path / "out" / JOURNAL
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(lines[0] + "{garbage\n" + "".join(lines[1:]))
    again = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert again.bad_journal_lines == (2,) and again.ran == 0 and again.skipped == len(lines)
    assert "{garbage" not in journal.read_text()


def test_edited_spec_into_an_old_directory_is_refused(tmp_path):
    """Runs of two different specs are never mixed in one results table."""
    path = write_spec(tmp_path, {**SMALL, "axes": {**SMALL["axes"], "profile": ["h200"], "mispredict": [0.0]}})
    run_sweep(path, tmp_path / "out", workers=1, progress=False)
    edited = write_spec(tmp_path, {**SMALL, "fixed": {**SMALL["fixed"], "out_len": 9},
                                   "axes": {**SMALL["axes"], "profile": ["h200"], "mispredict": [0.0]}}, "b.yaml")
    with pytest.raises(UserError, match="different spec"):
        run_sweep(edited, tmp_path / "out", workers=1, progress=False)


@pytest.mark.parametrize("address", ["notanaddress", "tcp://", "http://host:8786", "host:port"])
def test_malformed_scheduler_address_is_refused_before_work(tmp_path, address):
    path = write_spec(tmp_path, SMALL)
    with pytest.raises(UserError, match="--scheduler"):
        run_sweep(path, tmp_path / "out", scheduler=address, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_sweep_with_failed_runs_exits_1(cli, tmp_path):
    """A sweep whose runs failed says so and exits 1 (0 with --allow-failures)."""
    path = write_spec(tmp_path, {"name": "f", "fixed": {"out_len": 8, "src_len": 16},
                                 "runs": [{"profile": "l4", "model": "dec7b", "sharing": "32x4"}]})
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--json")
    assert out.returncode == 1 and "1 run(s) failed" in out.stderr
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--allow-failures", "--json")
    assert out.returncode == 0


def test_cli_sweep_out_that_is_a_file(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    out = cli("sweep", str(write_spec(tmp_path, SMALL)), "--out", str(tmp_path / "file"))
    assert out.returncode == 2 and "--out" in out.stderr and len(out.stderr.splitlines()) == 1


def test_workers_die_with_a_killed_sweep(tmp_path):
    """SIGKILL of the sweep leaves no worker process behind (they would live on under PID 1)."""
    spec = {"name": "slow", "fixed": {"model": "t5base", "out_len": 400, "src_len": 64},
            "axes": {"profile": ["h200"], "sharing": ["4x3", "2x6", "3x4", "6x2"], "mispredict": [0.1, 0.2, 0.3]}}
    path = write_spec(tmp_path, spec)
    proc = subprocess.Popen([sys.executable, "-m", "speedsim.cli", "sweep", str(path), "--out", str(tmp_path / "o"),
                             "--workers", "2", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    deadline = time.monotonic() + 20
    while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
        children = {int(p) for p in _children(proc.pid)}
        time.sleep(0.05)
    assert len(children) >= 2, "the pool never started"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[str]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as fh:
            return fh.read().split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_fit_runs_are_synthetic_runs_fitted_to_a_trace():
    """`fit: NAME` is a synthetic workload fitted to that trace; it excludes the other accuracies and a
    trace, and runs without it keep the keys they had before the field existed."""
    run = RunParams(profile="h200", sharing="4x3", fit="4x3", out_len=32, seqs=3)
    assert run.synthetic(3) == "fit=4x3,len=32,seqs=3,seed=0"
    for bad in ({"mispredict": 0.1}, {"agree": "0.8/0.9"}, {"trace": "4x3"}):
        with pytest.raises(ValueError):
            RunParams(profile="h200", sharing="4x3", fit="4x3", **bad)
    # the key this run had before `fit` existed (computed at commit 3d193d8): old results directories resume
    assert RunParams(profile="h200", sharing="4x3", mispredict=0.1).key == "11df9f3aa4fb2ada"
    assert run.key != RunParams(profile="h200", sharing="4x3", fit="2x6", out_len=32, seqs=3).key


def test_relative_fit_path_is_resolved_against_the_spec(tmp_path, monkeypatch):
    """`fit: t.jsonl` beside the spec is found from any working directory, as `trace:` paths are; the
    results' workload column names fit as the spec gives it."""
    rec = {"version": 1, "seq_id": "a", "src_len": 4, "repeats": 3, "exits": [[1, 2, 3], [4, 4, 4], [5, 6, 6]]}
    (tmp_path / "t.jsonl").write_text(json.dumps(rec) + "\n")
    spec = {"name": "fit", "fixed": {"model": "t5base", "profile": "h200", "out_len": 4, "baselines": []},
            "axes": {"sharing": ["4x3"], "fit": ["t.jsonl"]}}
    path = write_spec(tmp_path, spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert (summary.ran, summary.failed) == (1, 0)
    assert read_results(tmp_path / "out")["workload"].tolist() == ["synthetic:fit=t.jsonl,len=4,seqs=1,seed=0"]


def test_resuming_after_a_profile_changed_is_refused(tmp_path):
    """A run's key hashes its parameters, not the profile's numbers: resuming into results simulated
    with a profile that has been recalibrated since is refused, naming it; unchanged inputs resume."""
    from speedsim.hardware import load_profile

    profile = tmp_path / "chip.yaml"
    profile.write_text(yaml.safe_dump(load_profile("h200").model_dump(mode="json", exclude_none=True)))
    spec = {**SMALL, "axes": {**SMALL["axes"], "profile": [str(profile)], "mispredict": [0.0]}}
    path = write_spec(tmp_path, spec)
    first = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert first.ran == 2 and (tmp_path / "out" / "inputs.json").exists()
    assert run_sweep(path, tmp_path / "out", workers=1, progress=False).skipped == 2  # same inputs: resumes
    data = yaml.safe_load(profile.read_text())
    data["kernel"]["latency_us"] *= 2
    profile.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=rf"other inputs: profile:{re.escape(str(profile))} changed since"):
        run_sweep(path, tmp_path / "out", workers=1, progress=False)
