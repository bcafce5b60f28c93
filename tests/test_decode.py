"""Decoding: cached greedy equals full recompute, SPEED equals greedy, KV rollback is exact.

Models are tiny and in float64 so that batched and unbatched passes agree far below any
argmax margin. A large init_std makes untrained models change their prediction between
exits often, so the pipeline mispredicts and flushes a lot.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speedsim.decode import KVCache, decode_step, greedy, greedy_exits, prefill, speculative_step, speed
from speedsim.errors import UserError
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.pipeline import PipelineController, Policy, schedule_stats

V = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(U: int = 2, R: int = 3, enc: int = 1, seed: int = 0, std: float = 1.0, **kw) -> SharedDecoder:
    cfg = SpeedConfig(
        vocab_size=V, d_model=16, n_heads=2, d_ff=32, unique_layers=U, repeats=R, encoder_layers=enc, max_len=40,
        init_std=std, seed=seed, **kw,
    )  # fmt: skip
    return SharedDecoder(cfg).double().eval()


def full_recompute_greedy(model: SharedDecoder, src: list[int], n: int, eos: int | None = None) -> list[int]:
    """Greedy decoding by re-running the whole teacher-forcing forward for every token."""
    c = model.config
    tgt = list(src) if c.decoder_only else [c.bos_id]
    src_t = None if c.decoder_only else torch.tensor([src])
    out: list[int] = []
    with torch.no_grad():
        while len(out) < n and not (out and out[-1] == eos):
            tok = int(model(src_t, torch.tensor([tgt]))[-1, 0, -1].argmax())
            out.append(tok)
            tgt.append(tok)
    return out


# ------------------------------------------------------------------------------ sequential
@pytest.mark.parametrize("enc", [0, 2])
@pytest.mark.parametrize("U, R", [(1, 1), (1, 4), (3, 2), (2, 3)])
def test_cached_greedy_equals_full_recompute(enc, U, R):
    """greedy() with the per-(layer, repeat) KV cache emits what full recomputation emits."""
    m = make_model(U, R, enc, seed=U * 10 + R, std=0.5, ffn="swiglu" if R == 3 else "relu")
    src = [4, 7, 1, 9, 3]
    assert greedy(m, src, 12) == full_recompute_greedy(m, src, 12)


def test_cached_exits_equal_full_forward_exits():
    """Every exit's prediction along a greedy decode matches the full forward's at that position."""
    m = make_model(2, 3, enc=0, seed=5, std=0.5)
    prompt = [3, 5, 8]
    exits = greedy_exits(m, prompt, 8)
    seq = prompt + [row[-1] for row in exits][:-1]
    with torch.no_grad():
        logits = m(None, torch.tensor([seq]))  # (R, 1, T, V)
    want = logits[:, 0, len(prompt) - 1 :].argmax(-1).T.tolist()  # (positions, R)
    assert exits == want


def test_src_ids_as_list_or_tensor_and_eos_included():
    """src_ids may be a list or a 1-D LongTensor; decoding stops after (and returns) EOS."""
    m = make_model(seed=3)
    src = [4, 7, 1]
    out = greedy(m, src, 10)
    assert greedy(m, torch.tensor(src), 10) == out
    eos = out[4]
    stop = out.index(eos)
    assert greedy(m, src, 10, eos_id=eos) == out[: stop + 1]
    assert speed(m, torch.tensor(src), 10, eos_id=eos).tokens == out[: stop + 1]


def test_length_limits():
    """0 new tokens is empty; a negative count or an over-long prompt is a UserError; the
    decoder sequence is capped at max_len."""
    m = make_model(enc=0)
    assert greedy(m, [1, 2], 0) == [] and speed(m, [1, 2], 0).tokens == []
    with pytest.raises(UserError):
        greedy(m, [1, 2], -1)
    with pytest.raises(UserError):
        greedy(m, list(range(V)) * 4, 3)  # 48 > max_len=40
    assert len(greedy(m, [1] * 30, 50)) == 40 - 29
    assert speed(m, [1] * 30, 50).tokens == greedy(m, [1] * 30, 50)
    with pytest.raises(UserError):
        greedy(make_model(enc=1), [], 3)  # an encoder needs a source


# ------------------------------------------------------------------------------ SPEED == greedy
SPEED_CASES = dict(
    U=st.integers(1, 3),
    R=st.integers(1, 4),
    enc=st.sampled_from([0, 1]),
    seed=st.integers(0, 10_000),
    std=st.sampled_from([0.02, 0.5, 2.0]),
    src=st.lists(st.integers(0, V - 1), min_size=1, max_size=6),
    eos=st.one_of(st.none(), st.integers(0, V - 1)),
    max_new=st.integers(0, 14),
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(**SPEED_CASES)
def test_speed_equals_greedy(U, R, enc, seed, std, src, eos, max_new):
    """Lossless: SPEED's tokens equal greedy's, and its exits are greedy's exits."""
    m = make_model(U, R, enc, seed, std)
    res = speed(m, src, max_new, eos_id=eos)
    assert res.tokens == greedy(m, src, max_new, eos_id=eos)
    assert res.exits == greedy_exits(m, src, max_new, eos_id=eos)
    assert [row[-1] for row in res.exits] == res.tokens and res.src_len == len(src) and res.repeats == R
    assert res.eos_id == (eos if eos is not None and res.tokens and res.tokens[-1] == eos else None)



