"""Max-of-K: the model, its path tables, exact evaluation of one input, and brute force.

The task (from its definition, not from gbmi): an input is ``t ∈ [0, V)^K``; its label is ``m = max t``;
the model is a one-layer, one-head, attention-only transformer without LayerNorm, read at the last
position.  Biases are first made weights of a constant residual direction (:func:`fold`), so below the
model has none.  With ``q = t_{K-1}`` and ``r_i = W_E[t_i] + W_pos[i]``:

    s_i = (r_{K-1} W_Q)·(r_i W_K) / scale,   a = softmax(s),   logit[x] = r_{K-1} W_U[:, x] + Σ_i a_i r_i W_V W_O W_U[:, x]

An input is correct when ``logit[m] > logit[x]`` for every ``x ≠ m``, in exact real arithmetic over the
stored weights.  Multiplying by ``Σ_i exp(s_i - S) > 0`` (any ``S``) keeps the sign, so it is correct
exactly when ``N[x] = Σ_i w_i (c_i(x) - c_i(m)) < 0`` for all ``x ≠ m``, ``w_i = exp(s_i - S)``,
``c_i(x) = r_i W_V W_O W_U[:, x] + r_{K-1} W_U[:, x]``.  Written with path tables,
``s_i = (EQKE[q, t_i] + EQKP[q, i]) / scale`` and ``c_i(x) = EVOU[t_i, x] + PVOU[i, x] + EUPU[q, x]``.
"""

from __future__ import annotations

import attrs
import numpy as np
from flint import arb, arb_mat, ctx, fmpq, fmpq_mat

from .bundle import Bundle, Refused, attention_scale, require_architecture, weight
from .interval import INFLATE, TINY, U, Iv, gamma, matmul


@attrs.frozen
class Model:
    W_E: np.ndarray  # [V, D]
    W_pos: np.ndarray  # [K, D]
    W_Q: np.ndarray  # [D, H]
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray  # [H, D]
    W_U: np.ndarray  # [D, V]
    scale: float

    @property
    def V(self):
        return self.W_E.shape[0]

    @property
    def n(self):
        return self.W_pos.shape[0]


def fold(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, b_Q, b_K, b_V, b_O, b_U):
    """Biases as weights: the residual stream gains a last coordinate equal to 1 at every position (a column
    of ones in ``W_pos``, of zeros in ``W_E``), the head a last coordinate.  Its row in ``W_Q``, ``W_K``,
    ``W_V`` is ``b_Q``, ``b_K``, ``b_V``, so ``q``, ``k``, ``v`` gain their biases; ``W_V`` maps the constant
    to 1 in the head's last coordinate, whose row in ``W_O`` is ``b_O``: the head writes ``Σ_i a_i b_O =
    b_O`` (attention sums to 1) and nothing in the constant coordinate, which ``W_U``'s last row ``b_U`` then
    reads once.  Same logits for every input in real arithmetic; every entry is copied, so none is rounded.
    Returns the seven weights of a bias-free model."""
    D, H = W_Q.shape

    def pad(a, rows, cols):
        out = np.zeros((a.shape[0] + rows, a.shape[1] + cols))
        out[: a.shape[0], : a.shape[1]] = a
        return out

    E, P = pad(W_E, 0, 1), pad(W_pos, 0, 1)
    P[:, D] = 1.0
    Q, K, Vm, O = pad(W_Q, 1, 1), pad(W_K, 1, 1), pad(W_V, 1, 1), pad(W_O, 1, 1)
    Q[D, :H], K[D, :H], Vm[D, :H], O[H, :D] = b_Q, b_K, b_V, b_O
    Vm[D, H] = 1.0
    U = pad(W_U, 1, 0)
    U[D] = b_U
    return E, P, Q, K, Vm, O, U


def load(b: Bundle) -> Model:
    """The model of a Max-of-K bundle, refused unless it has the family's architecture; biases are folded."""
    config, arch = b.claim.config, b.claim.architecture
    V, K, D = config.get("V"), config.get("K"), config.get("d_model")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (V, K, D)) or K < 2:
        raise Refused(f"config V={V!r}, K={K!r}, d_model={D!r} is not a Max-of-K task")
    require_architecture(arch, 1)
    H = arch.get("d_head", D)
    if arch.get("d_vocab", V) != V or arch.get("d_vocab_out", V) != V or arch.get("n_ctx", K) != K:
        raise Refused("the architecture's vocabulary or context does not match the task's V and K")
    known = {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U"} | {
        f"blocks.0.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")}
    extra = set(b.weights) - known
    if extra:
        raise Refused(f"the model has weights the proofs do not model: {', '.join(sorted(extra))}")

    def bias(name, shape):
        return weight(b, name, shape) if name in b.weights else np.zeros(shape)

    ws = [weight(b, "embed.W_E", (V, D)), weight(b, "pos_embed.W_pos", (K, D)),
          weight(b, "blocks.0.attn.W_Q", (1, D, H))[0], weight(b, "blocks.0.attn.W_K", (1, D, H))[0],
          weight(b, "blocks.0.attn.W_V", (1, D, H))[0], weight(b, "blocks.0.attn.W_O", (1, H, D))[0],
          weight(b, "unembed.W_U", (D, V))]
    biases = [bias("blocks.0.attn.b_Q", (1, H))[0], bias("blocks.0.attn.b_K", (1, H))[0],
              bias("blocks.0.attn.b_V", (1, H))[0], bias("blocks.0.attn.b_O", (D,)), bias("unembed.b_U", (V,))]
    if any(v.any() for v in biases):
        ws = fold(*ws, *biases)
    return Model(*ws, attention_scale(arch, H))


