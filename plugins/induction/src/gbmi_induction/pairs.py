"""The compact proof: bounds per adjacent token pair and per group, instead of per input.

The mechanism (``gbmi explain induction``): layer 0 is a previous-token head, layer 1 an induction head.
What layer 0 leaves at position ``j`` is ``e(x_j, j) + Σ_k a_jk o(x_k, k)`` (a convex combination), and
its attention sits mostly on ``k = j-1``.  So what layer 1 reads there is, up to a bounded remainder, a
function of the **pair** ``(u, v) = (x_{j-1}, x_j)``:

1. :func:`readout_bounds`: any linear readout of the residual at ``j`` (a value through the unembedding, a
   key read by a query) is bounded per pair: the two known keys mixed exactly, the earlier keys' share and
   rows bounded, weight and value of each earlier key's token taken together.  Tables ``[d, d, n, *F]``.
2. :func:`score_bounds`: layer 1's query at the last position is itself an average, over layer 0's row
   there, of *atoms* ``EQ_q + OQ(t, k)``, so a score gap ``s_j - s_{i+1}`` is the same average of the atoms'
   gaps.  Atom-by-pair score bounds: ``[q, (t, k), u, v, j]``, ``d^4 n^2`` entries.
3. :func:`_prove`, per group ``(q, i, a)`` (query token, match position, answer; ``d (d-1) (n-2)`` groups
   of ``(d-2)!/(d-n+1)!`` inputs): positions ``i`` and ``n-1`` hold ``q``, ``i+1`` holds ``a``, the others
   distinct *distractors*.  The answer key's score ``atom · K_{i+1}`` is bounded below per atom through its
   own layer-0 row (``a`` at ``i+1``, ``q`` at ``i``, distractors before, and the atom's token at the atom's
   position), and the query's own key ``atom · K_{n-1}`` above through the query's row with the atom's token
   at its position (the query and its own key read the same row).  For each other key ``j`` and each pair
   it can hold, the query row's average of the atom gaps is bounded with that pair's tokens fixed in the
   query row too (:class:`_Row`: known keys exactly, the other distractors by Dinkelbach's method for
   fractional programs, whose roots are the certificate); the largest over pairs bounds ``s_j - s_{i+1}``.
   The logit margin ``logit[a] - logit[x]`` is then the direct path plus the answer's value plus the
   attention-weighted average of the other keys' values less the answer's, at its least over the rows
   whose ratios ``b_j / b_{i+1}`` stay within ``exp(s_j - s_{i+1})`` (:func:`_worst_average`, exact), with
   at most one distractor holding ``x`` (and that one's ratio is the one of a key holding ``x``).  A group
   whose bound is positive for every ``x`` is proved, with all its inputs.

Relaxations (each can only lower the bound): distractors need not be distinct from each other except
where a pair or an atom fixes them; the query's row and each key's row choose their distractors apart (a
token is one choice in the input); in the rows of keys other than ``i+1`` and ``n-1``, the remainder ranges
over every token at every earlier position;
values of distractor pairs are taken at their worst over tokens other than ``a`` (and ``x``).  Every
number is computed in outward-rounded intervals (:mod:`gbmi_core.certified`).

Cost ``O(d^5 n^2 + d^4 n^2 H)``, independent of the number of inputs (``d^(n-1) (n-2)``).
"""

from __future__ import annotations

import math

import torch

from gbmi_core import Bound
from gbmi_core.attention import mixture_bounds
from gbmi_core.certified import Interval, check_floating_point, matmul

from .model import Tables, tables

_INF = float("inf")
#: Score gaps whose crude bound is below this are not refined: exp(-12) of attention is negligible here.
_FLOOR = -12.0
#: At most this many Dinkelbach steps per problem (they stop at the root, usually within a few).
STEPS = 32


