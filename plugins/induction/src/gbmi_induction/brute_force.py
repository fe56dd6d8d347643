"""Certified brute force: every input of the induction task decided exactly, rounding accounted for.

Inputs are enumerated as prefixes ``x_0 .. x_{n-2}`` (distinct tokens) times match positions ``i``.  What
layer 0 writes at positions ``0 .. n-2`` depends on the prefix only, so it is computed once per prefix
and shared by its ``n-2`` inputs; the last position (query ``x_i``) is computed per input.  Everything
reads the path :class:`~gbmi_induction.model.Tables`, so one input costs ``O(n (H + d))`` after its
prefix's ``O(n^2 (H + d))``.

Two stages, each sound on its own:

1. **Float64 screen** of every input, with one allowance ``E`` for all of them: a forward error analysis
   (:func:`screen_allowance`) of exactly the operations the screen performs, from the tables' radii and
   largest entries (Higham's ``γ_k`` for sums and products, the relative error of ``exp`` that
   ``gbmi_core.certified`` assumes and tests, underflow allowances).  A computed margin ``> E`` is correct,
   ``< -E`` wrong; anything else (NaN included) goes on.
2. **Intervals** (:class:`~gbmi_core.certified.Interval`) for each remaining input on its own: correct if
   the answer's logit is certainly above every other, wrong if some other logit is certainly at least as
   high; what is still open is reported in ``extra["undecided"]`` and not counted.
"""

from __future__ import annotations

import math

import torch

from gbmi_core import Bound, TooLarge
from gbmi_core.certified import ELEMENTARY_ULPS, ETA, Interval, U, check_floating_point, gamma
from gbmi_core.memory import chunk_size
from gbmi_core.progress import progress as reporter

from .model import Tables, count_inputs, prefixes, tables

MAX_INPUTS = 2**32
PROGRESS_FROM = 2**24
CORRECT, WRONG, UNDECIDED = 1, 0, -1


def _point(T: Tables) -> Tables:
    """The tables' midpoints as uncertified intervals: the screen computes with these."""
    return Tables(**{name: Interval(getattr(T, name).mid, getattr(T, name).mid, False)
                     for name in ("S0", "EQ", "OQ", "EK", "OK", "EV", "OV", "ED", "OD")})


def _softmax(scores: Interval) -> Interval:
    """``softmax`` along the last axis, shifted by the (exact) largest lower end."""
    shift = scores.lo.nan_to_num(nan=0.0).amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    weights = (scores - shift).exp()
    return weights / weights.sum(-1)[..., None]


def _gather(table: Interval, tokens: torch.Tensor, positions: torch.Tensor) -> Interval:
    return table[tokens, positions]


class _Joined:
    """The tables a forward pass gathers from, joined along the last axis so that one gather serves several."""

    def __init__(self, T: Tables):
        self.T = T
        self.H, self.d = T.OQ.shape[-1], T.OD.shape[-1]
        self.EKV = Interval.cat([T.EK, T.EV], -1)  # [d, n, H + d]
        self.OKV = Interval.cat([T.OK, T.OV], -1)
        self.E_all = Interval.cat([T.EQ, T.ED, T.EK, T.EV], -1)  # [d, n, 2H + 2d]
        self.O_all = Interval.cat([T.OQ, T.OD, T.OK, T.OV], -1)


def _mix(weights: Interval, rows: Interval) -> Interval:
    """``Σ_k weights[:, k] rows[:, k]``: ``[P, k] x [P, k, F] -> [P, F]``.  Plain float64 sums term by term
    (faster than tiny batched matrix products; any order is within Higham's bound); intervals use
    :func:`~gbmi_core.certified.matmul`."""
    if weights.certified:
        return (weights[:, None, :] @ rows)[:, 0]
    w, r = weights.lo, rows.lo
    out = w[:, 0, None] * r[:, 0]
    for k in range(1, w.shape[1]):
        out += w[:, k, None] * r[:, k]
    return Interval(out, out, False)


def layer0(J: _Joined, X: torch.Tensor) -> tuple[Interval, Interval]:
    """What layer 1 reads at positions ``0 .. m-1`` of prefixes ``X [P, m]``: keys and values joined
    ``[P, m, H + d]``, and the rows layer 0 mixes at the last position ``[P, m, 2H + 2d]``."""
    P, m = X.shape
    pos = torch.arange(m)
    S = J.T.S0[X[:, :, None], pos[None, :, None], X[:, None, :], pos[None, None, :]]  # [P, m(query), m(key)]
    causal = torch.ones(m, m, dtype=torch.bool).triu(1)
    a = _softmax(Interval.where(causal, float("-inf"), S))
    OKV = J.OKV[X, pos]
    EKV = J.EKV[X, pos]
    kv = Interval.stack([EKV[:, j] + _mix(a[:, j, : j + 1], OKV[:, : j + 1]) for j in range(m)], 1)
    return kv, J.O_all[X, pos]


