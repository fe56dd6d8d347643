"""The subcubic proofs of Max-of-K (5 × 2 × 10 variants), checked from their mathematics and the certificate.

A certificate holds a gap table ``G[q, m, c] >= 1``, seven direction vectors and optionally split points
``ā[m, c] ∈ [0, 1]``.  Any values give a sound proof (the directions only choose where a matrix is split);
the certificate decides only which cells are claimed and how tight their bounds are.  Conventions: ``c``
counts every token other than the max ``m``, the query included when ``q ≠ m``.

(S1) Cell ``(q, m, c)`` with gap ``g = G[q,m,c]``: inputs with query ``q``, max ``m``, ``c`` non-max tokens,
     each non-max token at most ``j = m - g``.  It is valid when ``q <= m``, ``q = m`` or (``c >= 1`` and
     ``q <= j``), and ``c = 0`` or ``j >= 0``.  It holds ``C(K-1, c')(j+1)^c'`` inputs, ``c'`` its non-max
     tokens outside the query; valid cells are disjoint (an input's ``(q, m, c)`` is its own).
(S2) ``EQKE'[q,t] = Eq[q] W_Q W_Kᵀ (W_E[t] + P̄)ᵀ`` (``P̄`` any fixed vector: it cancels in differences of two
     keys) is split as ``approx + Err`` with ``|Err[q,i] - Err[q,k]| <= err[q]`` (the ten error handlings,
     :func:`error_bound`); here ``approx = EQKE' - Err`` with ``Err`` the exact remainder of the split.
(S3) Every non-max token ``k <= j`` has ``EQKE[q,m] - EQKE[q,k] ∈ [Δmin, Δmax]``, ``Δmin = approx[q,m] -
     max_{k<=j} approx[q,k] - err[q]``, ``Δmax = approx[q,m] - min_{k<=j} approx[q,k] + err[q]``.
(S4) The attention ``a`` on the max slots is ``1 / (1 + exp(log Y - log X - gap/scale))`` at one common gap,
     ``X`` and ``Y`` the summed positional weights of max and non-max slots (the query's is ``e^0``); it increases
     with every gap and with ``X`` at fixed total, so ``amin`` (all gaps ``Δmin``, max tokens on the lowest
     positional scores) ``<= a <=`` ``amax`` (``Δmax``, highest).  Order statistics as in the cubic proof.
(S5) ``logit[x] - logit[m] <= Lx[m,x] + Uq[q] + a r[m,x] + (1 - a) W`` with ``r[m,x] = EVOU[m,x] - EVOU[m,m]``,
     ``W = max_{k<=j} (max_x EVOU[k,x] - min_x EVOU[k,x])`` (each non-max slot), ``Lx = Umean[x] - Umean[m] +
     max_i (PVOU[i,x] - PVOU[i,m])`` (attention sums to 1) and the direct path split
     ``EUPU[q,x] - EUPU[q,m] <= Umean[x] - Umean[m] + Uq[q]`` (:func:`direct_path`).  For any ``ā``, with
     ``h(a) = max((a - ā)(Rmax - W), (a - ā)(Rmin - W))`` (``Rmax``/``Rmin`` the extremes of ``r[m, x≠m]``):
     ``max_x ... <= max_{x≠m} (Lx + ā r) + Uq + (1 - ā) W + max(h(amin), h(amax))`` as ``h`` is convex.
(S6) The all-``m`` input (``q = m``, ``c = 0``): ``max_{x≠m} EUPU[m,x] - EUPU[m,m] + r[m,x] + max_i (PVOU[i,x] - PVOU[i,m])``.
"""

from __future__ import annotations

from math import comb

import numpy as np

from .bundle import Bundle, Refused, certificate_array
from .interval import Iv, log_sum_exp, matmul, stack, where
from .max_of_k import Model, tables
from .max_of_k_cubic import _log_sums

EUPU = ("global_max_diff_exact", "max_diff_exact", "mean_query+max_diff", "svd_query+max_diff", "max_diff")
ATTENTION = ("mean_query+diff", "drop_average_query_per_output_logit_reasoning")
ERROR = ("svd", "max_diff", "mean+max_diff", "max_diff_exact", "exact_EQKE+max_diff_exact", "max_diff_subproduct",
         "mean+max_diff_subproduct", "max_diff_subproduct_recursive", "mean+max_diff_subproduct_recursive",
         "mean_recursive+max_diff_subproduct_recursive")
VOCAB_DIRECTIONS = ("query_direction", "key_direction", "second_query_direction", "second_key_direction")
MODEL_DIRECTIONS = ("W_Q_direction", "W_K_direction", "W_EP_direction")


