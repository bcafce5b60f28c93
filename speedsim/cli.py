"""The `speedsim` command line. Thin: parse, call a library function, print.

Every command exits 0 on success and 2 with one line naming the file, field or row on bad
input (a `UserError`), never with a traceback.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from speedsim import defaults
from speedsim.console import (
    calibration_text,
    corpus_text,
    dropped_journal_lines_text,
    emit_json,
    failed_runs_text,
    kernel_validation_text,
    measure_text,
    profiles_text,
    report_text,
    serving_text,
    simulate_text,
    sweep_text,
    trace_text,
    training_text,
)
from speedsim.errors import UserError
from speedsim.signals import Terminated, install_sigterm_handler
from speedsim.userpath import one_line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="speedsim")
def cli() -> None:
    """Simulate SPEED speculative pipelined decoding on hardware profiles."""


# ---------------------------------------------------------------- commands
# Each command is a thin wrapper: parse options, call one library function, print (the words in
# speedsim.console).
# (hardware / validation commands, then model / trace commands, then simulate / sweep.)

# hardware and validation ---------------------------------------------------------------------

def _set_option(fn):
    # what-ifs on the profile (speedsim.hardware.whatif), applied where the profile is loaded
    return click.option("--set", "settings", multiple=True, metavar="PATH=VALUE",
                        help="What-if: set the profile's parameter at dotted PATH (as `speedsim profiles --params "
                             "NAME` lists them, e.g. memory.dram.bandwidth_GBps) to VALUE, a number or xF (F times "
                             "the profile's value); repeatable. The changed profile is checked as a loaded one.")(fn)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--dir", "directory", metavar="DIR", default=None,  # (text: speedsim.userpath checks it, as --dir)
              help="Profile directory (default: $SPEEDSIM_PROFILES, else the project's hw_profiles/).")
@click.option("--params", "params_name", metavar="NAME", default=None,
              help="Instead: list the parameters of profile NAME (a name, in --dir if given, or a YAML path) that "
                   "--set and a sweep's set.PATH keys may set, with their values and ranges.")
@_set_option
@click.pass_context
def profiles(ctx: click.Context, as_json: bool, directory: str | None, params_name: str | None,
             settings: tuple[str, ...]) -> None:
    """List and validate every hardware profile (`profiles derive`: write a new one)."""
    from speedsim.engine import check_profile
    from speedsim.hardware.summary import profile_parameters, profile_table
    from speedsim.report.tables import format_params

    if ctx.invoked_subcommand is not None:
        if as_json or directory is not None or params_name is not None or settings:
            raise UserError(f"give {ctx.invoked_subcommand}'s options after '{ctx.invoked_subcommand}'",
                            where="profiles")
        return
    if params_name is not None:
        listing = profile_parameters(params_name, directory, settings, check=check_profile)
        if as_json:
            emit_json(listing)
            return
        click.echo(format_params(listing))
        return
    if settings:
        raise UserError("a what-if is shown with --params NAME", where="--set")
    rows = profile_table(directory, check=check_profile)
    if as_json:
        emit_json({"profiles": rows})
        return
    click.echo(profiles_text(rows))


@profiles.command("derive")
@click.option("--from", "from_name", metavar="NAME", default=None,
              help="Profile (name or YAML path) whose what-if (--set, at least one) is written as a profile.")
@click.option("--datasheet", metavar="FILE", default=None,
              help="Instead: a datasheet YAML, one GPU entry or a gpus: list as experiments/hardware/"
                   "gpu_datasheets.yaml (units, clock, peaks, DRAM, L2, sources), derived by the rule learned on "
                   "the reference profile (speedsim/hardware/derive.py).")
@click.option("--gpu", metavar="NAME", default=None,
              help="With --datasheet: the entry of its gpus: list to derive (needed when it holds several).")
@click.option("--reference", metavar="NAME", default=None,
              help="With --datasheet: the calibrated profile the rule carries over from [default: h200].")
@click.option("--out", metavar="FILE", required=True, help="Profile YAML to write (.yaml or .yml).")
@click.option("--name", default=None, help="Name of the new profile [default: --out's file name without its "
              "suffix, as `speedsim profiles` requires of a profile in its directory].")
@_set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def profiles_derive(from_name: str | None, datasheet: str | None, gpu: str | None, reference: str | None, out: str,
                    name: str | None, settings: tuple[str, ...], as_json: bool) -> None:
    """Write a new profile: a what-if of a profile (--from NAME --set PATH=VALUE ...), or a GPU derived from
    its datasheet (--datasheet FILE [--gpu NAME]); its sources say what came from where."""
    from speedsim.engine import check_profile
    from speedsim.hardware.derive import derive_to_file
    from speedsim.report.tables import format_derive

    summary = derive_to_file(out, from_name=from_name, datasheet=datasheet, gpu=gpu, reference=reference,
                             name=name, settings=settings, check=check_profile)
    if as_json:
        emit_json(summary)
        return
    click.echo(format_derive(summary))


def _deploy(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # kept in ctx.meta["deployment"] (field -> value): every command that builds a run passes them on
    if value is not None:
        ctx.meta.setdefault("deployment", {})[param.name] = value
    return value


def _deployment_options(fn):
    # how the model is stored and spread over devices (simulate, serve, sensitivity, design)
    from speedsim.dtypes import KV_DTYPES, WEIGHT_DTYPES

    options = (
        click.option("--weight-dtype", type=click.Choice(WEIGHT_DTYPES), default=None, expose_value=False,
                     callback=_deploy,
                     help="How the decoder layers' weights are stored: int8/int4/fp8 are weight-only quantisation "
                          "(read as stored, scales included, dequantised on the way) [default: the model spec's, "
                          "else the profile's dtype]."),
        click.option("--weight-group", type=int, default=None, expose_value=False, callback=_deploy, metavar="G",
                     help="int8/int4 weights: input elements per fp16 scale [default: int4 128, int8 one per output "
                          "channel]."),
        click.option("--kv-dtype", type=click.Choice(KV_DTYPES), default=None, expose_value=False, callback=_deploy,
                     help="How the KV cache is stored [default: the model spec's, else the profile's dtype]."),
        click.option("--tp", type=int, default=None, expose_value=False, callback=_deploy, metavar="N",
                     help="Tensor parallelism over N devices of one node (Megatron-style: heads, FFN and vocabulary "
                          "split, two all-reduces a layer, the logits gathered; the profile's interconnect "
                          "section joins them). Bytes and memory are one device's [default: 1]."),
        click.option("--pp", type=int, default=None, expose_value=False, callback=_deploy, metavar="N",
                     help="Pipeline parallelism over N devices: stages of contiguous layers, activations sent on at "
                          "each boundary; with --pp-over repeats, SPEED's pipeline over its R repeats (N = R: each "
                          "device all U shared layers and the in-flight token of its own repeat, at once). The "
                          "bytes are the pipeline's, the memory checked is the busiest device's [default: 1]."),
        click.option("--pp-over", type=click.Choice(["layers", "repeats"]), default=None, expose_value=False,
                     callback=_deploy, help="What the pipeline stages split [default: layers]."),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def _deployment() -> dict[str, Any]:
    """The deployment options given to the running command (`_deployment_options`)."""
    return dict(click.get_current_context().meta.get("deployment", {}))


def _models_option(fn):
    # text, not click.Path (which reads '' as '.' and fails on a NUL byte): the readers check each path and
    # name the flag (speedsim.workload.resolve_models(..., where="--model-spec"))
    return click.option("--model-spec", "model_specs", multiple=True, metavar="FILE",
                        help="YAML spec of a model not built in (repeatable).")(fn)


@cli.command()
@click.option("--measured", metavar="FILE", multiple=True,  # text: click.Path fails on a NUL byte
              help="Measured CSV, repeatable: the rows of every file together (default: the shipped H200 "
                   "measurements).")
@click.option("--kernels", metavar="FILE", default=None,
              help="Validate a per-kernel profile (scenario,kernel,calls_per_iter,device_us_per_iter) class by class "
                   "instead of measured rows.")
@click.option("--strict", is_flag=True, help="With --kernels: a kernel no class rule matches is an error (exit 2).")
@click.option("--profile", "profile_name", default="h200", show_default=True, help="Profile name or YAML path.")
@click.option("--mode", type=click.Choice(["graph", "eager", "all"]), default="graph", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--worst", type=click.IntRange(min=0), default=10, show_default=True, help="How many worst rows to list.")
@_models_option
@_set_option
def validate(measured: tuple[str, ...], kernels: str | Path | None, strict: bool, profile_name: str, mode: str,
             as_json: bool, worst: int, model_specs: tuple[Path, ...], settings: tuple[str, ...]) -> None:
    """Simulate every measured row (or kernel class) and print per-section (per-class) and overall error (MAPE)."""
    from speedsim.engine import check_profile
    from speedsim.hardware.files import load_whatif
    from speedsim.hardware.summary import with_overrides_record
    from speedsim.paths import H200_MEASURED
    from speedsim.userpath import user_path
    from speedsim.validation import validate as run_validation
    from speedsim.validation.measured import read_measured_files
    from speedsim.workload import resolve_models

    if measured and kernels is not None:
        raise UserError("give --measured or --kernels, not both", where="--kernels")
    if strict and kernels is None:  # (it would be ignored: only a kernel profile has unclassified kernels)
        raise UserError("applies to --kernels only (refuse kernels no class rule matches)", where="--strict")
    given = tuple(user_path(m, "--measured") for m in measured)  # each path's shape, naming the flag
    kernels = user_path(kernels, "--kernels") if kernels is not None else None
    profile, overrides = load_whatif(profile_name, settings, check=check_profile)
    models = resolve_models(model_specs, where="--model-spec")
    if kernels is not None:
        _validate_kernels(profile, kernels, models, strict, as_json, worst, overrides)
        return
    paths = given or (H200_MEASURED,)
    report = run_validation(profile, read_measured_files(paths), models, mode, source=", ".join(map(str, paths)))
    result = with_overrides_record(report.as_json(worst), overrides)
    if as_json:
        emit_json(result)
        return
    from speedsim.report.tables import format_validation

    click.echo(format_validation(result, report))


def _validate_kernels(profile, path: Path, models, strict: bool, as_json: bool, worst: int, overrides=()) -> None:
    from speedsim.hardware.summary import with_overrides_record
    from speedsim.validation.kernels import read_kernels, validate_kernels

    report = validate_kernels(profile, read_kernels(path, "--kernels"), models, source=str(path), strict=strict)
    result = with_overrides_record(report.as_json(worst), overrides)
    if as_json:
        emit_json(result)
        return
    click.echo(kernel_validation_text(profile.name, path, report, result))


@cli.command()
@click.option("--measured", metavar="FILE", multiple=True,  # text: click.Path fails on a NUL byte
              help="Measured CSV, repeatable: the rows of every file are fitted together (default: the shipped "
                   "H200 measurements).")
@click.option("--profile", "profile_name", required=True, help="Starting profile (name or YAML path).")
@click.option("--out", metavar="FILE", required=True, help="Where to write the fitted profile.")
@click.option("--name", default=None, help="Name of the fitted profile (default: the starting profile's).")
@click.option("--sections", default=None, help="Fit only rows of these sections (comma-separated, e.g. layer,group); "
              "SECTION/PATTERN adds one pattern's rows (e.g. ceiling/launch_add_x100).")
@click.option("--kernels", metavar="FILE", default=None,
              help="Per-kernel profile fitted together with the rows (default with the shipped H200 measurements: "
                   "their kernels.csv; 'none' for no kernel rows).")
@click.option("--fit-loop", "fit_loop", default=None, metavar="UxR,...",
              help="Instead: fit only host.loop_us (a closed decode loop's host time per step) on the whole-decode "
                   "rows (section decode, impl=static) of these sharings; the others are held out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_models_option
@_set_option
def calibrate(measured: tuple[str, ...], profile_name: str, out: str | Path, name: str | None,
              sections: str | None, kernels: str | Path | None, fit_loop: str | None, as_json: bool,
              model_specs: tuple[Path, ...], settings: tuple[str, ...]) -> None:
    """Fit a profile's few free parameters (efficiencies, latencies, in-flight bytes) to measurements.

    With --set, the fit starts from the what-if profile, which is then named --name (default: --out's file
    name without its suffix) and whose sources say what was changed from what."""
    from pydantic import ValidationError

    from speedsim.engine import check_profile, open_profile
    from speedsim.errors import user_error
    from speedsim.fileio import check_output
    from speedsim.hardware import save_profile
    from speedsim.hardware.derive import whatif_profile
    from speedsim.hardware.files import PROFILE_FILE
    from speedsim.hardware.summary import with_overrides_record
    from speedsim.paths import H200_MEASURED
    from speedsim.userpath import user_path
    from speedsim.validation.calibrate import calibrate as fit
    from speedsim.validation.calibrate import parse_sections, with_fit_note
    from speedsim.validation.measured import read_measured_files
    from speedsim.workload import resolve_models

    out = check_output(out, "--out", PROFILE_FILE)  # before the fit: a directory, another file, no directory
    paths = tuple(user_path(m, "--measured") for m in measured) or (H200_MEASURED,)
    profile = open_profile(profile_name)
    if name is not None:  # checked as the profile's own field, before the fit (`--name ''` kept the old name)
        try:
            type(profile).model_validate({**profile.model_dump(), "name": name})
        except ValidationError as err:
            raise user_error(err, "--name") from None
    overrides: tuple = ()
    if settings:  # the fit starts from the what-if, a profile of its own (named, its sources say what changed)
        profile, overrides = whatif_profile(profile, settings, out.stem if name is None else name, check_profile,
                                            name_where="--out" if name is None else "--name")
    _keeps_another_profile(out, name or profile.name)
    rows = read_measured_files(paths)
    if fit_loop is not None:
        models = resolve_models(model_specs, where="--model-spec")
        _calibrate_loop(profile, rows, models, fit_loop, paths, out, name, as_json, overrides)
        return
    chosen = parse_sections(sections)
    from speedsim.validation.kernels import read_kernels

    kernels_path = None if kernels is None or str(kernels) == "none" else user_path(kernels, "--kernels")
    if kernels is None and not measured:
        kernels_path = H200_MEASURED.with_name("kernels.csv")
    kernel_rows = read_kernels(kernels_path, "--kernels") if kernels_path is not None else None
    models = resolve_models(model_specs, where="--model-spec")
    result = fit(profile, rows, models, source=", ".join(map(str, paths)), sections=chosen,
                 kernels=kernel_rows, kernels_source=str(kernels_path))
    fitted = with_fit_note(result.profile, [*paths, *([kernels_path] if kernel_rows and kernels_path else [])],
                           name)
    save_profile(fitted, out)
    summary = {"profile": fitted.name, "out": str(out), "mape_before": result.before,
               "mape_after": result.after, "parameters": result.values, "at_bounds": result.at_bounds}
    if as_json:
        emit_json(with_overrides_record(summary, overrides))
        return
    click.echo(calibration_text(out, result, sections))
    if overrides:
        refitted = [o.path for o in overrides if o.path in result.values]
        click.echo(f"  started from a what-if of {profile_name}: {', '.join(o.label for o in overrides)}"
                   + (f" (fitted again: {', '.join(refitted)})" if refitted else ""))


def _keeps_another_profile(out: Path, name: str) -> None:
    """Refuse `--out` that holds a profile of another name: calibrate replaces a profile file with a fit
    of the same profile (the recipe rewrites its own input), never another profile (a directory's files
    are named after their profiles)."""
    from speedsim.yamlio import read_mapping

    if not out.is_file() or not out.stat().st_size:
        return
    there = read_mapping(out, "profile").get("name")
    if there != name:
        raise UserError(f"{out} holds profile '{there}'; the fit is of '{name}' and replaces only a profile of "
                        "its own name (give --name, or another --out)", where="--out")


def _calibrate_loop(profile, rows, models, fit_loop: str, paths, out: Path, name: str | None,
                    as_json: bool, overrides: tuple = ()) -> None:
    from speedsim.hardware import save_profile
    from speedsim.sharing import Sharing
    from speedsim.validation.loop_fit import PATH, fit_loop_rows, loop_fit_text, with_loop_note

    fit_on = tuple(str(Sharing.parse(s.strip(), where="--fit-loop")) for s in fit_loop.split(",") if s.strip())
    twice = sorted({s for s in fit_on if fit_on.count(s) > 1})
    if twice:  # (4x3 and 4X3 are one sharing)
        raise UserError(f"{', '.join(twice)} given twice", where="--fit-loop")
    if not fit_on:
        raise UserError("give the sharings to fit on, e.g. 12x1,4x3", where="--fit-loop")
    fit = fit_loop_rows(profile, rows, models, fit_on, ", ".join(map(str, paths)))
    fitted = with_loop_note(fit.profile, list(paths), fit_on, name)
    save_profile(fitted, out)
    if as_json:
        from speedsim.hardware.summary import with_overrides_record

        emit_json(with_overrides_record({"profile": fitted.name, "out": str(out), "parameters": {PATH: fit.value},
                                         "fitted_on": list(fit_on), "rows": [r.as_dict() for r in fit.rows]},
                                        overrides))
        return
    click.echo(loop_fit_text(str(out), fit, fit_on))


# -- data / model / trace commands (speedsim.data, speedsim.train)


@cli.group("data")
def data_group() -> None:
    """The training corpus: Python source of the stdlib and the installed packages."""


@data_group.command("build")
# paths as text, not click.Path (which reads '' as '.' and tracebacks on a name too long): the library
# checks each one (speedsim.userpath) and names the flag
@click.option("--source", "sources", multiple=True, metavar="DIR",
              help="build from these directories only (repeatable; default: stdlib + installed packages)")
@click.option("--vocab-size", type=click.IntRange(min=259, max=1 << 24), default=None,  # data.MAX_VOCAB_SIZE
              help="also train the corpus's BPE tokenizer of this many tokens (default: the recipe's)")
@click.option("--export", "export_dir", default=None, metavar="DIR",
              help="copy the corpus (and its tokenizers) to this directory, to carry to another machine")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as one JSON object")
def data_build_cmd(sources: tuple[str, ...], vocab_size: int | None, export_dir: str | None, as_json: bool) -> None:
    """Build (or check) the cached corpus and its tokenizer; print the counts."""
    from speedsim.data import DEFAULT_VOCAB_SIZE, corpus_tokenizer, export_corpus, open_corpus
    from speedsim.data.corpus import check_export_dir
    from speedsim.data.sources import explicit_roots

    if sources:  # every source (its path, its .py files, given once) before the corpus is built
        explicit_roots(sources, "--source")
    if export_dir is not None:  # `--export ''` is an error, not "no export"
        check_export_dir(export_dir, "--export")  # before the corpus is built, not after
    corpus = open_corpus(sources=list(sources) or None, progress=not as_json, source_where="--source")
    corpus_tokenizer(corpus, vocab_size or DEFAULT_VOCAB_SIZE)
    if export_dir is not None:
        export_corpus(corpus, export_dir)
    if as_json:
        emit_json({"directory": str(corpus.directory), "export": export_dir, **corpus.manifest})
        return
    click.echo(corpus_text(corpus.directory, corpus.manifest, export_dir))


@cli.command("train")
@click.option("--config", "config_path", required=True, metavar="FILE", help="training YAML (experiments/models/*.yaml)")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="run directory; re-running resumes from its checkpoints")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="cuda: bf16 autocast")
@click.option("--json", "as_json", is_flag=True, help="print the final metrics as one JSON object")
def train_cmd(config_path: str, out_dir: str, device: str, as_json: bool) -> None:
    """Pre-train and fine-tune a SPEED model (resumable)."""
    from speedsim.fileio import check_output_dir
    from speedsim.train import train

    check_output_dir(out_dir, "--out")
    metrics = train(config_path, out_dir, device=device, progress=not as_json)
    if as_json:
        emit_json(metrics)
        return
    click.echo(training_text(metrics, out_dir))


@cli.command("trace")
@click.option("--checkpoint", required=True, metavar="PATH", help="run directory written by `speedsim train`")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--out", "out_file", required=True, metavar="FILE", help="trace file (.jsonl or .jsonl.gz)")
@click.option("--limit", type=int, default=None, help="decode a seeded sample of at most N examples")
@click.option("--max-new-tokens", type=int, default=None, help="decode length cap (default: the config's)")
@click.option("--draft-checkpoint", default=None, metavar="PATH",
              help="Also a draft model (run directory of `speedsim train`, the same tokenizer): its greedy "
                   "prediction of every position on the target's path, written to --draft-out (the acceptance "
                   "of `simulate --method specdec --draft-trace`).")
@click.option("--draft-out", default=None, metavar="FILE", help="With --draft-checkpoint: the draft's trace file.")
@click.option("--json", "as_json", is_flag=True, help="print the statistics as one JSON object")
def trace_cmd(checkpoint: str, split: str, out_file: str, limit: int | None, max_new_tokens: int | None,
              draft_checkpoint: str | None, draft_out: str | None, as_json: bool) -> None:
    """Decode a split with SPEED, write its exit traces, print their statistics and quality."""
    from speedsim.fileio import check_output
    from speedsim.trace import write_traces
    from speedsim.trace.io import TRACE_FILE
    from speedsim.train import record_draft_traces, record_traces, trace_metrics

    check_output(out_file, "--out", TRACE_FILE)
    if (draft_checkpoint is None) != (draft_out is None):
        raise UserError("--draft-checkpoint and --draft-out go together", where="--draft-out"
                        if draft_out is None else "--draft-checkpoint")
    if draft_out is not None:
        check_output(draft_out, "--draft-out", TRACE_FILE)
        if Path(draft_out).absolute() == Path(out_file).absolute():
            raise UserError("is the target's --out: the two traces need two files", where="--draft-out")
    traces, quality = record_traces(checkpoint, split, limit, max_new_tokens, progress=not as_json,
                                    where="--checkpoint")
    drafts: list = []
    draft_stats: dict = {}
    if draft_checkpoint is not None:
        drafts, draft_stats = record_draft_traces(checkpoint, draft_checkpoint, traces, split, limit,
                                                  progress=not as_json)
    write_traces(out_file, traces)
    if draft_out is not None:
        write_traces(draft_out, drafts)
        draft_stats["draft_out"] = draft_out
    stats = {**trace_metrics(traces), **quality, "out": out_file, **draft_stats}
    if as_json:
        emit_json(stats)
        return
    click.echo(trace_text(stats, len(traces), out_file, split))


# simulation ------------------------------------------------------------------------------------

def _options(*decorators):
    """One decorator applying `decorators` as if written in this order above a command."""
    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


# what every command that decodes a workload on a profile takes (simulate, sensitivity, design)
_workload_options = _options(
    click.option("--profile", "profile_name", required=True, help="Profile name or YAML path."),
    click.option("--model", "model_name", required=True, help="Model dimensions: t5base, dec1b, dec7b or a --model-spec."),
    click.option("--sharing", required=True, help="UxR: U distinct layers repeated R times (e.g. 4x3)."),
    click.option("--trace", "trace_file", metavar="FILE", default=None,  # (text: checked as --trace by its reader)
                 help="Recorded exit trace (JSON Lines, .gz allowed), or a shipped trace's name (4x3)."),
    click.option("--synthetic", default=None,
                 help="perfect | mispredict=P | agree=A0/A1/... | fit=TRACE, plus len=N, seqs=K, src=N, burst=B, "
                      "seed=S."),
)
# how a decode of SPEED and its baselines runs (simulate, sensitivity)
_decode_options = _options(
    click.option("--baseline", type=click.Choice(["unshared", "sequential", "both", "none"]), default="both",
                 show_default=True),
    click.option("--mode", type=click.Choice(["graph", "eager"]), default=defaults.MODE, show_default=True,
                 help="graph: one launch per step (CUDA graphs); eager: per framework op. A host without a graph "
                      "mode (a CPU: host.synchronous) runs eager whatever this says, and the output says so; an "
                      "accelerator without graph capture (host.graph_capture false) runs graph mode as a compiled "
                      "program, labelled compiled-program mode."),
    click.option("--src-len", type=click.IntRange(min=1), default=None,
                 help="Source (encoder input or prompt) length; default: each trace's own."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Simulate only the first N sequences."),
    click.option("--launch-exit", type=click.IntRange(min=0), default=defaults.LAUNCH_EXIT, show_default=True,
                 help="Exit whose prediction launches the next token."),
    click.option("--max-in-flight", type=click.IntRange(min=1), default=None, help="Most tokens in flight (default R)."),
)


def _gamma(_ctx, _param, value: str | None) -> str | int | None:
    """--gamma: `auto` or a whole number of draft tokens (its range is the run's to check)."""
    from speedsim import limits

    if value is None or value.strip() == "auto":
        return None if value is None else "auto"
    return int(limits.parse_number(value, "--gamma", "--gamma", integer=True))


# how speculative decoding drafts (simulate's --method selfspec/specdec, serve's)
_draft_options = _options(
    click.option("--gamma", default=None, metavar="G|auto", callback=_gamma,
                 help="Draft tokens per iteration [default: auto, the window of 1-10 with the least time per token]."),
    click.option("--draft-exit", type=click.IntRange(min=0), default=None,
                 help="selfspec: the exit the drafts come from, 0 being the first [default: 0]."),
    click.option("--draft-model", default=None, metavar="NAME",
                 help="specdec: the draft model's dimensions (a built-in or a --model-spec) [default: --model]."),
    click.option("--draft-depth", type=click.IntRange(min=1), default=None,
                 help="specdec: the draft model's decoder layers."),
    click.option("--draft-trace", default=None, metavar="FILE",
                 help="specdec: the draft's predictions on the target's path (`speedsim trace --draft-checkpoint`)."),
    click.option("--draft-accept", type=float, default=None, metavar="A",
                 help="specdec without a draft trace: the drafts are accepted independently with probability A."),
    click.option("--draft-fit", default=None, metavar="FILE",
                 help="specdec without a draft trace of these sequences: acceptance from a two-state model fitted to "
                      "this draft trace (its acceptance rate and the length of its runs of accepted drafts)."),
)
# speculative decoding beside SPEED and its baselines (simulate)
_speculative_options = _options(
    click.option("--method", "methods", multiple=True, type=click.Choice(["selfspec", "specdec"]),
                 help="Also simulate speculative decoding (repeatable): selfspec drafts with an early exit of the "
                      "shared model and verifies with its full depth; specdec drafts with a separate draft model."),
    _draft_options,
)


@cli.command("simulate")
@_workload_options
@_deployment_options
@_decode_options
@_speculative_options
@click.option("--timeline", metavar="FILE", default=None,  # (text: check_output checks it as --timeline)
              help="Write SPEED's timeline as a Chrome trace (open in Perfetto).")
@click.option("--device-control", is_flag=True,
              help="What-if: the controller runs on the device, so no step waits for its results to reach the host.")
@click.option("--bounds", is_flag=True,
              help="Also run the profile's parameter ranges at their fast and slow ends: per_token_us_low/high.")
@click.option("--by-kernel", is_flag=True, expose_value=False,  # (kept in ctx.meta: the printing reads it)
              callback=lambda ctx, _param, value: ctx.meta.__setitem__("by_kernel", value),
              help="Also print each method's decode kernels by class: time, bytes, FLOPs, arithmetic intensity and "
                   "the cause that bounds them (always in --json: by_kernel_class).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_models_option
@_set_option
def simulate_cmd(profile_name: str, model_name: str, sharing: str, trace_file: str | None, synthetic: str | None,
                 baseline: str, mode: str, src_len: int | None, limit: int | None, launch_exit: int,
                 max_in_flight: int | None, methods: tuple[str, ...], gamma: str | int | None,
                 draft_exit: int | None, draft_model: str | None, draft_depth: int | None, draft_trace: str | None,
                 draft_accept: float | None, draft_fit: str | None, timeline: str | None, device_control: bool,
                 bounds: bool,
                 as_json: bool, model_specs: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """Simulate SPEED decoding of exit traces against the unshared and shared-sequential baselines (and
    speculative decoding: --method).

    \b
    Utilisation (of the whole run, prefill included): compute = achieved FLOP/s over the datasheet
    matrix peak of the profile's default dtype; DRAM = share of the time DRAM streams at its
    achievable rate; device busy = share of the time a kernel runs; host = share of the time the
    host issues work (launches and each step's round trip)."""
    from speedsim.engine.recorder import TIMELINE_FILE
    from speedsim.fileio import check_output
    from speedsim.run import simulate_run
    from speedsim.simulate import build_scenario, run_scenario
    from speedsim.simulate.scenario import COMMAND_LINE

    timeline_path = check_output(timeline, "--timeline", TIMELINE_FILE) if timeline is not None else None
    baselines = {"both": ("unshared", "sequential"), "none": ()}.get(baseline, (baseline,))
    run = simulate_run(profile=profile_name, model=model_name, sharing=sharing, trace=trace_file, synthetic=synthetic,
                       baselines=baselines, mode=mode, src_len=src_len, limit=limit, launch_exit=launch_exit,
                       max_in_flight=max_in_flight, device_control=device_control, bounds=bounds,
                       settings=settings,
                       speculative={"methods": methods, "gamma": gamma, "draft_exit": draft_exit,
                                    "draft_model": draft_model, "draft_depth": draft_depth, "draft_trace": draft_trace,
                                    "draft_accept": draft_accept, "draft_fit": draft_fit},
                       deployment=_deployment())
    result = run_scenario(build_scenario(run, model_specs=model_specs, sources=COMMAND_LINE), timeline_path)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(simulate_text(result, bounds, click.get_current_context().meta.get("by_kernel", False)))


@cli.command("sensitivity")
@_workload_options
@_deployment_options
@_decode_options
@click.option("--device-control", is_flag=True,
              help="What-if: the controller runs on the device, so no step waits for its results to reach the host.")
@click.option("--params", default=None, metavar="PATH,...",
              help="Only these parameters (dotted paths, as `speedsim profiles --params NAME` lists them) "
                   "[default: every number of the profile but the software rules, software.*].")
@click.option("--step", type=float, default=None, metavar="H",
              help="Relative step of the central differences, x(1-H) and x(1+H) [default: 0.01; 1e-4 to 0.2].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_models_option
@_set_option
def sensitivity_cmd(profile_name: str, model_name: str, sharing: str, trace_file: str | None, synthetic: str | None,
                    baseline: str, mode: str, src_len: int | None, limit: int | None, launch_exit: int,
                    max_in_flight: int | None, device_control: bool, params: str | None, step: float | None,
                    as_json: bool, model_specs: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """What bounds the time: each method's elasticity d ln(time per token) / d ln(parameter) in every
    parameter of the profile, ranked, by central differences (the profile changed by what-ifs,
    each checked as a loaded profile); beside it, the time by cause of `simulate`."""
    from speedsim.console import sensitivity_text
    from speedsim.design import STEP, sensitivity, with_settings
    from speedsim.run import simulate_run
    from speedsim.simulate import build_scenario
    from speedsim.simulate.scenario import COMMAND_LINE

    baselines = {"both": ("unshared", "sequential"), "none": ()}.get(baseline, (baseline,))
    run = simulate_run(profile=profile_name, model=model_name, sharing=sharing, trace=trace_file, synthetic=synthetic,
                       baselines=baselines, mode=mode, src_len=src_len, limit=limit, launch_exit=launch_exit,
                       max_in_flight=max_in_flight, device_control=device_control, bounds=False,
                       deployment=_deployment())
    scenario, overrides = with_settings(build_scenario(run, model_specs=model_specs, sources=COMMAND_LINE), settings)
    chosen = None if params is None else params.split(",")
    result = sensitivity(scenario, chosen, STEP if step is None else step, overrides)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(sensitivity_text(result))


@cli.command("design")
@_workload_options
@_deployment_options
@click.option("--method", type=click.Choice(list(defaults.METHODS)), default=defaults.METHOD, show_default=True,
              help="The method that must meet the target (decoded alone, or served with --serve).")
@click.option("--vary", "vary", metavar="PATH", default=None,
              help="The parameter to change (a dotted path, as `speedsim profiles --params NAME` lists them): the "
                   "least change (a scale of its value, searched in log space to 0.1%) that meets the target.")
@click.option("--target-us-per-token", "target_decode", type=float, default=None, metavar="X",
              help="The target: the method's simulated time per token (us), as simulate's per_token_us.")
@click.option("--serve", "serving", is_flag=True,
              help="Instead: the highest Poisson arrival rate at which the served method keeps --metric under "
                   "--target-us on this chip, decided by the mean over --seeds seeds, with the interval of the "
                   "seeds' own rates.")
@click.option("--metric", type=click.Choice(["tpot_p99", "ttft_p99"]), default=None,
              help="With --serve: p99 time per output token or p99 time to first token [default: tpot_p99].")
@click.option("--target-us", "target_serve", type=float, default=None, metavar="X", help="With --serve: the target (us).")
@click.option("--requests", "n_requests", type=int, default=None,
              help="With --serve: requests per serving run [default: 100].")
@click.option("--max-batch", type=int, default=None, help=f"With --serve: most requests decoding at once "
              f"[default: {defaults.MAX_BATCH}].")
@click.option("--seeds", type=int, default=None, help="With --serve: seeds per candidate rate [default: 5].")
@click.option("--seed", type=int, default=None, help=f"With --serve: the first seed [default: {defaults.SEED}].")
@click.option("--prefill", type=click.Choice(list(defaults.PREFILL_MODES)), default=None,
              help=f"With --serve: as for serve [default: {defaults.PREFILL}].")
@click.option("--mode", type=click.Choice(["graph", "eager"]), default=defaults.MODE, show_default=True,
              help="As for simulate.")
@click.option("--src-len", type=click.IntRange(min=1), default=None,
              help="Source (encoder input or prompt) length; default: each trace's own (not with --serve).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Simulate only the first N sequences (not with --serve).")
@click.option("--launch-exit", type=click.IntRange(min=0), default=None,
              help=f"Exit whose prediction launches the next token [default: {defaults.LAUNCH_EXIT}; not with --serve].")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None,
              help="Most tokens in flight (default R; not with --serve).")
@click.option("--device-control", is_flag=True,
              help="What-if: the controller runs on the device (not with --serve).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_models_option
@_set_option
def design_cmd(profile_name: str, model_name: str, sharing: str, trace_file: str | None, synthetic: str | None,
               method: str, vary: str | None, target_decode: float | None, serving: bool, metric: str | None,
               target_serve: float | None, n_requests: int | None, max_batch: int | None, seeds: int | None,
               seed: int | None, prefill: str | None, mode: str, src_len: int | None, limit: int | None,
               launch_exit: int | None, max_in_flight: int | None, device_control: bool, as_json: bool,
               model_specs: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """The chip that meets a target: the least change of one parameter (--vary PATH) at which a method meets
    --target-us-per-token, or the cause that holds the time where none does; with --serve, the highest
    arrival rate at which a served method keeps a p99 latency under --target-us."""
    from speedsim.console import design_text, serve_design_text
    from speedsim.design.search import SERVE_REQUESTS, SERVE_SEEDS, design, serve_design
    from speedsim.hardware.whatif import overrides_dict
    from speedsim.run import serve_run, simulate_run
    from speedsim.simulate import build_scenario
    from speedsim.simulate.scenario import COMMAND_LINE

    given = {"--metric": metric, "--target-us": target_serve, "--requests": n_requests, "--max-batch": max_batch,
             "--seeds": seeds, "--seed": seed, "--prefill": prefill}
    decode_only = {"--vary": vary, "--target-us-per-token": target_decode, "--src-len": src_len, "--limit": limit,
                   "--launch-exit": launch_exit, "--max-in-flight": max_in_flight,
                   "--device-control": device_control or None}
    if serving:
        wrong = [flag for flag, v in decode_only.items() if v is not None]
        if wrong:
            raise UserError("the serving search varies the arrival rate (--target-us, --metric): this option is "
                            "for the decode search", where=wrong[0])
        if target_serve is None:
            raise UserError("--serve needs a target: --target-us X", where="--target-us")
        run = serve_run(profile=profile_name, model=model_name, sharing=sharing, trace=trace_file,
                        synthetic=synthetic, method=method, arrivals="poisson:1",
                        requests=SERVE_REQUESTS if n_requests is None else n_requests,
                        max_batch=defaults.MAX_BATCH if max_batch is None else max_batch, kv_capacity_GB=None,
                        prefill=prefill or defaults.PREFILL, prefill_budget=defaults.PREFILL_BUDGET,
                        seed=defaults.SEED if seed is None else seed, mode=mode, settings=settings,
                        deployment=_deployment())
        served = serve_design(run, metric or "tpot_p99", target_serve, SERVE_SEEDS if seeds is None else seeds,
                              model_specs, COMMAND_LINE)
        if as_json:
            emit_json(served.to_dict())
            return
        click.echo(serve_design_text(served))
        return
    wrong = [flag for flag, v in given.items() if v is not None]
    if wrong:
        raise UserError("this option is for the serving search: give --serve", where=wrong[0])
    if vary is None:
        raise UserError("name the parameter to change: --vary PATH (e.g. memory.dram.bandwidth_GBps)", where="--vary")
    if target_decode is None:
        raise UserError("give the target: --target-us-per-token X", where="--target-us-per-token")
    baselines = () if method == "speed" else (method,)
    run = simulate_run(profile=profile_name, model=model_name, sharing=sharing, trace=trace_file, synthetic=synthetic,
                       baselines=baselines, mode=mode, src_len=src_len, limit=limit,
                       launch_exit=defaults.LAUNCH_EXIT if launch_exit is None else launch_exit,
                       max_in_flight=max_in_flight, device_control=device_control, bounds=False, settings=settings,
                       deployment=_deployment())
    scenario = build_scenario(run, model_specs=model_specs, sources=COMMAND_LINE)
    result = design(scenario, method, vary, target_decode, overrides_dict(scenario.overrides))
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(design_text(result))


@cli.command("serve")
@_deployment_options
@click.option("--profile", "profile_name", required=True, help="Profile name or YAML path.")
@click.option("--model", "model_name", required=True, help="Model dimensions: t5base, dec1b, dec7b or a --model-spec.")
@click.option("--sharing", required=True, help="UxR: U distinct layers repeated R times (e.g. 4x3).")
@click.option("--trace", "trace_file", default=None,
              help="Exit traces to sample requests from (a file, or a shipped trace's name such as 4x3).")
@click.option("--synthetic", default=None, help="Synthetic traces, as for simulate (one per request).")
@click.option("--method", type=click.Choice([*defaults.METHODS, "selfspec", "specdec"]), default=defaults.METHOD,
              show_default=True, help="The method served: SPEED, a baseline, or speculative decoding (selfspec, "
                                      "specdec: with the --gamma and --draft-* options of simulate).")
@_draft_options
@click.option("--arrivals", required=True, help="poisson:RATE_PER_S, trace:FILE (arrival times in seconds) or "
              "load:F (F times the nominal capacity: max-batch requests in flight, each as fast as alone).")
@click.option("--requests", "n_requests", type=int, required=True, help="Number of requests.")
@click.option("--max-batch", type=int, default=defaults.MAX_BATCH, show_default=True, help="Most requests decoding at once.")
@click.option("--kv-capacity-GB", "kv_capacity", type=float, default=None,
              help="KV memory in GB (default: device memory minus the weights).")
@click.option("--prefill", type=click.Choice(list(defaults.PREFILL_MODES)), default=defaults.PREFILL, show_default=True,
              help="chunked: prefills join the decode steps; stream: a second stream beside decoding.")
@click.option("--prefill-budget", type=int, default=defaults.PREFILL_BUDGET, show_default=True,
              help="chunked: source tokens prefilled per step (at least one request).")
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed of arrivals and trace sampling.")
@click.option("--mode", type=click.Choice(["graph", "eager"]), default=defaults.MODE, show_default=True)
@click.option("--timeline", metavar="FILE", default=None,  # (text: check_output checks it as --timeline)
              help="Write a Chrome trace: one track per stream and the queue length (open in Perfetto).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_models_option
@_set_option
def serve_cmd(profile_name: str, model_name: str, sharing: str, trace_file: str | None, synthetic: str | None,
              method: str, gamma: str | int | None, draft_exit: int | None, draft_model: str | None,
              draft_depth: int | None, draft_trace: str | None, draft_accept: float | None, draft_fit: str | None,
              arrivals: str,
              n_requests: int, max_batch: int, kv_capacity: float | None, prefill: str,
              prefill_budget: int, seed: int, mode: str, timeline: str | None, as_json: bool,
              model_specs: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """Simulate many requests on one device: queueing, batching, KV memory, latency percentiles.

    \b
    Utilisation (of the makespan): compute = achieved FLOP/s over the datasheet matrix peak of the
    profile's default dtype; DRAM = share of the time DRAM streams at its achievable rate; KV = KV
    memory in use, time-averaged, over the KV capacity."""
    from speedsim.engine.recorder import TIMELINE_FILE
    from speedsim.fileio import check_output
    from speedsim.run import serve_run
    from speedsim.serve import serve
    from speedsim.simulate.scenario import COMMAND_LINE

    timeline_path = check_output(timeline, "--timeline", TIMELINE_FILE) if timeline is not None else None
    run = serve_run(profile=profile_name, model=model_name, sharing=sharing, trace=trace_file, synthetic=synthetic,
                    method=method, arrivals=arrivals, requests=n_requests, max_batch=max_batch,
                    kv_capacity_GB=kv_capacity, prefill=prefill, prefill_budget=prefill_budget, seed=seed, mode=mode,
                    settings=settings,
                    speculative={"gamma": gamma, "draft_exit": draft_exit, "draft_model": draft_model,
                                 "draft_depth": draft_depth, "draft_trace": draft_trace, "draft_accept": draft_accept,
                                 "draft_fit": draft_fit},
                    deployment=_deployment())
    result = serve(run, timeline_path, model_specs, sources=COMMAND_LINE)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(serving_text(result))


@cli.command("measure")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), required=True)
@click.option("--out", required=True, metavar="FILE",  # paths as text: measure checks them, naming the flag
              help="Measured CSV to write (batch and op rows go to <stem>.batch.csv and <stem>.ops.csv, traces "
                   "and specs beside it).")
@click.option("--checkpoint", default=None, metavar="PATH",
              help="Trained run directory (speedsim train); its test split is decoded.")
@click.option("--config", default=None, metavar="FILE",
              help="Model config (experiments/models/*.yaml) with random weights, when no checkpoint is given.")
@click.option("--model", default="t5base", show_default=True,
              help="Without --checkpoint/--config: random weights at this model spec's dimensions.")
@_models_option
@click.option("--parts", default=None, help="Comma-separated: steps, loop (whole decodes), batch, ops (single ops at the model's "
              "shapes) [default: all].")
@click.option("--sharings", default=None, help="UxR list for whole decodes and batch rows [default: 12x1,4x3,2x6].")
@click.option("--lm-head", "lm_heads", default=None,
              help="Random-weight decodes: untied (exits disagree), tied (exits agree), or both [default: untied].")
@click.option("--sequences", type=click.IntRange(min=1), default=None, help="Sequences decoded end to end [8].")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens per decode [the checkpoint's or config's own, else 128].")
@click.option("--batch-sizes", default=None, help="Batch rows: sequences per step [1,2,4,8,16,32].")
@click.option("--batch-ctx", "batch_ctxs", default=None, help="Batch rows: mean KV lengths [128,512].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU intra-op threads (default 1).")
@click.option("--quick", is_flag=True, help="A few samples of a reduced set (smoke test).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def measure_cmd(device: str, out: str, checkpoint: str | None, config: str | None, model: str,
                model_specs: tuple[Path, ...], parts: str | None, sharings: str | None, lm_heads: str | None,
                sequences: int | None, max_new_tokens: int | None, batch_sizes: str | None, batch_ctxs: str | None,
                threads: int | None, quick: bool, as_json: bool) -> None:
    """Time decode steps, whole decodes, batched steps and single ops of speedsim's decoders here, in the
    measured-CSV schema."""
    from speedsim.validation.measure import measure, plan_from_options

    plan = plan_from_options(parts, sharings, lm_heads, sequences, max_new_tokens, batch_sizes, batch_ctxs, quick)
    summary = measure(device, out, checkpoint, config, plan, threads, model, model_specs)
    if as_json:
        emit_json(summary)
        return
    click.echo(measure_text(summary))


# sweeps and reports ----------------------------------------------------------------------------

@cli.command("sweep")
@click.argument("spec_file", metavar="SPEC_FILE")  # text, not click.Path (a NUL byte: a traceback there):
@click.option("--out", "out_text", metavar="DIR", required=True,  # speedsim.userpath checks both, naming them
              help="Results directory (results.parquet, results.csv, runs.jsonl); re-running resumes.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Local worker processes.")
@click.option("--scheduler", default=None,
              help="Address of a running Dask scheduler: tcp://HOST:PORT (or HOST:PORT) or ws://HOST:PORT; "
                   "no TLS or UCX.")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some runs failed on bad input.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bar).")
def sweep_cmd(spec_file: str, out_text: str, workers: int, scheduler: str | None, allow_failures: bool,
              as_json: bool) -> None:
    """Run every simulation of a sweep spec (experiments/*.yaml) into one results table."""
    from speedsim.sweep import run_sweep

    summary = run_sweep(spec_file, out_text, workers=workers, scheduler=scheduler, progress=not as_json)
    out = summary.out
    if as_json:
        emit_json(summary.as_dict())
    else:
        if summary.bad_journal_lines:
            click.echo(dropped_journal_lines_text(summary.bad_journal_lines, out), err=True)
        click.echo(sweep_text(summary, out))
    if summary.failed and not allow_failures:
        click.echo(failed_runs_text(summary.failed, out), err=True)
        sys.exit(1)


@cli.command("report")
@click.option("--out", metavar="DIR", default=None,  # text: speedsim.userpath checks it (and --cache) as given
              help="Report directory (default: the project's reports/).")
@click.option("--full", is_flag=True, help="Run the full latency_vs_depth and acceptance specs, not the reduced default.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Local worker processes.")
@click.option("--scheduler", default=None,
              help="Address of a running Dask scheduler: tcp://HOST:PORT (or HOST:PORT) or ws://HOST:PORT; "
                   "no TLS or UCX.")
@click.option("--cache", metavar="DIR", default=None,
              help="Keep the sweeps' results here and resume from them (default: recompute in a temporary directory).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bar).")
def report_cmd(out: str | None, full: bool, workers: int, scheduler: str | None, cache: str | None,
               as_json: bool) -> None:
    """Run the default study and the SPEED-paper comparison, validate, write figures and reports/README.md."""
    from speedsim.paths import REPORT_DIR
    from speedsim.report.build import build_report

    summary = build_report(REPORT_DIR if out is None else out, full=full, workers=workers, scheduler=scheduler, cache=cache,
                           progress=not as_json)
    if as_json:
        emit_json(summary)
        return
    click.echo(report_text(summary))


def usage_message(err: click.ClickException) -> str:
    """A click usage error as `WHERE: message`, WHERE the option or argument it is about (as every
    speedsim error names its source), the message in click's words otherwise."""
    param = getattr(err, "param", None)
    where = None
    if param is not None:
        where = "/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name
    if isinstance(err, click.exceptions.NoArgsIsHelpError) and err.ctx is not None:
        commands = getattr(err.ctx.command, "commands", {})
        return f"a command is needed: {', '.join(sorted(commands))}"
    if isinstance(err, click.NoSuchOption):
        close = f" (did you mean {', '.join(sorted(err.possibilities))}?)" if err.possibilities else ""
        return f"{err.option_name}: no such option{close}"
    if isinstance(err, click.BadOptionUsage):
        needs = "requires an argument" in err.message
        return f"{err.option_name}: {'needs a value' if needs else err.message}"
    if isinstance(err, click.MissingParameter) and where is not None:
        return f"{where}: missing (it is required)"
    if isinstance(err, click.BadParameter) and where is not None:
        return f"{where}: {err.message}"
    return " ".join(err.format_message().split())


def run(args: list[str] | None = None) -> int:
    """Run the CLI on `args` (default: sys.argv[1:]); the exit status, user errors as 2."""
    try:
        cli.main(args=args, prog_name="speedsim", standalone_mode=False)
    except UserError as err:  # one line, whatever a file name or value in it holds (a newline, an escape)
        click.echo(f"speedsim: error: {one_line(str(err))}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("speedsim: interrupted", err=True)
        return 130
    except Terminated:
        click.echo("speedsim: terminated", err=True)
        return 128 + signal.SIGTERM
    except click.ClickException as err:  # a usage error (bad option value, missing option): one line too
        hint = ""
        if isinstance(err, click.UsageError) and err.ctx is not None:
            hint = f" (see {' '.join(['speedsim', *err.ctx.command_path.split()[1:]])} --help)"
        click.echo(f"speedsim: error: {one_line(usage_message(err))}{hint}", err=True)
        return err.exit_code
    except BrokenPipeError:
        return 0
    except SystemExit as exit_:  # a command's own exit status (sweep: some runs failed)
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def main() -> None:
    """Console entry point: runs the CLI, turning user errors into exit status 2 (and SIGTERM into an
    unwinding `Terminated`, exit status 143)."""
    install_sigterm_handler()
    sys.exit(run())


if __name__ == "__main__":
    main()
