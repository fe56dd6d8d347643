"""The subcubic proof family (reference §5): 5 direct-path × 2 attention × 10 attention-error handlings.

Conventions (as in the reference's subcubic proofs): ``c`` counts *all* tokens other than the max ``m``,
the query included when ``q ≠ m``.  A **min-gap table** ``G[q, m, c] >= 1`` (found by search, handed to
verification in the certificate) restricts the cell ``(q, m, c)`` to sequences whose non-max tokens are all
``<= m - G``; the bounds of the cell hold for every such token.

Verification, for any certificate (a wrong one can only lower the bound):

1. **EQKE decomposition** (axis ``attention_error``): ``EQKE' = Eq W_Q W_Kᵀ (W_E + P̄)ᵀ = approx + Err``
   with a per-query bound ``B[q] >= |Err[q,i] - Err[q,j]|``.  Every split is an exact identity for *any*
   directions from the certificate (``X = uuᵀX + (X - uuᵀX)``), so the directions need no checking.
2. **Pre-softmax gaps**: ``Δmin <= EQKE'[q,m] - EQKE'[q,k] <= Δmax`` for every allowed ``k``, from prefix
   max/min of ``approx`` over ``k <= m - G`` and ``± B[q]``.  The positional part ``EQKP - EQKP[:, -1]`` is
   exact.
3. **Attention on the max** ``amin <= a <= amax``: every non-max slot at the worst (best) gap, the max tokens
   on the lowest (highest) positional scores; the attention on the max is monotone in each gap and, for a
   fixed set of max positions, in the sum of their positional weights.
4. **Largest wrong logit** ``R[q,m,c] >= max_{x≠m} logit[x] - logit[m]`` (axes ``eupu`` and ``attention``):
   ``logit[x] - logit[m] <= Lx[x] + Uq[q] + a·r[x] + (1-a)·W`` with ``Lx = Umean[x] - Umean[m] +
   max_p (PVOU[p,x] - PVOU[p,m])``, ``r[x] = EVOU[m,x] - EVOU[m,m]``, ``W = max_{k<=m-G} (max EVOU[k] - min
   EVOU[k])``.  Writing ``a = ā + (a - ā)`` for any ``ā`` (the mean over queries, or 0 when "dropped"),
   ``R = max_x (Lx[x] + ā r[x]) + (1-ā) W + Uq[q] + max(h(amin), h(amax))`` where
   ``h(a) = (a-ā)(Rmax - W)`` for ``a >= ā`` and ``(a-ā)(Rmin - W)`` for ``a < ā``.  **This fixes the
   reference's NOTE 3**: the research code always used ``Rmax``, which understates the worst case when a
   query attends to the max less than the mean.  ``h`` is convex in ``a``, so its two endpoints bound it.
   ``W`` is taken per cell with the cell's own gap (the reference used the min gap over all queries, NOTE 5:
   also sound, looser).
5. **Counting**: a cell with ``R < 0`` proves ``C(K-1, c')·(m - G + 1)^c'`` sequences, ``c'`` the non-max
   tokens outside the query.  **Tightening of NOTE 2**: the reference counts ``(m - G)^c'``, but steps 2–4
   hold for every token in ``[0, m - G]`` (the prefix max/min and ``W`` include index ``m - G``), which is
   ``m - G + 1`` values; the test ``test_every_counted_sequence_is_correct`` enumerates each counted
   sequence and checks it against brute force.

Verification is certified: every quantity is an :class:`~gbmi_core.certified.Interval` enclosing its
exact value, and a cell counts only where ``R`` is certainly negative.  Search runs the same code on plain
floats (``certified=False``).
"""

from __future__ import annotations

from math import comb

import attrs
import numpy as np
import torch

from gbmi_core import Bound, CertificateRejected
from gbmi_core.certified import Interval, check_floating_point, matmul
from gbmi_core.flops import charge
from gbmi_core.memo import counted_memo

from .model import Paths, interval_paths, paths
from .options import _RECURSIVE, ALL_OPTIONS, SubcubicOptions  # noqa: F401 - re-exported

#: Reproduce the research code's NOTE 3 rule instead of the sound one.  Only tests set this, to show that
#: their adversarial weights really exercise the case; no registered strategy uses it.
_REFERENCE_NOTE_3 = False

_DIRECTIONS = ("query_direction", "key_direction", "second_query_direction", "second_key_direction",
               "W_Q_direction", "W_K_direction", "W_EP_direction")


# ------------------------------------------------------------------------------------------------------
# Search (free)


def _top_left_singular(M: torch.Tensor) -> torch.Tensor:
    U, _, _ = torch.linalg.svd(M, full_matrices=False)
    u = U[:, 0]
    return u if u.sum() >= 0 else -u


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    cumulative = weights[order].cumsum(0)
    return values[order][(cumulative >= cumulative[-1] / 2).nonzero()[0, 0]]


