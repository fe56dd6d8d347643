"""The cubic proof of Max-of-K, checked from its mathematics (no certificate).

Notation of :mod:`gbmi_check.max_of_k`; ``s[q,t] = EQKE[q,t]/scale``, ``p[q,i] = EQKP[q,i]/scale``.

(C1) For any input with query ``q`` and max ``m``, since the attention sums to 1,
     ``logit[x] - logit[m] <= Σ_i a_i β[q,m,t_i]`` for every ``x ≠ m``, where
     ``β[q,m,t] = Upess[q,m] + EPpess[m,t]``, ``Upess[q,m] = max_{x≠m} EUPU[q,x] - EUPU[q,m]``,
     ``EPpess[m,t] = max_{x≠m} (EVOU[t,x] - EVOU[t,m] + Ppess[m,x])``, ``Ppess[m,x] = max_i PVOU[i,x] - PVOU[i,m]``.
     So the input is correct when ``Q = Σ_i exp(s[q,t_i] + p[q,i]) β[q,m,t_i] < 0``.
(C2) Cell ``(q, m, c)``, ``c >= 1`` non-query slots holding tokens below ``m`` (the other non-query slots
     hold ``m``; ``c <= K-2`` unless ``q = m``).  For a pure cell (one token ``k < m`` in all ``c`` slots)
     ``Q`` is linear in ``X`` = the summed positional weight ``exp(p)`` of the max slots (the ``k`` slots
     have the rest of a fixed total), so its largest value over placements is at the extreme placements:
     max tokens on the lowest (ρ=0) or highest (ρ=1) positional scores.  ``k`` is *good* when both are < 0.
(C3) Mixtures: with ``T_k = exp(s[q,k]) β[q,m,k]``, a mixture of good tokens at fixed positions has
     ``Σ_j exp(p_j) T_{k_j} <= T_{k*} Σ_j exp(p_j)`` (``k*`` the good token of largest ``T``), which is the
     pure ``k*`` input at the same positions: negative by (C2).  So all ``C(K-1, c) g^c`` inputs of the
     cell whose ``c`` slots hold good tokens are correct (``g`` good tokens); cells partition the inputs.
(C4) ``c = 0``: the all-``m`` input has ``logit[x] - logit[m] <= EUPU[m,x] - EUPU[m,m] + EVOU[m,x] -
     EVOU[m,m] + Ppess[m,x]``; the query ``q < m`` with ``K-1`` copies of ``m`` has exact attention ``a_q`` on
     the query and ``logit[x] - logit[m] <= EUPU[q,x] - EUPU[q,m] + Ppess[m,x] + (1 - a_q)(EVOU[m,x] -
     EVOU[m,m]) + a_q (EVOU[q,x] - EVOU[q,m])``.
(C5) Order statistics: sorting the lower and the upper ends of intervals separately encloses the sorted
     exact values, so sums of the ``r`` smallest (largest) are enclosed by the same sums of the ends.
"""

from __future__ import annotations

from math import comb

import numpy as np

from .interval import Iv, log_sum_exp, stack, where
from .max_of_k import Model, tables


def centred_max(M: Iv, extra: Iv | None = None) -> Iv:
    """``out[r, m] = max_{x ≠ m} (M[r, x] - M[r, m] + extra[m, x])`` (``extra`` optional)."""
    V = M.shape[-1]
    terms = M.map(lambda a: a[:, None, :]) - M.map(lambda a: a[:, :, None])  # [r, m, x]
    if extra is not None:
        terms = terms + extra.map(lambda a: a[None])
    return where(np.eye(V, dtype=bool)[None], Iv.of(-np.inf), terms).amax(-1)


def diag(M: Iv) -> Iv:
    return M.map(np.diag)


