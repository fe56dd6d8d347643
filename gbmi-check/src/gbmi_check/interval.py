"""Rigorous arithmetic: float64 intervals in numpy, and FLINT's arb balls for what needs more.

Every ``Iv`` holds arrays ``lo <= hi`` that enclose the exact real value of the formula computed.  The
inequalities this module relies on, each stated where it is used:

(R1) IEEE 754 binary64, round to nearest: ``+ - * /`` are correctly rounded, so the exact result of one
     operation lies between the two neighbours (``nextafter``) of the computed one (subnormals and
     overflow to ``inf`` included).
(R2) A dot product of length ``k`` computed in any order, with or without FMA (numpy's BLAS):
     ``|fl(Σ x_i y_i) - Σ x_i y_i| <= γ_k Σ |x_i y_i| + k·η``, ``γ_k = k u / (1 - k u)``, ``u = 2^-53``,
     ``η = 2^-1074`` (Higham, Accuracy and Stability, §3.1; the η term covers underflow).
(R3) Radii and error terms are sums and products of nonnegative floats: each is computed with relative
     error at most ``γ_{k+2}`` for ``k`` terms, so scaling them by ``1 + 2^-30`` (far more than any
     ``γ`` here, ``k < 2^20``) and adding ``2^-1060`` per term keeps them upper bounds.
(R4) ``exp`` and ``log`` come from FLINT's arb (rigorous balls), evaluated at each endpoint and rounded
     outward by (R1)'s neighbour rule on conversion to float64; both are increasing.
(R5) For large arrays ``exp`` is evaluated in numpy with a proved error bound (:func:`exp_bounds`).
"""

from __future__ import annotations

import math

import numpy as np
from flint import arb

U = 2.0**-53
TINY = 2.0**-1060  # (R3): an absolute allowance per term for underflow in error terms
INFLATE = 1 + 2.0**-30  # (R3)


_BIG = np.finfo(np.float64).max


def up(x):
    """A float at least the next float above ``x`` (so above the exact result that ``x`` rounds, by R1):
    ``δ = |x| 2^-52 + 2^-1074`` is at least one ulp of ``x`` (exact scaling by a power of two; the ``2^-1074``
    covers subnormals), and rounding ``x + δ >= next(x)`` to nearest cannot go below the float ``next(x)``.
    Infinities stay as they are (``|x|`` is capped so that ``-inf + δ`` is not NaN)."""
    return x + (np.minimum(np.abs(x), _BIG) * 2.0**-52 + 2.0**-1074)


def down(x):
    return x - (np.minimum(np.abs(x), _BIG) * 2.0**-52 + 2.0**-1074)


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def to_float_down(b: arb) -> float:
    """A float at most the ball's lower end (R4)."""
    return float(np.nextafter(float(b.lower()), -np.inf))


def to_float_up(b: arb) -> float:
    return float(np.nextafter(float(b.upper()), np.inf))


