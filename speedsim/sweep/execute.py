"""One run of a sweep: `RunParams` in, tidy result rows out (one per method: speed and each baseline).

Runs in worker processes (or Dask workers); the inputs are loaded through the per-process
caches of `speedsim.simulate.scenario`. A run that fails on bad input (a `UserError`) returns
one row with `status = "error"` and the message; any other exception is a bug and propagates,
with the run's parameters attached, so the sweep stops instead of recording it as data.

The message names what the run was given in the spec: a run's field, not the command-line flag
that sets it in `speedsim simulate` (`--model: ... needs 48 GiB` is `field 'model': ...` in a sweep).
"""

from __future__ import annotations

import json
import math
from typing import Any

from speedsim.errors import UserError
from speedsim.paths import MODEL_RESULTS_DIR
from speedsim.run import RunParams
from speedsim.run.params import LATER_FIELDS, SYNTHETIC_FIELDS, TABLE_FIELDS, flag_of
from speedsim.serve import serve
from speedsim.serve.metrics import SERVING_METRICS
from speedsim.sharing import Sharing
from speedsim.simulate import run_scenario
from speedsim.simulate.result import SPECULATION_COLUMNS
from speedsim.simulate.scenario import build_scenario, cached_whatif
from speedsim.simulate.schema import QUALITY, columns

COLUMNS = columns(list(TABLE_FIELDS))
# result fields outside the table's schema stay in the JSON only; later run fields join where a run sets them
KEEP = frozenset(COLUMNS) | LATER_FIELDS | frozenset(SERVING_METRICS) | frozenset(SPECULATION_COLUMNS.values())


class RunFailed(RuntimeError):
    """A bug (not bad input) in one run; carries the run's parameters."""


