"""Max-of-K through the registry, the store and the CLI, as a user would run it."""

import json
import warnings

import pytest

import gbmi_core
from gbmi_core import Store
from gbmi_core.models import model_hash
from gbmi_core.store import CorruptEntryWarning
from gbmi_max_of_k.config import MaxOfKConfig

from .conftest import gbmi


def test_train_or_load_imports_the_shipped_model_then_loads_it(tmp_path, reference_model, monkeypatch):
    registry = gbmi_core.get_registry()
    store = Store(tmp_path / "store")
    monkeypatch.setattr("gbmi_max_of_k.train.train", lambda *a, **k: pytest.fail("must not train"))
    model, metrics = registry.train_or_load("max-of-k", MaxOfKConfig(seed=123), store)
    assert model_hash(model) == model_hash(reference_model)
    assert metrics["eval_accuracy"] > 0.99
    [key] = store.keys("models/max-of-k")
    again, _ = registry.train_or_load("max-of-k", MaxOfKConfig(seed=123), store)
    assert model_hash(again) == model_hash(model)


def test_a_corrupt_stored_model_is_set_aside_and_recomputed(tmp_path):
    registry = gbmi_core.get_registry()
    store = Store(tmp_path / "store")
    config = MaxOfKConfig(V=6, K=3, d_model=8, steps=30, seed=1)
    model, _ = registry.train_or_load("max-of-k", config, store, progress=False)
    [key] = store.keys("models/max-of-k")
    entry = store.get(key)
    store.put(key, {**entry.arrays, "embed.W_E": entry.arrays["embed.W_E"] * 2}, entry.attrs)  # weights ≠ hash
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, _ = registry.train_or_load("max-of-k", config, store, progress=False)
    assert any(issubclass(w.category, CorruptEntryWarning) and "do not hash" in str(w.message) for w in caught)
    assert model_hash(again) == model_hash(model)  # retrained, deterministically


def test_cli_train_and_prove(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    trained = gbmi(*store, "train", "max-of-k", "--seed", "123")
    assert trained.returncode == 0, trained.stderr
    assert "eval_accuracy: 1.0" in trained.stdout
    proved = gbmi(*store, "prove", "max-of-k", "--seed", "123", "--strategy", "cubic", "--json")
    assert proved.returncode == 0, proved.stderr
    [result] = json.loads(proved.stdout)
    assert result["strategy"] == "cubic" and 0.9 < result["accuracy_lower_bound"] <= 1
    assert len(list(Store(tmp_path / "store").keys("results/max-of-k"))) == 1
    table = gbmi(*store, "prove", "max-of-k", "--seed", "123", "--strategy", "cub*")
    assert table.stdout.splitlines()[2].split()[0] == "cubic"


def test_cli_bad_input_fails_cleanly(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    bad = gbmi(*store, "train", "max-of-k", "--set", "K=1")
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: 'K' must be >= 2: 1 @ MaxOfKConfig"
    bad = gbmi(*store, "prove", "max-of-k", "--preset", "max-of-3")
    assert bad.returncode == 1 and "unknown preset 'max-of-3' for task 'max-of-k'; did you mean" in bad.stderr
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"V": 6, "vocab": 3}))
    bad = gbmi(*store, "train", "max-of-k", "--config", str(config))
    assert bad.returncode == 1 and "unknown field(s) vocab" in bad.stderr


def test_the_shipped_model_retrains_bit_for_bit_with_its_hash(reference_model):
    """The shipped file is what `python -m gbmi_max_of_k.reference` trains here, under TransformerLens 3.x
    and 4.x alike (gbmi's own initialisation and training on canonical weights), and its hash, which names
    it in every store and bundle, is the same under both (CI runs this file under each)."""
    from gbmi_core.models import read_model_file, weights_hash, model_weights
    from gbmi_max_of_k.reference import SHIPPED
    from gbmi_max_of_k.train import train

    assert model_hash(reference_model) == "691796e91d0f6bf8"
    _, header = read_model_file(SHIPPED.directory / "max_of_4_seed_123.npz")
    retrained = train(SHIPPED.configs["max_of_4_seed_123.npz"], progress=False).model
    assert weights_hash(model_weights(retrained)) == header["weights_hash"]