class Iv:
    """Intervals over float64 arrays, outward rounded (module doc)."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    @staticmethod
    def of(x) -> "Iv":
        """An exact value: float32 and float64 numbers convert to float64 exactly."""
        return Iv(np.asarray(x, dtype=np.float64))

    def _c(self, other) -> "Iv":
        return other if isinstance(other, Iv) else Iv.of(other)

    # (R1) for each operation: one neighbour outward
    def __add__(self, other):
        o = self._c(other)
        return Iv(down(self.lo + o.lo), up(self.hi + o.hi))

    __radd__ = __add__

    def __sub__(self, other):
        o = self._c(other)
        return Iv(down(self.lo - o.hi), up(self.hi - o.lo))

    def __rsub__(self, other):
        return self._c(other) - self

    def __neg__(self):
        return Iv(-self.hi, -self.lo)

    def __mul__(self, other):
        o = self._c(other)
        products = [self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi]
        products = [np.where(np.isnan(p), np.where((a == 0) | (b == 0), 0.0, np.nan), p)  # 0 * inf = 0 here
                    for p, (a, b) in zip(products, [(self.lo, o.lo), (self.lo, o.hi), (self.hi, o.lo), (self.hi, o.hi)])]
        return Iv(down(np.minimum.reduce(products)), up(np.maximum.reduce(products)))

    __rmul__ = __mul__

    def __truediv__(self, other):
        """Where the divisor may be 0 or negative the quotient is unbounded: ``[-inf, inf]`` (proves nothing)."""
        o = self._c(other)
        positive = o.lo > 0
        safe = np.where(positive, o.lo, 1.0), np.where(positive, o.hi, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            q = [self.lo / safe[0], self.lo / safe[1], self.hi / safe[0], self.hi / safe[1]]
        lo, hi = down(np.minimum.reduce(q)), up(np.maximum.reduce(q))
        return Iv(np.where(positive, lo, -np.inf), np.where(positive, hi, np.inf))

    def clip(self, low: float, high: float) -> "Iv":
        """Intersect with ``[low, high]``, for a quantity known (by mathematics) to lie there."""
        return Iv(np.maximum(self.lo, low), np.minimum(self.hi, high))

    def __getitem__(self, index):
        return Iv(self.lo[index], self.hi[index])

    @property
    def shape(self):
        return self.lo.shape

    def map(self, fn) -> "Iv":
        """An index-only operation (reshape, transpose, broadcast): exact."""
        return Iv(fn(self.lo), fn(self.hi))

    def exp(self) -> "Iv":
        """(R4) through arb for up to :data:`ARB_LIMIT` distinct values; (R5) beyond."""
        if self.lo.size > ARB_LIMIT:
            return Iv(exp_bounds(self.lo)[0], exp_bounds(self.hi)[1])
        return Iv(_arb_map(self.lo, "exp", to_float_down), _arb_map(self.hi, "exp", to_float_up))

    def log(self) -> "Iv":
        """``log`` of a positive interval (``-inf`` below where the lower end is 0)."""
        return Iv(_arb_map(np.maximum(self.lo, 0.0), "log", to_float_down), _arb_map(self.hi, "log", to_float_up))

    def sqrt(self) -> "Iv":
        """Of a nonnegative interval: IEEE ``sqrt`` is correctly rounded, so (R1) applies."""
        return Iv(np.maximum(down(np.sqrt(np.maximum(self.lo, 0.0))), 0.0), up(np.sqrt(self.hi)))

    def maximum(self, other) -> "Iv":
        o = self._c(other)
        return Iv(np.maximum(self.lo, o.lo), np.maximum(self.hi, o.hi))

    def minimum(self, other) -> "Iv":
        o = self._c(other)
        return Iv(np.minimum(self.lo, o.lo), np.minimum(self.hi, o.hi))

    def amax(self, axis) -> "Iv":
        return Iv(self.lo.max(axis), self.hi.max(axis))

    def amin(self, axis) -> "Iv":
        return Iv(self.lo.min(axis), self.hi.min(axis))

    def abs(self) -> "Iv":
        lo = np.where(self.lo >= 0, self.lo, np.where(self.hi <= 0, -self.hi, 0.0))
        return Iv(lo, np.maximum(np.abs(self.lo), np.abs(self.hi)))

    def sum(self, axis) -> "Iv":
        """(R2) with ``y = 1``: the error of a float sum of ``k`` terms is at most ``γ_k Σ|x| + kη``."""
        k = self.lo.shape[axis]
        g = 2 * gamma(k) * INFLATE
        lo, hi = self.lo.sum(axis), self.hi.sum(axis)
        return Iv(down(lo - (g * np.abs(self.lo).sum(axis) + k * TINY)),
                  up(hi + (g * np.abs(self.hi).sum(axis) + k * TINY)))

    def certainly_negative(self):
        return self.hi < 0  # NaN: False

    def certainly_positive(self):
        return self.lo > 0


ARB_LIMIT = 1 << 16
_LN2 = arb(2).log()
_LN2_LO, _LN2_HI = to_float_down(_LN2), to_float_up(_LN2)
_TAYLOR = 18  # terms of exp's series: for |r| <= 0.36, r^18/18! < 3e-24


def exp_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R5) ``lo <= exp(x) <= hi`` for float arrays, vectorised.  ``x = k ln2 + r`` with ``k`` an integer
    (any choice is exact math) and ``r`` enclosed by interval arithmetic (R1) with ``ln2`` between two floats
    (from arb); ``|r| <= 0.36``.  ``p(r) = Σ_{i<18} r^i/i!`` by Horner in floats has error at most
    ``γ_36 Σ |r|^i/i! + Σ u|r|^i/i! <= (γ_36 + u) e^0.36`` (Higham §5.1, coefficients rounded to nearest), the
    series remainder is below ``3e-24``, and ``p(r) >= e^-0.36 - 3e-24 > 0.69``; so ``exp(r) = p̃ (1 ± 1e-13)``
    for each end of ``r`` (exp is increasing).  ``2^k`` scaling by ``ldexp`` is one correctly rounded operation
    (R1).  NaN stays NaN; ``±inf`` give ``inf`` and ``0``."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return _exp_bounds(np.asarray(x, dtype=np.float64))


def _exp_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(x)
    xs = np.where(finite, np.clip(x, -1100.0, 1100.0), 0.0)
    k = np.rint(xs / 0.6931471805599453)
    r = Iv.of(xs) - Iv.of(k) * Iv(np.full(xs.shape, _LN2_LO), np.full(xs.shape, _LN2_HI))
    out = []
    for end, side in ((r.lo, -1), (r.hi, 1)):
        y = np.full(xs.shape, 1.0 / math.factorial(_TAYLOR - 1))
        for i in range(_TAYLOR - 2, -1, -1):
            y = y * end + 1.0 / math.factorial(i)
        y = y * (1 + side * 1e-13)
        y = np.ldexp(y, k.astype(np.int64).clip(-2200, 2200))
        out.append(down(y) if side < 0 else up(y))
    lo, hi = out
    lo = np.where(finite, np.where(x < -1100, 0.0, np.maximum(lo, 0.0)), np.where(x == np.inf, np.inf, np.where(x == -np.inf, 0.0, np.nan)))
    hi = np.where(finite, np.where(x > 1100, np.inf, hi), np.where(x == np.inf, np.inf, np.where(x == -np.inf, 0.0, np.nan)))
    hi = np.where(finite & (x < -1100), 2.0**-1074, hi)
    return lo, hi


def where(condition, a: Iv, b) -> Iv:
    b = b if isinstance(b, Iv) else Iv.of(b)
    return Iv(np.where(condition, a.lo, b.lo), np.where(condition, a.hi, b.hi))


def stack(items, axis=0) -> Iv:
    return Iv(np.stack([i.lo for i in items], axis), np.stack([i.hi for i in items], axis))


def split(x: Iv) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint and radius ``(m, r)`` with ``[lo, hi] ⊆ [m - r, m + r]``: each difference rounded up (R1)."""
    m = (x.lo + x.hi) / 2
    return m, np.maximum(up(x.hi - m), up(m - x.lo))


