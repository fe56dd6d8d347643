"""Lazy references to a plugin's functions, so that listing plugins never imports torch.

A record's callables (``build_model``, ``verify``, ``draw``, ...) may import heavy modules only when they
run.  ``lazy("my_plugin.proofs:verify")`` is a callable that imports ``my_plugin.proofs`` when called
and forwards the call to ``verify`` (looked up anew each time, so a patched attribute is seen); extra
keyword arguments given to :func:`lazy` are bound, as with ``functools.partial``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class lazy:  # noqa: N801 - used like a function
    __slots__ = ("target", "bound")

    def __init__(self, target: str, **bound: Any):
        module, sep, name = target.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"lazy() wants 'package.module:function', got {target!r}")
        self.target, self.bound = target, bound

    def resolve(self) -> Callable:
        module, _, name = self.target.partition(":")
        function: Any = importlib.import_module(module)
        for part in name.split("."):
            function = getattr(function, part)
        return function

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **{**self.bound, **kwargs})

    def __repr__(self) -> str:
        bound = "".join(f", {k}={v!r}" for k, v in self.bound.items())
        return f"lazy({self.target!r}{bound})"

    def __reduce__(self):  # picklable for process pools: by name, not by function
        return (_rebuild, (self.target, self.bound))


def _rebuild(target, bound):
    return lazy(target, **bound)


__all__ = ["lazy"]
