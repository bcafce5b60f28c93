"""`measure()`: run the chosen parts on one device and write the measured CSVs beside each other."""

from __future__ import annotations

import dataclasses
import gc
import glob
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from speedsim.errors import UserError
from speedsim.fileio import check_output, write_text
from speedsim.limits import parse_number
from speedsim.sharing import Sharing
from speedsim.trace.io import TRACE_FILE
from speedsim.validation.measure import steps
from speedsim.validation.measure.batch import batch_rows
from speedsim.validation.measure.loop import LoopBudget, loop_rows
from speedsim.validation.measure.models import (
    LM_HEADS,
    Decodable,
    from_checkpoint,
    from_config,
    from_spec,
    spec_of,
    variant,
)
from speedsim.validation.measure.ops import op_rows
from speedsim.validation.measure.timing import Budget, TimingLog
from speedsim.validation.schema import MEASURED_CSV
from speedsim.workload.models import resolve_models
from speedsim.yamlio import yaml_output

PARTS = ("steps", "loop", "batch", "ops")
# the files written beside the CSV: the run's environment and the measured model's spec
ENV_FILE = yaml_output("a measure environment file (YAML)", frozenset({"device", "torch"}))  # in every version
SPEC_FILE = yaml_output("a model spec (YAML)", frozenset({"name", "d_model", "n_heads"}))
DEFAULT_MODEL = "t5base"  # random weights at these dimensions when no checkpoint or config is given
DEFAULT_MAX_NEW_TOKENS = 128  # for random-weight models of a model spec


# Sanity maxima of a measurement plan: beyond them a run allocates hundreds of GB or runs for hours.
LIMITS = {"sequences": 1024, "max_new_tokens": 8192, "batch_sizes": 4096, "batch_ctxs": 131072}
# The flag of each field of a plan (its errors name it).
FLAGS = {"parts": "--parts", "sharings": "--sharings", "lm_heads": "--lm-head", "sequences": "--sequences",
         "max_new_tokens": "--max-new-tokens", "batch_sizes": "--batch-sizes", "batch_ctxs": "--batch-ctx"}


@dataclass(frozen=True)
class MeasurePlan:
    """What to measure. `None` fields take the defaults of a full or a quick (smoke-test) run.

    Every list holds each value once: a repeated sharing, LM head, batch size or context (as written or
    by value: `4x3,04x3`, `1,01`) would write its rows twice and overwrite its own trace, a repeated part
    would send its rows beside an empty `out`; a repeat is a `UserError` naming the flag and the value."""

    parts: tuple[str, ...] = PARTS
    sharings: tuple[Sharing, ...] = (Sharing(12, 1), Sharing(4, 3), Sharing(2, 6))  # loop and batch parts
    lm_heads: tuple[str, ...] = ("untied",)  # random-weight whole decodes (see models.py)
    sequences: int | None = None  # whole decodes per method (default 8; quick 2)
    max_new_tokens: int | None = None  # default: the checkpoint's or config's own, else 128; quick 8
    batch_sizes: tuple[int, ...] | None = None  # default 1..32 in powers of 2; quick 1, 4
    batch_ctxs: tuple[int, ...] | None = None  # mean KV lengths of batch rows: default 128, 512; quick 16
    quick: bool = False

    def __post_init__(self) -> None:
        for name, top in LIMITS.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,) if value is not None else ()
            if any(v > top for v in values):
                raise UserError(f"at most {top} (a measurement, not a stress test), got {max(values)}",
                                where=FLAGS[name])
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise UserError(f"unknown part(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(PARTS)})",
                            where="--parts")
        for name in ("parts", "sharings", "lm_heads", "batch_sizes", "batch_ctxs"):
            _once(getattr(self, name), FLAGS[name])
        defaults = {"sequences": (8, 2), "batch_sizes": ((1, 2, 4, 8, 16, 32), (1, 4)),
                    "batch_ctxs": ((128, 512), (16,))}
        for name, (full, quick) in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, quick if self.quick else full)
        if self.quick and self.max_new_tokens is None:
            object.__setattr__(self, "max_new_tokens", 8)

    @property
    def budget(self) -> Budget:
        return Budget(samples=3, inner=2, warmup=1) if self.quick else Budget()

    def batch_budget(self, device: str) -> Budget:
        """On a shared CPU many short samples: their median shrugs off other work's bursts."""
        return self.budget if self.quick or device == "cuda" else Budget(samples=15, inner=3, warmup=2)

    @property
    def op_budget(self) -> Budget:
        """Single ops take microseconds: many calls per sample."""
        return self.budget if self.quick else Budget(samples=15, inner=20, warmup=5)

    @property
    def loop_budget(self) -> LoopBudget:
        return LoopBudget(passes=1, verify_sequences=1) if self.quick else LoopBudget()


