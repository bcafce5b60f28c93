"""Exit-trace I/O, synthetic traces, fitting and statistics (speedsim.trace)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from speedsim.errors import UserError
from speedsim.trace import (
    ExitTrace,
    SyntheticSpec,
    exit_agreement,
    fit,
    generate,
    length_stats,
    read_traces,
    settle_exit,
    trace_stats,
    write_traces,
)


def _trace(exits: list[list[int]], seq_id: str = "s") -> ExitTrace:
    return ExitTrace(seq_id=seq_id, src_len=5, repeats=len(exits[0]), exits=exits, eos_id=2)


@pytest.fixture
def traces() -> list[ExitTrace]:
    return [_trace([[7, 8, 8], [9, 9, 9], [3, 4, 5]], "a"), _trace([[1, 1, 1], [2, 2, 2]], "b")]


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_write_read_round_trip(tmp_path: Path, traces: list[ExitTrace], name: str) -> None:
    """Traces survive a write/read, plain or gzip (chosen by suffix)."""
    path = tmp_path / name
    assert write_traces(path, traces) == 2
    assert read_traces(path) == traces
    assert not [p for p in tmp_path.iterdir() if p.name != name]  # no temporary file left
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).count(b"\n") == 2


def test_gzip_output_is_byte_stable(tmp_path: Path, traces: list[ExitTrace]) -> None:
    """The same traces give the same .gz bytes (no timestamp), so shipped files diff cleanly."""
    write_traces(tmp_path / "a.jsonl.gz", traces)
    write_traces(tmp_path / "b.jsonl.gz", traces)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


@pytest.mark.parametrize(
    "bad, match",
    [
        ("{not json", "not valid JSON"),
        ('{"version": 1, "seq_id": "x", "src_len": 1, "repeats": 2, "exits": [[1]]}', "expected repeats=2"),
        ('{"version": 1, "seq_id": "x", "src_len": -1, "repeats": 1, "exits": []}', "src_len"),
        ('{"version": 1, "seq_id": "x", "src_len": 1, "repeats": 1, "exits": [], "extra": 1}', "extra"),
        ('{"seq_id": "x", "src_len": 1, "repeats": 1, "exits": []}', "version"),
        ('{"version": 1, "seq_id": "x", "src_len": 1, "repeats": 1, "exits": [[-3]]}', "exits"),
        ('{"version": 1, "seq_id": "x", "src_len": 1, "repeats": 1, "exits": [[1e30]]}', "exits"),
        ('{"version": 1, "seq_id": "x", "src_len": 1, "repeats": 1, "exits": [["7"]]}', "exits"),
        ('{"version": 1, "seq_id": "x", "src_len": NaN, "repeats": 1, "exits": []}', "NaN"),
        ('[1, 2]', "not an exit trace"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, traces: list[ExitTrace], bad: str, match: str) -> None:
    """A malformed record is a UserError naming the file and its line number."""
    path = tmp_path / "t.jsonl"
    path.write_text(traces[0].model_dump_json() + "\n" + bad + "\n")
    with pytest.raises(UserError, match=rf"t\.jsonl:2: .*{match}"):
        read_traces(path)


def test_repeated_sequence_id_is_an_error(tmp_path: Path, traces: list[ExitTrace]) -> None:
    """Two records with one seq_id are refused, naming the second line."""
    path = tmp_path / "t.jsonl"
    path.write_text(traces[0].model_dump_json() + "\n" + traces[0].model_dump_json() + "\n")
    with pytest.raises(UserError, match=r"t\.jsonl:2: seq_id .* appears twice"):
        read_traces(path)


def test_missing_and_non_gzip_files_are_user_errors(tmp_path: Path) -> None:
    """A missing file or a .gz that is not gzip is a UserError naming the file."""
    with pytest.raises(UserError, match="not found"):
        read_traces(tmp_path / "none.jsonl")
    (tmp_path / "x.jsonl.gz").write_text("plain")
    with pytest.raises(UserError, match=r"x\.jsonl\.gz"):
        read_traces(tmp_path / "x.jsonl.gz")


def test_exit_agreement_and_lengths(traces: list[ExitTrace]) -> None:
    """Agreement of each exit with the final one, pooled over positions."""
    assert exit_agreement(traces) == pytest.approx([3 / 5, 4 / 5, 1.0])
    assert length_stats(traces) == {"mean": 2.5, "median": 2.5, "min": 2, "max": 3}


def test_settle_exit() -> None:
    """The settling exit is the first from which every exit predicts the final token."""
    assert settle_exit([5, 5, 5]) == 0
    assert settle_exit([4, 5, 5]) == 1
    assert settle_exit([5, 4, 5]) == 2  # a flip back counts as settling late
    assert settle_exit([9]) == 0


def test_generate_is_seeded_and_shaped() -> None:
    """Same seed, same traces; shapes follow the spec; eos is never drawn."""
    spec = SyntheticSpec(repeats=3, agreement=[0.8, 0.9], lengths=[10, 20], vocab_size=5, eos_id=2)
    a, b = generate(spec, 20, seed=4), generate(spec, 20, seed=4)
    assert a == b and a != generate(spec, 20, seed=5)
    assert all(t.repeats == 3 and len(t.exits) in (10, 20) for t in a)
    assert all(row[-1] != 2 for t in a for row in t.exits)


@pytest.mark.parametrize("burst", [None, 0.6])
def test_fit_recovers_generating_parameters(burst: float | None) -> None:
    """fit() of a large synthetic sample returns its agreement and burstiness."""
    spec = SyntheticSpec(repeats=4, agreement=[0.8, 0.9, 0.97], burst=burst, lengths=[400])
    f = fit(generate(spec, 40, seed=0))
    assert f.agreement == pytest.approx(spec.agreement, abs=0.015)
    assert f.burst == pytest.approx(burst if burst is not None else 0.2, abs=0.04)
    # the fitted first-exit miss rate is the one the synthetic traces show
    assert 1 - exit_agreement(generate(f, 40, seed=1))[0] == pytest.approx(0.2, abs=0.015)


def test_bursty_misses_cluster() -> None:
    """With burst high, a first-exit miss is followed by another far more often."""
    spec = SyntheticSpec(repeats=2, agreement=[0.9], burst=0.7, lengths=[500])
    rows = [settle_exit(r) > 0 for t in generate(spec, 10, seed=2) for r in t.exits]
    after_miss = [b for a, b in zip(rows, rows[1:], strict=False) if a]
    assert sum(after_miss) / len(after_miss) > 0.5


@pytest.mark.parametrize(
    "kw",
    [
        {"repeats": 3, "agreement": [0.9, 0.8]},  # decreasing
        {"repeats": 3, "agreement": [0.9]},  # wrong length
        {"repeats": 2, "agreement": [1.2]},  # not a probability
        {"repeats": 2, "agreement": [0.5, 0.9]},  # final exit must agree with itself
        {"repeats": 2, "agreement": [0.4], "burst": 0.0},  # chain cannot keep the miss rate
    ],
)
def test_invalid_spec_rejected(kw: dict) -> None:
    """Impossible synthetic parameters are rejected at construction."""
    with pytest.raises(ValueError):
        SyntheticSpec(**kw)


def test_trace_stats_without_replay(traces: list[ExitTrace]) -> None:
    """trace_stats reports agreement, first-exit misses and lengths."""
    s = trace_stats(traces, replay_schedule=False)
    assert s["first_exit_miss"] == pytest.approx(0.4)
    assert s["tokens"] == 5 and s["sequences"] == 2


def test_trace_stats_replays_the_pipeline() -> None:
    """Replay through the pipeline controller: no flushes when every exit agrees, some otherwise."""
    agree = [_trace([[i, i, i] for i in range(10)])]
    s = trace_stats(agree)
    assert s["flushes"] == 0 and s["flushes_per_token"] == 0
    assert 1 < s["mean_in_flight"] <= 3
    # position 1's exit 1 disagrees with exit 0, from which position 2 was launched
    # (position 0 is the prefill's, outside the pipeline): one misprediction
    stats = trace_stats([_trace([[1, 1, 1], [4, 5, 5], [6, 6, 6], [7, 7, 7]])])
    assert stats["flushes"] == 1 and stats["flushes_per_token"] == pytest.approx(1 / 4)


@pytest.mark.slow
def test_fit_carries_flip_patterns_and_eos_stops() -> None:
    """Exits that change more than once before settling, and decodes that stopped on <eos>,
    are fitted and regenerated: patterns and the <eos> share come back from a large sample."""
    spec = SyntheticSpec(repeats=3, agreement=[0.7, 0.79], patterns={"10": 0.3, "11": 0.2, "01": 0.5},
                         lengths=[300], eos_id=2, eos_final=0.5, vocab_size=50)
    traces = generate(spec, 60, seed=3)
    rows = [r for t in traces for r in t.exits if settle_exit(r) > 0]
    assert any(r[0] != r[1] != r[2] for r in rows)  # two changes: a flush at each verifying exit
    f = fit(traces)
    assert f.patterns is not None and f.in_order
    assert {b: round(p, 1) for b, p in f.patterns.items()} == {"01": 0.5, "10": 0.3, "11": 0.2}
    assert f.eos_final == pytest.approx(0.5, abs=0.15)
    again = generate(f, 60, seed=4)
    assert [len(t.exits) for t in again] == [len(t.exits) for t in traces]


def test_patterns_must_agree_with_agreement() -> None:
    """A flip pattern whose last change is not where `agreement` settles is refused."""
    with pytest.raises(ValueError, match="patterns"):
        SyntheticSpec(repeats=3, agreement=[0.7, 1.0], patterns={"01": 1.0})  # settles at 2, agreement says 1
    with pytest.raises(ValueError, match="eos"):
        SyntheticSpec(repeats=2, agreement=[0.9], eos_final=0.5)
