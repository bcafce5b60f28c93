"""Sweep specs: a YAML file of axes whose product (or explicit list) is the set of runs.

A spec (`experiments/*.yaml`)::

    name: acceptance
    description: speedup against misprediction rate
    fixed: {model: t5base, mode: graph}      # every run's defaults
    blocks:                                  # or top-level `axes:` / `runs:` for one block
      - label: mispredict                    # a tag kept in the results table
        fixed: {out_len: 64}
        axes:                                # the Cartesian product of these lists
          profile: [h200, rtx-a5000]
          sharing: [4x3, 2x6]
          mispredict: [0.0, 0.1, 0.2]
        runs:                                # and/or explicit runs (merged over `fixed`)
          - {profile: h200, sharing: 12x1, trace: 12x1}
      - label: curves                        # a serving study: `requests` makes a run a serving run
        fixed: {requests: 120}
        axes:
          profile: [h200]
          configs:                           # an axis of mappings: each one sets several fields
            - {sharing: 4x3, serve_method: speed, trace: 4x3}
            - {sharing: 12x1, serve_method: unshared, trace: 12x1}
          arrivals: [load:0.1, load:1.0]     # fractions of the nominal capacity, or poisson:RATE
      - label: bandwidth                     # a hardware axis: a what-if on the profile (`--set`)
        axes:
          profile: [h200]
          set.memory.dram.bandwidth_GBps: [x0.5, x1, x2, x4]

Every run is a `RunParams`: its fields are the only axes (an unknown one is an error naming
it), plus what-ifs on the profile: `set.PATH: [values]` (an axis, in the product with the others) or
`set.PATH: value` (in `fixed:`, a bundle or a run) sets the profile's parameter at dotted PATH
(`speedsim profiles --params NAME` lists them) to a number or `xF` (F times the profile's value), as
`--set PATH=VALUE` does (`memory.dram.bandwidth_GBps: [x0.5, x1, x2, x4]`). A run's what-ifs are its
`overrides` (so a spec without `set.` keys keeps its run keys), its rows have a `set.PATH` column (the
value as given) and a `value.PATH` column (the value it came to) per parameter set, and a `set.` key that
is not a parameter of a run's profile, or a value its field does not take, is refused before any run.
`profile: all` expands to every shipped profile. Sharing is `sharing: UxR` or two of
`unique`, `repeats`, `depth` (layers). The workload is a shipped or given exit trace
(`trace`, optionally its first `limit` sequences) or seeded synthetic traces (`mispredict`,
`agree` or `fit`: a trace to fit them to, as `--synthetic fit=`; then `out_len`, `src_len`,
`seqs`, `burst`, `seed`).

`plan(spec)` checks everything a run needs (profiles, models, sharing, traces, synthetic
parameters) and raises `UserError` before any run starts.
"""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speedsim.engine import check_profile, open_profile
from speedsim.errors import UserError
from speedsim.hardware import list_profile_files
from speedsim.hardware.files import profile_dir_label, whatif_checked
from speedsim.limits import MAX_SWEEP_RUNS
from speedsim.pipeline import Policy
from speedsim.run import RunParams, TraceWorkload, check_trace_file
from speedsim.serve.arrivals import check_arrivals
from speedsim.sharing import Sharing
from speedsim.userpath import os_errors, probe, shown, user_path
from speedsim.workload import get_model, resolve_models
from speedsim.yamlio import read_mapping

SHARING_AXES = ("unique", "repeats", "depth")
ALL_PROFILES = "all"
SET_PREFIX = "set."  # `set.PATH`: a what-if on the profile's parameter at PATH (a run's `overrides`)


KNOWN_AXES = tuple(f for f in RunParams.model_fields if f != "overrides") + SHARING_AXES
_KNOWN = f"{', '.join(KNOWN_AXES)}, or {SET_PREFIX}PATH: a profile parameter"


def _known(name: str) -> bool:
    """Whether `name` is a key a run may set: a run field, a sharing axis, or `set.PATH`."""
    return name in KNOWN_AXES or name.startswith(SET_PREFIX) and bool(name[len(SET_PREFIX):].strip())


