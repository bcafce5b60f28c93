"""Step workloads: kernel counts, FLOPs and bytes of the measured layer shapes."""

from __future__ import annotations

import pytest

from speedsim.hardware import HardwareProfile
from speedsim.paths import H200_MEASURED
from speedsim.validation import read_measured
from speedsim.workload import BUILTIN_MODELS, KernelRules
from speedsim.workload.layers import decoder_layer, lm_head
from speedsim.workload.patterns import copy, gemm, group_pipelined, group_sequential, program_for_row
from speedsim.workload.primitives import attention, bookkeeping, elementwise


@pytest.mark.parametrize("model, n, kernels", [("t5base", 1, 19), ("dec1b", 1, 15)])
def test_layer_kernel_count_matches_profiled_breakdown(model, n, kernels, rules):
    """A one-token layer launches as many kernels as torch.profiler saw on the H200 (kernels.csv)."""
    layer = decoder_layer(BUILTIN_MODELS[model], "L0", [1024], ["kv"], n, "bf16", rules, cross_ids=["x"])
    assert len(layer) == kernels


def test_layer_bytes_and_flops(rules):
    """Weight bytes of a layer equal its parameter count x 2 bytes; FLOPs ~ 2 x weights x tokens."""
    spec = BUILTIN_MODELS["dec1b"]
    layer = decoder_layer(spec, "L0", [128], ["kv"], 4, "bf16", rules)
    weights = sum(a.read_bytes for k in layer.kernels for a in k.accesses if a.tclass == "weights")
    norms = 2 * spec.d_model
    assert weights == pytest.approx((spec.layer_weight_elements() - norms) * 2)
    linear_flops = sum(k.flops for k in layer.kernels if k.matrix and k.kind == "stream")
    assert linear_flops == pytest.approx(2 * 4 * (spec.layer_weight_elements() - norms), rel=1e-6)


def test_pipelined_step_reads_group_weights_once(rules):
    """SPEED's pipelined step reads each shared weight once for R tokens; sequential reads it R times."""
    spec = BUILTIN_MODELS["t5base"]

    def weight_reads(p):
        return sum(a.read_bytes for k in p.kernels for a in k.accesses if a.tclass == "weights")

    seq = group_sequential(spec, 3, 4, 512, rules, "bf16")
    pipe = group_pipelined(spec, 3, 4, 512, rules, "bf16")
    assert weight_reads(seq) == pytest.approx(4 * weight_reads(pipe))


def test_lm_head_bytes_are_embeddings_class(rules):
    spec = BUILTIN_MODELS["dec1b"]
    head = lm_head(spec, 2, "bf16", rules, final_norm=False)
    emb = sum(a.read_bytes for k in head.kernels for a in k.accesses if a.tclass == "embeddings")
    assert emb == spec.vocab * spec.d_model * 2


def test_every_measured_row_has_a_program(rules):
    """Every pattern of the measured CSV is expressible as a kernel program."""
    for row in read_measured(H200_MEASURED):
        program, divisor = program_for_row(row.__dict__, BUILTIN_MODELS, rules, "bf16", where="test")
        assert len(program) >= 1 and divisor >= 1


def rules_with(tiny_profile_dict: dict, **software) -> KernelRules:
    tiny_profile_dict["software"] = software
    return KernelRules.from_profile(HardwareProfile.model_validate(tiny_profile_dict))


def test_block_sizes_come_from_the_profile(tiny_profile_dict):
    """Elementwise, copy and square-GEMM kernels expose the parallel work the profile's software
    section sets (elementwise blocks, copy blocks, GEMM tiles), not numbers fixed in code."""
    rules = rules_with(tiny_profile_dict, elementwise_block_elements=1024, copy_block_KiB=16,
                       gemm_tile_tokens=64, gemm_large_tile_features=512)
    assert elementwise("add", 8192, 2, "bf16", rules).parallel_work == 8
    assert copy(2**20, rules).kernels[0].parallel_work == 64
    assert gemm(1024, "bf16", rules).kernels[0].parallel_work == 16 * 2