def parse(name: str) -> tuple[str, str, str]:
    """``subcubic--eupu-<a>--attn-<b>--err-<c>`` (``_`` written ``-``) -> ``(a, b, c)``."""
    for a in EUPU:
        for b in ATTENTION:
            for c in ERROR:
                if name == f"subcubic--eupu-{a}--attn-{b}--err-{c}".replace("_", "-"):
                    return a, b, c
    raise Refused(f"unknown subcubic variant {name!r}")


def _row_range(M: Iv) -> Iv:
    """An enclosure of ``max_j M[r, j] - min_j M[r, j]`` per row."""
    return Iv.of(M.hi.max(-1)) - Iv.of(M.lo.min(-1))


def _max_diff(L: Iv, R: Iv, mean: bool) -> Iv:
    """Row-difference bound of ``L R``: ``Σ_d |L[r,d]| range(R[d])``; with ``mean``, around the point
    ``c`` (the rows' float mean): ``range(c R) + Σ_d |L[r,d] - c_d| range(R[d])``."""
    if not mean:
        return matmul(L.abs(), _row_range(R).map(lambda a: a[:, None])).map(lambda a: a[:, 0])
    c = (L.lo + L.hi).mean(0) / 2
    return _row_range(matmul(Iv.of(c[None]), R)).map(lambda a: a[0]) + \
        matmul((L - Iv.of(c[None])).abs(), _row_range(R).map(lambda a: a[:, None])).map(lambda a: a[:, 0])


def _recursive(Ms: list, levels: int) -> Iv:
    """Row-range bound of ``Ms[0] ... Ms[-1]`` by recursion (mean trick on the first ``levels`` factors)."""
    if len(Ms) == 1:
        return _row_range(Ms[0])
    inner = _recursive(Ms[1:], levels - 1).map(lambda a: a[:, None])
    if levels <= 0:
        return matmul(Ms[0].abs(), inner).map(lambda a: a[:, 0])
    c = (Ms[0].lo + Ms[0].hi).mean(0) / 2
    tail = Iv.of(c[None])
    for M in Ms[1:]:
        tail = matmul(tail, M)
    return _row_range(tail).map(lambda a: a[0]) + matmul((Ms[0] - Iv.of(c[None])).abs(), inner).map(lambda a: a[:, 0])


def _spectral_bound(X: Iv) -> Iv:
    """An upper bound on the largest singular value of every matrix in ``X``: ``t = σ̂²(1 + ε)`` bounds
    ``λ_max(XᵀX)`` when ``tI - XᵀX`` is positive definite, proved by Cholesky in interval arithmetic (every
    pivot's lower end positive: every symmetric member is positive definite, Alefeld and Mayer); else the
    Frobenius norm."""
    if not X.lo.any() and not X.hi.any():
        return Iv.of(0.0)
    gram = matmul(X.map(lambda a: a.T), X)
    guess = float(np.linalg.norm((X.lo + X.hi) / 2, 2)) ** 2
    for eps in (2.0**-30, 2.0**-20, 2.0**-10):
        t = guess * (1 + eps) + 2.0**-1000
        A = Iv.of(np.eye(gram.shape[0]) * t) - gram
        while A.shape[0]:
            if not A.lo[0, 0] > 0:
                break
            col = A[1:, 0] / A[0, 0].sqrt()
            A = A[1:, 1:] - col.map(lambda a: a[:, None]) * col.map(lambda a: a[None, :])
        else:
            return Iv.of(t).sqrt()
    magnitude = X.abs()
    return (magnitude * magnitude).sum(1).sum(0).sqrt()