def readout_bounds(T: Tables, fE: Interval, fO: Interval) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``[d(u), d(v), n(j), *F]`` on a linear readout ``f(e(v, j)) + Σ_k a_jk f(o(x_k, k))`` of the
    residual after layer 0, given the pair ``(u at j-1, v at j)``.  ``fE, fO [d, n, *F]``.

    The two known keys (``u`` at ``j-1``, ``v`` at ``j``) are mixed exactly: ``f_known = f_v + a (f_u - f_v)``
    with ``a = 1 / (1 + exp(s_v - s_u))``.  The unknown keys ``k <= j-2`` (any token) have scores at most
    their worst, so their share of the row is at most ``ρ = Σ_k exp(hi_k) / (exp(s_u) + exp(s_v) + Σ_k
    exp(hi_k))``, and their rows lie between the extreme rows: :func:`mixture_bounds` with weight ``1 - ρ``
    on ``f_known``.  A second bound takes each unknown key's weight and value from the same token (it moves
    the mean by at most ``max_t w_t (f_t - f_known) / W``); the tighter of the two is kept."""
    S = T.S0
    d, n = fE.shape[0], fE.shape[1]
    extra = fE.shape[2:]
    lo = torch.empty((d, d, n) + extra, dtype=torch.float64)
    hi = torch.empty_like(lo)
    any_lo = fO.lo.amin(0).cummin(0).values  # [n, *F]: min over tokens and positions <= k
    any_hi = fO.hi.amax(0).cummax(0).values
    worst = S.hi.amax(2)  # [v, j, k]: the highest score a key at k can get from query (v, j)
    first = fE[:, 0] + fO[:, 0]  # position 0 attends to itself only
    lo[:, :, 0], hi[:, :, 0] = first.lo[None], first.hi[None]
    tokens = torch.arange(d)
    shape = (d, d) + (1,) * len(extra)
    for j in range(1, n):
        s_u = S[tokens, j, :, j - 1].T  # [u, v]
        s_v = S[tokens, j, tokens, j][None]  # [1, v]
        a_u = (1 + (s_v - s_u).exp()).reciprocal().reshape(shape)
        f_u, f_v = fO[:, j - 1][:, None], fO[:, j][None]
        known = f_v + a_u * (f_u - f_v)  # [u, v, *F]
        if j >= 2:
            top = torch.maximum(s_u.lo, s_v.lo)  # an exact shift
            unknown = (Interval.exact(worst[:, j, : j - 1])[None] - top[..., None]).exp().sum(-1)  # [u, v]
            ratio = unknown / ((s_u - top).exp() + (s_v - top).exp())
            weight = (1 + ratio).reciprocal().lo.reshape(shape)
            m_lo, m_hi = mixture_bounds(weight, known.lo, known.hi, any_lo[j - 2], any_hi[j - 2])
            # Each unknown key k moves the mean by w_k (f_k - m) / (W + Σ w) with its token's weight and value
            # together: at most max(0, max_t w f - w m) / W, w and f of the same token t.
            shift = S.hi[:, j].amax(-1).amax(-1)  # [v]: an exact shift
            W = ((s_u - shift[None]).exp() + (s_v - shift[None]).exp()).lo.reshape(shape)  # [u, v]
            rise = fall = None
            for k in range(j - 1):
                w = (S[:, j, :, k] - shift[:, None]).exp()  # [v, t]
                wide = (1,) * len(extra)
                wt = Interval(w.lo.reshape(w.shape + wide), w.hi.reshape(w.shape + wide))
                prod = wt * fO[:, k][None]  # [v, t, *F]
                w_min, w_max = w.lo.amin(1).reshape((1, d) + wide), w.hi.amax(1).reshape((1, d) + wide)
                top_k = Interval.exact(prod.hi.amax(1)[None]) - Interval.exact(known.lo) * torch.where(
                    known.lo >= 0, w_min, w_max)  # >= max_t w (f - m)
                low_k = Interval.exact(prod.lo.amin(1)[None]) - Interval.exact(known.hi) * torch.where(
                    known.hi >= 0, w_max, w_min)  # <= min_t w (f - m)
                r, f_ = top_k.hi.clamp(min=0.0), low_k.lo.clamp(max=0.0)
                rise = r if rise is None else (Interval.exact(rise) + r).hi
                fall = f_ if fall is None else (Interval.exact(fall) + f_).lo
            joint_hi = (known + Interval.exact(rise) / Interval.exact(W)).hi
            joint_lo = (known + Interval.exact(fall) / Interval.exact(W)).lo
            m_lo, m_hi = torch.maximum(m_lo, joint_lo), torch.minimum(m_hi, joint_hi)
        else:
            m_lo, m_hi = known.lo, known.hi
        total = fE[:, j][None] + Interval.between(m_lo, m_hi)
        lo[:, :, j], hi[:, :, j] = total.lo, total.hi
    return lo, hi


def score_bounds(T: Tables) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``[d(q), d·n (t, k), d(u), d(v), n(j)]`` on ``atom · K_j``: the key at ``j`` holding the pair
    ``(u, v)`` read by the query *atom* ``EQ_q + OQ(t, k)``.

    Layer 1's query is ``Σ_k c_k (EQ_q + OQ(x_k, k))``, a convex combination of atoms, so a score
    *difference* ``s_j - s_{i+1}`` is the same combination of the atoms' differences (:class:`_Row`)."""
    d, n, H = T.d, T.n, T.OQ.shape[-1]
    atoms = T.EQ[:, n - 1][:, None] + T.OQ.reshape(d * n, H)[None]  # [q, (t, k), H]
    atoms = atoms.reshape(d * d * n, H)
    fE = matmul(T.EK.reshape(d * n, H), atoms.T).reshape(d, n, -1)  # [v, j, atom]
    fO = matmul(T.OK.reshape(d * n, H), atoms.T).reshape(d, n, -1)
    lo, hi = readout_bounds(T, fE, fO)  # [u, v, j, atom]
    def arrange(x):  # [u, v, j, (q, A)] -> [q, A, u, v, j]
        return x.reshape(d, d, n, d, d * n).permute(3, 4, 0, 1, 2)

    return arrange(lo), arrange(hi)


