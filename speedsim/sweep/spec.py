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

import hashlib
import itertools
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from speedsim.errors import UserError
from speedsim.hardware import list_profile_files, load_profile
from speedsim.pipeline import Policy
from speedsim.sharing import MAX_REPEATS, Sharing
from speedsim.trace.io import iter_traces, resolve_trace
from speedsim.trace.schema import MAX_TOKEN_ID
from speedsim.trace.synthetic import (
    DEFAULT_OUT_LEN,
    DEFAULT_SEED,
    DEFAULT_SEQS,
    DEFAULT_SRC_LEN,
    MAX_SYNTHETIC_LEN,
    MAX_SYNTHETIC_SEQS,
    parse_decodable,
)
from speedsim.workload import get_model, resolve_models
from speedsim.yamlio import read_mapping

SHARING_AXES = ("unique", "repeats", "depth")
ALL_PROFILES = "all"


class RunParams(BaseModel):
    """The parameters of one simulation; its key is a hash of them (the label included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field("", description="tag of the spec block that produced the run")
    profile: str = Field(description="hardware profile name (hw_profiles/NAME.yaml) or YAML path")
    model: str = Field("t5base", description="model dimensions: built-in name or a spec's model_specs entry")
    sharing: str = Field(description="UxR: U distinct layers applied R times")
    mode: Literal["graph", "eager"] = "graph"
    trace: str | None = Field(None, description="exit trace: shipped name (experiments/traces/NAME.jsonl.gz) "
                              "or a path; None = synthetic traces")
    limit: int | None = Field(None, ge=1, le=MAX_TOKEN_ID, description="simulate only the first N sequences of the trace")
    fit: str | None = Field(None, description="synthetic: traces fitted to this exit trace (shipped name or path; "
                            "`--synthetic fit=`), at out_len tokens")
    mispredict: float | None = Field(None, ge=0, le=1, description="synthetic: first-exit misprediction rate")
    agree: str | None = Field(None, description="synthetic: per-exit agreement with the final exit, 'a0/a1/..'")
    burst: float | None = Field(None, ge=0, le=1, description="synthetic: P(miss | previous position missed)")
    out_len: int = Field(DEFAULT_OUT_LEN, ge=1, le=MAX_SYNTHETIC_LEN, description="synthetic: output length in tokens")
    src_len: int | None = Field(None, ge=1, le=MAX_TOKEN_ID, description="source length in tokens (synthetic default "
                                "128; with a trace: overrides each sequence's own)")
    seqs: int = Field(DEFAULT_SEQS, ge=1, le=MAX_SYNTHETIC_SEQS, description="synthetic: number of sequences")
    seed: int = Field(DEFAULT_SEED, ge=0, le=2**63 - 1, description="synthetic: seed of the trace generator")
    baselines: tuple[Literal["unshared", "sequential"], ...] = ("unshared", "sequential")
    launch_exit: int = Field(0, ge=0, lt=MAX_REPEATS, description="exit whose prediction launches the next token")
    max_in_flight: int | None = Field(None, ge=1, le=MAX_REPEATS, description="most tokens in flight (default R)")
    bounds: Annotated[bool, Strict()] = Field(False, description="also simulate the profile's ranges at both ends "
                         "(per_token_us_low/high; three simulations per run)")

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data: Any) -> Any:
        # YAML's `true` would pass as the number 1 (pydantic's lax mode): a number axis takes numbers only
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, bool) and key in _NUMBER_FIELDS:
                    raise ValueError(f"{key}: {value!r} is not a number")
        return data

    @field_validator("profile", "model", "sharing", "trace", "fit", "agree")
    @classmethod
    def _text(cls, value: str | None, info: Any) -> str | None:
        # an empty `fit` or `agree` would silently mean a perfect model, an empty `trace` synthetic traces
        if value is not None and not value.strip():
            raise ValueError(f"{info.field_name} is empty")
        # fit and agree become items of the --synthetic text, whose items are separated by commas:
        # 'fit: 4x3,burst=0.9' would smuggle in a parameter the run does not show
        if value is not None and info.field_name in ("fit", "agree") and "," in value:
            raise ValueError(f"{info.field_name} {value!r} holds a ',' (give other parameters as their own keys)")
        return value

    @model_validator(mode="after")
    def _one_accuracy(self) -> RunParams:
        given = [k for k in ("fit", "agree", "mispredict") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of fit, agree and mispredict, not {' and '.join(given)}")
        # (against the defaults, not the fields given: a run is also rebuilt from its full dump)
        synthetic = [k for k in _SYNTHETIC_FIELDS if getattr(self, k) != RunParams.model_fields[k].default]
        if self.trace is not None and synthetic:  # they would be silently ignored
            raise ValueError(f"a run with a trace takes no synthetic parameters (got {', '.join(synthetic)})")
        if self.trace is None and self.limit is not None:
            raise ValueError("limit applies to a trace's sequences; a synthetic run sets seqs")
        return self

    @property
    def key(self) -> str:
        """Stable identity of the run: 16 hex digits of a hash of its canonical JSON."""
        # `fit` came later: left out while unset, so the runs of older specs keep their keys
        canon = json.dumps(self.model_dump(mode="json", exclude={"fit"} if self.fit is None else None),
                           sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def synthetic(self, repeats: int, base_dir: str | Path = "") -> str:
        """The `--synthetic` text of this run's traces (only meaningful without a trace).

        With R = 1 there is no early exit, so nothing can be mispredicted: the text is `perfect`'s.
        `base_dir`: the spec's directory, against which a relative `fit` path is resolved first (as
        a `trace` path is); without it, the text names `fit` as given.
        """
        if self.fit:  # the real trace's lengths of source, its stops on <eos> and (R > 1) its accuracy
            fit = self.fit
            if base_dir and resolve_trace(fit, base_dir) != resolve_trace(fit):
                fit = str(resolve_trace(fit, base_dir))
            parts = [f"fit={fit}", f"len={self.out_len}", f"seqs={self.seqs}", f"seed={self.seed}"]
            return ",".join(parts + ([f"src={self.src_len}"] if self.src_len else []) +
                            ([f"burst={self.burst:g}"] if self.burst is not None else []))
        if repeats == 1:
            acc = "mispredict=0"
        elif self.agree:
            acc = f"agree={self.agree}"
        else:
            acc = f"mispredict={self.mispredict or 0.0:g}"
        parts = [acc, f"len={self.out_len}", f"seqs={self.seqs}", f"src={self.src_len or DEFAULT_SRC_LEN}",
                 f"seed={self.seed}"]
        if self.burst is not None:
            parts.append(f"burst={self.burst:g}")
        return ",".join(parts)


KNOWN_AXES = tuple(RunParams.model_fields) + SHARING_AXES
_SYNTHETIC_FIELDS = ("fit", "mispredict", "agree", "burst", "out_len", "seqs", "seed")
_NUMBER_FIELDS = ("limit", "mispredict", "burst", "out_len", "src_len", "seqs", "seed", "launch_exit", "max_in_flight")


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
    base_dir: str = Field("", exclude=True, description="directory of the spec file (set by load_spec)")

    def all_blocks(self) -> list[Block]:
        top = [Block(label="", axes=self.axes, runs=self.runs)] if (self.axes or self.runs) else []
        return top + list(self.blocks)


# ------------------------------------------------------------------------------ loading

def load_spec(path: Path | str) -> SweepSpec:
    """Read a spec YAML; `UserError` naming the file and key on anything malformed."""
    path = Path(path)
    data = read_mapping(path, "sweep spec")
    data.setdefault("name", path.stem.split(".")[0])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise UserError(f"key '{loc}': {msg}", where=str(path)) from None
    return spec.model_copy(update={"base_dir": str(path.parent)})


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
    for name in list(base) + list(block.axes):
        if name not in KNOWN_AXES and name != "label":
            raise UserError(f"unknown axis '{name}' (known: {', '.join(KNOWN_AXES)})", where=bwhere)
    for name, values in block.axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"axis '{name}' is empty: the product has no runs", where=bwhere)
    if not block.axes and not block.runs:
        raise UserError("block has neither axes nor runs", where=bwhere)
    combos: list[dict[str, Any]] = []
    if block.axes:
        names = list(block.axes)
        for combo in itertools.product(*(block.axes[n] for n in names)):
            combos.append({**base, **dict(zip(names, combo, strict=True))})
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

@lru_cache(maxsize=64)
def trace_sequences(path: str) -> tuple[tuple[str, int, int], ...]:
    """(seq_id, R, generated positions) of each sequence of a trace file, in order.

    The whole file is read and validated, so a bad line or a sequence with another R anywhere in it
    fails the plan, not a run (a shipped trace, 200 sequences, reads in a few milliseconds).
    """
    return tuple((t.seq_id, t.repeats, len(t.exits)) for t in iter_traces(path))


def _line_of(path: Path, index: int) -> int:
    """Line number of the `index`-th sequence of a trace file (blank lines hold none, as `iter_traces` reads)."""
    from speedsim.trace.io import open_trace_text  # only to name the line of a sequence already found bad

    with open_trace_text(path) as fh:
        return next(itertools.islice((n for n, line in enumerate(fh, 1) if line.strip()), index, None))


def _check_trace(path: Path, run: RunParams) -> None:
    """Refuse a trace whose simulated sequences (the first `limit`) a run would refuse: another R than the
    run's sharing (any sequence, naming its line), or nothing to decode after the prefill."""
    if not path.exists():
        raise UserError(f"no trace file {path}")
    seqs = trace_sequences(str(path))[: run.limit]
    if not seqs:
        raise UserError(f"{path}: trace file has no sequences")
    repeats = Sharing.parse(run.sharing).repeats
    for i, (seq_id, r, _) in enumerate(seqs):
        if r != repeats:
            raise UserError(f"{path}:{_line_of(path, i)}: sequence '{seq_id}' has R={r} exits but sharing is "
                            f"{run.sharing}")
    if all(n <= 1 for _, _, n in seqs):  # found at run time otherwise
        raise UserError(f"{path}: every sequence{f' of the first {run.limit}' if run.limit else ''} "
                        "has at most one token: nothing is decoded after the prefill")


