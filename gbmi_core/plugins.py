"""Building the plugin manager and loading plugins from installed entry points, one at a time.

Environment switches:

``GBMI_LOAD_PLUGINS``
    Comma-separated distribution (or entry-point) names: load only these.  Set but empty: load none.
``GBMI_DISABLED_PLUGINS``
    Comma-separated distribution (or entry-point) names never to load.
``GBMI_STRICT_PLUGINS=1``
    A plugin that fails to import or register is an error instead of a warning (for plugin authors, CI).
``GBMI_TRACE_PLUGINS=1``
    Print every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from typing import Any, Iterable

import attrs
import pluggy

from . import hookspecs
from .errors import PluginLoadError

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


class GbmiPluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or register."""


@attrs.frozen
class PluginInfo:
    """One plugin as the registry saw it."""

    name: str
    distribution: str | None
    version: str | None
    status: str  # "loaded", "failed", "disabled" or "not selected"
    error: str | None = None
    hooks: tuple[str, ...] = ()


def core_version() -> str:
    try:
        return importlib.metadata.version("gbmi-core")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _strict() -> bool:
    return os.environ.get("GBMI_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


class GbmiPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers what happened to every plugin it was offered."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(self, plugin: Any, name: str, *, distribution: str | None = None,
                        version: str | None = None) -> None:
        """Register ``plugin`` under ``name``; a plugin with a hook the specs don't know is refused."""
        self.register(plugin, name=name)
        try:
            self._check_one(plugin)
        except Exception:
            self.unregister(plugin)
            raise
        hooks = tuple(sorted(caller.name for caller in (self.get_hookcallers(plugin) or [])))
        self.infos[name] = PluginInfo(name, distribution, version, "loaded", hooks=hooks)

    def _check_one(self, plugin: Any) -> None:
        for caller in self.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook {caller.name!r} (known hooks: {', '.join(_hook_names())})"
                )

    def fail(self, name: str, distribution: str | None, version: str | None, error: BaseException,
             what: str) -> None:
        """Record a plugin that could not be loaded, and warn (or raise, when strict)."""
        where = f"entry point {name!r}"
        if distribution:
            where += f" of {distribution} {version or '?'}"
        message = (
            f"gbmi plugin {where} failed to {what}: {type(error).__name__}: {error} "
            f"(gbmi-core {core_version()}); it was skipped, the other plugins still load. "
            "Set GBMI_STRICT_PLUGINS=1 to make this an error."
        )
        self.infos[name] = PluginInfo(name, distribution, version, "failed", error=f"{type(error).__name__}: {error}")
        if _strict():
            raise PluginLoadError(message) from error
        warnings.warn(message, GbmiPluginWarning, stacklevel=3)

    def load_entrypoints(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> None:
        """Load the ``gbmi`` entry points one at a time; a broken one is skipped with a warning."""
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        only = _env_list("GBMI_LOAD_PLUGINS")
        disabled = set(_env_list("GBMI_DISABLED_PLUGINS") or [])
        seen: set[tuple[str, str]] = set()
        for ep in sorted(entry_points, key=lambda e: (e.name, e.value)):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if (ep.name, ep.value) in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            names = {ep.name, dist} - {None}
            if names & disabled:
                self.infos[ep.name] = PluginInfo(ep.name, dist, version, "disabled")
                continue
            if only is not None and not names & set(only):
                self.infos[ep.name] = PluginInfo(ep.name, dist, version, "not selected")
                continue
            if self.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as error:  # noqa: BLE001 - any import failure of a plugin is the plugin's
                self.fail(ep.name, dist, version, error, "import")
                continue
            try:
                self.register_plugin(plugin, ep.name, distribution=dist, version=version)
            except Exception as error:  # noqa: BLE001
                self.fail(ep.name, dist, version, error, "register")
        if os.environ.get("GBMI_TRACE_PLUGINS"):
            self.trace.root.setwriter(lambda text: sys.stderr.write(text))
            self.enable_tracing()


def _hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("gbmi_"))


def get_plugin_manager(*, load_entrypoints: bool = True) -> GbmiPluginManager:
    """A fresh plugin manager with the specs added and (by default) the installed plugins loaded."""
    pm = GbmiPluginManager()
    if load_entrypoints:
        pm.load_entrypoints()
    return pm
