"""Time real decode steps of speedsim's own functional decoder, in the measured-CSV schema.

`speedsim measure --device cpu|cuda --out CSV` writes the rows the simulator is validated
against (`section,model,mode,pattern,n,ctx,L,R,us_median,us_min,us_max,extra`, see
`experiments/measured/h200/README.md`) for this machine:

- ceilings: a memory copy, a square GEMM, the per-launch cost of a tiny op, GEMVs;
- one decoder layer of the model with n tokens at the same repeat (`layer/multitoken`);
- the shared group: unshared-deep (`distinct`, a U*R x 1 model), shared-sequential and
  SPEED-pipelined steps of the model, each followed by its exits (`group/*`);
- the LM head on n rows;
- whole decodes (`decode/sequential`, `decode/pipelined`): greedy and SPEED decoding of real
  sequences, per emitted token. The exit traces of those sequences are written beside the CSV
  (`<out>.traces.jsonl.gz`) so `speedsim validate` can simulate exactly the same decodes.

The model's dimensions are written as a model spec beside the CSV (`<out>.<model>.yaml`, for
`validate --model-spec`). Timing: warm-up, then the median (and min, max) of several samples of
back-to-back calls; on CUDA with CUDA events, and also replayed from a CUDA graph where the
step can be captured. Rows carry `impl=speedsim` in `extra`: they time speedsim's own decoder (exits
with the final norm, a host-side attention plan per pass), not measure.py's reference layer.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from speedsim.errors import UserError

IMPL = "impl=speedsim"  # marks rows that time speedsim's own decoder (see the module docstring)
COLUMNS = ["section", "model", "mode", "pattern", "n", "ctx", "L", "R", "us_median", "us_min", "us_max", "extra"]


@dataclass(frozen=True)
class Budget:
    """How hard to measure: samples of `inner` back-to-back calls after `warmup` calls."""

    samples: int = 7
    inner: int = 10
    warmup: int = 3


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str, budget: Budget) -> tuple[float, float, float]:
    """(median, min, max) microseconds per call over `budget.samples` samples."""
    for _ in range(budget.warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(budget.samples):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(budget.inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / budget.inner)
        else:
            t = time.perf_counter()
            for _ in range(budget.inner):
                fn()
            samples.append((time.perf_counter() - t) * 1e6 / budget.inner)
    return statistics.median(samples), min(samples), max(samples)


def graphed(fn: Callable[[], object], device: str) -> Callable[[], object] | None:
    """A CUDA-graph replay of `fn`, or None on CPU or when `fn` cannot be captured."""
    if device != "cuda":
        return None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay
    except Exception:  # noqa: BLE001 - any capture failure means: no graph row for this step
        return None


class Recorder:
    """Collects rows and writes the CSV atomically after every section (nothing lost on interrupt)."""

    def __init__(self, out: Path, device: str, budget: Budget):
        self.out, self.device, self.budget = out, device, budget
        self.rows: list[dict] = []

    def time(self, fn: Callable[[], object], inner: int | None = None, **row) -> None:
        budget = self.budget if inner is None else Budget(self.budget.samples, inner, self.budget.warmup)
        modes = [("eager", fn)]
        replay = graphed(fn, self.device)
        if replay is not None:
            modes.append(("graph", replay))
        for mode, f in modes:
            med, lo, hi = time_fn(f, self.device, budget)
            self.add(mode=mode, us_median=med, us_min=lo, us_max=hi, **row)

    def add(self, **row) -> None:
        full = {"section": "", "model": "", "mode": "", "pattern": "", "n": 0, "ctx": 0, "L": 0, "R": 0,
                "us_median": float("nan"), "us_min": float("nan"), "us_max": float("nan"), "extra": ""}
        full.update(row)
        for key in ("us_median", "us_min", "us_max"):
            full[key] = round(float(full[key]), 3)
        self.rows.append(full)

    def flush(self) -> None:
        tmp = self.out.with_name(self.out.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.out)


# ------------------------------------------------------------------------------ the model

def build_model(checkpoint: Path | None, config: Path | None, device: str, dtype: torch.dtype):
    """(model, name, sources, eos_id, max_new_tokens): a trained checkpoint, or a config with random weights."""
    from speedsim.model import SharedDecoder

    if checkpoint is not None:
        from speedsim.data import special_ids
        from speedsim.model.train import load_model, prepare_data
        from speedsim.trace.record import sample_indices

        model, tok, cfg = load_model(checkpoint)
        _, enc = prepare_data(cfg, tok)
        test = enc["test"]
        sources = [test[i].src for i in sample_indices(len(test), 64)]
        return model.to(device, dtype).eval(), cfg.name, sources, special_ids(tok)["eos"], cfg.eval.max_new_tokens
    from speedsim.model import SpeedConfig
    from speedsim.model.train import load_train_config, speed_config

    cfg = load_train_config(config)
    model = SharedDecoder(speed_config(cfg, cfg.data.vocab_size))
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randint(4, cfg.data.vocab_size, (cfg.data.max_src_tokens // 2,), generator=gen).tolist()
               for _ in range(64)]
    assert isinstance(model.config, SpeedConfig)
    return model.to(device, dtype).eval(), cfg.name, sources, None, cfg.eval.max_new_tokens


def model_spec(model, name: str, src_len: int) -> dict:
    c = model.config
    return {"name": name, "d_model": c.d_model, "n_heads": c.n_heads, "d_ff": c.d_ff, "ffn": c.ffn,
            "cross_attention_len": 0 if c.decoder_only else src_len, "vocab": c.vocab_size,
            "encoder_layers": c.encoder_layers}


def _variant(model, unique: int, repeats: int):
    """A model of the same dimensions with other sharing (random weights: timing does not depend on them)."""
    import dataclasses

    from speedsim.model import SharedDecoder

    cfg = dataclasses.replace(model.config, unique_layers=unique, repeats=repeats, exit_weights=None)
    p = next(model.parameters())
    return SharedDecoder(cfg).to(p.device, p.dtype).eval()


def _filled_cache(model, ctx: int):
    """A KV cache whose every (layer, repeat) slot holds `ctx` positions."""
    from speedsim.decode.cache import KVCache

    cache = KVCache.for_model(model)
    c = model.config
    p = next(model.parameters())
    if ctx:
        k = torch.randn(ctx, c.n_heads, c.head_dim, device=p.device, dtype=p.dtype)
        pos = torch.arange(ctx, device=p.device)
        for u in range(c.unique_layers):
            for r in range(c.repeats):
                cache.update(u, r, pos, k, k)
    return cache


def _cross(model, src_len: int):
    if model.config.decoder_only:
        return None
    p = next(model.parameters())
    src = torch.randint(4, model.config.vocab_size, (1, src_len), device=p.device)
    return model.cross_kv(model.encode(src))


# ------------------------------------------------------------------------------ sections

def ceilings(rec: Recorder, device: str, dtype: torch.dtype) -> None:
    mib = 1024 if device == "cuda" else 256
    src = torch.randn(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    med, lo, hi = time_fn(lambda: dst.copy_(src), device, Budget(rec.budget.samples, 5, rec.budget.warmup))
    rec.add(section="ceiling", pattern=f"copy_{mib}MiB", us_median=med, us_min=lo, us_max=hi,
            extra=f"GBps_rw={2 * mib * 2**20 / med / 1e3:.1f}")
    src = dst = None
    n = 8192 if device == "cuda" else 1024
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    rec.time(lambda: a @ b, inner=3, section="ceiling", pattern=f"gemm_{name}_{n}")
    t = torch.zeros(1, device=device)

    def adds():
        for _ in range(100):
            t.add_(1)
    med, lo, hi = time_fn(adds, device, Budget(rec.budget.samples, 5, 2))
    rec.add(section="ceiling", mode="eager", pattern="launch_add_x100", us_median=med / 100, us_min=lo / 100,
            us_max=hi / 100, extra="per launch")
    # GEMVs stream their whole weight per call: a few calls per sample are enough on a CPU
    gemv_budget = rec.budget if device == "cuda" else Budget(rec.budget.samples, 2, 1)
    for tag, (out_f, in_f) in {"W256MiB": (16384, 8192), "W16MiB": (2048, 4096)}.items():
        w = torch.randn(out_f, in_f, device=device, dtype=dtype)
        for n_rows in (1, 4, 16, 64):
            xx = torch.randn(n_rows, in_f, device=device, dtype=dtype)
            med, lo, hi = time_fn(lambda: F.linear(xx, w), device, gemv_budget)  # noqa: B023
            rec.add(section="gemv", mode="eager", pattern=tag, n=n_rows, us_median=med, us_min=lo, us_max=hi)


def layer_rows(rec: Recorder, model, name: str, src_len: int, ctxs: tuple[int, ...]) -> None:
    """One layer (a U=1, R=1 model of the same width) with n tokens at the same repeat."""
    one = _variant(model, 1, 1)
    cross = _cross(one, src_len)
    p = next(one.parameters())
    for ctx in ctxs:
        cache = _filled_cache(one, ctx)
        for n in (1, 2, 4, 8):
            x = torch.randn(n, one.config.d_model, device=p.device, dtype=p.dtype)
            pos = list(range(ctx, ctx + n))
            rec.time(lambda: one.group_pass(x, [0] * n, pos, cache, cross),  # noqa: B023
                     section="layer", model=name, pattern="multitoken", n=n, ctx=ctx, extra=IMPL)


def group_rows(rec: Recorder, model, name: str, src_len: int, ctxs: tuple[int, ...]) -> None:
    """Unshared-deep, shared-sequential and SPEED-pipelined steps of the model's UxR group."""
    U, R = model.config.unique_layers, model.config.repeats
    deep = _variant(model, U * R, 1)
    cross, deep_cross = _cross(model, src_len), _cross(deep, src_len)
    p = next(model.parameters())
    d = model.config.d_model
    for ctx in ctxs:
        cache, deep_cache = _filled_cache(model, ctx + R), _filled_cache(deep, ctx + R)
        x1 = torch.randn(1, d, device=p.device, dtype=p.dtype)
        xr = torch.randn(R, d, device=p.device, dtype=p.dtype)

        def distinct():
            return deep.exit_logits(deep.group_pass(x1, [0], [ctx], deep_cache, deep_cross))  # noqa: B023

        def sequential():
            y = x1  # noqa: B023
            for r in range(R):
                y = model.group_pass(y, [r], [ctx], cache, cross)  # noqa: B023
            return model.exit_logits(y)

        def pipelined():
            # R tokens at R repeats: the oldest (deepest) one furthest along the sequence
            y = model.group_pass(xr, list(range(R)), [ctx + R - 1 - r for r in range(R)], cache, cross)  # noqa: B023
            return model.exit_logits(y)

        for pattern, fn, n in (("distinct", distinct, 1), ("sequential", sequential, 1), ("pipelined", pipelined, R)):
            rec.time(fn, section="group", model=name, pattern=pattern, n=n, ctx=ctx, L=U, R=R, extra=IMPL)
    for n in (1, 2, 4, 8):
        xx = torch.randn(n, d, device=p.device, dtype=p.dtype)
        rec.time(lambda: model.exit_logits(xx), section="lmhead", model=name, pattern="lmhead", n=n,  # noqa: B023
                 extra=IMPL)


