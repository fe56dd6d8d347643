"""Verification steps that many proofs of one model share, computed once per process.

A sweep verifies ~100 strategies of one model back to back, and most of them start with the same certified
tables (the path products, the same EQKE decomposition, ...).  :func:`counted_memo` makes such a step
run once:

* **keyed by content**, never by identity: the key is the SHA-256 of the step's name and of every argument,
  walked down to its values (a tensor's dtype, shape and bytes; an attrs instance's fields; a dict's items).
  An argument it cannot walk is refused with ``TypeError`` rather than keyed by ``id``;
* **fresh copies out**: results are kept as NumPy copies and every call (the first too) gets new tensors made
  from them, so a caller that writes into a result changes nothing later callers see, and a result is the
  same (values and memory layout) whether it was computed now or earlier;
* **the same FLOPs**: the step's ops are counted (by a :class:`~gbmi_core.flops.FlopCounter` of its own) when
  it runs, and a later call charges every active counter exactly that (total, per op, unknown ops), so a
  proof's length does not depend on what ran before it in the process.

The step must be a pure function of its arguments (the FLOP count included).  The cache is small (bounded
in bytes, least recently used out) and per process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

import attrs
import numpy as np
import torch

from . import flops
from .certified import Interval

try:  # reading arguments and making fresh tensors dispatches free ops (detach, lift_fresh): not to the counter
    from torch.utils._python_dispatch import _disable_current_modes as _outside_modes
except ImportError:  # pragma: no cover - a torch without it only pays the dispatch
    _outside_modes = contextlib.nullcontext

#: The bytes of results kept, all steps together; a result larger than this is never kept.
LIMIT_BYTES = 256 * 2**20

_lock = threading.Lock()
_cache: OrderedDict[str, tuple[Any, int, "_Counts | None"]] = OrderedDict()
_held = [0]


@attrs.frozen
class _Counts:
    total: int
    by_op: dict
    unknown_ops: dict


def _feed(digest, value: Any) -> None:
    """Feed ``value``'s content into ``digest``, with its type and shape, so different values never collide
    into one byte stream."""
    if isinstance(value, torch.Tensor):
        array = (value.detach() if value.requires_grad else value).numpy()
        digest.update(f"T{value.dtype}{tuple(value.shape)};".encode())
        digest.update(np.ascontiguousarray(array))  # the buffer itself: no bytes copy
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:  # its bytes are pointers: identity, not content
            raise TypeError("counted_memo cannot key on an array of Python objects by its content")
        digest.update(f"N{value.dtype.str}{value.shape};".encode())
        digest.update(np.ascontiguousarray(value))
    elif isinstance(value, Interval):
        digest.update(f"I{value.certified}{value.lo is value.hi};".encode())
        _feed(digest, value.lo)
        if value.lo is not value.hi:
            _feed(digest, value.hi)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (tuple, list)):
        digest.update(f"{type(value).__name__}{len(value)}(".encode())
        for item in value:
            _feed(digest, item)
        digest.update(b")")
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}(".encode())
        for name in sorted(value, key=repr):
            _feed(digest, name)
            _feed(digest, value[name])
        digest.update(b")")
    elif attrs.has(type(value)):
        cls = type(value)
        digest.update(f"A{cls.__module__}.{cls.__qualname__}(".encode())
        for field in attrs.fields(cls):
            _feed(digest, field.name)
            _feed(digest, getattr(value, field.name))
        digest.update(b")")
    else:
        raise TypeError(f"counted_memo cannot key on a {type(value).__name__} by its content")


def content_key(name: str, *args: Any, **kwargs: Any) -> str:
    """The cache key of ``name(*args, **kwargs)``: a SHA-256 of the name and every argument's content."""
    digest = hashlib.sha256(name.encode() + b"\0")
    _feed(digest, list(args))
    _feed(digest, dict(kwargs))
    return digest.hexdigest()


def _freeze(value: Any) -> tuple[Any, int]:
    """``(frozen copy, bytes)``: tensors to NumPy copies, Intervals with their shared ends kept shared."""
    if isinstance(value, torch.Tensor):
        array = np.array(value.numpy(), copy=True, order="C")
        return ("T", array), array.nbytes
    if isinstance(value, Interval):
        lo, size = _freeze(value.lo)
        hi, more = (None, 0) if value.lo is value.hi else _freeze(value.hi)
        return ("I", lo, hi, value.certified), size + more
    if isinstance(value, (tuple, list)):
        items = [_freeze(v) for v in value]
        return (type(value).__name__, [i for i, _ in items]), sum(s for _, s in items)
    if isinstance(value, dict):
        items = {k: _freeze(v) for k, v in value.items()}
        return ("dict", {k: i for k, (i, _) in items.items()}), sum(s for _, s in items.values())
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("V", value), 0
    raise TypeError(f"counted_memo cannot copy a result of type {type(value).__name__}")


def _thaw(frozen: Any) -> Any:
    """Fresh tensors from a frozen copy (``torch.from_numpy`` dispatches no op: no FLOPs)."""
    kind = frozen[0]
    if kind == "T":
        return torch.from_numpy(frozen[1].copy())
    if kind == "I":
        lo = _thaw(frozen[1])
        return Interval(lo, lo if frozen[2] is None else _thaw(frozen[2]), frozen[3])
    if kind == "tuple":
        return tuple(_thaw(v) for v in frozen[1])
    if kind == "list":
        return [_thaw(v) for v in frozen[1]]
    if kind == "dict":
        return {k: _thaw(v) for k, v in frozen[1].items()}
    return frozen[1]


def _replay(counts: _Counts) -> None:
    for counter in flops._ACTIVE:
        counter.total += counts.total
        counter.by_op.update(counts.by_op)
        counter.unknown_ops.update(counts.unknown_ops)


def _keep(key: str, entry: tuple) -> None:
    size = entry[1]
    if size > LIMIT_BYTES:
        return
    with _lock:
        if key in _cache:
            _held[0] -= _cache.pop(key)[1]
        _cache[key] = entry
        _held[0] += size
        while _held[0] > LIMIT_BYTES:
            _held[0] -= _cache.popitem(last=False)[1][1]


def counted_memo(fn: Callable) -> Callable:
    """Decorate a pure verification step so that it runs once per process for the same argument values
    (see the module doc).  ``fn.uncached`` is the step itself."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def step(*args, **kwargs):
        with _outside_modes():
            key = content_key(name, *args, **kwargs)
        counting = bool(flops._ACTIVE)
        with _lock:
            entry = _cache.get(key)
            if entry is not None:
                _cache.move_to_end(key)
        if entry is not None and (entry[2] is not None or not counting):
            if counting:
                _replay(entry[2])
            with _outside_modes():
                return _thaw(entry[0])
        if counting:
            with flops.FlopCounter() as counter:
                result = fn(*args, **kwargs)
            counts = _Counts(counter.total, dict(counter.by_op), dict(counter.unknown_ops))
        else:
            result, counts = fn(*args, **kwargs), None
        with _outside_modes():
            frozen, size = _freeze(result)
            _keep(key, (frozen, size, counts))
            return _thaw(frozen)

    step.uncached = fn
    return step


def clear() -> None:
    """Forget every kept result."""
    with _lock:
        _cache.clear()
        _held[0] = 0


__all__ = ["LIMIT_BYTES", "clear", "content_key", "counted_memo"]
