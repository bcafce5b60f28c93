"""Step sections of `speedsim measure`: ceilings, one layer, the shared group, the LM head, and
whole decodes of speedsim's functional decoder (`speedsim.decode`, eager).

Rows carry `impl=speedsim` in `extra`: they time speedsim's own decoder (exits with the final
norm, a host-side attention plan per pass), not the reference layer of
`experiments/measured/h200/measure.py`. Layer and group rows are eager only: the host-side plan
copies index tensors to the device on every pass, which a CUDA graph cannot capture (the
`loop` and `batch` parts time graph-replayed steps over static buffers instead).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from speedsim.decode import KVCache, greedy, speed
from speedsim.model import SharedDecoder
from speedsim.sharing import Sharing
from speedsim.trace import write_traces
from speedsim.validation.measure.loop import trace_record
from speedsim.validation.measure.models import variant
from speedsim.validation.measure.timing import Budget, TimingLog, time_fn

IMPL = "impl=speedsim"  # marks rows that time speedsim's own decoder (see the module docstring)


def _filled_cache(model: SharedDecoder, ctx: int) -> KVCache:
    """A KV cache whose every (layer, repeat) slot holds `ctx` positions."""
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


def _cross(model: SharedDecoder, src_len: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    if model.config.decoder_only:
        return None
    p = next(model.parameters())
    src = torch.randint(4, model.config.vocab_size, (1, src_len), device=p.device)
    return model.cross_kv(model.encode(src))


# ------------------------------------------------------------------------------ sections

def ceilings(rec: TimingLog, device: str, dtype: torch.dtype) -> None:
    """A large copy, a square GEMM, the per-launch cost of a tiny op, and GEMVs of two sizes."""
    _copy_row(rec, device, 1024 if device == "cuda" else 256)
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
    if device == "cuda":  # a 7B decoder's GEMVs at one row (Llama-2-7B's 4096 x 11008 MLP): whether a GEMV whose
        # blocks fill a second wave only partly streams at the DRAM bandwidth (issue 23's dec7b elasticity)
        for out_f, in_f in ((4096, 4096), (11008, 4096), (4096, 11008)):
            w = torch.randn(out_f, in_f, device=device, dtype=dtype)
            xx = torch.randn(1, in_f, device=device, dtype=dtype)
            med, lo, hi = time_fn(lambda: F.linear(xx, w), device, gemv_budget)  # noqa: B023
            rec.add(section="gemv", mode="eager", pattern=f"out{out_f}_in{in_f}", n=1, us_median=med, us_min=lo,
                    us_max=hi, extra=f"GBps={2 * out_f * in_f / med / 1e3:.1f}")


def _copy_row(rec: TimingLog, device: str, mib: int) -> None:
    """A device-to-device copy of `mib` MiB (the buffers are freed on return)."""
    src = torch.randn(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    med, lo, hi = time_fn(lambda: dst.copy_(src), device, Budget(rec.budget.samples, 5, rec.budget.warmup))
    rec.add(section="ceiling", pattern=f"copy_{mib}MiB", us_median=med, us_min=lo, us_max=hi,
            extra=f"GBps_rw={2 * mib * 2**20 / med / 1e3:.1f}")


def layer_rows(rec: TimingLog, model: SharedDecoder, name: str, src_len: int, ctxs: tuple[int, ...]) -> None:
    """One layer (a U=1, R=1 model of the same width) with n tokens at the same repeat."""
    one = variant(model, Sharing(1, 1))
    cross = _cross(one, src_len)
    p = next(one.parameters())
    for ctx in ctxs:
        cache = _filled_cache(one, ctx)
        for n in (1, 2, 4, 8):
            x = torch.randn(n, one.config.d_model, device=p.device, dtype=p.dtype)
            pos = list(range(ctx, ctx + n))
            rec.time(lambda: one.group_pass(x, [0] * n, pos, cache, cross), graph=False,  # noqa: B023
                     section="layer", model=name, pattern="multitoken", n=n, ctx=ctx, extra=IMPL)


def group_rows(rec: TimingLog, model: SharedDecoder, name: str, src_len: int, ctxs: tuple[int, ...]) -> None:
    """Unshared-deep, shared-sequential and SPEED-pipelined steps of the model's UxR group."""
    U, R = model.config.unique_layers, model.config.repeats
    deep = variant(model, Sharing(U * R, 1))
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
            rec.time(fn, graph=False, section="group", model=name, pattern=pattern, n=n, ctx=ctx, L=U, R=R, extra=IMPL)
    for n in (1, 2, 4, 8):
        xx = torch.randn(n, d, device=p.device, dtype=p.dtype)
        rec.time(lambda: model.exit_logits(xx), section="lmhead", model=name, pattern="lmhead", n=n,  # noqa: B023
                 extra=IMPL)


def decode_rows(rec: TimingLog, model: SharedDecoder, name: str, sources: list, eos_id: int | None, max_new: int,
                sequences: int, trace_path: Path, repeats_of_timing: int) -> None:
    """Whole greedy and SPEED decodes of `sequences` sources with the functional decoder, per emitted
    token (n = emitted tokens per sequence); traces written beside."""
    srcs = sources[:sequences]
    results = [speed(model, s, max_new, eos_id=eos_id) for s in srcs]
    for res, s in zip(results, srcs, strict=True):
        if greedy(model, s, max_new, eos_id=eos_id) != res.tokens:
            raise RuntimeError("SPEED and greedy decodes differ: the functional decoder is not lossless")
    write_traces(trace_path, [trace_record(r.exits, r.src_len, r.repeats, r.eos_id, str(i), name)
                              for i, r in enumerate(results)])
    tokens = sum(len(r.tokens) for r in results)
    U, R = model.config.unique_layers, model.config.repeats
    extra = f"impl=functional;trace={trace_path.name};tokens={tokens};sequences={len(srcs)}"

    def run_greedy():
        for s in srcs:
            greedy(model, s, max_new, eos_id=eos_id)

    def run_speed():
        for s in srcs:
            speed(model, s, max_new, eos_id=eos_id)

    budget = Budget(samples=repeats_of_timing, inner=1, warmup=1)
    for pattern, fn in (("sequential", run_greedy), ("pipelined", run_speed)):
        med, lo, hi = time_fn(fn, rec.device, budget)
        rec.add(section="decode", model=name, mode="eager", pattern=pattern, n=round(tokens / len(srcs)),
                ctx=round(sum(len(s) for s in srcs) / len(srcs)), L=U, R=R, us_median=med / tokens,
                us_min=lo / tokens, us_max=hi / tokens, extra=extra)


