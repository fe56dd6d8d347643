"""The cubic proof (reference §4): sound, ``O(V^3 log V + V^2 K log V)``, in chunks of queries.

For every query token ``q``, max token ``m`` (``q <= m``), single non-max token ``k < m`` and number ``c`` of
non-query slots holding ``k`` (the others hold ``m``), the reference bounds the largest wrong logit by

    L[q,m,k,c] = Upess[q,m] + max_ρ (A_max·EPpess[m,m] + A_query·EPpess[m,q] + A_k·EPpess[m,k])

where ``A`` are the attention masses on the max slots, the query slot and the ``k`` slots for the two
extreme positional orderings ``ρ`` (max tokens on the positions with the lowest, resp. highest positional
score), ``Upess[q,m] = max_{x≠m} EUPU[q,x] - EUPU[q,m]`` and ``EPpess[m,t] = max_{x≠m} (EVOU[t,x] -
EVOU[t,m] + max_p (PVOU[p,x] - PVOU[p,m]))``.  The cases with no non-max token outside the query (``c = 0``)
are computed exactly (with positional OV still pessimised).  Every sequence whose ``c`` non-max non-query
slots hold *any mixture* of tokens ``k`` with ``L[q,m,k,c] < 0`` is counted: ``C(K-1, c)·g^c`` per cell.

Why it is sound: the wrong-minus-right logit is at most ``Σ_i a_i (Upess + EPpess[m, t_i])`` because the
attention sums to 1.  Its sign is that of ``Σ_i w_i (Upess + EPpess[m, t_i])`` with ``w_i = exp(score_i)``.
For a fixed set of max positions this is linear in the sum of the max positions' positional weights, so
the two extreme orderings bound every arrangement; and the contribution of a mixture of good ``k`` tokens
is at most that of the pure sequence of the worst of them at the same positions.

**How it is computed.**  ``L < 0`` is the same as (multiply by the total weight, divide by the max slots'):

    T1[ρ,q,m,c] + Z[ρ,q,m,c] · F[q,m,k] < 0,   F[q,m,k] = exp(s[q,k] - s[q,m]) · (Upess[q,m] + EPpess[m,k])

with ``s = EQKE / scale``, ``T1 = Upess + EPpess[m,m] + [q≠m] (w_query / w_max)(Upess + EPpess[m,q])`` and
``Z = w_k / (w_max · exp(s[q,k] - s[q,m])) >= 0``, a positional factor.  Only ``F`` has all three token
indices, and it has no ``c`` or ``ρ``; the left side is increasing in ``F``, so the good ``k`` of a cell
are the ``k`` with the smallest ``F``: sorting each ``F[q,m,:]`` once, a binary search per ``(q,m,c)``
finds how many pass.  That is the reference's bound, decided per ``(q,m,k,c)`` exactly as a direct test
would decide it (for ``Z >= 0`` an interval product's upper end depends only on ``F``'s upper end), at
``O(V^3)`` for ``F``, ``O(V^3 log V)`` to sort it and ``O(V^2 K log V)`` to count, instead of
``O(V^3 K^2)``.  Memory is ``O(V^2)`` per query; queries are taken in chunks that fit the memory budget
(:mod:`gbmi_core.memory`), and the count does not depend on the chunking.

Certified: every table is an :class:`~gbmi_core.certified.Interval` enclosing its exact value, and a
cell counts only where its bound's upper end is negative.
"""

from __future__ import annotations

from math import comb

import attrs
import torch

from gbmi_core import Bound
from gbmi_core.certified import Interval, check_floating_point
from gbmi_core.flops import charge

from .model import Paths, interval_paths, paths

_NEG_INF = float("-inf")


@attrs.frozen
class _Tables:
    """The ``O(V^2 K)`` tables every chunk of queries shares (intervals; ``ρ`` first where present)."""

    P: Paths
    s: Interval  # [q, k]: EQKE / scale
    lpm: Interval  # [ρ, q, c]: log of the summed positional weights of the max slots (non-query)
    lpk: Interval  # [ρ, q, c]: ... of the k slots
    lq: Interval  # [q]: the query slot's log weight, (EQKE[q,q] + EQKP[q,n-1]) / scale
    Upess: Interval  # [q, m]
    EPpess: Interval  # [m, t]
    Ppess: Interval  # [m, x]: max_p PVOU[p,x] - PVOU[p,m]
    EUPU: Interval  # [q, x]
    EVOU: Interval  # [t, x]
    only_max: Interval  # [m]: the all-m sequence, exactly


