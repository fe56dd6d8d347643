"""Shared verification steps (gbmi_core.memo): keyed by content, fresh copies out, the same FLOPs every call."""

import attrs
import numpy as np
import pytest
import torch

from gbmi_core import memo
from gbmi_core.certified import Interval, matmul
from gbmi_core.flops import FlopCounter

RUNS = []


@memo.counted_memo
def _paths(a: torch.Tensor, b: Interval, scale: float) -> dict:
    RUNS.append(1)
    product = matmul(b, a)
    return {"product": product, "point": Interval.exact(a * scale), "flag": scale > 1, "rows": (a.sum(1), a.amax(1))}


@attrs.frozen
class _Options:
    how: str
    level: int


@pytest.fixture(autouse=True)
def fresh():
    memo.clear()
    RUNS.clear()
    yield
    memo.clear()


def _args(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64)
    b = Interval.between(torch.zeros(3, 5, dtype=torch.float64), torch.ones(3, 5, dtype=torch.float64))
    return a, b, 2.0


def _same(x, y):
    assert type(x) is type(y)
    if isinstance(x, dict):
        assert x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    elif isinstance(x, tuple):
        assert len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    elif isinstance(x, Interval):
        assert (x.lo is x.hi) == (y.lo is y.hi) and _same(x.lo, y.lo) and _same(x.hi, y.hi)
    elif isinstance(x, torch.Tensor):
        assert x.dtype == y.dtype and torch.equal(x, y)
    else:
        assert x == y
    return True


def test_runs_once_for_equal_content_and_again_for_other_content():
    first = _paths(*_args())
    again = _paths(*(x.clone() if isinstance(x, torch.Tensor) else x for x in _args()))  # other objects, same values
    assert len(RUNS) == 1 and _same(first, again)
    _paths(*_args(seed=1))
    a, b, _ = _args()
    _paths(a, b, 3.0)
    _paths(a.float().double(), Interval.between(b.lo, b.hi + 1), 2.0)
    _paths(a[:, :3], b, 2.0)
    assert len(RUNS) == 5  # other values, another scale, another interval, another shape: each computed


def test_key_sees_dtype_shape_and_kind():
    t = torch.zeros(4, dtype=torch.float64)
    keys = {memo.content_key("f", x) for x in (t, t.float(), t.reshape(2, 2), t.numpy(), Interval.exact(t),
                                                 Interval.between(t, t.clone()), [t], (t,), {"x": t})}
    assert len(keys) == 9
    assert memo.content_key("f", _Options("a", 1)) != memo.content_key("f", _Options("a", 2))
    assert memo.content_key("f", 1) != memo.content_key("f", 1.0) != memo.content_key("f", "1")
    assert memo.content_key("f", 1) != memo.content_key("g", 1)


def test_refuses_what_it_cannot_key_by_content():
    with pytest.raises(TypeError, match="object"):
        memo.content_key("f", object())
    with pytest.raises(TypeError, match="Python objects"):
        memo.content_key("f", np.array([object()]))


def test_every_call_gets_fresh_tensors():
    first = _paths(*_args())
    first["product"].lo.fill_(99.0)
    first["rows"][0].zero_()
    second = _paths(*_args())
    assert len(RUNS) == 1
    assert not (second["product"].lo == 99.0).any() and second["rows"][0].abs().sum() > 0
    third = _paths(*_args())
    assert third["product"].lo.data_ptr() != second["product"].lo.data_ptr()
    assert third["point"].lo is third["point"].hi  # a point interval stays one (matmul's fast path reads it)


def test_a_hit_charges_the_same_flops():
    args = _args()
    with FlopCounter() as direct:
        _paths.uncached(*args)
    memo.clear()
    totals = []
    for _ in range(3):
        args = _args()
        with FlopCounter() as outer, FlopCounter() as inner:
            _paths(*args)
        assert outer.total == inner.total
        totals.append((outer.total, _nonzero(outer.by_op)))
    assert len(RUNS) == 2  # uncached once, then computed once and replayed twice
    assert direct.total > 0 and all(t == (direct.total, _nonzero(direct.by_op)) for t in totals)


def _nonzero(by_op):
    return {name: flops for name, flops in by_op.items() if flops}


def test_a_result_made_without_a_counter_is_recomputed_for_one():
    _paths(*_args())
    with FlopCounter() as counter:
        _paths(*_args())
    assert len(RUNS) == 2 and counter.total > 0
    with FlopCounter() as again:
        _paths(*_args())
    assert len(RUNS) == 2 and again.total == counter.total


def test_kept_bytes_are_bounded(monkeypatch):
    monkeypatch.setattr(memo, "LIMIT_BYTES", 1000)
    for seed in range(6):
        _paths(*_args(seed))
    assert memo._held[0] <= 1000
    _paths(*_args(5))  # the latest is kept
    assert len(RUNS) == 6
    _paths(*_args(0))  # the oldest went out
    assert len(RUNS) == 7


def test_numpy_arguments_and_results():
    @memo.counted_memo
    def double(x: np.ndarray):
        return torch.from_numpy(x) * 2

    x = np.arange(4.0)
    assert torch.equal(double(x), torch.tensor([0.0, 2, 4, 6], dtype=torch.float64))
    assert torch.equal(double(x.copy()), double(x))