class Block(BaseModel):
    """One group of runs: a product of axes and/or an explicit list, over shared fixed values."""

    model_config = ConfigDict(extra="forbid")

    label: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)


class SweepSpec(BaseModel):
    """A whole sweep: shared fixed values and one or more blocks."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)
    model_specs: list[str] = Field(default_factory=list, description="model spec YAML files (relative to the spec)")
    reduced: dict[str, Any] = Field(default_factory=dict, description="keys that replace the spec's own in its "
                                    "reduced form (`load_spec(path, reduced=True)`: the default report's)")
    base_dir: str = Field("", exclude=True, description="directory of the spec file (set by load_spec)")

    def all_blocks(self) -> list[Block]:
        top = [Block(label="", axes=self.axes, runs=self.runs)] if (self.axes or self.runs) else []
        return top + list(self.blocks)


# ------------------------------------------------------------------------------ loading

def load_spec(path: Path | str, reduced: bool = False) -> SweepSpec:
    """Read a spec YAML; `UserError` naming the file and key on anything malformed. `reduced`: its
    `reduced:` keys replace the spec's own (a smaller version of the same study). A path that cannot
    name a file is refused naming it (an empty one, which `Path` would read as '.', as SPEC_FILE)."""
    path = user_path(path, shown(path) or "SPEC_FILE")
    data = read_mapping(path, "sweep spec")
    data.setdefault("name", path.stem.split(".")[0])
    spec = _validated(data, path)
    if reduced and spec.reduced:
        spec = _validated({**data, **spec.reduced, "reduced": {}}, path, "reduced.")
    return spec.model_copy(update={"base_dir": str(path.parent)})


def _validated(data: dict[str, Any], path: Path, prefix: str = "") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise UserError(f"field '{prefix}{loc}': {msg}", where=str(path)) from None


# ------------------------------------------------------------------------------ expansion

def shipped_profiles() -> list[str]:
    return [p.stem for p in list_profile_files()]


def _resolve_sharing(raw: dict[str, Any], where: str) -> dict[str, Any]:
    given = {k: raw[k] for k in SHARING_AXES if raw.get(k) is not None}
    out = {k: v for k, v in raw.items() if k not in SHARING_AXES}
    if not given:
        return out
    if "sharing" in out or len(given) != 2:
        raise UserError(f"give 'sharing', or exactly two of unique/repeats/depth (got {', '.join(given)})",
                        where=where)
    # integers only: int() would take `true` as 1 and truncate 2.5 to 2
    if not all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.strip().isdigit()
               for v in given.values()):
        raise UserError(f"unique/repeats/depth must be integers (got {given})", where=where)
    g = {k: int(v) for k, v in given.items()}
    if any(v < 1 for v in g.values()):
        raise UserError(f"unique/repeats/depth must be >= 1 (got {given})", where=where)
    u, r = g.get("unique"), g.get("repeats")
    if u is None or r is None:
        known, other = ("repeats", "unique") if r is not None else ("unique", "repeats")
        d = g["depth"]
        if g[known] < 1 or d % g[known]:
            raise UserError(f"depth {d} is not a multiple of {known} {g[known]}", where=where)
        g[other] = d // g[known]
        u, r = g["unique"], g["repeats"]
    out["sharing"] = f"{u}x{r}"
    return out


def _expand_block(spec: SweepSpec, block: Block, bwhere: str) -> list[dict[str, Any]]:
    base = {**spec.fixed, **block.fixed}
    if block.label:
        base["label"] = block.label
    for name, values in block.axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"axis '{name}' is empty: the product has no runs", where=bwhere)
    for name, values in block.axes.items():
        _no_value_twice(name, values, bwhere)
    bundles = {name for name, values in block.axes.items()  # (a `set.PATH` axis takes numbers only)
               if all(isinstance(v, dict) for v in values) and not name.startswith(SET_PREFIX)}
    for name in list(base) + [n for n in block.axes if n not in bundles]:
        if not _known(name) and name != "label":
            raise UserError(f"unknown axis '{name}' (known: {_KNOWN})", where=bwhere)
    for name in bundles:
        for j, values in enumerate(block.axes[name]):
            for key in values:
                if not _known(key):
                    raise UserError(f"unknown axis '{key}' (known: {_KNOWN})", where=f"{bwhere}.axes.{name}[{j}]")
    if not block.axes and not block.runs:
        raise UserError("block has neither axes nor runs", where=bwhere)
    combos: list[dict[str, Any]] = []
    if block.axes:
        names = list(block.axes)
        for combo in itertools.product(*(block.axes[n] for n in names)):
            run = dict(base)
            for name, value in zip(names, combo, strict=True):
                run.update(value if name in bundles else {name: value})  # a bundle: several fields at once
            combos.append(run)
    for j, run in enumerate(block.runs):
        for name in run:
            if not _known(name):
                raise UserError(f"unknown axis '{name}' (known: {_KNOWN})", where=f"{bwhere}.runs[{j}]")
        combos.append({**base, **run})
    out = []
    for raw in combos:
        if raw.get("profile") == ALL_PROFILES:
            out += [{**raw, "profile": p} for p in shipped_profiles()]
        else:
            out.append(raw)
    return [_with_overrides(_resolve_sharing(r, bwhere), bwhere) for r in out]


def _no_value_twice(name: str, values: list[Any], where: str) -> None:
    """An axis lists each value once: `[h200, h200]`, `[4x3, 4X3]` or `[0.0, -0.0]` would run one point
    twice (as two runs, or silently as one)."""
    seen: dict[str, Any] = {}
    for value in values:
        key = value
        if name == "sharing" and isinstance(value, str):
            try:
                key = str(Sharing.parse(value, where=where))
            except UserError:
                key = value  # refused with its own message when the run is checked
        elif isinstance(value, float) and value == 0.0:
            key = 0.0  # -0.0 is 0.0
        text = json.dumps(key, sort_keys=True, default=str)
        if text in seen:
            also = "" if seen[text] == value else f" (also as {seen[text]!r})"
            raise UserError(f"axis '{name}': {value!r} is given twice{also}: each value is one point of the "
                            "product", where=where)
        seen[text] = value


def _with_overrides(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`raw` with its `set.PATH` keys as the run's `overrides` ((PATH, VALUE) in the order given): each value one
    number or `xF` (a list, a mapping, a truth value or nothing is refused naming the key). Whether PATH is a
    parameter of the run's profile, and the value one its field takes, is `check_runs`'s to say."""
    keys = [k for k in raw if k.startswith(SET_PREFIX)]
    if not keys:
        return raw
    pairs = []
    for key in keys:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float) or isinstance(value, str) \
                and not value.strip():
            kind = {list: "a list", dict: "a section (mapping)", type(None): "nothing", str: "an empty text"}.get(
                type(value), f"{value!r}")
            axis = " (an axis of values goes under axes:)" if isinstance(value, list) else ""
            raise UserError(f"{kind} is not a number or xF (F times the profile's value){axis}",
                            where=field_where(where, key))
        pairs.append((key[len(SET_PREFIX):].strip(), value))
    return {**{k: v for k, v in raw.items() if k not in keys}, "overrides": pairs}


