"""Certified brute force: every input of the induction task decided exactly, rounding accounted for.

Inputs are enumerated as prefixes ``x_0 .. x_{n-2}`` (distinct tokens) times match positions ``i``.  What
layer 0 writes at positions ``0 .. n-2`` depends on the prefix only, so it is computed once per prefix
and shared by its ``n-2`` inputs; the last position (query ``x_i``) is computed per input.  Everything
reads the path :class:`~gbmi_induction.model.Tables`, so one input costs ``O(n (H + d))`` after its
prefix's ``O(n^2 (H + d))``.

Two stages, each sound on its own:

1. **Float32 screen** of every input, with one allowance ``E`` for all of them: a forward error analysis
   (:func:`screen_allowance`) of exactly the operations the screen performs, from how far the float32
   tables are from the certified ones and their largest entries (Higham's ``γ_k`` with float32's unit
   roundoff for sums and products, float32 ``exp`` within :data:`EXP32_ULPS` ulps, tested against mpmath,
   underflow allowances).  The allowance is one number, so the screen costs no more than a plain forward
   pass; models whose numbers float32 cannot bound get ``E = inf`` and go to stage 2 entirely.  A computed margin ``> E`` is correct,
   ``< -E`` wrong; anything else (NaN included) goes on.
2. **Intervals** (:class:`~gbmi_core.certified.Interval`) for each remaining input on its own: correct if
   the answer's logit is certainly above every other, wrong if some other logit is certainly at least as
   high.
3. **mpmath intervals** (:class:`_Exact`) for what is still open, from 256 bits, doubled up to 4096; only a
   tie to that precision stays in ``extra["undecided"]``, not counted.
"""

from __future__ import annotations

import math

import attrs
import torch

from gbmi_core import Bound, TooLarge
from gbmi_core.certified import ELEMENTARY_ULPS, Interval, check_floating_point
from gbmi_core.memory import chunk_size
from gbmi_core.progress import progress as reporter

from .model import Tables, count_inputs, label, match_position, prefixes, tables

MAX_INPUTS = 2**32
PROGRESS_FROM = 2**24
CORRECT, WRONG, UNDECIDED = 1, 0, -1


_TABLES = tuple(field.name for field in attrs.fields(Tables))


def _point(T: Tables, dtype: torch.dtype = torch.float32) -> Tables:
    """The tables' midpoints as plain tensors of ``dtype``: the screen computes with these."""
    return Tables(**{name: getattr(T, name).mid.to(dtype) for name in _TABLES})


def _cat(items, dim):
    return Interval.cat(items, dim) if isinstance(items[0], Interval) else torch.cat(items, dim)


def _softmax(scores):
    """``softmax`` along the last axis, shifted by the (exact) largest (lower end of a) score."""
    low = scores.lo if isinstance(scores, Interval) else scores
    shift = low.nan_to_num(nan=0.0).amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    weights = (scores - shift).exp()
    return weights / weights.sum(-1)[..., None]


class _Joined:
    """The tables a forward pass gathers from, joined along the last axis so that one gather serves several.

    Works on :class:`Interval` tables (certified) and on plain tensors (the screen) alike."""

    def __init__(self, T: Tables):
        self.T = T
        self.H, self.d = T.OQ.shape[-1], T.OD.shape[-1]
        self.EKV = _cat([T.EK, T.EV], -1)  # [d, n, H + d]
        self.OKV = _cat([T.OK, T.OV], -1)
        self.E_all = _cat([T.EQ, T.ED, T.EK, T.EV], -1)  # [d, n, 2H + 2d]
        self.O_all = _cat([T.OQ, T.OD, T.OK, T.OV], -1)


