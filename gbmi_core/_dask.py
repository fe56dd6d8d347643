"""Dask pieces that need ``distributed`` at import time (imported only when a sweep uses Dask)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class ExitWithParent(WorkerPlugin):
    """Workers of a ``LocalCluster`` exit as soon as the sweep that started them is gone."""

    name = "gbmi-exit-with-parent"

    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid

    def setup(self, worker):
        from .sweep import exit_with_parent

        exit_with_parent(self.parent_pid)
