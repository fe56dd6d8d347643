"""Proof length: a FLOP counter for verification code.

:class:`FlopCounter` is a ``TorchDispatchMode`` (the mechanism ``torch.utils.flop_counter`` uses): every
aten op that runs inside it is charged by the cost rules below, kept in one table.  The rules follow the
reference (max-of-k-proofs.md section 7.1):

* elementwise ops (unary, binary with broadcasting, comparisons, ``where``, ``clamp``, and ``nextafter``,
  the outward rounding of certified arithmetic): one per output element; ``clone``, ``flip``, ``tril``, ``triu`` likewise; an assignment into a slice (``copy_``,
  ``fill_``, ``index_put_``) one per element written;
* reductions over some dims (``sum``, ``amax``, ``max``, ``argmax``, ``prod``, ``any``, ``all``...):
  ``prod(kept) * (prod(reduced) - 1)``, i.e. input elements minus output elements; ``mean`` adds one
  division per output element; running reductions (``cummax``...) one per element past each row's first;
* ``softmax`` = amax-reduce, subtract, exp, sum-reduce, divide (``log_softmax`` and ``logsumexp`` alike);
* matrix products: ``prod(out) * (2k - 1)`` (``addmm``-style ops add one per output element);
* ``sort`` / ``topk``: ``n - 1`` per sorted row, the cost of *checking* sortedness;
* ``qr``: likewise the cost of verifying ``Q R`` against ``A`` and ``Qᵀ Q`` against the identity;
* ``svd``: the cost of *verifying* a given factorisation: rebuild ``U diag(S) Vh``, form ``Uᴴ U`` and
  ``Vh Vhᴴ``, and compare each with its target (subtract, abs, compare);
* indexing, gathering, views, reshapes, ``cat``/``stack``, dtype conversion, and creating constant
  tensors are free; so is Python control flow and ``.item()``.

An op the table does not name is charged as elementwise and listed in :attr:`FlopCounter.unknown_ops`, so
tests can insist that a strategy's verification uses only ops the table knows.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _numel(shape) -> int:
    return math.prod(shape)


_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _first_tensor(value) -> torch.Tensor | None:
    """The first tensor among ``value``'s leaves (pytree order); a flat tuple or list without a pytree walk."""
    if isinstance(value, torch.Tensor):
        return value
    if type(value) in (tuple, list):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
            if not isinstance(item, _SCALARS):
                break  # a nested container: walk it properly
        else:
            return None
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


def _out_numel(args, kwargs, out) -> int:
    tensor = _first_tensor(out)
    return tensor.numel() if tensor is not None else 0


def _in_numel(args) -> int:
    tensor = _first_tensor(args)
    return tensor.numel() if tensor is not None else 0


def free(args, kwargs, out) -> int:
    return 0


def elementwise(args, kwargs, out) -> int:
    return _out_numel(args, kwargs, out)


def written(args, kwargs, out) -> int:
    """In-place writes (``x[idx] = v``): one per element written."""
    values = args[2] if len(args) > 2 and isinstance(args[2], torch.Tensor) else None
    if values is not None:  # index_put_(self, indices, values)
        return values.numel()
    return _in_numel(args)


def scattered(args, kwargs, out) -> int:
    """``scatter`` writes one element per index."""
    index = args[2] if len(args) > 2 and isinstance(args[2], torch.Tensor) else None
    return index.numel() if index is not None else _in_numel(args)


def reduction(args, kwargs, out) -> int:
    return max(_in_numel(args) - _out_numel(args, kwargs, out), 0)


def mean(args, kwargs, out) -> int:
    return reduction(args, kwargs, out) + _out_numel(args, kwargs, out)


def _dim_size(args, kwargs, default_dim=-1, position=1) -> tuple[int, int]:
    tensor = args[0]
    dim = args[position] if len(args) > position and isinstance(args[position], int) else kwargs.get("dim", default_dim)
    if tensor.dim() == 0:
        return 1, 1
    n = tensor.shape[dim]
    return n, tensor.numel() // max(n, 1)


def running(args, kwargs, out) -> int:
    n, rows = _dim_size(args, kwargs)
    return rows * max(n - 1, 0)


def sort_check(args, kwargs, out) -> int:
    n, rows = _dim_size(args, kwargs)
    return rows * max(n - 1, 0)


def topk_check(args, kwargs, out) -> int:
    n, rows = _dim_size(args, kwargs, position=2)  # topk(input, k, dim)
    return rows * max(n - 1, 0)


