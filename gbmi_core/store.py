"""The store: a Zarr v3 directory store of models, cached tensors, certificates and results.

Layout under the store root::

    zarr.json                 the root group (attrs: {"gbmi_store": 1})
    .objects/<uuid>/          one Zarr group per large entry (arrays + attrs), never modified
    entries/<key...>          the entry: a symbolic link to its Zarr object, or a packed file
    .corrupt/                 entries that failed their checksum, set aside for inspection

Two kinds of entry, one key space.  **Zarr groups** hold models and any entry whose arrays exceed
:data:`PACKED_LIMIT` (chunked, compressed, readable by any Zarr tool).  The many small records a sweep
writes (results, certificates) are **packed**: the entry is one regular file at ``entries/<key>``, JSON
when it has no arrays, else an ``.npz`` archive (compressed ``.npy`` members plus a ``__gbmi__`` member
holding the JSON header).  A 151-seed × 102-strategy sweep then takes about two files per proof instead
of forty, and reading its results is a JSON parse per proof instead of a Zarr open.

Writes are atomic: an entry is written in full (a fresh object, or a hidden temporary file beside the
entry), then published by ``os.replace`` onto ``entries/<key>`` (an atomic rename, whatever kind was there
before).  A process killed at any point leaves either the old entry or the new one, complete; an object or
temporary file never published is invisible (and :meth:`Store.collect_garbage` removes it).  Two writers
of the same key each write their own copy; the last rename wins and both copies are complete.

Every entry carries a SHA-256 checksum over its arrays and attrs, and one over its attrs alone (so
:meth:`Store.attrs` can read a model's metadata without its weights).  A corrupt entry found on read is
reported with a :class:`CorruptEntryWarning`, moved to ``.corrupt/``, and treated as absent, so the
caller recomputes it.
"""

from __future__ import annotations

import hashlib
import io
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
_ATTRS_CHECKSUM = "gbmi_attrs_checksum"
_HEADER = "__gbmi__"
#: Entries whose arrays take at most this many bytes are packed into one file (unless a caller asks for Zarr).
PACKED_LIMIT = 1 << 20
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=")


class CorruptEntryWarning(UserWarning):
    """A store entry failed its check and was set aside; it will be recomputed."""


def default_store_path() -> pathlib.Path:
    """``$GBMI_STORE``, else ``$XDG_DATA_HOME/gbmi/store`` (``~/.local/share/gbmi/store``)."""
    env = os.environ.get(STORE_ENV)
    if env:
        return pathlib.Path(env.removeprefix("file://")).expanduser()
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


