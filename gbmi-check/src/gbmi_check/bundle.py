"""Reading a proof bundle as untrusted input: every value is validated before any proof reads it.

A bundle is a numpy ``.npz`` archive (read with ``allow_pickle=False``: no code runs) holding a JSON header
``__bundle__``, the model's weights ``weights/<state-dict name>`` and the certificate ``certificate/<name>``.
This module knows the header's fields and the TransformerLens weight names, nothing of how gbmi wrote them.
"""

from __future__ import annotations

import json
import math
import zipfile

import attrs
import numpy as np

FORMAT = "gbmi-proof-bundle/1"


class Refused(Exception):
    """The bundle cannot be checked as it stands (malformed, or outside what this checker proves)."""


@attrs.frozen
class Claim:
    task: str
    strategy: str
    config: dict
    architecture: dict
    correct_count: int
    total_count: int
    certified: bool


@attrs.frozen
class Bundle:
    claim: Claim
    weights: dict  # name -> float64 array (exact copies of float32/float64 values)
    certificate: dict  # name -> array, as stored (validated by the proof module that reads it)
    certificate_attrs: dict


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read(path) -> Bundle:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        header = json.loads(str(arrays.pop("__bundle__")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise Refused(f"not a readable proof bundle ({type(error).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise Refused(f"not a gbmi proof bundle of format {FORMAT}")
    claimed = header.get("claimed")
    if not isinstance(claimed, dict):
        raise Refused("the bundle holds no claim")
    count, total = claimed.get("correct_count"), claimed.get("total_count")
    if not (_is_int(count) and _is_int(total)) or not 0 <= count <= total or total <= 0:
        raise Refused(f"the claimed count {count!r} of {total!r} is not a count of inputs")
    bound = claimed.get("accuracy_lower_bound")
    if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound != count / total:
        raise Refused(f"the claimed accuracy_lower_bound {bound!r} is not {count}/{total}")
    if not isinstance(claimed.get("certified"), bool):
        raise Refused("the claimed certified flag is not a boolean")
    for name in ("task", "strategy"):
        if not isinstance(header.get(name), str):
            raise Refused(f"the bundle names no {name}")
    config, architecture = header.get("config"), header.get("architecture")
    if not isinstance(config, dict) or not isinstance(architecture, dict):
        raise Refused("the bundle has no config or no architecture record")
    weights = {}
    for key, value in arrays.items():
        if key.startswith("weights/"):
            if key.rsplit(".", 1)[-1] in ("mask", "IGNORE"):  # TransformerLens' attention buffers: not weights
                continue
            if value.dtype.kind != "f" or value.dtype.itemsize > 8:
                raise Refused(f"weight {key[8:]} has dtype {value.dtype}, not float")
            value = value.astype(np.float64)
            if not np.isfinite(value).all():
                raise Refused(f"weight {key[8:]} holds NaN or infinite values")
            weights[key[8:]] = value
    certificate = {k[12:]: v for k, v in arrays.items() if k.startswith("certificate/")}
    attributes = header.get("certificate_attrs", {})
    if not isinstance(attributes, dict):
        raise Refused("the certificate's attributes are not a record")
    claim = Claim(header["task"], header["strategy"], config, architecture, count, total, claimed["certified"])
    return Bundle(claim, weights, certificate, attributes)


def attention_scale(architecture: dict, d_head: int) -> float:
    """The scale scores are divided by: ``attn_scale`` when ``use_attn_scale`` (TransformerLens' default
    ``√d_head`` when unset), else 1."""
    use = architecture.get("use_attn_scale", True)
    if not isinstance(use, bool):
        raise Refused("use_attn_scale is not a boolean")
    if not use:
        return 1.0
    scale = architecture.get("attn_scale", -1.0)
    if scale is None or scale == -1.0:
        return float(np.sqrt(d_head))
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise Refused(f"attn_scale {scale!r} is not a positive number")
    return float(scale)


def require_architecture(architecture: dict, n_layers: int) -> None:
    """The attention-only, LayerNorm-free family both tasks' proofs are about; anything else is refused."""
    expected = {"n_layers": n_layers, "n_heads": 1, "attn_only": True, "normalization_type": None,
                "positional_embedding_type": "standard"}
    for name, value in expected.items():
        if architecture.get(name, value) != value:
            raise Refused(f"architecture {name}={architecture.get(name)!r}; the proofs need {value!r}")
    off = {"use_local_attn": False, "use_qk_norm": False, "rotary_dim": None, "parallel_attn_mlp": False,
           "scale_attn_by_inverse_layer_idx": False, "output_logits_soft_cap": -1.0,
           "attn_scores_soft_cap": -1.0}
    for name, value in off.items():
        if architecture.get(name, value) not in (value, None, 0.0) or architecture.get(name, value) is True:
            raise Refused(f"architecture {name}={architecture.get(name)!r} is not supported")


def weight(b: Bundle, name: str, shape: tuple) -> np.ndarray:
    if name not in b.weights:
        raise Refused(f"weight {name} is missing")
    value = b.weights[name]
    if value.shape != shape:
        raise Refused(f"weight {name} has shape {value.shape}, expected {shape}")
    return value


def certificate_array(b: Bundle, name: str, kind: str, shape: tuple | None, required: bool = True):
    """A certificate array of signed integers (``kind="int"``) or floats, of ``shape``, as int64/float64."""
    if name not in b.certificate:
        if required:
            raise Refused(f"certificate field {name} is missing")
        return None
    value = b.certificate[name]
    if kind == "int" and value.dtype.kind != "i" or kind == "float" and value.dtype.kind != "f" or value.dtype.itemsize > 8:
        raise Refused(f"certificate field {name} has dtype {value.dtype}")
    if shape is not None and value.shape != shape:
        raise Refused(f"certificate field {name} has shape {value.shape}, expected {shape}")
    return value.astype(np.int64 if kind == "int" else np.float64)