def softmax(args, kwargs, out) -> int:
    n, rows = _dim_size(args, kwargs)
    numel = n * rows
    return 2 * rows * (n - 1) + 3 * numel  # amax, subtract, exp, sum, divide


def log_softmax(args, kwargs, out) -> int:
    n, rows = _dim_size(args, kwargs)
    numel = n * rows
    return 2 * rows * (n - 1) + 3 * numel + rows  # amax, subtract, exp, sum, log, subtract


def logsumexp(args, kwargs, out) -> int:
    tensor = args[0]
    outn = _out_numel(args, kwargs, out)
    return 2 * (tensor.numel() - outn) + 2 * tensor.numel() + 2 * outn  # amax, sub, exp, sum, log, add


def vector_norm(args, kwargs, out) -> int:
    return 2 * _in_numel(args)  # square, sum, sqrt


def matmul(args, kwargs, out) -> int:
    k = args[0].shape[-1]
    return _out_numel(args, kwargs, out) * (2 * k - 1)


def addmatmul(args, kwargs, out) -> int:
    a = args[1]
    k = a.shape[-1]
    outn = _out_numel(args, kwargs, out)
    return outn * (2 * k - 1) + outn


def svd_verify(args, kwargs, out) -> int:
    """Cost of checking a reduced SVD ``A = U diag(S) Vh`` with orthonormal factors."""
    a = args[0]
    rows, cols = a.shape[-2], a.shape[-1]
    batch = a.numel() // max(rows * cols, 1)
    k = min(rows, cols)
    rebuild = rows * k + rows * cols * (2 * k - 1)  # U * S, then (U S) @ Vh
    gram = k * k * (2 * rows - 1) + k * k * (2 * cols - 1)  # Uᴴ U and Vh Vhᴴ
    compare = 3 * rows * cols + 2 * 3 * k * k  # subtract, abs, compare against A and identities
    return batch * (rebuild + gram + compare)


def qr_verify(args, kwargs, out) -> int:
    """Cost of checking a thin QR ``A = Q R`` with orthonormal ``Q`` (``R`` triangular is read off)."""
    a = args[0]
    rows, cols = a.shape[-2], a.shape[-1]
    batch = a.numel() // max(rows * cols, 1)
    k = min(rows, cols)
    return batch * (rows * cols * (2 * k - 1) + k * k * (2 * rows - 1) + 3 * rows * cols + 3 * k * k)


aten = torch.ops.aten

#: The cost table: aten overload packet -> rule(args, kwargs, out) -> flops.
COST_RULES: dict[Any, Callable] = {}


def _rule(rule: Callable, *ops) -> None:
    for op in ops:
        COST_RULES[op] = rule


_rule(free, aten.view, aten._unsafe_view, aten.reshape, aten.expand, aten.permute, aten.transpose, aten.t,
      aten.unsqueeze, aten.squeeze, aten.select, aten.slice, aten.index, aten.index_select, aten.gather,
      aten.cat, aten.stack, aten.zeros, aten.ones, aten.empty, aten.full, aten.zeros_like, aten.ones_like,
      aten.empty_like, aten.full_like, aten.arange, aten.scalar_tensor, aten.lift_fresh, aten.lift_fresh_copy,
      aten._to_copy, aten.detach, aten.alias, aten._local_scalar_dense, aten.split, aten.split_with_sizes,
      aten.unbind, aten.diagonal, aten.as_strided, aten.new_zeros, aten.new_ones, aten.new_empty, aten.new_full,
      aten.empty_strided, aten.unfold, aten.nonzero)
_rule(elementwise, aten.clone, aten.flip, aten.tril, aten.triu, aten.eye, aten.isfinite, aten.isnan,
      aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.abs, aten.exp, aten.log, aten.log1p, aten.expm1,
      aten.sqrt, aten.rsqrt, aten.pow, aten.reciprocal, aten.maximum, aten.minimum, aten.clamp, aten.clamp_min,
      aten.clamp_max, aten.where, aten.eq, aten.ne, aten.lt, aten.le, aten.gt, aten.ge, aten.logical_and,
      aten.logical_or, aten.logical_not, aten.bitwise_and, aten.bitwise_or, aten.bitwise_not, aten.sign,
      aten.floor, aten.ceil, aten.round, aten.trunc, aten.remainder, aten.fmod, aten.floor_divide,
      aten.masked_fill, aten.nan_to_num, aten.sigmoid, aten.tanh, aten.relu, aten.square, aten.lerp,
      aten.diag_embed, aten.isinf, aten.isneginf, aten.isposinf, aten.fmax, aten.fmin, aten.addcmul,
      aten.addcdiv, aten.mul_, aten.add_, aten.sub_, aten.div_, aten.masked_select, aten.nextafter, aten.rsub, aten.exp2,
      aten.searchsorted)
