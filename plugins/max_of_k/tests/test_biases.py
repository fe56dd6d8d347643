"""Models with biases: every strategy proves them as they are, soundly, and bias-free models are unchanged."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gbmi_core import lens
from gbmi_max_of_k.brute_force import brute_force, enumerate_with_forward
from gbmi_max_of_k.model import paths

from .conftest import gbmi, save, small_model, their_model


def with_biases(model, seed=0, size=1.0):
    """``model`` with every bias (``b_Q, b_K, b_V, b_O, b_U``) set to normal noise of standard deviation ``size``."""
    g = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:
        for name, value in w.items():
            if name.rsplit(".", 1)[1].startswith("b_"):
                value.copy_(torch.randn(value.shape, generator=g) * size)
    return model


def trained_with_lens_defaults(steps=400, seed=0):
    """A Max-of-3-over-10-tokens model trained as a TransformerLens user would: the library's own model and
    initialisation, every parameter trainable (biases included), Adam on the cross-entropy at the last position."""
    model = their_model(seed=seed, zero_biases=False)
    V, K = model.cfg.d_vocab, model.cfg.n_ctx
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        tokens = torch.randint(0, V, (128, K), generator=g)
        loss = torch.nn.functional.cross_entropy(model(tokens)[:, -1], tokens.max(-1).values)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def test_a_model_trained_with_trainable_biases_is_proved_by_every_strategy_from_its_file(tmp_path):
    model = trained_with_lens_defaults()
    biases = [p for name, p in model.named_parameters() if name.endswith(".bias") or ".b_" in name]
    assert len(biases) >= 4 and all(bool((p != 0).any()) for p in biases)  # what the library trains moved
    with torch.no_grad():
        path = save(model, tmp_path / "biased.pt")
        exact, total = enumerate_with_forward(model.double(), batch_size=100)
    assert exact > total / 2  # it learned something, so the bounds below are not trivially sound
    proved = gbmi("--store", str(tmp_path / "store"), "prove", "max-of-k", "--model", path, "--json")
    assert proved.returncode == 0, proved.stderr
    results = {r["strategy"]: r for r in json.loads(proved.stdout)}
    assert len(results) == 102
    assert results["brute-force"]["correct_count"] == exact
    for name, result in results.items():
        assert result["total_count"] == total and result["certified"], name
        assert result["correct_count"] <= exact, name
    assert results["cubic"]["correct_count"] > 0  # the folded biases did not make the proofs vacuous


@pytest.mark.parametrize("V, K, seed, size", [(5, 2, 0, 1.0), (6, 3, 1, 0.3), (7, 4, 2, 3.0), (4, 5, 3, 10.0)])
def test_brute_force_equals_forward_enumeration_with_biases(V, K, seed, size):
    model = with_biases(small_model(V, K, seed=seed, qk_scale=3.0), seed=seed, size=size)
    expected = enumerate_with_forward(model.double(), batch_size=97)
    model = with_biases(small_model(V, K, seed=seed, qk_scale=3.0), seed=seed, size=size)
    assert (brute_force(model).correct_count, V**K) == expected


def test_folding_widens_only_biased_models():
    model = small_model(5, 3)
    assert paths(model).D == 8 and paths(model).W_Q.shape == (8, 8)
    P = paths(with_biases(model))
    assert P.D == 9 and P.W_Q.shape == (9, 9) and P.W_U.shape == (9, 5)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(V=st.integers(4, 9), K=st.integers(2, 4), seed=st.integers(0, 10_000),
       size=st.sampled_from([0.1, 1.0, 5.0]), sharp=st.booleans())
def test_every_strategy_is_sound_on_biased_models(registry, V, K, seed, size, sharp):
    model = with_biases(small_model(V, K, seed=seed, qk_scale=10.0 if sharp else 1.0), seed=seed, size=size)
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    for strategy in registry.strategies("max-of-k"):
        result = strategy.prove(model)
        assert result.correct_count <= exact.correct_count, strategy.name


@pytest.mark.parametrize("V, K, seed, kind", [(5, 3, 0, "random"), (6, 3, 1, "sharp"), (5, 4, 2, "biased"),
                                              (6, 2, 3, "tied"), (7, 3, 4, "trained")])
def test_the_core_generic_brute_force_agrees_exactly(V, K, seed, kind):
    """The core's brute force for any model (intervals, then arb balls) counts what ours counts."""
    from gbmi_core.brute_force import count_correct

    if kind == "trained":
        from .conftest import trained_model

        model = trained_model(V, K, seed=seed % 3)
    else:
        model = small_model(V, K, seed=seed, qk_scale=10.0 if kind == "sharp" else 1.0)
        if kind == "biased":
            with_biases(model, seed=seed)
        if kind == "tied":
            with lens.editing(model) as w:
                w["unembed.W_U"][:, 1] = w["unembed.W_U"][:, 2]
    tokens = torch.cartesian_prod(*[torch.arange(V)] * K).reshape(-1, K)
    correct, total, counts = count_correct(model, [(tokens, tokens.max(-1).values)])
    assert (correct, total) == (brute_force(model).correct_count, V**K) and counts["undecided"] == 0
