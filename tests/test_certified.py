"""Certified arithmetic against exact arithmetic: rationals for + - * / sums and products, mpmath for exp/log."""

from fractions import Fraction

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gbmi_core.certified import ELEMENTARY_ULPS, Interval, check_floating_point, down, gamma, matmul, up

mpmath.mp.prec = 300

# Floats across the whole range: normal, subnormal, huge, zero; both signs.
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
moderate = st.floats(min_value=-1e150, max_value=1e150, allow_nan=False, width=64)
weights32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def encloses(interval: Interval, exact_values) -> bool:
    """Every exact value (a Fraction or mpf, or a nested list of them) lies in its interval."""
    lo, hi = interval.lo.reshape(-1).tolist(), interval.hi.reshape(-1).tolist()
    flat = list(_flatten(exact_values))
    assert len(flat) == len(lo)
    return all(_le(a, x) and _le(x, b) for a, x, b in zip(lo, flat, hi))


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for item in x:
            yield from _flatten(item)
    else:
        yield x


def _le(a: float, b) -> bool:
    if a == float("-inf") or b == float("inf"):
        return True
    if a == float("inf") or b == float("-inf"):
        return a == b
    if isinstance(b, Fraction) and not isinstance(a, Fraction):
        a = Fraction(a)
    if isinstance(a, Fraction) and isinstance(b, float):
        b = Fraction(b)
    if isinstance(b, mpmath.mpf) or isinstance(a, mpmath.mpf):
        return mpmath.mpf(a) <= mpmath.mpf(b)
    return a <= b


def test_floating_point_environment_is_ieee():
    check_floating_point()


@settings(max_examples=300, deadline=None)
@given(a=finite, b=finite)
def test_basic_operations_enclose_the_exact_result(a, b):
    x, y = Interval.exact(torch.tensor([a], dtype=torch.float64)), Interval.exact(torch.tensor([b], dtype=torch.float64))
    fa, fb = Fraction(a), Fraction(b)
    for result, exact in [(x + y, fa + fb), (x - y, fa - fb), (x * y, fa * fb), (-x, -fa)]:
        assert encloses(result, [exact]), (a, b, result)
    if b > 0:
        assert encloses(x / y, [fa / fb])


@settings(max_examples=200, deadline=None)
@given(a=moderate, b=moderate, c=moderate, d=moderate)
def test_interval_products_enclose_every_product(a, b, c, d):
    lo1, hi1 = sorted([a, b])
    lo2, hi2 = sorted([c, d])
    f64 = torch.float64
    x = Interval.between(torch.tensor([lo1], dtype=f64), torch.tensor([hi1], dtype=f64))
    y = Interval.between(torch.tensor([lo2], dtype=f64), torch.tensor([hi2], dtype=f64))
    product = x * y
    for p in (lo1, hi1):
        for q in (lo2, hi2):
            assert encloses(product, [Fraction(p) * Fraction(q)])


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 4), inner=st.integers(1, 9), cols=st.integers(1, 4), data=st.data())
def test_matmul_and_sum_enclose_exact_rational_results(rows, inner, cols, data):
    values = st.one_of(weights32, st.floats(-(2.0**-126), 2.0**-126, width=32), st.sampled_from([0.0, 1.0, -1.0, 2.0**-149]))
    A = torch.tensor(data.draw(st.lists(st.lists(values, min_size=inner, max_size=inner), min_size=rows, max_size=rows)),
                     dtype=torch.float32)
    B = torch.tensor(data.draw(st.lists(st.lists(values, min_size=cols, max_size=cols), min_size=inner, max_size=inner)),
                     dtype=torch.float32)
    exact = [[sum(Fraction(float(A[i, k])) * Fraction(float(B[k, j])) for k in range(inner)) for j in range(cols)]
             for i in range(rows)]
    product = matmul(Interval.exact(A), B)
    assert encloses(product, exact)
    # an interval factor: A widened by a little, B exact
    wide = Interval.exact(A) + Interval.exact(torch.full_like(A, 1e-3, dtype=torch.float64))
    assert encloses(matmul(wide, Interval.exact(B)), [[sum((Fraction(float(A[i, k])) + Fraction(1e-3))
                                                          * Fraction(float(B[k, j])) for k in range(inner))
                                                      for j in range(cols)] for i in range(rows)])
    sums = Interval.exact(A).sum(1)
    assert encloses(sums, [sum(Fraction(float(v)) for v in row) for row in A])


@pytest.mark.parametrize("n", [3, 64, 1000])
def test_matmul_bound_is_tight_on_cancelling_sums(n):
    """Higham's bound must not be vacuous: the radius is a few γ_n of the magnitudes, no more."""
    torch.manual_seed(n)
    A = torch.randn(5, n, dtype=torch.float64)
    B = torch.randn(n, 4, dtype=torch.float64)
    product = matmul(Interval.exact(A), B)
    assert bool(((product.hi - product.lo) <= 4 * gamma(n) * (A.abs() @ B.abs()) + 1e-300).all())


@settings(max_examples=400, deadline=None)
@given(x=st.one_of(st.floats(-760, 720, allow_nan=False), st.sampled_from([0.0, -708.5, -745.0, -744.4, 709.7,
                                                                            1e-300, -1e-300, 88.7, -103.9])))
def test_exp_log_sigmoid_enclose_mpmath(x):
    t = Interval.exact(torch.tensor([x], dtype=torch.float64))
    assert encloses(t.exp(), [mpmath.exp(mpmath.mpf(x))])
    assert encloses(t.sigmoid(), [1 / (1 + mpmath.exp(-mpmath.mpf(x)))])
    if x > 0:
        assert encloses(t.log(), [mpmath.log(mpmath.mpf(x))])


