"""Certified evaluation of any small TransformerLens model: enclosures of its exact logits, exact decisions.

The family: any number of layers and heads; attention with its scale (or without: scale 1); MLPs with
``relu``, ``gelu`` (erf), ``gelu_new`` and ``gelu_fast`` (tanh forms, as TransformerLens writes them);
``normalization_type`` ``"LN"``, ``"LNPre"`` or ``None``; every bias; learned absolute positions;
attention-only or not.  :func:`network_problems` names what falls outside it (rotary, RMS norm, gated or
parallel MLPs, soft caps, ...).

"Correct" means what it means everywhere in gbmi (``docs/certified.md``): the right answer's logit is
strictly the largest **in exact real arithmetic** over the stored weights.  Activation functions are the
mathematical functions their names define, with their decimal constants (``0.044715``, ``0.7978845608``)
and ``sqrt(2/π)`` exact; the model's own float rounding is not part of the definition.

Two stages decide an input:

1. :func:`logits` evaluates a batch in :class:`~gbmi_core.certified.Interval` arithmetic: every matrix
   product with Higham's bound, ``exp``/``erf``/``tanh`` with the stated ulp allowance, ``sqrt`` and division
   correctly rounded, constants enclosed by their float neighbours.  Softmax weights are
   ``1 / (1 + Σ_{j≠i} exp(s_j - s_i))``, monotone in each score difference, so each end is rigorous;
   LayerNorm is ``(x - mean x) / sqrt(mean (x - mean x)^2 + eps)``, enclosed operation by operation.  An
   input whose enclosures separate (the right logit's lower end above every other's upper end, or some
   other's lower end at or above the right one's upper end) is decided.
   An input whose label's unembedding column and bias equal another output's is wrong (equal logits).
2. The rest go to :class:`Exact`: arb balls (FLINT; rigorous by construction) at 128 bits, doubled up to
   :data:`MAX_PRECISION`.  An input still undecided there (an exact tie, in practice) is **not counted as
   correct** and reported as undecided: the count stays a sound lower bound.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import attrs
import torch

from . import lens
from .certified import Interval, down, matmul, up
from .errors import ModelRefused

#: Activation functions the evaluator encloses.
ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast")
#: Normalisations it encloses.
NORMALISATIONS = (None, "LN", "LNPre")
#: The largest precision (bits) :class:`Exact` tries before it calls an input undecided.
MAX_PRECISION = 2048


def network_problems(arch: Mapping[str, Any]) -> list[str]:
    """Why a canonical architecture (:func:`gbmi_core.lens.architecture`) is outside the family; ``[]`` if not."""
    problems = []
    if arch["positional_embedding_type"] != "standard":
        problems.append(f"its positional embedding is {arch['positional_embedding_type']!r} (only 'standard')")
    if arch["normalization_type"] not in NORMALISATIONS:
        problems.append(f"its normalization_type is {arch['normalization_type']!r} (only LN, LNPre or none)")
    if not arch["attn_only"] and arch["act_fn"] not in ACTIVATIONS:
        problems.append(f"its activation is {arch['act_fn']!r} (only {', '.join(ACTIVATIONS)})")
    for name, what in (("parallel_attn_mlp", "parallel attention and MLP"), ("gated_mlp", "a gated MLP"),
                       ("use_local_attn", "local attention"), ("use_qk_norm", "QK norm"),
                       ("final_rms", "a final RMS norm")):
        if arch.get(name):
            problems.append(f"it uses {what}")
    if arch.get("n_key_value_heads") is not None:
        problems.append("it uses grouped-query attention")
    for name in ("output_logits_soft_cap", "attn_scores_soft_cap"):
        if arch.get(name, -1.0) > 0:
            problems.append(f"it uses {name}")
    return problems


@attrs.frozen
class Network:
    """A model's canonical architecture and weights (float64 copies, exact), checked for the family."""

    arch: Mapping[str, Any]
    weights: Mapping[str, torch.Tensor]

    @classmethod
    def of(cls, model: Any) -> "Network":
        """Read a TransformerLens model (either version) or a :class:`~gbmi_core.lens.Weights`; refuse what
        the evaluator cannot enclose, or NaN/infinite weights, with :class:`~gbmi_core.ModelRefused`."""
        if isinstance(model, lens.Weights):
            arch, state = lens.normalise(model.arch), model.state
        else:
            arch = lens.architecture(model)
            state = lens.canonical_state(model, arch)
        problems = network_problems(arch)
        weights = {}
        for name in lens.parameter_names(arch):
            tensor = state[name].detach().to(device="cpu", dtype=torch.float64)
            if not torch.isfinite(tensor).all():
                problems.append(f"weight {name} holds NaN or infinite values")
            weights[name] = tensor
        if problems:
            raise ModelRefused("model refused by the certified evaluator: " + "; ".join(problems))
        return cls(arch, weights)

    @property
    def scales(self) -> list[float]:
        return lens.layer_scales(self.arch)

    def tied_outputs(self) -> torch.Tensor:
        """``[d_vocab_out]`` bool: outputs whose unembedding column and bias equal another output's.  Their
        logits are equal on every input in exact arithmetic, so neither is ever strictly the largest."""
        U = torch.cat([self.weights["unembed.W_U"], self.weights["unembed.b_U"][None]], 0)  # [D + 1, V]
        same = (U[:, :, None] == U[:, None, :]).all(0) & ~torch.eye(U.shape[1], dtype=torch.bool)
        return same.any(-1)


