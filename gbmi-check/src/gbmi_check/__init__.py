"""gbmi-check: an independent checker of gbmi proof bundles.

It shares no code with the prover: it imports numpy, FLINT (python-flint) and attrs only, never torch,
transformer_lens, gbmi_core or a plugin.  It reads a bundle as untrusted data, re-derives the claimed
count from the stored weights, the task's definition and the certificate with its own arithmetic, and
agrees only when it proves at least the claim.

>>> import gbmi_check
>>> gbmi_check.check("bundles/cubic.gbmi-proof.npz")        # doctest: +SKIP
Verdict(path='bundles/cubic.gbmi-proof.npz', agree=True, proved=15573639, claimed=15573639, message='...')
"""

from __future__ import annotations

import attrs
import numpy as np

from .bundle import Refused, read


@attrs.frozen
class Verdict:
    path: str
    agree: bool
    proved: int | None
    claimed: int | None
    message: str


def _prover(task: str, strategy: str):
    """The proof family that checks ``task/strategy``: a function ``(bundle, progress) -> (proved, total)``."""
    if task == "max-of-k":
        from . import max_of_k

        if strategy == "brute-force":
            return lambda b, progress: _with_total(max_of_k.load(b), lambda M: max_of_k.brute_force(M, progress))
        if strategy == "cubic":
            from . import max_of_k_cubic

            return lambda b, progress: _with_total(max_of_k.load(b), max_of_k_cubic.cubic)
        if strategy.startswith("subcubic--"):
            from . import max_of_k_subcubic

            options = max_of_k_subcubic.parse(strategy)
            return lambda b, progress: _with_total(max_of_k.load(b), lambda M: max_of_k_subcubic.subcubic(M, b, options))
    if task == "induction":
        from . import induction

        if strategy == "brute-force":
            return lambda b, progress: induction.brute_force_count(induction.load(b), progress)
        if strategy in ("pair-bounds", "pair-bounds-crude"):
            return lambda b, progress: induction.pair_bounds_count(induction.load(b), b, strategy, progress)
    if task in ("modular-arithmetic", "modular-subtraction") and (
            strategy in ("brute-force", "factored") or strategy.startswith("low-rank-")):
        from . import modular

        sign = modular.SIGNS[task]
        return lambda b, progress: modular.claim_count(modular.load(b), b, sign, progress)
    raise Refused(f"this checker knows no strategy {strategy!r} of task {task!r}")


def _with_total(M, count):
    return count(M), M.V**M.n


def check(path, progress=None) -> Verdict:
    """Check one bundle: ``agree`` only when this checker proves at least the claimed count."""
    path = str(path)
    try:
        b = read(path)
        claim = b.claim
        with np.errstate(all="ignore"):  # infinities and NaN are handled by the interval rules: never proved
            proved, total = _prover(claim.task, claim.strategy)(b, progress)
    except Refused as error:
        return Verdict(path, False, None, None, f"disagree: {error}")
    except Exception as error:  # noqa: BLE001 - whatever else a malformed bundle provokes is never an agreement
        return Verdict(path, False, None, None, f"disagree: the bundle could not be checked ({type(error).__name__}: {error})")
    if total != claim.total_count:
        return Verdict(path, False, proved, claim.correct_count,
                       f"disagree: the task has {total} inputs, the bundle claims {claim.total_count}")
    if proved < claim.correct_count:
        return Verdict(path, False, proved, claim.correct_count,
                       f"disagree: claimed {claim.correct_count}/{total}, the independent checker proves {proved}")
    return Verdict(path, True, proved, claim.correct_count,
                   f"agree: {proved}/{total} proved independently (claimed {claim.correct_count})")


__all__ = ["Refused", "Verdict", "check"]