def quality_of(trace: str | None) -> dict[str, float]:
    """Measured quality of the trained model that produced a shipped trace (NaN when not shipped).

    Read from experiments/models/results/NAME.train.json (validation loss in nats/token, ROUGE-L)
    and NAME.trace.json (test ROUGE-L of the traced decodes).
    """
    out = dict.fromkeys(QUALITY, math.nan)
    if not trace or "/" in trace:
        return out
    results = MODEL_RESULTS_DIR
    try:
        train = json.loads((results / f"{trace}.train.json").read_text())
        out["val_loss"] = float(train["val_loss"])
        out["val_loss_first_exit"] = float(train["val_loss_per_exit"][0])
        if train.get("val_rougeL") is not None:
            out["val_rougeL"] = float(train["val_rougeL"])
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        pass
    try:
        out["test_rougeL"] = float(json.loads((results / f"{trace}.trace.json").read_text())["rougeL"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    return out


# the run's field(s) each command-line flag sets; the workload's flags are named by the run (`_field_of`)
_FIELDS_OF_FLAG: dict[str, list[str]] = {}
for _field in RunParams.model_fields:
    _FIELDS_OF_FLAG.setdefault(flag_of(_field), []).append(_field)
_FIELDS_OF_FLAG["--model-spec"] = ["model_specs"]
_WORKLOAD_FLAGS = ("--trace", "--synthetic", "--trace/--synthetic")


def _field_of(flag: str, run: RunParams) -> str | None:
    """How a message about `run` names what `flag` stands for in a sweep: `field 'model'`, or None if
    `flag` is no run flag (the message names a file or a row: kept)."""
    if flag in _WORKLOAD_FLAGS:
        return "field 'trace'" if run.trace is not None else f"fields '{'/'.join(SYNTHETIC_FIELDS)}'"
    if flag == flag_of("overrides"):  # a what-if: the spec's `set.PATH` keys
        keys = "/".join(dict.fromkeys(f"set.{path}" for path, _ in run.overrides))
        return f"field{'s' if len(run.overrides) > 1 else ''} '{keys}'"
    fields = _FIELDS_OF_FLAG.get(flag)
    return f"field '{'/'.join(fields)}'" if fields else None


def run_error(err: UserError, run: RunParams) -> str:
    """The error column of a run that failed on bad input: the message, naming the run's field where it
    names the command-line flag of the field."""
    field = _field_of(err.where, run) if err.where else None
    if field is None:
        return f"{type(err).__name__}: {err}"
    return f"{type(err).__name__}: {field}: {str(err)[len(err.where or '') + 2:]}"


def _simulate(run: RunParams, model_specs: tuple[str, ...], base_dir: str) -> list[dict[str, Any]]:
    """The run's rows: one per method of a decode (SPEED first), or the one row of a serving run."""
    if run.serving:
        return [serve(run, model_specs=model_specs, base_dir=base_dir).to_row()]
    return run_scenario(build_scenario(run, base_dir, model_specs)).to_rows()


SET_COLUMN = "set."      # `set.PATH`: a what-if's value as the spec gave it (a number or xF), as text
VALUE_COLUMN = "value."  # `value.PATH`: the value the parameter got (the profile's value x F for xF)
_OWN_PREFIXES = (SET_COLUMN, VALUE_COLUMN)


def whatif_columns(run: RunParams) -> dict[str, Any]:
    """A run's what-ifs as columns of its rows: `set.PATH`, the value as given (text), per parameter set."""
    return {f"{SET_COLUMN}{path}": value for path, value in run.overrides}


def whatif_values(run: RunParams) -> dict[str, float]:
    """`value.PATH`: the absolute value each what-if gave its parameter (read from the run's profile, which its
    simulation loaded and cached: nothing is loaded again)."""
    if not run.overrides:
        return {}
    _, overrides = cached_whatif(run.profile, run.overrides)
    return {f"{VALUE_COLUMN}{o.path}": o.value for o in overrides}


def _head(run: RunParams) -> dict[str, Any]:
    """The columns of a run's rows that its parameters give."""
    head = {"run_key": run.key, **run.canonical()}
    head.pop("overrides", None)  # (a nested list: its columns are `set.PATH`)
    head.update(whatif_columns(run))
    head["baselines"] = ",".join(run.baselines)
    if run.methods:
        head["methods"] = ",".join(run.methods)
    return head


def _rows(head: dict[str, Any], run: RunParams, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's rows: its simulated `rows` (one per method) under its `head`, the columns a sweep keeps."""
    common = {**head, "status": "ok", "error": "", **quality_of(run.trace or run.fit)}
    return [{k: v for k, v in {**common, **row}.items() if k in KEEP or k.startswith(_OWN_PREFIXES)} for row in rows]


def execute(params: dict[str, Any], model_specs: tuple[str, ...] = (), base_dir: str = "") -> list[dict[str, Any]]:
    """Simulate one run; its rows (speed first, then each baseline), or one error row on bad input. A run with
    what-ifs (`overrides`) has a `set.PATH` column per parameter it sets (the value as given) and, when it
    ran, a `value.PATH` column (the value the parameter got)."""
    run = RunParams.model_validate(params)
    head = _head(run)
    try:
        sharing = Sharing.parse(run.sharing)
        head.update(U=sharing.unique, R=sharing.repeats, depth=sharing.depth,
                    workload=run.workload_label(sharing.repeats))
        rows = _simulate(run, model_specs, base_dir)
        head.update(whatif_values(run))
    except UserError as err:
        return [{**head, "method": "", "status": "error", "error": run_error(err, run)}]
    except Exception as err:  # anything else is a bug: re-raised (not recorded) naming the run that hit it
        raise RunFailed(f"run {run.key} ({json.dumps(run.model_dump(mode='json'), sort_keys=True)}) "
                        f"failed: {type(err).__name__}: {err}") from err
    return _rows(head, run, rows)


# ---------------------------------------------------------------------------------- hardware grids

BATCH_MAX = 4096  # runs in one batch (`execute_batch`): what an interrupt can lose, and the memory it takes


def batchable(run: RunParams) -> bool:
    """Whether `run` goes through `execute_batch`: one decode (not a serving run) of SPEED and its baselines,
    without `bounds`, with what-ifs set on its profile (`set.PATH`: the runs of a hardware grid)."""
    return bool(run.overrides) and not run.serving and not run.bounds and not run.methods


def batch_key(run: RunParams) -> str:
    """What the runs of one batch share: every parameter but the what-ifs."""
    canon = run.canonical()
    canon.pop("overrides", None)
    return json.dumps(canon, sort_keys=True, separators=(",", ":"))


def execute_batch(batch: list[dict[str, Any]], model_specs: tuple[str, ...] = (), base_dir: str = "",
                  workers: int = 1) -> list[list[dict[str, Any]]]:
    """The rows of runs that differ only in their what-ifs (`batchable`, one `batch_key`), in order: each run's
    rows as `execute` gives them, every figure to float rounding (|relative difference| below 1e-11 where
    checked, 9e-12 the largest: gemmini, dec1b, the whole 4x3 trace; the sums are taken in another order), through the design-space grid (`speedsim.design.grid`), which simulates each
    on-chip configuration's programs once and times every point at once. A run the grid cannot take (a
    what-if refused, a model that does not fit the point, an input refused for every point) goes through
    `execute`, which gives its error row. `workers` > 1: the grid's passes run in that many processes."""
    from speedsim.design.grid import Workload, check_point, grid_of, point_overrides, point_profile
    from speedsim.engine import CostModel
    from speedsim.hardware.files import SET_FLAG
    from speedsim.run import check_decodable

    runs = [RunParams.model_validate(p) for p in batch]
    if len({batch_key(r) for r in runs}) != 1 or not all(batchable(r) for r in runs):
        raise ValueError("execute_batch takes batchable runs that differ only in their what-ifs")
    first = runs[0]
    try:
        base = build_scenario(first.model_copy(update={"overrides": ()}), base_dir, model_specs)
        check_decodable([len(t.exits) for t in base.traces])
    except UserError:  # (so each run's own: a what-if can make an input valid, the devices of a deployment say)
        return [execute(p, model_specs, base_dir) for p in batch]
    r = base.run
    work = Workload(base.spec, base.sharing, base.traces, r.mode, r.baselines, base.policy, base.src_len,
                    r.device_control)
    data = base.profile.model_dump()
    cache: dict[str, Any] = {}
    resolved: dict = {}  # each distinct (path, value) of the batch resolved once
    good: list[int] = []
    profiles, overrides, memory = [], [], []
    for i, run in enumerate(runs):
        try:
            made = point_overrides(base.profile, [dict(run.overrides)], SET_FLAG, resolved)[0]
            profile = point_profile(base.profile, made, SET_FLAG, data)
            CostModel.from_profile(profile, where=SET_FLAG)
            need = check_point(profile, work, cache)
        except UserError:
            continue  # `execute` gives its error row
        good.append(i)
        profiles.append(profile)
        overrides.append(made)
        memory.append(need)
    out: list[list[dict[str, Any]] | None] = [None] * len(runs)
    if good:
        try:
            grid = grid_of(profiles, overrides, memory, work, workers)
        except Exception as err:  # a bug: named with the batch's first run, as `execute` names its run
            raise RunFailed(f"batch of {len(runs)} runs from {first.key} "
                            f"({json.dumps(first.model_dump(mode='json'), sort_keys=True)}) "
                            f"failed: {type(err).__name__}: {err}") from err
        sharing = base.sharing
        for j, i in enumerate(good):
            run = runs[i]
            head = _head(run)
            head.update(U=sharing.unique, R=sharing.repeats, depth=sharing.depth,
                        workload=run.workload_label(sharing.repeats))
            head.update({f"{VALUE_COLUMN}{o.path}": o.value for o in overrides[j]})
            out[i] = _rows(head, run, grid.result(j).to_rows())
    return [rows if rows is not None else execute(p, model_specs, base_dir)
            for rows, p in zip(out, batch, strict=True)]
