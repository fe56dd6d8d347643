"""The Max-of-K model: what the proofs accept and refuse, the fast forward, deterministic training."""

import pytest
import torch

from gbmi_core import ModelRefused, lens
from gbmi_max_of_k.config import PRESETS, MaxOfKConfig
from gbmi_max_of_k.model import check_model, last_logits, paths
from gbmi_max_of_k.train import train

from .conftest import small_model


def _ht(**overrides):
    cfg = dict(n_layers=1, n_heads=1, d_model=8, d_head=8, d_vocab=6, d_vocab_out=6, n_ctx=3, attn_only=True,
               normalization_type=None, act_fn=None)
    cfg.update(overrides)
    return lens.build(cfg, seed=0)


@pytest.mark.parametrize("overrides, reason", [
    ({"attn_only": False, "d_mlp": 16, "act_fn": "relu"}, "it has an MLP"),
    ({"normalization_type": "LN"}, "it uses LN normalisation"),
    ({"n_heads": 2, "d_head": 4}, "it has 2 attention heads"),
    ({"n_layers": 2}, "it has 2 layers"),
    ({"d_vocab_out": 7}, "differs from its output vocabulary"),
    ({"positional_embedding_type": "rotary", "rotary_dim": 8}, "its positional embedding is 'rotary'"),
])
def test_incompatible_architectures_are_refused_with_the_reason(overrides, reason):
    with pytest.raises(ModelRefused, match=reason):
        check_model(_ht(**overrides))


def test_bad_weights_are_refused():
    model = small_model(6, 3)
    check_model(model)
    with lens.editing(model) as w:
        w["unembed.b_U"][2] = 0.5
    check_model(model)  # biases are welcome (folded into the paths)
    model = small_model(6, 3)
    with lens.editing(model) as w:
        w["embed.W_E"][1, 1] = float("nan")
    with pytest.raises(ModelRefused, match="weight embed.W_E holds NaN"):
        check_model(model)
    with pytest.raises(ModelRefused, match="not a Linear"):
        check_model(torch.nn.Linear(2, 2))


def test_fast_forward_and_paths_match_the_hooked_transformer(reference_model):
    tokens = torch.randint(0, 64, (512, 4), generator=torch.Generator().manual_seed(0))
    expected = reference_model(tokens)[:, -1]
    torch.testing.assert_close(last_logits(lens.Weights.of(reference_model), tokens), expected, rtol=1e-4, atol=1e-4)
    P = paths(reference_model)  # logit[x] = EUPU[q,x] + sum_i a_i (EVOU[t_i,x] + PVOU[i,x])
    q = tokens[:, -1]
    scores = (P.EQKE()[q[:, None], tokens] + P.EQKP()[q]) / P.attn_scale
    logits = P.EUPU()[q] + torch.einsum("bn,bnv->bv", scores.softmax(-1), P.EVOU()[tokens] + P.PVOU()[None])
    torch.testing.assert_close(logits.float(), expected, rtol=1e-4, atol=1e-4)


def test_training_is_deterministic_and_learns():
    config = MaxOfKConfig(V=8, K=3, d_model=16, seed=5, steps=400)
    first, second = train(config, progress=False), train(config, progress=False)
    for (name, a), (_, b) in zip(lens.canonical_state(first.model).items(), lens.canonical_state(second.model).items()):
        assert torch.equal(a, b), name
    other = train(MaxOfKConfig(V=8, K=3, d_model=16, seed=6, steps=400), progress=False)
    assert not torch.equal(lens.Weights.of(first.model).W_E, lens.Weights.of(other.model).W_E)
    assert first.metrics["eval_accuracy"] > 0.9
    assert not any(".b_" in name for name in lens.trainable(first.model))
    assert (lens.Weights.of(first.model).b_U == 0).all()


def test_config_defaults_and_presets():
    config = MaxOfKConfig()
    assert (config.V, config.K, config.d_model, config.steps, config.batch_size) == (64, 4, 32, 3000, 128)
    assert (config.lr, config.betas, config.weight_decay) == (1e-3, (0.9, 0.999), 0.01)
    assert set(PRESETS) == {"max-of-4", "max-of-5", "max-of-10", "max-of-10-128v", "max-of-20", "max-of-20-512v"}


def test_shipped_model_is_what_the_header_says(reference_model):
    from gbmi_core.config import content_hash
    from gbmi_core.models import model_weights, read_model_file, weights_hash
    from gbmi_max_of_k.reference import REFERENCE_DIR

    _, header = read_model_file(REFERENCE_DIR / "max_of_4_seed_123.npz")
    assert header["config_hash"] == content_hash(MaxOfKConfig(seed=123))
    # files written before model hashes covered the architecture record the weights' hash there
    assert header.get("weights_hash", header["model_hash"]) == weights_hash(model_weights(reference_model))
    assert header["metrics"]["eval_accuracy"] > 0.99


def test_the_model_hash_covers_the_attention_scale(tmp_path, reference_model):
    """Two imports of the same weights with another attention scale (or its switch) are other models:
    other hashes, other store entries, so no proof of one is ever reused for the other."""
    import json

    import numpy as np

    import gbmi_core
    from gbmi_core.imports import import_model
    from gbmi_core.lens import architecture as architecture_of
    from gbmi_core.models import model_weights

    weights = model_weights(reference_model)
    path = tmp_path / "model.npz"
    np.savez(path, **weights)
    registry, store = gbmi_core.get_registry(), gbmi_core.Store(tmp_path / "store")
    keys = set()
    # what scores are divided by, whichever way the config says it (use_attn_scale=False divides by 1)
    for change, divisor in (({}, 32**0.5), ({"attn_scale": 2.0}, 2.0), ({"use_attn_scale": False}, 1.0)):
        side_car = tmp_path / f"arch{len(keys)}.json"
        side_car.write_text(json.dumps({**architecture_of(reference_model), **change}))
        model, key, digest = import_model(registry, "max-of-k", path, store, config_path=side_car)
        assert architecture_of(model)["attn_scale"] == divisor
        keys.add((key, digest))
    assert len({key for key, _ in keys}) == 3 and len({digest for _, digest in keys}) == 3
