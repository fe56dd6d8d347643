"""The memory budget: sizes, the default and the environment, chunk planning, refusals, allocator errors."""

import pytest

from gbmi_core import GbmiError, MemoryRefused, TooLarge
from gbmi_core import memory
from gbmi_core.memory import chunk_size, format_size, is_allocation_failure, memory_budget, parse_size, require


def test_parse_and_format_sizes():
    assert parse_size("2G") == 2 * 2**30 and parse_size("512MB") == 2**29 and parse_size("1000") == 1000
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size(4096) == 4096
    for bad in ("lots", "-1G", "0", "2X", ""):
        with pytest.raises(GbmiError, match="bad memory size"):
            parse_size(bad)
    assert [format_size(x) for x in (512, 2**20, 1.5 * 2**30)] == ["512 B", "1 MB", "1.5 GB"]


def test_budget_from_environment_else_a_quarter_of_available(monkeypatch):
    monkeypatch.delenv("GBMI_MAX_MEMORY", raising=False)
    monkeypatch.setattr(memory, "_DEFAULT", None)
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * 2**30)
    assert memory_budget() == 2 * 2**30
    monkeypatch.setenv("GBMI_MAX_MEMORY", "3M")
    assert memory_budget() == 3 * 2**20
    monkeypatch.setenv("GBMI_MAX_MEMORY", "a lot")
    with pytest.raises(GbmiError, match="bad memory size 'a lot'"):
        memory_budget()
    assert memory.available_memory() > 0  # the real one, from /proc/meminfo or sysconf


def test_chunks_fit_the_budget_or_are_refused(monkeypatch):
    monkeypatch.setenv("GBMI_MAX_MEMORY", "3M")
    assert chunk_size(100, per_item=2**20, fixed=2**20) == 2
    assert chunk_size(100, per_item=1, fixed=0) == 100  # never more than there is
    with pytest.raises(MemoryRefused, match=r"^a test needs about 4 MB of memory, over the budget of 3 MB "
                                            r"\(raise it with --max-memory or GBMI_MAX_MEMORY\)$"):
        chunk_size(100, per_item=2**20, fixed=3 * 2**20, what="a test")
    require(2**20, "small")
    with pytest.raises(MemoryRefused) as refused:
        require(2**30, "big", budget=2**20)
    assert isinstance(refused.value, TooLarge) and isinstance(refused.value, MemoryError)


def test_allocation_failures_are_recognised():
    assert is_allocation_failure(MemoryError())
    assert is_allocation_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't "
                                              "allocate memory: you tried to allocate 46179488256 bytes."))
    assert not is_allocation_failure(RuntimeError("shape mismatch"))
    assert not is_allocation_failure(MemoryRefused("planned refusal"))
