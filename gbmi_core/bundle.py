"""Proof bundles: one self-contained file per proof, and an independent check that re-runs verification.

A bundle (``<strategy>.gbmi-proof.npz``) holds the model's weights, the task and config, the strategy's
name, the certificate that search produced, the claimed result and the package versions that made it.
:func:`check` re-runs only verification on it (never search, never the store) and compares the count it
proves with the claimed one.  Weights and certificate are checked against the hashes recorded beside
them first, so a changed file is named for what changed.

>>> import gbmi_core
>>> gbmi_core.check("bundles/cubic.gbmi-proof.npz")         # doctest: +SKIP
CheckResult(agree=True, message='agree: 15573639/16777216 proved, as claimed', ...)
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import platform
import zipfile
from importlib import metadata
from typing import Any, Mapping

import attrs
import numpy as np

from .config import HASH_LENGTH, structure, unstructure
from .errors import GbmiError
from .store import hash_arrays

FORMAT = "gbmi-proof-bundle/1"
SUFFIX = ".gbmi-proof.npz"
_HEADER = "__bundle__"


@attrs.frozen
class CheckResult:
    """What :func:`check` found: ``agree`` is ``True`` only when verification proves at least the claim."""

    path: str
    agree: bool
    message: str
    claimed: int | None = None
    proved: int | None = None


def certificate_hash(arrays: Mapping[str, np.ndarray], attributes: Mapping[str, Any]) -> str:
    digest = hash_arrays(hashlib.sha256(), arrays)
    digest.update(json.dumps(dict(attributes), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:HASH_LENGTH]


def _versions(distribution: str | None) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("gbmi-core", "torch", "numpy", distribution):
        if name:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    return versions


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:HASH_LENGTH]


def claim_hashes(header: Mapping[str, Any]) -> dict[str, str]:
    """One hash per part of the header that changes what the claim means, so that a change is named."""
    return {"task": _digest([header.get("task"), header.get("config_type")]),
            "strategy": _digest([header.get("strategy"), header.get("options")]),
            "config": _digest(header.get("config")),
            "architecture": _digest([header.get("architecture"), header.get("imported")])}


def write_bundle(directory, strategy, model, config, certificate, result, *, architecture=None) -> pathlib.Path:
    """Write one proof as ``DIRECTORY/<strategy>.gbmi-proof.npz`` (written whole, then renamed into place).

    ``architecture``: for an imported model, the canonical config fields (gbmi_core.lens) it is rebuilt from (its
    task's ``build_model(config)`` may not reproduce it).  Every bundle records its model's architecture
    (the attention scale and its switch among it), covered by the model hash."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{strategy.name}{SUFFIX}"
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(bundle_bytes(strategy, model, config, certificate, result, architecture=architecture))
    partial.replace(path)
    return path


def bundle_bytes(strategy, model, config, certificate, result, *, architecture=None) -> bytes:
    """One proof bundle's bytes (what :func:`write_bundle` writes)."""
    import io

    from .lens import architecture as architecture_of
    from .models import model_weights, weights_hash

    weights = model_weights(model)
    plugin_info = strategy.registry.pm.infos.get(strategy.plugin)
    header = {
        "format": FORMAT,
        "task": strategy.task,
        "strategy": strategy.name,
        "options": json.loads(json.dumps(dict(strategy.spec.options), default=str)),
        "config_type": type(config).__qualname__,
        "config": unstructure(config),
        "imported": architecture is not None,
        "architecture": architecture if architecture is not None else architecture_of(model),
        "model_hash": result.model_hash,
        "weights_hash": weights_hash(weights),
        "certificate_hash": certificate_hash(certificate.arrays, certificate.attrs),
        "certificate_attrs": json.loads(json.dumps(dict(certificate.attrs), default=str)),
        "claimed": {"correct_count": result.correct_count, "total_count": result.total_count,
                    "accuracy_lower_bound": result.accuracy_lower_bound, "certified": result.certified,
                    "flops": result.flops},
        "versions": _versions(plugin_info.distribution if plugin_info else None),
    }
    header["hashes"] = claim_hashes(header)
    arrays = {f"weights/{name}": value for name, value in weights.items()}
    arrays.update({f"certificate/{name}": np.asarray(value) for name, value in certificate.arrays.items()})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{_HEADER: np.array(json.dumps(header, sort_keys=True))}, **arrays)
    return buffer.getvalue()


