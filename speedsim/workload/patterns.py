"""The measured patterns (`experiments/measured/*/measured.csv`) as kernel programs.

Each function builds exactly what `measure.py` times for one row, so the simulator is checked
against the same work: tensor identities follow which weights and caches that script shares
(e.g. a sequential group reuses L layer weights R times, each repeat with its own KV cache).
"""

from __future__ import annotations

import re
from functools import lru_cache

from speedsim.errors import UserError
from speedsim.hardware import BYTES_PER_ELEMENT
from speedsim.limits import Work
from speedsim.sharing import Sharing
from speedsim.workload.kernels import ACT, ACTIVATIONS, COPY, GEMM, Access, Kernel, Program
from speedsim.workload.layers import decoder_layer, lm_head
from speedsim.workload.models import ModelSpec
from speedsim.workload.primitives import attention, bookkeeping, kv_write, linear, rmsnorm
from speedsim.workload.rules import KernelRules
from speedsim.workload.steps import Seq, StepContext, pipelined_batch, unshared_batch, with_source

CEILING_PATTERNS = re.compile(r"copy_(\d+)(MiB|GiB)|gemm_(bf16|tf32|fp32|fp16)_(\d+)|launch_add_x100")
# a GEMV of `measure`'s two shapes, or of any shape: outN_inK (N output features, K input features)
GEMV_PATTERNS = re.compile(r"W256MiB|W16MiB|out(\d+)_in(\d+)")
SECTIONS: dict[str, re.Pattern[str] | set[str]] = {
    "ceiling": CEILING_PATTERNS,
    "gemv": GEMV_PATTERNS,
    "layer": {"multitoken"},
    "group": {"distinct", "sequential", "pipelined"},
    "lmhead": {"lmhead"},
    # whole decodes of recorded sequences (speedsim measure), per emitted token; simulated from the
    # exit trace named in `extra` (trace=FILE) by speedsim.simulate, not by a single program
    "decode": {"sequential", "pipelined"},
    # one decode step of B sequences at their own KV lengths (speedsim measure --parts batch): the
    # unshared L-deep decoder (one token each) or a SPEED UxR step (R tokens each, one per repeat)
    "batch": {"unshared", "pipelined"},
    # one framework op alone at the model's shapes (speedsim measure --parts ops): the kernel level
    "op": {"linear", "attention", "norm", "kv_write"},
    # a published batch-1 decode of an unshared L-layer model (n tokens after a ctx-token prompt, per token;
    # tp=, weight_dtype=, kv_dtype=, prefill=included|excluded in extra): simulated by speedsim.simulate
    "published": {"unshared"},
}
GEMV_SHAPES = {"W256MiB": (16384, 8192), "W16MiB": (2048, 4096)}  # (out, in) of measure.py's GEMVs


