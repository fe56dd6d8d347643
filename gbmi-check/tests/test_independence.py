"""The checker shares no code with the prover: it runs where torch, transformer_lens and gbmi cannot be imported."""

import ast
import pathlib
import subprocess
import sys

import gbmi_check
from .conftest import bundle, induction_model, max_of_k_model

SOURCE = pathlib.Path(gbmi_check.__file__).parent
ALLOWED = {"numpy", "flint", "attrs", "gbmi_check"} | set(sys.stdlib_module_names)

BLOCKER = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformer_lens', 'gbmi_core', 'gbmi_max_of_k', 'gbmi_induction'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Blocker())
from gbmi_check.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_checker_imports_nothing_of_the_prover():
    for path in SOURCE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


def test_the_checker_runs_where_torch_and_gbmi_cannot_be_imported(registry, tmp_path):
    paths = [bundle(registry, tmp_path, "max-of-k", name, *max_of_k_model(5, 3, seed=1))
             for name in ("brute-force", "cubic", "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-svd")]
    paths.append(bundle(registry, tmp_path, "induction", "pair-bounds", *induction_model(5, 4, seed=2)))
    run = subprocess.run([sys.executable, "-c", BLOCKER, *map(str, paths)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": agree:") == 4
    blocked = subprocess.run([sys.executable, "-c", BLOCKER.replace("from gbmi_check.cli import main", "import torch")],
                             capture_output=True, text=True)
    assert "blocked: torch" in blocked.stderr  # the blocker really blocks