def find_directions(P: Paths) -> dict[str, np.ndarray]:
    """The directions the proofs split along (any values give a sound proof; these make it tight)."""
    Ek = P.W_E + P.W_pos.mean(0)  # [V, D]: key side with the mean position
    Eq = P.Eq  # [V, D]
    EQKE = Eq @ P.QK @ Ek.T
    U, S, Vh = torch.linalg.svd(EQKE)
    sign = 1.0 if U[:, 0].mean() >= 0 else -1.0
    u, v = sign * U[:, 0], sign * Vh[0]  # vocab-space query and key (size) directions
    u2 = _top_left_singular(Eq - torch.outer(u, u @ Eq))
    v2 = _top_left_singular(Ek - torch.outer(v, v @ Ek))
    wq, wk = _top_left_singular(P.W_Q), _top_left_singular(P.W_K)
    # EUPU direction r̄ (for svd_query+max_diff): along the top right singular vector d of W_EP, scaled by
    # the weighted median that minimises Σ_q Σ_d |W_EP[q,d] - r̄_d| · range_x W_U[d, x] along d.  The
    # reference's direction is unnormalised and nearly vacuous (its NOTE 12); any r̄ is sound.
    d = torch.linalg.svd(Eq, full_matrices=False).Vh[0]
    spread = P.W_U.amax(1) - P.W_U.amin(1)  # [D]
    keep = d.abs() > 1e-12
    ratios = (Eq[:, keep] / d[keep]).reshape(-1)
    weights = (d[keep].abs() * spread[keep]).expand(Eq.shape[0], -1).reshape(-1)
    rbar = _weighted_median(ratios, weights) * d
    found = {"query_direction": u, "key_direction": v, "second_query_direction": u2, "second_key_direction": v2,
             "W_Q_direction": wq, "W_K_direction": wk, "W_EP_direction": rbar}
    return {name: value.numpy() for name, value in found.items()}


def search(model, options: SubcubicOptions) -> dict:
    """Directions, the min-gap table (per cell, the smallest gap whose bound proves it) and, for
    ``mean_query+diff``, the point ``ā[m, c]`` the bound splits the attention around.

    The gap is found by a binary search per cell, which is exact because, for a fixed ``ā`` in [0, 1],
    whether a cell is proved is monotone in its gap ``G``: a larger gap allows a subset of the non-max
    tokens, so the prefix max (min) of ``approx`` over ``k <= m - G`` can only fall (rise), hence
    ``amin`` rises and ``amax`` falls (the interval ``[amin, amax]`` shrinks, and the convex ``h`` over a
    smaller interval has a smaller maximum), and ``W`` (a prefix max) can only fall, with weight
    ``1 - ā >= 0``.  Every other term of ``R`` is independent of ``G``; plain floating point keeps this
    order (rounding is monotone).  The valid gaps of a cell are ``1 .. m - q`` (``1 .. m`` when the query
    is the max), so at most ``log2 V + 1`` evaluations of ``R`` per cell suffice, each step evaluating only
    the cells still searching: memory ``O(V^2 K)``, in chunks of cells that fit the memory budget.

    ``ā`` (any value gives a sound bound, so it is part of the certificate) is picked per ``(m, c)``: each
    candidate in :data:`MEAN_ATTENTION_CANDIDATES` gets its own gap search, and each ``(m, c)`` keeps the
    candidate under which its cells prove the most sequences (cells of different ``(m, c)`` do not
    interact).  On the shipped model this proves 0.9 to 9% more than the research code's rule (the mean
    over queries of the extreme attention), which also needed every gap's bound at once.
    """
    P = paths(model)
    directions = shared_directions(model, P)
    parts = _precompute(P, options, {k: torch.from_numpy(v) for k, v in directions.items()}, certified=False)
    V, n = P.V, P.n
    chunk = _cell_chunk(V, n, "subcubic proof search")
    if options.attention != "mean_query+diff":
        return {"min_gap": _smallest_proving_gaps(parts, None, chunk)[0].to(torch.int16).numpy(), **directions}
    best_gain = best_G = best_abar = None
    for value in MEAN_ATTENTION_CANDIDATES:
        abar = torch.full((V, n), value, dtype=torch.float64)
        G, proved = _smallest_proving_gaps(parts, abar, chunk)
        gain = _proved_per_column(proved, G, n)  # [m, c]
        if best_gain is None:
            best_gain, best_G, best_abar = gain, G, abar
            continue
        better = gain > best_gain
        best_gain = torch.where(better, gain, best_gain)
        best_G = torch.where(better[None], G, best_G)
        best_abar = torch.where(better, abar, best_abar)
    return {"min_gap": best_G.to(torch.int16).numpy(), "mean_attention": best_abar.numpy(), **directions}


#: The values of ``ā`` the search tries (per ``(m, c)`` it keeps the best): trained models attend mostly to
#: the max, weaker ones about half.
MEAN_ATTENTION_CANDIDATES = (0.9, 0.5)


def _cell_chunk(V: int, n: int, what: str) -> int:
    """How many cells to evaluate at once: about 1 KB is alive per cell at the peak of
    :func:`_largest_wrong_logit` (some 60 float64 intervals), besides the ``O(V^2 + V K)`` tables of
    :class:`_Parts` and the ``[V, K, V]`` table of :func:`_base`, taken ``2^18`` entries at a time.  Never
    more than ``2^18`` cells: larger tables only fall out of the caches."""
    from gbmi_core.memory import chunk_size

    return min(2**18, chunk_size(V * V * n, 1024, fixed=40 * 16 * V * V + 6 * 16 * 2**18,
                                 what=f"{what} at V={V}, K={n}"))


