"""The cubic proof (reference §4): O(V^3 K^2) and sound.

For every query token ``q``, max token ``m`` (``q <= m``), single non-max token ``k < m`` and number ``c`` of
non-query slots holding ``k`` (the others hold ``m``), we compute the attention masses on the max slots,
the ``k`` slots and the query slot for the two extreme positional orderings (max tokens on the positions
with the lowest, resp. highest positional score), then a pessimised largest wrong logit

    L[q,m,k,c] = Upess[q] + max_ρ (A_max·EPpess[m] + A_query·EPpess[q] + A_k·EPpess[k])

where ``Upess[q] = max_{x≠m} EUPU[q,x] - EUPU[q,m]`` and ``EPpess[t] = max_{x≠m} (EVOU[t,x] - EVOU[t,m] +
max_p (PVOU[p,x] - PVOU[p,m]))``.  The cases with no non-max token outside the query (``c = 0``) are
computed exactly (with positional OV still pessimised).  Every sequence whose ``c`` non-max non-query
slots hold *any mixture* of tokens ``k`` with ``L[q,m,k,c] < 0`` is counted: ``C(K-1, c)·g^c`` per cell.

Why it is sound: the wrong-minus-right logit is at most ``Σ_i a_i (Upess[q] + EPpess[t_i])`` because the
attention sums to 1.  Its sign is that of ``Σ_i w_i (Upess + EPpess[t_i])`` with ``w_i = exp(score_i)``.
For a fixed set of max positions this is linear in the sum of the max positions' positional weights, so
the two extreme orderings bound every arrangement; and the contribution of a mixture of good ``k`` tokens
is at most that of the pure sequence of the worst of them at the same positions.

Certified: every table is an :class:`~gbmi_core.certified.Interval` enclosing its exact value, and a
cell counts only where its bound's upper end is negative.
"""

from __future__ import annotations

from math import comb

import torch

from gbmi_core import Bound
from gbmi_core.certified import Interval, check_floating_point
from gbmi_core.flops import charge

from .model import Paths, interval_paths, paths


def attention_table(P: Paths, EQKE: Interval, EQKP: Interval) -> Interval:
    """``A[ρ, w, q, m, k, c]``: attention on (w=0) max slots, (w=1) ``k`` slots, (w=2) the query slot.

    ``ρ = 0`` puts the max tokens on the lowest positional scores, ``ρ = 1`` on the highest.  ``c`` is the
    number of non-query slots holding ``k``; when ``q = m`` the query slot counts as a max slot.  Entries
    outside ``q <= m, k <= m`` are computed but meaningless.  Cost ``O(V^3 K^2)``.

    Certified: sorting intervals bounds the *order statistics* of the exact positional scores, so the
    summed weights of the lowest (highest) slots are enclosed without knowing the exact order.
    """
    V, n = P.V, P.n
    s = P.attn_scale
    e = (EQKP[:, : n - 1] / s).sort(dim=-1)  # [V(q), n-1]: non-query positional scores, ascending
    e = Interval.stack([e, e.flip(-1)])  # [2(ρ), q, n-1]
    c = torch.arange(n)
    is_max = torch.arange(n - 1)[None, :] < (n - 1 - c)[:, None]  # [n(c), n-1(slot)]
    neg_inf = float("-inf")
    # log of the summed positional weights of the max slots and of the k slots: [ρ, q, c]
    log_pos_max = Interval.where(is_max, e[:, :, None, :], neg_inf).logsumexp(-1)
    log_pos_k = Interval.where(~is_max, e[:, :, None, :], neg_inf).logsumexp(-1)
    # log total weight on each group, [ρ, q, m, k, c]: token score plus positional log-weight
    scaled = EQKE / s
    log_max = scaled[None, :, :, None, None] + log_pos_max[:, :, None, None, :]
    log_k = scaled[None, :, None, :, None] + log_pos_k[:, :, None, None, :]
    log_query = ((EQKE.diagonal() + EQKP[:, n - 1]) / s)[None, :, None, None, None]
    top = torch.maximum(torch.maximum(log_max.mid, log_k.mid), log_query.mid)  # any shift: a heuristic
    on_max, on_k, on_query = (log_max - top).exp(), (log_k - top).exp(), (log_query - top).exp()
    total = on_max + on_k + on_query
    q_is_m = torch.eye(V, dtype=torch.bool)[None, :, :, None, None]  # [1, q, m, 1, 1]
    on_max = Interval.where(q_is_m, on_max + on_query, on_max) / total
    on_query = Interval.where(q_is_m, 0.0, on_query / total)
    return Interval.stack([on_max, on_k / total, on_query], dim=1)  # [ρ, w, q, m, k, c]


