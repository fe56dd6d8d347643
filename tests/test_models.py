"""gbmi_core.models: shipping reference models with a plugin (write, find by config hash, load, refuse tampering)."""

import numpy as np
import pytest

from gbmi_core import CorruptEntry
from gbmi_core.config import content_hash
from gbmi_core.models import ShippedModels, load_model_file, model_hash


def test_reference_models_round_trip(tmp_path, example_plugin_module, capsys):
    plugin = example_plugin_module
    (spec,) = plugin.gbmi_tasks()
    configs = {"majority_5.npz": spec.config_type(n_bits=5, seed=1), "missing.npz": spec.config_type(n_bits=3)}
    written = ShippedModels(spec.name, tmp_path, {"majority_5.npz": configs["majority_5.npz"]}).write(
        lambda c: plugin.train(c, progress=False))
    assert [p.name for p in written] == ["majority_5.npz"] and "wrote" in capsys.readouterr().out
    shipped = ShippedModels(spec.name, tmp_path, configs)
    found = shipped.by_config_hash()
    assert found == {content_hash(configs["majority_5.npz"]): tmp_path / "majority_5.npz"}  # missing files left out
    model = shipped.load(spec, "majority_5.npz")
    assert model_hash(model) == model_hash(load_model_file(spec, written[0]))
    again = plugin.train(configs["majority_5.npz"], progress=False).model
    assert model_hash(model) == model_hash(again)  # deterministic training, faithfully stored
    with np.load(written[0]) as data:
        arrays = {k: data[k] for k in data.files}
    name = next(k for k in arrays if not k.startswith("__"))
    arrays[name] = arrays[name] + 1
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(CorruptEntry, match="weights do not hash"):
        load_model_file(spec, tmp_path / "tampered.npz")


def test_lazy_references_import_on_first_call_and_pickle():
    import pickle

    from gbmi_core import lazy

    ref = lazy("json:dumps", sort_keys=True)
    assert ref({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    again = pickle.loads(pickle.dumps(ref))
    assert again({"b": 1, "a": 2}) == '{"a": 2, "b": 1}' and "json:dumps" in repr(again)
    with pytest.raises(ValueError, match="package.module:function"):
        lazy("json.dumps")