# -- stage 1: intervals -------------------------------------------------------------------------------

def _constant(value: float, certified: bool) -> Interval:
    """An enclosure of the real number ``value`` stands for (a decimal literal, ``math.pi``, or a correctly
    rounded ``sqrt``): its float and both neighbours."""
    t = torch.tensor(value, dtype=torch.float64)
    return Interval(down(t), up(t), certified) if certified else Interval.exact(t, False)


def activation(x: Interval, name: str) -> Interval:
    """Enclosures of one of :data:`ACTIVATIONS` applied elementwise."""
    c = x.certified
    if name == "relu":
        return x.relu()
    if name == "gelu":  # x Φ(x) = x (1 + erf(x / √2)) / 2
        inner = (x * _constant(math.sqrt(0.5), c)).erf()
    elif name == "gelu_new":  # x (1 + tanh(sqrt(2/π) (x + 0.044715 x^3))) / 2
        root = (Interval.exact(torch.tensor(2.0, dtype=torch.float64), c) / _constant(math.pi, c)).sqrt()
        inner = ((x + x.square() * x * _constant(0.044715, c)) * root).tanh()
    elif name == "gelu_fast":  # x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2))) / 2
        inner = (x * _constant(0.7978845608, c) * (x.square() * _constant(0.044715, c) + 1.0)).tanh()
    else:
        raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")
    return x * (inner + 1.0) * 0.5


def _normalise(x: Interval, net: Network, prefix: str) -> Interval:
    kind = net.arch["normalization_type"]
    if kind is None:
        return x
    centred = x - x.mean(-1)[..., None]
    scale = (centred.square().mean(-1) + net.arch["eps"]).sqrt()
    y = centred / scale[..., None]
    if kind == "LN":
        y = y * net.weights[prefix + ".w"] + net.weights[prefix + ".b"]
    return y