def _gap_limit(q: torch.Tensor, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The largest valid gap of each cell (``m - q``, or ``m`` when ``q = m``; 0 when ``c = 0`` or ``q > m``)."""
    limit = torch.where(q == m, m, m - q).clamp(min=0)
    return torch.where(c == 0, torch.zeros_like(limit), limit)


def _smallest_proving_gaps(parts: _Parts, abar, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell, the smallest gap in ``1 .. limit`` that proves it, else 1 (binary search; see :func:`search`),
    and whether one does.

    Cells with ``q > m`` or ``c = 0`` are never evaluated; the gap-independent terms of the others are
    computed once (:func:`_cell_terms`), and the cells still searching are compacted once they are fewer
    than half of those evaluated."""
    V, n = parts.P.V, parts.P.n
    base = _base(parts, abar)
    q, m, c = (axis.reshape(-1) for axis in torch.meshgrid(torch.arange(V), torch.arange(V), torch.arange(n),
                                                           indexing="ij"))
    G = torch.ones(V * V * n, dtype=torch.int64)
    proved_at_G = torch.zeros(V * V * n, dtype=torch.bool)
    limit = _gap_limit(q, m, c)
    for start in range(0, V * V * n, chunk):
        cells = start + (limit[start : start + chunk] > 0).nonzero().squeeze(1)
        terms = _cell_terms(parts, q[cells], m[cells], c[cells], base)
        top = limit[cells]
        lo, hi = torch.ones_like(cells), top + 1  # hi: the smallest gap known to prove; top + 1: none known

        def record(where):
            found = where & (hi <= top)
            G[cells[found]] = hi[found]
            proved_at_G[cells[found]] = True

        while bool((active := lo < hi).any()):
            if 2 * int(active.sum()) < len(cells):
                record(~active)
                cells, lo, hi, top, terms = cells[active], lo[active], hi[active], top[active], terms.select(active)
                continue
            mid = (lo + hi) // 2
            R, valid = _cell_R(parts, terms, mid)
            proved = valid & R.certainly_negative() & active
            hi = torch.where(proved, mid, hi)
            lo = torch.where(proved | ~active, lo, mid + 1)
        record(torch.ones_like(active))
    return G.reshape(V, V, n), proved_at_G.reshape(V, V, n)


def _proved_cells(parts: _Parts, q, m, c, G, base, chunk: int) -> torch.Tensor:
    """For flat lists of cells, whether each one's bound is certainly negative (``chunk`` cells at a time)."""
    out = torch.zeros(len(q), dtype=torch.bool)
    for start in range(0, len(q), chunk):
        part = slice(start, start + chunk)
        R, valid = _cell_R(parts, _cell_terms(parts, q[part], m[part], c[part], base), G[part])
        out[part] = valid & R.certainly_negative()
    return out


def _proved(parts: _Parts, G: torch.Tensor, abar, chunk: int) -> torch.Tensor:
    """``[V, V, K]`` bool: the cells whose bound is certainly negative (only valid cells are evaluated)."""
    V, n = parts.P.V, parts.P.n
    q, m, c, _, valid = _cells(V, n, G)
    q, m, c = (axis.expand(V, V, n)[valid] for axis in (q, m, c))
    out = torch.zeros(V, V, n, dtype=torch.bool)
    out[valid] = _proved_cells(parts, q, m, c, G[valid], _base(parts, abar), chunk)
    return out


def _mean_attention(parts: _Parts, G: torch.Tensor) -> torch.Tensor:
    """``ā[m, c]``: over the valid queries, the mean of the attention extreme that hurts most (float64).

    The rule of the research code (and of certificates made before ``ā`` was part of them)."""
    V, n = parts.P.V, parts.P.n
    q, m, c, is_q, valid = _cells(V, n, G)
    amin, amax = _attention_bounds(parts, G, q, m, c, is_q, valid)
    W = parts.spread_prefix.mid[(m - G).clamp(min=0)]
    pick = torch.where(parts.Rmax.mid[m] >= W, amax.mid, amin.mid)
    total = torch.where(valid, pick, 0.0).nan_to_num(0.0).sum(0)
    count = valid.expand_as(pick).sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), 0.0)


_SHARED: dict[str, dict] = {}


def shared_directions(model, P: Paths) -> dict[str, np.ndarray]:
    """:func:`find_directions`, computed once per model (by weights hash) and process."""
    from gbmi_core.models import model_hash

    key = model_hash(model)
    if key not in _SHARED:
        if len(_SHARED) > 8:
            _SHARED.clear()
        _SHARED[key] = find_directions(P)
    return _SHARED[key]


# ------------------------------------------------------------------------------------------------------
# Verification (counted)


@attrs.frozen
class _Parts:
    """Everything the cells' bounds need, computed once per verification (intervals; see module doc)."""

    P: Paths
    options: SubcubicOptions
    approx: Interval  # [V(q), V(k)]: EQKE' ≈ approx, |Err[q,i] - Err[q,j]| <= err[q]
    err: Interval  # [V(q)]
    pos: Interval  # [V(q), n-1]: EQKP[q,p] - EQKP[q,n-1], p < n-1, order statistics ascending
    Lx: Interval  # [V(m), V(x)]: Umean[x] - Umean[m] + max_p (PVOU[p,x] - PVOU[p,m])
    r: Interval  # [V(m), V(x)]: EVOU[m,x] - EVOU[m,m]
    Uq: Interval  # [V(q)]
    spread_prefix: Interval  # [V(j)]: max_{k<=j} (max_x EVOU[k,x] - min_x EVOU[k,x])
    only_max: Interval  # [V(m)]: exact bound for the sequence of all m
    prefix_max: Interval  # [V(q), V(k)]: max_{k' <= k} approx[q, k']
    prefix_min: Interval  # [V(q), V(k)]: min_{k' <= k} approx[q, k']
    log_max: Interval  # [ρ, 2, V(q), n(c)]: log of the max slots' positional weight; second axis: q is the max
    log_non: Interval  # [ρ, 2, V(q), n(c)]: ... of the non-max slots
    Rmax: Interval  # [V(m)]: max_{x≠m} r[m, x]
    Rmin: Interval  # [V(m)]: min_{x≠m} r[m, x]


