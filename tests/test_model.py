"""The shared model: config validation, CYCLE sharing, masks, determinism, the multi-exit loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speedsim.errors import UserError
from speedsim.model import SharedDecoder, SpeedConfig, default_exit_weights, exit_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> SpeedConfig:
    base = dict(vocab_size=23, d_model=16, n_heads=2, d_ff=32, unique_layers=2, repeats=3, encoder_layers=1, max_len=32)
    return SpeedConfig(**{**base, **kw})


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "field, value",
    [
        ("unique_layers", 0),
        ("repeats", 0),
        ("repeats", -2),
        ("d_model", 0),
        ("n_heads", 0),
        ("d_ff", 0),
        ("vocab_size", 0),
        ("max_len", 0),
        ("encoder_layers", -1),
        ("ffn", "tanh"),
        ("dropout", 1.0),
        ("bos_id", 23),
        ("pad_id", -1),
        ("exit_weights", (1.0, 2.0)),
        ("exit_weights", (0.0, 0.0, 0.0)),
        ("init_std", 0.0),
        ("repeats", "3"),
        ("repeats", 2.5),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    """Each invalid value raises a UserError whose `where` is the offending field."""
    with pytest.raises(UserError) as err:
        tiny(**{field: value})
    assert err.value.where == field


def test_config_rejects_d_model_not_divisible_by_heads():
    """d_model must split evenly into heads; the error names d_model."""
    with pytest.raises(UserError) as err:
        tiny(d_model=18, n_heads=4)
    assert err.value.where == "d_model"


def test_config_dict_round_trip():
    """to_dict/from_dict round-trip, exit weights included (lists in, tuple kept)."""
    c = tiny(exit_weights=(1.0, 2.0, 3.0), ffn="swiglu")
    d = c.to_dict()
    assert d["exit_weights"] == [1.0, 2.0, 3.0]
    assert SpeedConfig.from_dict(d) == c


def test_config_from_dict_unknown_and_missing_keys():
    """An unknown key and a missing vocab_size are UserErrors naming the key."""
    d = tiny().to_dict()
    with pytest.raises(UserError) as err:
        SpeedConfig.from_dict({**d, "n_layer": 4})
    assert err.value.where == "n_layer"
    del d["vocab_size"]
    with pytest.raises(UserError) as err:
        SpeedConfig.from_dict(d)
    assert err.value.where == "vocab_size"


# ------------------------------------------------------------------------------ model
@pytest.mark.parametrize("encoder_layers", [0, 2])
@pytest.mark.parametrize("ffn", ["relu", "swiglu"])
def test_forward_gives_logits_at_every_exit(encoder_layers, ffn):
    """forward returns (R, B, T, V) logits for encoder-decoder and decoder-only models."""
    c = tiny(encoder_layers=encoder_layers, ffn=ffn)
    m = SharedDecoder(c)
    src = None if c.decoder_only else torch.randint(0, c.vocab_size, (2, 7))
    out = m(src, torch.randint(0, c.vocab_size, (2, 5)))
    assert out.shape == (3, 2, 5, 23)
    assert torch.isfinite(out).all()


def test_layers_are_shared_across_repeats():
    """U layer modules, each called R times per forward; the parameter count does not depend on R."""
    m = SharedDecoder(tiny(unique_layers=2, repeats=3))
    assert len(m.layers) == 2
    calls = [0, 0]
    for u, layer in enumerate(m.layers):
        layer.register_forward_hook(lambda *_, u=u: calls.__setitem__(u, calls[u] + 1))
    m(torch.randint(0, 23, (1, 4)), torch.randint(0, 23, (1, 3)))
    assert calls == [3, 3]
    n = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert n(SharedDecoder(tiny(repeats=1))) == n(SharedDecoder(tiny(repeats=5)))


def test_init_is_deterministic_given_seed_and_leaves_global_rng_alone():
    """Same config -> same weights; another seed -> other weights; the caller's RNG is untouched."""
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = SharedDecoder(tiny()), SharedDecoder(tiny()), SharedDecoder(tiny(seed=1))
    assert torch.rand(1) == before
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.layers[0].attn.qkv.weight, c.layers[0].attn.qkv.weight)


def test_source_padding_is_masked():
    """Appending masked padding to the source does not change the logits."""
    m = SharedDecoder(tiny(init_std=0.3)).double().eval()
    src = torch.randint(2, 23, (1, 6))
    tgt = torch.randint(2, 23, (1, 4))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[:, 6:] = True
    torch.testing.assert_close(m(src, tgt), m(padded, tgt, src_pad_mask=mask))


def test_decoder_is_causal_and_target_padding_keeps_earlier_positions():
    """Logits at position t depend on tgt_in[:t+1] only, with or without a pad mask."""
    m = SharedDecoder(tiny(encoder_layers=0, init_std=0.3)).double().eval()
    tgt = torch.randint(2, 23, (1, 6))
    full = m(None, tgt)
    short = m(None, tgt[:, :4])
    torch.testing.assert_close(full[:, :, :4], short)
    pad = torch.zeros(1, 6, dtype=torch.bool)
    pad[:, 4:] = True
    torch.testing.assert_close(m(None, tgt, tgt_pad_mask=pad)[:, :, :4], short)


# ------------------------------------------------------------------------------ loss
def test_default_exit_weights_grow_and_sum_to_one():
    """Default weights are proportional to r + 1 and normalised."""
    assert default_exit_weights(1) == [1.0]
    w = default_exit_weights(4)
    assert w == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert sum(w) == pytest.approx(1.0)


def test_exit_loss_is_weighted_mean_of_per_exit_cross_entropy():
    """exit_loss equals sum_r w_r CE_r with normalised weights, ignoring ignore_index targets."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[1, 3:] = -100
    ce = [F.cross_entropy(logits[r].reshape(-1, 7), targets.reshape(-1), ignore_index=-100) for r in range(3)]
    want = sum(w * c for w, c in zip(default_exit_weights(3), ce, strict=True))
    torch.testing.assert_close(exit_loss(logits, targets), want)
    torch.testing.assert_close(exit_loss(logits, targets, weights=[0, 0, 5.0]), ce[2])
    with pytest.raises(ValueError):
        exit_loss(logits, targets, weights=[1.0, 1.0])


def test_exit_loss_trains_every_exit():
    """A few AdamW steps on one batch lower the loss at every exit."""
    c = tiny()
    m = SharedDecoder(c)
    src, tgt = torch.randint(2, 23, (4, 6)), torch.randint(2, 23, (4, 6))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = [F.cross_entropy(lg.reshape(-1, 23), tgt[:, 1:].reshape(-1)).item() for lg in m(src, tgt[:, :-1])]
    for _ in range(30):
        opt.zero_grad()
        exit_loss(m(src, tgt[:, :-1]), tgt[:, 1:]).backward()
        opt.step()
    last = [F.cross_entropy(lg.reshape(-1, 23), tgt[:, 1:].reshape(-1)).item() for lg in m(src, tgt[:, :-1])]
    assert all(b < a for a, b in zip(first, last, strict=True))