def _max_excluding_diagonal(M: Interval) -> Interval:
    """``[r, c] -> max_{x ≠ c} M[r, x]`` for a square ``M``, each end by the top-two trick: ``O(V^2)``."""
    V = M.shape[-1]

    def end(t: torch.Tensor) -> torch.Tensor:
        top = t.topk(min(2, V), dim=-1)
        first, second = top.values[..., :1], top.values[..., -1:]
        at_first = torch.arange(V)[None, :] == top.indices[..., :1]
        return torch.where(at_first, second, first)

    lo = end(M.lo)
    return Interval(lo, end(M.hi) if M.certified else lo, M.certified)


def _tables(P: Paths, T: dict, m_chunk: int) -> _Tables:
    V, n = P.V, P.n
    scale = P.attn_scale
    EQKE, EQKP, EUPU, EVOU, PVOU = T["EQKE"], T["EQKP"], T["EUPU"], T["EVOU"], T["PVOU"]
    e = (EQKP[:, : n - 1] / scale).sort(dim=-1)  # [q, n-1]: non-query positional scores, ascending
    e = Interval.stack([e, e.flip(-1)])  # [ρ, q, n-1]
    c = torch.arange(n)
    is_max = torch.arange(n - 1)[None, :] < (n - 1 - c)[:, None]  # [c, slot]
    lpm = Interval.where(is_max, e[:, :, None, :], _NEG_INF).logsumexp(-1)
    lpk = Interval.where(~is_max, e[:, :, None, :], _NEG_INF).logsumexp(-1)
    lq = (EQKE.diagonal() + EQKP[:, n - 1]) / scale
    Upess = _max_excluding_diagonal(EUPU) - EUPU  # [q, m]: max_{x≠m} EUPU[q,x] - EUPU[q,m]
    Ppess = (PVOU[None, :, :] - PVOU.T[:, :, None]).amax(1)  # [m, x]
    idx = torch.arange(V)
    parts = []
    for start in range(0, V, m_chunk):  # EPpess[m, t] = max_{x≠m} (EVOU[t,x] - EVOU[t,m] + Ppess[m,x]): O(V^3)
        m = idx[start : start + m_chunk]
        terms = EVOU[None, :, :] - EVOU.T[m][:, :, None] + Ppess[m][:, None, :]  # [M, t, x]
        parts.append(Interval.where((m[:, None] != idx[None, :])[:, None, :], terms, _NEG_INF).amax(-1))
    EPpess = Interval.cat(parts, dim=0)
    off = idx[:, None] != idx[None, :]
    EVOU_mm = EVOU - EVOU.diagonal()[:, None]  # [m, x] = EVOU[m,x] - EVOU[m,m]
    only_max = Interval.where(off, EUPU - EUPU.diagonal()[:, None] + EVOU_mm + Ppess, _NEG_INF).amax(-1)
    return _Tables(P, EQKE / scale, lpm, lpk, lq, Upess, EPpess, Ppess, EUPU, EVOU, only_max)


def _count_good_k(t: _Tables, queries: torch.Tensor) -> torch.Tensor:
    """``good[Q, m, c-1]`` for ``c = 1 .. K-1``: how many ``k < m`` pass (see module doc)."""
    V, n = t.P.V, t.P.n
    idx = torch.arange(V)
    s = t.s[queries]  # [Q, k]
    upess = t.Upess[queries]  # [Q, m]
    # F[q,m,k] = exp(s[q,k] - s[q,m]) (Upess[q,m] + EPpess[m,k]); only its upper end is needed.
    F = (s[:, None, :] - s[:, :, None]).exp() * (upess[:, :, None] + t.EPpess[None, :, :])
    F = F.hi.nan_to_num(nan=float("inf")).masked_fill(idx[None, None, :] >= idx[None, :, None], float("inf"))
    ordered = F.sort(dim=-1).values  # [Q, m, k]: the good k of a cell are a prefix of this order
    # T1 and Z, [ρ, Q, m, c] for c = 1 .. n-1
    is_q = (queries[:, None] == idx[None, :])[None, :, :, None]  # [1, Q, m, 1]
    lpm, lpk = t.lpm[:, queries, None, 1:], t.lpk[:, queries, None, 1:]  # [ρ, Q, 1, c]
    diag_s = t.s[queries, queries][None, :, None, None]  # s[q, q]
    lq = t.lq[queries][None, :, None, None]
    s_m = s[None, :, :, None]  # [1, Q, m, 1]: s[q, m]
    alpha = (upess + t.EPpess.diagonal()[None, :])[None, :, :, None]
    beta = (upess + t.EPpess.T[queries])[None, :, :, None]  # Upess[q,m] + EPpess[m,q]
    query_term = (lq - s_m - lpm).exp() * beta
    T1 = alpha + Interval.where(is_q, 0.0, query_term)
    # when q = m the query is a max slot: w_max = exp(s[q,q] + lpm) + exp(lq)
    with_query = Interval.stack([lpm.expand(2, len(queries), 1, n - 1),
                                 (lq - diag_s).expand(2, len(queries), 1, n - 1)]).logsumexp(0)
    Z = Interval.where(is_q, lpk - with_query, lpk - lpm).exp()  # [ρ, Q, m, c]
    # Binary search per (q, m, c) for the number of passing k: the largest j with ordered[j-1] passing.
    lo = torch.zeros(len(queries), V, n - 1, dtype=torch.int64)
    hi = idx[None, :, None].expand(len(queries), V, n - 1).clone()  # at most m tokens below m
    while bool((active := lo < hi).any()):
        mid = (lo + hi + 1) // 2
        f = ordered.gather(-1, (mid - 1).clamp(min=0))  # [Q, m, c]
        passes = (T1 + Z * f[None]).certainly_negative().all(0)
        lo = torch.where(active & passes, mid, lo)
        hi = torch.where(active & ~passes, mid - 1, hi)
    return lo