def _row_range(M: Interval) -> Interval:
    return M.amax(-1) - M.amin(-1)


def _outer(a, b) -> Interval:
    """``a bᵀ`` for vectors, either an interval or an exact tensor."""
    if isinstance(a, Interval):
        return a[:, None] * b[None, :]
    return b[None, :] * a[:, None]


def _max_diff(L: Interval, R: Interval, mean: bool) -> Interval:
    """Per row r of ``L @ R``: a bound on its max - min, without forming the product.  ``O(rows·inner + inner·cols)``"""
    if not mean:
        return L.abs() @ _row_range(R)
    centre = L.mean(0)
    return _row_range(centre @ R) + (L - centre).abs() @ _row_range(R)


def _recursive(Ms: list[Interval], mean_levels: int) -> Interval:
    """Row-range bound of ``Ms[0] @ ... @ Ms[-1]`` by recursion, the mean trick on the first ``mean_levels``."""
    if len(Ms) == 1:
        return _row_range(Ms[0])
    inner = _recursive(Ms[1:], mean_levels - 1)
    if mean_levels <= 0:
        return Ms[0].abs() @ inner
    centre = Ms[0].mean(0)
    tail = centre
    for M in Ms[1:]:
        tail = tail @ M
    return _row_range(tail) + (Ms[0] - centre).abs() @ inner


def _proj(w: torch.Tensor, M: Interval) -> Interval:
    """Rows of ``M`` projected on the exact vector ``w`` (left side): ``w (wᵀ M)``, as a dense matrix."""
    return _outer(w, matmul(w, M))


def decompose_eqke(P: Paths, how: str, d: dict, T: dict) -> tuple[Interval, Interval]:
    """``(approx [V, V], err [V])`` with ``EQKE' = approx + Err`` and ``|Err[q,i] - Err[q,j]| <= err[q]``.

    ``T`` holds the model's path intervals (:func:`~gbmi_max_of_k.model.interval_paths`).  The key side uses
    ``W_E + P̄`` for the float64 mean ``P̄`` of ``W_pos``: any vector serves, since it cancels in every
    difference of two keys' scores.
    """
    V = P.V
    Eq = T["Eq"]
    certified = Eq.certified
    Ek = Interval.exact(P.W_E, certified) + P.W_pos.mean(0)  # W_E + P̄
    if how == "exact_EQKE+max_diff_exact":
        return matmul(T["EqQK"], Ek.T), Interval.exact(torch.zeros(V, dtype=torch.float64), certified)
    if how in {"svd", "max_diff", "mean+max_diff", "max_diff_exact"}:
        A, B = T["EqQK"], Ek.T  # [V, D], [D, V]; EQKE' = A B
        u, v = d["query_direction"], d["key_direction"]
        uA = matmul(u, A)  # [D]
        Bv = B @ v  # [D]
        Ar = A - _outer(u, uA)  # (I - uuᵀ) A
        Br = B - _outer(Bv, v)  # B (I - vvᵀ)
        # AB = uuᵀAB + (I-uuᵀ)AB vvᵀ + Ar Br, exactly, for any u and v.
        approx = _outer(u, uA @ B) + _outer(Ar @ Bv, v)
        if how == "svd":
            # |e_qᵀ Err (e_i - e_j)| <= √2 ‖Ar Br‖₂, with the spectral norm certified (see spectral_norm_bound).
            return approx, (spectral_norm_bound(Ar @ Br) * Interval.exact(2.0, certified).sqrt()).expand(V)
        if how == "max_diff_exact":
            return approx, _row_range(Ar @ Br)
        return approx, _max_diff(Ar, Br, mean=how == "mean+max_diff")
    # The subproduct family: split Eq, Ek on vocab directions and W_Q, W_K on d_model directions.
    W_Q, W_K = Interval.exact(P.W_Q, certified), Interval.exact(P.W_K, certified)
    Q1 = _proj(d["query_direction"], Eq)
    Qp = Eq - Q1
    Q2 = _proj(d["second_query_direction"], Qp)
    Qpp = Qp - Q2
    K1 = _proj(d["key_direction"], Ek)
    Kp = Ek - K1
    K2 = _proj(d["second_key_direction"], Kp)
    Kpp = Kp - K2
    WQ1 = _proj(d["W_Q_direction"], W_Q)
    WQp = W_Q - WQ1
    WK1 = _proj(d["W_K_direction"], W_K)
    WKp = W_K - WK1
    # Every term but the last has a rank-1 factor; they are evaluated vector-first (O(VD + V^2) each).
    u, v = d["query_direction"], d["key_direction"]
    u2, v2 = d["second_query_direction"], d["second_key_direction"]
    wq, wk = d["W_Q_direction"], d["W_K_direction"]

    def W(x):  # W_Q W_Kᵀ x, without forming W_Q W_Kᵀ
        return W_Q @ (W_K.T @ x)

    qW = matmul(matmul(u, Eq), W_Q) @ P.W_K.T  # [D]: the row of Q1 W, up to the factor u
    approx = _outer(u, Ek @ qW)  # Q1 W Ekᵀ = Q1 W K1ᵀ + Q1 W K⊥ᵀ
    approx = approx + _outer(Qp @ W(matmul(v, Ek)), v)  # Q⊥ W K1ᵀ
    q2W = matmul(matmul(u2, Qp), W_Q) @ P.W_K.T
    approx = approx + _outer(u2, Kp @ q2W)  # Q2 W K⊥ᵀ = Q2 W K2ᵀ + Q2 W K⊥⊥ᵀ
    approx = approx + _outer(Qpp @ W(matmul(v2, Kp)), v2)  # Q⊥⊥ W K2ᵀ
    left = Qpp @ wq  # [V]: Q⊥⊥ WQ1 = (Q⊥⊥ wq)(wqᵀ W_Q)
    approx = approx + _outer(left, Kpp @ (W_K @ matmul(wq, W_Q)))  # Q⊥⊥ WQ1 W_Kᵀ K⊥⊥ᵀ
    right = Kpp @ wk  # [V]: K⊥⊥ WK1 = (K⊥⊥ wk)(wkᵀ W_K)
    approx = approx + _outer(Qpp @ (WQp @ matmul(wk, W_K)), right)  # Q⊥⊥ WQ⊥ WK1ᵀ K⊥⊥ᵀ
    Ms = [Qpp, WQp, WKp.T, Kpp.T]  # Err = M0 M1 M2 M3, exactly
    if how in _RECURSIVE:
        levels = {"max_diff_subproduct_recursive": 0, "mean+max_diff_subproduct_recursive": 1,
                  "mean_recursive+max_diff_subproduct_recursive": len(Ms)}[how]
        return approx, _recursive(Ms, levels)
    mean = how == "mean+max_diff_subproduct"
    lefts = [Ms[0], Ms[0] @ Ms[1], (Ms[0] @ Ms[1]) @ Ms[2]]
    rights = [(Ms[1] @ Ms[2]) @ Ms[3], Ms[2] @ Ms[3], Ms[3]]
    bounds = Interval.stack([_max_diff(L, R, mean) for L, R in zip(lefts, rights)])
    return approx, bounds.amin(0)


