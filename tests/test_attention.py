"""gbmi_core.attention: the certified attention bounds (against exact arithmetic) and the architecture checks."""

import math

import attrs
from fractions import Fraction

import pytest
import torch

from gbmi_core import lens
from hypothesis import given, settings, strategies as st

from gbmi_core import ModelRefused
from gbmi_core.attention import attention_only_problems, attention_only_weights, check_attention_only, \
    mixture_bounds, softmax_weight_lower

floats = st.floats(-60, 60, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(target=floats, others=st.lists(floats, min_size=0, max_size=6))
def test_softmax_weight_lower_is_below_the_exact_weight(target, others):
    import mpmath

    bound = float(softmax_weight_lower(torch.tensor(target, dtype=torch.float64),
                                       torch.tensor(others, dtype=torch.float64).reshape(-1)))
    mpmath.mp.prec = 200
    exact = 1 / (1 + sum((mpmath.exp(mpmath.mpf(o) - mpmath.mpf(target)) for o in others), mpmath.mpf(0)))
    assert 0 <= bound <= exact
    assert bound >= float(exact) * (1 - 1e-12) - 1e-300  # and tight


def test_softmax_weight_lower_is_zero_for_nan_and_one_alone():
    assert float(softmax_weight_lower(torch.tensor(0.0, dtype=torch.float64), torch.tensor([float("nan")]))) == 0.0
    alone = float(softmax_weight_lower(torch.tensor(3.0, dtype=torch.float64), torch.empty(0, dtype=torch.float64)))
    absent = float(softmax_weight_lower(torch.tensor(0.0, dtype=torch.float64), torch.tensor([float("-inf")])))
    assert 1 - 1e-15 < alone <= 1 and 1 - 1e-15 < absent <= 1  # rounded outward, so just below 1


@settings(max_examples=200, deadline=None)
@given(weight=st.floats(0, 1), target=st.tuples(floats, floats), other=st.tuples(floats, floats),
       split=st.lists(st.floats(0, 1), min_size=1, max_size=4), picks=st.lists(st.floats(0, 1), min_size=5, max_size=5))
def test_mixture_bounds_hold_for_every_admissible_average(weight, target, other, split, picks):
    t_lo, t_hi = sorted(target)
    o_lo, o_hi = sorted(other)
    lo, hi = mixture_bounds(*(torch.tensor(x, dtype=torch.float64) for x in (weight, t_lo, t_hi, o_lo, o_hi)))
    # an exact average: weight >= `weight` on the target, the rest spread over others, values anywhere allowed
    w_t = Fraction(weight) + (1 - Fraction(weight)) * Fraction(picks[0])
    rest = [Fraction(s) for s in split]
    total = sum(rest) or Fraction(1)
    others = [(1 - w_t) * r / total for r in rest] if sum(rest) else [1 - w_t]
    y_t = Fraction(t_lo) + (Fraction(t_hi) - Fraction(t_lo)) * Fraction(picks[1])
    ys = [Fraction(o_lo) + (Fraction(o_hi) - Fraction(o_lo)) * Fraction(picks[2 + k % 3]) for k in range(len(others))]
    value = w_t * y_t + sum(a * y for a, y in zip(others, ys))
    assert Fraction(float(lo)) <= value <= Fraction(float(hi))


pytest.importorskip("transformer_lens")


def _ht(**overrides):
    cfg = dict(n_layers=2, n_heads=1, d_model=8, d_head=4, d_vocab=6, d_vocab_out=6, n_ctx=5, attn_only=True,
               normalization_type=None, act_fn=None)
    cfg.update(overrides)
    return lens.build(cfg, seed=0)


def test_architecture_checks_name_every_problem():
    assert attention_only_problems(_ht(), n_layers=2) == []
    assert attention_only_problems(_ht(), n_layers=None) == []
    problems = attention_only_problems(_ht(n_heads=2, normalization_type="LN"), n_layers=1)
    assert problems == ["it has 2 layers (the proofs need exactly 1)",
                        "it has 2 attention heads (the proofs need exactly 1)", "it uses LN normalisation (the proofs need none)"]
    with pytest.raises(ModelRefused, match="model refused by my task: .*it has an MLP"):
        check_attention_only(_ht(attn_only=False, d_mlp=8, act_fn="relu"), 2, what="my task")
    assert attention_only_problems(torch.nn.Linear(2, 2)) == [
        "the proofs take a TransformerLens HookedTransformer or TransformerBridge, not a Linear"]


def test_weights_are_every_layers_head_in_float64():
    model = _ht()
    w = attention_only_weights(model)
    assert len(w.layers) == 2 and w.W_E.dtype == torch.float64
    state = lens.canonical_state(model)
    assert torch.equal(w.layers[1].W_Q, state["blocks.1.attn.W_Q"][0].double())
    assert torch.equal(w.layers[0].b_O, state["blocks.0.attn.b_O"].double())
    assert w.layers[0].attn_scale == math.sqrt(4)
    assert torch.equal(w.embed()[3, 2], state["embed.W_E"][3].double() + state["pos_embed.W_pos"][2].double())


def test_build_attention_only_freezes_every_bias_at_zero():
    from gbmi_core.attention import build_attention_only

    model = build_attention_only(n_layers=2, d_model=8, d_head=4, d_vocab=6, n_ctx=5, seed=3)
    assert attention_only_problems(model, n_layers=2) == []
    trainable, state = lens.trainable(model), lens.canonical_state(model)
    for name in lens.parameter_names(lens.architecture(model)):
        is_bias = name.split(".")[-1].startswith("b_")
        assert (name in trainable) != is_bias, name
        assert not is_bias or not state[name].any(), name


def _forward(w, tokens):
    """An attention-only model's logits (every position), from :class:`AttentionOnly` weights, biases included."""
    x = w.W_E[tokens] + w.W_pos[: tokens.shape[1]]
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    for layer in w.layers:
        q, k, v = x @ layer.W_Q + layer.b_Q, x @ layer.W_K + layer.b_K, x @ layer.W_V + layer.b_V
        scores = (q @ k.transpose(-1, -2) / layer.attn_scale).masked_fill(~causal, float("-inf"))
        x = x + scores.softmax(-1) @ v @ layer.W_O + layer.b_O
    return x @ w.W_U + w.b_U


@pytest.mark.parametrize("n_layers", [1, 2])
def test_fold_biases_keeps_the_function_and_copies_every_value(n_layers):
    from gbmi_core.attention import build_attention_only, fold_biases

    model = build_attention_only(n_layers=n_layers, d_model=6, d_head=4, d_vocab=7, n_ctx=5, seed=n_layers)
    g = torch.Generator().manual_seed(0)
    with lens.editing(model) as w:
        for name, value in w.items():
            if name.rsplit(".", 1)[1].startswith("b_"):
                value.copy_(torch.randn(value.shape, generator=g) * 3)
    tokens = torch.randint(0, 7, (50, 5), generator=g)
    biased = attention_only_weights(model)
    assert biased.has_biases()
    expected = model.double()(tokens)
    torch.testing.assert_close(_forward(biased, tokens), expected, rtol=1e-10, atol=1e-10)  # the oracle is right
    folded = fold_biases(biased)
    assert not folded.has_biases()
    assert folded.W_E.shape == (7, 7) and folded.layers[0].W_Q.shape == (7, 5) and folded.W_U.shape == (7, 7)
    torch.testing.assert_close(_forward(folded, tokens), expected, rtol=1e-10, atol=1e-10)
    old = torch.cat([t.reshape(-1) for t in (biased.W_E, biased.W_pos, biased.W_U, biased.b_U)]
                    + [t.reshape(-1) for layer in biased.layers for t in attrs.astuple(layer)[:-1]])
    new = torch.cat([t.reshape(-1) for t in (folded.W_E, folded.W_pos, folded.W_U)]
                    + [t.reshape(-1) for layer in folded.layers for t in attrs.astuple(layer)[:4]])
    assert set(new.tolist()) <= set(old.tolist()) | {0.0, 1.0}  # nothing computed, so nothing rounded
