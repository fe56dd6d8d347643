"""Certified arithmetic: float64 interval tensors whose every operation rounds outward.

A proof's decisions ("this logit difference is negative") are only proofs if rounding cannot flip them.
:class:`Interval` holds two float64 tensors ``lo <= hi`` and guarantees that the value the same formula
takes **in exact real arithmetic** lies in ``[lo, hi]``, elementwise.  Verification code is written once,
as ordinary tensor code on intervals, and decides with :meth:`Interval.certainly_negative` and friends.

The error model (``docs/certified.md`` says the same in prose):

* **Inputs** are exact: float32 weights converted to float64 lose nothing (:meth:`Interval.exact`).
* **Basic operations** (``+ - * /``) are IEEE 754 binary64, round to nearest, *gradual underflow on*
  (:func:`check_floating_point` refuses to run when flush-to-zero is on).  The exact result of one such
  operation on floats lies between the neighbours (``nextafter``) of the rounded one, overflow included
  (``inf``'s lower neighbour is the largest finite float, and an exact result that rounds to ``inf`` is at
  least that large).  So ``lo = nextafter(fl(lo_a + lo_b), -inf)`` is a rigorous lower bound, and so on.
* **Sums and matrix products** of length ``k``, in any order, with or without fused multiply-add, obey
  Higham's bound ``|fl(Σ x_i y_i) - Σ x_i y_i| <= γ_k Σ |x_i y_i| + k·η`` with ``γ_k = k u / (1 - k u)``,
  ``u = 2^-53``, ``η`` an underflow allowance (Higham, *Accuracy and Stability of Numerical Algorithms*,
  §3.1 and §2.2).  Products of intervals use midpoint-radius form (Rump, 1999): three real matrix
  products.  The radius's own rounding is covered by doubling ``γ`` and rounding it up once more.
* **exp, log, erf and tanh** from torch (SLEEF's 1-ulp kernels, or the C library's) are assumed to be
  within :data:`ELEMENTARY_ULPS` ulps (relative error ``<= 4·2^-52``), plus ``η`` absolutely for subnormal
  results; ``tests/test_certified.py`` checks this assumption against mpmath on random, dense-grid and
  edge-case inputs.  ``sqrt`` is correctly rounded (IEEE 754), so one neighbour each way.
* NaN never certifies anything: every ``certainly_*`` test is ``False`` on NaN.

An interval made with ``certified=False`` is a plain float64 tensor in disguise (``lo is hi``, no
widening): proof *search* runs the same code fast and uncertified; only verification pays for rigour.

Costs: an elementwise op on intervals is about 2 to 4 float ops; a matrix product with one exact factor is
2 matrix products, with two interval factors 3.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: Unit roundoff of binary64, round to nearest.
U = 2.0**-53
#: Absolute allowance per operation for underflow.  Generous: it also covers a flushed subnormal.
ETA = 2.0**-1021
#: Assumed worst-case error of torch's float64 ``exp`` and ``log``, in ulps; tested against mpmath.
ELEMENTARY_ULPS = 4
_REL_ELEMENTARY = ELEMENTARY_ULPS * 2.0**-52
_INF = float("inf")


def gamma(k: int) -> float:
    """An upper bound on Higham's ``γ_k = k u / (1 - k u)``, doubled to cover rounding of the bound itself."""
    if k * U >= 0.25:
        raise ValueError(f"a sum of {k} terms is too long for the γ_k error bound")
    return 2.0 * k * U / (1.0 - k * U)


def check_floating_point() -> None:
    """Refuse to certify anything when denormals are flushed to zero (the error model assumes they are not)."""
    tiny = torch.tensor([2.0**-1074], dtype=torch.float64)
    if not bool((tiny * 2 > 0).all()) or not bool(((tiny * 2) / 2 == tiny).all()):
        raise RuntimeError("denormal floats are flushed to zero here (torch.set_flush_denormal?); "
                           "certified arithmetic needs IEEE gradual underflow")


_TOWARDS = {-1: torch.tensor(-_INF, dtype=torch.float64), 1: torch.tensor(_INF, dtype=torch.float64)}


def down(x: torch.Tensor) -> torch.Tensor:
    """The float below ``x``: a rigorous lower bound on the exact result ``x`` was rounded from."""
    return torch.nextafter(x, _TOWARDS[-1])