def last_positions(J: _Joined, X: torch.Tensor, keys_values: Interval, rows: Interval,
                   matches: torch.Tensor | None = None) -> Interval:
    """Logits ``[P, len(matches), d]`` of the inputs ``X + [x_i]`` for each ``i`` in ``matches`` (default: all
    ``0 .. n-3``), given what :func:`layer0` returns for ``X``.  Batched products of shape
    ``[len(matches), m] x [m, F]`` per prefix."""
    P, m = X.shape
    n, H, d = m + 1, J.H, J.d
    matches = torch.arange(n - 2) if matches is None else matches
    q = X[:, matches]  # [P, I]
    last = torch.full_like(q, n - 1)
    pos = torch.arange(m)
    S0 = J.T.S0
    scores = Interval.cat([S0[q[:, :, None], last[:, :, None], X[:, None, :], pos], S0[q, last, q, last][..., None]], 2)
    c = _softmax(scores)  # [P, I, n]
    mixed = J.E_all[q, last] + c[..., :m] @ rows + c[..., m:] * J.O_all[q, last]  # [P, I, 2H + 2d]
    Q, direct, k_last, v_last = mixed[..., :H], mixed[..., H: H + d], mixed[..., H + d: 2 * H + d], mixed[..., 2 * H + d:]
    first = Q @ keys_values[..., :H].permute(0, 2, 1)  # [P, I, m]
    b = _softmax(Interval.cat([first, (Q * k_last).sum(-1)[..., None]], 2))  # [P, I, n]
    return direct + b[..., :m] @ keys_values[..., H:] + b[..., m:] * v_last


def logits(T: Tables, tokens: torch.Tensor) -> Interval:
    """Last-position logits of the given inputs ``[b, n]`` (each must repeat an earlier token last)."""
    n = tokens.shape[1]
    match = (tokens[:, : n - 2] == tokens[:, -1:]).int().argmax(-1)
    out = None
    for i in match.unique().tolist():
        rows = (match == i).nonzero()[:, 0]
        X = tokens[rows, : n - 1]
        J = _Joined(T)
        part = last_positions(J, X, *layer0(J, X), matches=torch.tensor([i]))[:, 0]
        if out is None:
            shape = (len(tokens), part.shape[-1])
            lo = torch.full(shape, float("nan"), dtype=torch.float64)
            out = Interval(lo, lo.clone() if part.certified else lo, part.certified)
        out.lo[rows] = part.lo
        if part.certified:
            out.hi[rows] = part.hi
    return out


def margins(values: Interval, answer: torch.Tensor) -> Interval:
    """``logit[answer] - logit[x]`` for every ``x`` (the answer's own entry is ``+inf``).  ``[b, d]``"""
    right = values[torch.arange(len(answer)), answer]
    diff = right[:, None] - values
    inf = torch.full_like(diff.lo, float("inf"))
    own = torch.nn.functional.one_hot(answer, values.shape[-1]).bool()
    return Interval.where(own, Interval(inf, inf, diff.certified), diff)


def classify(T: Tables, tokens: torch.Tensor) -> torch.Tensor:
    """Each input's status in exact arithmetic, by interval evaluation: CORRECT, WRONG or UNDECIDED."""
    n = tokens.shape[1]
    match = (tokens[:, : n - 2] == tokens[:, -1:]).int().argmax(-1)
    answer = tokens[torch.arange(len(tokens)), match + 1]
    gap = margins(logits(T, tokens), answer)
    status = torch.full((len(tokens),), UNDECIDED, dtype=torch.int64)
    status[(gap.lo > 0).all(-1)] = CORRECT
    status[(gap.hi <= 0).any(-1)] = WRONG
    return status


# -- the screen's allowance ------------------------------------------------------------------------------

def _size(table: Interval) -> tuple[float, float]:
    """``(ε, B)``: every midpoint is within ε of the exact entry, and every midpoint has magnitude at most B."""
    return float(table.radius.max()), float(table.mid.abs().max())


def _softmax_error(eps: float, big: float, k: int) -> tuple[float, float]:
    """Relative and absolute error ``(ρ, η')`` of a computed softmax weight over ``k`` keys.

    Scores within ``eps`` of exact and at most ``big`` in magnitude.  The exponent ``fl(s̃ - max s̃)`` is
    within ``eps + 2 u big`` of the exact score minus the same (exact) shift; ``exp`` adds
    :data:`ELEMENTARY_ULPS` ulps and ``η``; the largest weight is ``exp(0)``, so the sum is at least about 1
    and absolute errors become relative; the sum adds ``γ_k``, the division ``u``.  Generous by 3x.
    """
    delta = eps + 2 * U * big
    if not math.isfinite(delta) or delta > 1e-3:
        return math.inf, math.inf
    r1 = math.expm1(delta) * 1.01 + ELEMENTARY_ULPS * 2.0**-52
    rho = 3 * (2 * r1 + gamma(k) + U + 4 * k * ETA)
    return rho, 4 * ETA