def spectral_norm_bound(X: Interval) -> Interval:
    """A certified upper bound on the largest singular value of every matrix in ``X`` (a point interval).

    The numeric ``σ̂`` is only a guess; ``t = σ̂²(1 + ε)`` is proved to bound ``λ_max(XᵀX)`` by running
    Cholesky on ``t I - XᵀX`` in interval arithmetic: if every pivot is certainly positive, every
    symmetric matrix in the interval matrix is positive definite (Alefeld and Mayer, 1993).  Should the
    check fail for every ``ε`` tried, the Frobenius norm (always an upper bound) is used.
    """
    if not X.certified:
        return Interval.exact(torch.linalg.matrix_norm(X.mid, ord=2), certified=False)
    if not bool(X.lo.any()) and not bool(X.hi.any()):  # exactly the zero matrix: its norm is 0
        return Interval.exact(torch.zeros((), dtype=torch.float64))
    gram = X.T @ X
    guess = float(torch.linalg.matrix_norm(X.mid, ord=2)) ** 2
    for eps in (2.0**-30, 2.0**-20, 2.0**-10):
        t = guess * (1 + eps) + 2.0**-1000
        if _certainly_positive_definite(Interval.exact(torch.eye(gram.shape[0], dtype=torch.float64) * t) - gram):
            return Interval.exact(torch.tensor(t, dtype=torch.float64)).sqrt()
    magnitude = X.abs()  # squares of |X| keep the lower end >= 0, so the square root is never NaN
    return (magnitude * magnitude).sum(1).sum(0).sqrt()


def _certainly_positive_definite(A: Interval) -> bool:
    """Interval Cholesky: every pivot's lower end positive means every symmetric member is positive definite
    (each step replaces ``A`` by its Schur complement ``A22 - a a ᵀ``, ``a = A21 / √A11``)."""
    while A.shape[0]:
        pivot = A[0, 0]
        if not bool(pivot.certainly_positive()):
            return False
        column = A[1:, 0] / pivot.sqrt()
        A = A[1:, 1:] - column[:, None] * column[None, :]
    return True


def direct_path(P: Paths, how: str, d: dict, T: dict) -> tuple[Interval, Interval]:
    """``(Umean [V], Uq [V])`` with ``EUPU[q,x] - EUPU[q,m] <= Umean[x] - Umean[m] + Uq[q]``."""
    W_EP, W_U = T["Eq"], Interval.exact(P.W_U, T["Eq"].certified)
    V = P.V
    if how in {"max_diff_exact", "global_max_diff_exact"}:
        spread = _row_range(T["EUPU"])
        if how == "global_max_diff_exact":
            spread = (T["EUPU"].amax(-1).amax(0) - T["EUPU"].amin(-1).amin(0)).expand(V)
        return Interval.exact(torch.zeros(V, dtype=torch.float64), W_EP.certified), spread
    if how == "max_diff":
        rbar = torch.zeros(P.D, dtype=torch.float64)
    elif how == "mean_query+max_diff":
        rbar = W_EP.mid.mean(0)  # any vector is sound; the float mean is as good as the exact one
    else:  # svd_query+max_diff
        rbar = d["W_EP_direction"]
    return matmul(rbar, W_U), (W_EP - rbar).abs() @ _row_range(W_U)


