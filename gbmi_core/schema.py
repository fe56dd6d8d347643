"""Certificate schemas: what a strategy's certificate may hold, checked by the core before any plugin reads it.

A certificate comes from proof search, from a store, or from a stranger's bundle.  Verification must be
sound for *any* certificate, and the easiest way to keep it so is that plugin code never sees a value of
a type it did not expect: a ``uint64`` gap near ``2**64`` that wraps to a negative ``int64``, a ``bool``
where a count is meant, a NaN where a range check would be skipped.  So each strategy declares its
certificate (:class:`CertificateSchema`) and :func:`validate` refuses anything else with a one-line
:class:`~gbmi_core.errors.CertificateRejected` naming the field, and hands verification fresh copies in
one canonical dtype (``int64`` or ``float64``).

Shapes and bounds may name a model dimension (``"d_vocab"``, ``"n_ctx"``, ``"d_model"``, ``"d_head"``, ...):
they are read from the model's TransformerLens config.

>>> from gbmi_core.schema import ArrayField, CertificateSchema
>>> schema = CertificateSchema({"min_gap": ArrayField("int", ("d_vocab", "d_vocab", "n_ctx"), low=1, high="d_vocab")})
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import attrs
import numpy as np

from .errors import CertificateRejected

_KINDS = {"int": "i", "float": "f"}


def _kind(instance, attribute, value):
    if value not in _KINDS:
        raise ValueError(f"{attribute.name} must be one of {sorted(_KINDS)}, got {value!r}")


@attrs.frozen
class ArrayField:
    """One array of a certificate.

    ``kind``: ``"int"`` (signed integers only: unsigned, bool and every other dtype are refused) or
    ``"float"`` (IEEE floats only); ``bits``: the widest dtype accepted.  ``shape``: a tuple of ints and
    model dimension names, or ``None`` for any shape.  ``low``/``high``: inclusive bounds on every value
    (numbers or dimension names).  ``finite``: NaN and ±inf are refused.  ``required``: absent is refused.
    """

    kind: str = attrs.field(validator=_kind)
    shape: tuple | None = None
    low: float | int | str | None = None
    high: float | int | str | None = None
    finite: bool = True
    required: bool = True
    bits: int = 64


@attrs.frozen
class ScalarField:
    """One JSON attribute of a certificate: ``kind`` ``"int"`` (a Python int, never a bool) or ``"float"``."""

    kind: str = attrs.field(validator=_kind)
    low: float | int | str | None = None
    high: float | int | str | None = None
    required: bool = True


@attrs.frozen
class CertificateSchema:
    """What a strategy's certificate holds.  ``arrays`` and ``attributes`` map a name to its field;
    ``patterns`` maps a regular expression (matched whole) to the field of every array whose name it
    matches (a certificate with one array per sub-problem).  Anything not declared is refused.  The
    default schema (no fields) is that of a strategy without a certificate."""

    arrays: Mapping[str, ArrayField] = attrs.field(factory=dict, converter=dict)
    attributes: Mapping[str, ScalarField] = attrs.field(factory=dict, converter=dict)
    patterns: Mapping[str, ArrayField] = attrs.field(factory=dict, converter=dict)


def model_dimensions(model: Any) -> dict[str, int]:
    """The integer fields of a model's TransformerLens config (``d_vocab``, ``n_ctx``, ...), if it has one."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return {}
    fields = cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg)
    return {k: v for k, v in fields.items() if isinstance(v, int) and not isinstance(v, bool)}


def _resolve(value, dims: Mapping[str, int], where: str):
    if isinstance(value, str):
        if value not in dims:
            raise CertificateRejected(f"certificate field {where}: the model has no dimension {value!r}")
        return dims[value]
    return value


def _check_array(name: str, value: Any, field: ArrayField, dims: Mapping[str, int]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise CertificateRejected(f"certificate field {name!r} is a {type(value).__name__}, not an array")
    dtype = value.dtype
    if dtype.kind != _KINDS[field.kind] or dtype.itemsize * 8 > field.bits:
        want = "signed integers" if field.kind == "int" else "floats"
        raise CertificateRejected(f"certificate field {name!r} has dtype {dtype}; expected {want} of at most "
                                  f"{field.bits} bits")
    if field.shape is not None:
        shape = tuple(_resolve(s, dims, name) for s in field.shape)
        if value.shape != shape:
            raise CertificateRejected(f"certificate field {name!r} has shape {value.shape}; expected {shape}")
    canonical = value.astype(np.int64 if field.kind == "int" else np.float64, copy=True)  # exact widening
    if field.finite and not np.isfinite(canonical).all():
        raise CertificateRejected(f"certificate field {name!r} holds NaN or infinite values")
    if canonical.size:
        low, high = _resolve(field.low, dims, name), _resolve(field.high, dims, name)
        if low is not None and not (canonical >= low).all():  # NaN compares False: refused too
            raise CertificateRejected(f"certificate field {name!r} holds values below {low} "
                                      f"(smallest {np.nanmin(canonical)})")
        if high is not None and not (canonical <= high).all():
            raise CertificateRejected(f"certificate field {name!r} holds values above {high} "
                                      f"(largest {np.nanmax(canonical)})")
    return canonical


def _check_scalar(name: str, value: Any, field: ScalarField, dims: Mapping[str, int]):
    ok = isinstance(value, int) if field.kind == "int" else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise CertificateRejected(f"certificate attribute {name!r} is {value!r}; expected a{'n' if field.kind == 'int' else ''} "
                                  f"{field.kind}")
    if field.kind == "float" and not np.isfinite(value):
        raise CertificateRejected(f"certificate attribute {name!r} is {value!r}; expected a finite number")
    low, high = _resolve(field.low, dims, name), _resolve(field.high, dims, name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise CertificateRejected(f"certificate attribute {name!r} is {value!r}, outside [{low}, {high}]")
    return value


def validate(schema: CertificateSchema, arrays: Mapping[str, Any], attributes: Mapping[str, Any],
             dims: Mapping[str, int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Check a certificate against ``schema``: ``(arrays, attributes)`` in canonical dtypes (fresh
    copies), or :class:`CertificateRejected` naming the first field that does not fit."""
    checked = {}
    for name, value in arrays.items():
        field = schema.arrays.get(name)
        if field is None:
            field = next((f for pattern, f in schema.patterns.items() if re.fullmatch(pattern, name)), None)
        if field is None:
            raise CertificateRejected(f"certificate field {name!r} is not part of this strategy's certificate")
        checked[name] = _check_array(name, value, field, dims)
    for name, field in schema.arrays.items():
        if field.required and name not in arrays:
            raise CertificateRejected(f"certificate field {name!r} is missing")
    scalars = {}
    for name, value in attributes.items():
        if name not in schema.attributes:
            raise CertificateRejected(f"certificate attribute {name!r} is not part of this strategy's certificate")
        scalars[name] = _check_scalar(name, value, schema.attributes[name], dims)
    for name, field in schema.attributes.items():
        if field.required and name not in attributes:
            raise CertificateRejected(f"certificate attribute {name!r} is missing")
    return checked, scalars


__all__ = ["ArrayField", "CertificateSchema", "ScalarField", "model_dimensions", "validate"]
