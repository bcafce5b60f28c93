"""Greedy speculative decoding (issue 24): self-speculation and a draft model are lossless, and the
iterations derived from exit traces (or a draft's predictions on the target's path) are the ones the
functional decoders run.

Models are tiny and in float64 (as in test_decode): batched and single-token passes agree far below any
argmax margin. A large init_std makes untrained exits disagree often, so drafts are rejected often.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speedsim.decode import draft_speculative, greedy, greedy_exits, predictions_on_path, self_speculative
from speedsim.errors import UserError
from speedsim.model import SharedDecoder, SpeedConfig
from speedsim.pipeline.speculation import (
    acceptance,
    draft_matches,
    iid_matches,
    iterations,
    self_spec_matches,
)

V = 12
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model(U: int, R: int, enc: int, seed: int, std: float = 1.0, d: int = 16) -> SharedDecoder:
    cfg = SpeedConfig(vocab_size=V, d_model=d, n_heads=2, d_ff=2 * d, unique_layers=U, repeats=R, encoder_layers=enc,
                      max_len=40, init_std=std, seed=seed)
    return SharedDecoder(cfg).double().eval()


def cap_of(m: SharedDecoder, src: list[int], max_new: int) -> int:
    """The token cap the decoders apply (`prefill`'s max_new_tokens)."""
    offset = max(len(src), 1) - 1 if m.config.decoder_only else 0
    return min(max_new, m.config.max_len - offset)


CASES = dict(
    U=st.integers(1, 3), R=st.integers(2, 4), enc=st.sampled_from([0, 1]), seed=st.integers(0, 10_000),
    std=st.sampled_from([0.02, 0.5, 2.0]), src=st.lists(st.integers(0, V - 1), min_size=1, max_size=6),
    eos=st.one_of(st.none(), st.integers(0, V - 1)), max_new=st.integers(0, 16), gamma=st.integers(1, 6),
    exit_frac=st.floats(0, 0.999),
)


def _self_spec_case(U, R, enc, seed, std, src, eos, max_new, gamma, exit_frac):
    m = model(U, R, enc, seed, std)
    e = int(exit_frac * (R - 1))
    res = self_speculative(m, src, max_new, e, gamma, eos_id=eos)
    assert res.tokens == greedy(m, src, max_new, eos_id=eos)
    assert sum(it.emitted for it in res.iterations) == max(len(res.tokens) - 1, 0)
    assert all(it.drafted <= gamma and 1 <= it.emitted <= it.drafted + 1 for it in res.iterations)
    # the same iterations follow from the exit trace alone: exit e's predictions on the greedy path
    if res.tokens:
        exits = greedy_exits(m, src, max_new, eos_id=eos)
        cap = cap_of(m, src, max_new) if res.eos_id is not None else None
        derived = iterations(self_spec_matches(exits, e), len(exits), gamma, cap)
        assert derived == res.iterations
        assert [it.rejected for it in derived] == [it.rejected for it in res.iterations]


@settings(max_examples=8)
@given(**CASES)
def test_self_speculation_is_greedy_and_its_trace_derivation_exact(U, R, enc, seed, std, src, eos, max_new, gamma,
                                                                   exit_frac):
    _self_spec_case(U, R, enc, seed, std, src, eos, max_new, gamma, exit_frac)


@pytest.mark.slow
@settings(max_examples=200)
@given(**CASES)
def test_self_speculation_at_length(U, R, enc, seed, std, src, eos, max_new, gamma, exit_frac):
    """The same property over many more models and inputs (CI)."""
    _self_spec_case(U, R, enc, seed, std, src, eos, max_new, gamma, exit_frac)


def _draft_case(U, R, enc, seed, std, src, eos, max_new, gamma, draft_U, draft_R):
    target = model(U, R, enc, seed, std)
    draft = model(draft_U, draft_R, enc, seed + 1, std, d=8)
    res = draft_speculative(target, draft, src, max_new, gamma, eos_id=eos)
    assert res.tokens == greedy(target, src, max_new, eos_id=eos)
    if res.tokens:
        matches = draft_matches(res.tokens, predictions_on_path(draft, src, res.tokens))
        cap = cap_of(target, src, max_new) if res.eos_id is not None else None
        assert iterations(matches, len(res.tokens), gamma, cap) == res.iterations


DRAFT_CASES = dict(U=st.integers(1, 3), R=st.integers(1, 3), enc=st.sampled_from([0, 1]), seed=st.integers(0, 10_000),
                   std=st.sampled_from([0.02, 0.5, 2.0]), src=st.lists(st.integers(0, V - 1), min_size=1, max_size=6),
                   eos=st.one_of(st.none(), st.integers(0, V - 1)), max_new=st.integers(0, 16),
                   gamma=st.integers(1, 6), draft_U=st.integers(1, 2), draft_R=st.integers(1, 2))


@settings(max_examples=8)
@given(**DRAFT_CASES)
def test_draft_model_speculation_is_greedy_and_its_derivation_exact(U, R, enc, seed, std, src, eos, max_new, gamma,
                                                                    draft_U, draft_R):
    _draft_case(U, R, enc, seed, std, src, eos, max_new, gamma, draft_U, draft_R)


@pytest.mark.slow
@settings(max_examples=200)
@given(**DRAFT_CASES)
def test_draft_model_speculation_at_length(U, R, enc, seed, std, src, eos, max_new, gamma, draft_U, draft_R):
    """The same property over many more models and inputs (CI)."""
    _draft_case(U, R, enc, seed, std, src, eos, max_new, gamma, draft_U, draft_R)


def test_a_draft_that_is_the_target_accepts_every_draft():
    """The target as its own draft: every window is accepted whole (g + 1 tokens per iteration)."""
    m = model(2, 2, 1, 3)
    res = draft_speculative(m, m, [1, 2, 3], 13, 4)
    assert res.tokens == greedy(m, [1, 2, 3], 13)
    assert [(it.drafted, it.emitted) for it in res.iterations] == [(4, 5), (4, 5), (1, 2)]


def _trained(U: int, R: int, seed: int, steps: int) -> SharedDecoder:
    """A decoder-only model trained with the multi-exit loss to continue a counting sequence (t -> t + 1 mod
    V) for a few dozen steps: enough to learn the task, so that drafts are mostly accepted."""
    m = model(U, R, 0, seed, 0.1, d=24).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, V, (16, 1), generator=gen)
        seq = (start + torch.arange(12)) % V
        logits = m(None, seq[:, :-1])  # (R, B, T, V)
        loss = sum(torch.nn.functional.cross_entropy(lg.reshape(-1, V), seq[:, 1:].reshape(-1)) for lg in logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.mark.slow
def test_trained_models_decode_losslessly_and_accept_most_drafts():
    """(Trains two models for ~2 s: CI.)"""
    target, draft = _trained(2, 3, 0, steps=60), _trained(1, 1, 1, steps=30)
    runs_self, runs_draft = [], []
    for start in range(V):
        src = [start, (start + 1) % V]
        want = greedy(target, src, 14)
        assert want == [(start + 2 + t) % V for t in range(14)]  # it learned the task
        a = self_speculative(target, src, 14, 0, 4)
        b = draft_speculative(target, draft, src, 14, 4)
        assert a.tokens == want and b.tokens == want
        runs_self.append(a.iterations)
        runs_draft.append(b.iterations)
    assert acceptance(runs_self).tokens_per_iteration > 2.0 and acceptance(runs_draft).tokens_per_iteration > 1.5


def test_iterations_by_hand():
    m = [True, True, False, True, True, True, True]  # matches[0] unused
    got = [(it.drafted, it.emitted, it.rejected) for it in iterations(m, 7, 2)]
    # n=1: drafts 1,2 -> 1 matches, 2 does not: emit 2 (rejected); n=3: drafts 3,4 match: emit 3;
    # n=6: one position left, nothing drafted: emit 1
    assert got == [(2, 2, True), (2, 3, False), (0, 1, False)]
    # a decode that stopped on <eos> with a larger cap drafts whole windows at its end
    got = [(it.drafted, it.emitted, it.rejected) for it in iterations(m, 7, 2, cap=20)]
    assert got == [(2, 2, True), (2, 3, False), (2, 1, False)]
    with pytest.raises(ValueError):
        iterations(m, 7, 0)


@pytest.mark.slow
def test_iid_acceptance_gives_the_papers_tokens_per_iteration():
    """Leviathan et al. (2023), eq. 1: with i.i.d. acceptance a and window g, E[tokens per iteration] =
    (1 - a^(g+1)) / (1 - a). On long sequences the derived iterations give it within 1%."""
    for alpha in (0.5, 0.9):
        for gamma in (1, 4, 8):
            runs = [iterations(iid_matches(20_000, alpha, seed), 20_000, gamma) for seed in range(3)]
            got = acceptance(runs)
            want = (1 - alpha ** (gamma + 1)) / (1 - alpha)
            assert got.tokens_per_iteration == pytest.approx(want, rel=0.01), (alpha, gamma)
            assert got.rate == pytest.approx(alpha, abs=0.01)


@pytest.mark.parametrize("gamma", [0, -1, 1.5, True, 40, 10**6])
def test_bad_gamma_is_refused(gamma):
    m = model(1, 2, 1, 0)
    with pytest.raises(UserError, match="gamma"):
        self_speculative(m, [1], 4, 0, gamma)
    with pytest.raises(UserError, match="gamma"):
        draft_speculative(m, m, [1], 4, gamma)


@pytest.mark.parametrize("exit_", [1, 2, -1])
def test_a_draft_exit_at_or_past_the_last_is_refused(exit_):
    with pytest.raises(UserError, match="draft_exit"):
        self_speculative(model(1, 2, 1, 0), [1], 4, exit_, 2)


def test_a_draft_of_another_vocabulary_is_refused():
    target = model(1, 2, 1, 0)
    other = SharedDecoder(SpeedConfig(vocab_size=V + 1, d_model=8, n_heads=2, d_ff=16, unique_layers=1, repeats=1,
                                      encoder_layers=1, max_len=40)).double()
    with pytest.raises(UserError, match="vocabulary"):
        draft_speculative(target, other, [1], 4, 2)


def test_a_draft_that_holds_fewer_positions_is_refused():
    """It would stop the decode at its own length (greedy decodes on): refused."""
    target = model(1, 2, 0, 0)
    short = SharedDecoder(SpeedConfig(vocab_size=V, d_model=8, n_heads=2, d_ff=16, unique_layers=1, repeats=1,
                                      encoder_layers=0, max_len=10)).double()
    with pytest.raises(UserError, match="positions"):
        draft_speculative(target, short, [1, 2], 30, 2)
