"""Certified proofs: a numeric adversarial battery against an exact (mpmath) evaluator, and proof bundles."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import gbmi_core
from gbmi_core import lens
from gbmi_core.bundle import SUFFIX, write_bundle
from gbmi_max_of_k.brute_force import CORRECT, UNDECIDED, WRONG, _Exact, brute_force
from gbmi_max_of_k.config import MaxOfKConfig
from gbmi_max_of_k.model import paths

from .conftest import small_model, trained_model


@pytest.fixture(scope="module")
def registry():
    return gbmi_core.get_registry()


def _edit(model, fn):
    """``fn`` edits the model's canonical weights in place (``m.W_U``, ``m["blocks.0.attn.W_Q"]``, ...)."""
    with lens.editing(model) as state:
        fn(lens.Weights(state, lens.architecture(model)))
    return model


def battery():
    """Small models where rounding bites: ``(name, model)``.  V = 6, K = 3, d_model = 8 (216 inputs)."""
    def base(seed=0, **kw):
        return small_model(6, 3, d_model=8, seed=seed, **kw)

    def sharp(scale):  # pre-softmax score ranges of about 1e2 .. 1e4
        def fn(m):
            m["blocks.0.attn.W_Q"].mul_(scale)
            m["blocks.0.attn.W_K"].mul_(scale)
        return fn

    yield "sharp-1e2", _edit(base(1), sharp(6.0))
    yield "sharp-1e4", _edit(base(2), sharp(60.0))
    yield "large-logits", _edit(base(3, qk_scale=5.0), lambda m: m.W_U.mul_(2e3))
    yield "tiny", _edit(base(4), lambda m: [p.mul_(1e-12) for n, p in m.items() if ".W_" in n])
    yield "subnormal", _edit(base(5), lambda m: (m.W_E.mul_(1e-39), m.W_U.mul_(1e-3)))
    yield "huge", _edit(base(9), lambda m: (m.W_E.mul_(1e17), m.W_U.mul_(1e17)))  # logits past float32's range
    yield "duplicated-embeddings", _edit(base(6, qk_scale=3.0), lambda m: m.W_E[2].copy_(m.W_E[4]))
    yield "tied-logits", _edit(base(7, qk_scale=3.0), lambda m: m.W_U[:, 4].copy_(m.W_U[:, 5]))
    yield "symmetric-ties", _edit(base(8, qk_scale=3.0), lambda m: (m.W_U[:, 1:].copy_(m.W_U[:, 1:2].expand(-1, 5))))
    yield "hidden-ties", _edit(base(10, qk_scale=3.0), _hidden_tie)


def _hidden_tie(m):
    """Outputs 4 and 5 tie exactly on every input, though their unembedding columns differ: the residual
    stream never uses coordinate 7, the only one where the columns differ."""
    m.W_E[:, 7] = 0
    m.W_pos[:, 7] = 0
    m["blocks.0.attn.W_O"][0, :, 7] = 0
    m.W_U[:, 5] = m.W_U[:, 4]
    m.W_U[7, 5] += 1.0


BATTERY = list(battery())


@pytest.fixture(scope="module")
def exact_status():
    """Ground truth per battery model: every input decided in mpmath interval arithmetic (from 256 bits on,
    with the exact tie test), none left undecided."""
    table = {}
    for name, model in BATTERY:
        P = paths(model)
        exact = _Exact(P)
        seqs = torch.cartesian_prod(*[torch.arange(P.V)] * P.n)
        table[name] = torch.tensor([exact.classify(s.tolist()) for s in seqs])
        assert not bool((table[name] == UNDECIDED).any()), name
    return table


@pytest.mark.parametrize("name", [name for name, _ in BATTERY])
def test_battery_brute_force_is_exact_and_every_strategy_sound(registry, exact_status, name):
    model = dict(BATTERY)[name]
    truth = exact_status[name]
    exact = int((truth == CORRECT).sum())
    bound = brute_force(model)
    assert bound.certified
    assert np.isfinite(bound.extra["mean_loss"])
    assert bound.extra["undecided"] == 0  # every input decided, whatever the weights' magnitude
    assert bound.correct_count == exact
    for strategy in registry.strategies("max-of-k"):
        result = strategy.prove(model)
        assert result.certified, strategy.name
        assert result.correct_count <= exact, (name, strategy.name, result.correct_count, exact)