def tables(M: Model) -> dict:
    """The path tables as intervals (each a chain of certified products of exact weights)."""
    Eq = Iv.of(M.W_E) + Iv.of(M.W_pos[-1])  # [V, D]: the query-side residual
    EqQK = matmul(matmul(Eq, Iv.of(M.W_Q)), Iv.of(M.W_K.T))  # [V, D]
    OVU = matmul(Iv.of(M.W_V), matmul(Iv.of(M.W_O), Iv.of(M.W_U)))  # [D, V]
    return {"Eq": Eq, "EqQK": EqQK, "EQKE": matmul(EqQK, Iv.of(M.W_E.T)), "EQKP": matmul(EqQK, Iv.of(M.W_pos.T)),
            "EUPU": matmul(Eq, Iv.of(M.W_U)), "EVOU": matmul(Iv.of(M.W_E), OVU), "PVOU": matmul(Iv.of(M.W_pos), OVU)}


# -- one input, exactly ---------------------------------------------------------------------------------

CORRECT, WRONG = 1, 0


class Exact:
    """Decides single inputs: arb balls from 128 bits, doubled until decided, after an exact test for a
    true tie.  The tie test: every ``s_i`` and ``c_i(x)`` is rational, so ``N[x] = Σ_σ exp(σ) C_σ(x)`` with
    ``C_σ`` the summed coefficients of the positions of score ``σ``; exponentials of distinct rationals are
    linearly independent over the rationals (Lindemann–Weierstrass), so ``N[x] = 0`` exactly when every
    ``C_σ(x) = 0``.  A tie is not correct; any other ``N[x]`` is nonzero and some precision decides its sign."""

    def __init__(self, M: Model):
        self.M = M
        self.mats: dict = {}

    def _mat(self, name: str, kind):
        key = (name, kind, ctx.prec)
        if key not in self.mats:
            a = getattr(self.M, name)
            entries = [fmpq(*float(v).as_integer_ratio()) for v in a.reshape(-1)] if kind is fmpq_mat \
                else [arb(float(v)) for v in a.reshape(-1)]
            self.mats[key] = kind(a.shape[0], a.shape[1], entries)
        return self.mats[key]

    def _parts(self, tokens, kind, number):
        M = self.M
        rows = [[number(float(M.W_E[t, d])) + number(float(M.W_pos[i, d])) for d in range(M.W_E.shape[1])]
                for i, t in enumerate(tokens)]
        R = kind(len(tokens), M.W_E.shape[1], [v for row in rows for v in row])
        Q = self._row(R, len(tokens) - 1, kind) * self._mat("W_Q", kind)  # [1, H]
        Kt = R * self._mat("W_K", kind)  # [n, H]
        scores = Kt * Q.transpose()  # [n, 1]
        OV = R * self._mat("W_V", kind) * self._mat("W_O", kind) * self._mat("W_U", kind)  # [n, V]
        direct = self._row(R, len(tokens) - 1, kind) * self._mat("W_U", kind)  # [1, V]
        return scores, OV, direct

    @staticmethod
    def _row(R, i, kind):
        return kind(1, R.ncols(), [R[i, j] for j in range(R.ncols())])

    def classify(self, tokens) -> int:
        prec, ctx.prec = ctx.prec, 128
        try:
            while True:
                status = self._balls(tokens)
                if status is not None:
                    return status
                if ctx.prec == 128 and self.ties(tokens):
                    return WRONG
                ctx.prec *= 2
        finally:
            ctx.prec = prec

    def _balls(self, tokens):
        n, V, m = len(tokens), self.M.V, max(tokens)
        scores, OV, direct = self._parts(tokens, arb_mat, arb)
        scale = arb(self.M.scale)
        s = [scores[i, 0] / scale for i in range(n)]
        shift = arb(max(float(x.mid()) for x in s))
        w = [(x - shift).exp() for x in s]
        Z = sum(w[1:], w[0])
        decided = True
        for x in range(V):
            if x == m:
                continue
            N = Z * (direct[0, x] - direct[0, m])
            for i in range(n):
                N += w[i] * (OV[i, x] - OV[i, m])
            if N > 0:
                return WRONG
            if not N < 0:
                decided = False
        return CORRECT if decided else None

    def ties(self, tokens) -> bool:
        n, m = len(tokens), max(tokens)
        scores, OV, direct = self._parts(tokens, fmpq_mat, lambda v: fmpq(*v.as_integer_ratio()))
        for x in range(self.M.V):
            if x == m:
                continue
            groups: dict = {}
            for i in range(n):
                key = scores[i, 0]  # the common factor 1/scale does not change which scores are equal
                c = OV[i, x] - OV[i, m] + direct[0, x] - direct[0, m]
                groups[key] = groups.get(key, fmpq(0)) + c
            if all(c == 0 for c in groups.values()):
                return True
        return False


