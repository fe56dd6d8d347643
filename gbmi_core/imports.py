"""Bring your own model: load a TransformerLens model saved the usual ways, check it, and keep it in the store.

Accepted files (weights from either TransformerLens version; the model is rebuilt under the installed one
through :mod:`gbmi_core.lens`):

* a ``state_dict`` in ``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``: no arbitrary code),
  ``.safetensors``, or ``.npz`` (numpy, ``allow_pickle=False``; gbmi's own model files too), in 3.x
  ``HookedTransformer`` layout or 4.x ``TransformerBridge`` layout (the latter with its config);
* a whole pickled module in ``.pt`` only with ``allow_pickle=True`` (``--allow-pickle``): unpickling runs
  whatever code the file names, so only for files you trust;
* from Python, a ``HookedTransformer`` or ``TransformerBridge`` object itself.

The architecture comes from a side-car JSON (``--model-config FILE``, else ``<file>.json`` or
``<file minus suffix>.json`` beside it) holding the model's ``cfg.to_dict()`` (or the subset of its fields
that matter); without one it is inferred from a 3.x state dict's names and shapes.  The task's
``check_model`` then says whether its proofs apply, naming the reason when not.  An imported model is
stored under ``models/<task>/imported-<model hash>`` with its architecture, so proofs of it are cached and
reported (``gbmi results``) like those of trained models.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from . import lens
from .errors import GbmiError, ModelRefused

#: The config fields a side-car JSON may give (others in it are ignored): :data:`gbmi_core.lens.FIELDS` and ``eps``.
ARCHITECTURE_FIELDS = lens.FIELDS + ("eps",)


class ModelFileError(GbmiError, ValueError):
    """A model file that cannot be read as a model: the message names the file and the cause."""


def _side_car(path: pathlib.Path, config_path) -> dict | None:
    candidates = [pathlib.Path(config_path)] if config_path else [path.with_name(path.name + ".json"),
                                                                 path.with_suffix(".json")]
    for candidate in candidates:
        if candidate.is_file() and candidate != path:
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise ModelFileError(f"model config {candidate} is not readable JSON: {error}") from None
            if not isinstance(data, dict):
                raise ModelFileError(f"model config {candidate} must be a JSON object of HookedTransformerConfig fields")
            return data
    if config_path:
        raise ModelFileError(f"model config {config_path} does not exist")
    return None


def read_weights(path, *, allow_pickle: bool = False):
    """``(state_dict of tensors, module or None)`` from ``path``; a whole module only with ``allow_pickle``."""
    import torch

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path))), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "__gbmi__"}
            return {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}, None
        if suffix in {".pt", ".pth", ".bin"}:
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError and others
                if "Unsupported global" not in str(error):  # not pickled objects: a damaged or foreign file
                    raise ModelFileError(f"model file {path} is corrupt or not a torch file: it cannot be read "
                                         f"as a state_dict ({_first_reason(error)})") from None
                if not allow_pickle:
                    raise ModelFileError(
                        f"model file {path} is not a plain state_dict (it pickles Python objects: "
                        f"{_first_reason(error)}); if it is a whole pickled model from a source you trust, "
                        f"pass --allow-pickle (unpickling runs the code the file names)") from None
                loaded = torch.load(path, map_location="cpu", weights_only=False)
            if isinstance(loaded, torch.nn.Module):
                return dict(loaded.state_dict()), loaded
            if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
                loaded = loaded["state_dict"]
            if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
                return dict(loaded), None
            raise ModelFileError(f"model file {path} holds a {type(loaded).__name__}, not a state_dict of tensors")
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged file, in any format
        raise ModelFileError(f"model file {path} cannot be read: {type(error).__name__}: {error}") from None
    raise ModelFileError(f"model file {path}: unknown format {suffix!r} (use .pt, .safetensors or .npz)")


def _first_reason(error: Exception) -> str:
    """torch's reason in one line, without its advice to re-run with ``weights_only=False``."""
    text = str(error)
    for marker in ("Unsupported global:", "WeightsUnpickler error:", "PytorchStreamReader"):
        if marker in text:
            text = text[text.index(marker):]
            break
    for advice in ("Check the documentation", "This is an internal", "If you", " was not an allowed"):
        text = text.split(advice)[0]
    return " ".join(text.split())[:160]