class _Profiles:
    """How many runs one `profile` value stands for: 1, or every shipped profile for `all` (listed once,
    when first asked); `all` with no profile to stand for is a `UserError` naming the field."""

    def __init__(self, where: str):
        self.where = where
        self._count: int | None = None

    def count(self, value: Any, field: str) -> int:
        if value != ALL_PROFILES:
            return 1
        if self._count is None:
            self._count = len(shipped_profiles())
        if not self._count:
            raise UserError(f"'{ALL_PROFILES}' names no profile: no *.yaml profiles in {profile_dir_label()}",
                            where=field_where(self.where, field))
        return self._count


def _block_size(spec: SweepSpec, block: Block, prefix: str, profiles: _Profiles) -> tuple[int, str]:
    """The runs `block` expands to, counted from its axes' lengths without expanding it (duplicates
    included, `profile: all` as every shipped profile), and how the count is made ("a 3 x b 4 + 2 runs")."""
    fixed = f"{prefix}fixed.profile" if "profile" in block.fixed else "fixed.profile"
    base = {**spec.fixed, **block.fixed}.get("profile")
    product, factors = 1, []
    sets_profile = False
    for name, values in block.axes.items():
        n = 0
        for j, value in enumerate(values):
            if isinstance(value, dict):  # a bundle sets several fields, the profile perhaps among them
                sets_profile = sets_profile or "profile" in value
                n += profiles.count(value.get("profile"), f"{prefix}axes.{name}[{j}].profile")
            else:
                n += profiles.count(value, f"{prefix}axes.{name}") if name == "profile" else 1
        sets_profile = sets_profile or name == "profile"
        product *= n
        factors.append(f"{name} {n:,}")
    if block.axes and not sets_profile and base == ALL_PROFILES:
        product *= profiles.count(base, fixed)
        factors.append(f"profile: all {profiles.count(base, fixed):,}")
    explicit = sum(profiles.count(run.get("profile", base), f"{prefix}runs[{j}].profile")
                   for j, run in enumerate(block.runs))
    how = " x ".join(factors) if block.axes else ""
    if explicit:
        how = f"{how} + {explicit:,} runs" if how else f"{explicit:,} runs"
    return (product if block.axes else 0) + explicit, f"{prefix}axes: {how}" if block.axes else how


