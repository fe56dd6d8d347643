"""The plugin as a third party ships it: discovered by entry point, driven by the unchanged gbmi CLI."""

import ast
import json
import pathlib

import torch

import gbmi_induction
from gbmi_induction.model import label, sample

from gbmi_core import lens

from .conftest import gbmi, plain_model, save_plain

PACKAGE = pathlib.Path(gbmi_induction.__file__).parent


def test_found_through_its_entry_point_and_imports_only_gbmi_core(registry):
    assert registry.task("induction").name == "induction"
    assert {s.name for s in registry.strategies("induction")} == {"brute-force", "pair-bounds", "pair-bounds-crude"}
    info = {i.name: i for i in registry.plugins()}["induction"]
    assert info.distribution == "gbmi-induction" and info.status == "loaded"
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert not name.startswith("gbmi_max_of_k"), (path.name, name)
                if name.startswith("gbmi_core."):
                    assert not name.split(".")[1].startswith("_"), (path.name, name)


def test_prove_bundle_and_check_on_the_shipped_model(tmp_path):
    store, bundles = str(tmp_path / "store"), tmp_path / "bundles"
    run = gbmi("--store", store, "prove", "induction", "--strategy", "pair-bounds", "--strategy", "pair-bounds-crude",
               "--json", "--bundle", str(bundles))
    assert run.returncode == 0, run.stderr
    results = {r["strategy"]: r for r in json.loads(run.stdout)}
    assert results["pair-bounds"]["total_count"] == 2_096_640
    assert results["pair-bounds"]["correct_count"] >= 0.98 * 2_096_640  # the exact value is pinned in test_pairs
    assert results["pair-bounds"]["certified"] and results["pair-bounds-crude"]["certified"]
    check = gbmi("check", *map(str, sorted(bundles.iterdir())))
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("agree") == 2


def their_model(d=6, n=5, seed=0, steps=400):
    """A model trained by someone else's code: TransformerLens' own initialisation, trainable biases, the full
    forward pass, plain Adam, a loss on the last position."""
    model = plain_model(seed, n_layers=2, n_heads=1, d_model=12, d_head=6, d_vocab=d, d_vocab_out=d, n_ctx=n)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = sample(d, n, 128, generator)
        loss = torch.nn.functional.cross_entropy(model(tokens)[:, -1], label(tokens))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def test_a_model_trained_by_other_code_is_proved(tmp_path, registry):
    model = their_model()
    assert bool((lens.Weights.of(model)["blocks.0.attn.b_Q"] != 0).any())  # its biases are really in play
    path = save_plain(model, tmp_path / "theirs.pt")
    run = gbmi("--store", str(tmp_path / "s"), "prove", "induction", "--model", str(path), "--strategy", "all",
               "--json")
    assert run.returncode == 0, run.stderr
    results = {r["strategy"]: r for r in json.loads(run.stdout)}
    exact = registry.strategy("induction", "brute-force").prove(model).correct_count
    assert results["brute-force"]["correct_count"] == exact
    assert 0 < results["pair-bounds"]["correct_count"] <= exact
    assert results["pair-bounds-crude"]["correct_count"] <= results["pair-bounds"]["correct_count"]


def test_a_model_outside_the_family_is_refused_naming_why(tmp_path):
    path = save_plain(plain_model(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=6, d_vocab_out=6, n_ctx=5),
                      tmp_path / "heads.pt")
    run = gbmi("--store", str(tmp_path / "s"), "prove", "induction", "--model", str(path))
    assert run.returncode == 1 and "it has 2 attention heads" in run.stderr


def test_explain_draws_the_mechanism(tmp_path, registry, reference_model):
    figures = registry.explain("induction", reference_model, strategy="pair-bounds")
    assert set(figures) == {"previous-token", "induction", "matching", "copying", "proof-map"}
    run = gbmi("--store", str(tmp_path / "s"), "explain", "induction", "--out", str(tmp_path / "pictures"),
               "--figure", "previous-token", "--figure", "induction")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["induction.png", "previous-token.png"]