def error_bound(how: str, Eq: Iv, Ek: Iv, W_Q: Iv, W_K: Iv, d: dict) -> tuple[Iv, Iv]:
    """(S2): ``(Err [V, V], err [V])`` for the error handling ``how``."""
    V = Eq.shape[0]
    if how == "exact_EQKE+max_diff_exact":
        return Iv.of(np.zeros((V, V))), Iv.of(np.zeros(V))
    A = matmul(matmul(Eq, W_Q), W_K.map(lambda a: a.T))  # [V, D]
    B = Ek.map(lambda a: a.T)  # [D, V]
    if how in ("svd", "max_diff", "mean+max_diff", "max_diff_exact"):
        u, v = Iv.of(d["query_direction"][:, None]), Iv.of(d["key_direction"][None, :])
        Ar = A - matmul(u, matmul(u.map(lambda a: a.T), A))  # (I - u uᵀ) A, exactly A = u uᵀA + Ar
        Br = B - matmul(matmul(B, v.map(lambda a: a.T)), v)  # B (I - v vᵀ)
        Err = matmul(Ar, Br)  # AB = u (uᵀA B) + (Ar B v) vᵀ + Ar Br
        if how == "svd":  # |e_qᵀ Err (e_i - e_k)| <= ‖Err‖₂ ‖e_i - e_k‖ = √2 ‖Err‖₂
            return Err, Iv.of(np.full(V, 1.0)) * (_spectral_bound(Err) * Iv.of(2.0).sqrt())
        if how == "max_diff_exact":
            return Err, _row_range(Err)
        return Err, _max_diff(Ar, Br, how == "mean+max_diff")

    def split(w, M):  # M = w (wᵀ M) + rest, exactly, for any vector w
        w = Iv.of(w[:, None])
        part = matmul(w, matmul(w.map(lambda a: a.T), M))
        return M - part

    Qpp = split(d["second_query_direction"], split(d["query_direction"], Eq))
    Kpp = split(d["second_key_direction"], split(d["key_direction"], Ek))
    WQp, WKp = split(d["W_Q_direction"], W_Q), split(d["W_K_direction"], W_K)
    Ms = [Qpp, WQp, WKp.map(lambda a: a.T), Kpp.map(lambda a: a.T)]  # Err = M0 M1 M2 M3
    Err = matmul(matmul(matmul(Ms[0], Ms[1]), Ms[2]), Ms[3])
    if how.endswith("_recursive"):
        levels = {"max_diff_subproduct_recursive": 0, "mean+max_diff_subproduct_recursive": 1,
                  "mean_recursive+max_diff_subproduct_recursive": len(Ms)}[how]
        return Err, _recursive(Ms, levels)
    mean = how == "mean+max_diff_subproduct"
    bounds = []
    for t in (1, 2, 3):
        left, right = Ms[0], Ms[t]
        for M in Ms[1:t]:
            left = matmul(left, M)
        for M in Ms[t + 1:]:
            right = matmul(right, M)
        bounds.append(_max_diff(left, right, mean))
    best = bounds[0]
    for b in bounds[1:]:
        best = best.minimum(b)
    return Err, best


def direct_path(how: str, Eq: Iv, W_U: Iv, EUPU_: Iv, d: dict) -> tuple[Iv, Iv]:
    """``(Umean [V], Uq [V])`` with ``EUPU[q,x] - EUPU[q,m] <= Umean[x] - Umean[m] + Uq[q]``: for any
    vector ``r̄``, ``EUPU[q,x] = r̄ W_U[:,x] + (Eq[q] - r̄) W_U[:,x]`` and the second part's difference over
    ``x`` is at most ``Σ_d |Eq[q,d] - r̄_d| range(W_U[d])``; the exact handlings take ``EUPU``'s own ranges."""
    V = Eq.shape[0]
    if how == "max_diff_exact":
        return Iv.of(np.zeros(V)), _row_range(EUPU_)
    if how == "global_max_diff_exact":
        return Iv.of(np.zeros(V)), Iv.of(np.full(V, EUPU_.hi.max())) - Iv.of(EUPU_.lo.min())
    rbar = {"max_diff": np.zeros(Eq.shape[1]), "mean_query+max_diff": ((Eq.lo + Eq.hi) / 2).mean(0),
            "svd_query+max_diff": d["W_EP_direction"]}[how]
    Umean = matmul(Iv.of(rbar[None]), W_U).map(lambda a: a[0])
    Uq = matmul((Eq - Iv.of(rbar[None])).abs(), _row_range(W_U).map(lambda a: a[:, None])).map(lambda a: a[:, 0])
    return Umean, Uq