def infer_architecture(state: Mapping[str, Any]) -> dict:
    """HookedTransformerConfig fields inferred from a TransformerLens state_dict's names and shapes."""
    def shape(name):
        if name not in state:
            raise ModelFileError(f"the weights have no {name!r}: not a TransformerLens HookedTransformer "
                                 f"state_dict (give its config in a side-car JSON)")
        return tuple(state[name].shape)

    d_vocab, d_model = shape("embed.W_E")
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layers:
        raise ModelFileError("the weights have no blocks.N.* entries: not a HookedTransformer state_dict")
    n_heads, _, d_head = shape("blocks.0.attn.W_Q")
    has_mlp = any(".mlp." in k for k in state)
    if any(k.startswith("blocks.0.ln1.w") for k in state):
        normalization = "LN"
    elif any(k.startswith("blocks.0.ln1.") for k in state):
        normalization = "LNPre"
    else:
        normalization = None
    config = {"n_layers": len(layers), "d_model": d_model, "d_head": d_head, "n_heads": n_heads,
              "d_vocab": d_vocab, "d_vocab_out": shape("unembed.W_U")[1], "attn_only": not has_mlp,
              "normalization_type": normalization, "act_fn": "relu" if has_mlp else None}
    if "pos_embed.W_pos" in state:
        config["n_ctx"] = shape("pos_embed.W_pos")[0]
        config["positional_embedding_type"] = "standard"
    else:
        raise ModelFileError("the weights have no pos_embed.W_pos: give n_ctx and the positional embedding "
                             "type in a side-car JSON")
    if has_mlp:
        config["d_mlp"] = shape("blocks.0.mlp.W_in")[1]
    return config


def build_from_state(architecture: Mapping[str, Any], state: Mapping[str, Any]):
    """A model of the installed TransformerLens for ``architecture`` holding ``state`` (canonical layout;
    every parameter must be given)."""
    try:
        arch = lens.normalise({k: v for k, v in architecture.items() if k in ARCHITECTURE_FIELDS})
    except lens.LensError as error:
        raise ModelFileError(f"the model config cannot be used: {error}") from None
    try:
        return lens.build(arch, state=state)  # refuses weights that do not fit, naming them
    except lens.LensError as error:
        raise ModelFileError(str(error)) from None


def load_model(path, *, config_path=None, allow_pickle: bool = False):
    """``(model, architecture dict)`` from a model file (see the module doc), or from a TransformerLens model
    object itself (a ``HookedTransformer`` or ``TransformerBridge``; TransformerLens 4.3 cannot pickle a
    bridge to a file, so this is how a whole 4.x module comes in).  The model is rebuilt under the installed
    TransformerLens from the weights, whatever version (or pickled module) wrote them."""
    if lens.kind(path) is not None:
        state, module = None, path
    else:
        state, module = read_weights(path, allow_pickle=allow_pickle)
    if module is not None:
        if lens.kind(module) is None:
            raise ModelFileError(f"model file {path} holds a {type(module).__name__} module, not a TransformerLens "
                                 f"HookedTransformer or TransformerBridge")
        architecture, state = lens.architecture(module), lens.canonical_state(module)
    else:
        architecture = _side_car(pathlib.Path(path), config_path)
        if lens.is_bridge_layout(state):
            if architecture is None:
                raise ModelFileError(
                    f"model file {path} is a TransformerLens 4 (TransformerBridge) state dict, whose names do not "
                    f"say n_heads and d_head: save json.dumps(model.cfg.to_dict(), default=str) beside it as "
                    f"{pathlib.Path(path).name}.json, or pass --model-config")
            try:
                state = lens.to_canonical(state, lens.normalise(architecture))
            except lens.LensError as error:
                raise ModelFileError(f"the model config cannot be used: {error}") from None
        elif architecture is None:
            architecture = infer_architecture(state)
    model = build_from_state(architecture, state)
    return model, lens.architecture(model)


def import_model(registry, task: str, path, store, *, config_path=None, allow_pickle: bool = False):
    """Load, check against ``task`` and store a model file (or a TransformerLens model object):
    ``(model, key, model hash)``."""
    from .config import content_hash, unstructure
    from .models import model_hash, model_weights, weights_hash

    spec = registry.task(task)
    model, architecture = load_model(path, config_path=config_path, allow_pickle=allow_pickle)
    if spec.check_model is not None:
        spec.check_model(model)
    weights = model_weights(model)
    digest = model_hash(model)  # weights and architecture: another attention scale is another model
    key = f"models/{task}/imported-{digest}"
    config = spec.config_from_model(model) if spec.config_from_model is not None else None
    source = f"a {type(path).__name__} object" if lens.kind(path) is not None else str(path)
    attributes = {"task": task, "imported": True, "source": source, "architecture": architecture,
                  "config": unstructure(config) if config is not None else {},
                  "config_hash": content_hash(config) if config is not None else "",
                  "model_hash": digest, "weights_hash": weights_hash(weights), "metrics": {}}
    if not store.exists(key):
        store.put(key, weights, attributes, packed=False)
    return model, key, digest


def model_from_imported(attributes: Mapping[str, Any], arrays: Mapping[str, np.ndarray], key: str):
    """Rebuild an imported model from its store entry."""
    import torch

    from .errors import CorruptEntry
    from .models import weights_hash

    if weights_hash(arrays) != attributes.get("weights_hash", attributes.get("model_hash")):
        raise CorruptEntry(f"store entry {key!r}: its weights do not hash to its recorded weights hash")
    return build_from_state(attributes["architecture"], {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
