"""A gbmi store at an fsspec URL: object storage (``s3://bucket/prefix``), or a read-only archive.

Layout under the URL's prefix::

    gbmi-store.json           {"gbmi_store": 1, "layout": "objects"}
    entries/<key...>          the entry: one object, packed exactly as a local store packs small entries
    .corrupt/                 entries that failed their checksum, set aside for inspection

**Publication is one PUT.**  Every entry, whatever its size (models included), is a single object: JSON
when it has no arrays, else an ``.npz`` archive with the ``__gbmi__`` header member (the local store's
packed form, so the checksums, the corrupt-entry handling and the readers are the same).  Object storage
makes an object visible only once its upload is complete (a single PUT, or a multipart upload once it is
*completed*), and a reader of a key sees one whole version of it.  So:

* an entry becomes visible complete or not at all: there is no second step to publish it, no link to
  flip, nothing half-written under ``entries/``;
* two writers of one key each upload a complete object; the later upload is the entry, and both were
  complete (gbmi's entries are deterministic in their key, so either is the right one);
* a writer killed mid-upload leaves nothing visible; an interrupted multipart upload holds no object (a
  bucket lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims its parts: gbmi does not list or abort
  other writers' uploads, since a live writer's look the same).

A local store publishes Zarr groups by symbolic link and ``os.replace``, which object storage does not
have; here nothing needs them.  Archives (a ``.zip`` file, ``zip::<url>``, or ``https://``) are read-only:
``gbmi store export`` writes them in this layout.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import time
import uuid
import warnings
import zipfile
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import CorruptEntry, StoreError
from .store import _CHECKSUM, _HEADER, STORE_ENV, CorruptEntryWarning, Entry, Store, _check_key, meta_for, pack, unpack

MARKER = "gbmi-store.json"
MARKER_DATA = json.dumps({"gbmi_store": 1, "layout": "objects"}).encode()  # what an object store's marker holds
#: Where one PUT makes one whole object visible at once: only these are written to.  Anything else fsspec
#: reads (archives, http, sftp, ...) is a read-only store, since a write there could be seen half-done.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}


def is_url(location: Any) -> bool:
    """Whether a store location names an fsspec URL or an archive rather than a local directory."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str):
        return False
    if location.startswith("file://") and not location.endswith(".zip"):
        return False  # a local directory: the local store (atomic by rename)
    if "://" in location or "::" in location:
        return True
    return location.endswith(".zip") and not os.path.isdir(location)  # a folder named *.zip is a local store


def _url(location: str) -> str:
    if location.endswith(".zip") and not location.startswith("zip::"):
        return "zip::" + location  # a local path or any URL of a zip file
    return location