def test_battery_is_not_trivial(exact_status):
    """The battery exercises both outcomes and real ties (not everything right or everything wrong)."""
    assert any(int((s == CORRECT).sum()) > 0 for s in exact_status.values())
    assert int((exact_status["tied-logits"] == WRONG).sum()) > 0
    assert int((exact_status["symmetric-ties"] == CORRECT).sum()) <= 36  # only m = 0 can still be right
    seqs = torch.cartesian_prod(*[torch.arange(6)] * 3)
    tied = (seqs.amax(-1) == 4) | (seqs.amax(-1) == 5)  # the right logit ties with the other of 4, 5
    assert bool((exact_status["hidden-ties"][tied] == WRONG).all())
    assert int((exact_status["hidden-ties"][~tied] == CORRECT).sum()) > 0


def test_several_models_in_one_process_each_get_their_own_count(registry, tmp_path):
    """No cache keyed by object identity: models proved one after another (freed, their tensors' memory
    reused) get exactly the count each gets alone in a fresh process, in either order."""
    chosen = ["tied-logits", "hidden-ties", "sharp-1e2"]
    alone = {}
    for name in chosen:
        path = tmp_path / f"{name}.pt"
        torch.save(lens.canonical_state(dict(BATTERY)[name]), path)
        code = ("import json, torch, gbmi_core; from gbmi_core import lens; from gbmi_max_of_k.model import build_model; "
                "from gbmi_max_of_k.config import MaxOfKConfig; registry = gbmi_core.get_registry(); "
                "model = build_model(MaxOfKConfig(V=6, K=3, d_model=8)); "
                f"lens.load_state(model, torch.load({str(path)!r})); "
                "print(json.dumps({s.name: s.prove(model).correct_count for s in registry.strategies('max-of-k')}))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        alone[name] = json.loads(run.stdout.strip().splitlines()[-1])
    for order in (chosen, chosen[::-1]):
        for name in order:
            model = _edit(small_model(6, 3, d_model=8, seed=0), lambda m: None)  # a fresh model in between
            del model
            copy = {k: v.clone() for k, v in lens.canonical_state(dict(BATTERY)[name]).items()}
            model = lens.load_state(small_model(6, 3, d_model=8, seed=0), copy)
            for strategy in registry.strategies("max-of-k"):
                assert strategy.prove(model).correct_count == alone[name][strategy.name], (order, name, strategy.name)


def test_sharp_model_screen_does_not_lose_inputs_to_underflow():
    """Scores thousands apart: every input is decided (the old global shift left whole inputs at zero)."""
    model = _edit(small_model(8, 4, d_model=8, seed=11), lambda m: (m["blocks.0.attn.W_Q"].mul_(40.0), m["blocks.0.attn.W_K"].mul_(40.0)))
    bound = brute_force(model)
    assert bound.extra["undecided"] == 0
    assert bound.extra["rechecked_float64"] < 8**4 // 10


# -- bundles ---------------------------------------------------------------------------------------


@pytest.fixture
def bundles(registry, tmp_path):
    model = trained_model(8, 3, seed=0, steps=300)
    config = MaxOfKConfig(V=8, K=3, d_model=16, seed=0)
    written = {}
    for name in ("cubic", "subcubic--eupu-mean-query+max-diff--attn-mean-query+diff--err-max-diff"):
        strategy = registry.strategy("max-of-k", name)
        certificate = strategy.search(model)
        result = strategy.prove(model, certificate=certificate)
        written[name] = write_bundle(tmp_path / "bundles", strategy, model, config, certificate, result)
    return written


def _rewrite(path, edit):
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: np.array(data[name]) for name in data.files}
    header = json.loads(str(arrays["__bundle__"]))
    edit(header, arrays)
    arrays["__bundle__"] = np.array(json.dumps(header))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def test_bundles_check_and_tampering_is_named(registry, bundles):
    for path in bundles.values():
        assert gbmi_core.check(path, registry).agree
    cubic, subcubic = bundles["cubic"], bundles[next(n for n in bundles if n != "cubic")]

    def weights(header, arrays):
        arrays["weights/embed.W_E"][0, 0] += 0.5

    _rewrite(cubic, weights)
    result = gbmi_core.check(cubic, registry)
    assert not result.agree and "weights were changed" in result.message

    def certificate(header, arrays):
        arrays["certificate/min_gap"][...] = 1

    _rewrite(subcubic, certificate)
    result = gbmi_core.check(subcubic, registry)
    assert not result.agree and "certificate was changed" in result.message