_rule(lambda args, kwargs, out: _in_numel(args), aten.bincount)  # one per value counted
_rule(written, aten.copy_, aten.fill_, aten.index_put_, aten.index_put, aten.masked_fill_, aten.zero_)
_rule(scattered, aten.scatter, aten.scatter_, aten.index_fill, aten.index_fill_)
_rule(reduction, aten.sum, aten.amax, aten.amin, aten.max, aten.min, aten.argmax, aten.argmin, aten.prod,
      aten.any, aten.all, aten.aminmax, aten.count_nonzero, aten.nansum)
_rule(mean, aten.mean, aten.nanmean)
_rule(running, aten.cummax, aten.cummin, aten.cumsum, aten.cumprod, aten.logcumsumexp)
_rule(sort_check, aten.sort, aten.argsort)
_rule(topk_check, aten.topk)
_rule(softmax, aten._softmax, aten.softmax)
_rule(log_softmax, aten._log_softmax, aten.log_softmax)
_rule(logsumexp, aten.logsumexp)
_rule(vector_norm, aten.linalg_vector_norm)
_rule(matmul, aten.mm, aten.bmm, aten.dot, aten.mv, aten.vdot)
_rule(addmatmul, aten.addmm, aten.baddbmm, aten.addmv)
_rule(svd_verify, aten._linalg_svd, aten.linalg_svd, aten.svd)
_rule(qr_verify, aten.linalg_qr, aten.qr)


_ACTIVE: list["FlopCounter"] = []
_RULES_SEEN: tuple[int, dict] = (-1, {})  # (len(COST_RULES) when made, overload -> rule), made again if a rule is added


def _rule_of(func) -> tuple[Callable, str, bool, Callable]:
    """``(rule, op name, whether the table names it, the op's C++ callable)`` of an aten overload, looked up
    once per overload."""
    global _RULES_SEEN
    size, seen = _RULES_SEEN
    if size != len(COST_RULES):
        size, seen = _RULES_SEEN = (len(COST_RULES), {})
    found = seen.get(func)
    if found is None:
        packet = func.overloadpacket
        rule = COST_RULES.get(packet)
        if rule is None and packet.__name__.endswith("_"):  # in-place variant: same cost as the op
            rule = COST_RULES.get(getattr(aten, packet.__name__[:-1], None))
        found = seen[func] = (rule or elementwise, packet.__name__, rule is not None, getattr(func, "_op", func))
    return found


def charge(flops: int, what: str = "manual") -> None:
    """Charge work done outside torch (integer counting in Python, say) to every active counter."""
    for counter in _ACTIVE:
        counter.add(flops, what)


class FlopCounter(TorchDispatchMode):
    """Counts the FLOPs of the torch ops run inside it by :data:`COST_RULES`.

    >>> import torch
    >>> with FlopCounter() as counter:
    ...     _ = torch.ones(3, 4) @ torch.ones(4, 5)
    >>> counter.total   # 15 outputs, each 4 multiplies and 3 adds
    105
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.by_op: Counter[str] = Counter()
        self.unknown_ops: Counter[str] = Counter()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Verification never compiles: without this torch wraps every dispatched op in a Dynamo guard, a
        # third of the counter's cost.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # Every op of a verification passes here: kept lean (the op called without OpOverload's Python frame,
        # an elementwise op's cost read off its output directly).
        rule, name, known, call = _rule_of(func)
        out = call(*args, **kwargs) if kwargs else call(*args)
        if not known:
            self.unknown_ops[name] += 1
        if rule is elementwise and type(out) is torch.Tensor:
            cost = out.numel()
        else:
            cost = int(rule(args, kwargs or {}, out))
        self.total += cost
        self.by_op[name] += cost
        return out

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def add(self, flops: int, what: str = "manual") -> None:
        """Charge work done outside torch (e.g. integer counting in Python) by hand."""
        self.total += int(flops)
        self.by_op[what] += int(flops)


def count_flops(fn: Callable, *args, **kwargs) -> tuple[Any, FlopCounter]:
    """Run ``fn(*args, **kwargs)`` under a :class:`FlopCounter`; return its result and the counter."""
    with FlopCounter() as counter:
        result = fn(*args, **kwargs)
    return result, counter
