"""Published sweeps: a store exported to one zip archive, and proof bundles rebuilt from a store.

``gbmi store export SOURCE --to sweep.zip`` writes the models, certificates and results of SOURCE (a
directory or any store URL) into one file in the object-store layout (:mod:`gbmi_core.objectstore`): every
entry one member ``entries/<key>``, packed as a local store packs small entries, its checksums unchanged.
The archive is a read-only store: ``gbmi --store sweep.zip report|results``, ``gbmi check sweep.zip``.
With ``bundles=True`` it also holds one proof bundle per result, ``bundles/<task>/<model hash>/<strategy>
.gbmi-proof.npz``, which ``gbmi check`` (or ``gbmi-check``, sharing no code with gbmi) checks alone.

The archive is written to a hidden file beside the target and renamed into place: a killed export leaves
no partial archive under the target's name.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Any, Iterator

from .errors import GbmiError
from .objectstore import MARKER, MARKER_DATA
from .store import Store, meta_for, pack

#: What an export holds by default: not ``cache/`` (intermediate tensors, recomputed on demand).
EXPORTED = ("models", "certificates", "results")
BUNDLES = "bundles"


def _models_by_hash(store) -> dict[str, tuple[str, dict]]:
    found: dict[str, tuple[str, dict]] = {}
    for key in store.keys("models"):
        attributes = store.attrs(key)
        if attributes is not None and "model_hash" in attributes:
            found.setdefault(attributes["model_hash"], (key, dict(attributes)))
    return found


def stored_bundles(registry, store, *, match=None) -> Iterator[tuple[str, bytes | None, str | None]]:
    """Proof bundles rebuilt from a store's results: ``(name, bundle bytes, None)`` for each result whose
    model, certificate and strategy are there, else ``(name, None, why not)``.  ``match(name)`` filters."""
    from . import lens
    from .bundle import SUFFIX, bundle_bytes
    from .errors import UnknownName
    from .imports import model_from_imported
    from .models import model_from_entry
    from .records import Certificate, ProofResult

    models = _models_by_hash(store)
    for task in store.children("results"):
        for model_hash in store.children(f"results/{task}"):
            model = config = architecture = None
            for key in store.keys(f"results/{task}/{model_hash}"):
                strategy_name = key.rsplit("/", 1)[-1]
                name = f"{BUNDLES}/{task}/{model_hash}/{strategy_name}{SUFFIX}"
                if match is not None and not match(name):
                    continue
                try:
                    strategy = registry.strategy(task, strategy_name)
                except UnknownName as error:
                    yield name, None, str(error)
                    continue
                result, certificate = store.get(key), store.get(f"certificates/{task}/{model_hash}/{strategy_name}")
                if result is None or certificate is None or model_hash not in models:
                    yield name, None, "the store lacks its " + ("result" if result is None else "certificate"
                                                                 if certificate is None else "model")
                    continue
                try:  # entries come from whoever wrote the store: anything malformed is named, not raised
                    if model is None:
                        model_key, attributes = models[model_hash]
                        entry = store.get(model_key)
                        if entry is None:
                            yield name, None, f"the model entry {model_key!r} cannot be read"
                            continue
                        spec = registry.task(task)
                        if attributes.get("imported"):
                            model = model_from_imported(entry.attrs, entry.arrays, model_key)
                            config = spec.config_from_model(model) if spec.config_from_model else None
                            architecture = lens.architecture(model)
                        else:
                            model, config = model_from_entry(spec, entry.arrays, entry.attrs, model_key)
                    attributes = {k: v for k, v in certificate.attrs.items() if k != "gbmi_search_version"}
                    certificate = Certificate(strategy_name, model_hash, certificate.arrays, attributes)
                    data = bundle_bytes(strategy, model, config, certificate, ProofResult.from_dict(result.attrs),
                                        architecture=architecture)
                except Exception as error:  # noqa: BLE001
                    yield name, None, f"cannot be rebuilt from the store: {type(error).__name__}: {error}"
                    continue
                yield name, data, None


def export_store(source, target, *, registry=None, bundles: bool = False, kinds=EXPORTED,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``source`` (a Store or a location) to the zip archive ``target``.  Returns counts and bytes."""
    from .progress import progress as reporter

    store = source if isinstance(source, Store) else Store(source)
    if not store.present():
        raise GbmiError(f"there is no store at {store.root}")
    target = pathlib.Path(target)
    if target.suffix != ".zip":
        raise GbmiError(f"the archive must be a .zip file, not {str(target)!r}")
    keys = [key for kind in kinds for key in store.keys(kind)]
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    counts = {"entries": 0, "unreadable": 0, "bundles": 0, "bundles_skipped": 0}
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            archive.writestr(MARKER, MARKER_DATA)
            bar = reporter(len(keys), "exporting", "entry", enabled=progress)
            for key in keys:
                entry = store.get(key)  # checked against its checksums: a corrupt entry is not published
                bar.update(1)
                if entry is None:
                    counts["unreadable"] += 1
                    continue
                meta, arrays = meta_for(key, entry.arrays, entry.attrs)
                archive.writestr(f"entries/{key}", pack(meta, arrays),
                                 compress_type=zipfile.ZIP_STORED if arrays else zipfile.ZIP_DEFLATED)
                counts["entries"] += 1
            bar.close()
            if bundles:
                if registry is None:
                    from .registry import get_registry

                    registry = get_registry()
                for name, data, _why in stored_bundles(registry, store):
                    if data is None:
                        counts["bundles_skipped"] += 1
                        continue
                    archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
                    counts["bundles"] += 1
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    counts["bytes"] = target.stat().st_size
    return counts


def _bundle_paths(store) -> dict[str, Any]:
    """The proof bundles a store (an exported archive, a URL, a directory) holds under ``bundles/``: name ->
    its path (a local path, or the store's filesystem path)."""
    from .bundle import SUFFIX

    fs = getattr(store, "fs", None)
    if fs is None:
        base = pathlib.Path(store.root) / BUNDLES
        paths = sorted(base.rglob(f"*{SUFFIX}")) if base.is_dir() else []
        return {path.relative_to(store.root).as_posix(): path for path in paths}
    try:
        paths = sorted(p for p in fs.find(store._path(BUNDLES)) if p.endswith(SUFFIX))
    except FileNotFoundError:
        paths = []
    return {(path.strip("/")[len(store.prefix) + 1:] if store.prefix else path.strip("/")): path for path in paths}


def holds_bundles(store) -> bool:
    """Whether a store holds proof bundles (an archive exported with ``--bundles``)."""
    return bool(_bundle_paths(store))


def archived_bundles(store, *, match=None) -> Iterator[tuple[str, bytes]]:
    """The proof bundles a store holds under ``bundles/`` (those whose name ``match`` accepts), read."""
    for name, path in _bundle_paths(store).items():
        if match is None or match(name):
            yield name, (path.read_bytes() if isinstance(path, pathlib.Path) else store.fs.cat_file(path))