def _query_plus_max(t: _Tables, queries: torch.Tensor) -> Interval:
    """``[Q, m]``: the exact-attention bound for the sequences of the query plus ``K-1`` copies of ``m > q``."""
    V = t.P.V
    idx = torch.arange(V)
    # attention on the max slots, c = 0: sigmoid(s[q,m] + lpm - lq); the rest is on the query
    logit = t.s[queries][None] + t.lpm[:, queries, None, 0] - t.lq[queries][None, :, None]  # [ρ, Q, m]
    a_max, a_query = logit.sigmoid(), (-logit).sigmoid()
    EUPUc = t.EUPU[queries][:, None, :] - t.EUPU[queries][:, :, None]  # [Q, m, x]
    EVOU_mm = t.EVOU - t.EVOU.diagonal()[:, None]  # [m, x]
    EVOUq = t.EVOU[queries][:, None, :] - t.EVOU[queries][:, :, None]  # [Q, m, x] = EVOU[q,x] - EVOU[q,m]
    vectors = (EUPUc + t.Ppess[None])[None] + a_max[..., None] * EVOU_mm[None, None] + a_query[..., None] * EVOUq[None]
    off = (idx[:, None] != idx[None, :])[None, None]  # x ≠ m
    return Interval.where(off, vectors, _NEG_INF).amax(-1).amax(0)


def count_chunk(t: _Tables, queries: torch.Tensor) -> int:
    """The sequences proved correct whose query is in ``queries`` (an exact integer)."""
    V, n = t.P.V, t.P.n
    idx = torch.arange(V)
    q, m = queries[:, None], idx[None, :]
    # c = 0: only the max token (q = m), or the query plus copies of m (q < m)
    L0 = Interval.where(q == m, t.only_max[None, :], _query_plus_max(t, queries))
    correct = int((L0.certainly_negative() & (q <= m)).sum())
    good = _count_good_k(t, queries)  # [Q, m, c-1]
    for c in range(1, n):
        valid = (q == m) if c == n - 1 else (q <= m)
        histogram = torch.bincount(good[..., c - 1][valid], minlength=V + 1).tolist()
        charge(2 * len(histogram), "integer counting")
        correct += sum(cells * comb(n - 1, c) * g**c for g, cells in enumerate(histogram) if cells)
    return correct


def query_chunk(V: int, n: int) -> int:
    """Queries per chunk within the memory budget: about ``40 V^2 + 8 V K`` float64 numbers alive per query
    (``F`` and its sort, the ``c = 0`` table over both orderings), plus ``O(V^2 K)`` shared tables.  Never
    more than about a million entries per ``[Q, V, V]`` table: larger chunks only fall out of the caches
    (at V=512, 4 queries per chunk ran in 25 s, 16 in 50 s)."""
    from gbmi_core.memory import chunk_size

    return min(max(1, 2**20 // (V * V)), chunk_size(V, 8 * (40 * V * V + 8 * V * n), fixed=8 * 60 * V * V + 8 * 16 * V * n,
                      what=f"the cubic proof at V={V}, K={n}"))


def verify(model, certificate=None, *, certified: bool = True, chunk: int | None = None) -> Bound:
    """The cubic proof: no search, everything computed (and counted) at verification, in certified
    interval arithmetic (``certified=False``: plain float64, for benchmarks only), ``chunk`` queries at a
    time (default: as many as the memory budget allows)."""
    check_floating_point()
    P = paths(model)
    chunk = chunk or query_chunk(P.V, P.n)
    t = _tables(P, interval_paths(P, certified), chunk)
    correct = sum(count_chunk(t, torch.arange(start, min(P.V, start + chunk))) for start in range(0, P.V, chunk))
    return Bound(correct_count=correct, total_count=P.V**P.n, certified=certified)


def unexplained_dimension(model) -> int:
    """EUPU, EQKE, EVOU (V^2 each) and PVOU, EQKP (K V each) are kept whole: ``3V^2 + 2KV``."""
    V, n = model.cfg.d_vocab, model.cfg.n_ctx
    return 3 * V * V + 2 * n * V
