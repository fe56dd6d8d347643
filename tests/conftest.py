import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FAKE_PLUGINS = pathlib.Path(__file__).parent / "data" / "fakeplugins"
GBMI = pathlib.Path(sys.executable).parent / "gbmi"


@pytest.fixture
def fake_plugins(monkeypatch):
    """Put the fake distributions of tests/data/fakeplugins on sys.path (real entry points, no pip)."""
    monkeypatch.syspath_prepend(str(FAKE_PLUGINS))
    for name in list(sys.modules):
        if name.startswith("gbmi_fake_"):
            del sys.modules[name]
    return FAKE_PLUGINS


@pytest.fixture(scope="session")
def example_plugin_dir(tmp_path_factory):
    """The example plugin, really pip-installed (with its entry point) into a throwaway directory."""
    import shutil

    target = tmp_path_factory.mktemp("example-plugin")
    # Build from a private copy: setuptools writes build/ and *.egg-info beside the sources, and
    # parallel test workers must not race on (or litter) the repository's tree.
    source = tmp_path_factory.mktemp("example-source") / "gbmi-example-majority"
    shutil.copytree(ROOT / "examples" / "gbmi-example-majority", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def run_gbmi(*args, env=None, pythonpath=(), timeout=120):
    """Run the installed `gbmi` console script in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    full_env.update(env or {})
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return subprocess.run([str(GBMI), *args], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def example_plugin_module(monkeypatch):
    """The example plugin's module imported from the source tree (for in-process registration)."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "gbmi-example-majority"))
    return importlib.import_module("gbmi_example_majority.plugin")


@pytest.fixture
def majority_registry(example_plugin_module):
    import gbmi_core

    return gbmi_core.get_registry(load_entrypoints=False, plugins=[("majority", example_plugin_module)])
