"""Hostile input to the training, data, trace and measure commands (issue 22).

Three classes, each closed at the function that first receives the value:

- paths: every path these commands take (`train --config/--out`, `trace --checkpoint/--out`,
  `measure --out/--checkpoint/--config`, `data build --source/--export`, a config's `data.cache_dir`
  and `data.sources`, `$SPEEDSIM_CACHE`, `$SPEEDSIM_CORPUS`) goes through `speedsim.userpath`: a path the
  operating system refuses (a component over 255 bytes, a NUL byte, an empty path, unencodable text,
  a link loop) is one line naming the flag, the field or the variable. Inside a source directory a
  dangling `.py` link is not a source file (skipped); a looping one is an error naming the link.
- repeated values in list options: `measure --parts/--sharings/--lm-head/--batch-sizes/--batch-ctx`
  and `data build --source` (or a config's `data.sources`) refuse a value given twice, naming the flag
  and the value, instead of writing duplicate rows over their own trace.
- checkpoints whose weights are not finite: refused when read (every command that loads one), naming
  the checkpoint and the first bad tensor; training refuses to save (or evaluate) such weights.

Nothing here trains a model: checkpoints are written from a freshly built tiny model, and the training
loop runs with a stub step.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CliResult, run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from speedsim.errors import UserError

PREFIX = "speedsim: error: "
FAST = settings(max_examples=12, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "unique_layers": 2, "repeats": 2, "encoder_layers": 1,
         "max_len": 64}


def assert_refused(res: CliResult, where: str, *names: str) -> str:
    """Exit 2, exactly one stderr line, no traceback, no nan/inf/null, the line's WHERE is `where` and it
    names each of `names`."""
    text = res.stderr + res.stdout
    assert "Traceback" not in text, res.stderr[-2000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{PREFIX}{where}: "), (where, lines[0])
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a one-module source package, a valid config using it, and a cache directory."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "pkg").mkdir()
    (root / "pkg" / "m.py").write_text('def f(a):\n    """Return a, unchanged: the identity."""\n    return a\n')
    write_config(root / "ok.yaml", sources=[str(root / "pkg")], cache_dir=str(root / "cache"))
    return root


def write_config(path: Path, **data: object) -> Path:
    raw = {"name": "tiny", "data": {"task": "summarize", "vocab_size": 320, "max_src_tokens": 48,
                                    "max_tgt_tokens": 40, **data},
           "model": MODEL, "finetune": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "from_scratch": True,
                                        "checkpoint_every": 2}}
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, value)
        yield


# ------------------------------------------------------------------------------------------- paths
_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="/\x00", categories=("L", "M", "N", "P", "S", "Zs"))


ALL_KINDS = ("long-component", "long-path", "nul", "empty", "surrogate")
ENV_KINDS = ("long-component", "long-path")  # an environment variable holds no NUL or lone surrogate; '' is unset
YAML_KINDS = ("long-component", "long-path", "nul", "empty")  # YAML text holds no lone surrogate


@st.composite
def bad_paths(draw: st.DrawFn, kinds: tuple[str, ...] = ALL_KINDS) -> str:
    """A path the file system refuses: a component over 255 bytes (ASCII or not, alone, under a directory
    or above a file), a path over 4096 bytes, a NUL byte, an empty path or a lone surrogate (unencodable)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "long-component":
        unit = draw(st.text(_NAME_CHARS, min_size=1, max_size=6))
        name = unit * (256 // len(unit.encode()) + 1)
        return draw(st.sampled_from(["{}", "sub/{}", "{}/x.yaml", "/tmp/{}"])).format(name)
    if kind == "long-path":
        return "d/" * draw(st.integers(2049, 2400)) + "x"
    if kind == "nul":
        text = draw(st.text(_NAME_CHARS, max_size=10))
        cut = draw(st.integers(0, len(text)))
        return text[:cut] + "\x00" + text[cut:]
    if kind == "surrogate":
        return "bad\ud800name"
    return ""


def _path_cases(area: Path, bad: str) -> dict[str, tuple[str, tuple[str, ...], dict[str, str | None]]]:
    """case -> (the WHERE a refusal must name, the command line, the environment) for `bad` in each
    entry point of this area."""
    ok = str(area / "ok.yaml")
    out = str(area / "never")
    return {
        "train --config": ("--config", ("train", "--config", bad, "--out", out), {}),
        "train --out": ("--out", ("train", "--config", ok, "--out", bad), {}),
        "trace --checkpoint": ("--checkpoint", ("trace", "--checkpoint", bad, "--out", f"{out}.jsonl"), {}),
        "trace --out": ("--out", ("trace", "--checkpoint", str(area), "--out", bad), {}),
        "measure --out": ("--out", ("measure", "--device", "cpu", "--quick", "--out", bad), {}),
        "measure --checkpoint": ("--checkpoint", ("measure", "--device", "cpu", "--quick", "--out",
                                                  f"{out}.csv", "--checkpoint", bad), {}),
        "measure --config": ("--config", ("measure", "--device", "cpu", "--quick", "--out", f"{out}.csv",
                                          "--config", bad), {}),
        "data build --source": ("--source", ("data", "build", "--source", bad), {}),
        "data build --export": ("--export", ("data", "build", "--source", str(area / "pkg"), "--export", bad),
                                {}),
    }


@FAST
@given(bad=bad_paths(), case=st.sampled_from(sorted(_path_cases(Path("."), "x"))))
def test_a_bad_path_names_its_flag(area: Path, bad: str, case: str) -> None:
    """Every path flag of train / trace / measure / data build: a path the OS refuses is one line at the flag."""
    where, args, environ = _path_cases(area, bad)[case]
    with env(SPEEDSIM_CACHE=str(area / "cache"), SPEEDSIM_CORPUS=None, **environ):
        assert_refused(run_cli(*args), where)
    assert not (area / "never").exists() and not (area / "never.csv").exists()


@FAST
@given(bad=bad_paths(YAML_KINDS), field=st.sampled_from(["data.cache_dir", "data.sources"]),
       command=st.sampled_from(["train", "measure"]))
def test_a_bad_path_in_a_config_names_its_field(area: Path, bad: str, field: str, command: str) -> None:
    """`data.cache_dir` / `data.sources` of a training config (train and measure --config read it): one line
    at `config.yaml: field '...'`."""
    with tempfile.TemporaryDirectory(dir=area) as tmp:
        values: dict[str, object] = {"sources": [str(area / "pkg")], "cache_dir": str(area / "cache")}
        values[field.split(".")[1]] = [bad] if field == "data.sources" else bad
        cfg = write_config(Path(tmp) / "cfg.yaml", **values)
        args = (("train", "--config", str(cfg), "--out", f"{tmp}/run") if command == "train" else
                ("measure", "--device", "cpu", "--quick", "--out", f"{tmp}/m.csv", "--config", str(cfg)))
        where = f"{cfg}: field '{field}" + (".0'" if field == "data.sources" else "'")
        assert_refused(run_cli(*args), where)
        assert not (Path(tmp) / "run").exists()


@FAST
@given(bad=bad_paths(ENV_KINDS), variable=st.sampled_from(["SPEEDSIM_CACHE", "SPEEDSIM_CORPUS"]),
       command=st.sampled_from(["train", "data build", "data build --source"]))
def test_a_bad_path_in_a_variable_names_it(area: Path, bad: str, variable: str, command: str) -> None:
    """`$SPEEDSIM_CACHE` (train's default cache, data build's) and `$SPEEDSIM_CORPUS` (the pinned corpus of
    `data build` without --source): one line naming the variable."""
    assume(not (variable == "SPEEDSIM_CORPUS" and command != "data build"))  # only read without sources
    with tempfile.TemporaryDirectory(dir=area) as tmp:
        cfg = write_config(Path(tmp) / "cfg.yaml", sources=[str(area / "pkg")])  # no cache_dir: the variable's
        args = {"train": ("train", "--config", str(cfg), "--out", f"{tmp}/run"),
                "data build": ("data", "build"),
                "data build --source": ("data", "build", "--source", str(area / "pkg"))}[command]
        with env(**{"SPEEDSIM_CACHE": str(area / "cache"), "SPEEDSIM_CORPUS": None, variable: bad}):
            assert_refused(run_cli(*args), f"${variable}")
        assert not (Path(tmp) / "run").exists()


def test_a_valid_path_to_nothing_says_so(area: Path) -> None:
    """The same entry points with a well-formed path to nothing: one line, at the flag, naming the path."""
    gone = str(area / "gone")
    with env(SPEEDSIM_CACHE=str(area / "cache")):
        assert_refused(run_cli("train", "--config", gone, "--out", str(area / "never")), "--config", "gone")
        assert_refused(run_cli("trace", "--checkpoint", gone, "--out", f"{gone}.jsonl"), "--checkpoint", "gone")
        assert_refused(run_cli("measure", "--device", "cpu", "--quick", "--out", f"{gone}.csv", "--config", gone),
                       "--config", "gone")
        assert_refused(run_cli("data", "build", "--source", gone), "--source", "gone")
        assert_refused(run_cli("trace", "--checkpoint", str(area), "--out", f"{gone}.jsonl"), "--checkpoint",
                       "no checkpoint")


def test_link_loops_name_the_flag(area: Path, tmp_path: Path) -> None:
    """A symbolic-link loop given as a config, a checkpoint, a source or an export directory: one line."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with env(SPEEDSIM_CACHE=str(area / "cache")):
        assert_refused(run_cli("train", "--config", str(loop), "--out", str(tmp_path / "o")), "--config", "loop")
        assert_refused(run_cli("trace", "--checkpoint", str(loop), "--out", str(tmp_path / "t.jsonl")),
                       "--checkpoint", "link loop")
        assert_refused(run_cli("measure", "--device", "cpu", "--quick", "--out", str(tmp_path / "m.csv"),
                               "--checkpoint", str(loop)), "--checkpoint", "link loop")
        assert_refused(run_cli("data", "build", "--source", str(loop)), "--source", "link loop")
        assert_refused(run_cli("data", "build", "--source", str(area / "pkg"), "--export", str(loop)), "--export")
    with env(SPEEDSIM_CACHE=str(loop)):
        assert_refused(run_cli("data", "build", "--source", str(area / "pkg")), "$SPEEDSIM_CACHE")


_MODULE_NAMES = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "real"),
                         min_size=1, max_size=4, unique=True)


@FAST
@given(dangling=_MODULE_NAMES, looping=_MODULE_NAMES, nested=st.booleans())
def test_dangling_links_are_skipped_and_loops_are_refused(dangling: list[str], looping: list[str],
                                                          nested: bool) -> None:
    """In a source directory a dangling `.py` link is not a source file (left out, the real modules kept);
    a looping `.py` link is a `UserError` at the flag naming the link."""
    from speedsim.data.sources import explicit_roots

    looping = [n for n in looping if n not in dangling]
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        where = pkg / "sub" if nested else pkg
        where.mkdir(parents=True)
        (pkg / "real.py").write_text("x = 1\n")
        for name in dangling:
            (where / f"{name}.py").symlink_to(Path(tmp) / "nowhere" / f"{name}.py")
        [root] = explicit_roots([pkg], "--source")
        assert [f.path.name for f in root.files] == ["real.py"]
        for name in looping:
            (where / f"{name}.py").symlink_to(where / f"{name}.py")
        if looping:
            with pytest.raises(UserError, match=r"^--source: cannot use .*/" + f"{sorted(looping)[0]}" +
                               r"\.py: too many levels of symbolic links"):
                explicit_roots([pkg], "--source")
            with env(SPEEDSIM_CACHE=f"{tmp}/cache"):
                res = run_cli("data", "build", "--source", str(pkg))
            assert_refused(res, "--source", f"{sorted(looping)[0]}.py", "link loop")


# ------------------------------------------------------------------------------- repeated values
LIST_FLAGS = {
    "--parts": st.sampled_from(["steps", "loop", "batch", "ops"]).map(lambda p: (p, p)),
    "--sharings": st.tuples(st.integers(1, 6), st.integers(1, 4)).flatmap(
        lambda ur: st.sampled_from(["{}x{}", "0{}x{}", "{}x0{}"]).map(lambda f: (f.format(*ur), f"{ur[0]}x{ur[1]}"))),
    "--lm-head": st.sampled_from(["untied", "tied"]).map(lambda h: (h, h)),
    "--batch-sizes": st.integers(1, 64).flatmap(lambda n: st.sampled_from([str(n), f"0{n}", f" {n}"]).map(
        lambda t: (t, str(n)))),
    "--batch-ctx": st.integers(1, 512).flatmap(lambda n: st.sampled_from([str(n), f"00{n}"]).map(
        lambda t: (t, str(n)))),
}


@st.composite
def lists_with_a_repeat(draw: st.DrawFn) -> tuple[str, str, str]:
    """(flag, comma-separated text holding some value twice, that value as printed)."""
    flag = draw(st.sampled_from(sorted(LIST_FLAGS)))
    items = draw(st.lists(LIST_FLAGS[flag], min_size=1, max_size=4))
    value = draw(st.sampled_from(items))
    again = draw(LIST_FLAGS[flag].filter(lambda it: it[1] == value[1]))
    at = draw(st.integers(0, len(items)))
    items = [*items[:at], again, *items[at:]]
    first = next(v for i, (_, v) in enumerate(items) if v in [w for _, w in items[:i]])
    return flag, ",".join(t for t, _ in items), first


def _no_measuring(mp: pytest.MonkeyPatch) -> None:
    import speedsim.validation.measure.run as run

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bad option got as far as timing")

    mp.setattr(run, "TimingLog", boom)
    mp.setattr(run, "from_spec", boom)


@FAST
@given(given_=lists_with_a_repeat())
def test_a_repeated_value_in_a_measure_list_is_refused(tmp_path: Path, given_: tuple[str, str, str]) -> None:
    """`measure --sharings 4x3,04x3`, `--batch-sizes 1,1`, ...: one line naming the flag and the value (as a
    value: `04x3` is `4x3`), before anything is built or written."""
    flag, text, value = given_
    with pytest.MonkeyPatch.context() as mp:
        _no_measuring(mp)
        line = assert_refused(run_cli("measure", "--device", "cpu", "--quick", "--out", str(tmp_path / "m.csv"),
                                      flag, text), flag)
    assert f": {value} is given twice" in line
    assert not (tmp_path / "m.csv").exists()


@FAST
@given(flag=st.sampled_from(sorted(LIST_FLAGS)), data=st.data())
def test_lists_without_repeats_are_kept_in_order(flag: str, data: st.DataObject) -> None:
    """The other side: distinct values are accepted, in the order given."""
    from speedsim.validation.measure import plan_from_options

    items = data.draw(st.lists(LIST_FLAGS[flag], min_size=1, max_size=4, unique_by=lambda it: it[1]))
    arg = {"--parts": "parts", "--sharings": "sharings", "--lm-head": "lm_heads", "--batch-sizes": "batch_sizes",
           "--batch-ctx": "batch_ctxs"}[flag]
    plan = plan_from_options(**{arg: ",".join(t for t, _ in items)})  # type: ignore[arg-type]
    assert [str(v) for v in getattr(plan, arg)] == [v for _, v in items]


@FAST
@given(spelling=st.sampled_from(["{p}", "{p}/", "{p}/.", "{p}/../pkg", "{link}"]), in_config=st.booleans())
def test_a_source_given_twice_is_refused(area: Path, spelling: str, in_config: bool) -> None:
    """The same source directory twice (however spelled, through a link too) as `--source` or in
    `data.sources`: refused naming the flag or the field of the second."""
    pkg = area / "pkg"
    link = area / "pkg-link"
    if not link.exists():
        link.symlink_to(pkg)
    second = spelling.format(p=pkg, link=link)
    with env(SPEEDSIM_CACHE=str(area / "cache")), tempfile.TemporaryDirectory(dir=area) as tmp:
        if in_config:
            cfg = write_config(Path(tmp) / "cfg.yaml", sources=[str(pkg), second], cache_dir=str(area / "cache"))
            assert_refused(run_cli("train", "--config", str(cfg), "--out", f"{tmp}/run"),
                           f"{cfg}: field 'data.sources.1'", "given twice")
        else:
            assert_refused(run_cli("data", "build", "--source", str(pkg), "--source", second), "--source",
                           "given twice")


def test_two_sources_of_one_package_name_are_refused(area: Path, tmp_path: Path) -> None:
    """`a/pkg` and `b/pkg` would both be package `pkg`: the second's modules silently dropped. Refused."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    with env(SPEEDSIM_CACHE=str(area / "cache")):
        assert_refused(run_cli("data", "build", "--source", str(area / "pkg"), "--source", str(tmp_path / "pkg")),
                       "--source", "both package 'pkg'")


# ------------------------------------------------------------------------------ non-finite weights
def _tiny_state() -> dict[str, object]:
    """A checkpoint of a freshly built tiny model (not trained): every field `read_checkpoint` requires."""
    from speedsim.model import SharedDecoder
    from speedsim.train.checkpoint import CHECKPOINT_FORMAT
    from speedsim.train.config import parse_train_config, speed_config

    raw = yaml.safe_load(write_config(Path(tempfile.mkdtemp()) / "c.yaml").read_text())
    cfg = parse_train_config(raw, "c.yaml")
    sc = speed_config(cfg, 320)
    torch.manual_seed(0)
    model = SharedDecoder(sc)
    return {"format": CHECKPOINT_FORMAT, "stage": "finetune", "step": 4, "finished": True,
            "model": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": torch.optim.AdamW(model.parameters()).state_dict(), "torch_rng": torch.get_rng_state(),
            "train_config": cfg.model_dump(), "speed_config": sc.to_dict(), "tokenizer": "{}", "history": [],
            "train_seconds": 0.0}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, object]:
    return _tiny_state()


