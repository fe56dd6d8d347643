"""The compact pair-bounds proof: never above the truth, group by group; certificates; the shipped model."""

import math

import numpy as np
import pytest
import torch
from expecttest import assert_expected_inline
from hypothesis import HealthCheck, given, settings, strategies as st

from gbmi_core import Certificate, lens
from gbmi_core.flops import count_flops
from gbmi_induction import pairs
from gbmi_induction.brute_force import CORRECT, brute_force, classify
from gbmi_induction.model import all_inputs, match_position, tables

from .conftest import random_model, trained_model


def true_groups(model) -> torch.Tensor:
    """``[d, n-2, d]``: True where every input of group (q, i, a) is correct in exact arithmetic."""
    d, n = model.cfg.d_vocab, model.cfg.n_ctx
    X = all_inputs(d, n)
    status = torch.cat([classify(tables(model), X[s: s + 4096]) for s in range(0, len(X), 4096)])
    i = match_position(X)
    key = (X[:, -1] * (n - 2) + i) * d + X[torch.arange(len(X)), i + 1]
    size = d * (n - 2) * d
    count = torch.bincount(key, minlength=size)
    right = torch.bincount(key, weights=(status == CORRECT).double(), minlength=size)
    return ((count > 0) & (right == count)).reshape(d, n - 2, d)


def assert_sound(model):
    proved = pairs.group_map(model)
    crude = pairs.group_map(model, steps=0)
    truth = true_groups(model)
    assert not (proved & ~truth).any(), "a group proved that has a wrong input"
    assert not (crude & ~truth).any(), "a group proved (crude) that has a wrong input"
    exact = brute_force(model).correct_count
    assert pairs.verify(model).correct_count <= exact
    return int(proved.sum()), int(truth.sum())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(4, 7), n=st.integers(4, 6), seed=st.integers(0, 10_000), scale=st.sampled_from([0.3, 1.0, 3.0]),
       qk=st.sampled_from([1.0, 4.0, 20.0]), biases=st.booleans())
def test_random_and_sharpened_models_are_never_over_proved(d, n, seed, scale, qk, biases):
    if n - 1 > d:
        return
    assert_sound(random_model(d, n, seed=seed, scale=scale, qk_scale=qk, biases=biases))


@pytest.mark.parametrize("d, n, seed, recipe", [(8, 5, 0, "gbmi"), (7, 6, 1, "gbmi"), (10, 6, 2, "gbmi"),
                                                (8, 5, 0, "peer"), (9, 6, 1, "peer")])
def test_trained_models_are_proved_soundly_and_well(d, n, seed, recipe):
    model = trained_model(d, n, seed=seed, recipe=recipe)
    proved, true = assert_sound(model)
    assert true == d * (d - 1) * (n - 2)  # both recipes learn the task
    assert proved >= 0.5 * true


def _certificate(found: dict) -> Certificate:
    return Certificate("pair-bounds", "hash", {k: v for k, v in found.items() if k.startswith("lambda_")},
                       {"steps": found["steps"]})


def test_the_certificate_is_checked_not_trusted():
    model = trained_model(8, 5)
    found = pairs.search(model)
    searched = pairs.verify(model)
    assert pairs.verify(model, _certificate(found)) == searched
    exact = brute_force(model).correct_count
    generator = np.random.default_rng(0)
    for tamper in (lambda a: a - 50.0, lambda a: a + generator.normal(0, 5, a.shape), lambda a: np.full_like(a, np.nan),
                   lambda a: -np.inf * np.ones_like(a), lambda a: a[..., :1]):
        forged = {k: (tamper(v) if k.startswith("lambda_") else v) for k, v in found.items()}
        assert pairs.verify(model, _certificate(forged)).correct_count <= exact
    crude = pairs.verify(model, None, steps=0)
    assert pairs.verify(model, Certificate("pair-bounds", "hash", {}, {})).correct_count == crude.correct_count


def test_the_shipped_model(reference_model):
    bound, counter = count_flops(pairs.verify, reference_model)
    crude = pairs.verify(reference_model, None, steps=0)
    exact, brute = count_flops(brute_force, reference_model)
    assert exact.correct_count == exact.total_count == math.perm(16, 5) * 4
    assert counter.total < brute.total  # the compact proof is shorter than brute force
    assert_expected_inline(
        f"pairs {bound.correct_count}/{bound.total_count} groups {bound.extra['groups_proved']}; "
        f"crude {crude.correct_count} groups {crude.extra['groups_proved']}",
        """pairs 2083536/2096640 groups 954; crude 2031120 groups 930""")