def decode_rows(rec: Recorder, model, name: str, sources: list, eos_id: int | None, max_new: int,
                sequences: int, trace_path: Path, repeats_of_timing: int) -> None:
    """Whole greedy and SPEED decodes of `sequences` sources, per emitted token; traces written beside."""
    from speedsim.decode import greedy, speed
    from speedsim.trace.io import write_traces

    srcs = sources[:sequences]
    results = [speed(model, s, max_new, eos_id=eos_id, seq_id=str(i), model_name=name) for i, s in enumerate(srcs)]
    for res, s in zip(results, srcs, strict=True):
        if greedy(model, s, max_new, eos_id=eos_id) != res.tokens:
            raise RuntimeError("SPEED and greedy decodes differ: the functional decoder is not lossless")
    write_traces(trace_path, [r.trace for r in results])
    tokens = sum(len(r.tokens) for r in results)
    U, R = model.config.unique_layers, model.config.repeats
    extra = f"trace={trace_path.name};tokens={tokens};sequences={len(srcs)}"

    def run_greedy():
        for s in srcs:
            greedy(model, s, max_new, eos_id=eos_id)

    def run_speed():
        for s in srcs:
            speed(model, s, max_new, eos_id=eos_id)

    budget = Budget(samples=repeats_of_timing, inner=1, warmup=1)
    for pattern, fn in (("sequential", run_greedy), ("pipelined", run_speed)):
        med, lo, hi = time_fn(fn, rec.device, budget)
        rec.add(section="decode", model=name, mode="eager", pattern=pattern, n=len(srcs),
                ctx=round(sum(len(s) for s in srcs) / len(srcs)), L=U, R=R, us_median=med / tokens,
                us_min=lo / tokens, us_max=hi / tokens, extra=extra)