def layer0(J: _Joined, X: torch.Tensor):
    """What layer 1 reads at positions ``0 .. m-1`` of prefixes ``X [P, m]``: keys and values joined
    ``[P, m, H + d]``, and the rows layer 0 mixes at the last position ``[P, m, 2H + 2d]``."""
    P, m = X.shape
    pos = torch.arange(m)
    S = J.T.S0[X[:, :, None], pos[None, :, None], X[:, None, :], pos[None, None, :]]  # [P, m(query), m(key)]
    causal = torch.ones(m, m, dtype=torch.bool).triu(1)
    masked = Interval.where(causal, float("-inf"), S) if isinstance(S, Interval) else S.masked_fill(causal, float("-inf"))
    a = _softmax(masked)
    return J.EKV[X, pos] + a @ J.OKV[X, pos], J.O_all[X, pos]


def last_positions(J: _Joined, X: torch.Tensor, keys_values, rows, matches: torch.Tensor | None = None):
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
    c = _softmax(_cat([S0[q[:, :, None], last[:, :, None], X[:, None, :], pos], S0[q, last, q, last][..., None]], 2))
    mixed = J.E_all[q, last] + c[..., :m] @ rows + c[..., m:] * J.O_all[q, last]  # [P, I, 2H + 2d]
    Q, direct, k_last, v_last = mixed[..., :H], mixed[..., H: H + d], mixed[..., H + d: 2 * H + d], mixed[..., 2 * H + d:]
    first = Q @ keys_values[..., :H].permute(0, 2, 1)  # [P, I, m]
    b = _softmax(_cat([first, (Q * k_last).sum(-1)[..., None]], 2))  # [P, I, n]
    return direct + b[..., :m] @ keys_values[..., H:] + b[..., m:] * v_last


def logits(T: Tables, tokens: torch.Tensor):
    """Last-position logits of the given inputs ``[b, n]`` (each must repeat an earlier token last): an
    :class:`Interval` from interval tables, a plain tensor from plain ones."""
    n = tokens.shape[1]
    match = match_position(tokens)
    J = _Joined(T)
    parts, order = [], []
    for i in match.unique().tolist():
        rows = (match == i).nonzero()[:, 0]
        X = tokens[rows, : n - 1]
        parts.append(last_positions(J, X, *layer0(J, X), matches=torch.tensor([i]))[:, 0])
        order.append(rows)
    inverse = torch.cat(order).argsort()
    return _cat(parts, 0)[inverse]


def margins(values: Interval, answer: torch.Tensor) -> Interval:
    """``logit[answer] - logit[x]`` for every ``x`` (the answer's own entry is ``+inf``).  ``[b, d]``"""
    right = values[torch.arange(len(answer)), answer]
    diff = right[:, None] - values
    inf = torch.full_like(diff.lo, float("inf"))
    own = torch.nn.functional.one_hot(answer, values.shape[-1]).bool()
    return Interval.where(own, Interval(inf, inf, diff.certified), diff)


def classify(T: Tables, tokens: torch.Tensor) -> torch.Tensor:
    """Each input's status in exact arithmetic, by interval evaluation: CORRECT, WRONG or UNDECIDED."""
    gap = margins(logits(T, tokens), label(tokens))
    status = torch.full((len(tokens),), UNDECIDED, dtype=torch.int64)
    status[(gap.lo > 0).all(-1)] = CORRECT
    status[(gap.hi <= 0).any(-1)] = WRONG
    return status


# -- the screen's allowance ------------------------------------------------------------------------------

#: The screen's arithmetic: unit roundoff, an absolute allowance per operation for underflow, and how
#: many ulps ``exp`` may be off (float32's is tested against mpmath in the plugin's tests; float64's is the
#: core's :data:`gbmi_core.certified.ELEMENTARY_ULPS`, tested there).  The screen runs in float32, and in
#: float64 when float32 cannot bound a model's numbers.
PRECISIONS = {torch.float32: (2.0**-24, 2.0**-125, 8), torch.float64: (2.0**-53, 2.0**-1021, ELEMENTARY_ULPS)}


