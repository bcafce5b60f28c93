"""The command line's options as a `RunParams`: `speedsim simulate` and `speedsim serve` build their run here.

The `--synthetic` text is read once into its typed fields; a bad option is a `UserError` naming
its flag (`speedsim.run.params.run_from_options`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speedsim import defaults, limits
from speedsim.errors import UserError
from speedsim.hardware.whatif import split_setting
from speedsim.run.params import RunParams, run_from_options
from speedsim.trace.workload import SyntheticWorkload


def workload_options(trace: str | Path | None, synthetic: str | None) -> dict[str, Any]:
    """The run fields of `--trace FILE` or `--synthetic TEXT` (exactly one of them)."""
    if (trace is None) == (synthetic is None):
        raise UserError("give exactly one of --trace FILE or --synthetic SPEC", where="--trace/--synthetic")
    if trace is not None:
        return {"trace": str(trace)}
    w = SyntheticWorkload.from_text(synthetic or "")
    fitted = w.fit is not None
    return {"fit": w.fit, "mispredict": w.mispredict, "burst": w.burst, "seed": w.seed, "src_len": w.src_len,
            "agree": w.agree,
            # None with fit: the fitted trace's own lengths and one sequence per real one
            "out_len": w.out_len if w.out_len is not None or fitted else defaults.OUT_LEN,
            "seqs": w.seqs if w.seqs is not None or fitted else defaults.SEQS}


def settings_options(settings: Sequence[str], where: str = "--set") -> tuple[tuple[str, str], ...]:
    """The run's `overrides` from `--set PATH=VALUE` texts (each one's shape checked here, naming `where`;
    the path and value are checked against the profile when it is loaded)."""
    return tuple(split_setting(text, where) for text in settings)


def simulate_run(*, profile: str, model: str, sharing: str, trace: str | Path | None, synthetic: str | None,
                 baselines: tuple[str, ...], mode: str, src_len: int | None, limit: int | None, launch_exit: int,
                 max_in_flight: int | None, device_control: bool, bounds: bool,
                 settings: Sequence[str] = (), speculative: dict | None = None,
                 deployment: dict | None = None) -> RunParams:
    """`speedsim simulate`'s options as a run (`--src-len` overrides a synthetic text's `src=`; `settings`:
    the `--set PATH=VALUE` what-ifs; `speculative`: the speculative methods' fields given, `methods`,
    `gamma`, `draft_exit`, `draft_model`, `draft_depth`, `draft_trace`, `draft_accept`; `deployment`: the
    precision and parallelism fields given, `weight_dtype`, `kv_dtype`, ...)."""
    fields = workload_options(trace, synthetic)
    fields |= {k: v for k, v in (speculative or {}).items() if v is not None and v != ()}
    fields |= {k: v for k, v in (deployment or {}).items() if v is not None}
    if settings:
        fields["overrides"] = settings_options(settings)
    if src_len is not None:
        if synthetic is not None and src_len > limits.MAX_SYNTHETIC_LEN:  # the synthetic traces' own source
            raise UserError(f"must be at most {limits.MAX_SYNTHETIC_LEN} tokens with --synthetic, got {src_len}",
                            where="--src-len")
        fields["src_len"] = src_len
    return run_from_options(profile=profile, model=model, sharing=sharing, mode=mode, baselines=baselines, limit=limit,
                            launch_exit=launch_exit, max_in_flight=max_in_flight, device_control=device_control,
                            bounds=bounds, **fields)


def serve_run(*, profile: str, model: str, sharing: str, trace: str | Path | None, synthetic: str | None,
              method: str, arrivals: str, requests: int, max_batch: int, kv_capacity_GB: float | None,
              prefill: str, prefill_budget: int, seed: int, mode: str, settings: Sequence[str] = (),
              speculative: dict | None = None, deployment: dict | None = None) -> RunParams:
    """`speedsim serve`'s options as a serving run (`--seed` seeds arrivals and sampling, `serve_seed`;
    `settings`: the `--set PATH=VALUE` what-ifs; `speculative`: the speculative method's fields given;
    `deployment`: the precision and parallelism fields given)."""
    fields = workload_options(trace, synthetic)
    fields |= {k: v for k, v in (speculative or {}).items() if v is not None and v != ()}
    fields |= {k: v for k, v in (deployment or {}).items() if v is not None}
    if settings:
        fields["overrides"] = settings_options(settings)
    return run_from_options(profile=profile, model=model, sharing=sharing, mode=mode, serve_method=method,
                            arrivals=arrivals, requests=requests, max_batch=max_batch, kv_capacity_GB=kv_capacity_GB,
                            prefill=prefill, prefill_budget=prefill_budget, serve_seed=seed, **fields)