def count_runs(spec: SweepSpec, where: str = "spec") -> int:
    """The runs `spec` expands to, counted from its axes' lengths BEFORE expanding it (duplicates, dropped
    on expansion, included); a `UserError` naming the spec if that is more than
    `speedsim.limits.MAX_SWEEP_RUNS` (the message gives the count and the axes' lengths), or if `profile:
    all` names no profile (an axis that expands to nothing: the sweep would have no runs)."""
    blocks = spec.all_blocks()
    top = len(blocks) - len(spec.blocks)
    profiles = _Profiles(where)
    sizes = [_block_size(spec, block, "" if i < top else f"blocks[{i - top}].", profiles)
             for i, block in enumerate(blocks)]
    total = sum(n for n, _ in sizes)
    if total > MAX_SWEEP_RUNS:
        biggest = sorted(sizes, key=lambda size: -size[0])
        shown_ = "; ".join(f"{how} = {n:,}" for n, how in biggest[:2])
        more = f"; and {len(biggest) - 2} more block(s)" if len(biggest) > 2 else ""
        raise UserError(f"the spec expands to {total:,} runs, more than the {MAX_SWEEP_RUNS:,} one sweep may "
                        f"have ({shown_}{more}); shorten its axes or split it into several specs",
                        where=where)
    return total


def expand(spec: SweepSpec, where: str = "spec") -> list[RunParams]:
    """Every run of the spec, in spec order, duplicates (same key) dropped. The runs are counted before
    any is made (`count_runs`): a spec of more than `MAX_SWEEP_RUNS` is refused without expanding it."""
    blocks = spec.all_blocks()
    if not blocks:
        raise UserError("the spec has no axes, runs or blocks: the product is empty", where=where)
    count_runs(spec, where)
    top = len(blocks) - len(spec.blocks)  # 1 when top-level axes/runs form an implicit first block
    runs: dict[str, RunParams] = {}
    for i, block in enumerate(blocks):
        bwhere = where if i < top else f"{where}: blocks[{i - top}]"
        for raw in _expand_block(spec, block, bwhere):
            if "profile" not in raw or "sharing" not in raw:
                missing = "profile" if "profile" not in raw else "sharing"
                raise UserError(f"no value for '{missing}' (set it in fixed, axes or runs)", where=where)
            try:
                run = RunParams.model_validate(raw)
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or "(run)"
                msg = first["msg"].removeprefix("Value error, ")
                raise UserError(f"field '{loc}': {msg} (in run {_short(raw)})", where=where) from None
            runs.setdefault(run.key, run)
    return list(runs.values())


