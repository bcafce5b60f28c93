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

Every run is a `RunParams`: its fields are the only axes (an unknown one is an error naming
it). `profile: all` expands to every shipped profile. Sharing is `sharing: UxR` or two of
`unique`, `repeats`, `depth` (layers). The workload is a shipped or given exit trace
(`trace`, optionally its first `limit` sequences) or seeded synthetic traces (`mispredict`,
`agree` or `fit`: a trace to fit them to, as `--synthetic fit=`; then `out_len`, `src_len`,
`seqs`, `burst`, `seed`).

`plan(spec)` checks everything a run needs (profiles, models, sharing, traces, synthetic
parameters) and raises `UserError` before any run starts.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speedsim.engine import open_profile
from speedsim.errors import UserError
from speedsim.hardware import list_profile_files
from speedsim.pipeline import Policy
from speedsim.run import RunParams, TraceWorkload, check_trace_file
from speedsim.serve.arrivals import check_arrivals
from speedsim.sharing import Sharing
from speedsim.workload import get_model, resolve_models
from speedsim.yamlio import read_mapping

SHARING_AXES = ("unique", "repeats", "depth")
ALL_PROFILES = "all"


KNOWN_AXES = tuple(RunParams.model_fields) + SHARING_AXES


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
    `reduced:` keys replace the spec's own (a smaller version of the same study)."""
    path = Path(path)
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
        raise UserError(f"key '{prefix}{loc}': {msg}", where=str(path)) from None


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
    bundles = {name for name, values in block.axes.items() if all(isinstance(v, dict) for v in values)}
    for name in list(base) + [n for n in block.axes if n not in bundles]:
        if name not in KNOWN_AXES and name != "label":
            raise UserError(f"unknown axis '{name}' (known: {', '.join(KNOWN_AXES)})", where=bwhere)
    for name in bundles:
        for j, values in enumerate(block.axes[name]):
            for key in values:
                if key not in KNOWN_AXES:
                    raise UserError(f"unknown axis '{key}' (known: {', '.join(KNOWN_AXES)})",
                                    where=f"{bwhere}.axes.{name}[{j}]")
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
            if name not in KNOWN_AXES:
                raise UserError(f"unknown axis '{name}' (known: {', '.join(KNOWN_AXES)})",
                                where=f"{bwhere}.runs[{j}]")
        combos.append({**base, **run})
    out = []
    for raw in combos:
        if raw.get("profile") == ALL_PROFILES:
            out += [{**raw, "profile": p} for p in shipped_profiles()]
        else:
            out.append(raw)
    return [_resolve_sharing(r, bwhere) for r in out]


def expand(spec: SweepSpec, where: str = "spec") -> list[RunParams]:
    """Every run of the spec, in spec order, duplicates (same key) dropped."""
    blocks = spec.all_blocks()
    if not blocks:
        raise UserError("the spec has no axes, runs or blocks: the product is empty", where=where)
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
                raise UserError(f"key '{loc}': {msg} (in run {_short(raw)})", where=where) from None
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
            "arrivals": ("arrivals", "requests", "serve_seed")}


def check_runs(spec: SweepSpec, runs: list[RunParams], where: str = "spec") -> None:
    """Raise `UserError` (naming the key) for anything that would make a run fail on bad input."""
    models = spec_models(spec)
    seen: set[tuple] = set()
    for run in runs:
        sharing = _sharing(run)
        keys = ["profile", "model", "sharing"]
        if sharing is not None:
            keys += ["trace" if run.trace is not None else "synthetic", "launch_exit"]
        if run.serving:
            keys.append("arrivals")
        for key in keys:
            seen_key = (key, *(getattr(run, f) for f in _DEPENDS[key]))
            if seen_key in seen:
                continue
            seen.add(seen_key)
            try:
                if key == "profile":
                    open_profile(run.profile)
                elif key == "model":
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
                    msg = str(err).split(": ", 1)[-1] if err.where else str(err)
                raise UserError(f"key '{key}': {msg}", where=where) from None


def spec_models(spec: SweepSpec) -> dict:
    """Built-in models plus the spec's `model_specs` files (paths relative to the spec)."""
    base = Path(spec.base_dir or ".")
    return resolve_models([p if Path(p).is_absolute() else base / p for p in map(Path, spec.model_specs)])


def plan(spec: SweepSpec, where: str = "spec") -> list[RunParams]:
    """Expand and check a spec: the runs, or a `UserError` before any of them starts."""
    runs = expand(spec, where)
    check_runs(spec, runs, where)
    return runs