@st.composite
def poisoned(draw: st.DrawFn, names: list[str]) -> tuple[str, float, int]:
    """(tensor name, non-finite value, where in the tensor as a fraction of its size * 1e6)."""
    return (draw(st.sampled_from(names)), draw(st.sampled_from([float("nan"), float("inf"), float("-inf")])),
            draw(st.integers(0, 10**6 - 1)))


_NAMES = sorted(k for k, v in _tiny_state()["model"].items() if v.is_floating_point())  # type: ignore[attr-defined]


@FAST
@given(bad=poisoned(_NAMES), command=st.sampled_from(["trace", "measure", "read"]))
def test_a_checkpoint_with_a_non_finite_weight_is_refused(tiny_state: dict, bad: tuple[str, float, int],
                                                          command: str) -> None:
    """A NaN or an infinity anywhere in the weights: refused at load time, naming the checkpoint file and the
    tensor (trace used to write all-zero tokens and a null loss with exit 0)."""
    name, value, at = bad
    state = {**tiny_state, "model": {k: v.clone() for k, v in tiny_state["model"].items()}}
    flat = state["model"][name].view(-1)
    flat[at * flat.numel() // 10**6] = value
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "finetune.pt")
        what = "nan" if value != value else "inf"
        if command == "read":
            from speedsim.train import read_checkpoint

            with pytest.raises(UserError, match=rf"finetune\.pt: the weights are not finite: tensor '{name}' "
                                                rf"holds {what}"):
                read_checkpoint(tmp)
            return
        args = (("trace", "--checkpoint", tmp, "--out", f"{tmp}/t.jsonl") if command == "trace" else
                ("measure", "--device", "cpu", "--quick", "--parts", "ops", "--out", f"{tmp}/m.csv",
                 "--checkpoint", tmp))
        assert_refused(run_cli(*args), f"{tmp}/finetune.pt", f"tensor '{name}' holds {what}")
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["finetune.pt"]  # no trace, CSV or spec written


