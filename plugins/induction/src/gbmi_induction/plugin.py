"""gbmi hook implementations for the induction task.  Heavy modules are imported inside the callables only.

This plugin uses nothing but ``gbmi_core``'s public API: the records and ``hookimpl`` from ``gbmi_core``,
and the generic helpers of ``gbmi_core.attention``, ``gbmi_core.certified``, ``gbmi_core.memory`` and
``gbmi_core.progress``.
"""

from __future__ import annotations

from gbmi_core import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec, hookimpl

from . import TASK
from .config import PRESETS, InductionConfig


def _build_model(config):
    from .model import build_model

    return build_model(config)


def _label(tokens):
    from .model import label

    return label(tokens)


def _check_model(model):
    from .model import check_model

    check_model(model)


def _config_from_model(model):
    from .model import config_from_model

    return config_from_model(model)


def _train(config, progress=True):
    from .train import train

    return train(config, progress=progress)


def _verify_brute_force(model, certificate):
    from .brute_force import brute_force

    return brute_force(model)


def _dimension_brute_force(model):
    from .model import unexplained_dimension_brute_force

    return unexplained_dimension_brute_force(model)


def _search_pairs(steps):
    def search(model):
        from .pairs import search

        return search(model, steps)

    return search


def _verify_pairs(steps):
    def verify(model, certificate):
        from .pairs import verify

        return verify(model, certificate, steps)

    return verify


def _dimension_pairs(model):
    from .pairs import unexplained_dimension

    return unexplained_dimension(model)


def task_spec() -> TaskSpec:
    from .reference import reference_models

    return TaskSpec(
        name=TASK,
        summary="Distinct tokens, the last repeats x_i (i <= n-3): predict x_{i+1}, the token after its earlier copy.",
        config_type=InductionConfig,
        build_model=_build_model,
        input_space="distinct x_0..x_{n-2} from [0, d); x_{n-1} = x_i, i <= n-3",
        label=_label,
        check_model=_check_model,
        presets=PRESETS,
        config_from_model=_config_from_model,
        reference_models=reference_models(),
        reference_strategy="brute-force",
    )


@hookimpl
def gbmi_tasks():
    return [task_spec()]


@hookimpl
def gbmi_models():
    return [ModelSpec(task=TASK, name="attn-only-2l1h",
                      summary="Two-layer, one-head-per-layer, attention-only HookedTransformer, no LayerNorm.",
                      build=_build_model)]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adamw",
                        summary="AdamW on fresh uniform samples, linear decay; deterministic for a seed on CPU.",
                        train=_train)]


@hookimpl
def gbmi_proof_strategies():
    return [
        StrategySpec(task=TASK, name="brute-force",
                     summary="Evaluate every input exactly: a float32 screen with a proved error allowance, "
                             "intervals for the rest.",
                     complexity="O(d^(n-1) n (n + d + H))", verify=_verify_brute_force,
                     unexplained_dimension=_dimension_brute_force, family="brute-force"),
        StrategySpec(task=TASK, name="pair-bounds",
                     summary="Bounds per adjacent token pair and per group (q, i, a); the query's row "
                             "by Dinkelbach roots (the certificate).",
                     complexity="O(d^5 n^2 + d^4 n^2 H)", verify=_verify_pairs(2), search=_search_pairs(2),
                     unexplained_dimension=_dimension_pairs, family="pairs", short_name="pairs",
                     search_version="1", options={"steps": 2}),
        StrategySpec(task=TASK, name="pair-bounds-crude",
                     summary="As pair-bounds, with the query row's distractor keys bounded crudely "
                             "(no search, no certificate).",
                     complexity="O(d^5 n^2 + d^4 n^2 H)", verify=_verify_pairs(0),
                     unexplained_dimension=_dimension_pairs, family="pairs", short_name="pairs-crude",
                     options={"steps": 0}),
    ]


_FIGURE_SUMMARIES = {
    "previous-token": "Layer 0's attention by query and key position: the previous-token head.",
    "induction": "Layer 1's attention from the last position, by match position i: the induction head.",
    "matching": "Layer 1's score of the query token against a key whose previous token is u (K-composition).",
    "copying": "Layer 1's OV circuit read through the unembedding: the copied token's logit boost.",
    "proof-map": "For a compact strategy: which groups (q, i, a) its verification proves.",
}


def _draw(name):
    def draw(model, strategy=None):
        from .figures import FIGURES

        return FIGURES[name](model, strategy)

    return draw


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=TASK, name=name, summary=summary, draw=_draw(name), needs_strategy=name == "proof-map")
            for name, summary in _FIGURE_SUMMARIES.items()]