def _mix_error(eps_e: float, big_e: float, eps_o: float, big_o: float, rho: float, eta: float,
               k: int) -> tuple[float, float]:
    """Error and magnitude of ``ẽ + Σ_k ã_k õ_k`` (computed weights with relative error ρ, absolute η)."""
    mass = 1 + rho + k * eta  # Σ ã
    eps = eps_e + eps_o + (rho + k * eta) * big_o + gamma(k + 1) * (big_e + mass * big_o)
    return eps, (big_e + mass * big_o) * (1 + gamma(k + 1))


def screen_allowance(T: Tables) -> float:
    """An upper bound on |computed margin - exact margin| for every input the float64 screen evaluates."""
    n, H = T.n, T.OQ.shape[-1]
    eps_s0, big_s0 = _size(T.S0)
    rho_a, eta_a = _softmax_error(eps_s0, big_s0, n)
    sizes = {name: _size(getattr(T, name)) for name in ("EQ", "OQ", "EK", "OK", "EV", "OV", "ED", "OD")}

    def mix(name):
        (ee, be), (eo, bo) = sizes["E" + name], sizes["O" + name]
        return _mix_error(ee, be, eo, bo, rho_a, eta_a, n)

    (eq, bq), (ek, bk), (ev, bv), (ed, bd) = mix("Q"), mix("K"), mix("V"), mix("D")
    eps_s1 = H * (bq * ek + eq * (bk + ek)) + gamma(H) * H * bq * bk
    rho_b, eta_b = _softmax_error(eps_s1, H * bq * bk, n)
    eps_l, big_l = _mix_error(ed, bd, ev, bv, rho_b, eta_b, n)
    allowance = (2 * eps_l + 2 * U * 2 * big_l) * 1.01
    return allowance if math.isfinite(allowance) else math.inf


# -- brute force -----------------------------------------------------------------------------------------

def brute_force(model, *, with_loss: bool = True) -> Bound:
    """The exact number of inputs the model gets right (strictly, in exact arithmetic), and its mean loss.

    ``extra``: ``undecided`` (not counted), ``rechecked`` (inputs the screen left to intervals),
    ``allowance`` (the screen's ``E``), ``mean_loss`` (float64, not certified), ``min_margin`` (the
    screen's smallest margin).
    """
    check_floating_point()
    T = tables(model)
    d, n = T.d, T.n
    total = count_inputs(d, n)
    if total > MAX_INPUTS:
        raise TooLarge(f"brute force over {total:.3g} induction inputs is infeasible here (limit {MAX_INPUTS:.3g})")
    allowance = screen_allowance(T)
    J = _Joined(_point(T))
    H = T.OQ.shape[-1]
    per_prefix = 8 * (n * n + 4 * n * (2 * H + 2 * d) + (n - 2) * 4 * d)
    chunk = min(4096, chunk_size(math.perm(d, n - 1), per_prefix, what=f"brute force at d={d}, n={n}"))
    correct, loss_sum, min_margin = 0, 0.0, math.inf
    recheck = []
    count = math.perm(d, n - 1)
    bar = reporter(count, f"brute force over {total:,} induction inputs", "prefix", enabled=total >= PROGRESS_FROM)
    for start in range(0, count, chunk):
        X = prefixes(d, n - 1, start, start + chunk)
        keys_values, rows = layer0(J, X)
        every = last_positions(J, X, keys_values, rows).lo  # [P, n-2, d]
        for i in range(n - 2):
            out = every[:, i]
            answer = X[:, i + 1]
            right = out.gather(1, answer[:, None])[:, 0]
            others = out.scatter(1, answer[:, None], float("-inf")).amax(1)
            margin = right - others
            good = margin > allowance
            correct += int(good.sum())
            unsure = ~(good | (margin < -allowance))
            if bool(unsure.any()):
                rows = X[unsure]
                recheck.append(torch.cat([rows, rows[:, i: i + 1]], 1))
            finite = margin[torch.isfinite(margin)]
            if len(finite):
                min_margin = min(min_margin, float(finite.min()))
            if with_loss:
                loss_sum += float((out.logsumexp(1) - right).sum())
        bar.update(len(X))
    bar.close()
    extra = {"rechecked": 0, "undecided": 0, "allowance": allowance, "min_margin": min_margin}
    if recheck:
        tokens = torch.cat(recheck)
        status = torch.cat([classify(T, tokens[s: s + 4096]) for s in range(0, len(tokens), 4096)])
        correct += int((status == CORRECT).sum())
        extra.update(rechecked=len(tokens), undecided=int((status == UNDECIDED).sum()))
    if with_loss:
        extra["mean_loss"] = loss_sum / total
    return Bound(correct_count=correct, total_count=total, extra=extra, certified=True)