def test_a_raised_claim_is_rejected_and_the_cli_exits_nonzero(registry, bundles):
    path = bundles["cubic"]

    def claim(header, arrays):
        claimed = header["claimed"]
        claimed["correct_count"] += 1
        claimed["accuracy_lower_bound"] = claimed["correct_count"] / claimed["total_count"]

    _rewrite(path, claim)
    result = gbmi_core.check(path, registry)
    assert not result.agree and "claimed count was not reproduced" in result.message
    folder = path.parent
    run = subprocess.run([sys.executable, "-m", "gbmi_core.cli", "check", str(folder)], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert run.stdout.count("agree") == 2 and "disagree" in run.stdout
    assert "1 of 2 bundles disagree" in run.stderr
    for bad in ["not-a-bundle"]:
        junk = folder / f"{bad}{SUFFIX}"
        junk.write_bytes(b"junk")
        run = subprocess.run([sys.executable, "-m", "gbmi_core.cli", "check", str(junk)], capture_output=True, text=True)
        assert run.returncode == 1 and "not a readable gbmi proof bundle" in run.stderr


def test_certified_verification_uses_only_costed_ops(registry):
    """Proof length stays meaningful: every op certified verification runs has a rule in the cost table."""
    from gbmi_core.flops import FlopCounter

    model = trained_model(8, 3, seed=0, steps=300)
    for name in ("cubic", "subcubic--eupu-svd-query+max-diff--attn-mean-query+diff--err-svd",
                 "subcubic--eupu-max-diff--attn-drop-average-query-per-output-logit-reasoning--err-mean+max-diff-subproduct",
                 "brute-force"):
        strategy = registry.strategy("max-of-k", name)
        certificate = strategy.search(model)
        with FlopCounter() as counter:
            strategy.spec.verify(model, certificate)
        assert dict(counter.unknown_ops) == {}, (name, dict(counter.unknown_ops))


def test_checking_several_bundles_in_one_process_judges_each_alone(registry, tmp_path):
    """`gbmi check A B ...`: each bundle is judged on its own model, in either order; an over-claim by one
    is rejected whatever was checked before it (the reported hole: a cache keyed by object identity)."""
    config = MaxOfKConfig(V=6, K=3, d_model=8)
    names = ["hidden-ties", "tied-logits", "sharp-1e2", "symmetric-ties"]
    paths = []
    for name in names:
        strategy = registry.strategy("max-of-k", "brute-force")
        model = dict(BATTERY)[name]
        result = strategy.prove(model)
        paths.append(write_bundle(tmp_path / name, strategy, model, config, strategy.search(model), result))
    for order in (paths, paths[::-1]):
        assert all(gbmi_core.check(path, registry).agree for path in order)

    def raise_claim(header, arrays):
        claimed = header["claimed"]
        claimed["correct_count"] += 1
        claimed["accuracy_lower_bound"] = claimed["correct_count"] / claimed["total_count"]

    _rewrite(paths[0], raise_claim)
    for order in (paths, paths[::-1]):
        verdicts = {path: gbmi_core.check(path, registry).agree for path in order}
        assert verdicts == {path: path != paths[0] for path in paths}


@pytest.mark.parametrize("unembed", [1.0, 5.0, 30.0, 300.0])
def test_the_mean_loss_matches_float64_when_most_inputs_are_far_from_wrong(unembed):
    """With logits scaled up, most inputs of a trained model have every wrong logit tens of nats below the
    right one: the screen takes e^(max d) as their loss instead of an exponential per output.  The mean
    matches every input's float64 loss."""
    from gbmi_max_of_k.brute_force import _FAR, _path_tables, classify_indices

    trained = trained_model(16, 4, steps=1000)
    model = lens.build(lens.architecture(trained), state={k: v.clone() for k, v in lens.canonical_state(trained).items()})
    _edit(model, lambda m: m.W_U.mul_(unembed))
    P = paths(model)
    exact = classify_indices(P, _path_tables(P), torch.arange(16**4), decide=False)[1]
    far = float((exact < 15 * math.exp(-_FAR)).double().mean())
    if unembed != 5.0:  # 5: the float32 logits leave the unshifted loss's range, and some inputs are far
        assert far > 0.99 if unembed > 1 else far == 0  # the shortcut is taken (or not) as intended
    bound = brute_force(model)
    assert bound.extra["mean_loss"] == pytest.approx(float(exact.mean()), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("in_place", [False, True])
def test_the_unshifted_loss_matches_float64_within_its_range(in_place):
    """The block loss without a shift (every ``logit · log2(e)`` within ``[-119, 99]``) and the shifted one agree
    with float64 on random blocks: logits of -80 .. 65 nats, normalisers Z of 1 .. 3, the right slot -inf."""
    from gbmi_max_of_k.brute_force import _LOG2E, _loss, _plain_loss

    generator = torch.Generator().manual_seed(0)
    rows, keys, V = 40, 7, 33
    logit = torch.rand(rows, keys, V, generator=generator, dtype=torch.float64) * 145 - 80
    Z = torch.rand(rows, keys, generator=generator, dtype=torch.float64) * 2 + 1
    m = torch.randint(0, V, (rows, keys), generator=generator)
    logit.scatter_(-1, m[..., None], torch.rand(rows, keys, 1, generator=generator, dtype=torch.float64) * 145 - 80)
    right = logit.gather(-1, m[..., None])[..., 0]
    wrong = logit.scatter(-1, m[..., None], float("-inf"))
    expected = torch.log1p((wrong - right[..., None]).exp().sum(-1))
    L = (wrong * Z[..., None]).float()  # Z · logits, as the screen makes them
    r, scale = (right * Z).float(), (_LOG2E / Z).float()
    t = ((wrong.amax(-1) - right) * 1.0).clamp(min=0).float()
    plain = _plain_loss(L.clone(), r, scale, in_place=in_place)
    shifted = _loss(L.clone(), r, scale, t, in_place=in_place)
    assert torch.allclose(plain, expected, rtol=2e-5, atol=0)
    assert torch.allclose(shifted.double(), expected, rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("scale", [40.0, 100.0, 200.0])
def test_small_blocks_computed_together_stay_exact(scale, monkeypatch):
    """Sharp attention cuts a query's rows into many small blocks, which the screen computes together (each row
    with its own block's key weights): the count equals the exact one and the mean loss float64's."""
    import gbmi_max_of_k.brute_force as bf

    def sharpen(m):
        m["blocks.0.attn.W_Q"].mul_(scale)
        m["blocks.0.attn.W_K"].mul_(scale)

    model = _edit(small_model(6, 4, d_model=8, seed=11), sharpen)
    grouped, real = [], bf._block_groups
    monkeypatch.setattr(bf, "_block_groups", lambda blocks, row_block: grouped.append(real(blocks, row_block)) or grouped[-1])
    bound = bf.brute_force(model)
    assert any(j is None for groups in grouped for _, _, j in groups)  # some group held several blocks
    P = paths(model)
    status, losses, _ = bf.classify_indices(P, bf._path_tables(P), torch.arange(6**4))
    assert bound.correct_count == int((status == CORRECT).sum())
    assert bound.extra["mean_loss"] == pytest.approx(float(losses.mean()), rel=1e-6)