def test_exp_matches_the_assumed_ulp_bound_on_a_dense_grid():
    """The assumption the error model rests on, checked on 20,000 points spread over exp's whole range."""
    xs = torch.linspace(-740, 709, 20_000, dtype=torch.float64)
    ys = xs.exp()
    worst = mpmath.mpf(0)
    for x, y in zip(xs.tolist(), ys.tolist()):
        exact = mpmath.exp(mpmath.mpf(x))
        if y > 2.0**-1022:
            worst = max(worst, abs(mpmath.mpf(y) - exact) / exact)
    assert worst <= ELEMENTARY_ULPS * 2.0**-52  # the assumption (observed: at most 2 ulps, thread count aside)


@settings(max_examples=150, deadline=None)
@given(xs=st.lists(st.one_of(st.floats(-800, 800), st.just(float("-inf"))), min_size=1, max_size=7))
def test_logsumexp_encloses_mpmath(xs):
    t = Interval.exact(torch.tensor(xs, dtype=torch.float64))
    result = t.logsumexp(0)
    finite_xs = [x for x in xs if x != float("-inf")]
    if not finite_xs:
        assert result.lo.item() == float("-inf") == result.hi.item()
        return
    exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(x)) for x in finite_xs))
    assert encloses(result.reshape(1), [exact])


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.tuples(moderate, st.floats(0, 1e3)), min_size=1, max_size=8))
def test_sort_bounds_order_statistics(values):
    lo = torch.tensor([v for v, _ in values], dtype=torch.float64)
    hi = lo + torch.tensor([w for _, w in values], dtype=torch.float64)
    exact = [v + w / 2 for v, w in values]  # any point inside each interval
    bounds = Interval.between(lo, hi).sort()
    assert encloses(bounds, [Fraction(x) for x in sorted(exact)]) or any(
        not (a <= x <= b) for a, x, b in zip(lo.tolist(), exact, hi.tolist()))


def test_nan_certifies_nothing_and_overflow_stays_enclosed():
    big = Interval.exact(torch.tensor([1.7e308, float("nan")], dtype=torch.float64))
    total = big + big
    assert total.hi[0] == float("inf") and total.lo[0] <= 3.4e308
    assert not bool(total.certainly_negative()[1]) and not bool(total.certainly_positive()[1])


def test_neighbours_bracket():
    x = torch.tensor([0.0, 1.0, -2.0**-1074, float("inf")], dtype=torch.float64)
    assert bool((down(x) < x).all()) and bool((up(x[:3]) > x[:3]).all())


def test_uncertified_intervals_are_plain_floats():
    plain = torch.tensor([0.1, 0.2], dtype=torch.float64)
    x = Interval.exact(plain, certified=False)
    y = (x + x * 3).exp().sum(0)
    assert y.lo is y.hi and y.lo.item() == float((plain + plain * 3).exp().sum())
    with pytest.raises(ValueError):
        _ = x + Interval.exact(torch.tensor([1.0]))


def test_flush_to_zero_is_refused():
    """The error model assumes gradual underflow; with denormals flushed, nothing is certified."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        with pytest.raises(RuntimeError, match="flushed to zero"):
            check_floating_point()
    finally:
        torch.set_flush_denormal(False)
    check_floating_point()


def test_sorting_reads_nan_as_unknown():
    """A NaN end must not be sorted past real bounds: it widens to the whole line instead."""
    f64 = torch.float64
    bounds = Interval.between(torch.tensor([float("nan"), 5.0], dtype=f64), torch.tensor([float("nan"), 6.0], dtype=f64))
    ordered = bounds.sort()
    assert ordered.lo.tolist() == [float("-inf"), 5.0] and ordered.hi.tolist() == [6.0, float("inf")]


@settings(max_examples=300, deadline=None)
@given(lo=st.floats(-40, 40, allow_nan=False), width=st.sampled_from([0.0, 1e-12, 0.3, 5.0]))
def test_square_erf_tanh_enclose_mpmath(lo, width):
    t = Interval(torch.tensor([lo], dtype=torch.float64), torch.tensor([lo + width], dtype=torch.float64))
    for x in (lo, lo + width / 2, lo + width):
        x = mpmath.mpf(x)
        assert float(t.square().lo[0]) <= x * x <= float(t.square().hi[0])
        assert float(t.erf().lo[0]) <= mpmath.erf(x) <= float(t.erf().hi[0])
        assert float(t.tanh().lo[0]) <= mpmath.tanh(x) <= float(t.tanh().hi[0])


@pytest.mark.parametrize("name", ["erf", "tanh"])
def test_erf_and_tanh_match_the_assumed_ulp_bound_on_a_dense_grid(name):
    """The evaluator's GELU enclosures rest on this: torch's float64 erf and tanh within ELEMENTARY_ULPS."""
    xs = torch.cat([torch.linspace(-8, 8, 8_000, dtype=torch.float64), torch.logspace(-300, 1, 2_000, dtype=torch.float64)])
    ys = (torch.special.erf if name == "erf" else torch.tanh)(xs)
    f = mpmath.erf if name == "erf" else mpmath.tanh
    worst = mpmath.mpf(0)
    for x, y in zip(xs.tolist(), ys.tolist()):
        exact = f(mpmath.mpf(x))
        if abs(y) > 2.0**-1022:
            worst = max(worst, abs(mpmath.mpf(y) - exact) / abs(exact))
    assert worst <= ELEMENTARY_ULPS * 2.0**-52  # the assumption (observed: at most 2 ulps, thread count aside)