class _Row:
    """Layer 0's attention row at the query (``q`` at ``n-1``), over inputs of a group with some tokens known.

    Axes ``[q, a, u, v]`` (each of size ``d`` or 1): ``known`` maps a position to its token grid (broadcast
    over those axes); every other position in ``free`` holds a distractor, a token ``allowed[..., t]``.
    ``S`` is the scores of the row's position (``[own token, key token, key position]``); ``own`` is the
    grid of the row's own token (the query's ``q`` by default; ``a`` for the answer key's row).
    :meth:`average_hi` bounds ``Σ_k c_k g(x_k, k)`` from above.  With ``W`` and ``m`` the known keys' total
    weight and weighted mean, the largest average over the free keys' tokens is the root ``λ*`` of
    ``F(λ) = W (m - λ) + Σ_k max_t w_tk (g_tk - λ)`` (decreasing in λ): Dinkelbach steps in plain floats
    find it (each step's λ is an attained average, so they rise to the root; they stop when λ stays), and
    ``F(λ) <= 0`` checked with outward rounding proves ``λ >= λ*``.  Where the check fails (or
    ``steps=0``), a cruder bound holds: the free keys' share at most its worst, their values at most their
    largest."""

    def __init__(self, S: Interval, known: dict, free: list[int], allowed: torch.Tensor,
                 lambdas: Lambdas | None = None, own: torch.Tensor | None = None):
        d = S.shape[0]
        self.lambdas = lambdas
        self.d = d
        self.known = sorted(known)
        self.tokens = [known[k] for k in self.known]
        self.free = free
        # The row's own token (a grid over the lead axes): the query's q unless a key's row is meant.
        own = torch.arange(d).reshape(d, 1, 1, 1) if own is None else own
        shape = torch.broadcast_shapes(own.shape, *[t.shape for t in self.tokens])
        scores = Interval.stack([S[own, t, k].expand(shape) for k, t in zip(self.known, self.tokens)], -1)
        top = scores.lo.amax(-1, keepdim=True)  # an exact shift
        self.weights = (scores - top).exp()  # [*lead, K]
        self.total = self.weights.sum(-1)
        self.allowed = allowed  # [*lead, t]
        # Each free key's weight, both ends: F(λ) takes w at the end that bounds w (g - λ) from above.
        self.free_weight = [(S[own, :, k] - top).exp() for k in free]

    def _pick(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``g [B_q, B_a, B_u, B_v, d, *F]`` at token grid ``t`` -> ``[*lead, *F]``."""
        index = [torch.arange(size).reshape([size if axis == a else 1 for a in range(4)]) if size > 1
                 else torch.zeros((1, 1, 1, 1), dtype=torch.int64) for axis, size in enumerate(g.shape[:4])]
        return g[index[0], index[1], index[2], index[3], t]

    def average_hi(self, g, steps: int | None = None, floor: float = -_INF) -> torch.Tensor:
        """``g(k) -> [B_q, B_a, B_u, B_v, d(t), *F]`` for each position ``k`` -> an upper bound ``[*lead, *F]``.

        ``floor``: entries whose crude bound is already at most this are not refined (without ``F`` only)."""
        first = g(self.known[0] if self.known else self.free[0])
        extra = first.shape[5:]
        ones = (1,) * len(extra)
        known = torch.stack(torch.broadcast_tensors(*[self._pick(g(k), t) for k, t in zip(self.known, self.tokens)]),
                            -1)  # [*lead, *F, K]
        weights = self.weights.reshape(self.weights.shape[:4] + ones + (-1,))
        total = self.total.reshape(self.total.shape + ones)
        numerator = (weights * known).sum(-1)
        mix = numerator / total
        if not self.free:
            return mix.hi
        allowed = self.allowed.reshape(self.allowed.shape + ones)
        keys = [(w.reshape(w.shape + ones), torch.where(allowed, g(k), -_INF)) for w, k in zip(self.free_weight, self.free)]
        unknown = sum(Interval.exact(torch.where(allowed, w.hi, 0.0).amax(4)) for w, _ in keys)
        share = (1 + unknown / total).reciprocal().lo
        others = torch.stack(torch.broadcast_tensors(*[gk.amax(4) for _, gk in keys]), -1).amax(-1)
        crude = mixture_bounds(share, mix.hi, mix.hi, others, others)[1]
        steps = (self.lambdas.steps if self.lambdas is not None else STEPS) if steps is None else steps
        if steps == 0:
            return crude
        if extra or floor == -_INF:
            return _dinkelbach(numerator, total, keys, allowed, crude, steps, 4, self.lambdas)
        # Only entries that may matter are refined: the others' crude bound is already below ``floor``.
        chosen = crude > floor
        shape = crude.shape

        def pick(x):
            return x.expand(shape + x.shape[4:])[chosen]

        refined = crude.clone()
        refined[chosen] = _dinkelbach(Interval(pick(numerator.lo), pick(numerator.hi)),
                                      Interval(pick(total.lo), pick(total.hi)),
                                      [(Interval(pick(w.lo), pick(w.hi)), pick(gk)) for w, gk in keys],
                                      pick(allowed), crude[chosen], steps, 1, self.lambdas)
        return refined

    def average_lo(self, g, steps: int | None = None) -> torch.Tensor:
        return -self.average_hi(lambda k: -g(k), steps)


class Lambdas:
    """The certificate: the candidate roots ``λ`` of every Dinkelbach problem, in the order verification meets
    them.  Search records them (``arrays=None``); verification replays them and only checks ``F(λ) <= 0``.  A
    missing, extra or misshapen array is no error: that bound falls back to the crude one (sound, weaker)."""

    def __init__(self, arrays=None, steps: int = STEPS, check: bool = True):
        self.replay = arrays is not None
        # False while searching: the roots are wanted, not the margins (each root's bound is still taken, as
        # later problems, the gaps of the answer key's atoms, are built on earlier ones)
        self.check = check
        self.arrays = [torch.as_tensor(a, dtype=torch.float64) for a in (arrays or [])]
        self.found: list[torch.Tensor] = []
        self.steps = steps

    def take(self, shape) -> torch.Tensor | None:
        """The next recorded λ (``None``: none given, search now; NaN-filled: unusable)."""
        if not self.replay:
            return None
        index = len(self.found)
        lam = self.arrays[index] if index < len(self.arrays) else None
        if lam is None or tuple(lam.shape) != tuple(shape):
            lam = torch.full(shape, float("nan"), dtype=torch.float64)
        self.found.append(lam)
        return lam


def _dinkelbach(numerator: Interval, total: Interval, keys: list, allowed: torch.Tensor, crude: torch.Tensor,
                steps: int, dim: int, lambdas: "Lambdas | None" = None) -> torch.Tensor:
    """The upper bound of :class:`_Row`: Dinkelbach steps from the known keys' mean (or the certificate's λ),
    then the outward-rounded check ``F(λ) <= 0``; ``crude`` where the check fails.  Tokens along ``dim``."""
    given = lambdas.take(crude.shape) if lambdas is not None else None
    if given is not None:
        return _check(numerator, total, keys, allowed, crude, given, dim)
    lam = (numerator / total).mid  # the known keys' mean, not attained: the first step may fall below it
    for step_index in range(steps):  # then each λ is an attained average: it rises to the root, or stays
        num, den = numerator.mid, total.mid
        for w, gk in keys:
            gain = torch.where(allowed, w.hi * (gk - lam.unsqueeze(dim)), -_INF)
            best = gain.argmax(dim, keepdim=True)
            wk = w.hi.expand_as(gain).gather(dim, best).squeeze(dim)
            num = num + wk * gk.expand_as(gain).gather(dim, best).squeeze(dim)
            den = den + wk
        step = num / den
        if step_index == 0:
            lam = step
            continue
        if not (step > lam + 1e-12 * (1 + lam.abs())).any():
            break
        lam = torch.maximum(lam, step)
    lam = lam + 1e-9 * (1 + lam.abs())
    if lambdas is not None:
        lambdas.found.append(lam)
    return _check(numerator, total, keys, allowed, crude, lam, dim)


def _check(numerator: Interval, total: Interval, keys: list, allowed: torch.Tensor, crude: torch.Tensor,
           lam: torch.Tensor, dim: int) -> torch.Tensor:
    """``min(λ, crude)`` where ``F(λ) <= 0`` is certain (then ``λ >= λ*``), else ``crude``."""
    F = numerator - Interval.exact(lam) * total
    for w, gk in keys:
        # w is the key's weight interval: the product's upper end takes w_lo where g - λ < 0, w_hi where > 0.
        F = F + torch.where(allowed, (w * (Interval.exact(gk) - lam.unsqueeze(dim))).hi, -_INF).amax(dim)
    return torch.where(F.hi <= 0, torch.minimum(lam, crude), crude)


def _by_atom(S: Interval, known: dict, free: list[int], allowed: torch.Tensor, table: torch.Tensor,
             lambdas: Lambdas, upper: bool, own: torch.Tensor | None = None) -> torch.Tensor:
    """For every query atom ``(t, k)``: a bound (above if ``upper``, else below) on ``Σ_m c_m table[q, (t, k),
    x_m, m]`` over the row ``c`` that :class:`_Row` describes (``S``, ``known``, ``free``, ``allowed``,
    ``own``), where the row holds ``t`` at ``k`` when ``k`` is one of its distractor positions (the atom's
    token is the input's).  ``table [q, (t, k), token, position]`` -> ``[q, a, t, k]``."""
    d, n = table.shape[0], table.shape[-1]
    tokens = torch.arange(d)
    ug, t_ = tokens.reshape(1, 1, d, 1), tokens.reshape(1, 1, 1, 1, d)
    plain = _Row(S, known, free, allowed, lambdas, own=own)
    out = torch.empty(d, d, d, n, dtype=torch.float64)
    for k in range(n):
        if k in free:  # t on the u axis, fixed at k and kept off the other distractors
            row = _Row(S, known | {k: ug}, [f for f in free if f != k], allowed & (t_ != ug[..., None]), lambdas,
                       own=own)

            def g(m, k=k):
                return table[:, tokens * n + k, :, m][:, None, :, None]
        else:  # k holds a known token: the plain row, t as a trailing axis
            row = plain

            def g(m, k=k):
                return table[:, tokens * n + k, :, m].permute(0, 2, 1)[:, None, None, None]
        bound = row.average_hi(g) if upper else row.average_lo(g)
        out[..., k] = bound[:, :, :, 0] if k in free else bound[:, :, 0, 0]
    return out


def _worst_average(gap: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """A rigorous lower bound on ``min Σ_j r_j gap_j / (1 + Σ_j r_j)`` over ``0 <= r_j <= ratio_j``.

    With ``r_j = b_j / b_t`` (layer 1's attention on key ``j`` over its attention on the answer's key), this
    is ``Σ_j b_j gap_j`` over the attention rows that the score-gap bounds allow.  A fractional program whose
    minimum ``λ*`` takes ``r_j = ratio_j`` exactly where ``gap_j < λ*``, so it is attained on a prefix of the
    gaps in increasing order: every prefix is evaluated (outward-rounded) and the least kept.  ``gap [..., J]``
    (lower bounds; positive ones are lowered to 0), ``ratio [..., J]`` (upper bounds; an infinite ratio gives
    ``-inf``, nothing proved)."""
    gap = torch.minimum(gap, torch.zeros_like(gap))
    order = gap.argsort(-1)
    g = gap.gather(-1, order)
    r = ratio.expand_as(gap).gather(-1, order)
    best = torch.zeros(gap.shape[:-1], dtype=torch.float64)
    numerator = Interval.exact(torch.zeros_like(best))
    denominator = Interval.exact(torch.ones_like(best))
    for k in range(gap.shape[-1]):
        numerator = numerator + Interval.exact(r[..., k]) * Interval.exact(g[..., k])
        denominator = denominator + Interval.exact(r[..., k])
        best = torch.minimum(best, (numerator / denominator).lo)
    return torch.nan_to_num(best, nan=-_INF)


def _over_pairs(table: torch.Tensor, excluded_u: torch.Tensor, excluded_v: torch.Tensor, reduce: str) -> dict:
    """The table's extreme over distractor pairs: ``table [..., u, v, n]`` with the lead axes matching
    ``excluded_* [..., d]`` (True: not a distractor there).  Returns tables for 'Dv' (u free, v given),
    'uD' (v free), 'DD' (both free, u != v)."""
    fill = -_INF if reduce == "max" else _INF
    op = (lambda t, dim: t.amax(dim)) if reduce == "max" else (lambda t, dim: t.amin(dim))
    d = table.shape[-2]
    mask_u = excluded_u[..., :, None, None]
    mask_v = excluded_v[..., None, :, None]
    same = torch.eye(d, dtype=torch.bool)[:, :, None]
    return {"Dv": op(table.masked_fill(mask_u, fill), -3),  # [..., v, n]
            "uD": op(table.masked_fill(mask_v, fill), -2),  # [..., u, n]
            "DD": op(op(table.masked_fill(mask_u | mask_v | same, fill), -2), -2)}  # [..., n]


def _roles(n: int, i: int) -> list[str]:
    """Which token each position holds in a group with match position ``i``: q, a or a distractor D."""
    return ["q" if j in (i, n - 1) else "a" if j == i + 1 else "D" for j in range(n)]


def search(model, steps: int = STEPS) -> dict:
    """The certificate: every Dinkelbach root λ the verification will check (at most ``steps`` iterations each)."""
    lambdas = Lambdas(None, steps, check=False)
    _prove(model, lambdas)  # records the roots in lambdas.found
    return {f"lambda_{index:04d}": lam.numpy() for index, lam in enumerate(lambdas.found)} | {"steps": steps}


def verify(model, certificate=None, steps: int = STEPS) -> Bound:
    """Count the inputs of every group ``(q, i, a)`` whose logit-margin bound is positive.

    With a certificate (from :func:`search`) its λ are only checked; without one they are searched here."""
    arrays = None
    if certificate is not None and getattr(certificate, "arrays", None):
        arrays = [certificate.arrays[name] for name in sorted(certificate.arrays) if name.startswith("lambda_")]
    elif certificate is not None and steps > 0:
        arrays = []  # an empty certificate: crude bounds only
    return _prove(model, Lambdas(arrays, steps))[0]


def group_map(model, steps: int = STEPS) -> torch.Tensor:
    """Which groups ``(q, i, a)`` the proof proves: ``[d, n-2, d]`` booleans."""
    return _prove(model, Lambdas(None, steps))[1]


def _prove(model, lambdas: Lambdas) -> tuple[Bound, torch.Tensor]:
    check_floating_point()
    T = tables(model)
    d, n, H = T.d, T.n, T.OQ.shape[-1]
    s_lo, s_hi = score_bounds(T)  # [q, (t, k), u, v, j]
    s_hi6 = s_hi.reshape(d, d, n, d, d, n)
    s_lo6 = s_lo.reshape(d, d, n, d, d, n)
    S_query = T.S0[:, n - 1]  # [q, t, k]
    # The query's own key (position n-1) shares the query's row: atom · (EK_q + Σ_l c_l OK(x_l, l)).
    atoms = T.EQ[:, n - 1][:, None] + T.OQ.reshape(d * n, H)[None]  # [q, (t, k), H]
    AOK = matmul(atoms.reshape(-1, H), T.OK.reshape(d * n, H).T).reshape(d, d * n, d, n)  # [q, A, t', l]
    AEK = matmul(atoms.reshape(-1, H), T.EK.reshape(d * n, H).T).reshape(d, d * n, d, n)  # [q, A, v, j]
    # Values and the direct path as differences logit[a] - logit[x], lower ends: F = (a, x).
    eye = torch.eye(d, dtype=torch.bool)
    if lambdas.check:
        v_lo, _ = readout_bounds(T, T.EV[..., :, None] - T.EV[..., None, :], T.OV[..., :, None] - T.OV[..., None, :])
        v_ax = v_lo.permute(3, 4, 0, 1, 2)  # [a, x, u, v, j]
        not_a = eye[:, None, :].expand(d, d, d)  # [a, x, token]
        value_not_x = _over_pairs(v_ax, not_a, not_a | eye[None, :, :], "min")
    ED_last = T.ED[:, n - 1, :, None] - T.ED[:, n - 1, None, :]  # [q, a, x]
    EV_last = T.EV[:, n - 1, :, None] - T.EV[:, n - 1, None, :]
    OD_ax = (T.OD[..., :, None] - T.OD[..., None, :]).lo.permute(2, 0, 3, 1)  # [a, t, x, k]
    OV_ax = (T.OV[..., :, None] - T.OV[..., None, :]).lo.permute(2, 0, 3, 1)

    tokens = torch.arange(d)
    qg, ag = tokens.reshape(d, 1, 1, 1), tokens.reshape(1, d, 1, 1)
    ug, vg = tokens.reshape(1, 1, d, 1), tokens.reshape(1, 1, 1, d)
    q_, a_ = tokens[:, None], tokens[None, :]
    t_ = tokens.reshape(1, 1, 1, 1, d)
    group_ok = torch.zeros(d, n - 2, d, dtype=torch.bool)
    for i in range(n - 2):
        roles = _roles(n, i)
        known = {n - 1: qg, i: qg, i + 1: ag}
        free = [k for k in range(n) if roles[k] == "D"]
        base = (t_ != qg[..., None]) & (t_ != ag[..., None])  # distractors are neither q nor a
        row = _Row(S_query, known, free, base, lambdas)
        target = s_lo6[:, :, :, qg[:, :, 0, 0], ag[:, :, 0, 0], i + 1]  # [q, t, k, q', a] -> pick q' = q below
        target = target[tokens, :, :, tokens].permute(0, 3, 1, 2)  # [q, a, t, k]: lower ends of atom · K_{i+1}
        # The same from the key's own row: a at i+1, q at i, distractors (never q or a) before, by Dinkelbach.
        exact = _by_atom(T.S0[:, i + 1], {i: qg, i + 1: ag}, list(range(i)), base, AOK.lo, lambdas, upper=False,
                         own=ag)
        exact = (Interval.exact(exact) + Interval.exact(AEK.lo[:, :, :, i + 1].permute(0, 2, 1)
                                                       .reshape(d, d, d, n))).lo
        target = torch.maximum(target, exact)
        # Layer 1's attention on i+1: each other key's score gap, averaged over the query's row.  The query's
        # own key is read through the same row as its query.
        own_key = _by_atom(S_query, known, free, base, AOK.hi, lambdas, upper=True)
        own_key = (Interval.exact(own_key) + Interval.exact(AEK.hi[tokens, :, tokens, n - 1].reshape(d, 1, d, n))).hi
        gaps, holder_gap = [], {}
        for j in range(n):
            if j == i + 1:
                continue
            if j == n - 1:
                g = (own_key - target)[:, :, None, None]  # [q, a, 1, 1, t, k]
                gaps.append(row.average_hi(lambda k: g[..., k])[:, :, 0, 0])
                continue
            u_role, v_role = (roles[j - 1] if j >= 1 else None), roles[j]
            pair_known = dict(known)
            pair_free = list(free)
            allowed = base
            if u_role == "D":
                pair_known[j - 1] = ug
                pair_free.remove(j - 1)
                allowed = allowed & (t_ != ug[..., None])
            if v_role == "D":
                pair_known[j] = vg
                pair_free.remove(j)
                allowed = allowed & (t_ != vg[..., None])
            pair_row = _Row(S_query, pair_known, pair_free, allowed, lambdas)
            hi_j = s_hi6[:, :, :, :, :, j].permute(0, 3, 4, 1, 2)[:, None]  # [q, 1, u, v, t, k] (a view)
            # the gap of atom (t, k): [q, a, u, v, t], made per position k when asked
            avg = pair_row.average_hi(lambda k: hi_j[..., k] - target[:, :, None, None, :, k], floor=_FLOOR)
            ok_u = _role_mask(u_role, ug, qg, ag) if j >= 1 else (ug == 0)
            ok_v = _role_mask(v_role, vg, qg, ag)
            if u_role == "D" and v_role == "D":
                ok_v = ok_v & (ug != vg)
            avg = torch.where(ok_u & ok_v, avg, -_INF)
            gaps.append(avg.amax((2, 3)))
            if v_role == "D":  # the gap when this position holds token v = x: [q, a, x]
                holder_gap[j] = avg.amax(2)
        deltas = torch.stack(gaps, -1)  # [q, a, J]: upper bounds on s_j - s_{i+1}
        # The query's own value and the direct path, through the query's row: [q, a, x]
        own = (EV_last[q_, a_] + Interval.exact(
            row.average_lo(lambda k: OV_ax[None, :, None, None, :, :, k])[:, :, 0, 0])).lo
        direct = (ED_last[q_, a_] + Interval.exact(
            row.average_lo(lambda k: OD_ax[None, :, None, None, :, :, k])[:, :, 0, 0])).lo
        if not lambdas.check:  # searching: every root is found
            continue
        # Values: the answer's, and each other position's at its worst, for every wrong output x.  At most
        # one distractor holds x (they are distinct, and none is q).  Candidates: no position holds x (every
        # position's value is that of a key not holding x), or distractor position h does (its value and its
        # attention cap are those of a key holding x, which attends and copies together).
        answer_value = v_ax[a_, :, q_, a_, i + 1]  # [q, a, x]
        positions = [j for j in range(n) if j != i + 1]
        no_x = torch.stack([_pair_value(value_not_x, v_ax, roles, j, q_, a_) for j in positions], -1)  # [q,a,x,J]
        no_x[..., -1] = own
        caps = Interval.exact(deltas).exp().hi[:, :, None].expand_as(no_x)  # b_j <= e^(s_j - s_t) b_t
        values, limits = [no_x], [caps]
        x_is_q = tokens[None, None, :] == q_[..., None]  # [q, a, x]: no distractor holds q
        for index, j in enumerate(positions):
            if j not in holder_gap:
                continue
            held = _holder_value(v_ax, roles, j, q_, a_).masked_fill(x_is_q, _INF)  # [q, a, x]
            values.append(no_x.clone())
            values[-1][..., index] = held
            limits.append(caps.clone())
            limits[-1][..., index] = Interval.exact(holder_gap[j]).exp().hi
        values, limits = torch.stack(values, -2), torch.stack(limits, -2)  # [q, a, x, candidates, J]
        # logit[a] - logit[x] >= direct + answer + Σ_j b_j (value_j - answer), b the layer-1 attention
        gaps_ax = (Interval.exact(values) - Interval.exact(answer_value[..., None, None])).lo
        spread = _worst_average(gaps_ax, limits).amin(-1)  # [q, a, x]
        margin = (Interval.exact(direct) + answer_value + spread).lo  # [q, a, x]
        margin = margin.masked_fill(eye[None].expand_as(margin), _INF)  # x = a is no competitor
        group_ok[:, i] = (margin > 0).all(-1) & ~eye
    per_group = math.perm(d - 2, n - 3)
    proved = int(group_ok.sum())
    bound = Bound(correct_count=proved * per_group, total_count=math.perm(d, n - 1) * (n - 2), certified=True,
                  extra={"groups_proved": proved, "groups": d * (d - 1) * (n - 2)})
    return bound, group_ok


def _role_mask(role: str, grid: torch.Tensor, qg: torch.Tensor, ag: torch.Tensor) -> torch.Tensor:
    """Which tokens of ``grid`` a position with this role can hold."""
    if role == "q":
        return grid == qg
    if role == "a":
        return grid == ag
    return (grid != qg) & (grid != ag)


def _holder_value(full: torch.Tensor, roles: list[str], j: int, q_, a_) -> torch.Tensor:
    """Position ``j``'s value bound when it holds the wrong output ``x`` itself: ``[q, a, x]``."""
    d = full.shape[0]
    x = torch.arange(d)
    diagonal = full[:, x, :, x, j].permute(1, 0, 2)  # [a, x, u] with v = x
    u_role = roles[j - 1] if j >= 1 else "D"
    if u_role == "D":
        excluded = (x[None, None, :] == torch.arange(d)[:, None, None]) | (x[None, None, :] == x[None, :, None])
        return diagonal.masked_fill(excluded, _INF).amin(-1)[None].expand(d, d, d)  # u is neither a nor x
    u = {"q": q_, "a": a_}[u_role]  # [q, 1] or [1, a]
    return diagonal[a_[..., None], x[None, None, :], u[..., None]].expand(d, d, d)


def _pair_value(reduced: dict, full: torch.Tensor, roles: list[str], j: int, q_, a_) -> torch.Tensor:
    """The value bound of position ``j`` at its worst over the pairs it can hold: ``[q, a, x]``.

    ``full [a, x, u, v, n]``; fixed roles index ``u``/``v`` by their token, distractor roles use the reduced
    tables of :func:`_over_pairs` (a distractor there is any token but ``a``)."""
    d = full.shape[0]
    grid = {"q": q_, "a": a_}
    u_role = roles[j - 1] if j >= 1 else "D"
    v_role = roles[j]
    x = slice(None)
    if u_role == "D":
        out = reduced["DD"][a_, x, j] if v_role == "D" else reduced["Dv"][a_, x, grid[v_role], j]
    elif v_role == "D":
        out = reduced["uD"][a_, x, grid[u_role], j]
    else:
        out = full[a_, x, grid[u_role], grid[v_role], j]
    # advanced indices separated by a slice come first: [q or 1, a, x]
    return out.expand(d, d, d)


def unexplained_dimension(model) -> int:
    """What the proof still treats entry by entry: the score table, one entry per (query token, query atom,
    key pair, key position): ``d^4 n^2``."""
    d, n = model.cfg.d_vocab, model.cfg.n_ctx
    return d**4 * n**2