def test_host_op_counts_come_from_the_profile(tiny_profile_dict, t5base):
    """Eager host ops of an attention call, a cross-attention call and a decoder pass are the profile's counts."""
    rules = rules_with(tiny_profile_dict, host_ops={"self_attention": 20, "cross_attention": 9,
                                                    "pass_bookkeeping": 7})
    assert attention("a", t5base, 1, [16], ["kv"], False, "bf16", rules)[-1].host_ops == 20
    layer = decoder_layer(t5base, "L0", [16], ["kv"], 1, "bf16", rules, cross_ids=["x"])
    assert next(k for k in layer.kernels if k.name == "L0.xattn").host_ops == 9
    assert bookkeeping("pass", rules).host_ops == 7


def test_split_kv_only_while_heads_do_not_fill_the_units(h200):
    """Split-KV (and its reduce kernel) applies to 4 tokens x 12 heads on 132 units but not to 4 x 32
    heads, which already fill 0.8 of them (kernels.csv: R=4 t5base splits, R=4 dec1b does not)."""
    rules = KernelRules.from_profile(h200)
    for model, expect in (("t5base", 2), ("dec1b", 1)):
        spec = BUILTIN_MODELS[model]
        ks = attention("a", spec, 1, [1025] * 4, [f"kv{i}" for i in range(4)], False, "bf16", rules)
        assert len(ks) == expect, model


def test_encoder_layers_have_no_cross_attention_weights():
    """An encoder layer weighs a decoder layer minus cross-attention's 4 d^2 (query, output, fused K/V) and its norm."""
    from speedsim.sharing import Sharing
    from speedsim.workload.steps import memory_footprint

    spec = BUILTIN_MODELS["t5base"]
    d = spec.d_model
    got = memory_footprint(spec, Sharing(1, 1), 8, 16, "bf16")["weights"]
    decoder = spec.layer_weight_elements()
    assert got == 2 * (decoder + spec.encoder_layers * (decoder - 4 * d * d - d))


def test_a_spec_may_repeat_a_builtin_but_not_replace_it(tmp_path):
    """A spec with a built-in's name and dimensions (written beside measured CSVs) is accepted; with
    other dimensions it is refused, naming its file; so is a second spec of one name."""
    import yaml

    from speedsim.errors import UserError
    from speedsim.workload.models import BUILTIN_MODELS, resolve_models

    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(BUILTIN_MODELS["t5base"].file_dict()))
    assert resolve_models([same])["t5base"] == BUILTIN_MODELS["t5base"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**BUILTIN_MODELS["t5base"].file_dict(), "d_ff": 1024}))
    with pytest.raises(UserError, match="other.yaml"):
        resolve_models([other])
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: mine\nd_model: 64\nn_heads: 4\nd_ff: 256\nvocab: 1000\n")
    b.write_text("name: mine\nd_model: 64\nn_heads: 4\nd_ff: 512\nvocab: 1000\n")
    with pytest.raises(UserError, match="b.yaml"):
        resolve_models([a, b])


def test_batched_layer_touches_each_items_own_caches(rules):
    """In a batched layer each item writes one K and one V row to its own cache and attention reads
    its own K and V (the new row included) and its own encoder K/V; shape-only kernels are shared."""
    spec = BUILTIN_MODELS["t5base"]
    d, b = spec.d_model, 2
    layer = decoder_layer(spec, "L0", [10, 20, 30], ["a", "b", "c"], 1, "bf16", rules, cross_ids=["xa", "xb", "xb"],
                          cross_lens=[64, 96, 96])
    by_name = {k.name: k for k in layer.kernels}
    for name in ("L0.k_write", "L0.v_write"):
        writes = [a for a in by_name[name].all_accesses if a.tclass == "kv"]
        assert [(a.tensor, a.write_bytes, a.read_bytes) for a in writes] == [(c, d * b, 0.0) for c in "abc"]
    reads = [(a.tensor, a.read_bytes) for a in by_name["L0.attn"].all_accesses if a.tclass == "kv"]
    assert reads == [("a", 2.0 * 11 * d * b), ("b", 2.0 * 21 * d * b), ("c", 2.0 * 31 * d * b)]
    cross = [(a.tensor, a.read_bytes) for a in by_name["L0.xattn"].all_accesses if a.tclass == "kv"]
    assert cross == [("xa", 2.0 * 64 * d * b), ("xb", 2.0 * 96 * d * b), ("xb", 2.0 * 96 * d * b)]
    other = decoder_layer(spec, "L0", [5, 6, 7], ["d", "e", "f"], 1, "bf16", rules, cross_ids=["x"] * 3)
    assert layer.kernels[0] is other.kernels[0]  # the norm before attention: built once per shape


