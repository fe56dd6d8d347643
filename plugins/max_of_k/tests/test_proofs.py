"""Brute force and cubic proofs against exact answers."""

import expecttest
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gbmi_core
from gbmi_max_of_k.brute_force import brute_force, enumerate_with_forward

from .conftest import small_model, trained_model


@pytest.fixture(scope="module")
def registry():
    return gbmi_core.get_registry()


@pytest.mark.parametrize("V, K, seed", [(5, 2, 0), (6, 3, 1), (7, 4, 2), (4, 5, 3), (12, 3, 4)])
def test_brute_force_equals_forward_enumeration_exactly(V, K, seed):
    """On small configs, the path decomposition counts exactly what a float64 forward pass counts."""
    model = small_model(V, K, seed=seed, qk_scale=3.0)
    expected = enumerate_with_forward(model.double(), batch_size=97)
    model = small_model(V, K, seed=seed, qk_scale=3.0)
    bound = brute_force(model, block_elements=V * 3)  # small blocks: exercise the blocking
    assert (bound.correct_count, bound.total_count) == expected
    tokens = torch.cartesian_prod(*[torch.arange(V)] * K)
    logits = model.double()(tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(logits, tokens.max(-1).values).item()
    assert bound.extra["mean_loss"] == pytest.approx(loss, rel=1e-5)


def test_brute_force_rechecks_exact_ties():
    """A model whose logits all tie gets nothing right, and the ties are resolved in float64."""
    model = small_model(5, 3)
    with torch.no_grad():
        model.W_U.zero_()
    bound = brute_force(model)
    assert bound.correct_count == 0
    assert bound.extra["near_ties_rechecked_in_float64"] == 5**3


weights = st.sampled_from(["random", "sharp", "trained"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(V=st.integers(4, 12), K=st.integers(2, 4), seed=st.integers(0, 10_000), kind=weights,
       scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_every_strategy_is_sound(registry, V, K, seed, kind, scale):
    if kind == "trained":
        model = trained_model(min(V, 8), K, seed=seed % 3)
    else:
        model = small_model(V, K, d_model=8, seed=seed, qk_scale=10.0 if kind == "sharp" else 1.0, scale=scale)
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    for strategy in registry.strategies("max-of-k"):
        result = strategy.prove(model)
        assert result.correct_count <= exact.correct_count, strategy.name
        assert result.total_count == exact.total_count


def test_cubic_is_tight_on_a_trained_model(registry):
    model = trained_model(8, 3, seed=0, steps=600)
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    cubic = registry.strategy("max-of-k", "cubic").prove(model)
    assert 0.5 * exact.correct_count < cubic.correct_count <= exact.correct_count


class TestShippedModelRegression(expecttest.TestCase):
    """Pinned results on the shipped Max-of-4 model (bound to 4 decimals, counts, FLOPs)."""

    @pytest.fixture(autouse=True)
    def _setup(self, reference_model, registry):
        self.model, self.registry = reference_model, registry

    def summary(self, name):
        r = self.registry.strategy("max-of-k", name).prove(self.model)
        return (f"{r.strategy}: bound {r.accuracy_lower_bound:.4f} correct {r.correct_count}/{r.total_count} "
                f"flops {r.flops} unexplained {r.unexplained_dimension}")

    def test_brute_force(self):
        self.assertExpectedInline(self.summary("brute-force"), """brute-force: bound 0.9950 correct 16693511/16777216 flops 6793286576 unexplained 1073741824""")

    def test_cubic(self):
        self.assertExpectedInline(self.summary("cubic"), """cubic: bound 0.9283 correct 15573639/16777216 flops 56426099 unexplained 12800""")


@pytest.mark.slow
def test_brute_force_agrees_with_float32_forward_up_to_near_ties(reference_model):
    forward_correct, total = enumerate_with_forward(reference_model, batch_size=8192)
    bound = brute_force(reference_model, with_loss=False)
    # The float32 HookedTransformer and the float64 model differ only on near-tie inputs.
    assert abs(forward_correct - bound.correct_count) <= 100, (forward_correct, bound.correct_count)
