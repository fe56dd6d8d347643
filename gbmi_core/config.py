"""Configs: attrs classes, (un)structured with cattrs, identified by a content hash.

The content hash is the SHA-256 of a canonical JSON form (sorted keys, no whitespace, shortest
round-trip floats, the class's qualified name included), so it is the same in every process and on
every machine.  Structuring is strict: an unknown field, a missing required field or a value of the
wrong type is a :class:`~gbmi_core.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from typing import Any, Mapping, TypeVar

import attrs
import cattrs

from .errors import ConfigError

T = TypeVar("T")

HASH_LENGTH = 16  # hex characters of SHA-256 kept in keys: 64 bits


def _strict_int(value, _type):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _strict_float(value, _type):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _strict_bool(value, _type):
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_str(value, _type):
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(str, _strict_str)
    return converter


converter = _make_converter()


def _describe(error: BaseException, cls: type) -> str:
    known = ", ".join(f.name for f in attrs.fields(cls))

    def fmt(exc: BaseException, _type) -> str:
        if isinstance(exc, cattrs.errors.ForbiddenExtraKeysError):
            return f"unknown field(s) {', '.join(sorted(exc.extra_fields))} (known fields: {known})"
        if isinstance(exc, KeyError):
            return "required field is missing"
        if exc.args and isinstance(exc.args[0], str):
            return exc.args[0]
        return str(exc)

    if isinstance(error, cattrs.errors.ForbiddenExtraKeysError):
        return f"{fmt(error, None)} @ {cls.__name__}"
    return "; ".join(cattrs.transform_error(error, path=cls.__name__, format_exception=fmt))


def structure(cls: type[T], data: Any) -> T:
    """Build a config of type ``cls`` from plain data, strictly."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__name__} config must be a mapping of fields, got {type(data).__name__}")
    try:
        return converter.structure(dict(data), cls)
    except (cattrs.BaseValidationError, cattrs.errors.ForbiddenExtraKeysError) as error:
        raise ConfigError(_describe(error, cls)) from None
    except (TypeError, ValueError) as error:  # a validator of the attrs class itself
        raise ConfigError(f"{cls.__name__}: {error}") from None


#: attrs field metadata: a field added after configs were hashed, left out of the hash at its default.
OMIT_AT_DEFAULT = "gbmi_omit_at_default"


def added_field(default: Any, **kwargs) -> Any:
    """An ``attrs.field`` added to a config after hashes were published: at ``default`` it is left out of
    :func:`canonical_json`, so every existing config keeps its hash (and its stored models and results)."""
    return attrs.field(default=default, metadata={OMIT_AT_DEFAULT: True}, **kwargs)


def unstructure(config: Any) -> dict:
    """A config as plain data; fields made by :func:`added_field` are left out at their default (so what is
    stored reads the same as before they were added)."""
    data = converter.unstructure(config)
    if attrs.has(type(config)):
        for field in attrs.fields(type(config)):
            if field.metadata.get(OMIT_AT_DEFAULT) and getattr(config, field.name) == field.default:
                data.pop(field.name, None)
    return data


def type_name(config_or_type: Any) -> str:
    cls = config_or_type if isinstance(config_or_type, type) else type(config_or_type)
    return cls.__qualname__


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"field {where} is {value!r}; configs must hold finite numbers")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where else key)
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")


def canonical_json(config: Any) -> str:
    """The canonical text a config's hash is taken over (fields made by :func:`added_field` only when they
    differ from their default)."""
    data = unstructure(config)
    _check_finite(data, "")
    return json.dumps({"type": type_name(config), "fields": data}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_hash(config: Any) -> str:
    """A short, stable content hash of a config (hex)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:HASH_LENGTH]


def load_file(cls: type[T], path: str | pathlib.Path) -> T:
    """Read a config from a ``.json`` or ``.toml`` file."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    return structure(cls, data)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr=0.01"`` -> ``("lr", 0.01)``; the value is read as JSON, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected FIELD=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def with_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``config`` with fields replaced, checked as strictly as a config file."""
    data = unstructure(config)
    data.update(overrides)
    return structure(type(config), data)


# -- validators every task's config uses ---------------------------------------------------------------

def positive(instance, attribute, value) -> None:
    """An attrs validator: the field must be positive (a learning rate, a width)."""
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be positive (got {value})")


def adam_betas(instance, attribute, value) -> None:
    """An attrs validator: Adam's two betas, each in ``[0, 1)``."""
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1) (got {list(value)})")