def _precompute(P: Paths, options: SubcubicOptions, d: dict, certified: bool = True) -> _Parts:
    """The tables every cell bound reads.  Built from three steps that many strategies share (the model's own
    tables; the EQKE decomposition; the direct path), each computed once per process for the same weights and
    directions (:func:`~gbmi_core.memo.counted_memo`: fresh copies, the same FLOPs charged every time)."""
    M = _model_tables(P, certified)
    T = {name: M["T"][name] for name in ("Eq", "EqQK", "EUPU")}  # what the other two steps read of the paths
    A = _attention_tables(P, options.attention_error, d, T)
    Lx, Uq = _direct_tables(P, options.eupu, d, T, M["Pc"])
    return _Parts(P, options, A["approx"], A["err"], M["pos"], Lx, M["r"], Uq, M["spread_prefix"], M["only_max"],
                  A["prefix_max"], A["prefix_min"], M["log_max"], M["log_non"], M["Rmax"], M["Rmin"])


@counted_memo
def _model_tables(P: Paths, certified: bool) -> dict:
    """What depends on the weights alone: the path intervals, the positional scores and weights, the OV
    differences and their ranges, the all-m sequences' bound."""
    V, n = P.V, P.n
    T = interval_paths(P, certified)
    EQKP = T["EQKP"]  # [V, n]; P̄ cancels in differences, so EQKP serves for EQKPerr
    pos = (EQKP[:, : n - 1] - EQKP[:, n - 1 :]).sort(dim=-1)
    EVOU, PVOU = T["EVOU"], T["PVOU"]  # [V, V], [n, V]
    Pc = (PVOU[None, :, :] - PVOU.T[:, :, None]).amax(1)  # [m, x]: max_p PVOU[p,x] - PVOU[p,m]
    r = EVOU - EVOU.diagonal()[:, None]  # [m, x]
    # The all-m sequence, with the exact direct path row (O(V^2 D) over all m); its Umean terms cancel.
    EUPU = T["EUPU"]
    off = ~torch.eye(V, dtype=torch.bool)
    only_max = Interval.where(off, EUPU - EUPU.diagonal()[:, None] + r + Pc, float("-inf")).amax(-1)
    log_max, log_non = _positional_log_weights(pos / P.attn_scale)
    return {"T": T, "pos": pos, "Pc": Pc, "r": r, "spread_prefix": _row_range(EVOU).cummax(0), "only_max": only_max,
            "log_max": log_max, "log_non": log_non, "Rmax": Interval.where(off, r, float("-inf")).amax(-1),
            "Rmin": Interval.where(off, r, float("inf")).amin(-1)}


@counted_memo
def _attention_tables(P: Paths, how: str, d: dict, T: dict) -> dict:
    """The EQKE decomposition ``how`` and its running extremes over the keys.  (A step never calls another
    step: each one's FLOPs are charged in full on every call.)"""
    approx, err = decompose_eqke(P, how, d, T)
    return {"approx": approx, "err": err, "prefix_max": approx.cummax(1), "prefix_min": approx.cummin(1)}


@counted_memo
def _direct_tables(P: Paths, how: str, d: dict, T: dict, Pc: Interval) -> tuple[Interval, Interval]:
    """``(Lx [m, x], Uq [q])``: the direct path's bound ``how`` with the positional OV term ``Pc`` folded in."""
    Umean, Uq = direct_path(P, how, d, T)
    return Umean[None, :] - Umean[:, None] + Pc, Uq


def _positional_log_weights(e: Interval) -> tuple[Interval, Interval]:
    """From the ascending scaled positional scores ``e [q, n-1]`` of the non-query slots (relative to the
    query's), the log of the summed positional weights of the max slots and of the non-max slots:
    ``[ρ, is_q, q, c]``.  ``ρ = 0`` puts the max tokens on the lowest scores, ``ρ = 1`` on the highest;
    ``is_q = 1`` when the query is the max (then it is a max slot, of positional score 0)."""
    n = e.shape[-1] + 1
    e = Interval.stack([e, e.flip(-1)])  # [ρ, q, n-1]
    slot = torch.arange(n - 1)
    # query is not the max: n - c max slots among the non-query ones; the query (positional 0) is non-max
    is_max_nq = slot[None, :] < (n - torch.arange(n)).clamp(max=n - 1)[:, None]  # [c, slot]
    # query is the max: it is a max slot (positional 0) plus n - c - 1 non-query max slots
    is_max_q = slot[None, :] < (n - 1 - torch.arange(n))[:, None]

    def logw(mask, with_query):  # [ρ, q, c]
        terms = Interval.where(mask, e[:, :, None, :], float("-inf"))
        if with_query:
            zero = Interval.exact(torch.zeros(terms.shape[:-1] + (1,), dtype=torch.float64), terms.certified)
            terms = Interval.cat([terms, zero], dim=-1)
        return terms.logsumexp(-1)

    log_max = Interval.stack([logw(is_max_nq, False), logw(is_max_q, True)], dim=1)
    log_non = Interval.stack([logw(~is_max_nq, True), logw(~is_max_q, False)], dim=1)
    return log_max, log_non


def _cells(V: int, n: int, G: torch.Tensor):
    """Index grids ``q, m, c`` ([V, 1, 1], [1, V, 1], [1, 1, n]) and the validity mask of each cell."""
    q = torch.arange(V)[:, None, None]
    m = torch.arange(V)[None, :, None]
    c = torch.arange(n)[None, None, :]
    return q, m, c, q == m, _valid(q, m, c, G)