def softmax(scores: Interval, allowed: torch.Tensor | None = None) -> Interval:
    """Enclosures of ``softmax(scores)`` over the last dimension, masked keys (``allowed`` false, broadcast
    against ``scores``' last two dimensions, or the last) weighing 0.

    The weight of key ``i`` is ``1 / (1 + Σ_{j allowed, j ≠ i} exp(s_j - s_i))``: decreasing in every
    difference, so each end comes from the differences' intervals.  Differences are capped at 700 (``exp``
    stays finite): the upper end stays rigorous, and where a difference may exceed 700 the lower end is 0.
    Cost ``O(n^2)`` per row, for the short rows of small models."""
    n = scores.shape[-1]
    keys = torch.arange(n)
    allowed = torch.ones(n, dtype=torch.bool) if allowed is None else allowed
    diff = scores[..., None, :] - scores[..., :, None]  # [..., i, j] = s_j - s_i
    others = allowed[..., None, :] & (keys[:, None] != keys[None, :])  # [..., i, j]
    diff = Interval.where(others, diff, float("-inf"))
    capped = Interval(diff.lo.clamp(max=700.0), diff.hi.clamp(max=700.0), diff.certified) if diff.certified \
        else Interval.exact(diff.lo.clamp(max=700.0), False)
    weight = (capped.exp().sum(-1) + 1.0).reciprocal()
    if diff.certified:
        weight = Interval(torch.where((diff.hi > 700.0).any(-1), 0.0, weight.lo), weight.hi)
    return Interval.where(allowed, weight, 0.0)


def _attention(h: Interval, net: Network, layer: int, last_only: bool) -> Interval:
    """One attention layer's output ``[b, q, D]`` (``q`` = 1 for the last query only, else every position)."""
    w, p = net.weights, f"blocks.{layer}.attn."
    n = h.shape[1]
    hh = h[:, None]  # [b, 1, n, D]: broadcast over heads
    hq = hh[:, :, -1:] if last_only else hh
    q = matmul(hq, w[p + "W_Q"]) + w[p + "b_Q"][:, None, :]  # [b, h, q, H]
    k = matmul(hh, w[p + "W_K"]) + w[p + "b_K"][:, None, :]  # [b, h, n, H]
    v = matmul(hh, w[p + "W_V"]) + w[p + "b_V"][:, None, :]
    scores = matmul(q, k.permute(0, 1, 3, 2)) / net.scales[layer]  # [b, h, q, n]
    queries = torch.arange(n)[-1:] if last_only else torch.arange(n)
    pattern = softmax(scores, torch.arange(n)[None, :] <= queries[:, None])  # [b, h, q, i]; causal
    z = matmul(pattern, v)  # [b, h, q, H]
    return matmul(z, w[p + "W_O"]).sum(1) + w[p + "b_O"]  # [b, q, D]


def logits(net: Network, tokens: torch.Tensor, certified: bool = True) -> Interval:
    """Enclosures of the exact logits at the last position, ``[b, n] -> [b, d_vocab_out]``.

    Only the last position is carried through the last layer (no later layer reads the others).
    ``certified=False`` runs the same float64 program without widening (for search and benchmarks).
    """
    w, arch = net.weights, net.arch
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    n = tokens.shape[1]
    if n > arch["n_ctx"] or (tokens < 0).any() or (tokens >= arch["d_vocab"]).any():
        raise ValueError(f"tokens must be [b, <= {arch['n_ctx']}] in [0, {arch['d_vocab']})")
    x = Interval.exact(w["embed.W_E"][tokens], certified) + w["pos_embed.W_pos"][:n]
    layers = arch["n_layers"]
    for layer in range(layers):
        last = layer == layers - 1
        out = _attention(_normalise(x, net, f"blocks.{layer}.ln1"), net, layer, last_only=last)
        x = (x[:, -1:] if last else x) + out
        if not arch["attn_only"]:
            p = f"blocks.{layer}.mlp."
            h = _normalise(x, net, f"blocks.{layer}.ln2")
            post = activation(matmul(h, w[p + "W_in"]) + w[p + "b_in"], arch["act_fn"])
            x = x + (matmul(post, w[p + "W_out"]) + w[p + "b_out"])
    x = _normalise(x[:, -1], net, "ln_final")
    return matmul(x, w["unembed.W_U"]) + w["unembed.b_U"]