def cubic(M: Model) -> int:
    V, n = M.V, M.n
    T = tables(M)
    scale = Iv.of(M.scale)
    s, p = T["EQKE"] / scale, T["EQKP"] / scale  # [q, t], [q, i]
    EUPU, EVOU, PVOU = T["EUPU"], T["EVOU"], T["PVOU"]
    Ppess = (PVOU.map(lambda a: a[:, None, :]) - PVOU.map(lambda a: a[:, :, None])).amax(0)  # [m, x]
    Upess = centred_max(EUPU)  # [q, m]
    EPpess = centred_max(EVOU, Ppess).map(lambda a: a.T)  # [m, t]
    idx = np.arange(V)
    off = idx[:, None] != idx[None, :]
    EVOUc = EVOU - diag(EVOU).map(lambda a: a[:, None])  # [m, x] = EVOU[m,x] - EVOU[m,m]
    only_max = where(off, EUPU - diag(EUPU).map(lambda a: a[:, None]) + EVOUc + Ppess, Iv.of(-np.inf)).amax(-1)
    correct = int((only_max.hi < 0).sum())  # (C4): q = m, c = 0
    # (C5): positional scores of the non-query slots, ascending order statistics; logs of summed weights
    ordered = Iv(np.sort(p.lo[:, : n - 1], -1), np.sort(p.hi[:, : n - 1], -1))  # [q, slot]
    low, high = _log_sums(ordered)  # [q, r]: log Σ exp over the r lowest / highest slots
    p_query = p[:, n - 1]
    for q in range(V):
        beta = Upess[q].map(lambda a: a[:, None]) + EPpess  # [m, t]
        s_m = s[q].map(lambda a: a[:, None])  # [m, 1]
        # (C4): q < m with K-1 copies of m: a_q = 1 / (1 + exp(s_m + log Σ_i exp(p_i) - s_q - p_q))
        aq = (Iv.of(1.0) / (Iv.of(1.0) + (s[q] + low[q, n - 1] - s[q, q] - p_query[q]).exp())).clip(0.0, 1.0)
        terms = (EUPU[q].map(lambda a: a[None, :] - a[:, None]) + Ppess
                 + EVOUc * (Iv.of(1.0) - aq).map(lambda a: a[:, None])
                 + EVOU[q].map(lambda a: a[None, :] - a[:, None]) * aq.map(lambda a: a[:, None]))  # [m, x]
        bound = where(off, terms, Iv.of(-np.inf)).amax(-1)
        correct += int(((bound.hi < 0) & (idx > q)).sum())
        # (C2), (C3), c >= 1; Q divided by the max slots' total weight exp(s_m) X:
        # Q' = β[m,m] + [q≠m] exp(s_q + p_q - s_m - log X) β[m,q] + exp(s_k - s_m + log Y - log X) β[m,k]
        for c in range(1, n):
            r = n - 1 - c  # max slots outside the query
            logX = stack([low[q, r], high[q, r]])  # [ρ]: max tokens on the lowest / highest scores
            logY = stack([high[q, c], low[q, c]])
            with_query = stack([_add_log(logX[0], p_query[q]), _add_log(logX[1], p_query[q])])
            logX_m = where((idx == q)[None, :], with_query.map(lambda a: a[:, None]),
                           logX.map(lambda a: a[:, None]))  # [ρ, m]: the query is a max slot when q = m
            query = where((idx == q)[None, :], Iv.of(0.0),
                          (s[q, q] + p_query[q] - s_m.map(lambda a: a[None, :, 0]) - logX_m).exp() * beta[:, q].map(lambda a: a[None]))
            ratio = (s[q].map(lambda a: a[None, None, :]) - s_m.map(lambda a: a[None]) + logY.map(lambda a: a[:, None, None])
                     - logX_m.map(lambda a: a[:, :, None])).exp()  # [ρ, m, k]
            Q = diag(beta).map(lambda a: a[None, :, None]) + query.map(lambda a: a[:, :, None]) + ratio * beta.map(lambda a: a[None])
            good = (Q.hi < 0).all(0) & (idx[None, :] < idx[:, None])  # [m, k]: k < m, both orderings
            valid = (idx >= q) & ((idx == q) | (r >= 1))  # q <= m; q < m needs a max outside the query
            correct += sum(comb(n - 1, c) * int(g) ** c for g in good.sum(-1)[valid])
    return correct


def _log_sums(ordered: Iv) -> tuple[Iv, Iv]:
    """``(low, high) [q, r]``: ``log Σ exp`` of the ``r`` lowest and of the ``r`` highest values (``-inf`` at r=0)."""
    k = ordered.shape[-1]
    r = np.arange(k + 1)
    lowest = r[:, None] > np.arange(k)[None, :]  # [r, slot]
    highest = r[:, None] > np.arange(k)[None, ::-1]
    def sums(mask):
        x = ordered.map(lambda a: np.where(mask[None], a[:, None, :], -np.inf))
        return log_sum_exp(x, -1)
    return sums(lowest), sums(highest)


def _add_log(a: Iv, b: Iv) -> Iv:
    """``log(exp a + exp b)``."""
    return log_sum_exp(stack([a, b], -1), -1)