def meta_for(key: str, arrays: Mapping[str, Any] | None, attributes: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """An entry's header (its key, attrs and checksums) and its arrays as numpy, names checked."""
    arrays = {name: np.asarray(value) for name, value in (arrays or {}).items()}
    for name in arrays:
        _check_key(name)
        if name == _HEADER:
            raise StoreError(f"array name {_HEADER!r} is reserved")
    attributes = json.loads(json.dumps(dict(attributes or {})))  # JSON-able, detached copy
    meta = {"attrs": attributes, "key": key, _CHECKSUM: checksum(arrays, attributes),
            _ATTRS_CHECKSUM: checksum({}, attributes)}
    return meta, arrays


def pack(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """A packed entry's bytes: JSON when it has no arrays, else an ``.npz`` with the header member."""
    if not arrays:
        return json.dumps(meta, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(buffer, **arrays, **{_HEADER: header})
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[Any, dict]:
    """A packed entry's header and arrays (unchecked: :meth:`Store._check` checks them)."""
    if data[:2] == b"PK":
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        return json.loads(arrays.pop(_HEADER).tobytes()), arrays
    return json.loads(data), {}


@attrs.frozen
class Entry:
    """One entry read back: numpy arrays and JSON attrs."""

    key: str
    arrays: Mapping[str, np.ndarray]
    attrs: Mapping[str, Any]


class Store:
    """A gbmi store rooted at a directory (created on first use), or at an fsspec URL.

    ``Store("s3://bucket/prefix")``, ``Store("sweep.zip")`` and other URLs give an
    :class:`~gbmi_core.objectstore.ObjectStore` (same interface; archives are read-only)."""

    read_only = False

    def __new__(cls, root: str | os.PathLike | None = None):
        from .objectstore import ObjectStore, is_url

        location = root if root is not None else os.environ.get(STORE_ENV) or None
        if cls is Store and is_url(location):
            return super().__new__(ObjectStore)
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike | None = None):
        if isinstance(root, str):
            root = root.removeprefix("file://")
        self.root = pathlib.Path(root).expanduser() if root is not None else default_store_path()
        self._ready = False

    def __getnewargs__(self):  # pickled (to a worker) by location, rebuilt by __new__
        return (str(self.root),)

    def present(self) -> bool:
        """Whether the store exists yet (a fresh one is created by its first write)."""
        return self.root.exists()

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
    def put(self, key: str, arrays: Mapping[str, Any] | None = None, attributes: Mapping[str, Any] | None = None,
            *, packed: bool | None = None) -> None:
        """Write (or replace) ``key`` atomically.

        ``packed``: one file (``True``), a Zarr group (``False``), or by size (``None``: packed when the
        arrays take at most :data:`PACKED_LIMIT` bytes)."""
        link = self._link(key)
        self._ensure()
        meta, arrays = meta_for(key, arrays, attributes)
        if packed is None:
            packed = sum(a.nbytes for a in arrays.values()) <= PACKED_LIMIT
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.parent / f".{link.name}.{uuid.uuid4().hex}.tmp"
        if packed:
            with open(temporary, "wb") as handle:
                handle.write(pack(meta, arrays))
        else:
            import zarr

            object_dir = self.root / ".objects" / uuid.uuid4().hex
            group = zarr.open_group(str(object_dir), mode="w-")
            for name, array in arrays.items():
                group.create_array(name, data=array)
            group.attrs.update(meta)
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

    def get_many(self, keys: list[str]) -> dict[str, Entry | None]:
        """:meth:`get` of several keys (an object store fetches them concurrently)."""
        return {key: self.get(key) for key in keys}

    def attrs(self, key: str) -> Mapping[str, Any] | None:
        """Only the attrs of ``key`` (checked against their own checksum), or None if absent or corrupt.

        Cheap for Zarr entries too: the arrays are not read."""
        link = self._link(key)
        if not os.path.lexists(link):
            return None
        try:
            if not link.is_symlink():
                return self._read(key, link).attrs
            try:
                with open(link.resolve(strict=True) / "zarr.json") as handle:
                    meta = json.load(handle).get("attributes", {})
            except (OSError, ValueError) as error:
                raise CorruptEntry(f"store entry {key!r} cannot be read: {type(error).__name__}: {error}") from None
            if _ATTRS_CHECKSUM not in meta:  # written before attrs had their own checksum
                return self._read(key, link).attrs
            return self._check(key, meta, None)
        except CorruptEntry as error:
            self.set_aside(key, str(error))
            return None

    def _read(self, key: str, link: pathlib.Path) -> Entry:
        try:
            if link.is_symlink():
                import zarr

                group = zarr.open_group(str(link.resolve(strict=True)), mode="r")
                meta = dict(group.attrs)
                arrays = {name: np.asarray(group[name][...]) for name in group.array_keys()}
            else:
                with open(link, "rb") as handle:
                    meta, arrays = unpack(handle.read())
        except Exception as error:  # noqa: BLE001 - anything unreadable is corrupt
            raise CorruptEntry(f"store entry {key!r} cannot be read: {type(error).__name__}: {error}") from None
        return Entry(key, arrays, self._check(key, meta, arrays))

    @staticmethod
    def _check(key: str, meta: Any, arrays: Mapping[str, np.ndarray] | None) -> dict:
        attributes = meta.get("attrs") if isinstance(meta, dict) else None
        if meta.get("key") != key or not isinstance(attributes, dict):
            raise CorruptEntry(f"store entry {key!r} has missing or foreign metadata")
        if arrays is None:
            if checksum({}, attributes) != meta.get(_ATTRS_CHECKSUM):
                raise CorruptEntry(f"store entry {key!r} fails its checksum")
        elif checksum(arrays, attributes) != meta.get(_CHECKSUM):
            raise CorruptEntry(f"store entry {key!r} fails its checksum")
        return attributes

    def set_aside(self, key: str, reason: str) -> None:
        """Move a bad entry to ``.corrupt/`` (kept for inspection) and warn; the key then reads as absent."""
        link = self._link(key)
        aside = self.root / ".corrupt" / f"{key.replace('/', '__')}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
        try:
            if not link.is_symlink():  # a packed entry: the file itself
                os.replace(link, aside)
            else:
                target = link.resolve()
                os.replace(link, aside.with_suffix(".link"))
                if target.exists() and target.is_relative_to(self.root / ".objects"):
                    os.replace(target, aside)
        except OSError:
            pass
        warnings.warn(f"{reason}; it was moved to {aside} and will be recomputed", CorruptEntryWarning, stacklevel=3)

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._link(key))

    def set_aside_entries(self) -> list[str]:
        """The entries set aside as corrupt (their names under ``.corrupt/``)."""
        aside = self.root / ".corrupt"
        return sorted(p.name for p in aside.iterdir()) if aside.exists() else []

    def drop_set_aside(self) -> int:
        """Delete the entries set aside as corrupt; returns how many."""
        aside = self.root / ".corrupt"
        paths = list(aside.iterdir()) if aside.exists() else []
        for path in paths:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return len(paths)

    def keys(self, prefix: str = "") -> Iterator[str]:
        """All keys under ``prefix`` (sorted)."""
        base = self.root / "entries"
        start = base / pathlib.Path(*_check_key(prefix)) if prefix else base
        if not start.exists():
            return iter(())
        if start.is_symlink() or not start.is_dir():
            return iter([prefix] if os.path.lexists(start) else [])
        found = []
        pending = [start]
        while pending:  # os.scandir: one stat-free pass per folder (links are entries, folders are not)
            with os.scandir(pending.pop()) as listing:
                for item in listing:
                    if item.name.startswith("."):
                        continue
                    if item.is_dir(follow_symlinks=False):
                        pending.append(pathlib.Path(item.path))
                    else:
                        found.append(pathlib.Path(item.path).relative_to(base).as_posix())
        return iter(sorted(found))

    def children(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` (sorted): ``children("results/max-of-k")`` lists model hashes."""
        start = self.root / "entries" / pathlib.Path(*_check_key(prefix))
        if start.is_symlink() or not start.is_dir():
            return []
        return sorted(name for name in os.listdir(start) if not name.startswith("."))

    def delete(self, key: str) -> bool:
        link = self._link(key)
        if not os.path.lexists(link):
            return False
        os.unlink(link)
        return True

    def collect_garbage(self, older_than_s: float = 3600.0) -> int:
        """Remove what no entry refers to, left by killed or losing writers: Zarr objects no entry links to
        and hidden temporary files, once older than ``older_than_s`` (a writer may still be busy with a
        younger one).  Returns how many were removed."""
        if not (self.root / ".objects").exists():
            return 0
        live = {os.path.realpath(self.root / "entries" / key) for key in self.keys()}
        removed = 0
        now = time.time()
        for path in (self.root / ".objects").iterdir():
            if str(path.resolve()) not in live and now - path.lstat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        for path in self._temporary_files():
            if now - path.lstat().st_mtime > older_than_s:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _temporary_files(self) -> Iterator[pathlib.Path]:
        """Hidden files a writer publishes from (``.<name>.<uuid>.tmp``), left behind if it was killed."""
        for dirpath, _, filenames in os.walk(self.root / "entries"):
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):
                    yield pathlib.Path(dirpath) / name

    def info(self) -> dict[str, Any]:
        """What the store holds: entries per top-level kind (``models``, ``results``, ...), packed and Zarr
        entries, files and bytes on disk, unreferenced objects and temporary files, set-aside entries."""
        kinds: dict[str, int] = {}
        packed = zarr_entries = 0
        for key in self.keys():
            kinds[key.split("/", 1)[0]] = kinds.get(key.split("/", 1)[0], 0) + 1
            if (self.root / "entries" / key).is_symlink():
                zarr_entries += 1
            else:
                packed += 1
        files = size = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                files += 1
                try:
                    size += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
        live = {os.path.realpath(self.root / "entries" / key) for key in self.keys()}
        objects = list((self.root / ".objects").iterdir()) if (self.root / ".objects").exists() else []
        temporary = sum(1 for _ in self._temporary_files())
        corrupt = len(list((self.root / ".corrupt").iterdir())) if (self.root / ".corrupt").exists() else 0
        return {"root": str(self.root), "entries": sum(kinds.values()), "by_kind": dict(sorted(kinds.items())),
                "packed_entries": packed, "zarr_entries": zarr_entries, "files": files, "bytes_on_disk": size,
                "unreferenced_objects": sum(1 for o in objects if str(o.resolve()) not in live),
                "temporary_files": temporary, "set_aside": corrupt}

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
