"""Plugin discovery through real entry points, failures, environment switches and duplicate names."""

import json
import re
import warnings

import expecttest
import pytest

import gbmi_core
from gbmi_core.plugins import GbmiPluginWarning

from .conftest import run_gbmi


def _registry(monkeypatch, load):
    monkeypatch.setenv("GBMI_LOAD_PLUGINS", load)
    monkeypatch.delenv("GBMI_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("GBMI_DISABLED_PLUGINS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = gbmi_core.get_registry()
    return registry, [w for w in caught if issubclass(w.category, GbmiPluginWarning)]


class TestBrokenPlugin(expecttest.TestCase):
    @pytest.fixture(autouse=True)
    def _setup(self, fake_plugins, monkeypatch):
        self.monkeypatch = monkeypatch

    def test_broken_plugin_beside_good_one_warns_and_good_one_loads(self):
        registry, caught = _registry(self.monkeypatch, "gbmi-fake-good,gbmi-fake-broken")
        self.assertEqual([t.name for t in registry.tasks()], ["fake-good"])
        self.assertEqual([s.name for s in registry.strategies("fake-good")], ["trivial"])
        self.assertEqual(len(caught), 1)
        message = re.sub(r"gbmi-core \S+\)", "gbmi-core VERSION)", str(caught[0].message))
        self.assertExpectedInline(message, """gbmi plugin entry point 'fake_broken' of gbmi-fake-broken 0.2 failed to import: ImportError: No module named 'some_missing_dependency' (gbmi-core VERSION); it was skipped, the other plugins still load. Set GBMI_STRICT_PLUGINS=1 to make this an error.""")
        statuses = {p.name: p.status for p in registry.plugins()}
        self.assertEqual(statuses["fake_good"], "loaded")
        self.assertEqual(statuses["fake_broken"], "failed")

    def test_strict_mode_turns_the_warning_into_an_error(self):
        self.monkeypatch.setenv("GBMI_LOAD_PLUGINS", "gbmi-fake-good,gbmi-fake-broken")
        self.monkeypatch.setenv("GBMI_STRICT_PLUGINS", "1")
        with self.assertRaisesRegex(gbmi_core.PluginLoadError, "fake_broken' of gbmi-fake-broken 0.2"):
            gbmi_core.get_registry()

    def test_misspelt_hook_is_refused_by_name(self):
        registry, caught = _registry(self.monkeypatch, "gbmi-fake-typo,gbmi-fake-good")
        self.assertEqual(len(caught), 1)
        self.assertIn("unknown hook 'gbmi_task'", str(caught[0].message))
        self.assertEqual([t.name for t in registry.tasks()], ["fake-good"])


def test_duplicate_task_names_an_error_naming_both(fake_plugins, monkeypatch):
    monkeypatch.setenv("GBMI_LOAD_PLUGINS", "gbmi-fake-good,gbmi-fake-clash")
    with pytest.raises(gbmi_core.DuplicateName, match="'fake-good' is registered by two plugins: 'fake_(good|clash)' and 'fake_(clash|good)'"):
        gbmi_core.get_registry()


def test_disabled_and_selected_plugins(fake_plugins, monkeypatch):
    monkeypatch.setenv("GBMI_LOAD_PLUGINS", "gbmi-fake-good,gbmi-fake-clash")
    monkeypatch.setenv("GBMI_DISABLED_PLUGINS", "gbmi-fake-clash")
    registry = gbmi_core.get_registry()
    assert [t.name for t in registry.tasks()] == ["fake-good"]
    assert {p.name: p.status for p in registry.plugins()}["fake_clash"] == "disabled"
    monkeypatch.setenv("GBMI_LOAD_PLUGINS", "")
    registry = gbmi_core.get_registry()
    assert registry.tasks() == []


def test_unknown_names_list_close_matches(fake_plugins, monkeypatch):
    registry, _ = _registry(monkeypatch, "gbmi-fake-good")
    with pytest.raises(gbmi_core.UnknownName, match=r"unknown task 'fake-god'; did you mean 'fake-good'\?"):
        registry.task("fake-god")
    with pytest.raises(gbmi_core.UnknownName, match=r"unknown strategy 'trivia' for task 'fake-good'; did you mean 'trivial'\?"):
        registry.strategy("fake-good", "trivia")


def test_real_installed_plugin_is_discovered_through_its_entry_point(example_plugin_dir):
    """The example plugin, pip-installed: only it is loaded, and `list-strategies --json` shows its strategy."""
    result = run_gbmi("list-strategies", "--json", pythonpath=[example_plugin_dir],
                      env={"GBMI_LOAD_PLUGINS": "gbmi-example-majority", "GBMI_STRICT_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{
        "complexity": "O(2^n n)", "family": "", "name": "enumerate", "plugin": "majority",
        "short_name": "enumerate", "summary": "Run the model on every input.", "task": "majority",
    }]
    plugins = run_gbmi("plugins", "--json", pythonpath=[example_plugin_dir],
                       env={"GBMI_LOAD_PLUGINS": "gbmi-example-majority"})
    info = {p["name"]: p for p in json.loads(plugins.stdout)}["majority"]
    assert (info["distribution"], info["version"], info["status"]) == ("gbmi-example-majority", "0.1.0", "loaded")


def test_programmatic_registry_with_in_process_plugin(example_plugin_module):
    registry = gbmi_core.get_registry(load_entrypoints=False, plugins=[("inline", example_plugin_module)])
    assert [s.name for s in registry.strategies()] == ["enumerate"]
    assert registry.provider("strategy", "majority", "enumerate") == "inline"
