"""Sweeps: many seeds × many strategies, resumable, on a local process pool or a Dask cluster.

A sweep has two phases.  First every model is trained or loaded (one unit per config), so that no two
workers train the same model.  Then the proofs run in units of a few strategies on one model; each
:class:`~gbmi_core.ProofResult` is written to the store as soon as it is computed (atomically), so a sweep
killed at any point and run again loses nothing and redoes only what was not stored.  Pairs whose result
is already stored are skipped.  Two sweeps on one store may compute a pair twice, but each result has one
key, so nothing is duplicated or torn.

Executors: ``"inline"`` (this process), ``"processes"`` (a ``ProcessPoolExecutor``, the default), or a
Dask ``distributed.Client`` (``--scheduler tcp://HOST:PORT`` for an existing cluster, ``--workers N`` for a
``LocalCluster``).  Workers write to the shared store through the same atomic path.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
import time
from typing import Any, Iterable, Sequence

import attrs

from . import config as config_mod
from .errors import TooLarge

_REGISTRY = None


def _worker_registry():
    global _REGISTRY
    if _REGISTRY is None:
        from .registry import get_registry

        _REGISTRY = get_registry()
    return _REGISTRY


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Make this worker process exit as soon as ``parent_pid`` (the sweep that started it) is gone.

    A sweep killed by any signal, SIGKILL included, cannot shut its pool down; a daemon thread that polls
    the parent (``os.getppid()`` changes when it dies) ends the orphan within ``interval`` seconds."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    if os.getppid() != parent_pid:  # already orphaned
        os._exit(1)
    threading.Thread(target=watch, name="gbmi-exit-with-parent", daemon=True).start()


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def train_unit(task: str, config_data: dict, store_root: str, threads: int | None = None) -> dict:
    """Train or load one model (runs in a worker).  Returns its config hash, model hash and seconds."""
    from .models import model_hash
    from .store import Store

    _set_threads(threads)
    start = time.perf_counter()
    registry = _worker_registry()
    config = config_mod.structure(registry.task(task).config_type, config_data)
    model, _ = registry.train_or_load(task, config, Store(store_root), progress=False)
    return {"config_hash": config_mod.content_hash(config), "model_hash": model_hash(model),
            "seconds": time.perf_counter() - start}


def prove_unit(task: str, config_data: dict | None, store_root: str, strategies: Sequence[str],
               threads: int | None = None, model_key: str | None = None) -> dict:
    """Run some strategies on one (stored) model, storing each result as it completes.  The model is the
    one of ``config_data`` or, for imported models, the one at ``model_key``."""
    from .store import Store

    _set_threads(threads)
    registry = _worker_registry()
    store = Store(store_root)
    if model_key is not None:
        model = registry.load_stored_model(task, model_key, store)
    else:
        config = config_mod.structure(registry.task(task).config_type, config_data)
        model, _ = registry.train_or_load(task, config, store, progress=False)
    done, failed, refused = [], [], []
    for name in strategies:
        try:
            registry.strategy(task, name).prove(model, store)
            done.append(name)
        except TooLarge as error:  # refused up front (too many inputs, over the memory budget): not a failure
            refused.append((name, str(error)))
        except Exception as error:  # noqa: BLE001 - one failing strategy must not sink the sweep
            failed.append((name, f"{type(error).__name__}: {error}"))
    return {"done": done, "failed": failed, "refused": refused}


class _Executor:
    """The small interface the sweep needs from concurrent.futures and dask.distributed alike."""

    def __init__(self, kind: str, jobs: int = 1, scheduler: str | None = None, workers: int | None = None):
        self.kind, self.jobs, self._closers = kind, jobs, []
        self.threads = None
        if kind == "inline":
            self.pool = None
        elif kind == "processes":
            context = multiprocessing.get_context("spawn")  # torch and fork do not mix
            self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                               initializer=exit_with_parent, initargs=(os.getpid(),))
            self.threads = max(1, (os.cpu_count() or 1) // jobs)
            self._closers.append(lambda: self.pool.shutdown(cancel_futures=True))
        elif kind == "dask":
            try:
                from distributed import Client, LocalCluster
            except ImportError:
                from .errors import GbmiError

                raise GbmiError("Dask execution needs the 'distributed' package: pip install 'gbmi-core[dask]'") from None
            if scheduler:
                self.pool = Client(scheduler)
            else:
                cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
                self._closers.append(cluster.close)
                self.pool = Client(cluster)
                from ._dask import ExitWithParent

                self.pool.register_plugin(ExitWithParent(os.getpid()))
            self._closers.insert(0, self.pool.close)
            self.threads = 1
            self.jobs = len(self.pool.scheduler_info().get("workers", {})) or (workers or 1)
        else:  # pragma: no cover
            raise ValueError(kind)

    def submit(self, fn, *args):
        if self.pool is None:
            future = concurrent.futures.Future()
            try:
                future.set_result(fn(*args))
            except Exception as error:  # noqa: BLE001
                future.set_exception(error)
            return future
        if self.kind == "dask":
            return self.pool.submit(fn, *args, pure=False)
        return self.pool.submit(fn, *args)

    def as_completed(self, futures):
        if self.kind == "dask":
            from distributed import as_completed

            return as_completed(futures)
        return concurrent.futures.as_completed(futures)

    def close(self) -> None:
        for close in self._closers:
            try:
                close()
            except Exception:  # noqa: BLE001, S110 - best effort on shutdown
                pass


@attrs.frozen
class SweepSummary:
    models: int
    pairs: int
    skipped: int
    done: int
    failed: tuple[tuple[str, str, str], ...]  # (config hash or imported model, strategy, error)
    seconds: float
    refused: tuple[tuple[str, str, str], ...] = ()  # (config hash, strategy, reason): too large, not run
    train_seconds: float = 0.0  # summed over the models' units (training, or loading a stored model)


def parse_seeds(text: str) -> list[int]:
    """``"0:151"`` (a range), ``"1,5,9"``, ``"3"``, or a mix: ``"0:4,10"``."""
    from .errors import ConfigError

    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ":" in part:
                start, stop = part.split(":")
                seeds.extend(range(int(start), int(stop)))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"bad --seeds {text!r}: use START:STOP, a comma list, or both (e.g. 0:16,40)") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"bad --seeds {text!r}: give at least one non-negative seed")
    return list(dict.fromkeys(seeds))


def run_sweep(registry, task: str, configs: Iterable[Any], strategies: Sequence[str], store, *,
              executor: str = "processes", jobs: int | None = None, scheduler: str | None = None,
              workers: int | None = None, progress: bool = True, chunk: int | None = None,
              model_keys: Sequence[str] = ()) -> SweepSummary:
    """Train-or-load every config, then run every strategy on every model, skipping stored results.

    ``model_keys``: store keys of imported models (``gbmi import-model``) to prove as well."""
    from .progress import progress as reporter

    start = time.perf_counter()
    configs = list(configs)
    strategies = list(strategies)
    for name in strategies:
        registry.strategy(task, name)  # unknown names fail before any work
    store._ensure()
    root = str(store.root)
    jobs = jobs or (os.cpu_count() or 1)
    if executor == "processes" and jobs == 1:
        executor = "inline"
    pool = _Executor(executor, jobs=jobs, scheduler=scheduler, workers=workers)
    failed: list[tuple[str, str, str]] = []
    refused: list[tuple[str, str, str]] = []
    try:
        data = [config_mod.unstructure(c) for c in configs]
        # Phase 1: models (one unit each, so no model is trained twice at once).
        hashes: dict[int, str] = {}
        train_seconds = 0.0
        bar = reporter(len(configs), "models", "model", enabled=progress)
        futures = {pool.submit(train_unit, task, d, root, pool.threads): i for i, d in enumerate(data)}
        for future in pool.as_completed(list(futures)):
            i = futures[future]
            try:
                trained = future.result()
                hashes[i] = trained["model_hash"]
                train_seconds += trained["seconds"]
            except Exception as error:  # noqa: BLE001
                failed.append((config_mod.content_hash(configs[i]), "(training)", f"{type(error).__name__}: {error}"))
            bar.update(1)
        bar.close()
        # Phase 2: proofs, skipping what the store already holds.  Targets: (label, config data, model key, hash).
        targets = [(config_mod.content_hash(configs[i]), data[i], None, h) for i, h in sorted(hashes.items())]
        for key in model_keys:
            attributes = store.attrs(key)
            if attributes is None:
                failed.append((key, "(loading)", f"the store holds no model {key!r}"))
                continue
            targets.append((key.rsplit("/", 1)[-1], None, key, attributes["model_hash"]))
        todo: list[tuple[int, list[str]]] = []
        skipped = 0
        stored = set(store.keys(f"results/{task}"))  # one listing, not a request per (model, strategy)
        for t, (_, _, _, model_hash) in enumerate(targets):
            missing = [s for s in strategies if f"results/{task}/{model_hash}/{s}" not in stored]
            skipped += len(strategies) - len(missing)
            if missing:
                todo.append((t, missing))
        pending = sum(len(m) for _, m in todo)
        size = chunk or max(1, math.ceil(len(strategies) / 4))
        units = [(t, missing[k : k + size]) for t, missing in todo for k in range(0, len(missing), size)]
        bar = reporter(pending, "proofs", "proof", enabled=progress)
        futures = {pool.submit(prove_unit, task, targets[t][1], root, names, pool.threads, targets[t][2]): (t, names)
                   for t, names in units}
        done = 0
        for future in pool.as_completed(list(futures)):
            t, names = futures[future]
            label = targets[t][0]
            try:
                outcome = future.result()
                done += len(outcome["done"])
                failed.extend((label, n, e) for n, e in outcome["failed"])
                refused.extend((label, n, e) for n, e in outcome["refused"])
            except Exception as error:  # noqa: BLE001 - a worker lost, say
                failed.extend((label, n, f"{type(error).__name__}: {error}") for n in names)
            bar.update(len(names))
        bar.close()
    finally:
        pool.close()
    return SweepSummary(models=len(targets), pairs=len(targets) * len(strategies), skipped=skipped, done=done,
                        failed=tuple(failed), seconds=time.perf_counter() - start, refused=tuple(refused),
                        train_seconds=train_seconds)