def up(x: torch.Tensor) -> torch.Tensor:
    """The float above ``x``: a rigorous upper bound on the exact result ``x`` was rounded from."""
    return torch.nextafter(x, _TOWARDS[1])


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.float64:
            if x.is_floating_point() and torch.finfo(x.dtype).bits > 64:
                raise TypeError(f"cannot take {x.dtype} exactly into float64")
            x = x.to(torch.float64)  # float32/16 and integers below 2^53 convert exactly
        return x
    value = float(x)
    if isinstance(x, int) and value != x:
        raise ValueError(f"integer {x} is not exactly a float64")
    return torch.scalar_tensor(value, dtype=torch.float64)  # one dispatched op (torch.tensor makes three)


def _error_bound(magnitude: torch.Tensor, terms: int) -> torch.Tensor:
    """``up(γ_terms · magnitude + (terms + 1)·η)``: the rounding error of a length-``terms`` sum whose computed
    sum of absolute values is ``magnitude``."""
    return up(up(magnitude * gamma(terms)) + (terms + 1) * ETA)


class Interval:
    """A float64 tensor of intervals ``[lo, hi]`` that enclose the exact value of the formula computed.

    Build with :meth:`exact` (exactly representable inputs) or :meth:`between`; combine with ``+ - * /``,
    ``@``, :meth:`exp`, :meth:`log`, :meth:`sum`, :meth:`amax`, ... .  Numbers and plain tensors mixed in
    are taken as exact.  Shape operations (indexing, ``reshape``, ``permute``, ...) apply to both ends.
    """

    __slots__ = ("lo", "hi", "certified")

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, certified: bool = True):
        self.lo, self.hi, self.certified = lo, hi, certified

    # -- making ------------------------------------------------------------------------------------
    @classmethod
    def exact(cls, x, certified: bool = True) -> "Interval":
        """The point interval of exactly representable values (float32 weights, small integers)."""
        t = _as_tensor(x)
        return cls(t, t, certified)

    @classmethod
    def between(cls, lo, hi, certified: bool = True) -> "Interval":
        return cls(_as_tensor(lo), _as_tensor(hi), certified)

    def _new(self, lo, hi) -> "Interval":
        return Interval(lo, lo if not self.certified else hi, self.certified)

    def _point(self, value: torch.Tensor) -> "Interval":
        return Interval(value, value, False)

    def _coerce(self, other) -> "Interval":
        if isinstance(other, Interval):
            if other.certified != self.certified:
                raise ValueError("cannot mix certified and uncertified intervals")
            return other
        return Interval.exact(other, self.certified)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def mid(self) -> torch.Tensor:
        """A float inside the interval (for heuristics; any value there is as good for soundness)."""
        if not self.certified:
            return self.lo
        mid = self.lo + (self.hi - self.lo) / 2
        return torch.where(torch.isfinite(mid), mid, self.lo).clamp(self.lo, self.hi)

    @property
    def radius(self) -> torch.Tensor:
        """An upper bound on the distance from :attr:`mid` to either end."""
        mid = self.mid
        return up(torch.maximum(self.hi - mid, mid - self.lo))

    @property
    def shape(self):
        return self.lo.shape

    def dim(self) -> int:
        return self.lo.dim()

    def __len__(self) -> int:
        return len(self.lo)

    def certainly_negative(self) -> torch.Tensor:
        """Where the exact value is surely ``< 0`` (``False`` on NaN)."""
        return self.hi < 0

    def certainly_positive(self) -> torch.Tensor:
        return self.lo > 0

    def __repr__(self) -> str:
        kind = "" if self.certified else ", uncertified"
        return f"Interval(lo={self.lo}, hi={self.hi}{kind})"

    # -- shape operations (exact) ------------------------------------------------------------------
    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Interval":
        lo = fn(self.lo)
        return Interval(lo, fn(self.hi) if self.certified else lo, self.certified)

    def __getitem__(self, index) -> "Interval":
        return self._map(lambda t: t[index])

    def reshape(self, *shape) -> "Interval":
        return self._map(lambda t: t.reshape(*shape))

    def expand(self, *shape) -> "Interval":
        return self._map(lambda t: t.expand(*shape))

    def expand_as(self, other) -> "Interval":
        return self._map(lambda t: t.expand_as(other.lo if isinstance(other, Interval) else other))

    def permute(self, *dims) -> "Interval":
        return self._map(lambda t: t.permute(*dims))

    def flip(self, *dims) -> "Interval":
        return self._map(lambda t: t.flip(*dims))

    def diagonal(self, *args, **kwargs) -> "Interval":
        return self._map(lambda t: t.diagonal(*args, **kwargs))

    @property
    def T(self) -> "Interval":
        return self._map(lambda t: t.T)

    def contiguous(self) -> "Interval":
        return self._map(lambda t: t.contiguous())

    @staticmethod
    def stack(items: Sequence["Interval"], dim: int = 0) -> "Interval":
        certified = items[0].certified
        lo = torch.stack([i.lo for i in items], dim)
        return Interval(lo, torch.stack([i.hi for i in items], dim) if certified else lo, certified)

    @staticmethod
    def cat(items: Sequence["Interval"], dim: int = 0) -> "Interval":
        certified = items[0].certified
        lo = torch.cat([i.lo for i in items], dim)
        return Interval(lo, torch.cat([i.hi for i in items], dim) if certified else lo, certified)

    @staticmethod
    def where(condition: torch.Tensor, a, b) -> "Interval":
        """Elementwise choice by an exact condition (a bool tensor, not an interval)."""
        certified = (a if isinstance(a, Interval) else b).certified
        a = a if isinstance(a, Interval) else Interval.exact(a, certified)
        b = b if isinstance(b, Interval) else Interval.exact(b, certified)
        lo = torch.where(condition, a.lo, b.lo)
        return Interval(lo, torch.where(condition, a.hi, b.hi) if a.certified else lo, a.certified)

    # -- arithmetic --------------------------------------------------------------------------------
    def __neg__(self) -> "Interval":
        return self._new(-self.hi, -self.lo)

    def __add__(self, other) -> "Interval":
        other = self._coerce(other)
        if not self.certified:
            return self._point(self.lo + other.lo)
        return Interval(down(self.lo + other.lo), up(self.hi + other.hi))

    __radd__ = __add__

    def __sub__(self, other) -> "Interval":
        other = self._coerce(other)
        if not self.certified:
            return self._point(self.lo - other.lo)
        return Interval(down(self.lo - other.hi), up(self.hi - other.lo))

    def __rsub__(self, other) -> "Interval":
        return self._coerce(other) - self

    def __mul__(self, other) -> "Interval":
        other = self._coerce(other)
        if not self.certified:
            return self._point(self.lo * other.lo)
        if other.lo is other.hi:  # exact factor: two products suffice
            a, b = self.lo * other.lo, self.hi * other.lo
            return Interval(down(torch.minimum(a, b)), up(torch.maximum(a, b)))
        p1, p2 = self.lo * other.lo, self.lo * other.hi
        p3, p4 = self.hi * other.lo, self.hi * other.hi
        lo = torch.minimum(torch.minimum(p1, p2), torch.minimum(p3, p4))
        hi = torch.maximum(torch.maximum(p1, p2), torch.maximum(p3, p4))
        return Interval(down(lo), up(hi))

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Interval":
        """Division by a positive divisor (the only kind verification needs); where the divisor is not
        certainly positive (or is NaN) the result is NaN, which certifies nothing."""
        other = self._coerce(other)
        if not self.certified:
            return self._point(self.lo / other.lo)
        a, b = self.lo / other.hi, self.lo / other.lo
        c, d = self.hi / other.hi, self.hi / other.lo
        unsafe = ~(other.lo > 0)
        nan = torch.scalar_tensor(float("nan"), dtype=torch.float64)
        return Interval(torch.where(unsafe, nan, down(torch.minimum(a, b))),
                        torch.where(unsafe, nan, up(torch.maximum(c, d))))

    def reciprocal(self) -> "Interval":
        """``1 / x`` for positive ``x``."""
        return Interval.exact(1.0, self.certified) / self

    def abs(self) -> "Interval":
        lo = torch.where((self.lo <= 0) & (self.hi >= 0), torch.zeros_like(self.lo),
                         torch.minimum(self.lo.abs(), self.hi.abs()))
        return self._new(lo, torch.maximum(self.lo.abs(), self.hi.abs()))

    def clamp(self, min=None, max=None) -> "Interval":
        return self._map(lambda t: t.clamp(min=min, max=max))

    def exp(self) -> "Interval":
        """``exp`` with :data:`ELEMENTARY_ULPS` ulps of relative error plus ``η`` (subnormal results)."""
        if not self.certified:
            return self._point(self.lo.exp())
        lo = down(down(self.lo.exp() * (1 - 2 * _REL_ELEMENTARY)) - ETA).clamp(min=0)
        return Interval(lo, up(up(self.hi.exp() * (1 + 2 * _REL_ELEMENTARY)) + ETA))

    def log(self) -> "Interval":
        """``log`` of a positive interval (``-inf`` where the lower end may be 0)."""
        if not self.certified:
            return self._point(self.lo.log())
        a, b = self.lo.log(), self.hi.log()
        return Interval(down(a - up(a.abs() * 2 * _REL_ELEMENTARY) - ETA),
                        up(b + up(b.abs() * 2 * _REL_ELEMENTARY) + ETA))

    def sqrt(self) -> "Interval":
        """``sqrt`` of a nonnegative interval (correctly rounded in IEEE 754, so one neighbour each way)."""
        if not self.certified:
            return self._point(self.lo.sqrt())
        return Interval(down(self.lo.sqrt()).clamp(min=0), up(self.hi.sqrt()))

    def square(self) -> "Interval":
        """``x^2``: ``[0, max]`` where the interval holds 0 (tighter than ``x * x``)."""
        if not self.certified:
            return self._point(self.lo * self.lo)
        a, b = self.lo * self.lo, self.hi * self.hi
        straddles = (self.lo <= 0) & (self.hi >= 0)
        lo = torch.where(straddles, torch.zeros_like(a), down(torch.minimum(a, b)).clamp(min=0))
        return Interval(lo, up(torch.maximum(a, b)))

    def _increasing(self, fn: Callable[[torch.Tensor], torch.Tensor], low: float, high: float) -> "Interval":
        """An increasing elementary function with values in ``[low, high]``, each end widened by
        :data:`ELEMENTARY_ULPS` ulps of its value and ``η``."""
        if not self.certified:
            return self._point(fn(self.lo))
        a, b = fn(self.lo), fn(self.hi)
        return Interval(down(a - up(a.abs() * 2 * _REL_ELEMENTARY) - ETA).clamp(low, high),
                        up(b + up(b.abs() * 2 * _REL_ELEMENTARY) + ETA).clamp(low, high))

    def erf(self) -> "Interval":
        """The error function (increasing, values in ``[-1, 1]``)."""
        return self._increasing(torch.special.erf, -1.0, 1.0)

    def tanh(self) -> "Interval":
        """``tanh`` (increasing, values in ``[-1, 1]``)."""
        return self._increasing(torch.tanh, -1.0, 1.0)

    def relu(self) -> "Interval":
        """``max(x, 0)``: exact, and increasing."""
        return self.clamp(min=0.0)

    def sigmoid(self) -> "Interval":
        """``1 / (1 + exp(-x))``, increasing, so each end is evaluated rigorously on its own."""
        if not self.certified:
            return self._point(torch.sigmoid(self.lo))
        lower = (1 + (-Interval(self.lo, self.lo)).exp()).reciprocal().lo
        upper = (1 + (-Interval(self.hi, self.hi)).exp()).reciprocal().hi
        return Interval(lower.clamp(0, 1), upper.clamp(0, 1))

    # -- reductions --------------------------------------------------------------------------------
    def sum(self, dim: int) -> "Interval":
        """Sum along ``dim`` with Higham's bound for the rounding."""
        if not self.certified:
            return self._point(self.lo.sum(dim))
        k = self.lo.shape[dim]
        lo, hi = self.lo.sum(dim), self.hi.sum(dim)
        return Interval(down(lo - _error_bound(self.lo.abs().sum(dim), k)),
                        up(hi + _error_bound(self.hi.abs().sum(dim), k)))

    def mean(self, dim: int) -> "Interval":
        return self.sum(dim) / self.lo.shape[dim]

    def amax(self, dim: int) -> "Interval":
        return self._map(lambda t: t.amax(dim))

    def amin(self, dim: int) -> "Interval":
        return self._map(lambda t: t.amin(dim))

    def cummax(self, dim: int) -> "Interval":
        return self._map(lambda t: t.cummax(dim).values)

    def cummin(self, dim: int) -> "Interval":
        return self._map(lambda t: t.cummin(dim).values)

    def maximum(self, other) -> "Interval":
        other = self._coerce(other)
        return self._new(torch.maximum(self.lo, other.lo), torch.maximum(self.hi, other.hi))

    def minimum(self, other) -> "Interval":
        other = self._coerce(other)
        return self._new(torch.minimum(self.lo, other.lo), torch.minimum(self.hi, other.hi))

    def sort(self, dim: int = -1, descending: bool = False) -> "Interval":
        """Bounds on the **order statistics**: the j-th smallest exact value lies between the j-th smallest
        ``lo`` and the j-th smallest ``hi`` (each exact value is at least its ``lo``, so at least j ``lo``'s
        are at most the j-th smallest exact value; likewise for ``hi``).  A NaN end means "unknown" and
        is read as the whole line (``-inf`` below, ``+inf`` above), since sorting would move it."""
        if not self.certified:
            return self._map(lambda t: t.sort(dim=dim, descending=descending).values)
        lo = self.lo.nan_to_num(nan=-_INF, posinf=_INF, neginf=-_INF)
        hi = self.hi.nan_to_num(nan=_INF, posinf=_INF, neginf=-_INF)
        return Interval(lo.sort(dim=dim, descending=descending).values,
                        hi.sort(dim=dim, descending=descending).values)

    def logsumexp(self, dim: int) -> "Interval":
        """``log Σ exp`` along ``dim``: increasing in every argument, so each end is computed rigorously on its
        own, shifted by its (exact) maximum.  Rows of ``-inf`` give ``-inf``."""
        if not self.certified:
            return self._point(self.lo.logsumexp(dim))

        def end(x: torch.Tensor, side: str) -> torch.Tensor:
            top = x.amax(dim, keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            point = Interval(x, x)
            value = ((point - top).exp().sum(dim).log() + top.squeeze(dim))
            result = value.lo if side == "lo" else value.hi
            return torch.where(torch.isneginf(x).all(dim), x.new_tensor(-_INF), result)

        return Interval(end(self.lo, "lo"), end(self.hi, "hi"))

    # -- matrix products ---------------------------------------------------------------------------
    def __matmul__(self, other) -> "Interval":
        return matmul(self, other)


def matmul(a, b) -> Interval:
    """``a @ b`` for intervals or exact tensors: midpoint-radius with Higham's bound (3 real products at most).

    ``|A B - mA mB| <= |mA| rB + rA (|mB| + rB)``, and the computed ``fl(mA mB)`` is within
    ``γ_k |mA| |mB| + k η`` of ``mA mB``; every radius term is rounded up.
    """
    certified = a.certified if isinstance(a, Interval) else b.certified
    A = a if isinstance(a, Interval) else Interval.exact(a, certified)
    B = b if isinstance(b, Interval) else Interval.exact(b, certified)
    if not certified:
        product = A.lo @ B.lo
        return Interval(product, product, False)
    k = A.lo.shape[-1]
    mA, mB = A.mid, B.mid
    centre = mA @ mB
    g = gamma(k)
    if A.lo is A.hi and B.lo is B.hi:
        radius = up(up(mA.abs() @ (mB.abs() * g)) * (1 + g) + (k + 1) * ETA)
    else:
        rA = A.radius if A.lo is not A.hi else None
        rB = B.radius if B.lo is not B.hi else None
        absB = mB.abs()
        inner = absB * g if rB is None else up(absB * g + rB)
        radius = mA.abs() @ inner
        if rA is not None:
            radius = radius + rA @ (absB if rB is None else up(absB + rB))
        radius = up(up(radius * (1 + 2 * g)) + (2 * k + 1) * ETA)
    return Interval(down(centre - radius), up(centre + radius))


__all__ = ["ELEMENTARY_ULPS", "ETA", "Interval", "U", "check_floating_point", "down", "gamma", "matmul", "up"]
