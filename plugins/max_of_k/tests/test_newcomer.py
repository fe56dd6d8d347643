"""What a new user tripped on (issue 18), each as the user met it: the command, and what it must do now."""

import json
import re

import pytest

from gbmi_core import Store

from .conftest import gbmi

SUBCUBIC = "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact"


def test_explain_with_the_cubic_strategy_draws_what_applies_and_names_what_does_not(tmp_path):
    out = tmp_path / "figures"
    run = gbmi("--store", str(tmp_path / "s"), "explain", "max-of-k", "--seed", "123", "--strategy", "cubic",
               "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert {p.name for p in out.iterdir()} == {f"{n}.png" for n in
                                              ("eqke", "eqkp", "eqke-svd", "evou", "pvou", "eupu", "proof-map")}
    assert "skipped figure min-gap: strategy 'cubic' has no min-gap table (subcubic strategies do)" in run.stderr
    only = gbmi("--store", str(tmp_path / "s"), "explain", "max-of-k", "--seed", "123", "--strategy", "cubic",
                "--figure", "min-gap", "--out", str(tmp_path / "none"))
    assert only.returncode == 1 and only.stderr.strip().endswith(
        "Error: no figure applies: strategy 'cubic' has no min-gap table (subcubic strategies do)")


def test_figures_carry_units_integer_ticks_and_the_models_identity(registry, reference_model):
    from gbmi_core.models import model_hash

    figures = registry.explain("max-of-k", reference_model, strategy=SUBCUBIC, label="seed 123")
    digest = model_hash(reference_model)
    for name, figure in figures.items():
        assert any(f"model {digest}" in t.get_text() and "seed 123" in t.get_text() for t in figure.texts), name
        images = [ax for ax in figure.axes if ax.images]
        bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
        assert len(bars) == len(images) and all(bar.get_ylabel() for bar in bars), name  # every colour bar says what
        for ax in images:
            for ticks in (ax.get_xticks(), ax.get_yticks()):  # tokens and positions: whole numbers only
                assert all(float(t).is_integer() for t in ticks), (name, ticks)
    svd = figures["eqke-svd"]
    key_side, query_side = svd.axes[1], svd.axes[2]  # the query side has its own scale (twin axis)
    assert "unit vector" in query_side.get_ylabel() and "σ1" in key_side.get_ylabel()


def test_report_says_over_how_many_seeds_it_normalised(tmp_path):
    store = ["--store", str(tmp_path / "s")]
    small = ["--set", "V=6", "--set", "K=3", "--set", "d_model=8", "--set", "steps=40"]
    assert gbmi(*store, "sweep", "max-of-k", "--seeds", "0:3", *small, "--strategies", "cubic", "--jobs", "1").returncode == 0
    assert gbmi(*store, "sweep", "max-of-k", "--seeds", "0", *small, "--strategies", "brute-force",
                "--jobs", "1").returncode == 0
    run = gbmi(*store, "report", "max-of-k", *small, "--plot", str(tmp_path / "r.png"))
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("cubic"))
    assert re.search(r"\s3\s", row) and "(n=1 of 3)" in row and "±" in row.split("(n=1 of 3")[0]
    assert "known for 1 of 3 seeds" in run.stdout
    assert max(len(line) for line in run.stdout.splitlines()) <= 120
    data = json.loads(gbmi(*store, "report", "max-of-k", *small, "--format", "json").stdout)
    cubic = next(s for s in data["strategies"] if s["strategy"] == "cubic")
    assert (cubic["seeds"], cubic["normalised_seeds"]) == (3, 1)