def matmul(a, b) -> Iv:
    """A certified product; ``a``/``b`` are intervals or ``(mid, rad)`` pairs from :func:`split`.  With
    ``A = Am ± Ar`` and ``B = Bm ± Br``, ``|AB - Am Bm| <= |Am| Br + Ar (|Bm| + Br)`` entrywise (exactly), plus
    (R2) for ``fl(Am Bm)``; the radius itself is an upper bound by (R3)."""
    am, ar = a if isinstance(a, tuple) else split(a if isinstance(a, Iv) else Iv.of(a))
    bm, br = b if isinstance(b, tuple) else split(b if isinstance(b, Iv) else Iv.of(b))
    k = am.shape[-1]
    mid = am @ bm
    abs_bm = np.abs(bm)
    rad = (np.abs(am) @ (br + 2 * gamma(k) * abs_bm) + ar @ (abs_bm + br)) * INFLATE + (k + 4) * TINY
    rad = rad * INFLATE + TINY
    return Iv(down(mid - rad), up(mid + rad))


_AT_INFINITY = {("exp", -np.inf): 0.0, ("exp", np.inf): np.inf, ("log", np.inf): np.inf}


def _arb_map(x: np.ndarray, name: str, convert) -> np.ndarray:
    """arb's ``exp`` or ``log`` of each distinct value of ``x``, converted outward (R4); ``log(0) = -inf``."""
    values, inverse = np.unique(x.reshape(-1), return_inverse=True)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values.tolist()):
        if np.isnan(v):
            out[i] = np.nan
        elif np.isinf(v):
            out[i] = _AT_INFINITY[name, v]
        elif name == "log" and v <= 0:
            out[i] = -np.inf
        else:
            out[i] = convert(getattr(arb(v), name)())
    return out[inverse].reshape(x.shape)


def log_sum_exp(x: Iv, axis) -> Iv:
    """``log Σ exp(x)`` along ``axis`` in interval arithmetic, after subtracting an exact float (the largest
    finite lower end) so that nothing overflows; ``-inf`` entries contribute nothing."""
    shift = np.max(np.where(np.isfinite(x.lo), x.lo, -np.inf), axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    shifted = x - Iv.of(shift)
    total = shifted.exp().sum(axis)
    return total.log() + Iv.of(np.squeeze(shift, axis))
