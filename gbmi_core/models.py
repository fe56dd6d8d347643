"""Model identity and (de)serialisation: content hashes over weights, store entries, shipped model files.

Models are torch modules (a ``state_dict``); torch is imported only when a model is touched.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Mapping

import numpy as np

from .config import HASH_LENGTH, canonical_json, content_hash, structure, unstructure
from .errors import CorruptEntry, ModelRefused
from .store import hash_arrays

_META = "__gbmi__"


def model_weights(model: Any) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays: a TransformerLens model's in the canonical layout of
    :mod:`gbmi_core.lens` (the same under 3.x and 4.x), any other torch module's by state-dict name."""
    from . import lens

    if lens.kind(model) is not None:
        return {name: value.detach().cpu().numpy() for name, value in lens.canonical_state(model).items()}
    if not hasattr(model, "state_dict"):
        raise ModelRefused(f"a {type(model).__name__} has no state_dict(); gbmi models are torch modules")
    return {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}


def weights_hash(weights: Mapping[str, np.ndarray]) -> str:
    return hash_arrays(hashlib.sha256(), weights).hexdigest()[:HASH_LENGTH]


def identity_hash(weights: Mapping[str, np.ndarray], architecture: Mapping[str, Any] | None) -> str:
    """The hash that names a model: its weights and the architecture fields that change what it computes
    (attention scale and its switch, normalisation, activation, ...).  Two models that differ only in
    ``attn_scale`` are different models, with different hashes."""
    digest = hash_arrays(hashlib.sha256(), weights)
    if architecture:
        digest.update(b"architecture:" + json.dumps(dict(architecture), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:HASH_LENGTH]


def model_architecture(model: Any) -> dict | None:
    """A TransformerLens model's canonical architecture (:func:`gbmi_core.lens.architecture`), or ``None``
    for another kind of torch module."""
    from . import lens

    return lens.architecture(model) if lens.kind(model) is not None else None


def model_hash(model: Any) -> str:
    """A content hash of a model: its weights and its architecture (:func:`identity_hash`), the same anywhere."""
    return identity_hash(model_weights(model), model_architecture(model))


def load_weights(model: Any, weights: Mapping[str, np.ndarray]) -> Any:
    import torch

    from . import lens

    state = {name: torch.from_numpy(np.array(value)) for name, value in weights.items()}
    try:
        if lens.kind(model) is not None:
            return lens.load_state(model, state)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ModelRefused, lens.LensError) as error:
        raise CorruptEntry(f"stored weights do not fit the model built from the config: {error}") from None
    return model


def model_key(task: str, config: Any) -> str:
    return f"models/{task}/{content_hash(config)}"


def entry_attrs(task: str, config: Any, weights: Mapping[str, np.ndarray], metrics: Mapping[str, Any],
                architecture: Mapping[str, Any] | None = None) -> dict:
    """A model entry's attributes: ``model_hash`` names the model (weights and architecture, as
    :func:`model_hash`), ``weights_hash`` checks the stored weights."""
    return {
        "task": task,
        "config_type": type(config).__qualname__,
        "config": unstructure(config),
        "config_hash": content_hash(config),
        "model_hash": identity_hash(weights, architecture),
        "weights_hash": weights_hash(weights),
        "metrics": json.loads(json.dumps(dict(metrics))),
    }


def model_from_entry(task_spec: Any, arrays: Mapping[str, np.ndarray], attributes: Mapping[str, Any], key: str):
    """Rebuild a model from a store entry, checking that it is what the entry says it is."""
    config = structure(task_spec.config_type, attributes["config"])
    if content_hash(config) != attributes.get("config_hash"):
        raise CorruptEntry(f"store entry {key!r}: its config does not hash to its recorded config hash")
    if weights_hash(arrays) != attributes.get("weights_hash", attributes.get("model_hash")):
        raise CorruptEntry(f"store entry {key!r}: its weights do not hash to its recorded weights hash")
    model = load_weights(task_spec.build_model(config), arrays)
    return model, config


def export_model_file(path: str | pathlib.Path, task: str, config: Any, model: Any,
                      metrics: Mapping[str, Any]) -> pathlib.Path:
    """Write a model as one ``.npz`` file (weights plus a JSON header) that :func:`read_model_file` reads."""
    path = pathlib.Path(path)
    weights = model_weights(model)
    header = entry_attrs(task, config, weights, metrics, model_architecture(model))
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **{_META: np.array(json.dumps(header, sort_keys=True))}, **weights)
    return path


def read_model_file(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a ``.npz`` model file: ``(weights, attrs)``."""
    try:
        with np.load(pathlib.Path(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise CorruptEntry(f"model file {path} cannot be read: {error}") from None
    if _META not in arrays:
        raise CorruptEntry(f"model file {path} has no gbmi header")
    header = json.loads(str(arrays.pop(_META)))
    return arrays, header


def load_model_file(task_spec: Any, path: str | pathlib.Path):
    """A model file (from :func:`export_model_file`) as a model of ``task_spec``, checked against its hashes."""
    arrays, attributes = read_model_file(path)
    return model_from_entry(task_spec, arrays, attributes, str(path))[0]


class ShippedModels:
    """The model files a plugin ships in one directory: ``file name -> config``.

    ``by_config_hash()`` is what ``TaskSpec.reference_models`` wants; ``load`` reads one back, checked
    against its hashes; ``write`` (or ``main``, a small CLI) trains them all and writes the files."""

    def __init__(self, task: str, directory: str | pathlib.Path, configs: Mapping[str, Any]):
        self.task, self.directory, self.configs = task, pathlib.Path(directory), dict(configs)

    def by_config_hash(self) -> dict[str, pathlib.Path]:
        """Config content hash -> file, for the files that exist."""
        return {content_hash(config): self.directory / name for name, config in self.configs.items()
                if (self.directory / name).exists()}

    def load(self, task_spec: Any, name: str):
        return load_model_file(task_spec, self.directory / name)

    def write(self, train: Any, directory: str | pathlib.Path | None = None,
              only: list[str] | None = None) -> list[pathlib.Path]:
        """Train each config (``train(config) -> TrainedModel``), or those named in ``only``, and write it as a
        model file."""
        directory = self.directory if directory is None else pathlib.Path(directory)
        unknown = sorted(set(only or ()) - set(self.configs))
        if unknown:
            raise ValueError(f"no shipped {self.task} model named {', '.join(unknown)} "
                             f"(known: {', '.join(self.configs)})")
        written = []
        for name, config in self.configs.items():
            if only and name not in only:
                continue
            trained = train(config)
            written.append(export_model_file(directory / name, self.task, config, trained.model, trained.metrics))
            print(f"wrote {written[-1]}: {trained.metrics}")
        return written

    def main(self, train: Any, argv=None) -> None:
        import argparse

        parser = argparse.ArgumentParser(description=f"Train and write the shipped {self.task} models.")
        parser.add_argument("output", type=pathlib.Path, nargs="?", default=self.directory)
        parser.add_argument("--only", action="append", metavar="NAME", choices=sorted(self.configs),
                            help="train only this file (repeatable); default: all")
        args = parser.parse_args(argv)
        self.write(train, args.output, args.only)


__all__ = ["canonical_json", "identity_hash", "model_architecture", "model_hash", "model_weights", "weights_hash", "export_model_file", "load_model_file",
           "read_model_file", "ShippedModels"]