def separate(enclosure: Interval, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(surely correct, surely wrong)`` per row: the label's logit strictly largest, or not, for every
    value inside the enclosures.  NaN decides nothing."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    rows = torch.arange(len(labels))
    lo_right, hi_right = enclosure.lo[rows, labels], enclosure.hi[rows, labels]
    others_hi = enclosure.hi.clone()
    others_hi[rows, labels] = float("-inf")
    others_lo = enclosure.lo.clone()
    others_lo[rows, labels] = float("-inf")
    correct = lo_right > others_hi.amax(-1)
    wrong = others_lo.amax(-1) >= hi_right
    return correct, wrong & ~correct


# -- stage 2: arb balls ------------------------------------------------------------------------------

class Exact:
    """Decides single inputs in arb ball arithmetic (python-flint): 128 bits, doubled up to
    :data:`MAX_PRECISION`.  Holds its own arb copies of one network's weights (per precision)."""

    def __init__(self, net: Network):
        self.net = net
        self._mats: dict = {}

    def _mat(self, name: str, index=None):
        from flint import arb, arb_mat, ctx

        key = (name, index, ctx.prec)
        if key not in self._mats:
            t = self.net.weights[name] if index is None else self.net.weights[name][index]
            t = t.reshape(1, -1) if t.dim() == 1 else t
            self._mats[key] = arb_mat(t.shape[0], t.shape[1], [arb(v) for v in t.reshape(-1).tolist()])
        return self._mats[key]

    @staticmethod
    def _rows(M, bias_row):
        """``M`` with ``bias_row`` (``[1, c]``) added to every row."""
        from flint import arb_mat

        return M + arb_mat(M.nrows(), M.ncols(), [bias_row[0, j] for _ in range(M.nrows()) for j in range(M.ncols())])

    def _normalise(self, X, prefix: str):
        from flint import arb, arb_mat

        kind = self.net.arch["normalization_type"]
        if kind is None:
            return X
        D = X.ncols()
        eps = arb(self.net.arch["eps"])
        out = []
        for r in range(X.nrows()):
            row = [X[r, j] for j in range(D)]
            mean = sum(row, arb(0)) / D
            centred = [v - mean for v in row]
            scale = (sum((c * c for c in centred), arb(0)) / D + eps).sqrt()
            out.append([c / scale for c in centred])
        Y = arb_mat(X.nrows(), D, [v for row in out for v in row])
        if kind == "LN":
            w = self._mat(prefix + ".w")
            Y = arb_mat(Y.nrows(), D, [Y[r, j] * w[0, j] for r in range(Y.nrows()) for j in range(D)])
            Y = self._rows(Y, self._mat(prefix + ".b"))
        return Y

    @staticmethod
    def _activation(x, name: str):
        from flint import arb

        if name == "relu":
            return x if x >= 0 else (arb(0) if x <= 0 else arb(0).union(x))
        half = arb(1) / 2
        if name == "gelu":
            return half * x * (1 + (x / arb(2).sqrt()).erf())
        a = arb(44715) / 10**6
        if name == "gelu_new":
            return half * x * (1 + ((2 / arb.pi()).sqrt() * (x + a * x * x * x)).tanh())
        return half * x * (1 + (x * (arb(7978845608) / 10**10) * (1 + a * x * x)).tanh())

    def logits(self, tokens: list[int]) -> list:
        """Arb balls enclosing the exact last-position logits at the current precision."""
        from flint import arb, arb_mat

        net, arch = self.net, self.net.arch
        n, D = len(tokens), arch["d_model"]
        E, P = self._mat("embed.W_E"), self._mat("pos_embed.W_pos")
        X = arb_mat(n, D, [E[t, j] + P[i, j] for i, t in enumerate(tokens) for j in range(D)])
        for layer in range(arch["n_layers"]):
            h = self._normalise(X, f"blocks.{layer}.ln1")
            p = f"blocks.{layer}.attn."
            out = self._rows(arb_mat(n, D), self._mat(p + "b_O"))
            scale = arb(net.scales[layer])
            for head in range(arch["n_heads"]):
                Q = self._rows(h * self._mat(p + "W_Q", head), self._mat(p + "b_Q", head))
                K = self._rows(h * self._mat(p + "W_K", head), self._mat(p + "b_K", head))
                V = self._rows(h * self._mat(p + "W_V", head), self._mat(p + "b_V", head))
                S = Q * K.transpose()
                weights = []
                for i in range(n):
                    s = [S[i, j] / scale for j in range(i + 1)]
                    shift = arb(max(float(v.mid()) for v in s))
                    e = [(v - shift).exp() for v in s]
                    total = sum(e[1:], e[0])
                    weights.append([v / total for v in e] + [arb(0)] * (n - i - 1))
                A = arb_mat(n, n, [v for row in weights for v in row])
                out += A * V * self._mat(p + "W_O", head)
            X = X + out
            if not arch["attn_only"]:
                p = f"blocks.{layer}.mlp."
                h = self._normalise(X, f"blocks.{layer}.ln2")
                pre = self._rows(h * self._mat(p + "W_in"), self._mat(p + "b_in"))
                post = arb_mat(pre.nrows(), pre.ncols(), [self._activation(pre[r, c], arch["act_fn"])
                                                          for r in range(pre.nrows()) for c in range(pre.ncols())])
                X = X + self._rows(post * self._mat(p + "W_out"), self._mat(p + "b_out"))
        last = arb_mat(1, D, [X[n - 1, j] for j in range(D)])
        L = self._rows(self._normalise(last, "ln_final") * self._mat("unembed.W_U"), self._mat("unembed.b_U"))
        return [L[0, j] for j in range(L.ncols())]

    def classify(self, tokens: list[int], label: int) -> bool | None:
        """``True`` (correct), ``False`` (wrong), or ``None`` (undecided at :data:`MAX_PRECISION` bits)."""
        from flint import ctx

        saved = ctx.prec
        try:
            ctx.prec = 128
            while ctx.prec <= MAX_PRECISION:
                L = self.logits(list(tokens))
                gaps = [L[label] - L[x] for x in range(len(L)) if x != label]
                if all(g > 0 for g in gaps):
                    return True
                if any(g <= 0 for g in gaps):
                    return False
                ctx.prec *= 2
            return None
        finally:
            ctx.prec = saved


def decide(net: Network, tokens: torch.Tensor, labels: torch.Tensor, exact: Exact | None = None,
           certified: bool = True) -> tuple[torch.Tensor, dict]:
    """Which inputs are correct in exact arithmetic: ``(proved correct [b] bool, counts)``.

    ``counts``: ``by_intervals`` (decided in stage 1), ``by_arb`` (stage 2), ``undecided`` (not counted as
    correct).  ``certified=False`` decides in plain float64 (ties and near-ties as they fall)."""
    enclosure = logits(net, tokens, certified)
    correct, wrong = separate(enclosure, labels)
    wrong |= net.tied_outputs()[torch.as_tensor(labels, dtype=torch.int64)]  # exact ties, known without evaluating
    correct &= ~wrong
    open_ = (~(correct | wrong)).nonzero()[:, 0]
    counts = {"by_intervals": len(labels) - len(open_), "by_arb": 0, "undecided": 0}
    if len(open_) and certified:
        exact = exact or Exact(net)
        for row in open_.tolist():
            verdict = exact.classify(tokens[row].tolist(), int(labels[row]))
            counts["undecided" if verdict is None else "by_arb"] += 1
            correct[row] = bool(verdict)
    return correct, counts


__all__ = ["ACTIVATIONS", "Exact", "MAX_PRECISION", "NORMALISATIONS", "Network", "activation", "decide",
           "logits", "network_problems", "separate", "softmax"]
