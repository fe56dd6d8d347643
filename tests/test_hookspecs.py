"""Meta-tests: every hook is documented with an example that really runs, and is tested."""

import inspect
import textwrap
import types

import pytest

import gbmi_core
from gbmi_core import hookspecs
from gbmi_core.records import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("gbmi_"))
RECORDS = {"gbmi_tasks": TaskSpec, "gbmi_models": ModelSpec, "gbmi_training": TrainerSpec,
           "gbmi_proof_strategies": StrategySpec, "gbmi_figures": FigureSpec}


def example_of(hook: str) -> str:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert "**Example**" in doc, f"{hook} has no example"
    block = doc.split("**Example**", 1)[1].split("::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_the_hooks_are_the_five_of_the_design():
    assert HOOKS == sorted(RECORDS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_example_runs_as_a_plugin(hook):
    module = types.ModuleType(f"example_{hook}")
    exec(compile(example_of(hook), f"<{hook} example>", "exec"), module.__dict__)
    registry = gbmi_core.get_registry(load_entrypoints=False, plugins=[("example", module)])
    records = list(getattr(module, hook)())
    assert records and all(isinstance(r, RECORDS[hook]) for r in records)
    if hook == "gbmi_tasks":
        assert [t.name for t in registry.tasks()] == ["parity"]
    if hook == "gbmi_proof_strategies":
        import torch

        bound = records[0].verify(torch.nn.Linear(3, 2), None)
        assert bound.total_count == 8
    if hook == "gbmi_figures":
        import torch

        figure = records[0].draw(torch.nn.Linear(3, 2))
        assert figure.axes and figure.get_size_inches().tolist() == [4.0, 3.0]


@pytest.mark.parametrize("hook", HOOKS)
def test_the_template_plugin_implements_every_hook(hook, majority_registry, example_plugin_module):
    """The example plugin is the template newcomers copy: it shows (and tests through) every hook."""
    assert callable(getattr(example_plugin_module, hook, None)), hook
    found = {"gbmi_tasks": majority_registry.tasks(), "gbmi_models": majority_registry.models("majority"),
             "gbmi_training": [majority_registry.trainer("majority")],
             "gbmi_proof_strategies": [s.spec for s in majority_registry.strategies("majority")],
             "gbmi_figures": majority_registry.figures("majority")}[hook]
    assert found and all(isinstance(record, RECORDS[hook]) for record in found)
