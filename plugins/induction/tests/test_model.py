"""The induction model: inputs, the fast forward, path tables, which models are accepted, training."""

import math

import attrs
import numpy as np

import pytest
import torch

from gbmi_core import ModelRefused, lens
from gbmi_induction.brute_force import _point, logits
from gbmi_induction.config import InductionConfig
from gbmi_induction.model import (all_inputs, check_model, count_inputs, label, last_logits, match_position, prefixes,
                                  sample,
                                  tables)
from gbmi_induction.train import train

from .conftest import plain_model, random_model


def test_inputs_are_every_valid_sequence_once():
    d, n = 6, 5
    X = all_inputs(d, n)
    assert len(X) == count_inputs(d, n) == math.perm(6, 4) * 3
    assert len({tuple(row) for row in X.tolist()}) == len(X)
    for row in X.tolist():
        assert len(set(row[:-1])) == n - 1 and row[-1] in row[: n - 2]
    assert count_inputs(16, 6) == 2_096_640 and count_inputs(16, 8) == 345_945_600
    P = prefixes(6, 4)
    assert P.tolist() == sorted(P.tolist())  # lexicographic, so chunks can resume anywhere
    assert torch.equal(prefixes(6, 4, 100, 140), P[100:140])


def test_label_is_the_token_after_the_earlier_copy():
    tokens = torch.tensor([[3, 1, 4, 0, 5, 1], [3, 1, 4, 0, 5, 3], [3, 1, 4, 0, 5, 0]])
    assert label(tokens).tolist() == [4, 1, 5]
    drawn = sample(16, 6, 500, torch.Generator().manual_seed(0))
    assert all(len(set(row[:-1])) == 5 and row[-1] in row[:4] for row in drawn.tolist())


@pytest.mark.parametrize("biases", [False, True])
def test_fast_forward_and_tables_match_the_hooked_transformer(biases):
    model = random_model(7, 5, seed=3, scale=2.0, biases=biases)
    X = all_inputs(7, 5)[::7]
    expected = model(X)[:, -1]
    torch.testing.assert_close(last_logits(lens.Weights.of(model), X), expected, rtol=1e-3, atol=1e-3)  # float32 sums
    exact = model.to(torch.float64)(X)[:, -1]
    torch.testing.assert_close(logits(_point(tables(model.float()), torch.float64), X), exact.double(), rtol=1e-10,
                               atol=1e-10)
    certified = logits(tables(model), X)
    assert bool(((certified.lo <= exact) & (exact <= certified.hi)).all())


def _ht(**overrides):
    cfg = dict(n_layers=2, n_heads=1, d_model=8, d_head=4, d_vocab=6, d_vocab_out=6, n_ctx=5, attn_only=True,
               normalization_type=None, act_fn=None)
    cfg.update(overrides)
    return plain_model(0, **cfg)


@pytest.mark.parametrize("overrides, reason", [
    ({"attn_only": False, "d_mlp": 16, "act_fn": "relu"}, "it has an MLP"),
    ({"normalization_type": "LN"}, "it uses LN normalisation"),
    ({"n_heads": 2}, "it has 2 attention heads"),
    ({"n_layers": 3}, "it has 3 layers"),
    ({"n_layers": 1}, "it has 1 layers"),
    ({"d_vocab_out": 7}, "differs from its output vocabulary"),
    ({"positional_embedding_type": "rotary", "rotary_dim": 4}, "its positional embedding is 'rotary'"),
    ({"n_ctx": 8}, "does not fit a vocabulary of 6"),
])
def test_models_outside_the_family_are_refused_with_the_reason(overrides, reason):
    with pytest.raises(ModelRefused, match=reason):
        check_model(_ht(**overrides))


def test_any_model_of_the_family_is_accepted():
    check_model(_ht())  # TransformerLens' own initialisation, trainable biases
    check_model(_ht(d_model=12, d_head=5, d_vocab=9, d_vocab_out=9, n_ctx=6))
    model = _ht()
    with lens.editing(model) as w:
        w["embed.W_E"][1, 1] = float("inf")
    with pytest.raises(ModelRefused, match="weight embed.W_E holds NaN or infinite values"):
        check_model(model)
    with pytest.raises(ModelRefused, match="not a Linear"):
        check_model(torch.nn.Linear(2, 2))