def check_runs(spec: SweepSpec, runs: list[RunParams], where: str = "spec") -> None:
    """Raise `UserError` (naming the key) for anything that would make a run fail on bad input."""

    models = spec_models(spec)
    seen: set[tuple] = set()
    for run in runs:
        checks = (("profile", run.profile), ("model", run.model), ("sharing", run.sharing),
                  ("trace", run.trace),
                  ("synthetic", run.synthetic(_repeats(run.sharing), spec.base_dir) if run.trace is None else None),
                  ("launch_exit", f"{run.launch_exit}/{run.max_in_flight}"))
        for key, value in checks:
            seen_key = (key, value, run.sharing, run.limit if key == "trace" else None)
            if value is None or seen_key in seen:
                continue
            seen.add(seen_key)
            try:
                if key == "profile":
                    load_profile(value)
                elif key == "model":
                    get_model(value, models)
                elif key == "sharing":
                    Sharing.parse(value)
                elif key == "trace":
                    _check_trace(resolve_trace(value, spec.base_dir), run)
                elif key == "synthetic":
                    parse_decodable(value, Sharing.parse(run.sharing).repeats)
                else:
                    Policy(launch_exit=run.launch_exit, max_in_flight=run.max_in_flight).check(_repeats(run.sharing))
            except UserError as err:
                if key == "synthetic" and err.where not in (None, "--synthetic"):  # the fitted trace file
                    key, msg = "fit", str(err)
                elif key == "trace":  # the message names the trace file (and line): keep it
                    msg = str(err)
                else:
                    msg = str(err).split(": ", 1)[-1] if err.where else str(err)
                raise UserError(f"key '{key}': {msg}", where=where) from None


def _repeats(sharing: str) -> int:

    try:
        return Sharing.parse(sharing).repeats
    except UserError:
        return 1  # reported by the sharing check


def spec_models(spec: SweepSpec) -> dict:
    """Built-in models plus the spec's `model_specs` files (paths relative to the spec)."""
    base = Path(spec.base_dir or ".")
    return resolve_models([p if Path(p).is_absolute() else base / p for p in map(Path, spec.model_specs)])


def plan(spec: SweepSpec, where: str = "spec") -> list[RunParams]:
    """Expand and check a spec: the runs, or a `UserError` before any of them starts."""
    runs = expand(spec, where)
    check_runs(spec, runs, where)
    return runs