def test_a_finite_checkpoint_still_loads(tiny_state: dict, tmp_path: Path) -> None:
    """The other side: the same checkpoint, finite, reads back with its weights unchanged."""
    from speedsim.train import read_checkpoint

    torch.save(tiny_state, tmp_path / "finetune.pt")
    ckpt = read_checkpoint(tmp_path)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in tiny_state["model"].items())


class _Tok:
    """The tokenizer a checkpoint stores (only its text is needed here)."""

    def to_str(self) -> str:
        return "{}"


@FAST
@given(ruined_at=st.integers(1, 4), name=st.sampled_from(_NAMES), value=st.sampled_from([float("nan"), float("inf")]))
def test_training_never_saves_non_finite_weights(tmp_path_factory: pytest.TempPathFactory, ruined_at: int,
                                                 name: str, value: float) -> None:
    """An update that ruins a weight while the loss still looks finite: the run stops with one `UserError`
    naming the stage, step and tensor before it would checkpoint or evaluate them; the checkpoint left is
    the last good one (or none), and it loads."""
    import speedsim.train.loop as loop
    from speedsim.model import SharedDecoder
    from speedsim.train import load_train_config, read_checkpoint, speed_config

    out = tmp_path_factory.mktemp("run")
    src = out / "pkg"
    src.mkdir()
    (src / "m.py").write_text("x = 1\n")
    cfg = load_train_config(write_config(out / "c.yaml", sources=[str(src)], cache_dir=str(out / "cache")))
    sc = speed_config(cfg, 320)
    run = loop._Run(cfg, "c.yaml", out, torch.device("cpu"), False, _Tok(), sc, [0.5, 0.5])  # type: ignore[arg-type]
    model = SharedDecoder(sc)
    stage = loop._Stage("finetune", model, torch.optim.AdamW(model.parameters()))

    def step(run: object, st: loop._Stage, batch: object, lr: float, clip: float) -> float:
        if st.step + 1 == ruined_at:  # this update ruins a weight; the loss of its batch was finite
            with torch.no_grad():  # (a state dict's tensors share the parameters' storage)
                st.model.state_dict()[name].view(-1)[0] = value
        return 1.0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_data", lambda run, name: ({i: None for i in range(8)}, lambda: []))
        mp.setattr(loop, "_step", step)
        what = "nan" if value != value else "inf"
        expected_step = 2 if ruined_at <= 2 else 4  # checkpoint_every 2; the stage ends at 4
        sd = model.state_dict()  # a tied LM head is the embedding: either name is the tensor's
        aliases = "|".join(re.escape(k) for k, v in sd.items()
                           if v.untyped_storage().data_ptr() == sd[name].untyped_storage().data_ptr())
        with pytest.raises(UserError, match=rf"^c\.yaml: finetune step {expected_step}: the weights are not "
                                            rf"finite \(tensor '({aliases})' holds {what}"):
            loop._run_stage(run, stage, None)
    saved = out / "finetune.pt"
    if ruined_at <= 2:
        assert not saved.exists()
    else:
        assert read_checkpoint(saved)["step"] == 2