def _short(raw: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in raw.items() if k != "label")


# ------------------------------------------------------------------------------ checks

def _sharing(run: RunParams) -> Sharing | None:
    try:
        return Sharing.parse(run.sharing)
    except UserError:
        return None  # reported by the sharing check


def _check_workload(run: RunParams, sharing: Sharing, base_dir: str) -> None:
    """The run's workload as its run would load it: a trace file (`speedsim.run.check_trace_file`) or
    synthetic traces (that decode something, for a decode run)."""
    workload = run.workload(sharing.repeats, base_dir)
    if isinstance(workload, TraceWorkload):
        check_trace_file(workload.path, sharing, workload.limit, decode=not run.serving)
    elif run.serving:
        workload.spec(sharing.repeats)
    else:
        workload.decodable_spec(sharing.repeats)


# what each check of a run depends on (runs that share it are checked once)
_DEPENDS = {"profile": ("profile",), "model": ("model",), "sharing": ("sharing",),
            "trace": ("trace", "limit", "sharing", "requests"),
            "synthetic": ("fit", "mispredict", "agree", "burst", "out_len", "src_len", "seqs", "seed", "sharing",
                          "requests"),
            "launch_exit": ("launch_exit", "max_in_flight", "sharing"),
            "arrivals": ("arrivals", "requests", "serve_seed"),
            "overrides": ("profile", "overrides")}


def field_where(where: str, field: str) -> str:
    """How a message names a field of the spec at `where`: `spec.yaml: field 'trace'`."""
    return f"{where}: field '{field}'"


def _message(err: UserError) -> str:
    """`err`'s message without the `where` it names."""
    return str(err)[len(err.where) + 2:] if err.where else str(err)


def _paths_of(run: RunParams, key: str) -> list[tuple[str, str]]:
    """(field, path) of each file name the check `key` of `run` reads: a profile (a name or a YAML path), a
    trace or fitted-to trace (a shipped name or a path), a serving run's `arrivals: trace:FILE`."""
    if key == "profile":
        return [("profile", run.profile)]
    if key == "trace" and run.trace is not None:
        return [("trace", run.trace)]
    if key == "synthetic" and run.fit is not None:
        return [("fit", run.fit)]
    kind, _, name = (run.arrivals or "").partition(":")
    if key == "arrivals" and kind == "trace" and name.strip():
        return [("arrivals", name)]
    return []


def check_runs(spec: SweepSpec, runs: list[RunParams], where: str = "spec") -> None:
    """Raise `UserError` (naming the key) for anything that would make a run fail on bad input.

    A file name in a run (`profile`, `trace`, `fit`, `arrivals: trace:FILE`) is first checked as a path
    (`speedsim.userpath.user_path`), and any operating-system error reading it (a name too long once a
    shipped file's suffix is added, a link loop, a permission denied) is a `UserError` naming the spec
    and the field (`spec.yaml: field 'trace'`), never a traceback."""
    models = spec_models(spec, where)
    seen: set[tuple] = set()
    whatifs = _WhatIfChecks(where)
    for run in runs:
        sharing = _sharing(run)
        keys = ["profile", "model", "sharing"]
        if sharing is not None:
            keys += ["trace" if run.trace is not None else "synthetic", "launch_exit"]
        if run.serving:
            keys.append("arrivals")
        if run.overrides:
            keys.append("overrides")
        for key in keys:
            seen_key = (key, *(getattr(run, f) for f in _DEPENDS[key]))
            if seen_key in seen:
                continue
            seen.add(seen_key)
            for field, value in _paths_of(run, key):
                user_path(value, field_where(where, field))
            if key == "overrides":
                whatifs.check(run)
                continue
            with os_errors(field_where(where, "fit" if key == "synthetic" else key)):
                _check_key(spec, run, key, sharing, models, where)


