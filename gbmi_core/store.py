"""The store: a Zarr v3 directory store of models, cached tensors, certificates and results.

Layout under the store root::

    zarr.json                 the root group (attrs: {"gbmi_store": 1})
    .objects/<uuid>/          one Zarr group per written entry (arrays + attrs), never modified
    entries/<key...>          a symbolic link to the object that is the entry's current value
    .corrupt/                 entries that failed their checksum, set aside for inspection

Writes are atomic: an entry is written in full into a fresh object, then published by replacing the
entry's link with ``os.replace`` (an atomic rename).  A process killed at any point leaves either the old
link (old state) or the new one (complete new entry); an object never linked is invisible.  Two writers
of the same key each write their own object; the last rename wins and both objects are complete.

Every entry carries a SHA-256 checksum over its arrays and attrs.  A corrupt entry found on read is
reported with a :class:`CorruptEntryWarning`, moved to ``.corrupt/``, and treated as absent, so the
caller recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import time
import uuid
import warnings
from typing import Any, Callable, Iterator, Mapping

import attrs
import numpy as np

from .errors import CorruptEntry, StoreError

STORE_ENV = "GBMI_STORE"
_CHECKSUM = "gbmi_checksum"
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=")


class CorruptEntryWarning(UserWarning):
    """A store entry failed its check and was set aside; it will be recomputed."""


def default_store_path() -> pathlib.Path:
    """``$GBMI_STORE``, else ``$XDG_DATA_HOME/gbmi/store`` (``~/.local/share/gbmi/store``)."""
    env = os.environ.get(STORE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return pathlib.Path(data_home) / "gbmi" / "store"


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    for part in parts:
        if not part or part in {".", ".."} or not set(part) <= _KEY_CHARS:
            raise StoreError(f"invalid store key {key!r}: parts must be non-empty and use [A-Za-z0-9-_.+=]")
    return parts


def hash_arrays(digest, arrays: Mapping[str, np.ndarray]):
    """Feed named arrays (name, dtype, shape and bytes, by sorted name) into a hashlib ``digest``."""
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest


def checksum(arrays: Mapping[str, np.ndarray], attributes: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(attributes, sort_keys=True, separators=(",", ":")).encode())
    return hash_arrays(digest, arrays).hexdigest()


@attrs.frozen
class Entry:
    """One entry read back: numpy arrays and JSON attrs."""

    key: str
    arrays: Mapping[str, np.ndarray]
    attrs: Mapping[str, Any]


class Store:
    """A gbmi store rooted at a directory (created on first use)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = pathlib.Path(root).expanduser() if root is not None else default_store_path()
        self._ready = False

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- layout ------------------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            for sub in (".objects", "entries", ".corrupt"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if not (self.root / "zarr.json").exists():
                # Make the root a Zarr group without racing another process doing the same: build the
                # group's metadata in a private folder, then rename it into place (identical content).
                import zarr

                private = self.root / ".objects" / f"root-{uuid.uuid4().hex}"
                zarr.open_group(str(private), mode="w-", attributes={"gbmi_store": 1})
                os.replace(private / "zarr.json", self.root / "zarr.json")
                private.rmdir()
        except OSError as error:
            raise StoreError(f"cannot use store at {self.root}: {error.strerror or error}") from None
        self._ready = True

    def _link(self, key: str) -> pathlib.Path:
        return self.root / "entries" / pathlib.Path(*_check_key(key))

    # -- writing -----------------------------------------------------------------------------------
    def put(self, key: str, arrays: Mapping[str, Any] | None = None, attributes: Mapping[str, Any] | None = None) -> None:
        """Write (or replace) ``key`` atomically."""
        import zarr

        link = self._link(key)
        self._ensure()
        arrays = {name: np.asarray(value) for name, value in (arrays or {}).items()}
        attributes = json.loads(json.dumps(dict(attributes or {})))  # JSON-able, detached copy
        object_id = uuid.uuid4().hex
        object_dir = self.root / ".objects" / object_id
        group = zarr.open_group(str(object_dir), mode="w-")
        for name, array in arrays.items():
            _check_key(name)
            group.create_array(name, data=array)
        group.attrs.update({"attrs": attributes, "key": key, _CHECKSUM: checksum(arrays, attributes)})
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.parent / f".{link.name}.{object_id}.tmp"
        os.symlink(os.path.relpath(object_dir, link.parent), temporary)
        os.replace(temporary, link)

    # -- reading -----------------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None if absent.  A corrupt entry is set aside and reported."""
        link = self._link(key)
        if not os.path.lexists(link):
            return None
        try:
            return self._read(key, link)
        except CorruptEntry as error:
            self.set_aside(key, str(error))
            return None

    def _read(self, key: str, link: pathlib.Path) -> Entry:
        import zarr

        try:
            group = zarr.open_group(str(link.resolve(strict=True)), mode="r")
            meta = dict(group.attrs)
            arrays = {name: np.asarray(group[name][...]) for name in group.array_keys()}
        except Exception as error:  # noqa: BLE001 - anything unreadable is corrupt
            raise CorruptEntry(f"store entry {key!r} cannot be read: {type(error).__name__}: {error}") from None
        attributes = meta.get("attrs")
        if meta.get("key") != key or not isinstance(attributes, dict):
            raise CorruptEntry(f"store entry {key!r} has missing or foreign metadata")
        if checksum(arrays, attributes) != meta.get(_CHECKSUM):
            raise CorruptEntry(f"store entry {key!r} fails its checksum")
        return Entry(key, arrays, attributes)

    def set_aside(self, key: str, reason: str) -> None:
        """Move a bad entry to ``.corrupt/`` (kept for inspection) and warn; the key then reads as absent."""
        link = self._link(key)
        aside = self.root / ".corrupt" / f"{key.replace('/', '__')}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
        try:
            target = link.resolve()
            os.replace(link, aside.with_suffix(".link"))
            if target.exists() and target.is_relative_to(self.root / ".objects"):
                os.replace(target, aside)
        except OSError:
            pass
        warnings.warn(f"{reason}; it was moved to {aside} and will be recomputed", CorruptEntryWarning, stacklevel=3)

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._link(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """All keys under ``prefix`` (sorted)."""
        base = self.root / "entries"
        start = base / pathlib.Path(*_check_key(prefix)) if prefix else base
        if not start.exists():
            return iter(())
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            for name in dirnames + filenames:
                path = pathlib.Path(dirpath) / name
                if path.is_symlink() and not name.startswith("."):
                    found.append(path.relative_to(base).as_posix())
        return iter(sorted(found))

    def delete(self, key: str) -> bool:
        link = self._link(key)
        if not os.path.lexists(link):
            return False
        os.unlink(link)
        return True

    def collect_garbage(self, older_than_s: float = 3600.0) -> int:
        """Remove objects no entry links to (left by killed or losing writers).  Returns how many."""
        if not (self.root / ".objects").exists():
            return 0
        live = {os.path.realpath(self.root / "entries" / key) for key in self.keys()}
        removed = 0
        now = time.time()
        for path in (self.root / ".objects").iterdir():
            if str(path.resolve()) not in live and now - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    # -- cached computations -----------------------------------------------------------------------
    def cached(self, key: str, compute: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]]) -> Entry:
        """The entry at ``key``; computed with ``compute() -> (arrays, attrs)`` and stored when absent."""
        entry = self.get(key)
        if entry is None:
            arrays, attributes = compute()
            self.put(key, arrays, attributes)
            entry = self.get(key)
            if entry is None:  # pragma: no cover - a concurrent corruption
                raise StoreError(f"store entry {key!r} vanished right after it was written")
        return entry


def tensor_cache_key(model_hash: str, computation: str, params: Mapping[str, Any] | None = None) -> str:
    """The key of a cached intermediate tensor: model hash + computation + parameter hash."""
    digest = hashlib.sha256(json.dumps(dict(params or {}), sort_keys=True).encode()).hexdigest()[:16]
    return f"cache/{model_hash}/{computation}/{digest}"
