"""The `gbmi` command line, run as a real subprocess."""

import json
import subprocess
import sys

import pytest

from .conftest import FAKE_PLUGINS, run_gbmi

LIST_COMMANDS = [["plugins"], ["list-tasks"], ["list-strategies"], ["list-strategies", "--json"], ["--help"]]


@pytest.mark.parametrize("args", LIST_COMMANDS, ids=" ".join)
def test_list_commands_never_import_torch_or_transformer_lens(args, example_plugin_dir):
    """Every installed plugin is loaded, yet neither heavy library is imported."""
    code = ("import sys\nfrom gbmi_core.cli import main\ntry:\n    main(%r)\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nheavy = sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)\n") % (args,)
    env = {"PYTHONPATH": str(example_plugin_dir)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


def test_lists_are_sorted_and_stable(example_plugin_dir):
    env = {"GBMI_LOAD_PLUGINS": "gbmi-example-majority,gbmi-fake-good"}
    path = [example_plugin_dir, FAKE_PLUGINS]
    first = run_gbmi("list-strategies", env=env, pythonpath=path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == run_gbmi("list-strategies", env=env, pythonpath=path).stdout
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["task", "strategy", "cost", "summary"]
    assert [line.split()[0] for line in lines[2:]] == ["fake-good", "majority"]
    tasks = run_gbmi("list-tasks", "--json", env=env, pythonpath=path)
    assert [t["name"] for t in json.loads(tasks.stdout)] == ["fake-good", "majority"]


@pytest.mark.parametrize("args, message", [
    (["list-strategies", "--task", "majorty"], "Error: unknown task 'majorty'; did you mean 'majority'?"),
    (["prove", "majority", "--strategy", "enumerat"],
     "Error: unknown strategy 'enumerat' for task 'majority'; did you mean 'enumerate'?"),
    (["train", "majority", "--set", "n_bits=4"], "Error: 'n_bits' must be in [1, 3, 5, 7] (got 4) @ MajorityConfig"),
    (["train", "majority", "--set", "bits=4"], "Error: unknown field(s) bits (known fields: n_bits, seed, steps) @ MajorityConfig"),
    (["train", "majority", "--preset", "nine"], "Error: unknown preset 'nine' for task 'majority'; known: five-bits"),
])
def test_errors_are_one_line_and_exit_non_zero(args, message, example_plugin_dir, tmp_path):
    result = run_gbmi("--store", str(tmp_path / "store"), *args, pythonpath=[example_plugin_dir],
                      env={"GBMI_LOAD_PLUGINS": "gbmi-example-majority"})
    assert result.returncode == 1
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(example_plugin_dir):
    result = run_gbmi("--debug", "list-strategies", "--task", "nope", pythonpath=[example_plugin_dir])
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_train_then_prove_through_the_cli(example_plugin_dir, tmp_path):
    env = {"GBMI_LOAD_PLUGINS": "gbmi-example-majority"}
    store = ["--store", str(tmp_path / "store")]
    trained = run_gbmi(*store, "train", "majority", "--seed", "3", pythonpath=[example_plugin_dir], env=env)
    assert trained.returncode == 0, trained.stderr
    assert "final_loss" in trained.stdout
    proved = run_gbmi(*store, "prove", "majority", "--seed", "3", "--json", pythonpath=[example_plugin_dir], env=env)
    assert proved.returncode == 0, proved.stderr
    [result] = json.loads(proved.stdout)
    assert (result["strategy"], result["correct_count"], result["total_count"]) == ("enumerate", 8, 8)
    table = run_gbmi(*store, "prove", "majority", "--seed", "3", pythonpath=[example_plugin_dir], env=env)
    assert table.stdout.splitlines()[0].split()[:3] == ["strategy", "bound", "correct/total"]


def test_a_broken_plugin_warns_in_one_line_and_strict_mode_fails():
    env = {"GBMI_LOAD_PLUGINS": "gbmi-fake-good,gbmi-fake-broken"}
    lenient = run_gbmi("list-tasks", env=env, pythonpath=[FAKE_PLUGINS])
    assert lenient.returncode == 0
    assert lenient.stderr.startswith("Warning: gbmi plugin entry point 'fake_broken' of gbmi-fake-broken 0.2")
    assert len(lenient.stderr.strip().splitlines()) == 1 and "fake-good" in lenient.stdout
    strict = run_gbmi("list-tasks", env={**env, "GBMI_STRICT_PLUGINS": "1"}, pythonpath=[FAKE_PLUGINS])
    assert strict.returncode == 1
    assert strict.stderr.startswith("Error: gbmi plugin entry point 'fake_broken'") and "Traceback" not in strict.stderr
