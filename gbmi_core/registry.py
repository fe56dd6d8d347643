"""The programmatic registry: what the installed plugins provide, and running proofs and training.

>>> import gbmi_core
>>> registry = gbmi_core.get_registry()
>>> [task.name for task in registry.tasks()]          # doctest: +SKIP
['max-of-k']
>>> result = registry.strategy("max-of-k", "cubic").prove(model)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import difflib
import time
import warnings
from typing import Any, Iterable, Mapping

import attrs

from . import config as config_mod
from .errors import CertificateRejected, CorruptEntry, DuplicateName, GbmiError, NotApplicable, UnknownName
from .plugins import GbmiPluginManager, PluginInfo, get_plugin_manager
from .records import (Bound, Certificate, FigureSpec, ModelSpec, ProofResult, StrategySpec, TaskSpec, TrainedModel,
                      TrainerSpec)


def _unknown(kind: str, name: str, known: Iterable[str], where: str = "") -> UnknownName:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}{where}"
    if close:
        message += f"; did you mean {', '.join(repr(c) for c in close)}?"
    elif known:
        shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        message += f"; known: {shown}"
    else:
        message += "; none is registered (is the plugin installed? see `gbmi plugins`)"
    return UnknownName(message)


@attrs.frozen
class Strategy:
    """A registered proof strategy, bound to its registry: call :meth:`prove` on a model."""

    spec: StrategySpec
    plugin: str
    registry: "Registry" = attrs.field(repr=False, eq=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def summary(self) -> str:
        return self.spec.summary

    @property
    def complexity(self) -> str:
        return self.spec.complexity

    def search(self, model: Any, *, model_hash: str | None = None, store=None) -> Certificate:
        """Run proof search (free) and return its certificate, reusing one cached in ``store`` when it was
        made by the same version of the search (``StrategySpec.search_version``)."""
        from .models import model_hash as hash_model

        model_hash = model_hash or hash_model(model)
        key = f"certificates/{self.task}/{model_hash}/{self.name}"
        if store is not None:
            entry = store.get(key)
            if entry is not None and entry.attrs.get(_SEARCH_VERSION, "") == self.spec.search_version:
                attributes = {k: v for k, v in entry.attrs.items() if k != _SEARCH_VERSION}
                return Certificate(self.name, model_hash, entry.arrays, attributes)
        with _memory_errors(f"search of {self.task}/{self.name}"):
            found = self.spec.search(model)
        arrays, attributes = _split_certificate(found)
        certificate = Certificate(self.name, model_hash, arrays, attributes)
        if store is not None:
            stamp = {_SEARCH_VERSION: self.spec.search_version} if self.spec.search_version else {}
            store.put(key, arrays, {**attributes, **stamp})
        return certificate

    def verify(self, model: Any, certificate: Certificate, *, model_hash: str | None = None):
        """Run verification under the FLOP counter: ``(Bound, flops)``."""
        from .flops import FlopCounter
        from .models import model_hash as hash_model

        model_hash = model_hash or hash_model(model)
        if certificate.strategy != self.name:
            raise CertificateRejected(
                f"certificate is for strategy {certificate.strategy!r}, not {self.name!r}")
        if certificate.model_hash != model_hash:
            raise CertificateRejected(
                f"certificate was made for model {certificate.model_hash}, not for this model ({model_hash})")
        certificate = self.validate(model, certificate)
        with FlopCounter() as counter, _memory_errors(f"verification of {self.task}/{self.name}"):
            bound = self.spec.verify(model, certificate)
        if not isinstance(bound, Bound):
            raise GbmiError(f"strategy {self.task}/{self.name} returned {type(bound).__name__}, not a Bound")
        return bound, counter

    def validate(self, model: Any, certificate: Certificate) -> Certificate:
        """The certificate checked against the strategy's schema (canonical dtypes, fresh copies), or
        :class:`CertificateRejected` naming the field that does not fit."""
        from .schema import model_dimensions, validate

        dims = model_dimensions(model)
        if self.spec.dimensions is not None:
            dims.update(self.spec.dimensions(model))
        arrays, attributes = validate(self.spec.certificate, certificate.arrays, certificate.attrs, dims)
        return Certificate(certificate.strategy, certificate.model_hash, arrays, attributes)

    def prove(self, model: Any, store=None, *, certificate: Certificate | None = None) -> ProofResult:
        """Check the model, search (or take ``certificate``), verify, and return a :class:`ProofResult`.

        With a ``store``, the certificate is cached under the model's hash and the result is saved.
        """
        from .models import model_hash as hash_model

        task = self.registry.task(self.task)
        if task.check_model is not None:
            task.check_model(model)
        model_hash = hash_model(model)
        start = time.perf_counter()
        if certificate is None:
            certificate = self.search(model, model_hash=model_hash, store=store)
        searched = time.perf_counter()
        bound, counter = self.verify(model, certificate, model_hash=model_hash)
        verified = time.perf_counter()
        dimension = self.spec.unexplained_dimension(model) if self.spec.unexplained_dimension else None
        result = ProofResult(
            task=self.task,
            strategy=self.name,
            model_hash=model_hash,
            accuracy_lower_bound=bound.correct_count / bound.total_count,
            correct_count=bound.correct_count,
            total_count=bound.total_count,
            flops=counter.total,
            unexplained_dimension=None if dimension is None else int(dimension),
            seconds=verified - start,
            search_seconds=searched - start,
            verify_seconds=verified - searched,
            extra=bound.extra,
            certified=bound.certified,
        )
        if store is not None:
            store.put(f"results/{self.task}/{model_hash}/{self.name}", {}, result.to_dict())
        return result


#: The store attribute that says which version of a strategy's search made a cached certificate.
_SEARCH_VERSION = "gbmi_search_version"


@contextlib.contextmanager
def _memory_errors(what: str):
    """Turn an allocator's out-of-memory failure into a :class:`MemoryRefused` naming the work and the budget."""
    from .memory import MemoryRefused, format_size, is_allocation_failure, memory_budget

    try:
        yield
    except Exception as error:
        if not is_allocation_failure(error):
            raise
        raise MemoryRefused(f"{what} ran out of memory (the budget is {format_size(memory_budget())}; the "
                            f"strategy's estimate was too low: please report it)") from None


