"""The memory budget: how much a proof may allocate, and how strategies plan their chunks within it.

The budget is ``$GBMI_MAX_MEMORY`` (``gbmi --max-memory``), e.g. ``"2G"``, ``"512M"`` or a number of
bytes; by default a quarter of the memory available when it is first asked for.  A strategy estimates
what it needs before allocating and either works in chunks that fit (:func:`chunk_size`) or refuses in one
line with :class:`MemoryRefused` (:func:`require`), naming its estimate and the budget.  Estimates are
counted in bytes of the largest tensors alive at once; they are planning numbers, not measurements.

>>> from gbmi_core.memory import chunk_size, parse_size
>>> parse_size("1.5G")
1610612736
>>> chunk_size(1000, per_item=10**6, budget=10**8)   # 100 items of 1 MB fit in 100 MB
100
"""

from __future__ import annotations

import os
import re

from .errors import GbmiError, MemoryRefused

MEMORY_ENV = "GBMI_MAX_MEMORY"
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """``"2G"``, ``"512MB"``, ``"1.5GiB"`` or ``"1048576"`` as a number of bytes (units are powers of 1024)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise GbmiError(f"bad memory size {text!r}: write a number of bytes or use K, M, G or T (e.g. 2G)")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise GbmiError(f"bad memory size {text!r}: it must be positive")
    return value


def format_size(size: float) -> str:
    """Bytes as a short human number: ``1.5 GB``, ``24 MB`` (powers of 1024)."""
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def available_memory() -> int:
    """Memory the system can give us now (``MemAvailable``), else total physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 8 * 2**30


_DEFAULT: int | None = None


def memory_budget() -> int:
    """The budget in bytes: ``$GBMI_MAX_MEMORY``, else a quarter of the memory available at first call."""
    global _DEFAULT
    configured = os.environ.get(MEMORY_ENV, "").strip()
    if configured:
        return parse_size(configured)
    if _DEFAULT is None:
        _DEFAULT = available_memory() // 4
    return _DEFAULT


def _refusal(what: str, need: float, budget: int) -> MemoryRefused:
    return MemoryRefused(f"{what} needs about {format_size(need)} of memory, over the budget of "
                         f"{format_size(budget)} (raise it with --max-memory or {MEMORY_ENV})")


def require(need: float, what: str, budget: int | None = None) -> None:
    """Refuse up front, naming ``what``, its estimated ``need`` in bytes and the budget, when it does not fit."""
    budget = memory_budget() if budget is None else budget
    if need > budget:
        raise _refusal(what, need, budget)


def chunk_size(items: int, per_item: float, *, fixed: float = 0.0, budget: int | None = None,
               what: str = "this computation") -> int:
    """How many of ``items`` to process at once so that ``fixed + size * per_item`` bytes fit the budget.

    Refuses (:class:`MemoryRefused`) when not even one item fits.  Returns at least 1, at most ``items``.
    """
    budget = memory_budget() if budget is None else budget
    room = budget - fixed
    if room < per_item:
        raise _refusal(what, fixed + per_item, budget)
    return max(1, min(items, int(room // max(per_item, 1.0))))


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's out-of-memory failure (torch, numpy or Python's own)."""
    if isinstance(error, MemoryRefused):
        return False
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text
                                                or "DefaultCPUAllocator" in text)