def subcubic(M: Model, b: Bundle, options: tuple[str, str, str]) -> int:
    eupu, attention, error = options
    V, n, D = M.V, M.n, M.W_E.shape[1]
    G = certificate_array(b, "min_gap", "int", (V, V, n))
    if (G < 1).any() or (G > V).any():
        raise Refused("certificate field min_gap holds gaps outside [1, V]")
    d = {}
    for name in VOCAB_DIRECTIONS + MODEL_DIRECTIONS:
        d[name] = certificate_array(b, name, "float", (V,) if name in VOCAB_DIRECTIONS else (D,))
        if not np.isfinite(d[name]).all():
            raise Refused(f"certificate field {name} holds NaN or infinite values")
    abar = certificate_array(b, "mean_attention", "float", (V, n), required=False)
    if abar is not None and not ((abar >= 0) & (abar <= 1)).all():  # NaN fails too
        raise Refused("certificate field mean_attention holds values outside [0, 1]")
    if abar is None or attention != "mean_query+diff":
        abar = np.zeros((V, n))
    T = tables(M)
    scale = Iv.of(M.scale)
    Eq, Ek = T["Eq"], Iv.of(M.W_E) + Iv.of(M.W_pos.mean(0)[None])
    Err, err = error_bound(error, Eq, Ek, Iv.of(M.W_Q), Iv.of(M.W_K), d)
    approx = matmul(T["EqQK"], Ek.map(lambda a: a.T)) - Err  # (S2)
    EVOU, PVOU = T["EVOU"], T["PVOU"]
    Umean, Uq = direct_path(eupu, Eq, Iv.of(M.W_U), T["EUPU"], d)
    Pc = (PVOU.map(lambda a: a[:, None, :]) - PVOU.map(lambda a: a[:, :, None])).amax(0)  # [m, x]
    r = EVOU - EVOU.map(lambda a: np.diag(a)[:, None])  # [m, x]
    Lx = Umean.map(lambda a: a[None, :] - 0) - Umean.map(lambda a: a[:, None]) + Pc
    off = ~np.eye(V, dtype=bool)
    Rmax, Rmin = where(off, r, Iv.of(-np.inf)).amax(-1), where(off, r, Iv.of(np.inf)).amin(-1)
    spread = _row_range(EVOU)
    W_prefix = Iv(np.maximum.accumulate(spread.lo), np.maximum.accumulate(spread.hi))  # [j]
    top = Iv(np.maximum.accumulate(approx.lo, 1), np.maximum.accumulate(approx.hi, 1))  # [q, j]
    bottom = Iv(np.minimum.accumulate(approx.lo, 1), np.minimum.accumulate(approx.hi, 1))
    EUPU_ = T["EUPU"]
    only_max = where(off, EUPU_ - EUPU_.map(lambda a: np.diag(a)[:, None]) + r + Pc, Iv.of(-np.inf)).amax(-1)  # (S6)
    # (S4): positional scores relative to the query's (its own is 0), ascending order statistics, and the
    # logs of the summed weights of the r lowest / highest non-query slots, with or without the query's e^0
    pe = (T["EQKP"][:, : n - 1] - T["EQKP"].map(lambda a: a[:, n - 1:])) / scale  # [q, n-1]
    ordered = Iv(np.sort(pe.lo, -1), np.sort(pe.hi, -1))
    low, high = _log_sums(ordered)  # [q, r]
    zero = Iv.of(np.zeros(low.shape))
    low_q, high_q = log_sum_exp(stack([low, zero], -1), -1), log_sum_exp(stack([high, zero], -1), -1)
    base = where(off[:, None, :], Lx.map(lambda a: a[:, None, :]) + r.map(lambda a: a[:, None, :]) * Iv.of(abar[:, :, None]),
                 Iv.of(-np.inf)).amax(-1)  # [m, c]
    q, m, c = (a.reshape(-1) for a in np.meshgrid(np.arange(V), np.arange(V), np.arange(n), indexing="ij"))
    g = G[q, m, c]
    j = m - g
    is_q = q == m
    valid = (q <= m) & (is_q | ((c >= 1) & (q <= j))) & ((c == 0) | (j >= 0))
    general = valid & ~(is_q & (c == 0))
    q, m, c, j, is_q = q[general], m[general], c[general], j[general], is_q[general]
    # max slots outside the query; the non-max slots outside it are the other n-1-max_out
    max_out = np.where(is_q, n - 1 - c, n - c)
    rest = n - 1 - max_out

    def at(table, r):
        return Iv(table.lo[q, r], table.hi[q, r])

    # ρ = 0: max tokens on the lowest scores (the rest on the highest); ρ = 1 the other way round.  The
    # query (score 0) is a max slot when q = m, else a non-max slot.
    X0 = where(is_q, at(low_q, max_out), at(low, max_out))
    Y0 = where(is_q, at(high, rest), at(high_q, rest))
    X1 = where(is_q, at(high_q, max_out), at(high, max_out))
    Y1 = where(is_q, at(low, rest), at(low_q, rest))
    dmin = approx[q, m] - top[q, j] - err[q]
    dmax = approx[q, m] - bottom[q, j] + err[q]
    one = Iv.of(1.0)
    amin = (one / (one + (Y0 - X0 - dmin / scale).exp())).clip(0.0, 1.0)  # attention: in [0, 1]
    amax = (one / (one + (Y1 - X1 - dmax / scale).exp())).clip(0.0, 1.0)
    Wc = W_prefix[j]
    ab = Iv.of(abar[m, c])

    def h(a):
        delta = a - ab
        return (delta * (Rmax[m] - Wc)).maximum(delta * (Rmin[m] - Wc))

    R = base[m, c] + Uq[q] + (one - ab) * Wc + h(amin).maximum(h(amax))
    proved = R.hi < 0
    c_out = np.where(is_q, c, c - 1)
    count = sum(comb(n - 1, int(k)) * int(v + 1) ** int(k) for k, v in zip(c_out[proved], j[proved]))
    return count + int((only_max.hi < 0).sum())