def test_training_is_deterministic_and_learns():
    config = InductionConfig(d=6, n=5, d_model=8, d_head=4, seed=4, steps=300, eval_samples=256)
    first, second = train(config, progress=False), train(config, progress=False)
    for (name, a), (_, b) in zip(lens.canonical_state(first.model).items(), lens.canonical_state(second.model).items()):
        assert torch.equal(a, b), name
    assert first.metrics["eval_accuracy"] > 0.5 and first.metrics["steps"] == 300


@pytest.mark.slow
@pytest.mark.parametrize("name, digest", [("induction_6_seed_0.npz", "1924665b7f3b0efb"),
                                          ("induction_8_seed_0.npz", "80a25a09dba88110")])
def test_the_shipped_models_retrain_bit_for_bit_with_their_hashes(name, digest):
    """What `python -m gbmi_induction.reference` trains here, under TransformerLens 3.x and 4.x alike."""
    from gbmi_core.models import model_hash, model_weights, read_model_file, weights_hash
    from gbmi_induction.reference import SHIPPED, load_reference_model

    assert model_hash(load_reference_model(name)) == digest
    _, header = read_model_file(SHIPPED.directory / name)
    retrained = train(SHIPPED.configs[name], progress=False).model
    assert weights_hash(model_weights(retrained)) == header["weights_hash"]


def test_the_peer_recipe_draws_its_initialisation_and_data_from_one_numpy_stream():
    from gbmi_induction.train import _peer_sample

    config = InductionConfig(d=7, n=5, d_model=8, d_head=4, seed=3, steps=0, recipe="peer", lr=3e-3)
    state = lens.canonical_state(train(config, progress=False).model)
    rng = np.random.default_rng(3)
    expected = {"embed.W_E": (7, 8), "pos_embed.W_pos": (5, 8)}
    for layer in (0, 1):
        expected |= {f"blocks.{layer}.attn.{leaf}": shape for leaf, shape in
                     (("W_Q", (8, 4)), ("W_K", (8, 4)), ("W_V", (8, 4)), ("W_O", (4, 8)))}
    expected["unembed.W_U"] = (8, 7)
    for name, shape in expected.items():  # N(0, 1/fan_in), in the peer's order, rounded to the model's float32
        drawn = torch.from_numpy(rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)).float()
        assert torch.equal(state[name].reshape(shape), drawn), name
    assert all(not state[name].any() for name in state if name.rsplit(".", 1)[1].startswith("b_"))
    tokens = torch.from_numpy(_peer_sample(rng, 500, 7, 5))  # the data continue the same stream
    assert torch.equal(tokens[:, -1], tokens.gather(1, match_position(tokens)[:, None])[:, 0])
    assert all(len(set(row[:-1].tolist())) == 4 for row in tokens)


def test_the_peer_recipe_is_deterministic_learns_and_has_its_own_hash():
    from gbmi_core.config import content_hash

    config = InductionConfig(d=6, n=5, d_model=16, d_head=8, seed=4, steps=300, eval_samples=256, recipe="peer",
                             lr=3e-3)
    first, second = train(config, progress=False), train(config, progress=False)
    for (name, a), (_, b) in zip(lens.canonical_state(first.model).items(), lens.canonical_state(second.model).items()):
        assert torch.equal(a, b), name
    assert first.metrics["eval_accuracy"] > 0.9
    ours = train(attrs.evolve(config, recipe="gbmi"), progress=False)
    assert not torch.equal(lens.canonical_state(ours.model)["embed.W_E"], lens.canonical_state(first.model)["embed.W_E"])
    assert content_hash(config) != content_hash(attrs.evolve(config, recipe="gbmi"))
    with pytest.raises(ValueError, match="recipe"):
        InductionConfig(recipe="theirs")
