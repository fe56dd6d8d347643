"""Honest bundles agree: the independent checker proves at least every claim the prover makes."""

import random

import pytest

import gbmi_check

from .conftest import bundle, claimed, induction_model, max_of_k_model, modular_model

MAX_OF_K = [(V, K, seed, kind) for seed, (V, K, kind) in enumerate(
    [(5, 3, "random"), (6, 3, "sharp"), (6, 3, "tied"), (6, 3, "hidden"), (5, 3, "huge"), (6, 2, "random"),
     (4, 4, "random"), (7, 3, "sharp"), (5, 4, "tied"), (6, 3, "trained"), (8, 3, "trained"), (5, 3, "trained"),
     (6, 3, "random"), (7, 2, "sharp"), (6, 3, "huge"), (5, 3, "hidden"), (8, 2, "random"), (6, 4, "trained"),
     (4, 3, "sharp"), (7, 3, "random"), (6, 3, "tied"), (5, 2, "hidden"), (5, 3, "biased"), (6, 4, "biased"),
     (7, 2, "biased")])]

INDUCTION = [(d, n, seed, kind) for seed, (d, n, kind) in enumerate(
    [(5, 4, "random"), (5, 4, "sharp"), (5, 4, "biased"), (6, 4, "trained"), (6, 5, "random"), (5, 5, "biased"),
     (6, 4, "sharp"), (4, 4, "random"), (6, 5, "trained"), (5, 4, "trained"), (7, 4, "random"), (4, 5, "biased"),
     (6, 4, "biased"), (5, 3, "random"), (6, 3, "sharp"), (7, 4, "trained"), (5, 5, "sharp"), (6, 4, "random"),
     (4, 3, "biased"), (5, 4, "random"), (6, 5, "sharp")])]


def _agree(path):
    verdict = gbmi_check.check(path)
    assert verdict.agree, verdict.message
    assert verdict.proved >= claimed(path)
    return verdict


@pytest.mark.parametrize("V, K, seed, kind", MAX_OF_K)
def test_max_of_k_bundles_agree(registry, tmp_path, V, K, seed, kind):
    model, config = max_of_k_model(V, K, seed=seed, kind=kind)
    names = ["brute-force", "cubic"] + random.Random(seed).sample(
        [s.name for s in registry.strategies("max-of-k") if s.name.startswith("subcubic")], 8)
    exact = _agree(bundle(registry, tmp_path, "max-of-k", "brute-force", model, config)).proved
    assert exact == claimed(tmp_path / "brute-force.gbmi-proof.npz")  # two exact counts, independently
    for name in names[1:]:
        assert _agree(bundle(registry, tmp_path, "max-of-k", name, model, config)).proved <= exact


@pytest.mark.parametrize("d, n, seed, kind", INDUCTION)
def test_induction_bundles_agree(registry, tmp_path, d, n, seed, kind):
    model, config = induction_model(d, n, seed=seed, kind=kind)
    exact = _agree(bundle(registry, tmp_path, "induction", "brute-force", model, config)).proved
    assert exact == claimed(tmp_path / "brute-force.gbmi-proof.npz")
    for name in ("pair-bounds", "pair-bounds-crude"):
        _agree(bundle(registry, tmp_path, "induction", name, model, config))


def test_every_strategy_of_the_shipped_max_of_4_model_agrees(registry, tmp_path):
    from gbmi_max_of_k.config import MaxOfKConfig
    from gbmi_max_of_k.reference import load_reference_model

    model = load_reference_model()
    for strategy in registry.strategies("max-of-k"):
        verdict = _agree(bundle(registry, tmp_path, "max-of-k", strategy.name, model, MaxOfKConfig(seed=123)))
        assert verdict.proved == claimed(tmp_path / f"{strategy.name}.gbmi-proof.npz"), strategy.name


@pytest.mark.slow
def test_every_strategy_of_the_shipped_induction_6_model_agrees(registry, tmp_path):
    from gbmi_induction.config import InductionConfig
    from gbmi_induction.reference import load_reference_model

    model = load_reference_model()
    for strategy in registry.strategies("induction"):
        _agree(bundle(registry, tmp_path, "induction", strategy.name, model, InductionConfig()))


@pytest.mark.parametrize("p, kind, seed", [(5, "random", 0), (7, "pizza", 1), (5, "ln-gelu", 2),
                                           (5, "lnpre-gelu-new", 3), (7, "trained", 4)])
def test_modular_bundles_agree(registry, tmp_path, p, kind, seed):
    model, config = modular_model(p, kind, seed)
    path = bundle(registry, tmp_path, "modular-arithmetic", "brute-force", model, config)
    exact = _agree(path).proved
    assert exact == claimed(path)  # two exact counts, independently
    if kind in ("random", "pizza", "trained"):  # the compact proofs' family: one layer, no LayerNorm
        for name in ("factored", "low-rank-8"):
            assert _agree(bundle(registry, tmp_path, "modular-arithmetic", name, model, config)).proved == exact


def test_modular_subtraction_bundles_agree(registry, tmp_path):
    model, config = modular_model(7, "random", 5)
    exact = {}
    for task in ("modular-arithmetic", "modular-subtraction"):
        path = bundle(registry, tmp_path / task, task, "brute-force", model, config)
        exact[task] = _agree(path).proved
        assert exact[task] == claimed(path)
        assert _agree(bundle(registry, tmp_path / task, task, "factored", model, config)).proved == exact[task]
    assert exact["modular-arithmetic"] != exact["modular-subtraction"]  # each checked against its own label
