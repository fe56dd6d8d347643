"""gbmi_core.evaluate and gbmi_core.brute_force: certified logits of any small TransformerLens model, against
an independent mpmath forward pass (written here from TransformerLens' definitions), and exact decisions."""

import math

import flint
import mpmath
import pytest
import torch

from gbmi_core import ModelRefused, lens
from gbmi_core.brute_force import brute_force_strategy, count_correct
from gbmi_core.certified import Interval
from gbmi_core.evaluate import Exact, Network, decide, logits, separate

mpmath.mp.prec = 300


def arch_of(norm=None, act="relu", attn_only=False, n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=7, n_ctx=4,
            d_mlp=12):
    return {"n_layers": n_layers, "n_heads": n_heads, "d_model": d_model, "d_head": d_head, "d_vocab": d_vocab,
            "d_vocab_out": d_vocab, "n_ctx": n_ctx, "attn_only": attn_only, "normalization_type": norm,
            "positional_embedding_type": "standard", "act_fn": None if attn_only else act, "d_mlp": d_mlp}


def model_of(arch, seed=0, kind="random"):
    """A model of ``arch`` with every parameter (biases, LayerNorm weights) random: ``random`` (unit scale),
    ``sharp`` (attention scores and logits in the hundreds), ``tiny`` (1e-150), ``huge`` (embeddings and
    unembedding of 1e6).  TransformerLens 4.3 cannot build ``gelu_fast``: there the weights are built with
    ``gelu_new`` (the same shapes) and given as :class:`~gbmi_core.lens.Weights` of the ``gelu_fast`` model."""
    if arch["act_fn"] == "gelu_fast" and lens.version()[0] >= 4:
        model = model_of({**arch, "act_fn": "gelu_new"}, seed, kind)
        return lens.Weights(lens.canonical_state(model), {**lens.architecture(model), "act_fn": "gelu_fast"})
    model = lens.build(arch, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:
        for name, value in w.items():
            if not value.dtype.is_floating_point or name.endswith("IGNORE"):
                continue
            value.copy_(torch.randn(value.shape, generator=g) * (0.5 if ".b" in name else 1.0))
            leaf = name.rsplit(".", 1)[1]
            if kind == "sharp" and leaf in ("W_Q", "W_K", "W_U"):
                value.mul_(6.0)
            if kind == "tiny":
                value.mul_(1e-150)
            if kind == "huge" and leaf in ("W_E", "W_pos", "W_U"):
                value.mul_(1e6)
    return model


# -- an independent forward pass in mpmath, from TransformerLens' definitions -------------------------

def mp_logits(net, tokens):
    """Last-position logits of one input in 300-bit mpmath (a reference, not certified: its own rounding
    is ~1e-90 relative, far below the enclosures' widths)."""
    a, W = net.arch, {k: v.tolist() for k, v in net.weights.items()}
    mpf = mpmath.mpf
    n, D = len(tokens), a["d_model"]

    def matvec(x, M):  # x [D_in], M [D_in][D_out]
        return [sum((x[i] * mpf(M[i][j]) for i in range(len(x))), mpf(0)) for j in range(len(M[0]))]

    def norm(x, prefix):
        if a["normalization_type"] is None:
            return x
        mean = sum(x, mpf(0)) / len(x)
        c = [v - mean for v in x]
        s = mpmath.sqrt(sum((v * v for v in c), mpf(0)) / len(x) + mpf(a["eps"]))
        y = [v / s for v in c]
        if a["normalization_type"] == "LN":
            y = [v * mpf(wv) + mpf(bv) for v, wv, bv in zip(y, W[prefix + ".w"], W[prefix + ".b"])]
        return y

    def act(x):
        name = a["act_fn"]
        if name == "relu":
            return max(x, mpf(0))
        if name == "gelu":
            return x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2
        c = mpf("0.044715")
        if name == "gelu_new":
            return x * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + c * x**3))) / 2
        return x * (1 + mpmath.tanh(x * mpf("0.7978845608") * (1 + c * x * x))) / 2

    X = [[mpf(W["embed.W_E"][t][d]) + mpf(W["pos_embed.W_pos"][i][d]) for d in range(D)] for i, t in enumerate(tokens)]
    for layer, scale in enumerate(net.scales):
        p = f"blocks.{layer}."
        H = [norm(x, p + "ln1") for x in X]
        out = [[mpf(v) for v in W[p + "attn.b_O"]] for _ in range(n)]
        for h in range(a["n_heads"]):
            def proj(x, which):
                return [v + mpf(b) for v, b in zip(matvec(x, W[p + f"attn.W_{which}"][h]), W[p + f"attn.b_{which}"][h])]
            q, k, v = [proj(x, "Q") for x in H], [proj(x, "K") for x in H], [proj(x, "V") for x in H]
            for i in range(n):
                s = [sum((qa * kb for qa, kb in zip(q[i], k[j])), mpf(0)) / mpf(scale) for j in range(i + 1)]
                e = [mpmath.exp(x - max(s)) for x in s]
                z = [sum((e[j] * v[j][c] for j in range(i + 1)), mpf(0)) / sum(e) for c in range(len(v[0]))]
                out[i] = [o + d for o, d in zip(out[i], matvec(z, W[p + "attn.W_O"][h]))]
        X = [[x + o for x, o in zip(xs, os)] for xs, os in zip(X, out)]
        if not a["attn_only"]:
            for i in range(n):
                h = norm(X[i], p + "ln2")
                post = [act(v + mpf(b)) for v, b in zip(matvec(h, W[p + "mlp.W_in"]), W[p + "mlp.b_in"])]
                X[i] = [x + o + mpf(b) for x, o, b in zip(X[i], matvec(post, W[p + "mlp.W_out"]), W[p + "mlp.b_out"])]
    final = norm(X[-1], "ln_final")
    return [v + mpf(b) for v, b in zip(matvec(final, W["unembed.W_U"]), W["unembed.b_U"])]


