"""Scale: the memory budget (refusals that name it, chunks that fit it), chunked runs equal to unchunked
ones, and the store's footprint per proof."""

import os

import numpy as np
import pytest
import torch

from gbmi_core import Store
from gbmi_core.sweep import run_sweep
from gbmi_max_of_k import cubic
from gbmi_max_of_k import subcubic as sc

from .conftest import gbmi, small_model, trained_model

SUBCUBIC = ["subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact",
            "subcubic--eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd"]


def test_too_large_requests_are_refused_up_front_naming_need_and_budget(tmp_path):
    store = str(tmp_path / "s")
    for strategy in ("cubic", SUBCUBIC[0]):
        run = gbmi("--store", store, "--max-memory", "1M", "prove", "max-of-k", "--strategy", strategy)
        assert run.returncode == 1
        assert "needs about" in run.stderr and "over the budget of 1 MB" in run.stderr, run.stderr
        assert "--max-memory or GBMI_MAX_MEMORY" in run.stderr and "Traceback" not in run.stderr
    by_env = gbmi("--store", store, "prove", "max-of-k", "--strategy", "cubic", GBMI_MAX_MEMORY="1M")
    assert by_env.returncode == 1 and "over the budget of 1 MB" in by_env.stderr
    bad = gbmi("--store", store, "--max-memory", "plenty", "prove", "max-of-k", "--strategy", "cubic")
    assert bad.returncode == 2 and "bad memory size 'plenty'" in bad.stderr
    # several strategies: the refused one is named, the others still run
    mixed = gbmi("--store", store, "--max-memory", "12M", "prove", "max-of-k", "--strategy", "cubic",
                 "--strategy", SUBCUBIC[1])
    assert mixed.returncode == 0, mixed.stderr
    assert "refused: subcubic" in mixed.stderr and "cubic" in mixed.stdout
    # several strategies, every one refused: no empty table, and a failing exit
    none = gbmi("--store", store, "--max-memory", "1M", "prove", "max-of-k", "--strategy", "cubic",
                "--strategy", SUBCUBIC[1])
    assert none.returncode == 1 and "every one of the 2 strategies was refused" in none.stderr
    assert "strategy" not in none.stdout and "Traceback" not in none.stderr


def test_a_sweep_reports_refusals_apart_from_failures(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("GBMI_MAX_MEMORY", "12M")  # cubic fits at V=64, the subcubic search does not
    config = registry.make_config("max-of-k")
    summary = run_sweep(registry, "max-of-k", [config], ["cubic", SUBCUBIC[0]], Store(tmp_path / "s"),
                        executor="inline", progress=False)
    assert (summary.done, len(summary.failed)) == (1, 0)
    assert [strategy for _, strategy, _ in summary.refused] == [SUBCUBIC[0]]
    assert "over the budget of 12 MB" in summary.refused[0][2]


@pytest.mark.parametrize("make", [lambda: trained_model(12, 4, seed=2, steps=600),
                                  lambda: small_model(10, 3, seed=1, qk_scale=30.0)], ids=["trained", "sharp"])
def test_chunked_and_unchunked_cubic_agree(make):
    model = make()
    whole = cubic.verify(model, chunk=model.cfg.d_vocab)
    for chunk in (1, 3, 5):
        assert cubic.verify(model, chunk=chunk).correct_count == whole.correct_count


def test_chunked_and_unchunked_subcubic_agree(registry, reference_model, monkeypatch):
    """A memory budget small enough to force chunks of about 2,000 cells (instead of all 16,384 at once)
    changes neither the certificate nor the count."""
    results = {}
    for budget in (None, "30M"):
        if budget:
            monkeypatch.setenv("GBMI_MAX_MEMORY", budget)
            assert sc._cell_chunk(64, 4, "test") < 4000
        for name in SUBCUBIC:
            strategy = registry.strategy("max-of-k", name)
            certificate = strategy.search(reference_model)
            results.setdefault(name, []).append((certificate, strategy.prove(reference_model, certificate=certificate)))
    for name, ((c1, r1), (c2, r2)) in results.items():
        assert sorted(c1.arrays) == sorted(c2.arrays)
        for array in c1.arrays:
            np.testing.assert_array_equal(c1.arrays[array], c2.arrays[array])
        assert (r1.correct_count, r1.certified) == (r2.correct_count, True)


def test_a_proof_takes_about_two_files_in_the_store(registry, reference_model, tmp_path):
    store = Store(tmp_path / "s")
    names = ["brute-force", "cubic", *SUBCUBIC]
    for name in names:
        registry.strategy("max-of-k", name).prove(reference_model, store)
    files = [os.path.join(d, f) for d, _, fs in os.walk(store.root / "entries") for f in fs]
    assert len(files) == 2 * len(names)  # a result and a certificate each, one packed file apiece
    assert sum(os.path.getsize(f) for f in files) < 30_000 * len(names)
    assert store.info()["by_kind"] == {"certificates": len(names), "results": len(names)}


def test_binary_search_finds_the_smallest_proving_gap(reference_model):
    """The gap table equals, cell by cell, the smallest gap that proves the cell (evaluated for every gap)."""
    model = trained_model(10, 3, seed=0, steps=600)
    P = sc.paths(model)
    options = sc.SubcubicOptions()
    found = sc.search(model, options)
    directions = {k: torch.from_numpy(v) for k, v in found.items() if k != "min_gap"}
    parts = sc._precompute(P, options, directions, certified=False)
    abar = directions["mean_attention"]
    smallest = torch.ones(P.V, P.V, P.n, dtype=torch.int64)
    for gap in range(P.V - 1, 0, -1):  # downwards: the last gap that proves a cell is its smallest
        G = torch.full((P.V, P.V, P.n), gap, dtype=torch.int64)
        R, valid = sc._largest_wrong_logit(parts, G, abar)
        smallest = torch.where(valid & R.certainly_negative(), gap, smallest)
    np.testing.assert_array_equal(found["min_gap"], smallest.numpy())


def test_sweeps_and_one_report_across_presets(tmp_path):
    store = str(tmp_path / "s")
    quick = ["--set", "steps=30", "--set", "eval_samples=16"]
    for preset in ("max-of-4", "max-of-5"):
        run = gbmi("--store", store, "sweep", "max-of-k", "--preset", preset, "--seeds", "0:2", "--jobs", "1",
                   "--strategies", f"cubic,{SUBCUBIC[1]}", *quick)
        assert run.returncode == 0, run.stderr
    report = gbmi("--store", store, "report", "max-of-k", "--preset", "all", *quick)
    assert report.returncode == 0, report.stderr
    comparison = report.stdout.split("\n\n")[0].splitlines()
    assert comparison[0].startswith("Per preset")
    assert [line.split()[:3] for line in comparison[3:]] == [["max-of-4", "cubic", "2"], ["max-of-4", "subcubic:without-vocab-squared", "2"],
                                                             ["max-of-5", "cubic", "2"], ["max-of-5", "subcubic:without-vocab-squared", "2"]]
    assert "max-of-5: Per strategy" in report.stdout
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(gbmi("--store", store, "report", "max-of-k", "--preset", "max-of-4",
                                                 "--preset", "max-of-5", "--format", "csv", *quick).stdout)))
    assert {(r["preset"], r["level"]) for r in table} == {(p, level) for p in ("max-of-4", "max-of-5")
                                                          for level in ("family", "strategy")}