def test_op_rows_simulate_their_own_shape_and_refuse_a_missing_one():
    """Section `op`: a linear row is the GEMV/GEMM of its extra's shape, an attention row n items of
    ctx keys and Q queries, a norm row carries the profile's host ops per norm; a linear row without
    its shape is a UserError naming the row."""
    from speedsim.errors import UserError
    from speedsim.hardware import load_profile

    rules = KernelRules.from_profile(load_profile("cpu-host"))
    models = BUILTIN_MODELS

    def program(pattern, n, ctx=0, extra=""):
        row = dict(section="op", model="t5base", pattern=pattern, n=n, ctx=ctx, L=0, R=0, extra=extra)
        return program_for_row(row, models, rules, "fp32", where="ops.csv:2")[0]
    small, wide = program("linear", 4, extra="in=256;out=256"), program("linear", 4, extra="in=256;out=4096")
    assert wide.flops == 16 * small.flops == 2 * 4 * 256 * 4096
    attn = program("attention", 3, ctx=50, extra="queries=2")
    main = [k for k in attn.kernels if k.kclass == "attention"]
    assert len(main) == 1 and main[0].flops == 3 * 4.0 * 2 * 50 * models["t5base"].d_model
    assert main[0].host_ops == 1  # the op alone: no reshapes around it
    assert program("norm", 8).kernels[0].host_ops == rules.host_ops.norm == 7
    with pytest.raises(UserError, match="ops.csv:2.*in=K;out=N"):
        program("linear", 4)
    with pytest.raises(UserError, match="ops.csv:2.*integers"):
        program("attention", 4, ctx=8, extra="queries=x")


def test_static_batch_rows_attend_over_the_padded_length():
    """A batch row of the static implementation (one buffer padded to the longest, a masked SDPA):
    every sequence's attention reads the longest length's keys; its own KV write stays its own."""
    from speedsim.hardware import load_profile

    rules = KernelRules.from_profile(load_profile("h200"))
    row = dict(section="batch", model="t5base", pattern="unshared", n=2, ctx=30, L=12, R=1,
               extra="impl=static;seed=0;cross=64;lengths=10/50")
    program = program_for_row(row, BUILTIN_MODELS, rules, "bf16", where="b.csv:2")[0]
    attn = next(k for k in program.kernels if k.kclass == "attention" and ".xattn" not in k.name)
    assert attn.items is not None and len(set(attn.items.nbytes)) == 1
    writes = next(k for k in program.kernels if k.name.endswith("k_write"))
    assert writes.items is not None and len(writes.items.nbytes) == 2  # each its own new row
    assert writes.items.nbytes[0] == BUILTIN_MODELS["t5base"].d_model * 2
    ragged = program_for_row({**row, "extra": "seed=0;cross=64;lengths=10/50"}, BUILTIN_MODELS, rules, "bf16",
                             where="b.csv:2")[0]
    attn = next(k for k in ragged.kernels if k.kclass == "attention" and ".xattn" not in k.name)
    assert attn.items is not None and attn.items.nbytes[0] < attn.items.nbytes[1]
    # a SPEED step: every one of the R in-flight tokens of every sequence walks the longest length + R
    pipelined = program_for_row({**row, "pattern": "pipelined", "L": 4, "R": 3}, BUILTIN_MODELS, rules, "bf16",
                                where="b.csv:2")[0]
    attn = next(k for k in pipelined.kernels if k.kclass == "attention" and ".xattn" not in k.name)
    d = BUILTIN_MODELS["t5base"].d_model
    assert attn.items is not None and set(attn.items.nbytes) == {2.0 * (50 + 3) * d * 2}
    assert len(attn.items.nbytes) == 2 * 3