def encloses(enclosure: Interval, row: int, values) -> bool:
    return all(mpmath.mpf(float(enclosure.lo[row, j])) <= v <= mpmath.mpf(float(enclosure.hi[row, j]))
               for j, v in enumerate(values))


def ball_holds(ball, value) -> bool:
    """Whether an arb ball holds an mpmath value (its midpoint and radius read exactly; slack 1e-80 relative,
    the reference's own rounding)."""
    mid = mpmath.mpf(tuple(int(v) for v in ball.mid().man_exp()))
    rad = mpmath.mpf(tuple(int(v) for v in ball.rad().man_exp()))
    return abs(mid - value) <= rad + abs(value) * mpmath.mpf(10) ** -80


CASES = [(norm, act, kind) for norm in (None, "LN", "LNPre") for act in ("relu", "gelu", "gelu_new", "gelu_fast")
         for kind in ("random",)] + [
    ("LN", "gelu", "sharp"), (None, "relu", "sharp"), ("LNPre", "gelu_new", "sharp"), ("LN", "relu", "tiny"),
    (None, "gelu", "tiny"), ("LN", "gelu_fast", "huge"), (None, "relu", "huge"), (None, "attn-only", "random"),
    ("LN", "attn-only", "sharp")]


@pytest.mark.parametrize("norm, act, kind", CASES)
def test_enclosures_hold_the_mpmath_logits(norm, act, kind):
    arch = arch_of(norm, act, attn_only=act == "attn-only")
    net = Network.of(model_of(arch, seed=CASES.index((norm, act, kind)), kind=kind))
    tokens = torch.tensor([[0, 1, 2, 3], [6, 6, 6, 6], [3, 0, 5, 1], [2, 4, 4, 0]])
    enclosure = logits(net, tokens)
    exact = Exact(net)
    for row in range(len(tokens)):
        reference = mp_logits(net, tokens[row].tolist())
        assert encloses(enclosure, row, reference), (row, enclosure.lo[row], [float(v) for v in reference])
        flint.ctx.prec = 128
        try:
            balls = exact.logits(tokens[row].tolist())  # the arb stage encloses it too
        finally:
            flint.ctx.prec = 53
        assert all(ball_holds(b, v) for b, v in zip(balls, reference))
    if kind in ("random", "sharp"):  # and narrow (LayerNorm of a nearly flat residual widens them most)
        scale = (enclosure.hi.abs() + 1).max()
        assert float((enclosure.hi - enclosure.lo).max() / scale) < 1e-4


def test_shorter_inputs_and_one_layer_and_no_scale():
    arch = {**arch_of("LN", "gelu", n_layers=1, n_heads=3), "use_attn_scale": False}
    net = Network.of(model_of(arch, seed=3))
    assert net.scales == [1.0]
    tokens = torch.tensor([[4, 2], [1, 1]])
    enclosure = logits(net, tokens)
    for row in range(2):
        assert encloses(enclosure, row, mp_logits(net, tokens[row].tolist()))


def test_the_float_program_is_transformer_lens_forward():
    model = model_of(arch_of("LN", "gelu_new"), seed=5)
    tokens = torch.randint(0, 7, (64, 4), generator=torch.Generator().manual_seed(0))
    plain = logits(Network.of(model), tokens, certified=False)
    torch.testing.assert_close(plain.lo.float(), model(tokens)[:, -1].detach(), rtol=1e-4, atol=1e-4)


