"""Sweeps: spec expansion and checks, resumable results table, failures, Dask, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
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


@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_interrupted_sweep_loses_and_duplicates_nothing(tmp_path, workers):
    """Interrupt after 3 runs (and tear the journal's last line); resuming completes the table exactly once.
    With workers, the runs that finished while the interrupt was handled are recorded too, once each."""
    # 12 runs of 32 tokens: with workers, the 9 after the interrupt cannot all finish while it is handled (with
    # 8 runs, the 5 left sometimes did on a loaded machine; with 12 runs of 8 tokens, ~36 ms each, the 9 left
    # once did in CI: ~110 ms each leaves them ~0.5 s, several times the handling)
    spec = {**SMALL, "fixed": {**SMALL["fixed"], "out_len": 32},
            "axes": {**SMALL["axes"], "mispredict": [0.0, 0.15, 0.3]}}
    n = 12
    path = write_spec(tmp_path, spec)
    seen = []

    def stop_after_three(key, rows):
        seen.append(key)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, tmp_path / "out", workers=workers, progress=False, on_run=stop_after_three)
    recorded = len(seen)
    assert recorded == 3 if workers == 1 else 3 <= recorded < n
    assert len(read_results(tmp_path / "out")["run_key"].unique()) == recorded == len(set(seen))
    with open(tmp_path / "out" / JOURNAL, "a") as fh:
        fh.write('{"key": "torn", "rows": [{"run_')  # a write cut short by a kill
    resumed = run_sweep(path, tmp_path / "out", workers=1, progress=False)
    assert (resumed.skipped, resumed.ran) == (recorded, n - recorded)
    table = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert table["run_key"].nunique() == n and len(table) == 3 * n
    assert not table.duplicated(["run_key", "method"]).any()
    full = run_sweep(path, tmp_path / "full", workers=1, progress=False)
    assert full.ran == n
    pd.testing.assert_frame_equal(numbers(table), numbers(pd.read_parquet(tmp_path / "full" / "results.parquet")))
    lines = (tmp_path / "out" / JOURNAL).read_text().splitlines()
    assert len(lines) == n and all(json.loads(line)["key"] for line in lines)


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_sweep_process_pool_json(cli, tmp_path):
    path = write_spec(tmp_path, SMALL)
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["runs"] == 8 and summary["ran"] == 8 and summary["failed"] == 0
    assert pd.read_csv(tmp_path / "out" / "results.csv")["run_key"].nunique() == 8


@pytest.mark.slow  # (a Dask cluster or a subprocess: CI's slow run)
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


def test_fit_runs_are_synthetic_runs_fitted_to_a_trace():
    """`fit: NAME` is a synthetic workload fitted to that trace; it excludes the other accuracies and a
    trace, and runs without it keep the keys they had before the field existed."""
    run = RunParams(profile="h200", sharing="4x3", fit="4x3", out_len=32, seqs=3)
    assert run.workload_label(3) == "synthetic:fit=4x3,len=32,seqs=3,seed=0"
    for bad in ({"mispredict": 0.1}, {"agree": "0.8/0.9"}, {"trace": "4x3"}):
        with pytest.raises(ValueError):
            RunParams(profile="h200", sharing="4x3", fit="4x3", **bad)
    # the key this run had before `fit` existed (computed at commit 3d193d8): old results directories resume
    assert RunParams(profile="h200", sharing="4x3", mispredict=0.1).key == "11df9f3aa4fb2ada"
    assert run.key != RunParams(profile="h200", sharing="4x3", fit="2x6", out_len=32, seqs=3).key


@pytest.mark.parametrize(("params", "key", "label"), [
    ({"profile": "h200", "sharing": "4x3", "fit": "4x3", "out_len": 32, "seqs": 3}, "2a301ec9315a9d3b",
     "synthetic:fit=4x3,len=32,seqs=3,seed=0"),
    ({"label": "paper", "profile": "rtx-a5000", "sharing": "2x6", "trace": "2x6", "limit": 20, "src_len": 64},
     "85519cee4a21edb0", "trace:2x6"),
    ({"label": "weight_budget", "profile": "l4", "sharing": "3x4", "mispredict": 0.1, "out_len": 32, "seqs": 1,
      "bounds": True, "src_len": 128}, "16f00ee643b7ecfa", "synthetic:mispredict=0.1,len=32,seqs=1,src=128,seed=0"),
    ({"profile": "h200", "sharing": "4x3", "agree": "0.8/0.9", "burst": 0.5, "launch_exit": 1, "max_in_flight": 2,
      "baselines": ("sequential",), "mode": "eager"}, "a3c83b0a81c2782e",
     "synthetic:agree=0.8/0.9,len=64,seqs=1,src=128,seed=0,burst=0.5"),
])
def test_runs_keep_the_keys_and_workloads_they_had_before_the_run_model(params, key, label):
    """Keys and workload columns computed with the sweep's own RunParams at commit 87baa91, before the
    typed run model (its serving and device-control fields, at their defaults, stay out of the key)."""
    run = RunParams(**params)
    assert run.key == key
    assert run.workload_label(3) == label


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


TINY_TRACE = {"version": 1, "seq_id": "a", "src_len": 4, "repeats": 3, "exits": [[1, 2, 3], [4, 4, 4], [5, 6, 6]]}


@pytest.mark.slow
def test_ctrl_c_ends_a_pool_sweep_at_once_and_keeps_what_finished(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a sweep with workers:
    exit 130 within seconds, not after the runs in flight; the run that had finished is journaled (a resume
    skips it); no worker lives on."""
    (tmp_path / "t.jsonl").write_text(json.dumps(TINY_TRACE) + "\n")
    # the tiny trace run is estimated the costliest (36 layers x 200 x 40 tokens x 3 methods against 12 x 65,536
    # x 1), so it starts first and finishes in milliseconds; each long run takes many seconds (7-25 s), which
    # the interrupt must not wait for
    long = {"profile": "h200", "sharing": "4x3", "out_len": 512, "seqs": 128, "baselines": []}
    spec = {"name": "stop", "runs": [{"profile": "h200", "sharing": "12x3", "trace": "t.jsonl"}]
            + [{**long, "mispredict": m} for m in (0.1, 0.2, 0.3)]}
    path = write_spec(tmp_path, spec)
    out = tmp_path / "out"
    # SIGINT's default action, as in a terminal: a suite started in the background by a non-interactive shell
    # (`nohup pytest &`) ignores SIGINT, the sweep would inherit that, and the interrupt would do nothing
    proc = subprocess.Popen([sys.executable, "-m", "speedsim.cli", "sweep", str(path), "--out", str(out),
                             "--workers", "2", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not (
                (out / JOURNAL).exists() and (out / JOURNAL).read_text().endswith("\n")):
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate(timeout=60)[1]
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130 and err.strip().splitlines() == ["speedsim: interrupted"]
    assert seconds < 5, f"took {seconds:.1f} s to stop"
    runs = {r.key: r for r in plan(load_spec(path))}
    lines = (out / JOURNAL).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [r.key for r in runs.values() if r.trace]
    assert set(runs) - ResultStore(out).finished() == {k for k, r in runs.items() if not r.trace}  # resume runs these
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "a worker outlived the interrupted sweep"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_trace_with_another_r_in_a_later_sequence_fails_the_plan(cli, tmp_path):
    """Every sequence a run simulates is checked against its sharing, not only the first: exit 2 before any
    run, one line naming the file and line; a run limited to the sequences before it plans."""
    other = {**TINY_TRACE, "seq_id": "b", "repeats": 2, "exits": [[1, 1], [2, 2]]}
    (tmp_path / "mixed.jsonl").write_text(json.dumps(TINY_TRACE) + "\n\n" + json.dumps(other) + "\n")
    path = write_spec(tmp_path, {"name": "m", "fixed": {"trace": "mixed.jsonl"},
                                 "axes": {"profile": ["h200"], "sharing": ["4x3"]}})
    out = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "mixed.jsonl:3" in out.stderr and "R=2" in out.stderr and "4x3" in out.stderr
    assert not (tmp_path / "out").exists()
    limited = load_spec(write_spec(tmp_path, {"name": "m", "fixed": {"trace": "mixed.jsonl", "limit": 1},
                                              "axes": {"profile": ["h200"], "sharing": ["4x3"]}}, "l.yaml"))
    assert len(plan(limited)) == 1


def test_bad_line_of_a_trace_is_named_by_the_plan(tmp_path):
    """A trace line that is not a record: the plan's error names the file and line, not only the key."""
    (tmp_path / "bad.jsonl").write_text(json.dumps(TINY_TRACE) + "\n{oops\n")
    spec = load_spec(write_spec(tmp_path, {"name": "b", "fixed": {"trace": "bad.jsonl"},
                                           "axes": {"profile": ["h200"], "sharing": ["4x3"]}}))
    with pytest.raises(UserError, match=r"field 'trace': .*bad\.jsonl:2: not valid JSON"):
        plan(spec)


OK_SPEC = {"name": "ok", "fixed": {"model": "t5base", "out_len": 4, "seqs": 1},
           "axes": {"profile": ["h200"], "sharing": ["4x3"], "mispredict": [0.0]}}


@pytest.mark.parametrize("planted", [{".lock": ""}, {"runs.jsonl": ""}, {"runs.jsonl": '{"id": 1}\n'},
                                     {".lock": "123\n", "runs.jsonl": "", "spec.yaml": "mine\n"}])
def test_a_sweeps_file_name_does_not_make_a_directory_a_sweeps(tmp_path, planted):
    """--out holding someone's results.csv beside a file named as a sweep's (an empty .lock or runs.jsonl, a
    runs.jsonl of another tool): refused, and every file is left as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    files = {"results.csv": "keep\n", **planted}
    if "spec.yaml" in planted:  # here the table is a sweep's: the spec copy is what is not
        files["results.csv"] = "run_key,method,status\n"
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(UserError, match="--out.*not a sweep's output"):
        run_sweep(write_spec(tmp_path, OK_SPEC), out, workers=1, progress=False)
    assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_sweep_stopped_before_its_first_record_resumes(tmp_path):
    """A sweep's directory whose journal holds no record yet (stopped before its first run finished, or
    during that write) is still the sweep's: re-running it runs everything."""
    path = write_spec(tmp_path, OK_SPEC)
    run_sweep(path, tmp_path / "out", workers=1, progress=False)
    (tmp_path / "out" / JOURNAL).write_text('{"key": "torn", "ro')
    assert run_sweep(path, tmp_path / "out", workers=1, progress=False).ran == 1
    assert len((tmp_path / "out" / JOURNAL).read_text().splitlines()) == 1


@pytest.mark.slow  # (a Dask cluster or a subprocess: CI's slow run)
def test_unreachable_scheduler_writes_nothing(tmp_path, monkeypatch):
    """A scheduler that cannot be reached: a UserError naming --scheduler, and no output directory is
    created (an existing empty one stays empty)."""
    from speedsim.sweep import runner

    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT_S", 0.2)
    path = write_spec(tmp_path, OK_SPEC)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(UserError, match="--scheduler: cannot reach"):
            run_sweep(path, out, scheduler="tcp://127.0.0.1:1", progress=False)
    assert not (tmp_path / "new").exists() and not any((tmp_path / "empty").iterdir())


@pytest.mark.slow
def test_inputs_record_that_is_a_fifo_is_refused_not_read(cli_subprocess, tmp_path):
    """Resuming into a directory whose inputs.json is a FIFO: exit 2 naming it, not a read that blocks
    (in a subprocess, so a regression fails on its timeout instead of hanging the suite)."""
    path = write_spec(tmp_path, OK_SPEC)
    run_sweep(path, tmp_path / "out", workers=1, progress=False)
    (tmp_path / "out" / "inputs.json").unlink()
    os.mkfifo(tmp_path / "out" / "inputs.json")
    res = cli_subprocess("sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1", timeout=30)
    assert res.returncode == 2 and "inputs.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1