def _check_key(spec: SweepSpec, run: RunParams, key: str, sharing: Sharing | None, models: dict,
               where: str) -> None:
    """One check of `check_runs`: a `UserError` naming the key (and the file it read, if one is bad)."""
    try:
        if key == "profile":
            open_profile(run.profile)
        elif key == "model":
            if run.model not in models:  # get_model's message would point at --model-spec, not at the spec
                raise UserError(f"unknown model '{run.model}' (known: {', '.join(sorted(models))}; give "
                                "others in the spec's model_specs)")
            get_model(run.model, models)
        elif key == "sharing":
            Sharing.parse(run.sharing)
        elif key == "arrivals":
            check_arrivals(run.arrivals or "", run.requests or 1, run.serve_seed, spec.base_dir)
        elif key == "launch_exit":
            assert sharing is not None
            Policy(launch_exit=run.launch_exit, max_in_flight=run.max_in_flight).check(sharing.repeats)
        else:
            assert sharing is not None
            _check_workload(run, sharing, spec.base_dir)
    except UserError as err:
        if key == "synthetic" and err.where not in (None, "--synthetic"):  # the fitted trace file
            key, msg = "fit", str(err)
        elif key == "trace" or key == "arrivals" and err.where != "--arrivals":  # names its file: keep it
            msg = str(err)
        else:
            msg = _message(err)
        raise UserError(f"field '{key}': {msg}", where=where) from None


class _WhatIfChecks:
    """The runs' what-ifs on their profiles, checked as each run will apply them
    (`speedsim.hardware.files.load_whatif`, with the engine's check): each `set.PATH` key a parameter of the
    run's profile with a value its field takes (a `UserError` naming that key), then the run's settings
    together (naming them all). Each profile is read once, each (profile, key, value) checked once."""

    def __init__(self, where: str):
        self.where = where
        self.profiles: dict[str, Any] = {}
        self.done: set[tuple[str, str, str]] = set()

    def check(self, run: RunParams) -> None:
        if run.profile not in self.profiles:  # (its own check came first: it loads)
            self.profiles[run.profile] = open_profile(run.profile)
        profile = self.profiles[run.profile]
        for path, value in run.overrides:
            if (run.profile, path, value) in self.done:
                continue
            try:
                whatif_checked(profile, [f"{path}={value}"], check_profile)
            except UserError as err:
                raise UserError(f"field '{SET_PREFIX}{path}': {_message(err)}", where=self.where) from None
            self.done.add((run.profile, path, value))
        if len(run.overrides) > 1:
            try:
                whatif_checked(profile, [f"{path}={value}" for path, value in run.overrides], check_profile)
            except UserError as err:
                keys = "/".join(dict.fromkeys(SET_PREFIX + path for path, _ in run.overrides))
                given = ", ".join(f"{SET_PREFIX}{path}={value}" for path, value in run.overrides)
                raise UserError(f"fields '{keys}' together ({given} on {run.profile}): {_message(err)}",
                                where=self.where) from None


def model_spec_paths(spec: SweepSpec, where: str = "spec") -> list[Path]:
    """The spec's `model_specs` files (relative to the spec's directory), each an existing regular file;
    else a `UserError` naming the spec and the field (`spec.yaml: field 'model_specs'`)."""
    base = Path(spec.base_dir or ".")
    label = field_where(where, "model_specs")
    paths = []
    for name in spec.model_specs:
        path = user_path(name, label)
        path = path if path.is_absolute() else base / path
        st = probe(path, label)
        if st is None:
            raise UserError(f"no such model spec file: {shown(path)}", where=label)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise UserError(f"model spec {shown(path)} is {what}", where=label)
        paths.append(path)
    return paths


def spec_models(spec: SweepSpec, where: str = "spec") -> dict:
    """Built-in models plus the spec's `model_specs` files (paths relative to the spec)."""
    paths = model_spec_paths(spec, where)
    with os_errors(field_where(where, "model_specs")):
        return resolve_models(paths)


def plan(spec: SweepSpec, where: str = "spec") -> list[RunParams]:
    """Expand and check a spec: the runs, or a `UserError` before any of them starts."""
    runs = expand(spec, where)
    check_runs(spec, runs, where)
    return runs
