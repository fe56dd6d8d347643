"""How many threads a command's tensor work should use: the cores nobody else is using right now.

torch starts one intra-op thread per core and its OpenMP workers spin at barriers.  On a shared machine, one
core already busy with another process makes every parallel region wait for a thread the scheduler has
parked: on 2 cores with one busy, the shipped Max-of-4 model's 102 strategies took 24.9 s with 2 threads
against 15.2 s with 1 (``benchmarks/bench_threads.py``).  So before torch
starts, :func:`size_threads` looks at how busy the machine is (the CPU time other processes took over a
short sample of ``/proc/stat``) and asks for the free cores only.

What wins: ``GBMI_THREADS=N`` (exactly N), then an ``OMP_NUM_THREADS`` the user set (left alone), then the
measurement.  Where ``/proc/stat`` cannot be read, nothing changes.
"""

from __future__ import annotations

import os
import sys
import time

THREADS_ENV = "GBMI_THREADS"
#: How long the machine is watched (seconds): long enough to see a busy process, short next to a command.
SAMPLE_SECONDS = 0.05


def _cpu_times() -> tuple[int, int] | None:
    """``(total, idle)`` jiffies summed over every core, or None where ``/proc/stat`` is not there."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(x) for x in fields[1:]]
    return sum(values[:8]), values[3] + (values[4] if len(values) > 4 else 0)  # user..steal; idle + iowait


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many cores other processes kept busy while this one slept for ``seconds`` (None if unknown):
    the machine's busy time over the sample less this process's own CPU time."""
    first, own, wall = _cpu_times(), time.process_time(), time.perf_counter()
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times()
    own, wall = time.process_time() - own, time.perf_counter() - wall
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    machine = os.cpu_count() or 1  # /proc/stat counts every core of the machine
    # this process's own threads (an OpenMP pool still spinning after earlier work) are not "others"
    return max(0.0, machine * (1 - idle / total) - own / wall)


def free_threads(seconds: float = SAMPLE_SECONDS) -> int | None:
    """The cores of :func:`cores` that were idle over the sample (at least 1), or None if unknown.  A core
    counts as busy when most of it was (``busy`` rounded to the nearest whole core)."""
    busy = busy_cores(seconds)
    if busy is None:
        return None
    return max(1, cores() - int(busy + 0.5))


def requested() -> int | None:
    """``GBMI_THREADS`` as a positive integer, None when unset; a bad value is an error naming it."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        from .errors import GbmiError

        raise GbmiError(f"{THREADS_ENV}={value!r} is not a positive whole number of threads")
    return int(value)


def size_threads() -> int | None:
    """Set the thread count this process (and any worker it starts) will use, and return it; None when the
    user's ``OMP_NUM_THREADS`` stands or the machine could not be measured."""
    threads = requested()
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        threads = free_threads()
        if threads is None:
            return None
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch starts, here and in workers
    if "torch" in sys.modules:  # already started (an in-process caller): tell it directly
        sys.modules["torch"].set_num_threads(threads)
    return threads


__all__ = ["THREADS_ENV", "busy_cores", "cores", "free_threads", "requested", "size_threads"]
