"""The typed run model: one run's profile, model, sharing, workload, mode, policy and serving parameters.

`RunParams` is what `speedsim simulate`, `speedsim serve`, a sweep's run and the report's studies
all build; its fields are the only sweep axes, each declared once, with its default from
`speedsim.defaults`. A run with `requests` set is a serving run (`speedsim serve`); any other is
one decode of SPEED and its baselines (`speedsim simulate`).

The workload is an exit trace (`trace`, optionally its first `limit` sequences) or synthetic
traces (`mispredict`, `agree` or `fit`, with `out_len`, `src_len`, `seqs`, `burst`, `seed`):
`workload()` gives it typed (`TraceWorkload` or `SyntheticWorkload`); no text goes between.

`overrides` are what-ifs on the profile (`--set PATH=VALUE`, a sweep's `set.PATH` keys): (PATH, VALUE as
given) pairs that `speedsim.simulate.scenario.cached_whatif` applies where the profile is loaded.

A run's key is 16 hex digits of a hash of its canonical JSON. Fields added after sweeps were
first journalled (`LATER_FIELDS`) are left out of it while at their defaults, so an old sweep
directory keeps its keys (`tests/test_sweep.py` checks keys computed before).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from speedsim import defaults, limits
from speedsim.dtypes import KvDtype, WeightDtype
from speedsim.errors import UserError
from speedsim.sharing import MAX_REPEATS
from speedsim.trace.io import resolve_trace
from speedsim.trace.schema import MAX_TOKEN_ID
from speedsim.trace.workload import SyntheticWorkload

Method = Literal["speed", "sequential", "unshared"]  # defaults.METHODS


@dataclass(frozen=True)
class TraceWorkload:
    """A recorded exit trace (a file), optionally its first `limit` sequences, at its own source lengths
    or at `src_len`."""

    path: Path
    limit: int | None = None
    src_len: int | None = None


class RunParams(BaseModel):
    """The parameters of one run; its key is a hash of them (the label included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field("", description="tag of the spec block that produced the run")
    profile: str = Field(description="hardware profile name (hw_profiles/NAME.yaml) or YAML path")
    model: str = Field(defaults.MODEL, description="model dimensions: built-in name or a spec's model_specs entry")
    sharing: str = Field(description="UxR: U distinct layers applied R times")
    mode: Literal["graph", "eager"] = defaults.MODE
    trace: str | None = Field(None, description="exit trace: shipped name (experiments/traces/NAME.jsonl.gz) "
                              "or a path; None = synthetic traces")
    limit: int | None = Field(None, ge=1, le=MAX_TOKEN_ID, description="simulate only the first N sequences of the trace")
    fit: str | None = Field(None, description="synthetic: traces fitted to this exit trace (shipped name or path; "
                            "`--synthetic fit=`), at out_len tokens")
    mispredict: float | None = Field(None, ge=0, le=1, description="synthetic: first-exit misprediction rate")
    agree: str | None = Field(None, description="synthetic: per-exit agreement with the final exit, 'a0/a1/..'")
    burst: float | None = Field(None, ge=0, le=1, description="synthetic: P(miss | previous position missed)")
    out_len: int | None = Field(defaults.OUT_LEN, ge=1, le=limits.MAX_SYNTHETIC_LEN,
                                description="synthetic: output length in tokens (None with fit: the trace's own)")
    src_len: int | None = Field(None, ge=1, le=MAX_TOKEN_ID, description="source length in tokens (synthetic default "
                                f"{defaults.SRC_LEN}; with a trace: overrides each sequence's own)")
    seqs: int | None = Field(defaults.SEQS, ge=1, le=limits.MAX_SYNTHETIC_SEQS,
                             description="synthetic: number of sequences (None with fit: one per real one)")
    seed: int = Field(defaults.SEED, ge=0, le=2**63 - 1, description="synthetic: seed of the trace generator")
    baselines: tuple[Literal["unshared", "sequential"], ...] = defaults.BASELINES
    launch_exit: int = Field(defaults.LAUNCH_EXIT, ge=0, lt=MAX_REPEATS,
                             description="exit whose prediction launches the next token")
    max_in_flight: int | None = Field(None, ge=1, le=MAX_REPEATS, description="most tokens in flight (default R)")
    bounds: Annotated[bool, Strict()] = Field(False, description="also simulate the profile's ranges at both ends "
                                              "(per_token_us_low/high; three simulations per run)")
    # ---- fields added later (left out of the key while at their defaults)
    device_control: Annotated[bool, Strict()] = Field(False, description="what-if: the controller runs on the device "
                                                      "(no host round trip per step)")
    requests: int | None = Field(None, description="serving: number of requests (set: a serving run)")
    serve_method: Method | Literal["selfspec", "specdec"] = Field(defaults.METHOD, description="serving: the decoding "
                                                                  "method served")
    arrivals: str | None = Field(None, description="serving: poisson:RATE_PER_S or trace:FILE")
    max_batch: int = Field(defaults.MAX_BATCH, description="serving: most requests decoding at once")
    kv_capacity_GB: float | None = Field(None, description="serving: KV memory (default: device memory less weights)")
    prefill: Literal["chunked", "stream"] = Field(defaults.PREFILL, description="serving: how prefills run")
    prefill_budget: int = Field(defaults.PREFILL_BUDGET, description="serving, chunked: source tokens prefilled "
                                "per step (at least one request)")
    serve_seed: int = Field(defaults.SEED, description="serving: seed of the arrivals and of the requests' trace "
                            "sampling (synthetic traces add it to their own seed)")
    overrides: tuple[tuple[str, str], ...] = Field((), description="what-if: profile parameters set by their "
                                                   "dotted paths, (PATH, VALUE as given: a number or xF) in the "
                                                   "order given (`--set PATH=VALUE`; a sweep's `set.PATH` keys)")
    methods: tuple[Literal["selfspec", "specdec"], ...] = Field((), description="speculative decoding beside SPEED "
                                                                "and its baselines: selfspec, specdec")
    draft_exit: int = Field(0, ge=0, lt=MAX_REPEATS, description="selfspec: the exit the drafts come from")
    gamma: int | Literal["auto"] = Field("auto", description="speculative: draft tokens per iteration (auto: the "
                                         "window with the least time per token)")
    draft_model: str | None = Field(None, description="specdec: the draft model's dimensions (default: the run's model)")
    draft_depth: int | None = Field(None, ge=1, le=MAX_REPEATS, description="specdec: the draft model's decoder layers")
    draft_trace: str | None = Field(None, description="specdec: the draft's predictions on the target's path "
                                    "(an exit trace, shipped name or path)")
    draft_accept: float | None = Field(None, description="specdec without a draft trace: i.i.d. acceptance alpha")
    draft_fit: str | None = Field(None, description="specdec: acceptance from a two-state model fitted to this draft "
                                  "trace (runs of accepted drafts as long as its)")
    weight_dtype: WeightDtype | None = Field(None, description="how the decoder layers' weights are stored: bf16, "
                                             "fp16, fp8, int8, int4 (weight-only quantisation; default: the model "
                                             "spec's, else the profile's dtype)")
    kv_dtype: KvDtype | None = Field(None, description="how the KV cache is stored: bf16, fp16, fp8, int8 (default: "
                                     "the model spec's, else the profile's dtype)")
    weight_group: int | None = Field(None, description="int8/int4 weights: input elements per scale (default: int4 "
                                     "128, int8 per output channel)")
    tp: int = Field(1, description="tensor parallelism: devices each holding a slice of every layer (Megatron-style; "
                    "the profile's interconnect joins them)")
    pp: int = Field(1, description="pipeline parallelism: stages, each on a device of its own")
    pp_over: Literal["layers", "repeats"] = Field("layers", description="what the pipeline stages split: the layers "
                                                  "(contiguous stages) or, for SPEED, the repeats (each device all U "
                                                  "shared layers and the in-flight token of its own repeat)")

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data: Any) -> Any:
        # YAML's `true` would pass as the number 1 (pydantic's lax mode): a number axis takes numbers only
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, bool) and key in NUMBER_FIELDS:
                    raise ValueError(f"{key}: {value!r} is not a number")
        return data

    @field_validator("overrides", mode="before")
    @classmethod
    def _settings(cls, value: Any) -> Any:
        """(PATH, VALUE) pairs from a mapping or pairs, in the order given; a number is kept as its text (the
        value as given; a path given twice keeps both: the profile's check refuses two different values)."""
        pairs = list(value.items()) if isinstance(value, dict) else value
        if not isinstance(pairs, list | tuple):
            raise ValueError(f"a mapping of parameter paths to values, got {type(value).__name__}")
        out = []
        for pair in pairs:
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str):
                raise ValueError(f"{pair!r} is not a (PATH, VALUE) pair")
            path, raw = pair[0].strip(), pair[1]
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise ValueError(f"{path}: {raw!r} is not a number or xF")
            text = raw.strip() if isinstance(raw, str) else repr(raw)
            if not path or not text:
                raise ValueError(f"'{path}={text}' is not PATH=VALUE")
            out.append((path, text))
        return tuple(out)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value  # a sweep axis of methods gives one at a time

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, value: int | str) -> int | str:
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                                or not 1 <= value <= limits.MAX_GAMMA):
            raise ValueError(f"must be auto or a window of 1 to {limits.MAX_GAMMA} draft tokens, got {value!r}")
        return value

    @field_validator("draft_accept")
    @classmethod
    def _alpha(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:  # (also refuses nan)
            raise ValueError(f"must be an acceptance probability in [0, 1), got {value}")
        return value

    @field_validator("profile", "model", "sharing", "trace", "fit", "agree", "arrivals", "draft_model", "draft_trace",
                     "draft_fit")
    @classmethod
    def _text(cls, value: str | None, info: Any) -> str | None:
        # an empty `fit` or `agree` would silently mean a perfect model, an empty `trace` synthetic traces
        if value is not None and not value.strip():
            raise ValueError(f"{info.field_name} is empty")
        return value

    @field_validator("weight_group")
    @classmethod
    def _group(cls, value: int | None) -> int | None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= limits.MAX_FFN):
            raise ValueError(f"must be a whole number of input elements per scale, 1 to {limits.MAX_FFN}, got {value!r}")
        return value

    @field_validator("tp", "pp")
    @classmethod
    def _devices(cls, value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.MAX_DEVICES:
            raise ValueError(f"must be a whole number of devices from 1 to {limits.MAX_DEVICES}, got {value!r}")
        return value

    @field_validator("requests", "max_batch", "prefill_budget", "serve_seed")
    @classmethod
    def _count(cls, value: int | None, info: Any) -> int | None:
        lo, hi = _COUNT_RANGES[info.field_name]
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"must be in {lo}..{hi}, got {value}" if hi < _INT64_MAX else
                             f"must be an integer from {lo} to 2**63 - 1, got {value}")
        return value

    @field_validator("kv_capacity_GB")
    @classmethod
    def _kv(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and 0 < value <= limits.MAX_KV_GB):
            raise ValueError(f"must be a number in (0, {limits.MAX_KV_GB:g}] GB, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunParams:
        """Fields that go together. Each message starts with the field it is about (`run_from_options`
        names that field's flag); a field that would be silently ignored is refused."""
        given = [k for k in ("fit", "agree", "mispredict") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give one of fit, agree and mispredict, not {' and '.join(given)}")
        # (against the defaults, not the fields given: a run is also rebuilt from its full dump)
        synthetic = [k for k in SYNTHETIC_FIELDS if not self._default(k)]
        if self.trace is not None and synthetic:
            raise ValueError(f"{synthetic[0]}: a run with a trace takes no synthetic parameters (got "
                             f"{', '.join(synthetic)})")
        if self.trace is None and self.limit is not None:
            raise ValueError("limit: applies to a trace's sequences; a synthetic run sets seqs")
        if self.fit is None and (self.out_len is None or self.seqs is None):
            raise ValueError(f"{'out_len' if self.out_len is None else 'seqs'}: a number (None only with fit: the "
                             "fitted trace's own)")
        spec_fields = [k for k in ("draft_exit", "gamma", "draft_model", "draft_depth", "draft_trace", "draft_accept",
                                   "draft_fit") if not self._default(k)]
        speculative = set(self.methods) | ({self.serve_method} & {"selfspec", "specdec"})
        if spec_fields and not speculative:
            raise ValueError(f"{spec_fields[0]}: applies to speculative decoding (--method selfspec or specdec)")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: {', '.join(self.methods)} names a method twice")
        if "specdec" in speculative:
            if self.draft_depth is None:
                raise ValueError("draft_depth: specdec needs the draft model's depth")
            given = [k for k in ("draft_trace", "draft_accept", "draft_fit") if not self._default(k)]
            if len(given) != 1:
                raise ValueError("draft_accept: specdec needs the draft's acceptance, one of a draft trace, an i.i.d. "
                                 f"rate and a fitted model (got {', '.join(given) or 'none'})")
        else:
            extra = [k for k in ("draft_model", "draft_depth", "draft_trace", "draft_accept", "draft_fit")
                     if not self._default(k)]
            if extra:
                raise ValueError(f"{extra[0]}: applies to --method specdec")
        if speculative and self.pp > 1:
            raise ValueError("pp: pipeline parallelism is not modelled for speculative decoding (selfspec, specdec)")
        if self.pp_over == "repeats" and self.pp == 1:
            raise ValueError("pp_over: repeats needs the pipeline's devices: pp R (one per repeat)")
        if "selfspec" not in speculative and not self._default("draft_exit"):
            raise ValueError("draft_exit: applies to --method selfspec")
        if self.serving:
            if self.arrivals is None:
                raise ValueError("arrivals: a serving run needs them (poisson:RATE_PER_S, trace:FILE or load:F)")
            unused = [k for k in DECODE_FIELDS if not self._default(k)]
            if unused:
                raise ValueError(f"{unused[0]}: a serving run takes no {', '.join(unused)} (decode-only)")
        else:
            unused = [k for k in SERVING_FIELDS if not self._default(k)]
            if unused:
                raise ValueError(f"{unused[0]}: a decode run takes no {', '.join(unused)} (serving only: set "
                                 "requests for a serving run)")
        return self

    def _default(self, field: str) -> bool:
        return bool(getattr(self, field) == RunParams.model_fields[field].default)

    @property
    def serving(self) -> bool:
        """A serving run (many requests), not one decode."""
        return self.requests is not None

    def canonical(self) -> dict[str, Any]:
        """The run as JSON values: every field, less the later ones at their defaults (`LATER_FIELDS`).
        What its key hashes and what a sweep's table shows of it."""
        dump = self.model_dump(mode="json")
        return {k: v for k, v in dump.items() if k not in LATER_FIELDS or not self._default(k)}

    @property
    def key(self) -> str:
        """Stable identity of the run: 16 hex digits of a hash of its canonical JSON."""
        canon = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def workload(self, repeats: int, base_dir: str | Path = "") -> TraceWorkload | SyntheticWorkload:
        """The run's workload, typed, for a model with `repeats` exits; relative paths (`trace`, `fit`)
        are resolved against `base_dir` (a spec's directory) first.

        Synthetic: with R = 1 there is no early exit, so nothing can be mispredicted (`perfect`)."""
        if self.trace is not None:
            return TraceWorkload(resolve_trace(self.trace, base_dir), self.limit, self.src_len)
        if self.fit is not None:
            fit = self.fit
            if base_dir and resolve_trace(fit, base_dir) != resolve_trace(fit):
                fit = str(resolve_trace(fit, base_dir))
            return SyntheticWorkload(fit=fit, out_len=self.out_len, seqs=self.seqs, seed=self.seed,
                                     src_len=self.src_len, burst=self.burst)
        if repeats == 1:
            accuracy: dict[str, Any] = {"mispredict": 0.0}
        elif self.agree is not None:
            accuracy = {"agree": self.agree}
        else:
            accuracy = {"mispredict": self.mispredict or 0.0}
        return SyntheticWorkload(**accuracy, out_len=self.out_len, seqs=self.seqs,
                                 src_len=self.src_len or defaults.SRC_LEN, seed=self.seed, burst=self.burst)

    def workload_label(self, repeats: int) -> str:
        """How tables show the workload: `trace:NAME` or `synthetic:TEXT`."""
        if self.trace is not None:
            return f"trace:{self.trace}"
        workload = self.workload(repeats)
        assert isinstance(workload, SyntheticWorkload)
        return f"synthetic:{workload.text}"


# the serving counts' ranges (their messages name the flag: `run_from_options`); a count without a bound of
# its own is a 64-bit integer, as a sweep's table (Parquet) stores it and its journal reads it back
_INT64_MAX = 2**63 - 1
_COUNT_RANGES = {"requests": (1, limits.MAX_REQUESTS), "max_batch": (1, limits.MAX_BATCH_LIMIT),
                 "prefill_budget": (1, _INT64_MAX), "serve_seed": (0, _INT64_MAX)}
SYNTHETIC_FIELDS = ("fit", "mispredict", "agree", "burst", "out_len", "seqs", "seed")
NUMBER_FIELDS = ("tp", "pp", "weight_group", "limit", "mispredict", "burst", "out_len", "src_len", "seqs", "seed", "launch_exit", "max_in_flight",
                 "requests", "max_batch", "kv_capacity_GB", "prefill_budget", "serve_seed", "draft_exit", "gamma",
                 "draft_depth", "draft_accept")
LATER_FIELDS = frozenset({"fit", "device_control", "requests", "serve_method", "arrivals", "max_batch", "kv_capacity_GB",
                          "prefill", "prefill_budget", "serve_seed", "overrides", "methods", "draft_exit", "gamma",
                          "draft_model", "draft_depth", "draft_trace", "draft_accept", "draft_fit", "weight_dtype",
                          "kv_dtype", "weight_group", "tp", "pp", "pp_over"})
# what only a serving run (requests set) or only a decode run takes
SERVING_FIELDS = ("serve_method", "arrivals", "max_batch", "kv_capacity_GB", "prefill", "prefill_budget", "serve_seed")
DECODE_FIELDS = ("baselines", "bounds", "device_control", "methods")  # (speculative serving: not yet)
# the parameter columns every sweep table has, in order (later fields join a table where a run sets them)
TABLE_FIELDS = tuple(f for f in RunParams.model_fields if f not in LATER_FIELDS or f == "fit")


# the command-line flag of each field whose name it does not follow (`--` + the field with dashes)
_FLAGS = {"trace": "--trace/--synthetic", "fit": "--synthetic", "mispredict": "--synthetic", "agree": "--synthetic",
          "burst": "--synthetic", "out_len": "--synthetic", "seqs": "--synthetic", "seed": "--synthetic",
          "kv_capacity_GB": "--kv-capacity-GB", "serve_seed": "--seed", "baselines": "--baseline",
          "serve_method": "--method", "overrides": "--set", "methods": "--method"}


def flag_of(field: str) -> str:
    """The command-line flag that sets `field`."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def run_from_options(**values: Any) -> RunParams:
    """A `RunParams` from the command line's values; a `UserError` naming the flag of the first bad one
    (a field's own check, or a check across fields whose message starts with the field it is about)."""
    try:
        return RunParams.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        field = str(first["loc"][0]) if first["loc"] else ""
        head, _, rest = msg.partition(": ")
        if not field and head in RunParams.model_fields:
            field, msg = head, rest
        raise UserError(msg, where=flag_of(field) if field else "options") from None
