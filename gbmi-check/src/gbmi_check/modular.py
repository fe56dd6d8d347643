"""Modular addition and subtraction: the model, exact evaluation of one input, and brute force.

The task (from its definition, not from gbmi): every pair ``(a, b)`` of ``[0, p)``, read as the tokens
``a b =`` (``=`` is token ``p``; ``n_ctx = 3``) or ``a b`` (``n_ctx = 2``); the answer ``(a + b) mod p``
(task ``modular-arithmetic``) or ``(a - b) mod p`` (task ``modular-subtraction``) is right when its logit
at the last position is strictly the largest in exact real arithmetic over the stored weights.  ``p`` is
the model's number of outputs.

The model is a TransformerLens model of this family (TransformerLens' definitions, 3.x names):

    x_i = W_E[t_i] + W_pos[i];  per layer:  h = N1(x);  for each head,  q_i = h_i W_Q + b_Q, k, v likewise,
    s_ij = q_i·k_j / scale (j <= i),  a_i = softmax_j(s_ij),  x_i += Σ_heads (Σ_j a_ij v_j) W_O + b_O;
    then unless attention-only:  x_i += act(N2(x_i) W_in + b_in) W_out + b_out;  logits = N(x_last) W_U + b_U

with ``N`` the identity (no normalisation), ``LNPre``: ``c / sqrt(mean(c²) + eps)``, ``c = x - mean(x)``, or
``LN``: that times ``w`` plus ``b``; ``act`` one of ``relu``, ``gelu`` (``x (1 + erf(x/√2)) / 2``),
``gelu_new`` (``x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2``), ``gelu_fast`` (``x (1 + tanh(0.7978845608 x
(1 + 0.044715 x²))) / 2``), the decimals exact.  Every input is evaluated in arb balls (python-flint:
rigorous by construction) from 128 bits, doubled up to 2048; one still undecided there is not counted.
Every strategy's claim (brute force, factored, low-rank) is checked so: the count of correct inputs.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
from flint import arb, arb_mat, ctx

from .bundle import Bundle, Refused, attention_scale, weight

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast")


@attrs.frozen
class Model:
    arch: dict
    weights: dict  # canonical names -> float64 arrays
    scale: float

    @property
    def p(self) -> int:
        return self.arch["d_vocab_out"]


def _int(arch: dict, name: str) -> int:
    value = arch.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Refused(f"architecture field {name}={value!r} is not a positive integer")
    return value


def load(b: Bundle) -> Model:
    arch = b.claim.architecture
    L, h, D, H, V, n = (_int(arch, k) for k in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx"))
    p = _int(arch, "d_vocab_out")
    if n not in (2, 3) or V != p + (n == 3) or p < 2:
        raise Refused(f"d_vocab={V}, d_vocab_out={p}, n_ctx={n} do not read 'a b =' or 'a b'")
    if b.claim.config.get("p", p) != p:
        raise Refused(f"the config's p={b.claim.config.get('p')!r} is not the model's {p} outputs")
    attn_only = arch.get("attn_only", False)
    norm = arch.get("normalization_type")
    act = arch.get("act_fn")
    if not isinstance(attn_only, bool) or norm not in (None, "LN", "LNPre") or (not attn_only and act not in ACTIVATIONS):
        raise Refused(f"attn_only={attn_only!r}, normalization_type={norm!r}, act_fn={act!r} are outside the family")
    for name, value in {"positional_embedding_type": "standard", "use_local_attn": False, "use_qk_norm": False,
                        "rotary_dim": None, "parallel_attn_mlp": False, "gated_mlp": False, "final_rms": False,
                        "scale_attn_by_inverse_layer_idx": False, "n_key_value_heads": None}.items():
        if arch.get(name, value) not in (value, None) or arch.get(name, value) is True:
            raise Refused(f"architecture {name}={arch.get(name)!r} is not supported")
    for name in ("output_logits_soft_cap", "attn_scores_soft_cap"):
        cap = arch.get(name, -1.0)
        if not isinstance(cap, (int, float)) or isinstance(cap, bool) or cap > 0:
            raise Refused(f"architecture {name}={cap!r} is not supported")
    eps = arch.get("eps", 1e-5)
    if norm is not None and (not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0):
        raise Refused(f"LayerNorm eps {eps!r} is not a nonnegative number")
    M_ = arch.get("d_mlp")
    shapes = {"embed.W_E": (V, D), "pos_embed.W_pos": (n, D), "unembed.W_U": (D, p), "unembed.b_U": (p,)}
    norms = {"LN": ("w", "b")}.get(norm, ())
    for layer in range(L):
        pre = f"blocks.{layer}."
        shapes.update({pre + f"attn.W_{x}": (h, D, H) for x in "QKV"})
        shapes.update({pre + f"attn.b_{x}": (h, H) for x in "QKV"})
        shapes.update({pre + "attn.W_O": (h, H, D), pre + "attn.b_O": (D,)})
        shapes.update({pre + f"ln1.{x}": (D,) for x in norms})
        if not attn_only:
            M_ = _int(arch, "d_mlp")
            shapes.update({pre + "mlp.W_in": (D, M_), pre + "mlp.b_in": (M_,), pre + "mlp.W_out": (M_, D),
                           pre + "mlp.b_out": (D,)})
            shapes.update({pre + f"ln2.{x}": (D,) for x in norms})
    shapes.update({f"ln_final.{x}": (D,) for x in norms})
    extra = set(b.weights) - set(shapes) - {f"blocks.{layer}.attn.{x}" for layer in range(L) for x in ("mask", "IGNORE")}
    if extra:
        raise Refused(f"the model has weights the task's definition does not use: {', '.join(sorted(extra))}")
    weights = {name: weight(b, name, shape) for name, shape in shapes.items()}
    return Model({**arch, "n_layers": L, "n_heads": h, "d_model": D, "n_ctx": n, "d_vocab_out": p,
                  "attn_only": attn_only, "normalization_type": norm, "act_fn": act, "eps": float(eps)},
                 weights, attention_scale(arch, H))


class Exact:
    """One input's logits in arb balls at the current precision; weights converted once per precision."""

    def __init__(self, M: Model):
        self.M = M
        self.mats: dict = {}

    def mat(self, name, index=None):
        key = (name, index, ctx.prec)
        if key not in self.mats:
            a = self.M.weights[name] if index is None else self.M.weights[name][index]
            a = np.atleast_2d(a)
            self.mats[key] = arb_mat(a.shape[0], a.shape[1], [arb(float(v)) for v in a.reshape(-1)])
        return self.mats[key]

    def _plus_row(self, X, name, index=None):
        row = self.mat(name, index)
        return X + arb_mat(X.nrows(), X.ncols(), [row[0, c] for _ in range(X.nrows()) for c in range(X.ncols())])

    def _norm(self, X, prefix):
        kind = self.M.arch["normalization_type"]
        if kind is None:
            return X
        D = X.ncols()
        out = []
        for r in range(X.nrows()):
            mean = sum((X[r, c] for c in range(D)), arb(0)) / D
            centred = [X[r, c] - mean for c in range(D)]
            s = (sum((x * x for x in centred), arb(0)) / D + arb(self.M.arch["eps"])).sqrt()
            out += [x / s for x in centred]
        Y = arb_mat(X.nrows(), D, out)
        if kind == "LN":
            w = self.mat(prefix + ".w")
            Y = arb_mat(X.nrows(), D, [Y[r, c] * w[0, c] for r in range(X.nrows()) for c in range(D)])
            Y = self._plus_row(Y, prefix + ".b")
        return Y

    def _act(self, x):
        name = self.M.arch["act_fn"]
        if name == "relu":
            return x if x >= 0 else arb(0) if x <= 0 else arb(0).union(x)  # the union holds max(x, 0)
        c = arb(44715) / 10**6
        if name == "gelu":
            return x * (1 + (x / arb(2).sqrt()).erf()) / 2
        if name == "gelu_new":
            return x * (1 + ((2 / arb.pi()).sqrt() * (x + c * x * x * x)).tanh()) / 2
        return x * (1 + (x * arb(7978845608) / 10**10 * (1 + c * x * x)).tanh()) / 2

    def logits(self, tokens):
        A, n = self.M.arch, len(tokens)
        E, P = self.mat("embed.W_E"), self.mat("pos_embed.W_pos")
        X = arb_mat(n, A["d_model"], [E[t, c] + P[i, c] for i, t in enumerate(tokens) for c in range(A["d_model"])])
        for layer in range(A["n_layers"]):
            pre = f"blocks.{layer}."
            h = self._norm(X, pre + "ln1")
            out = self._plus_row(arb_mat(n, A["d_model"]), pre + "attn.b_O")
            for head in range(A["n_heads"]):
                q = self._plus_row(h * self.mat(pre + "attn.W_Q", head), pre + "attn.b_Q", head)
                k = self._plus_row(h * self.mat(pre + "attn.W_K", head), pre + "attn.b_K", head)
                v = self._plus_row(h * self.mat(pre + "attn.W_V", head), pre + "attn.b_V", head)
                s = q * k.transpose()
                rows = []
                for i in range(n):
                    scores = [s[i, j] / arb(self.M.scale) for j in range(i + 1)]
                    top = arb(max(float(x.mid()) for x in scores))
                    w = [(x - top).exp() for x in scores]
                    total = sum(w[1:], w[0])
                    rows += [x / total for x in w] + [arb(0)] * (n - 1 - i)
                out = out + arb_mat(n, n, rows) * v * self.mat(pre + "attn.W_O", head)
            X = X + out
            if not A["attn_only"]:
                pre_act = self._plus_row(self._norm(X, pre + "ln2") * self.mat(pre + "mlp.W_in"), pre + "mlp.b_in")
                post = arb_mat(n, pre_act.ncols(), [self._act(pre_act[r, c]) for r in range(n) for c in range(pre_act.ncols())])
                X = self._plus_row(X + post * self.mat(pre + "mlp.W_out"), pre + "mlp.b_out")
        last = arb_mat(1, A["d_model"], [X[n - 1, c] for c in range(A["d_model"])])
        L = self._plus_row(self._norm(last, "ln_final") * self.mat("unembed.W_U"), "unembed.b_U")
        return [L[0, c] for c in range(L.ncols())]

    def correct(self, tokens, answer) -> bool:
        saved = ctx.prec
        try:
            ctx.prec = 128
            while ctx.prec <= 2048:
                L = self.logits(tokens)
                gaps = [L[answer] - L[y] for y in range(len(L)) if y != answer]
                if all(g > 0 for g in gaps):
                    return True
                if any(g <= 0 for g in gaps):
                    return False
                ctx.prec *= 2
            return False
        finally:
            ctx.prec = saved


#: task -> the sign of b in the answer.
SIGNS = {"modular-arithmetic": 1, "modular-subtraction": -1}


def brute_force(M: Model, sign: int, progress=None) -> tuple[int, int]:
    """``(correct, p²)``: every input decided in arb balls; the answer is ``(a + sign · b) mod p``."""
    p, exact, correct = M.p, Exact(M), 0
    for a in range(p):
        for b in range(p):
            tokens = [a, b, p] if M.arch["n_ctx"] == 3 else [a, b]
            correct += exact.correct(tokens, (a + sign * b) % p)
        if progress:
            progress(a + 1, p)
    return correct, p * p


def claim_count(M: Model, b: Bundle, sign: int, progress=None) -> tuple[int, int]:
    """Any of the task's claims is a count of correct inputs: verified by evaluating every input (the
    factored and low-rank arguments are not re-derived).  A certificate must still be well-formed data."""
    for name, value in b.certificate.items():
        if value.dtype.kind != "f" or value.dtype.itemsize > 8 or not np.isfinite(value).all():
            raise Refused(f"certificate field {name} is not finite floats")
    return brute_force(M, sign, progress)
