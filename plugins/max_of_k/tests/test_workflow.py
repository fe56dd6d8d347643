"""The researcher's workflow: their own model files, results as data, pictures of the mechanism, readable
output and progress in logs."""

import io
import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

import gbmi_core
from gbmi_core import ModelRefused, Store, lens
from gbmi_core.imports import ModelFileError, import_model, infer_architecture, load_model
from gbmi_core.models import model_hash
from gbmi_core.progress import LogProgress

from .conftest import GBMI, gbmi, save, their_model

SUBCUBIC = "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_a_model_saved_by_plain_transformer_lens_code_is_proved(tmp_path, suffix, registry):
    model = their_model(d_head=8)  # d_head differs from d_model: not a config of ours
    path = save(model, tmp_path / f"theirs{suffix}")
    run = gbmi("--store", str(tmp_path / "s"), "prove", "max-of-k", "--model", path, "--strategy", "cubic",
               "--strategy", "brute-force", "--json")
    assert run.returncode == 0, run.stderr
    results = {r["strategy"]: r for r in json.loads(run.stdout)}
    exact = registry.strategy("max-of-k", "brute-force").prove(model)
    assert results["brute-force"]["correct_count"] == exact.correct_count  # the same weights, proved
    assert results["cubic"]["correct_count"] <= exact.correct_count and results["cubic"]["certified"]
    ours = lens.build(lens.architecture(model), state=lens.canonical_state(model))  # the same weights, built by gbmi
    assert model_hash(ours) == exact.model_hash
    for name in ("brute-force", "cubic"):
        assert registry.strategy("max-of-k", name).prove(ours).correct_count == results[name]["correct_count"]
    store = Store(tmp_path / "s")
    key = f"models/max-of-k/imported-{exact.model_hash}"
    assert store.attrs(key)["architecture"]["d_head"] == 8
    again = gbmi("--store", str(tmp_path / "s"), "import-model", "max-of-k", path)
    assert again.returncode == 0 and exact.model_hash in again.stdout  # the same model: one entry
    assert list(store.keys("models/max-of-k")) == [key]


def test_architecture_from_side_car_or_inferred(tmp_path):
    model = their_model(d_head=4)
    state = lens.canonical_state(model)
    assert infer_architecture(state) == {**infer_architecture(state), "d_head": 4, "n_ctx": 3, "d_vocab": 10,
                                         "attn_only": True, "normalization_type": None}
    path = save(model, tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps(model.cfg.to_dict(), default=str))
    loaded, architecture = load_model(path)
    assert architecture["d_head"] == 4
    assert torch.equal(lens.Weights.of(loaded).W_Q, lens.Weights.of(model).W_Q)