def test_decisions_separate_and_ties_count_as_not_correct():
    net = Network.of(model_of(arch_of(None, "gelu"), seed=1))
    with torch.no_grad():
        net.weights["unembed.W_U"][:, 2] = net.weights["unembed.W_U"][:, 3]
        net.weights["unembed.b_U"][2] = net.weights["unembed.b_U"][3]
    tokens = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4], [5, 5, 5, 5]])
    truth = [mp_logits(net, t.tolist()) for t in tokens]
    labels = torch.tensor([max(range(7), key=lambda j: l[j]) for l in truth])
    ok, counts = decide(net, tokens, labels)
    for row, l in enumerate(truth):
        right = labels[row]
        assert bool(ok[row]) == all(l[right] > l[j] for j in range(7) if j != right)
    tied = torch.full((3,), 2)  # outputs 2 and 3 have equal logits on every input: never strictly right
    ok, counts = decide(net, tokens, tied)
    assert not ok.any()
    assert counts["by_intervals"] + counts["by_arb"] + counts["undecided"] == 3
    correct, wrong = separate(Interval.exact(torch.tensor([[1.0, 1.0]], dtype=torch.float64)), torch.tensor([0]))
    assert not correct.any() and wrong.all()  # an exact tie is decided wrong by the intervals themselves


def test_unsupported_models_are_refused_with_reasons():
    with pytest.raises(ModelRefused, match="activation is 'silu'"):
        Network.of(lens.build(arch_of(None, "silu"), seed=0))
    with pytest.raises(ModelRefused, match="normalization_type is 'RMS'"):
        Network.of(lens.build(arch_of("RMS", "relu"), seed=0))
    model = lens.build(arch_of(None, "relu"), seed=0)
    with lens.editing(model) as w:
        w["blocks.0.mlp.W_in"][0, 0] = float("nan")
    with pytest.raises(ModelRefused, match="mlp.W_in holds NaN"):
        Network.of(model)


# -- the generic brute force -----------------------------------------------------------------------

def _all_sequences(V, n, batch=500):
    total = V**n
    for start in range(0, total, batch):
        index = torch.arange(start, min(total, start + batch))
        tokens = torch.stack([(index // V**(n - 1 - i)) % V for i in range(n)], 1)
        yield tokens, tokens.max(-1).values


@pytest.mark.parametrize("norm, act", [("LN", "gelu"), (None, "relu"), ("LNPre", "gelu_fast")])
def test_brute_force_counts_what_the_mpmath_forward_counts(norm, act):
    model = model_of(arch_of(norm, act, n_layers=1, d_vocab=4, n_ctx=3), seed=7, kind="sharp")
    net = Network.of(model)
    correct, total, counts = count_correct(model, _all_sequences(4, 3, batch=17))
    expected = 0
    for tokens, labels in _all_sequences(4, 3):
        for t, m in zip(tokens.tolist(), labels.tolist()):
            l = mp_logits(net, t)
            expected += all(l[m] > l[j] for j in range(4) if j != m)
    assert (correct, total) == (expected, 64) and counts["undecided"] == 0


def test_a_registered_brute_force_checks_its_count():
    spec = brute_force_strategy("toy", batches=lambda model: _all_sequences(4, 3), count=lambda model: 4**3)
    model = model_of(arch_of(None, "relu", n_layers=1, d_vocab=4, n_ctx=3), seed=2)
    bound = spec.verify(model, None)
    assert bound.total_count == 64 and bound.certified and spec.unexplained_dimension(model) == 64 * 4
    short = brute_force_strategy("toy", batches=lambda model: _all_sequences(4, 2), count=lambda model: 4**3)
    with pytest.raises(ValueError, match="held 16 inputs, not the 64"):
        short.verify(lens.build(arch_of(None, "relu", n_layers=1, d_vocab=4, n_ctx=2), seed=0), None)


def test_gelu_interval_ends_are_rigorous_around_the_minimum():
    """GELU is not monotone: an interval around its minimum (x ≈ -0.75) must still hold every value."""
    from gbmi_core.evaluate import activation

    xs = torch.tensor([-0.76, -0.7517916, -3.0, -40.0, 1e-300, 30.0], dtype=torch.float64)
    for name in ("gelu", "gelu_new", "gelu_fast"):
        box = activation(Interval(xs - 0.05, xs + 0.05), name)
        for i, x in enumerate(xs.tolist()):
            for t in (x - 0.05, x, x + 0.05):
                t = mpmath.mpf(t)
                if name == "gelu":
                    value = t * (1 + mpmath.erf(t / mpmath.sqrt(2))) / 2
                elif name == "gelu_new":
                    value = t * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (t + mpmath.mpf("0.044715") * t**3))) / 2
                else:
                    value = t * (1 + mpmath.tanh(t * mpmath.mpf("0.7978845608") * (1 + mpmath.mpf("0.044715") * t * t))) / 2
                assert float(box.lo[i]) <= value <= float(box.hi[i]), (name, float(t))
    assert math.isfinite(float(box.lo[3]))
