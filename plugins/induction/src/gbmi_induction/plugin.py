"""gbmi hook implementations for the induction task.

This plugin uses nothing but ``gbmi_core``'s public API: the records, ``hookimpl`` and ``lazy`` from
``gbmi_core``, and the generic helpers of ``gbmi_core.attention``, ``gbmi_core.certified``,
``gbmi_core.models``, ``gbmi_core.memory`` and ``gbmi_core.progress``.  Every callable is a
:class:`gbmi_core.lazy` reference, so listing plugins imports no torch.
"""

from __future__ import annotations

from gbmi_core import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec, hookimpl, lazy

from . import TASK
from .config import PRESETS, InductionConfig

_HERE = __package__


def task_spec() -> TaskSpec:
    from .reference import SHIPPED

    return TaskSpec(
        name=TASK,
        summary="Distinct tokens, the last repeats x_i (i <= n-3): predict x_{i+1}, the token after its earlier copy.",
        config_type=InductionConfig,
        build_model=lazy(f"{_HERE}.model:build_model"),
        input_space="distinct x_0..x_{n-2} from [0, d); x_{n-1} = x_i, i <= n-3",
        label=lazy(f"{_HERE}.model:label"),
        check_model=lazy(f"{_HERE}.model:check_model"),
        presets=PRESETS,
        config_from_model=lazy(f"{_HERE}.model:config_from_model"),
        reference_models=SHIPPED.by_config_hash(),
        reference_strategy="brute-force",
    )


@hookimpl
def gbmi_tasks():
    return [task_spec()]


@hookimpl
def gbmi_models():
    return [ModelSpec(task=TASK, name="attn-only-2l1h",
                      summary="Two-layer, one-head-per-layer, attention-only transformer, no LayerNorm.",
                      build=lazy(f"{_HERE}.model:build_model"))]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adamw",
                        summary="AdamW on fresh uniform samples, linear decay; deterministic for a seed on CPU.",
                        train=lazy(f"{_HERE}.train:train"))]


def _roots_schema():
    """pair-bounds' certificate: one float array of Dinkelbach roots per sub-problem (any shape; a root that
    does not fit, or is not finite, only makes its bound fall back to the crude one), and the step count."""
    from gbmi_core.schema import ArrayField, CertificateSchema, ScalarField

    return CertificateSchema(patterns={r"lambda_[0-9]{4,}": ArrayField("float", finite=False)},
                             attributes={"steps": ScalarField("int", low=0, high=64, required=False)})


@hookimpl
def gbmi_proof_strategies():
    pairs = dict(unexplained_dimension=lazy(f"{_HERE}.pairs:unexplained_dimension"), family="pairs",
                 complexity="O(d^5 n^2 + d^4 n^2 H)")
    return [
        StrategySpec(task=TASK, name="brute-force",
                     summary="Evaluate every input exactly: a float32 screen with a proved error allowance "
                             "(float64 where needed), intervals for the rest.",
                     complexity="O(d^(n-1) n (n + d + H))", verify=lazy(f"{_HERE}.brute_force:verify"),
                     unexplained_dimension=lazy(f"{_HERE}.model:unexplained_dimension_brute_force"),
                     family="brute-force"),
        StrategySpec(task=TASK, name="pair-bounds",
                     summary="Bounds per adjacent token pair and per group (q, i, a); the query's row "
                             "by Dinkelbach roots (the certificate).",
                     verify=lazy(f"{_HERE}.pairs:verify", steps=32), search=lazy(f"{_HERE}.pairs:search", steps=32),
                     short_name="pairs", search_version="2", options={"steps": 32}, certificate=_roots_schema(),
                     **pairs),
        StrategySpec(task=TASK, name="pair-bounds-crude",
                     summary="As pair-bounds, with the query row's distractor keys bounded crudely "
                             "(no search, no certificate).",
                     verify=lazy(f"{_HERE}.pairs:verify", steps=0), short_name="pairs-crude", options={"steps": 0},
                     **pairs),
    ]


_FIGURES = {
    "previous-token": "Layer 0's attention by query and key position: the previous-token head.",
    "induction": "Layer 1's attention from the last position, by match position i: the induction head.",
    "matching": "Layer 1's score of the query token against a key whose previous token is u (K-composition).",
    "copying": "Layer 1's OV circuit read through the unembedding: the copied token's logit boost.",
    "proof-map": "For a compact strategy: which groups (q, i, a) its verification proves.",
}


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=TASK, name=name, summary=summary,
                       draw=lazy(f"{_HERE}.figures:{name.replace('-', '_')}"), needs_strategy=name == "proof-map")
            for name, summary in _FIGURES.items()]