def largest_wrong_logit(P: Paths, A: Interval, EUPU: Interval, EVOU: Interval, PVOU: Interval):
    """``(L [q, m, k, c], L0 [q, m])``: bounds on ``max_{x≠m} logit[x] - logit[m]`` (intervals; ``hi`` counts).

    ``L0`` covers the sequences with no non-max token outside the query (``c = 0``), computed with exact
    attention; ``L`` the rest (``k < m``, ``c >= 1``).  Cost ``O(V^3 K)``.
    """
    V = P.V
    idx = torch.arange(V)
    not_m = idx[:, None] != idx[None, :]  # [m, x]
    neg_inf = float("-inf")
    EUPUc = EUPU[None, :, :] - EUPU.T[:, :, None]  # [m, q, x] = EUPU[q,x] - EUPU[q,m]
    EVOUc = EVOU[None, :, :] - EVOU.T[:, :, None]  # [m, k, x] = EVOU[k,x] - EVOU[k,m]
    Ppess = (PVOU[None, :, :] - PVOU.T[:, :, None]).amax(1)  # [m, x]
    mask = not_m[:, None, :]  # [m, 1, x]: x ≠ m
    Upess = Interval.where(mask, EUPUc, neg_inf).amax(-1)  # [m, q]
    EPpess = Interval.where(mask, EVOUc + Ppess[:, None, :], neg_inf).amax(-1)  # [m, t]
    # c = 0, q = m: only the max token anywhere.
    only_max = Interval.where(not_m, EUPUc[idx, idx] + EVOUc[idx, idx] + Ppess, neg_inf).amax(-1)  # [m]
    # c = 0, q < m: query plus copies of m; A[ρ, w, q, m, k=m, c=0] is exact here.
    a_max = A[:, 0, :, :, 0, 0].permute(0, 2, 1)  # [ρ, m, q]  (c = 0: independent of k)
    a_query = A[:, 2, :, :, 0, 0].permute(0, 2, 1)  # [ρ, m, q]
    EVOUc_mm = EVOUc[idx, idx]  # [m, x] = EVOU[m,x] - EVOU[m,m]
    vectors = (EUPUc + Ppess[:, None, :])[None] + a_max[..., None] * EVOUc_mm[None, :, None, :] \
        + a_query[..., None] * EVOUc[None]  # [ρ, m, q, x]
    query_plus_max = Interval.where(mask[None], vectors, neg_inf).amax(-1).amax(0)  # [m, q]
    L0 = Interval.where(torch.eye(V, dtype=torch.bool), only_max[None, :], query_plus_max.T)  # [q, m]
    # c >= 1: the general case, with the extreme ordering chosen per cell.
    EP_m = EPpess[idx, idx]  # [m]
    mix = A[:, 0] * EP_m[None, None, :, None, None] + A[:, 2] * EPpess.T[None, :, :, None, None] \
        + A[:, 1] * EPpess[None, None, :, :, None]  # [ρ, q, m, k, c]
    L = Upess.T[:, :, None, None] + mix.amax(0)  # [q, m, k, c]
    return L, L0


def count_correct(L: Interval, L0: Interval, n: int) -> int:
    """Count the sequences proved correct (an exact integer): a cell counts only where its bound is
    *certainly* negative.  Cost ``O(V^2 K)`` after ``O(V^3 K)`` compares.

    Cells ``(q, m, c)`` partition all sequences: ``q = m`` with ``c <= K-1``, or ``q < m`` with ``c <= K-2``.
    """
    V = L0.shape[0]
    idx = torch.arange(V)
    q_le_m = idx[:, None] <= idx[None, :]
    correct = int(L0.certainly_negative()[q_le_m].sum())  # c = 0: one sequence per (q, m)
    k_below_m = idx[None, :, None, None] > idx[None, None, :, None]  # [1, m, k, 1]
    good = (L.certainly_negative() & k_below_m).sum(dim=2)  # [q, m, c]: |Good| = #{k < m : L[q,m,k,c] < 0}
    for c in range(1, n):
        valid = (idx[:, None] == idx[None, :]) if c == n - 1 else q_le_m
        histogram = torch.bincount(good[..., c][valid], minlength=V + 1).tolist()
        charge(2 * len(histogram), "integer counting")
        correct += sum(cells * comb(n - 1, c) * g**c for g, cells in enumerate(histogram) if cells)
    return correct


def verify(model, certificate=None, *, certified: bool = True) -> Bound:
    """The cubic proof: no search, everything computed (and counted) at verification, in certified
    interval arithmetic (``certified=False``: plain float64, for benchmarks only)."""
    check_floating_point()
    P = paths(model)
    T = interval_paths(P, certified)
    A = attention_table(P, T["EQKE"], T["EQKP"])
    L, L0 = largest_wrong_logit(P, A, T["EUPU"], T["EVOU"], T["PVOU"])
    return Bound(correct_count=count_correct(L, L0, P.n), total_count=P.V**P.n, certified=certified)


def unexplained_dimension(model) -> int:
    """EUPU, EQKE, EVOU (V^2 each) and PVOU, EQKP (K V each) are kept whole: ``3V^2 + 2KV``."""
    V, n = model.cfg.d_vocab, model.cfg.n_ctx
    return 3 * V * V + 2 * n * V