# -- brute force ----------------------------------------------------------------------------------------

def brute_force(M: Model, progress=None) -> int:
    """The exact number of correct inputs.  Per query token ``q``, every input's ``N`` is computed in float64
    from the tables' midpoints with a rigorous per-input allowance; what it cannot decide goes to
    :class:`Exact`.  The allowance (derivation): with ``w_i = ŵ_i ± rw_i`` and ``c_i(x) = ĉ_i(x) ± rc_i``,
    ``A_i = max_x |ĉ_i(x)|``, ``Rc_i = max_x rc_i(x)``, the exact ``Σ_i w_i c_i(x)`` is within
    ``Σ_i rw_i (A_i + Rc_i) + ŵ_i Rc_i`` of ``Σ_i ŵ_i ĉ_i(x)``, whose float evaluation is within
    ``γ_K Σ_i ŵ_i A_i + Kη`` (R2); the same for ``x = m``; the final subtraction adds ``u (|a| + |b|)``.  So
    ``|N[x] - Ñ[x]| <= Σ_i α(i, t_i) + 2Kη`` with ``α = 2 rw (A + Rc) + 2 ŵ Rc + (2γ_K + 3u) ŵ A``."""
    V, n = M.V, M.n
    T = tables(M)
    exact = Exact(M)
    correct = 0
    g = 2 * gamma(n) + 3 * U
    for q in range(V):
        s = (T["EQKE"][q][None, :] + T["EQKP"][q][:, None]) / Iv.of(M.scale)  # [i, t]
        shift = float(np.max(s.hi[:-1])) if n > 1 else 0.0
        shift = max(shift, float(s.hi[-1, q]))
        w = (s - Iv.of(shift)).exp()  # [i, t]
        c = T["EVOU"][None, :, :] + T["PVOU"][:, None, :] + T["EUPU"][q][None, None, :]  # [i, t, x]
        wm, rw = (w.lo + w.hi) / 2, np.maximum(w.hi - (w.lo + w.hi) / 2, (w.lo + w.hi) / 2 - w.lo)
        cm = (c.lo + c.hi) / 2
        rc = np.maximum(c.hi - cm, cm - c.lo).max(-1)
        A = np.abs(cm).max(-1)
        alpha = (2 * rw * (A + rc) + 2 * wm * rc + g * wm * A) * INFLATE  # [i, t]
        # prefix positions 0 .. n-3 combined with the query position n-1 (token q)
        L = (wm[n - 1, q] * cm[n - 1, q])[None, :]  # [rows, x]
        allow = np.full(1, alpha[n - 1, q])
        top = np.full(1, q)
        for i in range(n - 2):
            L = (L[None, :, :] + (wm[i][:, None] * cm[i])[:, None, :]).reshape(-1, V)
            allow = (allow[None, :] + alpha[i][:, None]).reshape(-1)
            top = np.maximum(top[None, :], np.arange(V)[:, None]).reshape(-1)
        last = n - 2
        rows = len(top)
        step = max(1, (1 << 22) // (rows * V))
        for t0 in range(0, V, step):
            ts = np.arange(t0, min(V, t0 + step))
            full = L[None, :, :] + (wm[last, ts][:, None] * cm[last, ts])[:, None, :]  # [t, rows, x]
            a = (allow[None, :] + alpha[last, ts][:, None]) * INFLATE + (2 * n + 8) * TINY
            m = np.maximum(top[None, :], ts[:, None])  # [t, rows]
            right = np.take_along_axis(full, m[..., None], -1)[..., 0]
            np.put_along_axis(full, m[..., None], -np.inf, -1)
            worst = full.max(-1) - right  # = max_{x≠m} fl(L[x] - L[m]): rounding is monotone
            sure = worst < -a
            wrong = worst > a
            correct += int(sure.sum())
            for ti, row in zip(*np.nonzero(~(sure | wrong))):
                correct += exact.classify(_tokens(row, int(ts[ti]), q, V, n)) == CORRECT
        if progress:
            progress(q + 1, V)
    return correct


def _tokens(row: int, t_last: int, q: int, V: int, n: int) -> list[int]:
    """A prefix row back to its tokens: each position was added as the outer axis, so position 0 is the
    least significant digit of ``row``."""
    prefix = []
    for _ in range(n - 2):
        row, t = divmod(row, V)
        prefix.append(t)
    return prefix + [t_last, q]