def copy(nbytes: float, rules: KernelRules, dtype: str = "bf16") -> Program:
    """Device-to-device copy of `nbytes` (read + write), one block per `rules.copy_block_bytes`."""
    return Program([Kernel("copy", 0.0, (Access("copy.src", ACTIVATIONS, nbytes),
                                          Access("copy.dst", ACTIVATIONS, 0.0, nbytes)),
                           parallel_work=max(1, int(nbytes // rules.copy_block_bytes)), dtype=dtype, kclass=COPY)])


def gemm(n: int, dtype: str, rules: KernelRules) -> Program:
    """Square n x n x n matrix product, tiled by the library's large-GEMM block."""
    b = BYTES_PER_ELEMENT[dtype]
    tiles = max(1, (n // rules.tile_tokens) * (n // rules.large_tile_features))
    return Program([Kernel(f"gemm_{dtype}", 2.0 * n**3,
                           (Access("gemm.a", ACTIVATIONS, n * n * b), Access("gemm.b", ACTIVATIONS, n * n * b),
                            Access("gemm.c", ACTIVATIONS, 0.0, n * n * b)),
                           parallel_work=tiles, matrix=True, dtype=dtype, kclass=GEMM)])


def tiny_adds(count: int, dtype: str = "fp32") -> Program:
    """`count` one-element in-place adds: the per-launch (eager) or per-node (graph) floor."""
    add = Kernel("add", 1.0, (Access(ACT, ACTIVATIONS, 4.0, 4.0),), parallel_work=1, dtype=dtype)
    return Program([add] * count)


def gemv_shape(tag: str) -> tuple[int, int]:
    """(out, in) features of a GEMV row's pattern (`GEMV_PATTERNS`: W256MiB, W16MiB or outN_inK)."""
    if tag in GEMV_SHAPES:
        return GEMV_SHAPES[tag]
    m = GEMV_PATTERNS.fullmatch(tag)
    assert m is not None and m.group(1), tag
    return int(m.group(1)), int(m.group(2))


def gemv(tag: str, rows: int, rules: KernelRules, dtype: str = "bf16") -> Program:
    """A `rows` x in by in x out product (one GEMV row at batch 1) of the shape `tag` names (`gemv_shape`)."""
    out_f, in_f = gemv_shape(tag)
    return Program(linear(f"gemv.{tag}", f"gemv.{tag}", rows, in_f, out_f, dtype, rules))


def _pass(functional: bool, name: str, rules: KernelRules) -> list[Kernel]:
    """speedsim's decoder builds each pass's attention plan on the host first (measure.py does not)."""
    return [bookkeeping(name, rules)] if functional else []


def layer_multitoken(spec: ModelSpec, n: int, ctx: int, rules: KernelRules, dtype: str,
                     functional: bool = False) -> Program:
    """One layer, n query tokens at the same depth, `ctx` keys already cached."""
    p = Program(_pass(functional, "pass", rules))
    p.extend(decoder_layer(spec, "L0", [ctx], ["kv.L0"], n, dtype, rules, cross_ids=["cross.0"]))
    return p


def group_distinct(spec: ModelSpec, L: int, R: int, ctx: int, rules: KernelRules, dtype: str,
                   functional: bool = False) -> Program:
    """R*L different layers, 1 token each, then the LM head on 1 row (unshared deep decoder)."""
    p = Program(_pass(functional, "pass", rules))
    for i in range(R * L):
        p.extend(decoder_layer(spec, f"L{i}", [ctx], [f"kv.L{i}"], 1, dtype, rules, cross_ids=["cross.0"]))
    p.extend(lm_head(spec, 1, dtype, rules, final_norm=functional))
    return p


def group_sequential(spec: ModelSpec, L: int, R: int, ctx: int, rules: KernelRules, dtype: str,
                     functional: bool = False) -> Program:
    """L shared layers applied R times to 1 token, each repeat with its own KV cache, then the head."""
    p = Program()
    for r in range(R):
        p.add(*_pass(functional, f"pass.r{r}", rules))
        for layer in range(L):
            p.extend(decoder_layer(spec, f"L{layer}", [ctx], [f"kv.L{layer}.r{r}"], 1, dtype, rules,
                                   cross_ids=[f"cross.{r}"]))
    p.extend(lm_head(spec, 1, dtype, rules, final_norm=functional))
    return p


def group_pipelined(spec: ModelSpec, L: int, R: int, ctx: int, rules: KernelRules, dtype: str,
                    functional: bool = False) -> Program:
    """SPEED's pipelined step: L shared layers once over R tokens at R repeats, then the head on R rows."""
    p = Program(_pass(functional, "pass", rules))
    caches = [[f"kv.L{layer}.r{r}" for r in range(R)] for layer in range(L)]
    cross = [f"cross.{r}" for r in range(R)]
    for layer in range(L):
        p.extend(decoder_layer(spec, f"L{layer}", [ctx] * R, caches[layer], 1, dtype, rules, cross_ids=cross))
    p.extend(lm_head(spec, R, dtype, rules, final_norm=functional))
    return p


def program_for_row(row: dict, models: dict[str, ModelSpec], rules: KernelRules, dtype: str,
                    where: str) -> tuple[Program, int]:
    """Kernel program of one measured row and how many launches one reported time covers.

    Returns (program, divisor): the row's time is the program's per-call time divided by divisor
    (`launch_add_x100` runs 100 launches and reports the time per launch).
    """
    section, pattern = row["section"], row["pattern"]
    if section not in SECTIONS:
        raise UserError(f"unknown section '{section}' (known: {', '.join(SECTIONS)})", where=where)
    known = SECTIONS[section]
    if not (known.fullmatch(pattern) if isinstance(known, re.Pattern) else pattern in known):
        raise UserError(f"unknown pattern '{pattern}' for section '{section}'", where=where)
    n, ctx, L, R = int(row["n"]), int(row["ctx"]), int(row["L"]), int(row["R"])
    if section in ("decode", "published"):
        raise UserError(f"{section} rows are whole decodes, not one program", where=where)
    if section == "ceiling":
        if pattern == "launch_add_x100":
            return tiny_adds(100), 100
        m = CEILING_PATTERNS.fullmatch(pattern)
        assert m is not None
        if m.group(1):
            return copy(float(int(m.group(1)) << (20 if m.group(2) == "MiB" else 30)), rules), 1
        return gemm(int(m.group(4)), m.group(3), rules), 1
    if section == "gemv":
        return gemv(pattern, max(1, n), rules, dtype), 1
    model = row.get("model") or ""
    if model not in models:
        raise UserError(f"unknown model '{model}': give its dimensions with --model-spec FILE", where=where)
    spec = models[model]
    # rows measured by `speedsim measure` (impl=speedsim) time speedsim's own decoder: its exits
    # include the final norm and each pass first builds its attention plan on the host
    functional = "impl=speedsim" in (row.get("extra") or "")
    if section == "layer":
        return layer_multitoken(spec, max(1, n), ctx, rules, dtype, functional), 1
    if section == "lmhead":
        return lm_head(spec, max(1, n), dtype, rules, final_norm=functional), 1
    if section == "batch":
        return batch_step(spec, pattern, n, L, R, row.get("extra") or "", rules, dtype, where), 1
    if section == "op":
        return op_program(spec, pattern, n, ctx, row.get("extra") or "", rules, dtype, where), 1
    if L < 1 or R < 1:
        raise UserError(f"group row needs L >= 1 and R >= 1 (got L={L}, R={R})", where=where)
    build = {"distinct": group_distinct, "sequential": group_sequential, "pipelined": group_pipelined}[pattern]
    return build(spec, L, R, ctx, rules, dtype, functional=functional), 1


def op_program(spec: ModelSpec, pattern: str, n: int, ctx: int, extra: str, rules: KernelRules, dtype: str,
               where: str) -> Program:
    """One framework op alone (section `op`, `speedsim.validation.measure.ops`), on the same tensors
    call after call: a linear map of n rows (`in=K;out=N`), attention of n items over `ctx` keys each
    (`queries=Q` per item, no mask), the model's norm over n rows, or a KV write of n tokens."""
    try:
        numbers = {key: int(_extra(extra, key) or 0) for key in ("in", "out", "queries")}
    except ValueError:
        raise UserError("an op row's extra needs integers (in=K;out=N or queries=Q)", where=where) from None
    if n < 1:
        raise UserError(f"an op row needs n >= 1 (got {n})", where=where)
    if pattern == "linear":
        if min(numbers["in"], numbers["out"]) < 1:
            raise UserError("a linear op row needs in=K;out=N (both >= 1) in its extra column", where=where)
        return Program(linear("op.linear", "op.w", n, numbers["in"], numbers["out"], dtype, rules))
    if pattern == "attention":
        if ctx < 1 or numbers["queries"] < 1:
            raise UserError("an attention op row needs ctx >= 1 keys and queries=Q >= 1 in its extra column",
                            where=where)
        ids = [f"op.kv{i}" for i in range(n)]
        return Program(attention("op.attn", spec, numbers["queries"], [ctx] * n, ids, False, dtype, rules,
                                 host_ops=1))
    if pattern == "norm":
        return Program([rmsnorm("op.norm", n, spec.d_model, dtype, rules.host_ops.norm)])
    return Program([kv_write("op.kv_write", ["op.cache"], n, spec.d_model, dtype, rules)])


def _extra(extra: str, key: str) -> str | None:
    for item in extra.split(";"):
        k, _, v = item.partition("=")
        if k.strip() == key:
            return v.strip()
    return None


def batch_step(spec: ModelSpec, pattern: str, n: int, L: int, R: int, extra: str, rules: KernelRules,
               dtype: str, where: str) -> Program:
    """A measured batched decode step (section `batch`): the sequences' KV lengths come from `extra`
    (`lengths=a/b/...`, `cross=S` encoder positions). The measured call is the layers and the LM
    head over buffers already filled: no embedding and no host-side plan."""
    try:
        lengths = [int(x) for x in (_extra(extra, "lengths") or "").split("/")]
        cross = int(_extra(extra, "cross") or spec.cross_attention_len or 0)
    except ValueError:
        raise UserError("a batch row needs lengths=A/B/... (and cross=S) in its extra column", where=where) from None
    if len(lengths) != n or min(lengths) < 1 or L < 1 or R < 1:
        raise UserError(f"a batch row needs n={n} KV lengths >= 1, L >= 1 and R >= 1", where=where)
    sharing = Sharing(L, R)
    ctx = StepContext(with_source(spec, cross) if spec.cross_attention_len else spec, sharing, cross, dtype, rules)
    seqs = [Seq(ctx, f"b{i}.") for i in range(n)]
    # each sequence's R tokens, the oldest deepest (position length + R - 1 - r at repeat r); the
    # static implementation attends over one buffer padded to the longest (a masked SDPA): every
    # token's attention walks that many keys
    padded = _extra(extra, "impl") == "static"
    longest = max(lengths)
    if pattern == "unshared":  # one token per sequence at its own length (or the longest)
        step = unshared_batch([(s, longest if padded else n) for s, n in zip(seqs, lengths, strict=True)])
    else:
        step = pipelined_batch([(s, [(longest + R - 1 if padded else n + R - 1 - r, r) for r in range(R)], 0)
                                for s, n in zip(seqs, lengths, strict=True)])
    return Program([k for k in step.kernels if k.launches])  # the measured loop has no host-side plan


# ------------------------------------------------------------------------- work, before building

@lru_cache(maxsize=256)
def layer_kernels(spec: ModelSpec, rules: KernelRules, dtype: str) -> tuple[int, int, int]:
    """(kernels of one decoder layer, how many of them touch each batch item's own tensors, kernels
    of the LM head) for `spec`: counted on a layer of one and of two items, not assumed."""
    def counts(items: int) -> tuple[int, int]:
        ids = [f"kv.{i}" for i in range(items)]
        layer = decoder_layer(spec, "L0", [1] * items, ids, 1, dtype, rules,
                              cross_ids=[f"x.{i}" for i in ids])
        return len(layer.kernels), sum(len(k.accesses) + (len(k.items.tensors) if k.items else 0)
                                       for k in layer.kernels)
    (kernels, one), (_, two) = counts(1), counts(2)
    return kernels, two - one, len(lm_head(spec, 1, dtype, rules, final_norm=True).kernels)


def layers_work(spec: ModelSpec, rules: KernelRules, dtype: str, layers: float, items: float,
                head: bool = True) -> Work:
    """`layers` decoder layer instances over `items` batch items each (and the LM head)."""
    kernels, item_kernels, head_kernels = layer_kernels(spec, rules, dtype)
    return Work.layers(layers, kernels, item_kernels, items) + Work(head_kernels if head else 0)


def decode_work(spec: ModelSpec, rules: KernelRules, dtype: str, L: int, R: int, tokens: int,
                methods: tuple[str, ...] = ("speed", "sequential")) -> Work:
    """Whole decodes of `tokens` emitted tokens in all, simulated by SPEED (about a step per token: L
    layers over up to R in-flight tokens) and/or sequentially (L x R layers per token), at the speed of
    a decode's kernels (`speedsim.limits.DECODE_KERNEL_SHARE`: their cost plans are reused)."""
    work = Work()
    if "speed" in methods:
        work += layers_work(spec, rules, dtype, float(tokens) * L, R)
    if "sequential" in methods:
        work += layers_work(spec, rules, dtype, float(tokens) * L * R, 1)
    return work.reused()


def row_work(row: dict, models: dict[str, ModelSpec], rules: KernelRules, dtype: str) -> Work:
    """What one call of the program `program_for_row` would build for `row` simulates, estimated from
    the row's sizes alone, before building anything (a group row of L = R = 4096 is 16.7 million
    layers). A row `program_for_row` refuses (an unknown section or model) or a decode row (its
    work is its traces', `decode_work`) is no work here."""
    section, pattern = row["section"], row["pattern"]
    n, L, R = int(row["n"]), int(row["L"]), int(row["R"])
    if section == "ceiling":
        return Work(100 if pattern == "launch_add_x100" else 1)
    if section == "op":  # one framework op; attention has one item per row, and is alone (no earlier
        # kernel's items for the residency to scan: `US_PER_ITEM_PAIR`)
        return Work(4, n) if pattern == "attention" else Work(4)
    if section == "gemv":
        return Work(4)
    spec = models.get(row.get("model") or "")
    if spec is None or section == "decode":
        return Work()
    if section == "layer":
        return layers_work(spec, rules, dtype, 1, 1, head=False)
    if section == "lmhead":
        return Work(layer_kernels(spec, rules, dtype)[2])
    if section == "batch":
        return (layers_work(spec, rules, dtype, L * R, n) if pattern == "unshared"
                else layers_work(spec, rules, dtype, L, float(n) * R))
    if section == "group":
        return (layers_work(spec, rules, dtype, L, R) if pattern == "pipelined"
                else layers_work(spec, rules, dtype, L * R, 1))
    return Work()