def _once(values: tuple[Any, ...] | None, where: str) -> None:
    """A `UserError` at `where` naming the first value `values` holds more than once."""
    seen: set[Any] = set()
    for value in values or ():
        if value in seen:
            raise UserError(f"{value} is given twice (each value is measured once)", where=where)
        seen.add(value)


def _items(text: str, where: str) -> list[str]:
    items = [x.strip() for x in text.split(",")]
    if not any(items):
        raise UserError("expected a comma-separated list", where=where)
    if not all(items):  # `4x3,,2x6`: a typo, as --synthetic treats it
        raise UserError(f"'{text}' has an empty item", where=where)
    return items


def _ints(text: str, where: str) -> tuple[int, ...]:
    values = tuple(int(parse_number(x, "value", where, integer=True)) for x in _items(text, where))
    if any(v < 1 for v in values):
        raise UserError("every value must be >= 1", where=where)
    return values


def plan_from_options(parts: str | None = None, sharings: str | None = None, lm_heads: str | None = None,
                      sequences: int | None = None, max_new_tokens: int | None = None,
                      batch_sizes: str | None = None, batch_ctxs: str | None = None,
                      quick: bool = False) -> MeasurePlan:
    """A plan from command-line text (comma-separated lists); unset options keep their defaults."""
    given: dict[str, Any] = {"quick": quick, "sequences": sequences, "max_new_tokens": max_new_tokens}
    if parts is not None:
        given["parts"] = tuple(_items(parts, "--parts"))
    if sharings is not None:
        given["sharings"] = tuple(Sharing.parse(x, "--sharings") for x in _items(sharings, "--sharings"))
    if lm_heads is not None:
        heads = tuple(_items(lm_heads, "--lm-head"))
        bad = [h for h in heads if h not in LM_HEADS]
        if bad:
            raise UserError(f"unknown LM head '{bad[0]}' ({' or '.join(LM_HEADS)})", where="--lm-head")
        given["lm_heads"] = heads
    if batch_sizes is not None:
        given["batch_sizes"] = _ints(batch_sizes, "--batch-sizes")
    if batch_ctxs is not None:
        given["batch_ctxs"] = _ints(batch_ctxs, "--batch-ctx")
    return MeasurePlan(**given)


def _base(device: str, dtype: torch.dtype, checkpoint: Path | str | None, config: Path | str | None, model: str,
          model_specs: tuple[Path, ...], plan: MeasurePlan) -> Decodable:
    """The model whose dimensions every part uses (and, when trained or from a config, decodes)."""
    assert plan.sequences is not None
    if checkpoint is not None:
        d = from_checkpoint(checkpoint, device, dtype, plan.sequences)
    elif config is not None:
        d = from_config(config, device, dtype, plan.sequences)
    else:
        specs = resolve_models(model_specs, "--model-spec")
        if model not in specs:
            raise UserError(f"unknown model '{model}' (known: {', '.join(sorted(specs))})", where="--model")
        shared = next((s for s in plan.sharings if s.repeats > 1), plan.sharings[0])
        return from_spec(specs[model], shared, device, dtype, plan.sequences,
                         plan.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, plan.lm_heads[0])
    if plan.max_new_tokens is not None:
        d = dataclasses.replace(d, max_new_tokens=plan.max_new_tokens)
    return d