@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True)
@given(**SPEED_CASES)
def test_speed_equals_greedy_at_length(U, R, enc, seed, std, src, eos, max_new):
    """The same property over many more models and inputs (CI)."""
    test_speed_equals_greedy.hypothesis.inner_test(U, R, enc, seed, std, src, eos, max_new)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "policy",
    [Policy(launch_exit=1), Policy(verify_exits=(3,)), Policy(verify_exits=(2,)), Policy(max_in_flight=2), Policy(launch_exit=3)],
)
def test_speed_equals_greedy_under_other_policies(policy):
    """Launch exit, verify exits and max in flight change the schedule, never the output."""
    for seed in range(3):
        m = make_model(2, 4, enc=seed % 2, seed=seed, std=2.0)
        assert speed(m, [1, 5, 2], 16, policy=policy).tokens == greedy(m, [1, 5, 2], 16)


def test_mispredictions_at_every_exit_stay_lossless():
    """With large random weights every verify exit (1..R-1) triggers flushes somewhere, and the
    output still equals greedy."""
    R = 4
    flushing_exits: set[int] = set()
    for seed in range(4):
        m = make_model(1, R, enc=1, seed=seed, std=2.0)
        res = speed(m, [2, 3, 4], 20)
        assert res.tokens == greedy(m, [2, 3, 4], 20)
        flushing_exits |= {r for s in res.steps for p, r, _ in s.in_flight if p in s.mispredicted}
    assert flushing_exits == set(range(1, R))


def test_r1_degenerates_to_greedy():
    """R = 1: one token in flight per step, one step per token, no flushes."""
    m = make_model(3, 1, enc=1, std=2.0)
    res = speed(m, [5, 6], 9)
    assert res.tokens == greedy(m, [5, 6], 9)
    assert len(res.steps) == 8 and all(len(s.in_flight) == 1 for s in res.steps)
    assert schedule_stats(res.steps).flushes == 0


def test_max_new_tokens_reached_with_tokens_in_flight():
    """At the length cap the pipeline stops launching and drains; nothing is launched past it."""
    m = make_model(2, 3, enc=0, std=0.02)  # small init: exits agree, the pipeline stays full
    res = speed(m, [1, 2, 3], 6)
    assert len(res.tokens) == 6
    assert max(p for s in res.steps for p, _, _ in s.in_flight) == 5
    assert [len(s.in_flight) for s in res.steps[-3:]] == [3, 2, 1]
    assert res.steps[-1].emitted == (5,) and not res.steps[-1].discarded