def test_training_never_keeps_a_non_finite_validation_loss(tmp_path: Path) -> None:
    """Finite weights whose outputs overflow at the end of a stage: one `UserError`, no checkpoint or
    metrics holding NaN (the run stays at its last checkpoint)."""
    import speedsim.train.loop as loop
    from speedsim.model import SharedDecoder
    from speedsim.train import load_train_config, speed_config

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    cfg = load_train_config(write_config(tmp_path / "c.yaml", sources=[str(tmp_path / "pkg")],
                                         cache_dir=str(tmp_path / "cache")))
    sc = speed_config(cfg, 320)
    run = loop._Run(cfg, "c.yaml", tmp_path, torch.device("cpu"), False, _Tok(), sc, [0.5, 0.5])  # type: ignore[arg-type]
    model = SharedDecoder(sc)
    stage = loop._Stage("finetune", model, torch.optim.AdamW(model.parameters()))
    nan = float("nan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_data", lambda run, name: ({i: None for i in range(8)}, lambda: []))
        mp.setattr(loop, "_step", lambda *a: 1.0)
        mp.setattr(loop, "exit_losses", lambda *a: {"val_loss": nan, "val_loss_per_exit": [1.0, nan]})
        with pytest.raises(UserError, match=r"^c\.yaml: finetune step 4: the validation loss is not finite"):
            loop._run_stage(run, stage, None)
    assert loop.read_checkpoint(tmp_path / "finetune.pt")["step"] == 2  # the last good one