def _valid(q, m, c, G) -> torch.Tensor:
    return (q <= m) & ((q == m) | ((c >= 1) & (m - q >= G))) & ((c == 0) | (m >= G))


def _attention_bounds(parts: _Parts, G: torch.Tensor, q, m, c, is_q, valid):
    """``(amin, amax)``: bounds on the total attention on the max token's slots of the cells ``(q, m, c)``
    with gaps ``G`` (index tensors that broadcast together: grids, or flat lists of cells)."""
    amin, amax = _attention(parts, _cell_terms(parts, q, m, c, None), (m - G).clamp(min=0))
    return Interval.where(valid, amin, float("nan")), Interval.where(valid, amax, float("nan"))


def _attention(parts: _Parts, t: "_CellTerms", j: torch.Tensor) -> tuple[Interval, Interval]:
    """``(amin, amax)`` of the cells ``t`` when every non-max token is at most ``j``: the gap of the max
    token's score over the others' is at least ``approx[q,m] - max_{k<=j} approx[q,k] - err[q]`` and at most
    ``approx[q,m] - min_{k<=j} approx[q,k] + err[q]``; a = sigmoid(log X + gap/s - log Y) for the max slots'
    and the other slots' positional weights X, Y (no other slot: lnon = -inf gives 1)."""
    s = parts.P.attn_scale
    gap_min = t.diag - parts.prefix_max[t.q, j] - t.err
    gap_max = t.diag - parts.prefix_min[t.q, j] + t.err
    return (t.lmax[0] + gap_min / s - t.lnon[0]).sigmoid(), (t.lmax[1] + gap_max / s - t.lnon[1]).sigmoid()


@attrs.frozen
class _CellTerms:
    """What the bound of a cell ``(q, m, c)`` needs that does not depend on its gap (broadcastable index
    tensors, or flat lists of cells; ``ρ`` first in ``lmax``/``lnon``)."""

    q: torch.Tensor
    m: torch.Tensor
    c: torch.Tensor
    diag: Interval  # approx[q, m]
    err: Interval  # err[q]
    lmax: Interval  # [ρ, ...]: log positional weight of the max slots
    lnon: Interval  # [ρ, ...]: ... of the other slots
    abar: torch.Tensor | None  # ā[m, c]
    base: Interval | None  # max_{x≠m} (Lx[m,x] + ā r[m,x]) + Uq[q]

    def select(self, keep: torch.Tensor) -> "_CellTerms":
        """The terms of the flat cells where ``keep`` holds."""
        return _CellTerms(*(None if v is None else v[keep] if isinstance(v, torch.Tensor) else v[..., keep]
                            for v in attrs.astuple(self, recurse=False)))


def _cell_terms(parts: _Parts, q, m, c, base) -> _CellTerms:
    kind = (q == m).long()
    lmax, lnon = parts.log_max[:, kind, q, c], parts.log_non[:, kind, q, c]
    if base is None:
        return _CellTerms(q, m, c, parts.approx[q, m], parts.err[q], lmax, lnon, None, None)
    abar_table, base_table = base
    return _CellTerms(q, m, c, parts.approx[q, m], parts.err[q], lmax, lnon, abar_table[m, c],
                      base_table[m, c] + parts.Uq[q])


def _cell_R(parts: _Parts, t: _CellTerms, G: torch.Tensor) -> tuple[Interval, torch.Tensor]:
    """``(R, valid)`` for the cells ``t`` with gaps ``G``: bounds on ``max_{x≠m} logit[x] - logit[m]``
    (intervals, NaN outside ``valid``)."""
    q, m, c = t.q, t.m, t.c
    valid = _valid(q, m, c, G)
    j = (m - G).clamp(min=0)  # largest allowed non-max token
    amin, amax = _attention(parts, t, j)
    W = parts.spread_prefix[j]  # the worst non-max OV spread in the cell
    abar, Rmax, Rmin = t.abar, parts.Rmax[m], parts.Rmin[m]

    def h(a):  # the worst of (a - ā)(r[x] - W) over x: convex in a, so both ends of [amin, amax] bound it
        delta = a - abar
        if _REFERENCE_NOTE_3:  # the research code's rule, unsound when delta < 0: tests show it overcounts
            return delta * (Rmax - W)
        return (delta * (Rmax - W)).maximum(delta * (Rmin - W))

    R = t.base + W * (1 - Interval.exact(abar, W.certified)) + h(amin).maximum(h(amax))
    R = Interval.where((q == m) & (c == 0), parts.only_max[m], R)
    return Interval.where(valid, R, float("nan")), valid


def _extreme_r(parts: _Parts) -> tuple[Interval, Interval]:
    """``(Rmax, Rmin)`` [1, m, 1]: the largest and smallest ``r[m, x]`` over ``x ≠ m``."""
    return parts.Rmax[None, :, None], parts.Rmin[None, :, None]