def _split_certificate(found: Mapping[str, Any]) -> tuple[dict, dict]:
    import numpy as np

    arrays, attributes = {}, {}
    for name, value in dict(found or {}).items():
        if isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
            arrays[name] = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        else:
            attributes[name] = value
    return arrays, attributes


class Registry:
    """What the loaded plugins provide, with provenance, sorted by name."""

    def __init__(self, pm: GbmiPluginManager):
        self.pm = pm
        self._tasks: dict[str, tuple[TaskSpec, str]] = {}
        self._models: dict[tuple[str, str], tuple[ModelSpec, str]] = {}
        self._trainers: dict[str, tuple[TrainerSpec, str]] = {}
        self._strategies: dict[tuple[str, str], tuple[StrategySpec, str]] = {}
        self._figures: dict[tuple[str, str], tuple[FigureSpec, str]] = {}
        self._collect()

    # -- building ----------------------------------------------------------------------------------
    def _results(self, hook_name: str, record_type: type):
        """Call one hook per plugin, so a failing plugin is named and skipped (or raised, if strict)."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            info = self.pm.infos.get(impl.plugin_name)
            try:
                records = list(impl.function() or ())
                for record in records:
                    if not isinstance(record, record_type):
                        raise TypeError(f"{hook_name}() returned a {type(record).__name__}, "
                                        f"not a {record_type.__name__}")
            except Exception as error:  # noqa: BLE001
                self.pm.fail(impl.plugin_name, info.distribution if info else None,
                             info.version if info else None, error, f"register ({hook_name})")
                continue
            for record in records:
                yield record, impl.plugin_name

    def _collect(self) -> None:
        def add(table, key, record, plugin, what):
            if key in table:
                other = table[key][1]
                name = "/".join(key) if isinstance(key, tuple) else key
                raise DuplicateName(f"{what} {name!r} is "
                                    f"registered by two plugins: {other!r} and {plugin!r}")
            table[key] = (record, plugin)

        for record, plugin in self._results("gbmi_tasks", TaskSpec):
            add(self._tasks, record.name, record, plugin, "task")
        for record, plugin in self._results("gbmi_models", ModelSpec):
            add(self._models, (record.task, record.name), record, plugin, "model")
        for record, plugin in self._results("gbmi_training", TrainerSpec):
            add(self._trainers, record.task, record, plugin, "trainer for task")
        for record, plugin in self._results("gbmi_proof_strategies", StrategySpec):
            add(self._strategies, (record.task, record.name), record, plugin, "strategy")
        for record, plugin in self._results("gbmi_figures", FigureSpec):
            add(self._figures, (record.task, record.name), record, plugin, "figure")

    # -- queries -----------------------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        return sorted(self.pm.infos.values(), key=lambda info: info.name)

    def tasks(self) -> list[TaskSpec]:
        return [self._tasks[name][0] for name in sorted(self._tasks)]

    def task(self, name: str) -> TaskSpec:
        try:
            return self._tasks[name][0]
        except KeyError:
            raise _unknown("task", name, self._tasks) from None

    def provider(self, kind: str, *key: str) -> str:
        table = {"task": self._tasks, "strategy": self._strategies, "model": self._models, "figure": self._figures,
                 "trainer": self._trainers}[kind]
        return table[key[0] if len(key) == 1 else key][1]

    def models(self, task: str | None = None) -> list[ModelSpec]:
        return [spec for (t, _), (spec, _) in sorted(self._models.items()) if task is None or t == task]

    def trainer(self, task: str) -> TrainerSpec:
        self.task(task)
        try:
            return self._trainers[task][0]
        except KeyError:
            raise GbmiError(f"no plugin provides training for task {task!r}") from None

    def strategies(self, task: str | None = None) -> list[Strategy]:
        if task is not None:
            self.task(task)
        return [Strategy(spec, plugin, self) for (t, _), (spec, plugin) in sorted(self._strategies.items())
                if task is None or t == task]

    def strategy(self, task: str, name: str) -> Strategy:
        """A task's strategy by its name, or by its short name (what tables show) when that is unique."""
        self.task(task)
        try:
            spec, plugin = self._strategies[(task, name)]
        except KeyError:
            short = [key for key, (spec, _) in self._strategies.items() if key[0] == task and spec.short_name == name]
            if len(short) != 1:
                known = [n for (t, n) in self._strategies if t == task]
                raise _unknown("strategy", name, known, f" for task {task!r}") from None
            spec, plugin = self._strategies[short[0]]
        return Strategy(spec, plugin, self)

    def figures(self, task: str | None = None) -> list[FigureSpec]:
        if task is not None:
            self.task(task)
        return [spec for (t, _), (spec, _) in sorted(self._figures.items()) if task is None or t == task]

    def explain(self, task: str, model: Any, *, strategy: str | None = None, names=None,
                skipped: dict | None = None, label: str | None = None) -> dict:
        """The task's figures of ``model`` (matplotlib figures by name).  Figures about a proof are drawn for
        ``strategy`` (a name) and skipped without one; ``names`` picks some figures only.  A figure that
        raises :class:`~gbmi_core.NotApplicable` is left out, its reason put in ``skipped`` by name.  Each
        figure is stamped with the task, the model's hash and ``label`` (say, its seed or file)."""
        from .models import model_hash
        from .plots import stamp

        spec = self.task(task)
        if spec.check_model is not None:
            spec.check_model(model)
        chosen = self.strategy(task, strategy) if strategy is not None else None
        known = {f.name: f for f in self.figures(task)}
        for name in names or ():
            if name not in known:
                raise _unknown("figure", name, known, f" for task {task!r}")
        figures = {}
        for name, figure in known.items():
            if (names and name not in names) or (figure.needs_strategy and chosen is None):
                continue
            try:
                figures[name] = figure.draw(model, strategy=chosen) if figure.needs_strategy else figure.draw(model)
            except NotApplicable as error:
                if skipped is not None:
                    skipped[name] = str(error)
        identity = " · ".join(part for part in (task, f"model {model_hash(model)}", label) if part)
        for drawn in figures.values():
            stamp(drawn, identity)
        return figures

    # -- configs and models --------------------------------------------------------------------------
    def make_config(self, task: str, *, preset: str | None = None, config_file=None,
                    overrides: Mapping[str, Any] | None = None):
        """A task's config: the default, then a preset, then a file, then explicit field overrides."""
        spec = self.task(task)
        data: dict[str, Any] = config_mod.unstructure(spec.config_type())
        if preset is not None:
            if preset not in spec.presets:
                raise _unknown("preset", preset, spec.presets, f" for task {task!r}")
            data.update(spec.presets[preset])
        if config_file is not None:
            data.update(config_mod.unstructure(config_mod.load_file(spec.config_type, config_file)))
        data.update(overrides or {})
        return config_mod.structure(spec.config_type, data)

    def load_stored_model(self, task: str, key: str, store) -> Any:
        """The model at store ``key``: trained (rebuilt from its config) or imported (from its architecture)."""
        from .imports import model_from_imported
        from .models import model_from_entry

        entry = store.get(key)
        if entry is None:
            raise GbmiError(f"the store at {store.root} holds no model {key!r}")
        if entry.attrs.get("imported"):
            return model_from_imported(entry.attrs, entry.arrays, key)
        return model_from_entry(self.task(task), entry.arrays, entry.attrs, key)[0]

    def train_or_load(self, task: str, config: Any, store=None, *, progress: bool = True,
                      retrain: bool = False) -> tuple[Any, Mapping[str, Any]]:
        """The model for ``config``: from the store, else a shipped reference model, else trained.

        Returns ``(model, metrics)``.  A trained or imported model is written to the store keyed by the
        config's content hash, so the next call loads it without training.
        """
        from .models import entry_attrs, model_architecture, model_from_entry, model_key, model_weights, read_model_file
        from .store import Store

        spec = self.task(task)
        if not isinstance(config, spec.config_type):
            raise GbmiError(f"task {task!r} takes a {spec.config_type.__name__} config, "
                            f"not a {type(config).__name__}")
        store = store if store is not None else Store()
        key = model_key(task, config)
        if not retrain:
            entry = store.get(key)
            if entry is not None:
                try:
                    model, _ = model_from_entry(spec, entry.arrays, entry.attrs, key)
                    return model, entry.attrs["metrics"]
                except CorruptEntry as error:
                    store.set_aside(key, str(error))
            reference = spec.reference_models.get(config_mod.content_hash(config))
            if reference is not None:
                path = reference() if callable(reference) else reference
                arrays, attributes = read_model_file(path)
                model, _ = model_from_entry(spec, arrays, attributes, str(path))
                attributes = entry_attrs(task, config, arrays, attributes["metrics"], model_architecture(model))
                store.put(key, arrays, attributes, packed=False)
                return model, attributes["metrics"]
        trained = self.trainer(task).train(config, progress=progress)
        if not isinstance(trained, TrainedModel):
            raise GbmiError(f"the trainer of task {task!r} returned a {type(trained).__name__}, not a TrainedModel")
        weights = model_weights(trained.model)
        store.put(key, weights, entry_attrs(task, config, weights, trained.metrics, model_architecture(trained.model)),
                  packed=False)
        return trained.model, dict(trained.metrics)


def get_registry(*, load_entrypoints: bool = True, plugins: Iterable[tuple[str, Any]] = ()) -> Registry:
    """Build a registry from the installed plugins (and any extra ``(name, plugin)`` pairs given).

    Each call builds a fresh one; callers that need it often should keep it.
    """
    pm = get_plugin_manager(load_entrypoints=load_entrypoints)
    for name, plugin in plugins:
        pm.register_plugin(plugin, name)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        return Registry(pm)
