"""Modular addition: the task, its models, deterministic training, and the certified brute force."""

import json
import os
import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch

import gbmi_core
from gbmi_core import ModelRefused, lens
from gbmi_modular_arithmetic.config import PRESETS, ModularConfig
from gbmi_modular_arithmetic.model import build_model, check_model, last_logits, pairs, tokens_of
from gbmi_modular_arithmetic.train import split, train

GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")
TINY = ModularConfig(p=7, d_model=16, n_heads=2, d_head=8, d_mlp=24, train_fraction=0.6, lr=3e-3, steps=150)


@pytest.fixture(scope="module")
def registry():
    return gbmi_core.get_registry()


def forward_correct(model, p, eq_token=True):
    """``(right, near ties)``: what the TransformerLens model's own float32 forward gets right, and how many
    inputs have a margin too small (1e-4) for float32 to be trusted on them."""
    ab = pairs(p)
    with torch.no_grad():
        logits = model(tokens_of(ab, p, eq_token))[:, -1]
    answer = (ab[:, 0] + ab[:, 1]) % p
    right = logits.gather(1, answer[:, None])[:, 0]
    margin = right - logits.scatter(1, answer[:, None], float("-inf")).amax(-1)
    return int((margin > 0).sum()), int((margin.abs() < 1e-4).sum())


def test_presets_and_plugin_discovery(registry):
    assert registry.task("modular-arithmetic").name == "modular-arithmetic"
    for name, overrides in PRESETS.items():
        config = ModularConfig(**overrides)
        assert config.d_vocab == config.p + config.eq_token and config.n_ctx == 2 + config.eq_token
    assert ModularConfig(**PRESETS["pizza"]).attention == "uniform"
    assert {s.name for s in registry.strategies("modular-arithmetic")} == {
        "brute-force", "factored", "low-rank-8", "low-rank-12", "low-rank-16"}


def test_the_forward_used_in_training_is_the_models_own():
    model = build_model(TINY)
    tokens = tokens_of(pairs(7), 7, True)
    torch.testing.assert_close(last_logits(lens.Weights.of(model), tokens), model(tokens)[:, -1].detach(),
                               rtol=1e-5, atol=1e-5)


def test_training_is_deterministic_and_uniform_attention_stays_uniform():
    first, second = train(TINY, progress=False), train(TINY, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(lens.canonical_state(first.model).values(),
                                                  lens.canonical_state(second.model).values()))
    assert first.metrics["steps"] <= 150 and 0 <= first.metrics["eval_accuracy"] <= 1
    train_ab, test_ab = split(TINY)
    assert len(train_ab) + len(test_ab) == 49 and len(train_ab) == round(0.6 * 49)
    pizza = ModularConfig(p=7, eq_token=False, attention="uniform", d_model=16, n_heads=2, d_head=8, d_mlp=24,
                          steps=30)
    w = lens.Weights.of(train(pizza, progress=False).model)
    assert not w.W_Q.any() and not w.W_K.any() and not w.b_Q.any()


@pytest.mark.parametrize("eq_token", [True, False])
def test_brute_force_counts_what_the_forward_counts(registry, eq_token):
    config = ModularConfig(p=11, eq_token=eq_token, d_model=16, n_heads=2, d_head=8, d_mlp=32, seed=3)
    model = build_model(config)
    g = torch.Generator().manual_seed(0)
    with lens.editing(model) as w:  # biases too, and a sharper attention
        for name, value in w.items():
            if value.dtype.is_floating_point and not name.endswith("IGNORE"):
                value.add_(torch.randn(value.shape, generator=g) * 0.3)
    bound = registry.strategy("modular-arithmetic", "brute-force").prove(model)
    assert bound.certified and bound.total_count == 121
    right, near = forward_correct(model, 11, eq_token)
    assert abs(bound.correct_count - right) <= near and 0 < right < 121


@pytest.mark.parametrize("fields", [{"normalization_type": "LN", "act_fn": "gelu"},
                                    {"normalization_type": "LNPre", "act_fn": "gelu_new", "n_layers": 2}])
def test_other_architectures_of_the_family_are_proved(registry, fields):
    arch = {"n_layers": 1, "n_heads": 2, "d_model": 16, "d_head": 8, "d_mlp": 32, "d_vocab": 8, "d_vocab_out": 7,
            "n_ctx": 3, "attn_only": False, "act_fn": "relu", "normalization_type": None,
            "positional_embedding_type": "standard", **fields}
    model = lens.build(arch, seed=1)
    check_model(model)
    bound = registry.strategy("modular-arithmetic", "brute-force").prove(model)
    right, near = forward_correct(model, 7)
    assert abs(bound.correct_count - right) <= near