def test_a_root_check_takes_each_weight_at_the_end_that_bounds_f_from_above():
    """One free key with value g = -1 and weight w in [1, 2], known keys with total weight 1 and numerator 0:
    the largest average is max_w -w / (1 + w) = -1/2 (at w = 1).  A root λ = -0.55 is below it, so the check
    must fail; taking w at its upper end (2) would have passed it: F = 0.55 - 0.45·2 < 0."""
    import torch

    from gbmi_core.certified import Interval
    from gbmi_induction.pairs import _check

    one = torch.ones(1, dtype=torch.float64)
    w = Interval(one.reshape(1, 1), 2 * one.reshape(1, 1))
    crude = torch.full((1,), 7.0, dtype=torch.float64)
    out = _check(Interval.exact(0 * one), Interval.exact(one), [(w, -one.reshape(1, 1))],
                 torch.ones(1, 1, dtype=torch.bool), crude, torch.tensor([-0.55], dtype=torch.float64), 1)
    assert float(out) == 7.0  # the crude bound, not the too-low root
    out = _check(Interval.exact(0 * one), Interval.exact(one), [(w, -one.reshape(1, 1))],
                 torch.ones(1, 1, dtype=torch.bool), crude, torch.tensor([-0.45], dtype=torch.float64), 1)
    assert float(out) == -0.45  # a root above the maximum is accepted


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), keys=st.integers(1, 3), spread=st.sampled_from([0.1, 1.0, 10.0]))
def test_dinkelbach_reaches_the_largest_average_and_never_goes_below_it(seed, keys, spread):
    """Known keys with weight W and weighted sum N, free keys each choosing one of 5 (weight, value) pairs:
    the bound is at least the largest average over every choice, and (run to its root) at most a hair above."""
    import itertools

    from gbmi_core.certified import Interval
    from gbmi_induction.pairs import _dinkelbach

    generator = np.random.default_rng(seed)
    W = float(generator.uniform(0.1, 2.0))
    N = W * float(generator.normal(0, spread))
    weights = generator.uniform(0.0, 3.0, (keys, 5))
    values = generator.normal(0, spread, (keys, 5))
    allowed = torch.from_numpy(generator.uniform(size=(1, 5)) < 0.8)
    allowed[0, 0] = True
    best = max((N + sum(weights[k, c[k]] * values[k, c[k]] for k in range(keys))) /
               (W + sum(weights[k, c[k]] for k in range(keys)))
               for c in itertools.product(*[np.flatnonzero(allowed[0].numpy())] * keys))
    free = [(Interval.exact(torch.from_numpy(weights[k:k + 1])), torch.from_numpy(values[k:k + 1])) for k in range(keys)]
    crude = torch.full((1,), 1e9, dtype=torch.float64)
    bound = float(_dinkelbach(Interval.exact(torch.tensor([N], dtype=torch.float64)),
                              Interval.exact(torch.tensor([W], dtype=torch.float64)), free, allowed, crude, 32, 1))
    assert best <= bound <= best + 1e-6 * (1 + abs(best))


def test_a_perturbed_peer_model_is_never_over_proved():
    """A model trained by the peer's recipe, then its weights jittered and its layer-0 scores softened:
    rows spread, near-ties appear, and every group the proof claims is still right on every input."""
    model = trained_model(8, 5, seed=0, recipe="peer")
    generator = torch.Generator().manual_seed(7)
    with lens.editing(model) as w:
        for name in lens.parameter_names(lens.architecture(model)):
            if name.rsplit(".", 1)[1].startswith("W_"):
                w[name].add_(0.05 * w[name].std() * torch.randn(w[name].shape, generator=generator))
        w["blocks.0.attn.W_Q"].mul_(0.6)
    proved, _ = assert_sound(model)
    assert proved > 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), keys=st.integers(1, 6))
def test_the_worst_attention_average_is_the_least_over_every_row(seed, keys):
    """min Σ r_j g_j / (1 + Σ r_j) over the box 0 <= r <= R: at most every vertex's and every random row's
    value, and equal (to rounding) to the least vertex (a fractional program's minimum is at a vertex)."""
    import itertools

    from gbmi_induction.pairs import _worst_average

    generator = np.random.default_rng(seed)
    gap = generator.normal(-5, 10, keys)
    ratio = generator.exponential(1.0, keys) * generator.choice([0.01, 1.0, 100.0])

    def average(r):
        return float((r * gap).sum() / (1 + r.sum()))

    vertices = min(average(np.array(c) * ratio) for c in itertools.product([0, 1], repeat=keys))
    bound = float(_worst_average(torch.from_numpy(gap), torch.from_numpy(ratio)))
    assert bound <= vertices <= bound + 1e-9 * (1 + abs(bound))
    for _ in range(50):
        assert bound <= average(generator.uniform(0, 1, keys) * ratio)
    assert float(_worst_average(torch.tensor([-1.0, 2.0], dtype=torch.float64),
                                torch.tensor([float("inf"), 1.0], dtype=torch.float64))) == -float("inf")