def test_report_plot_titles_count_the_seeds_they_show(registry, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from gbmi_core.report import collect, plot, summarise

    store = Store(tmp_path / "s")
    base = {"V": 6, "K": 3, "d_model": 8, "steps": 40}
    for seed in range(3):
        model, _ = registry.train_or_load("max-of-k", registry.make_config("max-of-k", overrides={**base, "seed": seed}),
                                          store, progress=False)
        registry.strategy("max-of-k", "cubic").prove(model, store)
        if seed == 0:
            registry.strategy("max-of-k", "brute-force").prove(model, store)
    rows = collect(registry, "max-of-k", store, registry.make_config("max-of-k", overrides=base))
    titles = []
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig

    def record(figure, *args, **kwargs):
        titles.extend(ax.get_title() for ax in figure.axes)
        return real_savefig(figure, *args, **kwargs)

    matplotlib.figure.Figure.savefig = record
    try:
        plot(rows, summarise(rows), tmp_path / "p.png")
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    assert any("normalised bound vs proof length\n(1 seed;" in t for t in titles), titles
    assert any("bound vs unexplained dimension\n(3 seeds;" in t for t in titles), titles


def _save_plain(path, **changes):
    import torch

    from gbmi_core import lens

    arch = {**dict(n_layers=1, n_heads=1, d_model=8, d_head=8, d_vocab=6, d_vocab_out=6, n_ctx=3, attn_only=True,
                   normalization_type=None, act_fn=None), **changes}
    model = lens.build(arch, seed=1)
    parameters = lens.shapes(lens.architecture(model))
    torch.save({k: v for k, v in lens.canonical_state(model).items() if k in parameters}, path)
    return path


def test_a_sweep_over_files_proves_what_it_can_and_names_what_it_skipped(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _save_plain(runs / "a.pt")
    _save_plain(runs / "b.pt", n_heads=2, d_head=4)
    (runs / "c.pt").write_bytes(b"truncated")
    _save_plain(runs / "d.pt", n_ctx=4)
    run = gbmi("--store", str(tmp_path / "s"), "sweep", "max-of-k", "--models", str(runs / "*.pt"), "--strategies",
               "cubic", "--jobs", "1")
    assert run.returncode == 1  # not everything was proved
    assert "2 models, 2 (model, strategy) pairs: 2 proved now" in run.stdout
    assert f"skipped model file {runs / 'b.pt'}: " in run.stderr and "2 attention heads" in run.stderr
    assert f"skipped model file {runs / 'c.pt'}: " in run.stderr and "corrupt" in run.stderr
    assert "2 of 4 model files skipped" in run.stderr


def test_imported_models_show_their_file_and_no_invented_training_fields(tmp_path):
    import io

    import pandas as pd

    path = _save_plain(tmp_path / "mine.pt")
    store = ["--store", str(tmp_path / "s")]
    assert gbmi(*store, "prove", "max-of-k", "--model", str(path), "--strategy", "cubic").returncode == 0
    assert gbmi(*store, "prove", "max-of-k", "--seed", "123", "--strategy", "cubic").returncode == 0
    frame = pd.read_csv(io.StringIO(gbmi(*store, "results", "max-of-k").stdout))
    mine = frame[frame.source == "imported"].iloc[0]
    assert mine.file == str(path)
    assert all(pd.isna(mine[c]) for c in frame.columns if c.startswith("config.")) and pd.isna(mine.config_hash)
    ours = frame[frame.source == "trained"].iloc[0]
    assert ours["config.seed"] == 123 and pd.isna(ours.file)
    seed_123 = pd.read_csv(io.StringIO(gbmi(*store, "results", "max-of-k", "--set", "seed=123").stdout))
    assert list(seed_123.source) == ["trained"]  # a seed filter no longer mixes in the user's model


@pytest.mark.parametrize("args, message", [
    (["prove", "max-of-k", "--model", "{tmp}"], "Error: Invalid value for '--model': File '{tmp}' is a directory. "
                                                 "(see `gbmi prove --help`)"),
    (["--store", "{file}", "list-tasks"], "Error: Invalid value for '--store': Directory '{file}' is a file. "
                                          "(see `gbmi --help`)"),
    (["check", "{tmp}/missing"], "Error: Invalid value for 'BUNDLES...': Path '{tmp}/missing' does not exist. "
                                 "(see `gbmi check --help`)"),
    (["--max-memory", "12Q", "list-tasks"], "Error: Invalid value for --max-memory: bad memory size '12Q': write a "
                                             "number of bytes or use K, M, G or T (e.g. 2G) (see `gbmi --help`)"),
])
def test_bad_arguments_are_one_line_naming_the_cause(tmp_path, args, message):
    (tmp_path / "file").write_text("")
    fill = {"tmp": str(tmp_path), "file": str(tmp_path / "file")}
    run = gbmi(*[a.format(**fill) for a in args])
    assert run.returncode == 2
    assert run.stderr.strip() == message.format(**fill)


def test_list_strategies_fits_120_columns_and_takes_short_names(tmp_path):
    listed = gbmi("list-strategies", "--task", "max-of-k")
    assert listed.returncode == 0 and max(len(line) for line in listed.stdout.splitlines()) <= 120
    short = next(line.split()[1] for line in listed.stdout.splitlines() if line.split()[1].startswith("sub:"))
    wide = gbmi("list-strategies", "--task", "max-of-k", "--wide")
    assert any(len(line) > 120 for line in wide.stdout.splitlines())
    proved = gbmi("--store", str(tmp_path / "s"), "prove", "max-of-k", "--strategy", short, "--json")
    assert proved.returncode == 0, proved.stderr
    assert json.loads(proved.stdout)[0]["strategy"].startswith("subcubic--")


def test_the_notebook_and_tox_are_installed_where_the_docs_say(tmp_path):
    import pathlib
    import sys
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[3]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"nbclient", "ipykernel"} <= {re.split(r"[<>=\[]", d)[0] for d in extras["notebook"]}
    assert (pathlib.Path(sys.prefix) / "bin" / "tox").exists()  # CONTRIBUTING says .venv/bin/tox