def _decodables(base: Decodable, trained: bool, spec_model: bool, specs: dict, plan: MeasurePlan, device: str,
                dtype: torch.dtype):
    """The models whose whole decodes are timed, built one at a time."""
    if trained:
        yield base
        return
    assert plan.sequences is not None
    for head in plan.lm_heads if spec_model else (None,):
        for s in plan.sharings:
            if head is None:
                yield dataclasses.replace(base, model=variant(base.model, s))
            else:
                yield from_spec(specs[base.name], s, device, dtype, plan.sequences, base.max_new_tokens, head)


def measure(device: str, out: Path | str, checkpoint: Path | str | None = None, config: Path | str | None = None,
            plan: MeasurePlan | None = None, threads: int | None = None, model: str = DEFAULT_MODEL,
            model_specs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Run the plan's parts; return a summary. Each CSV is rewritten after every section.

    Files: `out` (step and whole-decode rows; without those, the batch rows, or else the op rows),
    `<stem>.batch.csv` and `<stem>.ops.csv` (batch and single-op rows, beside the rows in `out`),
    `<stem>.<model>.yaml` (the model spec), `<stem>.env.yaml`, and one exit-trace file per
    timed whole-decode model. On a CPU PyTorch runs with `threads` intra-op threads (default 1:
    batch-1 decoding gains little from more, and one thread is far less disturbed by other work).
    `out`, `checkpoint` and `config` are user paths: their problems name `--out`, `--checkpoint`
    and `--config` (`speedsim.userpath`).
    """
    plan = plan or MeasurePlan()
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{device}' (cpu or cuda)", where="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device is available here", where="--device")
    if checkpoint is not None and config is not None:
        raise UserError("give --checkpoint or --config, not both", where="--config")
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise UserError(f"must be in 1..{cores} (this machine's cores), got {threads}", where="--threads")
    out = check_output(out, "--out", MEASURED_CSV)
    odd = sorted(set(out.stem) & set(";=,"))
    if odd:  # the rows' `extra` names files beside it as `trace=NAME;...`: the name must read back
        raise UserError(f"the file name may not hold {' or '.join(repr(c) for c in odd)}: the rows' extra column "
                        "names the files written beside it and could not be read back", where="--out")
    # batch and op rows go beside `out`; without steps or whole decodes the first of them goes to `out`
    steps_or_loop = bool({"steps", "loop"} & set(plan.parts))
    beside = {part: out.with_name(f"{out.stem}.{part}.csv") for part in ("batch", "ops")}
    if not steps_or_loop:
        beside[next(p for p in ("batch", "ops") if p in plan.parts)] = out
    # written after the timing: refused before it (a loop's trace is named by its sharing and weights, known
    # once the models are built: every file beside `out` named for a sharing measured is checked)
    for path in [beside[p] for p in plan.parts if p in beside]:
        check_output(path, "--out", MEASURED_CSV)
    check_output(out.with_name(f"{out.stem}.env.yaml"), "--out", ENV_FILE)
    if "loop" in plan.parts:
        for sharing in plan.sharings:
            for path in out.parent.glob(f"{glob.escape(out.stem)}.{sharing}-*.traces.jsonl.gz"):
                check_output(path, "--out", TRACE_FILE)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cpu":
        torch.set_num_threads(threads or 1)
    started, cpu_started = time.time(), time.process_time()
    files: dict[str, Any] = {"out": str(out)}
    rows = 0
    with torch.inference_mode():
        base = _base(device, dtype, checkpoint, config, model, model_specs, plan)
        src_len = max(1, round(sum(len(s) for s in base.sources) / len(base.sources)))
        spec_path = check_output(out.with_name(f"{out.stem}.{base.name}.yaml"), "--out", SPEC_FILE)
        inputs = {Path(p).resolve() for p in model_specs}
        if spec_path.resolve() in inputs:  # the spec written beside the CSV would replace the one read
            raise UserError(f"the model spec it writes beside the CSV, {spec_path}, is a --model-spec input; "
                            "choose another --out", where="--out")
        write_text(spec_path, yaml.safe_dump(spec_of(base.model, base.name, src_len).file_dict(), sort_keys=False))
        files["model_spec"] = str(spec_path)
        rec = TimingLog(out, device, plan.budget)
        if "steps" in plan.parts:
            _steps(rec, base, src_len, device, dtype, plan, trained=checkpoint is not None or config is not None)
        if "loop" in plan.parts:
            files["traces"] = []
            specs = resolve_models(model_specs, "--model-spec")
            for d in _decodables(base, checkpoint is not None, checkpoint is None and config is None, specs, plan,
                                 device, dtype):
                trace = check_output(out.with_name(f"{out.stem}.{d.model.config.sharing}-{d.weights}.traces.jsonl.gz"),
                                     "--out", TRACE_FILE)
                loop_rows(rec, d, trace, plan.loop_budget)
                rec.flush()
                files["traces"].append(str(trace))
                del d
                _free(device)
        if "batch" in plan.parts:
            assert plan.batch_sizes is not None and plan.batch_ctxs is not None
            brec = TimingLog(beside["batch"], device, plan.batch_budget(device))
            batch_rows(brec, base.model, base.name, src_len, plan.sharings, plan.batch_sizes, plan.batch_ctxs)
            brec.flush()
            files["batch"] = str(brec.out)
            rows += len(brec.rows)
        if "ops" in plan.parts:
            orec = TimingLog(beside["ops"], device, plan.op_budget)
            op_rows(orec, base.model, base.name, src_len, plan.quick)
            orec.flush()
            files["ops"] = str(orec.out)
            rows += len(orec.rows)
        if steps_or_loop:
            rec.flush()
    env = _env(device, base, plan, rows + len(rec.rows), started)
    if device == "cpu":  # below ~0.95 other work took this thread's core part of the time: timings run high
        env["cpu_share"] = round((time.process_time() - cpu_started) / max(1e-9, time.time() - started), 3)
    env_path = out.with_name(f"{out.stem}.env.yaml")
    write_text(env_path, yaml.safe_dump(env, sort_keys=False))
    return {**files, "env": str(env_path), **env}


def _steps(rec: TimingLog, base: Decodable, src_len: int, device: str, dtype: torch.dtype, plan: MeasurePlan,
           trained: bool) -> None:
    """The step sections; whole decodes of the functional decoder for a checkpoint or config model."""
    ctxs = (16,) if plan.quick else (32, 128)
    if not plan.quick:
        steps.ceilings(rec, device, dtype)
        rec.flush()
    steps.layer_rows(rec, base.model, base.name, src_len, ctxs)
    rec.flush()
    steps.group_rows(rec, base.model, base.name, src_len, ctxs)
    rec.flush()
    if trained:
        assert plan.sequences is not None
        steps.decode_rows(rec, base.model, base.name, base.sources, base.eos_id, base.max_new_tokens,
                          plan.sequences, rec.out.with_name(f"{rec.out.stem}.traces.jsonl.gz"),
                          1 if plan.quick else 3)
        rec.flush()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _env(device: str, base: Decodable, plan: MeasurePlan, rows: int, started: float) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": device, "torch": str(torch.__version__), "python": platform.python_version(),
        "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine: a noise warning
        "model": base.name, "weights": base.weights, "parts": list(plan.parts),
        "sharings": [str(s) for s in plan.sharings], "rows": rows, "elapsed_s": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    if device == "cuda":
        env.update(name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    return env
