"""Serving studies: latency-throughput curves and where SPEED stops paying off as the batch grows.

A study spec (`experiments/serving.yaml`) names profiles, decoder configs (UxR, method, the real
exit trace that drives them), loads and batch sizes. Two tables come out:

- `curves`: per profile, config and load, the achieved tokens/s and the p50/p99 time per output
  token. A load is a fraction of the config's nominal capacity on that profile: `max_batch`
  requests in flight, each taking as long as it would alone;
- `crossover`: per profile, config and batch size, the saturated throughput (every batch slot
  busy), with the utilisations that say why it stops growing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from speedsim import defaults
from speedsim.run import RunParams
from speedsim.serve.run import serve
from speedsim.yamlio import read_mapping, validate_as

SATURATED = "poisson:1e9"  # arrivals far faster than service: every batch slot stays busy


class StudyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sharing: str
    method: str
    trace: str


class ServingStudy(BaseModel):
    """A serving study; sizes are kept small enough for the report's time budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "serving"
    description: str = ""
    model: str = "t5base"
    requests: int = Field(120, ge=1, le=100_000)
    max_batch: int = Field(defaults.MAX_BATCH, ge=1, le=defaults.MAX_BATCH_LIMIT)
    seed: int = Field(defaults.SEED, ge=0)
    profiles: list[str] = Field(min_length=1)
    configs: list[StudyConfig] = Field(min_length=1)
    loads: list[float] = Field(min_length=1, description="fractions of the nominal capacity")
    batches: list[int] = Field(default_factory=list, description="batch sizes of the crossover table")
    reduced: dict[str, Any] = Field(default_factory=dict, description="overrides of the default (reduced) study")


def load_study(path: Path | str, full: bool = True) -> ServingStudy:
    """Read a study spec; without `full`, its `reduced:` overrides apply."""
    study = validate_as(ServingStudy, read_mapping(path, "serving study"), str(path))
    if not full and study.reduced:
        study = validate_as(ServingStudy, {**study.model_dump(), **study.reduced, "reduced": {}}, str(path))
    return study


def _spec(study: ServingStudy, profile: str, cfg: StudyConfig, arrivals: str, requests: int,
          max_batch: int) -> RunParams:
    return RunParams(profile=profile, model=study.model, sharing=cfg.sharing, serve_method=cfg.method,
                     arrivals=arrivals, requests=requests, trace=cfg.trace, max_batch=max_batch,
                     serve_seed=study.seed)


def curves(study: ServingStudy) -> pd.DataFrame:
    """p50/p99 time per output token against achieved throughput, per profile, config and load."""
    rows = []
    for profile in study.profiles:
        for cfg in study.configs:
            alone = serve(_spec(study, profile, cfg, "poisson:1", 1, 1))  # one request's own latency
            capacity = study.max_batch / (alone.e2e_us.mean * 1e-6)   # requests per second
            for load in study.loads:
                r = serve(_spec(study, profile, cfg, f"poisson:{load * capacity:.6g}", study.requests,
                                study.max_batch))
                rows.append({"profile": profile, "sharing": cfg.sharing, "method": cfg.method, "load": load,
                             "rate_per_s": load * capacity, "tokens_per_s": r.throughput_tokens_per_s,
                             "tpot_p50_us": r.tpot_us.p50, "tpot_p99_us": r.tpot_us.p99,
                             "ttft_p99_us": r.ttft_us.p99, "mean_batch": r.mean_batch})
    return pd.DataFrame(rows)


def crossover(study: ServingStudy) -> pd.DataFrame:
    """Saturated throughput per profile, config and batch size, with the utilisations behind it."""
    rows = []
    for profile in study.profiles:
        for cfg in study.configs:
            for b in study.batches:
                r = serve(_spec(study, profile, cfg, SATURATED, max(2 * b, 8), b))
                rows.append({"profile": profile, "sharing": cfg.sharing, "method": cfg.method, "batch": b,
                             "tokens_per_s": r.throughput_tokens_per_s, "tpot_p50_us": r.tpot_us.p50,
                             "util_compute": r.utilization.compute, "util_dram": r.utilization.dram,
                             "token_passes_per_step": r.mean_tokens_per_step})
    return pd.DataFrame(rows)


def speed_limit(table: pd.DataFrame, deep: str = "12x1") -> pd.DataFrame:
    """Per profile and SPEED config, the smallest batch at which its saturated throughput no longer
    beats the unshared `deep` decoder's (NaN: it beats it at every batch studied), and why."""
    out = []
    deep_rows = table[(table["sharing"] == deep) & (table["method"] == "unshared")]
    base = {(str(r["profile"]), int(r["batch"])): float(r["tokens_per_s"]) for _, r in deep_rows.iterrows()}
    for (profile, sharing), part in table[table["method"] == "speed"].groupby(["profile", "sharing"], sort=True):
        lost = None
        for _, row in part.sort_values("batch").iterrows():
            other = base.get((str(profile), int(row["batch"])))
            if other is not None and row["tokens_per_s"] <= other:
                lost = row
                break
        why = ""
        if lost is not None:
            why = (f"compute-bound steps ({lost['util_compute']:.0%} of the matrix peak)"
                   if lost["util_compute"] > 0.5 else
                   f"{lost['token_passes_per_step'] / lost['batch']:.1f} token passes per request per step "
                   "(pipeline depth and flushes) against one for the unshared decoder")
        out.append({"profile": profile, "sharing": sharing,
                    "batch_where_speed_stops_winning": int(lost["batch"]) if lost is not None else None,
                    "why": why})
    return pd.DataFrame(out)