class ObjectStore(Store):
    """A store at an fsspec URL.  Same interface as :class:`~gbmi_core.store.Store`; read-only for archives."""

    def __init__(self, location: str | None = None):
        import fsspec.core

        location = os.fspath(location) if location is not None else os.environ.get(STORE_ENV, "")
        self.location = location.rstrip("/")
        url = _url(self.location)
        options = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if url.startswith(("s3://", "s3a://")) and endpoint:
            # named, so that fsspec's cache of filesystems never hands back one made for another endpoint
            options["endpoint_url"] = endpoint
        try:
            self.fs, path = fsspec.core.url_to_fs(url, **options)
        except FileNotFoundError:
            raise StoreError(f"cannot use store at {location}: there is no such archive, or it cannot be read "
                             f"(over HTTP the server must allow it and answer range requests)") from None
        except (ImportError, ValueError, OSError) as error:  # an unknown protocol, a missing s3fs, ...
            raise StoreError(f"cannot use store at {location}: {error}") from None
        protocols = {part.split("://", 1)[0] if "://" in part else part for part in url.split("::")}
        self.read_only = not protocols <= OBJECT_STORES
        self.prefix = path.strip("/")
        self.root = self.location  # what messages name
        self._ready = False
        self._archive = None  # an archive's listing, made once

    def __repr__(self) -> str:
        return f"ObjectStore({self.location!r})"

    def __getnewargs__(self):
        return (self.location,)

    def __getstate__(self):  # the filesystem is rebuilt from the URL (and the environment) where unpickled
        return {"location": self.location}

    def __setstate__(self, state):
        self.__init__(state["location"])

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _entry_path(self, key: str) -> str:
        return self._path("entries", *_check_key(key))

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the store at {self.location} is read-only (an archive, or a filesystem where a write "
                             f"is not one atomic upload): nothing can be written to it")

    def _fresh(self) -> None:
        # listings are cached by fsspec; other writers change a live store, an archive never changes
        if not self.read_only:
            self.fs.invalidate_cache()

    # -- layout ------------------------------------------------------------------------------------
    def present(self) -> bool:
        self._fresh()
        try:
            return self.fs.exists(self._path(MARKER)) or self.fs.exists(self._path("entries"))
        except OSError:
            return False

    def _ensure(self) -> None:
        if self._ready:
            return
        self._writable()
        try:
            if not self.fs.exists(self._path(MARKER)):
                self.fs.pipe_file(self._path(MARKER), MARKER_DATA)
        except OSError as error:
            raise StoreError(f"cannot use store at {self.location}: {error}") from None
        self._ready = True

    # -- writing -----------------------------------------------------------------------------------
    def put(self, key: str, arrays: Mapping[str, Any] | None = None, attributes: Mapping[str, Any] | None = None,
            *, packed: bool | None = None) -> None:
        """Write (or replace) ``key``: one object, one PUT (``packed`` is ignored: every entry is packed)."""
        path = self._entry_path(key)
        self._ensure()
        meta, arrays = meta_for(key, arrays, attributes)
        try:
            self.fs.pipe_file(path, pack(meta, arrays))
        except OSError as error:
            raise StoreError(f"cannot write {key!r} to the store at {self.location}: {error}") from None

    def delete(self, key: str) -> bool:
        self._writable()
        path = self._entry_path(key)
        self._fresh()
        if not self.fs.exists(path):
            return False
        self.fs.rm_file(path)
        return True

    # -- reading -----------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        self._fresh()
        return self.fs.isfile(self._entry_path(key))

    def get(self, key: str) -> Entry | None:
        path = self._entry_path(key)
        try:
            data = self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as error:
            raise StoreError(f"cannot read {key!r} from the store at {self.location}: {error}") from None
        return self._decoded(key, data)

    def get_many(self, keys: list[str]) -> dict[str, Entry | None]:
        """Several entries in one batch of concurrent requests (one GET each, in parallel on S3)."""
        paths = {self._entry_path(key): key for key in keys}
        if not paths:
            return {}
        fetched = self.fs.cat(list(paths), on_error="return")
        found: dict[str, Entry | None] = {}
        for path, key in paths.items():
            data = fetched.get(path, fetched.get("/" + path))
            if isinstance(data, (FileNotFoundError, IsADirectoryError)) or data is None:
                found[key] = None
            elif isinstance(data, BaseException):
                raise StoreError(f"cannot read {key!r} from the store at {self.location}: {data}")
            else:
                found[key] = self._decoded(key, data)
        return found

    def _decoded(self, key: str, data: bytes) -> Entry | None:
        """The entry in ``data``, checked; a corrupt one is set aside and reads as absent."""
        try:
            return self._unpack(key, data)
        except CorruptEntry as error:
            self.set_aside(key, str(error))
            return None

    def _unpack(self, key: str, data: bytes) -> Entry:
        try:
            meta, arrays = unpack(data)
        except Exception as error:  # noqa: BLE001 - anything unreadable is corrupt
            raise CorruptEntry(f"store entry {key!r} cannot be read: {type(error).__name__}: {error}") from None
        return Entry(key, arrays, self._check(key, meta, arrays))

    def attrs(self, key: str) -> Mapping[str, Any] | None:
        """Only the attrs of ``key``: for an archive entry, only its header member is fetched (range reads)."""
        path = self._entry_path(key)
        try:
            with self.fs.open(path, "rb") as handle:
                start = handle.read(2)
                if start != b"PK":
                    data = start + handle.read()
                    entry = self._unpack(key, data)
                    return entry.attrs
                handle.seek(0)
                try:
                    with zipfile.ZipFile(handle) as archive:
                        header = np.load(io.BytesIO(archive.read(_HEADER + ".npy")), allow_pickle=False)
                    meta = json.loads(header.tobytes())
                except Exception as error:  # noqa: BLE001
                    raise CorruptEntry(f"store entry {key!r} cannot be read: {type(error).__name__}: {error}") from None
                if not isinstance(meta, dict) or _CHECKSUM not in meta:
                    raise CorruptEntry(f"store entry {key!r} has missing or foreign metadata")
                return self._check(key, meta, None)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except CorruptEntry as error:
            self.set_aside(key, str(error))
            return None

    def set_aside(self, key: str, reason: str) -> None:
        """Copy a bad entry to ``.corrupt/`` and delete it (a read-only store only warns)."""
        where = "it is left in place (the store is read-only) and will be ignored"
        if not self.read_only:
            name = f"{key.replace('/', '__')}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
            aside = self._path(".corrupt", name)
            try:
                self.fs.copy(self._entry_path(key), aside)
                self.fs.rm_file(self._entry_path(key))
                where = f"it was moved to {self.location}/.corrupt/{name} and will be recomputed"
            except OSError:
                where = "it will be recomputed"
        warnings.warn(f"{reason}; {where}", CorruptEntryWarning, stacklevel=3)

    def _listing(self, prefix: str = "") -> dict[str, int]:
        """Every entry under ``prefix``: key -> size in bytes.  An archive never changes: it is listed once
        (zip listings walk every member, so a listing per model would cost a report seconds)."""
        if self.read_only:
            if self._archive is None:
                everything = self._scan("")
                self._archive = (sorted(everything), everything)
            ordered, sizes = self._archive
            if not prefix:
                return dict(sizes)
            _check_key(prefix)
            found = {prefix: sizes[prefix]} if prefix in sizes else {}
            for key in ordered[bisect.bisect_left(ordered, prefix + "/"):]:  # the keys below prefix, in a run
                if not key.startswith(prefix + "/"):
                    break
                found[key] = sizes[key]
            return found
        return self._scan(prefix)

    def _scan(self, prefix: str) -> dict[str, int]:
        self._fresh()
        base = self._path("entries")
        start = self._entry_path(prefix) if prefix else base
        try:
            found = self.fs.find(start, detail=True)
        except FileNotFoundError:
            return {}
        keys = {}
        for path, info in found.items():
            relative = path.strip("/")[len(base) + 1:] if path.strip("/").startswith(base + "/") else None
            if relative and info.get("type", "file") == "file" and not any(p.startswith(".") for p in relative.split("/")):
                keys[relative] = int(info.get("size") or 0)
        return keys

    def keys(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(self._listing(prefix)))

    def children(self, prefix: str) -> list[str]:
        if self.read_only:
            return sorted({key[len(prefix) + 1:].split("/", 1)[0] for key in self._listing(prefix) if key != prefix})
        self._fresh()
        start = self._entry_path(prefix)
        try:
            listing = self.fs.ls(start, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = set()
        for info in listing:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["name"].rstrip("/") != start and not name.startswith("."):
                names.add(name)
        return sorted(names)

    # -- upkeep ------------------------------------------------------------------------------------
    def collect_garbage(self, older_than_s: float = 3600.0) -> int:
        """Nothing to collect: no temporary objects exist (an upload is invisible until complete)."""
        self._writable()
        return 0

    def set_aside_entries(self) -> list[str]:
        self._fresh()
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path(".corrupt"), detail=False))
        except FileNotFoundError:
            return []

    def drop_set_aside(self) -> int:
        self._writable()
        names = self.set_aside_entries()
        for name in names:
            self.fs.rm_file(self._path(".corrupt", name))
        return len(names)

    def info(self) -> dict[str, Any]:
        listing = self._listing()
        kinds: dict[str, int] = {}
        for key in listing:
            kinds[key.split("/", 1)[0]] = kinds.get(key.split("/", 1)[0], 0) + 1
        return {"root": self.location, "entries": len(listing), "by_kind": dict(sorted(kinds.items())),
                "packed_entries": len(listing), "zarr_entries": 0, "files": len(listing),
                "bytes_on_disk": sum(listing.values()), "unreferenced_objects": 0, "temporary_files": 0,
                "set_aside": len(self.set_aside_entries()), "read_only": self.read_only}