class _Arithmetic:
    def __init__(self, dtype: torch.dtype):
        self.u, self.eta, ulps = PRECISIONS[dtype]
        self.exp = ulps * 2.0 * self.u

    def gamma(self, k: int) -> float:
        return 2.0 * k * self.u / (1.0 - k * self.u)

    def softmax(self, eps: float, big: float, k: int) -> tuple[float, float]:
        """Relative and absolute error ``(ρ, η')`` of a computed softmax weight over ``k`` keys.

        Scores within ``eps`` of exact and at most ``big`` in magnitude.  The exponent ``fl(s̃ - max s̃)`` is
        within ``eps + 2 u big`` of the exact score minus the same (exact) shift; ``exp`` adds its ulps and
        ``η``; the largest weight is ``exp(0) = 1``, so the sum is at least about 1 and absolute errors
        become relative; the sum adds ``γ_k``, the division ``u``.  Generous by 3x."""
        delta = eps + 2 * self.u * big
        if not math.isfinite(delta) or delta > 1e-2:
            return math.inf, math.inf
        r1 = math.expm1(delta) * 1.01 + self.exp
        return 3 * (2 * r1 + self.gamma(k) + self.u + 4 * k * self.eta), 4 * self.eta

    def mix(self, eps_e: float, big_e: float, eps_o: float, big_o: float, rho: float, eta: float,
            k: int) -> tuple[float, float]:
        """Error and magnitude of ``ẽ + Σ_k ã_k õ_k`` (computed weights with relative error ρ, absolute η)."""
        mass = 1 + rho + k * eta  # Σ ã
        g = self.gamma(k + 1)
        eps = eps_e + eps_o + (rho + k * eta) * big_o + g * (big_e + mass * big_o) + (k + 1) * self.eta
        return eps, (big_e + mass * big_o) * (1 + g)


def _size(table: Interval, screen: torch.Tensor) -> tuple[float, float]:
    """``(ε, B)``: every screen entry is within ε of the exact entry, and has magnitude at most B."""
    x = screen.double()
    eps = torch.maximum(x - table.lo, table.hi - x).max()
    return float(eps) * (1 + 1e-9), float(x.abs().max())


def screen_allowance(T: Tables, screen: Tables | None = None) -> float:
    """An upper bound on |computed margin - exact margin| for every input the screen evaluates with the
    tables ``screen`` (default: ``T``'s midpoints in float32), in their precision.  ``inf`` when that
    precision cannot bound the model's numbers."""
    screen = _point(T) if screen is None else screen
    A = _Arithmetic(screen.S0.dtype)
    n, H = T.n, T.OQ.shape[-1]
    sizes = {name: _size(getattr(T, name), getattr(screen, name)) for name in _TABLES}
    eps_s0, big_s0 = sizes["S0"]
    rho_a, eta_a = A.softmax(eps_s0, big_s0, n)

    def mix(name):
        (ee, be), (eo, bo) = sizes["E" + name], sizes["O" + name]
        return A.mix(ee, be, eo, bo, rho_a, eta_a, n)

    (eq, bq), (ek, bk), (ev, bv), (ed, bd) = mix("Q"), mix("K"), mix("V"), mix("D")
    eps_s1 = H * (bq * ek + eq * (bk + ek)) + A.gamma(H) * H * bq * bk + H * A.eta
    rho_b, eta_b = A.softmax(eps_s1, H * bq * bk, n)
    eps_l, big_l = A.mix(ed, bd, ev, bv, rho_b, eta_b, n)
    allowance = (2 * eps_l + 2 * A.u * 2 * big_l) * 1.01
    limit = float(torch.finfo(screen.S0.dtype).max) * 1e-8  # logits far inside the format's range
    return allowance if math.isfinite(allowance) and big_l < limit else math.inf


# -- brute force -----------------------------------------------------------------------------------------