def test_eos_inside_the_pipeline_discards_speculative_tokens():
    """EOS emitted while later tokens are in flight: decoding stops, their work is discarded."""
    cases = 0
    for seed in range(6):
        m = make_model(2, 3, enc=0, seed=seed, std=0.5)
        out = greedy(m, [1, 2, 3], 12)
        fresh = [t for i, t in enumerate(out) if i >= 3 and t not in out[:i]]
        if not fresh:
            continue
        eos = fresh[0]
        res = speed(m, [1, 2, 3], 12, eos_id=eos)
        assert res.tokens == out[: out.index(eos) + 1]
        assert res.eos_id == eos
        last = res.steps[-1]
        assert last.emitted == (len(res.tokens) - 1,)
        assert all(p > last.emitted[0] for p in last.discarded)
        cases += bool(last.discarded)  # speculative successors of EOS were in flight
    assert cases >= 2


# ------------------------------------------------------------------------------ KV rollback
def _reference_cache(model: SharedDecoder, src: list[int], n: int) -> tuple[KVCache, list[int], int]:
    """The cache sequential greedy decoding leaves after n tokens."""
    state = prefill(model, src, n)
    tokens = [state.first_exits[-1]]
    while len(tokens) < n:
        tokens.append(decode_step(model, state, tokens[-1], len(tokens))[-1])
    return state.cache, tokens, state.offset


@pytest.mark.parametrize("enc, R, seed", [(1, 3, 0), (0, 4, 1), (1, 4, 2), (0, 2, 3)])
def test_kv_rollback_restores_sequential_cache(enc, R, seed):
    """After every step (flushes included), each (layer, repeat) slot holds exactly the keys and
    values sequential decoding wrote for the positions computed so far at that repeat, and
    zeros beyond; wrong-path entries not yet flushed are only ever past the correct prefix."""
    m = make_model(2, R, enc, seed, std=2.0)
    src, n = [4, 2, 9], 16
    ref, ref_tokens, offset = _reference_cache(m, src, n)
    with torch.no_grad():
        state = prefill(m, src, n)
        ctrl = PipelineController(R, None, state.first_exits, n)
        flushes = 0
        while not ctrl.done:
            step = speculative_step(m, state, ctrl)
            flushes += len(step.flushed)
            work = ctrl.work()  # in flight for the next step: (position, next repeat, input)
            correct = len(ctrl.tokens)  # positions < correct are on the greedy path
            for p, _, x in work:
                if p == correct and x == ref_tokens[p - 1]:
                    correct += 1
            for u in range(2):
                for r in range(R):
                    done_r = len(ctrl.tokens) - 1 + sum(1 for _, nxt, _ in work if nxt > r)
                    length = state.cache.length(u, r)
                    assert length == offset + 1 + done_r
                    good = min(length, offset + correct)
                    torch.testing.assert_close(state.cache.k[u, r, :, :good], ref.k[u, r, :, :good], rtol=0, atol=1e-12)
                    torch.testing.assert_close(state.cache.v[u, r, :, :good], ref.v[u, r, :, :good], rtol=0, atol=1e-12)
                    assert not state.cache.k[u, r, :, length:].any() and not state.cache.v[u, r, :, length:].any()
    assert ctrl.tokens == ref_tokens
    assert flushes > 0  # the test exercised rollback


def test_each_step_is_one_batched_pass_over_the_in_flight_tokens():
    """Every shared layer runs once per pipeline step, on all in-flight tokens as one batch."""
    m = make_model(2, 3, enc=1, seed=4, std=0.5)
    rows: list[int] = []
    hook = m.layers[1].ffn.register_forward_hook(lambda _m, inp, _out: rows.append(inp[0].shape[0]))
    res = speed(m, [3, 1, 4, 1, 5], 10)
    hook.remove()
    assert rows[:3] == [1, 1, 1]  # prefill: BOS through the R repeats
    assert rows[3:] == [len(s.in_flight) for s in res.steps]
    assert max(rows) == 3