def _read(source, path) -> tuple[dict, dict, dict]:
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        header = json.loads(str(arrays.pop(_HEADER)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        reason = "it is not a numpy .npz archive" if "pickle" in str(error) else str(error)
        raise GbmiError(f"{path} is not a readable gbmi proof bundle: {reason}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GbmiError(f"{path} is not a gbmi proof bundle (format "
                        f"{header.get('format') if isinstance(header, dict) else None!r}, expected {FORMAT!r})")
    weights = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("weights/")}
    certificate = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("certificate/")}
    return header, weights, certificate


def claim_problem(claimed: Any) -> str | None:
    """What is wrong with a bundle's claim as data (``None`` when it is well-formed): counts are ints (not
    bools), ``0 <= count <= total``, the bound equals count/total, ``certified`` is a bool."""
    if not isinstance(claimed, dict):
        return "the claim is not a record"
    count, total = claimed.get("correct_count"), claimed.get("total_count")
    for name, value in (("correct_count", count), ("total_count", total)):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"the claimed {name} is {value!r}, not an integer"
    if not 0 <= count <= total or total <= 0:
        return f"the claimed count {count}/{total} is not a count of inputs"
    bound = claimed.get("accuracy_lower_bound")
    if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound != count / total:
        return f"the claimed accuracy_lower_bound {bound!r} is not {count}/{total} = {count / total!r}"
    if not isinstance(claimed.get("certified"), bool):
        return f"the claimed certified flag is {claimed.get('certified')!r}, not true or false"
    return None


def check(bundle, registry=None, *, name: str | None = None) -> CheckResult:
    """Re-run verification of one bundle and say whether it proves what the bundle claims.

    ``bundle``: a path, or the bundle's bytes (then ``name`` says what to call it).

    Raises :class:`~gbmi_core.errors.GbmiError` when the file is not a bundle or names a task or strategy
    that no installed plugin provides; every other problem is a disagreement, with its reason.
    """
    from .errors import CertificateRejected, ModelRefused
    from .lens import architecture as architecture_of
    from .models import load_weights, model_hash, weights_hash
    from .records import Certificate
    from .registry import get_registry

    import io

    if isinstance(bundle, (bytes, bytearray)):
        path, source = name or "<bundle>", io.BytesIO(bundle)
    else:
        path = source = pathlib.Path(bundle)
    header, weights, arrays = _read(source, path)
    registry = registry or get_registry()
    for name in ("task", "strategy"):
        if not isinstance(header.get(name), str):
            raise GbmiError(f"{path} names no {name}")
    task = registry.task(header["task"])
    strategy = registry.strategy(header["task"], header["strategy"])
    claimed = header.get("claimed")

    def disagree(message: str, proved: int | None = None) -> CheckResult:
        count = claimed.get("correct_count") if isinstance(claimed, dict) else None
        return CheckResult(str(path), False, f"disagree: {message}", count if isinstance(count, int) else None, proved)

    problem = claim_problem(claimed)
    if problem:
        return disagree(problem)
    recorded = header.get("hashes")
    if isinstance(recorded, dict):  # bundles written before these hashes have none
        changed = [name for name, value in claim_hashes(header).items() if recorded.get(name) != value]
        if changed:
            return disagree(f"the {', '.join(changed)} recorded in the bundle changed after it was written "
                            f"(their hashes no longer match)")
    if any(not isinstance(v, np.ndarray) or v.dtype.kind not in "fiub" for v in weights.values()):
        return disagree("the weights are not numeric arrays")
    digest, recorded_weights = weights_hash(weights), header.get("weights_hash", header.get("model_hash"))
    if digest != recorded_weights:
        return disagree(f"the weights were changed: they hash to {digest}, the bundle records {recorded_weights}")
    attributes = header.get("certificate_attrs", {})
    if not isinstance(attributes, dict):
        return disagree("the certificate's attributes are not a record")
    digest = certificate_hash(arrays, attributes)
    if digest != header.get("certificate_hash"):
        return disagree(f"the certificate was changed: it hashes to {digest}, "
                        f"the bundle records {header.get('certificate_hash')}")
    from .imports import ModelFileError, build_from_state

    try:
        import torch

        if "architecture" in header and not isinstance(header["architecture"], dict):
            return disagree("the architecture recorded in the bundle is not a record")
        if header.get("imported") or ("architecture" in header and "imported" not in header):
            model = build_from_state(header["architecture"],
                                     {k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        else:
            model = load_weights(task.build_model(structure(task.config_type, header["config"])), weights)
            if "architecture" in header and architecture_of(model) != header["architecture"]:
                return disagree("the architecture recorded in the bundle is not the one its config builds")
        if "architecture" in header and model_hash(model) != header.get("model_hash"):
            return disagree("the model hash does not match the weights and architecture")
        if task.check_model is not None:
            task.check_model(model)
        certificate = Certificate(strategy.name, header["model_hash"], arrays, attributes)
        bound, _ = strategy.verify(model, certificate, model_hash=header["model_hash"])
    except (CertificateRejected, ModelRefused, ModelFileError) as error:
        return disagree(str(error))
    if bound.total_count != claimed["total_count"]:
        return disagree(f"claimed {claimed['total_count']} inputs in all, verification counts {bound.total_count}",
                        bound.correct_count)
    if claimed["certified"] and not bound.certified:
        return disagree("the claim is certified but this verification is not", bound.correct_count)
    if bound.correct_count < claimed["correct_count"]:
        return disagree(f"the claimed count was not reproduced: claimed {claimed['correct_count']}/"
                        f"{claimed['total_count']}, verification proves {bound.correct_count}", bound.correct_count)
    more = "" if bound.correct_count == claimed["correct_count"] else f" (at least the claimed {claimed['correct_count']})"
    kind = "certified" if bound.certified else "uncertified"
    return CheckResult(str(path), True, f"agree: {bound.correct_count}/{bound.total_count} proved{more}, {kind}",
                       claimed["correct_count"], bound.correct_count)


__all__ = ["CheckResult", "FORMAT", "SUFFIX", "bundle_bytes", "certificate_hash", "check", "claim_hashes", "claim_problem", "write_bundle"]
