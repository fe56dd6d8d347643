"""The induction task, checked by evaluating every input in interval arithmetic.

The task (from its definition): ``x_0 .. x_{n-2}`` are distinct tokens of ``[0, d)``, ``x_{n-1} = x_i`` for
some ``i <= n-3``, the answer is ``x_{i+1}``; an input is correct when the answer's logit is strictly the
largest.  The model: two attention-only layers of one head, no LayerNorm, learned positions, biases
(folded below).  With ``e(t, j) = W_E[t] + W_pos[j]``:

    layer 0:  a_jk = softmax_{k<=j}(S0[x_j, j, x_k, k]),  S0[t,j,t',k] = (e(t,j) W_Q0 + b_Q0)·(e(t',k) W_K0 + b_K0) / scale
              h_j = e(x_j, j) + b_O0 + Σ_k a_jk o(x_k, k),   o(t, k) = (e(t,k) W_V0 + b_V0) W_O0
    layer 1 (last position):  b = softmax_j((h_{n-1} W_Q1 + b_Q1)·(h_j W_K1 + b_K1) / scale)
              logits = (h_{n-1} + Σ_j b_j (h_j W_V1 + b_V1) W_O1 + b_O1) W_U + b_U

Because ``Σ_k a_jk = 1`` and ``Σ_j b_j = 1``, every readout of ``h_j`` is the same combination of per-(token,
position) rows: ``EQ, OQ`` (query), ``EK, OK`` (key), ``EV, OV`` (value through ``W_O1 W_U``), ``ED, OD``
(direct path, with ``b_O1 W_U + b_U`` in ``ED``).  All are interval tables from exact weights; every input
is then evaluated in interval arithmetic (:mod:`gbmi_check.interval`), and inputs it cannot decide are
evaluated on their own with arb balls at 128, 256, ... 4096 bits (still open: not counted).

``pair-bounds`` bundles claim a count over groups of inputs; this checker verifies such a claim by the
same exact evaluation of every input (it does not re-derive the pair argument): the claim holds exactly
when at least that many inputs are correct.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import attrs
import numpy as np
from flint import arb, arb_mat, ctx

from .bundle import Bundle, Refused, attention_scale, require_architecture, weight
from .interval import Iv, matmul, split


@attrs.frozen
class Model:
    W_E: np.ndarray
    W_pos: np.ndarray
    layers: tuple  # two dicts of W_Q, W_K, W_V [D, H], W_O [H, D], b_Q, b_K, b_V [H], b_O [D]
    W_U: np.ndarray
    b_U: np.ndarray
    scale: float

    @property
    def d(self):
        return self.W_E.shape[0]

    @property
    def n(self):
        return self.W_pos.shape[0]


def load(b: Bundle) -> Model:
    config, arch = b.claim.config, b.claim.architecture
    d, n, D = config.get("d"), config.get("n"), config.get("d_model")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (d, n, D)) or not 3 <= n <= d + 1 or D < 1:
        raise Refused(f"config d={d!r}, n={n!r}, d_model={D!r} is not an induction task")
    require_architecture(arch, 2)
    if arch.get("d_vocab", d) != d or arch.get("d_vocab_out", d) != d or arch.get("n_ctx", n) != n:
        raise Refused("the architecture's vocabulary or context does not match the task's d and n")
    H = arch.get("d_head", config.get("d_head"))
    if not isinstance(H, int) or isinstance(H, bool) or H < 1:
        raise Refused("the architecture has no d_head")
    known = {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U"} | {
        f"blocks.{layer}.attn.{w}" for layer in (0, 1) for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")}
    extra = set(b.weights) - known
    if extra:
        raise Refused(f"the model has weights the proofs do not model: {', '.join(sorted(extra))}")

    def bias(name, shape):
        return weight(b, name, shape) if name in b.weights else np.zeros(shape)

    layers = []
    for layer in (0, 1):
        pre = f"blocks.{layer}.attn."
        layers.append({"W_Q": weight(b, pre + "W_Q", (1, D, H))[0], "W_K": weight(b, pre + "W_K", (1, D, H))[0],
                       "W_V": weight(b, pre + "W_V", (1, D, H))[0], "W_O": weight(b, pre + "W_O", (1, H, D))[0],
                       "b_Q": bias(pre + "b_Q", (1, H))[0], "b_K": bias(pre + "b_K", (1, H))[0],
                       "b_V": bias(pre + "b_V", (1, H))[0], "b_O": bias(pre + "b_O", (D,))})
    return Model(weight(b, "embed.W_E", (d, D)), weight(b, "pos_embed.W_pos", (n, D)), tuple(layers),
                 weight(b, "unembed.W_U", (D, d)), bias("unembed.b_U", (d,)), attention_scale(arch, H))


def tables(M: Model) -> dict:
    d, n, D = M.d, M.n, M.W_E.shape[1]
    L0, L1 = M.layers
    e = Iv.of(np.broadcast_to(M.W_E[:, None, :], (d, n, D)).reshape(d * n, D)) + \
        Iv.of(np.broadcast_to(M.W_pos[None], (d, n, D)).reshape(d * n, D))

    def lin(x, W, bias=None):
        out = matmul(x, Iv.of(W))
        return out if bias is None else out + Iv.of(bias[None])

    scale = Iv.of(M.scale)
    S0 = matmul(lin(e, L0["W_Q"], L0["b_Q"]) / scale, lin(e, L0["W_K"], L0["b_K"]).map(lambda a: a.T))
    o = lin(lin(e, L0["W_V"], L0["b_V"]), L0["W_O"])
    e1 = e + Iv.of(L0["b_O"][None])
    OVU = matmul(Iv.of(L1["W_O"]), Iv.of(M.W_U))
    direct_bias = matmul(Iv.of(L1["b_O"][None]), Iv.of(M.W_U)) + Iv.of(M.b_U[None])
    T = {"S0": S0.map(lambda a: a.reshape(d, n, d, n)),
         "EQ": lin(e1, L1["W_Q"], L1["b_Q"]) / scale, "OQ": lin(o, L1["W_Q"]) / scale,
         "EK": lin(e1, L1["W_K"], L1["b_K"]), "OK": lin(o, L1["W_K"]),
         "EV": matmul(lin(e1, L1["W_V"], L1["b_V"]), OVU), "OV": matmul(lin(o, L1["W_V"]), OVU),
         "ED": lin(e1, M.W_U) + direct_bias, "OD": lin(o, M.W_U)}
    for name in T:
        if name != "S0":
            T[name] = T[name].map(lambda a: a.reshape(d, n, -1))
    joined = Iv(np.concatenate([T[k].lo for k in ("OQ", "OK", "OV", "OD")], -1),
                np.concatenate([T[k].hi for k in ("OQ", "OK", "OV", "OD")], -1))
    T["O"] = split(joined)  # [d, n, H + H + d + d] in midpoint-radius form, for the per-input mixtures
    T["KV"] = split(Iv(np.concatenate([T[k].lo for k in ("OK", "OV")], -1), np.concatenate([T[k].hi for k in ("OK", "OV")], -1)))
    return T


def count_inputs(d: int, n: int) -> int:
    return math.perm(d, n - 1) * (n - 2)


def _softmax_rows(E: Iv, mask: np.ndarray) -> Iv:
    """Rows of nonnegative weights (masked entries 0) divided by their sums (positive)."""
    E = Iv(np.where(mask, E.lo, 0.0), np.where(mask, E.hi, 0.0))
    return (E / E.sum(-1).map(lambda a: a[..., None])).clip(0.0, 1.0)  # softmax weights lie in [0, 1]


def layer0_weights(T: dict) -> Iv:
    """``exp(S0[t,j,t',k] - shift[t,j])``, one shift per query row (softmax does not see it): arb per entry."""
    S0 = T["S0"]
    return (S0 - Iv.of(S0.hi.max((2, 3), keepdims=True))).exp()


class Chunk:
    """What a block of prefixes ``X [P, n-1]`` shares over its match positions: layer 0's rows ``j <= n-2``
    and layer 1's keys and values there.  Rows of the ``O*`` tables are gathered in midpoint-radius form."""

    def __init__(self, T: dict, E0: Iv, X: np.ndarray):
        n = X.shape[1] + 1
        self.T, self.E0, self.X, self.n = T, E0, X, n
        pos = np.arange(n - 1)
        causal = pos[None, :] <= pos[:, None]
        a = _softmax_rows(E0[X[:, :, None], pos[None, :, None], X[:, None, :], pos[None, None, :]],
                          np.broadcast_to(causal, (len(X), n - 1, n - 1)))  # [P, j, k]
        mid, rad = T["O"]
        self.rows = (mid[X, pos[None, :]], rad[X, pos[None, :]])  # [P, k, H + H + d + d]: OQ, OK, OV, OD
        H = T["OQ"].shape[-1]
        mid, rad = T["KV"]
        mixed = matmul(a, (mid[X, pos[None, :]], rad[X, pos[None, :]]))  # [P, j, H + d]: OK, OV
        self.K = T["EK"][X, pos[None, :]] + mixed[:, :, :H]  # [P, j, H]
        self.VV = T["EV"][X, pos[None, :]] + mixed[:, :, H:]  # [P, j, d]

    def decide(self, i: int):
        """``(correct, wrong)`` masks of the inputs with match position ``i``, decided in intervals."""
        T, X, n = self.T, self.X, self.n
        P, q = len(X), X[:, i]
        H, d = T["OQ"].shape[-1], T["OV"].shape[-1]
        pos = np.arange(n)
        tokens = np.concatenate([X, X[:, i: i + 1]], 1)
        c = _softmax_rows(self.E0[q[:, None], n - 1, tokens, pos[None, :]], np.ones((P, n), dtype=bool))  # [P, k]
        mid, rad = T["O"]
        rows = (np.concatenate([self.rows[0], mid[q, n - 1][:, None]], 1),
                np.concatenate([self.rows[1], rad[q, n - 1][:, None]], 1))
        mixed = matmul(c.map(lambda a: a[:, None, :]), rows).map(lambda a: a[:, 0])  # [P, H + H + d + d]
        Q = T["EQ"][q, n - 1] + mixed[:, :H]
        K_last = T["EK"][q, n - 1] + mixed[:, H: 2 * H]
        V_last = T["EV"][q, n - 1] + mixed[:, 2 * H: 2 * H + d]
        direct = T["ED"][q, n - 1] + mixed[:, 2 * H + d:]
        K = Iv(np.concatenate([self.K.lo, K_last.lo[:, None]], 1), np.concatenate([self.K.hi, K_last.hi[:, None]], 1))
        VV = Iv(np.concatenate([self.VV.lo, V_last.lo[:, None]], 1), np.concatenate([self.VV.hi, V_last.hi[:, None]], 1))
        S1 = matmul(K, Q.map(lambda a: a[:, :, None])).map(lambda a: a[:, :, 0])  # [P, j]
        b = _softmax_rows((S1 - Iv.of(S1.hi.max(-1, keepdims=True))).exp(), np.ones(S1.shape, dtype=bool))
        logits = direct + matmul(b.map(lambda a: a[:, None, :]), VV).map(lambda a: a[:, 0])  # [P, d]
        answer = X[:, i + 1]
        at = np.arange(P)
        right_lo, right_hi = logits.lo[at, answer], logits.hi[at, answer]
        others_hi, others_lo = logits.hi.copy(), logits.lo.copy()
        others_hi[at, answer] = -np.inf
        others_lo[at, answer] = -np.inf
        return right_lo > others_hi.max(-1), others_lo.max(-1) >= right_hi


def _prefix_chunks(d: int, length: int, size: int = 1 << 14):
    it = itertools.permutations(range(d), length)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield np.array(chunk, dtype=np.int64)


_COUNTS: dict[str, int] = {}  # exact counts by the model's content (every weight's bytes, the scale)


def _content(M: Model) -> str:
    digest = hashlib.sha256(repr(M.scale).encode())
    arrays = [M.W_E, M.W_pos, M.W_U, M.b_U] + [L[k] for L in M.layers for k in sorted(L)]
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        digest.update(repr(a.shape).encode() + a.tobytes())
    return digest.hexdigest()


def brute_force_count(M: Model, progress=None) -> tuple[int, int]:
    """``(correct, total)``: every input decided in intervals, the rest one by one with arb.  The count is
    kept by the model's content (a SHA-256 of every weight and the scale), so the bundles of one model
    (brute force, pair-bounds, crude) are enumerated once per process."""
    key = _content(M)
    if key not in _COUNTS:
        _COUNTS[key] = _enumerate(M, progress)
    return _COUNTS[key], count_inputs(M.d, M.n)


def _enumerate(M: Model, progress=None) -> int:
    d, n = M.d, M.n
    T = tables(M)
    E0 = layer0_weights(T)
    correct = done = 0
    exact = Exact(M)
    for X in _prefix_chunks(d, n - 1):
        chunk = Chunk(T, E0, X)
        for i in range(n - 2):
            right, wrong = chunk.decide(i)
            correct += int(right.sum())
            for row in np.nonzero(~(right | wrong))[0]:
                tokens = list(X[row]) + [int(X[row, i])]
                correct += exact.correct(tokens, int(X[row, i + 1]))
        done += len(X)
        if progress:
            progress(done, math.perm(d, n - 1))
    return correct


def pair_bounds_count(M: Model, b: Bundle, strategy: str, progress=None) -> tuple[int, int]:
    """A pair-bounds claim is a count of correct inputs: verified by evaluating every input (module doc)."""
    for name, value in b.certificate.items():  # the certificate is not needed, but must be well-formed data
        if value.dtype.kind != "f" or value.dtype.itemsize > 8:
            raise Refused(f"certificate field {name} has dtype {value.dtype}")
    return brute_force_count(M, progress)


class Exact:
    """One input in arb balls, from 128 bits, doubled up to 4096; ``False`` when still undecided."""

    def __init__(self, M: Model):
        self.M = M
        self.mats: dict = {}  # weights as arb matrices: floats convert exactly at any precision, made once

    def _mat(self, key, a):
        if key not in self.mats:
            a = np.atleast_2d(a)
            self.mats[key] = arb_mat(a.shape[0], a.shape[1], [arb(float(v)) for v in a.reshape(-1)])
        return self.mats[key]

    def correct(self, tokens: list[int], answer: int) -> bool:
        saved = ctx.prec
        try:
            ctx.prec = 128
            while ctx.prec <= 4096:
                verdict = self._decide(tokens, answer)
                if verdict is not None:
                    return verdict
                ctx.prec *= 2
            return False
        finally:
            ctx.prec = saved

    def _decide(self, tokens, answer):
        M, n = self.M, len(tokens)
        mat = self._mat

        def softmax(scores):
            top = arb(max(float(s.mid()) for s in scores))
            w = [(s - top).exp() for s in scores]
            total = sum(w[1:], w[0])
            return [x / total for x in w]

        rows = mat("W_E", M.W_E)
        h = arb_mat(n, rows.ncols(), [rows[t, c] for t in tokens for c in range(rows.ncols())]) + mat("W_pos", M.W_pos)
        scale = arb(M.scale)
        for layer, L in enumerate(M.layers):
            ones = arb_mat(n, 1, [arb(1)] * n)
            q = h * mat((layer, "W_Q"), L["W_Q"]) + ones * mat((layer, "b_Q"), L["b_Q"])
            k = h * mat((layer, "W_K"), L["W_K"]) + ones * mat((layer, "b_K"), L["b_K"])
            v = (h * mat((layer, "W_V"), L["W_V"]) + ones * mat((layer, "b_V"), L["b_V"])) * mat((layer, "W_O"), L["W_O"])
            rows = range(n) if layer == 0 else [n - 1]
            out = []
            for j in rows:
                scores = [sum((q[j, c] * k[t, c] for c in range(q.ncols())), arb(0)) / scale for t in range(j + 1)]
                a = softmax(scores)
                out.append([h[j, c] + sum((a[t] * v[t, c] for t in range(j + 1)), arb(0)) + arb(float(L["b_O"][c]))
                            for c in range(h.ncols())])
            if layer == 0:
                h = arb_mat(n, h.ncols(), [x for row in out for x in row])
            else:
                final = arb_mat(1, h.ncols(), out[0])
        logits = final * mat("W_U", M.W_U) + mat("b_U", M.b_U)
        right = logits[0, answer]
        sure = True
        for y in range(M.d):
            if y == answer:
                continue
            diff = right - logits[0, y]
            if not diff > 0:
                if diff <= 0:
                    return False
                sure = False
        return True if sure else None