# ------------------------------------------------------------------------------ at length (CI)
@pytest.mark.slow
@SLOW
@given(bad=bad_paths(), case=st.sampled_from(sorted(_path_cases(Path("."), "x"))))
def test_a_bad_path_names_its_flag_at_length(area: Path, bad: str, case: str) -> None:
    where, args, environ = _path_cases(area, bad)[case]
    with env(SPEEDSIM_CACHE=str(area / "cache"), SPEEDSIM_CORPUS=None, **environ):
        assert_refused(run_cli(*args), where)


@pytest.mark.slow
@SLOW
@given(given_=lists_with_a_repeat())
def test_a_repeated_value_is_refused_at_length(given_: tuple[str, str, str]) -> None:
    from speedsim.validation.measure import plan_from_options

    flag, text, value = given_
    arg = {"--parts": "parts", "--sharings": "sharings", "--lm-head": "lm_heads", "--batch-sizes": "batch_sizes",
           "--batch-ctx": "batch_ctxs"}[flag]
    with pytest.raises(UserError, match=rf"^{flag}: {value} is given twice"):
        plan_from_options(**{arg: text})  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_checkpoint_whose_activations_overflow_is_refused_by_trace(code_corpus: dict, tmp_path: Path) -> None:
    """Finite weights whose outputs overflow (an exit norm's scale of 3e38): `trace` refuses (one line
    naming the checkpoint) instead of writing garbage tokens and a null loss."""
    from speedsim.model import SharedDecoder
    from speedsim.train.config import parse_train_config, speed_config

    state = _tiny_state()
    raw: dict = dict(state["train_config"])  # type: ignore[call-overload]
    raw["data"] = {**raw["data"], "sources": code_corpus["sources"], "cache_dir": code_corpus["cache_dir"]}
    cfg = parse_train_config(raw, "c.yaml")
    tok = code_corpus["tokenizer"]
    model = SharedDecoder(speed_config(cfg, tok.get_vocab_size()))
    weights = dict(model.state_dict())
    weights["norm.weight"] = weights["norm.weight"] * 3e38  # finite, but the exit's logits are not
    state.update(model=weights, train_config=cfg.model_dump(), tokenizer=tok.to_str(),
                 speed_config=speed_config(cfg, tok.get_vocab_size()).to_dict())
    torch.save(state, tmp_path / "finetune.pt")
    res = run_cli("trace", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "t.jsonl"), "--limit", "2",
                  "--json")
    assert_refused(res, str(tmp_path), "not finite")
    assert not (tmp_path / "t.jsonl").exists()
    assert res.stdout == ""  # no statistics with a null loss
