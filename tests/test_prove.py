"""Running proofs through the registry: search/verify split, certificates, results in the store."""

import attrs
import pytest

import gbmi_core
from gbmi_core import Certificate, CertificateRejected, ModelRefused, Store


def test_prove_on_a_trained_model_matches_exact_count(majority_registry, tmp_path):
    store = Store(tmp_path / "store")
    config = majority_registry.make_config("majority", overrides={"seed": 1})
    model, metrics = majority_registry.train_or_load("majority", config, store, progress=False)
    result = majority_registry.strategy("majority", "enumerate").prove(model, store)
    assert (result.correct_count, result.total_count) == (8, 8)
    assert result.accuracy_lower_bound == 1.0
    assert result.flops > 0 and result.unexplained_dimension == 8
    assert store.get(f"results/majority/{result.model_hash}/enumerate").attrs["correct_count"] == 8
    # a second train_or_load returns the stored model: same weights, no training
    again, metrics_again = majority_registry.train_or_load("majority", config, store, progress=False)
    from gbmi_core.models import model_hash

    assert model_hash(again) == model_hash(model) == result.model_hash
    assert metrics_again == metrics


def test_a_broken_model_is_counted_wrong(majority_registry):
    import torch

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()  # every logit ties: nothing is strictly right
    result = majority_registry.strategy("majority", "enumerate").prove(model)
    assert result.correct_count == 0


def test_certificate_for_another_model_is_rejected(majority_registry):
    import torch

    strategy = majority_registry.strategy("majority", "enumerate")
    model = torch.nn.Linear(3, 2)
    certificate = Certificate("enumerate", "0" * 16)
    with pytest.raises(CertificateRejected, match="certificate was made for model 0000000000000000"):
        strategy.prove(model, certificate=certificate)
    good = strategy.search(model)
    with pytest.raises(CertificateRejected, match="for strategy 'other'"):
        strategy.prove(model, certificate=attrs.evolve(good, strategy="other"))


def test_model_of_the_wrong_kind_is_refused(majority_registry):
    import torch

    with pytest.raises(ModelRefused, match="needs a torch.nn.Linear with 2 outputs"):
        majority_registry.strategy("majority", "enumerate").prove(torch.nn.Linear(3, 4))


def test_presets_and_bad_config(majority_registry):
    assert majority_registry.make_config("majority", preset="five-bits").n_bits == 5
    with pytest.raises(gbmi_core.UnknownName, match="unknown preset 'six-bits'.*'five-bits'"):
        majority_registry.make_config("majority", preset="six-bits")
    with pytest.raises(gbmi_core.ConfigError, match="n_bits"):
        majority_registry.make_config("majority", overrides={"n_bits": 4})


class _GreedyPlugin:
    """A strategy whose verification asks the allocator for 4 TB: a real out-of-memory failure."""

    @gbmi_core.hookimpl
    def gbmi_proof_strategies(self):
        def verify(model, certificate):
            import torch

            torch.empty(2**40)

        return [gbmi_core.StrategySpec(task="majority", name="greedy", summary="Allocates far too much.",
                                       complexity="O(1)", verify=verify)]


def test_an_allocator_failure_becomes_a_memory_refusal_naming_the_strategy(example_plugin_module):
    import torch

    registry = gbmi_core.get_registry(load_entrypoints=False,
                                      plugins=[("majority", example_plugin_module), ("greedy", _GreedyPlugin())])
    with pytest.raises(gbmi_core.MemoryRefused, match=r"verification of majority/greedy ran out of memory \(the "
                                                      r"budget is .*\)"):
        registry.strategy("majority", "greedy").prove(torch.nn.Linear(3, 2))
