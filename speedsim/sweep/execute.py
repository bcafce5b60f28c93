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
from speedsim.simulate import build_scenario, run_scenario
from speedsim.simulate.result import SPECULATION_COLUMNS
from speedsim.simulate.scenario import cached_whatif
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


def execute(params: dict[str, Any], model_specs: tuple[str, ...] = (), base_dir: str = "") -> list[dict[str, Any]]:
    """Simulate one run; its rows (speed first, then each baseline), or one error row on bad input. A run with
    what-ifs (`overrides`) has a `set.PATH` column per parameter it sets (the value as given) and, when it
    ran, a `value.PATH` column (the value the parameter got)."""
    run = RunParams.model_validate(params)
    head = {"run_key": run.key, **run.canonical()}
    head.pop("overrides", None)  # (a nested list: its columns are `set.PATH`)
    head.update(whatif_columns(run))
    head["baselines"] = ",".join(run.baselines)
    if run.methods:
        head["methods"] = ",".join(run.methods)
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
    common = {**head, "status": "ok", "error": "", **quality_of(run.trace or run.fit)}
    return [{k: v for k, v in {**common, **row}.items() if k in KEEP or k.startswith(_OWN_PREFIXES)} for row in rows]