def test_models_that_do_not_fit_are_refused():
    arch = {"n_layers": 1, "n_heads": 1, "d_model": 8, "d_head": 8, "d_mlp": 8, "d_vocab": 9, "d_vocab_out": 7,
            "n_ctx": 3, "attn_only": False, "act_fn": "relu", "normalization_type": None,
            "positional_embedding_type": "standard"}
    with pytest.raises(ModelRefused, match="9 input tokens for 7 outputs"):
        check_model(lens.build(arch, seed=0))
    with pytest.raises(ModelRefused, match="context is 4 positions"):
        check_model(lens.build({**arch, "n_ctx": 4, "d_vocab": 8}, seed=0))
    with pytest.raises(ModelRefused, match="activation is 'silu'"):
        check_model(lens.build({**arch, "d_vocab": 8, "act_fn": "silu"}, seed=0))


def test_cli_trains_and_proves(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    args = ["--store", str(tmp_path / "store"), "prove", "modular-arithmetic", "--preset", "small", "--set", "p=7",
            "--set", "steps=100", "--json"]
    run = subprocess.run([GBMI, *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    results = {r["strategy"]: r for r in json.loads(run.stdout)}
    assert len(results) == 5 and all(r["total_count"] == 49 and r["certified"] for r in results.values())
    assert all(r["correct_count"] <= results["brute-force"]["correct_count"] for r in results.values())


def test_the_plugin_imports_only_the_core_public_api():
    import ast
    import pathlib

    import gbmi_modular_arithmetic

    for path in pathlib.Path(gbmi_modular_arithmetic.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                assert not name.startswith(("gbmi_max_of_k", "gbmi_induction", "gbmi_core._")), (path.name, name)


def _random(p=11, eq_token=True, seed=3, act_fn="relu", scale=0.3):
    config = ModularConfig(p=p, eq_token=eq_token, d_model=16, n_heads=2, d_head=8, d_mlp=32, seed=seed, act_fn=act_fn)
    model = build_model(config)
    g = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:  # every weight and bias moved
        for name, value in w.items():
            if value.dtype.is_floating_point and not name.endswith("IGNORE"):
                value.add_(torch.randn(value.shape, generator=g) * scale)
    return model


@pytest.fixture(scope="module")
def small_trained():
    return train(ModularConfig(**PRESETS["small"]), progress=False).model


@pytest.mark.parametrize("kind", ["random", "no-eq", "gelu", "sharp", "trained"])
def test_every_compact_strategy_is_sound_and_factored_is_exact(registry, kind, small_trained):
    model = {"random": lambda: _random(), "no-eq": lambda: _random(eq_token=False, seed=4),
             "gelu": lambda: _random(act_fn="gelu_new", seed=5), "sharp": lambda: _random(scale=2.0, seed=6),
             "trained": lambda: small_trained}[kind]()
    exact = registry.strategy("modular-arithmetic", "brute-force").prove(model)
    results = {s.name: s.prove(model) for s in registry.strategies("modular-arithmetic")}
    for name, result in results.items():
        assert result.certified and result.total_count == exact.total_count, name
        assert result.correct_count <= exact.correct_count, name
    if kind in ("random", "no-eq", "trained"):  # nothing approximated: the count is brute force's
        assert results["factored"].correct_count == exact.correct_count
    if kind == "trained":  # the grokked model's readout is low-rank, so the short proofs are tight too
        assert exact.correct_count == 23 * 23
        assert results["low-rank-16"].correct_count >= 0.9 * 23 * 23
        assert results["factored"].flops < exact.flops / 3


def test_any_basis_is_sound_and_a_malformed_one_is_rejected(registry, small_trained):
    import numpy as np

    from gbmi_core import Certificate, CertificateRejected
    from gbmi_core.models import model_hash

    strategy = registry.strategy("modular-arithmetic", "low-rank-8")
    exact = registry.strategy("modular-arithmetic", "brute-force").prove(small_trained).correct_count
    for basis in (np.zeros((8, 23)), np.random.default_rng(0).normal(size=(8, 23)) * 1e6, np.zeros((0, 23))):
        bound = strategy.prove(small_trained, certificate=Certificate(strategy.name, model_hash(small_trained), {"basis": basis}, {}))
        assert bound.correct_count <= exact
    for basis in (np.zeros((9, 23)), np.zeros((8, 22)), np.full((8, 23), np.nan)):
        with pytest.raises(CertificateRejected):
            strategy.prove(small_trained, certificate=Certificate(strategy.name, model_hash(small_trained), {"basis": basis}, {}))


def test_the_compact_proofs_refuse_what_they_do_not_model(registry):
    arch = {"n_layers": 1, "n_heads": 2, "d_model": 16, "d_head": 8, "d_mlp": 32, "d_vocab": 8, "d_vocab_out": 7,
            "n_ctx": 3, "attn_only": False, "act_fn": "relu", "normalization_type": "LN",
            "positional_embedding_type": "standard"}
    with pytest.raises(ModelRefused, match="no LayerNorm"):
        registry.strategy("modular-arithmetic", "factored").prove(lens.build(arch, seed=0))


def test_training_trains_every_parameter_whatever_the_transformer_lens_version():
    """4.x keeps b_U as a buffer; our loop trains it anyway, so both versions train the same weights (the
    hash below is pinned under both)."""
    from gbmi_core.models import model_hash

    trained = train(TINY, progress=False).model
    assert lens.Weights.of(trained).b_U.abs().sum() > 0
    assert model_hash(trained) == "8aa86cdaa063fc19"


def test_explain_draws_the_mechanism_and_the_proof_map(tmp_path, small_trained, registry):
    from gbmi_modular_arithmetic import figures

    power, p = figures._spectrum(small_trained)
    assert p == 23 and len(power) == 12 and power[1:].max() > 5 * np.median(power[1:])  # a few key frequencies
    drawn = registry.explain("modular-arithmetic", small_trained, strategy="low-rank-16")
    assert set(drawn) == {"fourier", "neurons", "neurons-by-sum", "logits-by-sum", "proof-map"}
    run = subprocess.run([GBMI, "--store", str(tmp_path / "s"), "explain", "modular-arithmetic", "--preset", "small",
                          "--set", "p=7", "--set", "steps=50", "--strategy", "brute-force", "--out", str(tmp_path / "f")],
                         capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if not k.startswith("GBMI_")})
    assert run.returncode == 0, run.stderr
    assert "skipped figure proof-map" in run.stderr + run.stdout
    assert len(list((tmp_path / "f").glob("*.png"))) == 4


def test_subtraction_is_its_own_task_and_every_proof_reads_its_label(registry):
    """The same weights have different counts on a + b and a - b: each task's strategies count against their
    own label (brute force against the float forward, the compact ones at most brute force, factored exactly)."""
    from gbmi_modular_arithmetic.model import label

    assert {s.name for s in registry.strategies("modular-subtraction")} == {
        "brute-force", "factored", "low-rank-8", "low-rank-12", "low-rank-16"}
    ab = pairs(11)
    assert label(ab[:, 0], ab[:, 1], 11, "subtract").tolist() == [(a - b) % 11 for a, b in ab.tolist()]
    with pytest.raises(ValueError, match="unknown operation"):
        label(ab[:, 0], ab[:, 1], 11, "multiply")
    model = _random(seed=8, scale=0.6)
    tokens = tokens_of(ab, 11, True)
    with torch.no_grad():
        predicted = model(tokens)[:, -1].argmax(-1)
    counts = {}
    for task, answer in (("modular-arithmetic", (ab[:, 0] + ab[:, 1]) % 11),
                         ("modular-subtraction", (ab[:, 0] - ab[:, 1]) % 11)):
        results = {s.name: s.prove(model) for s in registry.strategies(task)}
        exact = results["brute-force"].correct_count
        assert exact == int((predicted == answer).sum())  # random weights: no float32 near-ties at this scale
        assert results["factored"].correct_count == exact
        assert all(r.correct_count <= exact for r in results.values())
        counts[task] = exact
    assert counts["modular-arithmetic"] != counts["modular-subtraction"]


def test_the_subtraction_trainer_fits_a_minus_b(registry):
    """The subtraction task's trainer fits its training pairs on ``a - b`` (memorised in 300 steps), which the
    addition labels of the same pairs are not."""
    config = attrs.evolve(TINY, steps=300)
    trained = registry.trainer("modular-subtraction").train(config, progress=False)
    train_ab, _ = split(config)
    with torch.no_grad():
        predicted = trained.model(tokens_of(train_ab, 7, True))[:, -1].argmax(-1)
    assert (predicted == (train_ab[:, 0] - train_ab[:, 1]) % 7).float().mean() == 1.0
    assert (predicted == (train_ab[:, 0] + train_ab[:, 1]) % 7).float().mean() < 0.5