def _threshold(allowance: float, dtype: torch.dtype) -> torch.Tensor:
    """The allowance as a number of the screen's type, rounded up (a comparison with a Python float would
    round it to the nearest float32, possibly below)."""
    value = torch.tensor(allowance, dtype=torch.float64).to(dtype)
    if float(value) < allowance:
        value = torch.nextafter(value, torch.tensor(float("inf"), dtype=dtype))
    return value


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
    screen = _point(T)
    allowance = screen_allowance(T, screen)
    if torch.get_float32_matmul_precision() != "highest":  # float32 products may be rounded coarser than u
        allowance = math.inf
    if not math.isfinite(allowance):  # float32 cannot bound this model's numbers: screen in float64
        screen = _point(T, torch.float64)
        allowance = screen_allowance(T, screen)
    if not math.isfinite(allowance) and total > 1 << 20:
        raise TooLarge(f"this model's numbers are beyond what the brute-force screen can bound, and its {total:,} "
                       f"inputs are too many to evaluate one by one in intervals")
    J = _Joined(screen)
    threshold = _threshold(allowance, screen.S0.dtype)
    H = T.OQ.shape[-1]
    per_prefix = 8 * (n * n + 4 * n * (2 * H + 2 * d) + (n - 2) * 4 * d)
    chunk = min(4096, chunk_size(math.perm(d, n - 1), per_prefix, what=f"brute force at d={d}, n={n}"))
    correct, loss_sum, min_margin = 0, 0.0, math.inf
    recheck, doubtful_count = [], 0
    count = math.perm(d, n - 1)
    bar = reporter(count, f"brute force over {total:,} induction inputs", "prefix", enabled=total >= PROGRESS_FROM)
    for start in range(0, count, chunk):
        X = prefixes(d, n - 1, start, start + chunk)
        keys_values, rows = layer0(J, X)
        every = last_positions(J, X, keys_values, rows)  # [P, n-2, d]
        for i in range(n - 2):
            out = every[:, i]
            answer = X[:, i + 1]
            right = out.gather(1, answer[:, None])[:, 0]
            others = out.scatter(1, answer[:, None], float("-inf")).amax(1)
            margin = right - others
            good = margin > threshold
            correct += int(good.sum())
            unsure = ~(good | (margin < -threshold))
            if bool(unsure.any()):
                doubtful = X[unsure]
                recheck.append(torch.cat([doubtful, doubtful[:, i: i + 1]], 1))
                doubtful_count += len(doubtful)
            finite = margin[torch.isfinite(margin)]
            if len(finite):
                min_margin = min(min_margin, float(finite.min()))
            if with_loss:
                loss_sum += float((out.logsumexp(1) - right).double().sum())  # not part of the proof
        bar.update(len(X))
        if screen.S0.dtype == torch.float32 and doubtful_count > 1000 + 0.01 * (start + len(X)) * (n - 2):
            # float32's allowance leaves too much to intervals for this model: the rest in float64
            float64 = _point(T, torch.float64)
            allowance64 = screen_allowance(T, float64)
            if math.isfinite(allowance64):
                screen, allowance, J = float64, allowance64, _Joined(float64)
                threshold = _threshold(allowance, torch.float64)
    bar.close()
    extra = {"rechecked": 0, "undecided": 0, "allowance": allowance, "screen": str(screen.S0.dtype).split(".")[-1],
             "min_margin": min_margin}
    if recheck:
        tokens = torch.cat(recheck)
        status = torch.cat([classify(T, tokens[s: s + 4096]) for s in range(0, len(tokens), 4096)])
        still = (status == UNDECIDED).nonzero()[:, 0]
        if len(still):
            exact = _Exact(model)
            status[still] = torch.tensor([exact.classify(tokens[k].tolist()) for k in still.tolist()],
                                         dtype=status.dtype)
        correct += int((status == CORRECT).sum())
        extra.update(rechecked=len(tokens), rechecked_mpmath=len(still), undecided=int((status == UNDECIDED).sum()))
    if with_loss:
        extra["mean_loss"] = loss_sum / total
    return Bound(correct_count=correct, total_count=total, extra=extra, certified=True)