def measure(device: str, out: Path, checkpoint: Path | None = None, config: Path | None = None,
            sequences: int = 8, quick: bool = False, threads: int | None = None) -> dict:
    """Run every section; return a summary. The CSV is rewritten after every section.

    On a CPU PyTorch runs with `threads` intra-op threads (default 1: batch-1 decoding gains
    little from more, and one thread is far less disturbed by other work on the machine).
    """
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{device}' (cpu or cuda)", where="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device is available here", where="--device")
    if checkpoint is None and config is None:
        raise UserError("give --checkpoint DIR or --config YAML", where="--checkpoint")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cpu":
        torch.set_num_threads(threads or 1)
    budget = Budget(samples=3, inner=2, warmup=1) if quick else Budget()
    rec = Recorder(out, device, budget)
    started = time.time()
    with torch.inference_mode():
        model, cfg_name, sources, eos_id, max_new = build_model(checkpoint, config, device, dtype)
    name = f"speed-{cfg_name}"
    src_len = max(1, round(sum(len(s) for s in sources) / len(sources)))
    spec_path = out.with_name(f"{out.stem}.{name}.yaml")
    spec_path.write_text(yaml.safe_dump(model_spec(model, name, src_len), sort_keys=False))
    ctxs = (16,) if quick else (32, 128)
    with torch.inference_mode():
        if not quick:
            ceilings(rec, device, dtype)
            rec.flush()
        layer_rows(rec, model, name, src_len, ctxs)
        rec.flush()
        group_rows(rec, model, name, src_len, ctxs)
        rec.flush()
        decode_rows(rec, model, name, sources, eos_id, max_new if not quick else 8, 2 if quick else sequences,
                    out.with_name(f"{out.stem}.traces.jsonl.gz"), 1 if quick else 3)
        rec.flush()
    env = {"device": device, "torch": str(torch.__version__), "python": platform.python_version(),
           "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
           "model": name, "rows": len(rec.rows), "elapsed_s": round(time.time() - started, 1),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if device == "cuda":
        env["name"] = torch.cuda.get_device_name(0)
    env_path = out.with_name(f"{out.stem}.env.yaml")
    env_path.write_text(yaml.safe_dump(env, sort_keys=False))
    return {"out": str(out), "model_spec": str(spec_path), **env}