def _base(parts: _Parts, abar: torch.Tensor | None) -> tuple[torch.Tensor, Interval]:
    """``(ā, max_{x≠m} (Lx[m,x] + ā[m,c] r[m,x]))``, both ``[m, c]``: the part of every cell's bound that
    depends on neither the query nor the gap.  ``O(V^2 K)``, ``2^18`` entries at a time."""
    V, n = parts.P.V, parts.P.n
    if parts.options.attention != "mean_query+diff" or abar is None:
        abar = torch.zeros(V, n, dtype=torch.float64)
    off = ~torch.eye(V, dtype=torch.bool)
    rows = []
    step = max(1, 2**18 // (V * n))
    for start in range(0, V, step):
        m = slice(start, start + step)
        terms = parts.Lx[m][:, None, :] + parts.r[m][:, None, :] * abar[m][:, :, None]  # [M, c, x]
        rows.append(Interval.where(off[m][:, None, :], terms, float("-inf")).amax(-1))
    return abar, Interval.cat(rows, dim=0)


def _largest_wrong_logit(parts: _Parts, G: torch.Tensor, abar: torch.Tensor | None = None):
    """``(R [q, m, c], valid)`` over every cell at once (tests use it; verification goes in chunks).

    ``abar [m, c]`` defaults to the research code's mean over queries (:func:`_mean_attention`)."""
    if abar is None and parts.options.attention == "mean_query+diff":
        abar = _mean_attention(parts, G)
    q, m, c, _, _ = _cells(parts.P.V, parts.P.n, G)
    return _cell_R(parts, _cell_terms(parts, q, m, c, _base(parts, abar)), G)


def count_proved(R: Interval, G: torch.Tensor, n: int) -> int:
    """Exact count of sequences in cells with ``R < 0``: ``C(K-1, c')·(m-G+1)^c'`` each (see module doc)."""
    q, m, c, is_q, valid = _cells(R.shape[0], n, G)
    return _count(valid & R.certainly_negative(), G, n)


def _cell_sizes(G: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c', m - G + 1)`` per cell: its non-max tokens outside the query, and the values each may take; a
    valid cell holds ``C(K-1, c')·(m - G + 1)^c'`` sequences (``c'`` is -1 in cells that cannot be valid)."""
    V = G.shape[0]
    q, m, c, is_q, _ = _cells(V, n, G)
    return torch.where(is_q, c, c - 1).expand(V, V, n), (m - G + 1).clamp(min=0).expand(V, V, n)


def _proved_per_column(proved: torch.Tensor, G: torch.Tensor, n: int) -> torch.Tensor:
    """``[m, c]`` float64: how many sequences the proved cells of each ``(m, c)`` count (for search)."""
    c_out, choices = _cell_sizes(G, n)
    c_out = c_out.clamp(min=0)
    ways = torch.tensor([comb(n - 1, k) for k in range(n)], dtype=torch.float64)[c_out]
    return torch.where(proved, ways * choices.double() ** c_out, 0.0).sum(0)


def _count(proved: torch.Tensor, G: torch.Tensor, n: int) -> int:
    V = proved.shape[0]
    c_out, choices = _cell_sizes(G, n)
    key = (c_out * (V + 1) + choices)[proved]
    histogram = torch.bincount(key, minlength=n * (V + 1)).tolist()
    charge(2 * len(histogram), "integer counting")
    total = 0
    for index, cells in enumerate(histogram):
        if cells:
            cc, k = divmod(index, V + 1)
            total += cells * comb(n - 1, cc) * k**cc
    return total


def _check_certificate(certificate, V: int, n: int, D: int) -> tuple[torch.Tensor, dict]:
    arrays = certificate.arrays
    if "min_gap" not in arrays:
        raise CertificateRejected("subcubic certificate has no min_gap table")
    G = np.asarray(arrays["min_gap"])
    if G.shape != (V, V, n) or not np.issubdtype(G.dtype, np.integer):
        raise CertificateRejected(f"min_gap table has shape {G.shape} and dtype {G.dtype}; expected integers of "
                                  f"shape {(V, V, n)}")
    if (G < 1).any():
        raise CertificateRejected("min_gap table holds gaps below 1 (a gap of 0 would count sequences twice)")
    directions = {}
    for name in _DIRECTIONS:
        value = np.asarray(arrays.get(name, np.zeros(0)), dtype=np.float64)
        size = D if name in {"W_Q_direction", "W_K_direction", "W_EP_direction"} else V
        if value.shape != (size,) or not np.isfinite(value).all():
            raise CertificateRejected(f"certificate direction {name} must be {size} finite numbers")
        directions[name] = torch.from_numpy(value.copy())
    abar = None
    if "mean_attention" in arrays:
        value = np.asarray(arrays["mean_attention"], dtype=np.float64)
        if value.shape != (V, n) or not np.isfinite(value).all():
            raise CertificateRejected(f"certificate mean_attention must be {(V, n)} finite numbers")
        abar = torch.from_numpy(value.copy())
    return torch.from_numpy(G.astype(np.int64)), directions, abar


def verify(model, certificate, options: SubcubicOptions, *, certified: bool = True) -> Bound:
    """Check the certificate, rebuild every bound from the model in certified interval arithmetic, and count
    the proved sequences (``certified=False``: plain float64, for benchmarks only)."""
    check_floating_point()
    P = paths(model)
    G, directions, abar = _check_certificate(certificate, P.V, P.n, P.D)
    parts = _precompute(P, options, directions, certified=certified)
    chunk = _cell_chunk(P.V, P.n, "subcubic verification")
    if abar is None and options.attention == "mean_query+diff":  # certificates of earlier versions
        abar = _mean_attention(parts, G)
    return Bound(correct_count=_count(_proved(parts, G, abar, chunk), G, P.n), total_count=P.V**P.n,
                 extra={"mean_min_gap": float(G.double().mean())}, certified=certified)
