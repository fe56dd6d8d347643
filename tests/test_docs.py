"""Every command the README and CONTRIBUTING show is run, so a command a reader copies cannot fail.

Each fenced ``bash`` block runs with ``bash -euo pipefail`` (and each ``python`` block with this
interpreter) in order, in one scratch directory: ``.venv`` there is the environment running the tests,
the repository's folders are linked in, the store is private, and the files the README calls
``my_model.pt`` and ``runs/*.safetensors`` are there.  A block fenced as ```` ```bash long ```` (the
whole suite, the 151-seed sweep, benchmarks, tox) is not run; each of its ``gbmi`` commands is checked to
exist (``--help``), and its scripts to be files.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", "CONTRIBUTING.md")
FENCE = re.compile(r"^```(bash|python)([^\n]*)\n(.*?)^```", re.M | re.S)

pytest.importorskip("gbmi_max_of_k", reason="the README's commands use the Max-of-K plugin")
pytest.importorskip("gbmi_induction", reason="the README's commands use the induction plugin")


def blocks():
    """``(where, language, long, text)`` for every fenced bash or python block, in document order."""
    found = []
    for name in DOCS:
        text = (ROOT / name).read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{name}:{line}", match.group(1), "long" in match.group(2).split(), match.group(3)))
    return found


def test_the_docs_have_runnable_blocks():
    found = blocks()
    assert sum(1 for _, _, long, _ in found if not long) >= 8, "the README's examples are no longer found"
    assert any(long and "scripts/test.sh" in text for _, _, long, text in found)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory that looks like a checkout with its venv, plus the model files the README names."""
    import torch
    from safetensors.torch import save_file

    from gbmi_core import lens

    work = tmp_path_factory.mktemp("readme")
    (work / ".venv").symlink_to(pathlib.Path(sys.prefix))
    for entry in ROOT.iterdir():
        if entry.name not in {".venv", ".git"} and not entry.name.startswith((".venv-", ".tox")):
            (work / entry.name).symlink_to(entry)
    arch = dict(n_layers=1, n_heads=1, d_model=16, d_head=16, d_vocab=10, d_vocab_out=10, n_ctx=3, attn_only=True,
                normalization_type=None, act_fn=None)
    (work / "runs").mkdir()
    for seed in range(3):
        model = lens.build(arch, seed=seed)
        state = {k: v for k, v in lens.canonical_state(model).items() if k in lens.shapes(lens.architecture(model))}
        if seed == 0:
            torch.save(state, work / "my_model.pt")
            save_file(state, str(work / "my_model.safetensors"))
        save_file(state, str(work / "runs" / f"model_{seed}.safetensors"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    env.update(GBMI_STORE=str(work / "store"), MPLBACKEND="Agg")
    return work, env


def _gbmi_commands(text: str):
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        if words and words[0].endswith("bin/gbmi"):
            options = [w for w in words[1:] if not w.startswith("-")]
            if options:
                yield options[0]
        elif words and words[0] == "bash":
            yield pathlib.Path(words[1])


def test_every_command_in_the_readme_and_contributing_runs(scratch):
    work, env = scratch
    ran = 0
    for where, language, long, text in blocks():
        if long:
            for command in _gbmi_commands(text):
                if isinstance(command, pathlib.Path):
                    assert (ROOT / command).is_file(), f"{where}: {command} does not exist"
                    continue
                run = subprocess.run([str(work / ".venv" / "bin" / "gbmi"), command, "--help"], cwd=work, env=env,
                                     capture_output=True, text=True)
                assert run.returncode == 0, f"{where}: `gbmi {command}` is not a command: {run.stderr}"
            continue
        argv = ["bash", "-euo", "pipefail", "-c", text] if language == "bash" else [sys.executable, "-c", text]
        run = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"{where} failed ({run.returncode}):\n{text}\n--- stderr:\n{run.stderr[-3000:]}"
        ran += 1
    assert ran >= 8
    assert (work / "bundles").is_dir() and (work / "figures" / "eqke.png").is_file()