def test_models_that_do_not_fit_are_refused_naming_why(tmp_path, registry):
    store = Store(tmp_path / "s")
    with_mlp = save(their_model(attn_only=False, d_mlp=12, act_fn="relu"), tmp_path / "mlp.pt")
    with pytest.raises(ModelRefused, match="it has an MLP"):
        import_model(registry, "max-of-k", with_mlp, store)
    two_heads = save(their_model(n_heads=2), tmp_path / "heads.pt")
    run = gbmi("--store", str(tmp_path / "s"), "prove", "max-of-k", "--model", two_heads, "--strategy", "cubic")
    assert run.returncode == 1 and "it has 2 attention heads" in run.stderr
    assert not list(store.keys("models"))  # nothing refused is stored
    state = lens.canonical_state(their_model())
    del state["unembed.W_U"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ModelFileError, match="no 'unembed.W_U'"):
        load_model(tmp_path / "broken.pt")
    (tmp_path / "noise.pt").write_bytes(b"not a model at all")
    run = gbmi("--store", str(tmp_path / "s"), "import-model", "max-of-k", str(tmp_path / "noise.pt"))
    assert run.returncode == 1 and "noise.pt" in run.stderr and "Traceback" not in run.stderr
    # a damaged file is called corrupt, with no advice to unpickle it
    whole = (tmp_path / "broken.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    for name in ("noise.pt", "truncated.pt", "random.pt"):
        with pytest.raises(ModelFileError, match=f"{name} is corrupt or not a torch file") as caught:
            load_model(tmp_path / name)
        assert "allow-pickle" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_model_object_is_imported_as_itself(tmp_path, registry):
    model = their_model()
    imported, key, digest = import_model(registry, "max-of-k", model, Store(tmp_path / "s"))
    assert digest == model_hash(model) and key.endswith(digest)
    assert Store(tmp_path / "s").attrs(key)["source"] == f"a {type(model).__name__} object"


def test_a_pickled_module_needs_allow_pickle(tmp_path):
    if lens.version()[0] >= 4:
        pytest.skip("TransformerLens 4.3 cannot pickle a TransformerBridge (torch.save raises on a local class)")
    torch.save(their_model(), tmp_path / "whole.pt")
    refused = gbmi("--store", str(tmp_path / "s"), "import-model", "max-of-k", str(tmp_path / "whole.pt"))
    assert refused.returncode == 1 and "--allow-pickle" in refused.stderr
    allowed = gbmi("--store", str(tmp_path / "s"), "import-model", "max-of-k", str(tmp_path / "whole.pt"),
                   "--allow-pickle")
    assert allowed.returncode == 0, allowed.stderr


def test_a_sweep_over_model_files_and_bundles_of_imported_models(tmp_path):
    for seed in range(3):
        save(their_model(seed=seed), tmp_path / f"m{seed}.safetensors")
    store = str(tmp_path / "s")
    run = gbmi("--store", store, "sweep", "max-of-k", "--models", str(tmp_path / "m*.safetensors"), "--jobs", "1",
               "--strategies", f"cubic,{SUBCUBIC}")
    assert run.returncode == 0, run.stderr
    assert "3 models, 6 (model, strategy) pairs: 6 proved now" in run.stdout
    bundle = gbmi("--store", store, "prove", "max-of-k", "--model", str(tmp_path / "m0.safetensors"), "--strategy",
                  SUBCUBIC, "--bundle", str(tmp_path / "b"))
    assert bundle.returncode == 0, bundle.stderr
    check = gbmi("check", str(tmp_path / "b"))
    assert check.returncode == 0 and "agree" in check.stdout, check.stdout + check.stderr


def test_results_as_one_table_in_csv_json_parquet_and_pandas(tmp_path, registry):
    store = Store(tmp_path / "s")
    for seed in (0, 1):
        config = registry.make_config("max-of-k", overrides={"V": 6, "K": 3, "d_model": 8, "steps": 50, "seed": seed})
        model, _ = registry.train_or_load("max-of-k", config, store, progress=False)
        for name in ("brute-force", "cubic", SUBCUBIC):
            registry.strategy("max-of-k", name).prove(model, store)
    frame = gbmi_core.results_frame("max-of-k", store, registry=registry)
    assert len(frame) == 6 and set(frame.strategy) == {"brute-force", "cubic", SUBCUBIC}
    assert {"config.seed", "config.V", "config_hash", "model_hash", "family", "bound", "correct_count", "flops",
            "unexplained_dimension", "seconds", "certified", "source"} <= set(frame.columns)
    assert frame.certified.all() and (frame.total_count == 216).all() and set(frame["config.seed"]) == {0, 1}
    base = ["--store", str(store.root), "results", "max-of-k", "--set", "V=6", "--set", "K=3", "--set", "d_model=8",
            "--set", "steps=50"]
    from_csv = pd.read_csv(io.StringIO(gbmi(*base).stdout))
    assert len(from_csv) == 6 and from_csv.bound.between(0, 1).all()
    from_json = pd.DataFrame(json.loads(gbmi(*base, "--format", "json").stdout))
    assert sorted(from_json.correct_count) == sorted(frame.correct_count)
    parquet = tmp_path / "r.parquet"
    assert gbmi(*base, "--format", "parquet", "--output", str(parquet)).returncode == 0
    pd.testing.assert_frame_equal(pd.read_parquet(parquet).sort_values(["model_hash", "strategy"]).reset_index(drop=True),
                                  frame.sort_values(["model_hash", "strategy"]).reset_index(drop=True),
                                  check_dtype=False)
    one = gbmi(*base[:4], "--model-hash", frame.model_hash.iloc[0][:6])
    assert len(pd.read_csv(io.StringIO(one.stdout))) == 3
    assert gbmi(*base, "--format", "parquet").returncode == 1  # binary needs --output
    none = gbmi("--store", str(store.root), "results", "max-of-k", "--preset", "max-of-5")
    assert none.returncode == 1 and "holds no results" in none.stderr


def test_explain_writes_the_mechanism_figures(tmp_path, registry, reference_model):
    import matplotlib.image

    run = gbmi("--store", str(tmp_path / "s"), "explain", "max-of-k", "--out", str(tmp_path / "fig"),
               "--strategy", SUBCUBIC)
    assert run.returncode == 0, run.stderr
    names = {f.name for f in registry.figures("max-of-k")}
    assert names == {"eqke", "eqkp", "eqke-svd", "evou", "pvou", "eupu", "proof-map", "min-gap"}
    for name in names:
        pixels = matplotlib.image.imread(tmp_path / "fig" / f"{name}.png")
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400 and pixels[..., :3].std() > 0.05, name
    figures = registry.explain("max-of-k", reference_model, names=["evou"])
    (figure,) = figures.values()
    # EVOU's copying diagonal: the heatmap's largest entry of each row is mostly on the diagonal
    data = figure.axes[0].images[0].get_array()
    assert (np.argmax(data, axis=1) == np.arange(64)).mean() > 0.5
    no_strategy = gbmi("--store", str(tmp_path / "s"), "explain", "max-of-k", "--out", str(tmp_path / "f2"))
    assert no_strategy.returncode == 0 and "need --strategy" in no_strategy.stderr
    cubic_map = registry.explain("max-of-k", reference_model, strategy="cubic", names=["proof-map"])["proof-map"]
    assert cubic_map.axes
    skipped = {}
    assert registry.explain("max-of-k", reference_model, strategy="cubic", names=["min-gap"], skipped=skipped) == {}
    assert "has no min-gap table" in skipped["min-gap"]


def test_the_prove_table_fits_120_columns(tmp_path):
    run = gbmi("--store", str(tmp_path / "s"), "prove", "max-of-k", "--strategy", "subcubic*", "--strategy", "cubic")
    assert run.returncode == 0, run.stderr
    assert max(len(line) for line in run.stdout.splitlines()) <= 120
    assert "sub:mdx/mean/mdx" in run.stdout and "--wide" in run.stderr
    wide = gbmi("--store", str(tmp_path / "s"), "prove", "max-of-k", "--strategy", SUBCUBIC, "--wide")
    assert SUBCUBIC in wide.stdout


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    stream = io.StringIO()
    reporter = LogProgress(200, "proofs", "proof", stream, interval=0.0)
    for _ in range(200):
        reporter.update(1)
    reporter.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("proofs: 1/200 (0%), ") and "left" not in lines[0]  # too early to estimate
    assert "left" not in lines[18] and "proof/s, about" in lines[19] and "left" in lines[19]  # from 10% on
    assert lines[-1].startswith("proofs: 200/200 (100%)") and "done in" in lines[-1]
    assert len(lines) == 200  # one per update at interval 0, and close() does not repeat the last
    quiet = io.StringIO()
    reporter = LogProgress(5, "models", "model", quiet, interval=1e9)
    for _ in range(5):
        reporter.update(1)
    reporter.close()
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[0]] and "5/5 (100%)" in quiet.getvalue()
    run = gbmi("prove", "max-of-k", "--strategy", "cubic", "--strategy", SUBCUBIC, GBMI_PROGRESS_INTERVAL="0")
    assert "proving: 2/2 (100%)" in run.stderr  # captured stderr is not a terminal: plain lines
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}, "GBMI_PROGRESS_INTERVAL": "0"}
    both = subprocess.run(f"{GBMI} --store {tmp_path / 's'} prove max-of-k --strategy cubic --strategy {SUBCUBIC} 2>&1",
                          shell=True, capture_output=True, text=True, env=env)
    lines = both.stdout.splitlines()  # stdout and stderr in one pipe: every line is a table row or progress
    assert all(line.startswith(("proving:", "strategy", "-", "cubic", "sub:", "(short")) for line in lines), lines
