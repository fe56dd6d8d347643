"""Certified brute force: exact against an independent mpmath evaluation, on models where rounding bites."""

import numpy as np
import pytest
import torch
from mpmath import iv

from gbmi_core import TooLarge, lens
from gbmi_induction.brute_force import _point, brute_force, screen_allowance
from gbmi_induction.model import all_inputs, build_model, label, tables
from gbmi_induction.config import InductionConfig

from .conftest import random_model, trained_model

CORRECT, WRONG, UNKNOWN = 1, 0, -1


def _mp(tensor):
    return [[iv.mpf(float(v)) for v in row] for row in tensor.detach().double().tolist()]


def exact_status(model, X):
    """Each input's status in exact arithmetic, from the HookedTransformer's own weights (float32, so exact in
    mpmath), by 200-bit interval arithmetic; outputs whose unembedding column and bias tie the answer's
    exactly are exact ties (wrong)."""
    iv.prec = 200
    w = lens.Weights.of(model)
    W_E, W_pos, W_U = _mp(w.W_E), _mp(w.W_pos), _mp(w.W_U)
    b_U = [iv.mpf(float(v)) for v in w.b_U.tolist()]
    layers = []
    for layer, scale in enumerate(w.attn_scale):
        a = {leaf: w[f"blocks.{layer}.attn.{leaf}"] for leaf in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")}
        layers.append(dict(Q=_mp(a["W_Q"][0]), K=_mp(a["W_K"][0]), V=_mp(a["W_V"][0]), O=_mp(a["W_O"][0]),
                           bQ=[iv.mpf(float(v)) for v in a["b_Q"][0].tolist()],
                           bK=[iv.mpf(float(v)) for v in a["b_K"][0].tolist()],
                           bV=[iv.mpf(float(v)) for v in a["b_V"][0].tolist()],
                           bO=[iv.mpf(float(v)) for v in a["b_O"].tolist()], scale=iv.mpf(float(scale))))

    def vecmat(x, M, b=None):
        out = [sum((x[r] * M[r][c] for r in range(len(x))), iv.mpf(0)) for c in range(len(M[0]))]
        return [o + bb for o, bb in zip(out, b)] if b is not None else out

    def attend(layer, residual, queries):
        out = []
        keys = [vecmat(r, layer["K"], layer["bK"]) for r in residual]
        values = [vecmat(r, layer["V"], layer["bV"]) for r in residual]
        for qpos in queries:
            q = vecmat(residual[qpos], layer["Q"], layer["bQ"])
            scores = [sum((qi * ki for qi, ki in zip(q, keys[k])), iv.mpf(0)) / layer["scale"] for k in range(qpos + 1)]
            top = max(float(s.a) for s in scores)
            weights = [iv.exp(s - top) for s in scores]
            total = sum(weights, iv.mpf(0))
            mixed = [sum((weights[k] * values[k][h] for k in range(qpos + 1)), iv.mpf(0)) / total
                     for h in range(len(values[0]))]
            out.append([o + b for o, b in zip(vecmat(mixed, layer["O"]), layer["bO"])])
        return out

    tied = (w.W_U[:, :, None] == w.W_U[:, None, :]).all(0) & (w.b_U[:, None] == w.b_U[None, :])
    status = []
    for x in X.tolist():
        n = len(x)
        residual = [[a + b for a, b in zip(W_E[t], W_pos[p])] for p, t in enumerate(x)]
        write = attend(layers[0], residual, range(n))
        residual = [[a + b for a, b in zip(r, w)] for r, w in zip(residual, write)]
        final = [a + b for a, b in zip(residual[-1], attend(layers[1], residual, [n - 1])[0])]
        logit = vecmat(final, W_U, b_U)
        i = x[: n - 2].index(x[-1])
        answer = x[i + 1]
        gaps = [logit[answer] - logit[o] for o in range(len(logit)) if o != answer]
        others = [o for o in range(len(logit)) if o != answer]
        if any(bool(tied[answer, o]) for o in others) or any(g.b <= 0 for g in gaps):
            status.append(WRONG)
        elif all(g.a > 0 for g in gaps):
            status.append(CORRECT)
        else:
            status.append(UNKNOWN)
    return np.array(status)


def _edit(model, fn):
    """``fn`` edits the model's canonical weights in place (``m.W_U``, ``m["blocks.0.attn.W_Q"]``, ...)."""
    with lens.editing(model) as state:
        fn(lens.Weights(state, lens.architecture(model)))
    return model


def battery():
    """Small models where rounding bites: d = 5, n = 4 (120 inputs), d_model 6, d_head 3."""
    def base(seed, **kw):
        return random_model(5, 4, seed=seed, d_model=6, d_head=3, **kw)

    yield "sharp-1e2", base(1, qk_scale=6.0, scale=2.0)
    yield "sharp-1e4", base(2, qk_scale=60.0, scale=2.0)
    yield "large-logits", _edit(base(3, qk_scale=3.0), lambda m: m.W_U.mul_(2e3))
    yield "tiny", _edit(base(4), lambda m: [p.mul_(1e-12) for n, p in m.items() if p.dtype.is_floating_point])
    yield "subnormal", _edit(base(5), lambda m: (m.W_E.mul_(1e-39), m.W_pos.mul_(1e-39)))
    yield "huge", _edit(base(9), lambda m: (m.W_E.mul_(1e15), m.W_U.mul_(1e15)))
    yield "duplicated-embeddings", _edit(base(6, qk_scale=3.0), lambda m: m.W_E[2].copy_(m.W_E[4]))
    yield "tied-logits", _edit(base(7, qk_scale=3.0), lambda m: m.W_U[:, 4].copy_(m.W_U[:, 1]))
    yield "biases", base(8, qk_scale=3.0, scale=2.0, biases=True)


BATTERY = list(battery())


@pytest.fixture(scope="module")
def truth():
    return {name: exact_status(model, all_inputs(5, 4)) for name, model in BATTERY}


@pytest.mark.parametrize("name", [name for name, _ in BATTERY])
def test_battery_brute_force_is_exact_and_every_strategy_sound(registry, truth, name):
    model = dict(BATTERY)[name]
    status = truth[name]
    correct, unknown = int((status == CORRECT).sum()), int((status == UNKNOWN).sum())
    bound = brute_force(model)
    assert bound.certified and np.isfinite(bound.extra["mean_loss"]) or name == "huge"
    assert correct - bound.extra["undecided"] <= bound.correct_count <= correct + unknown
    for strategy in registry.strategies("induction"):
        result = strategy.prove(model)
        assert result.certified, strategy.name
        assert result.correct_count <= correct + unknown, (name, strategy.name, result.correct_count, correct)


def test_tied_logits_are_never_counted(truth):
    model = dict(BATTERY)["tied-logits"]
    status = truth["tied-logits"]
    answer = label(all_inputs(5, 4))
    assert (status[(answer == 4).numpy() | (answer == 1).numpy()] == WRONG).all()
    assert brute_force(model).correct_count <= int((status == CORRECT).sum())


@pytest.mark.parametrize("make", [lambda: trained_model(8, 5), lambda: random_model(7, 5, seed=2, scale=3.0),
                                  lambda: random_model(6, 6, seed=5, qk_scale=4.0, biases=True)])
def test_brute_force_agrees_with_the_float64_hooked_transformer(make):
    model = make()
    d, n = model.cfg.d_vocab, model.cfg.n_ctx
    X = all_inputs(d, n)
    with torch.no_grad():
        logits = model.to(torch.float64)(X)[:, -1]
    model.float()
    answer = label(X)
    right = logits.gather(1, answer[:, None])[:, 0]
    margin = right - logits.scatter(1, answer[:, None], float("-inf")).amax(1)
    bound = brute_force(model)
    assert bound.extra["undecided"] == 0
    assert bound.correct_count == int((margin > 0).sum())
    T = tables(model)
    assert 0 < screen_allowance(T, _point(T, torch.float64)) < screen_allowance(T)  # float32: maybe inf


def test_brute_force_refuses_what_it_cannot_enumerate():
    model = build_model(InductionConfig(d=64, n=8, d_model=8, d_head=4))
    with pytest.raises(TooLarge, match="infeasible"):
        brute_force(model)


def test_float32_exp_is_within_the_screens_assumed_ulps():
    """The screen assumes float32 ``exp`` is within EXP32_ULPS ulps (plus the underflow allowance)."""
    import mpmath

    from gbmi_induction.brute_force import PRECISIONS

    u, eta, ulps = PRECISIONS[torch.float32]
    x = torch.cat([torch.linspace(-104, 0, 20001), -torch.rand(20000, generator=torch.Generator().manual_seed(0)) * 30,
                   torch.tensor([0.0, -1e-30, -87.3, -88.7, -103.9])]).float()
    y = x.exp()
    mpmath.mp.prec = 100
    for xi, yi in zip(x.tolist(), y.tolist()):
        exact = mpmath.exp(mpmath.mpf(xi))
        assert abs(mpmath.mpf(yi) - exact) <= exact * ulps * 2 * u + eta, xi


def test_the_screens_threshold_is_never_below_its_allowance():
    from gbmi_induction.brute_force import _threshold

    for allowance in np.random.default_rng(0).uniform(1e-9, 10, 2000).tolist() + [1e-30, 3.19867939263057]:
        assert float(_threshold(allowance, torch.float32)) >= allowance
        assert float(_threshold(allowance, torch.float64)) >= allowance


@pytest.mark.parametrize("name", [name for name, _ in BATTERY])
def test_the_core_generic_brute_force_agrees_exactly(truth, name):
    """The core's brute force for any model (intervals, then arb balls) counts what ours counts."""
    from gbmi_core.brute_force import count_correct

    model = dict(BATTERY)[name]
    X = all_inputs(5, 4)
    correct, total, counts = count_correct(model, [(X, label(X))])
    ours = brute_force(model)
    assert total == ours.total_count
    assert int((truth[name] == CORRECT).sum()) - counts["undecided"] <= correct <= int((truth[name] != WRONG).sum())
    if counts["undecided"] == 0 and ours.extra["undecided"] == 0:
        assert correct == ours.correct_count
