"""Progress of long work, for terminals and for logs alike.

On a terminal, :func:`progress` is a tqdm bar.  When stderr is not a terminal (a batch job, CI, output sent
to a file), tqdm would hide itself; instead a plain line is written every ``$GBMI_PROGRESS_INTERVAL``
seconds (default 30) and at the end::

    proofs: 1234/15402 (8%), 10.3 proof/s, about 22 min left

Each line is whole and on its own (stdout is flushed first, so a table being printed to the same pipe is
never split by it), and the time left is estimated only once it means something: after at least
:data:`ESTIMATE_AFTER` of the work and two items, since early items (a model to train, the slowest
strategy) are rarely typical.

Plugins use it too: ``from gbmi_core.progress import progress``.
"""

from __future__ import annotations

import os
import sys
import time

INTERVAL_ENV = "GBMI_PROGRESS_INTERVAL"
#: The fraction of the work done before a time left is estimated.
ESTIMATE_AFTER = 0.1


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class LogProgress:
    """tqdm's small interface (``update``, ``set_postfix_str``, ``close``, context manager), as log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, stream=None, interval: float | None = None):
        self.total, self.desc, self.unit, self.n, self.postfix = total, desc, unit, 0, ""
        self.stream = stream or sys.stderr
        self.interval = interval if interval is not None else float(os.environ.get(INTERVAL_ENV, "30") or 30)
        self.start = self.last = time.monotonic()
        self.closed = False
        self.shown = 0  # the count of the last line written

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        text = f"{self.desc}: {done}, {rate:.3g} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total and self.n >= max(2, ESTIMATE_AFTER * self.total):
            text += f", about {_duration((self.total - self.n) / rate)} left"
        elif self.total and self.n >= self.total:
            text += f", done in {_duration(elapsed)}"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def _emit(self) -> None:
        if self.stream is not sys.stdout:
            try:
                sys.stdout.flush()  # whatever was printed comes first, whole, in a pipe both streams share
            except (OSError, ValueError):
                pass
        print(self.line(), file=self.stream, flush=True)
        self.last, self.shown = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._emit()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed and self.n != self.shown:  # the last state, unless it was just written
            self._emit()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Silent(LogProgress):
    def _emit(self) -> None:
        pass


def progress(total: int | None = None, desc: str = "", unit: str = "it", *, enabled: bool = True, stream=None):
    """A progress reporter: a tqdm bar on a terminal, :class:`LogProgress` lines otherwise, or a silent one
    (``enabled=False``)."""
    stream = stream or sys.stderr
    if not enabled:
        return _Silent(total, desc, unit, stream)
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream)
    return LogProgress(total, desc, unit, stream)