class _Exact:
    """The last stage: one input at a time in mpmath interval arithmetic straight from the weights, at
    :data:`MPMATH_BITS` bits, doubled up to :data:`MPMATH_MAX_BITS`; it lives and dies with one brute force,
    so no other model's values are ever read.  What is open even then is a tie to that precision (exact
    ties of a two-layer softmax cannot be told apart from near ties by a finite precision): left undecided,
    not counted."""

    def __init__(self, model):
        from gbmi_core.attention import attention_only_weights

        self.w = attention_only_weights(model)
        self.mats: dict | None = None  # the weights as mpmath interval matrices (exact), made once

    def classify(self, tokens: list[int]) -> int:
        import mpmath

        bits = MPMATH_BITS
        while bits <= MPMATH_MAX_BITS:
            saved, mpmath.iv.prec = mpmath.iv.prec, bits
            try:
                status = self._classify(tokens, mpmath.iv)
            finally:
                mpmath.iv.prec = saved
            if status != UNDECIDED:
                return status
            bits *= 2
        return UNDECIDED

    def _matrices(self, iv) -> dict:
        """Every weight as an interval matrix; float values convert exactly at any precision >= 53 bits."""
        if self.mats is None:
            def mat(t):
                t = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
                return iv.matrix([[iv.mpf(float(v)) for v in row] for row in t.tolist()])

            w = self.w
            self.mats = {"W_E": mat(w.W_E), "W_pos": mat(w.W_pos), "W_U": mat(w.W_U), "b_U": mat(w.b_U),
                         "layers": [{name: mat(getattr(L, name)) for name in
                                     ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")} for L in w.layers]}
        return self.mats

    def _classify(self, tokens: list[int], iv) -> int:
        w, n = self.w, len(tokens)
        M = self._matrices(iv)

        def row(A, i):
            return iv.matrix([[A[i, c] for c in range(A.cols)]])

        h = [row(M["W_E"], t) + row(M["W_pos"], j) for j, t in enumerate(tokens)]
        for layer, (L, Lm) in enumerate(zip(w.layers, M["layers"])):
            W_Q, W_K, W_V, W_O = Lm["W_Q"], Lm["W_K"], Lm["W_V"], Lm["W_O"]
            b_Q, b_K, b_V, b_O = Lm["b_Q"], Lm["b_K"], Lm["b_V"], Lm["b_O"]
            keys = [x * W_K + b_K for x in h]
            values = [(x * W_V + b_V) * W_O for x in h]
            rows = range(n) if layer == 0 else [n - 1]
            out = []
            for j in rows:
                q = h[j] * W_Q + b_Q
                scores = [(q * keys[k].T)[0, 0] / iv.mpf(L.attn_scale) for k in range(j + 1)]
                top = max(float(s.mid) for s in scores)
                e = [iv.exp(s - top) for s in scores]
                total = sum(e[1:], e[0])
                mixed = sum((values[k] * (e[k] / total) for k in range(1, j + 1)), values[0] * (e[0] / total))
                out.append(h[j] + mixed + b_O)
            h = out if layer == 0 else h
            final = out[-1]
        logits = final * M["W_U"] + M["b_U"]
        answer = tokens[match_position(torch.tensor(tokens)[None])[0] + 1]
        right, open_ = logits[0, answer], False
        for y in range(logits.cols):
            if y == answer:
                continue
            gap = right - logits[0, y]
            if gap.b <= 0:
                return WRONG
            if not gap.a > 0:
                open_ = True
        return UNDECIDED if open_ else CORRECT


MPMATH_BITS, MPMATH_MAX_BITS = 256, 4096


def verify(model, certificate=None) -> Bound:
    """The strategy's verification: brute force needs no certificate."""
    return brute_force(model)
