"""gbmi hook implementations for Max-of-K.  Heavy modules are imported inside the callables only."""

from __future__ import annotations

from gbmi_core import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec, hookimpl

from . import TASK
from .config import PRESETS, MaxOfKConfig
from .options import strategy_specs


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


def _verify_cubic(model, certificate):
    from .cubic import verify

    return verify(model, certificate)


def _search_subcubic(model, options):
    from .subcubic import search

    return search(model, options)


def _verify_subcubic(model, certificate, options):
    from .subcubic import verify

    return verify(model, certificate, options)


def _dimension_brute_force(model):
    from .model import unexplained_dimension_brute_force

    return unexplained_dimension_brute_force(model)


def _dimension_cubic(model):
    from .cubic import unexplained_dimension

    return unexplained_dimension(model)


def task_spec() -> TaskSpec:
    from .reference import reference_models

    return TaskSpec(
        name=TASK,
        summary="K tokens drawn uniformly from [0, V); predict the largest (read at the last position).",
        config_type=MaxOfKConfig,
        build_model=_build_model,
        input_space="[0, V)^K",
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
    return [ModelSpec(task=TASK, name="attn-only-1l1h",
                      summary="One-layer, one-head, attention-only HookedTransformer, no LayerNorm, zero biases.",
                      build=_build_model)]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adamw",
                        summary="AdamW on fresh uniform samples each step; deterministic for a seed on CPU.",
                        train=_train)]


@hookimpl
def gbmi_proof_strategies():
    strategies = [
        StrategySpec(task=TASK, name="brute-force",
                     summary="Evaluate every one of the V^K inputs exactly (path decomposition, float64 ties).",
                     complexity="O(V^(K+1))", verify=_verify_brute_force,
                     unexplained_dimension=_dimension_brute_force, family="brute-force"),
        StrategySpec(task=TASK, name="cubic",
                     summary="Extreme-attention and largest-wrong-logit tables over (q, m, k, c), then counting.",
                     complexity="O(V^3 log V + V^2 K log V)", verify=_verify_cubic, unexplained_dimension=_dimension_cubic,
                     family="cubic"),
    ]
    return strategies + strategy_specs(TASK, _search_subcubic, _verify_subcubic)


_FIGURE_SUMMARIES = {
    "eqke": "EQKE heatmap: query token x key token attention scores.",
    "eqkp": "EQKP heatmap: query token x key position attention scores.",
    "eqke-svd": "EQKE's singular values and its rank-one size direction.",
    "evou": "EVOU heatmap: the copying diagonal of the OV circuit.",
    "pvou": "PVOU heatmap: what attending to each position contributes.",
    "eupu": "EUPU heatmap: the direct path from query token to logits.",
    "proof-map": "For a cubic or subcubic strategy: the share of each (query, max) pair proved.",
    "min-gap": "For a subcubic strategy: its certificate's min-gap table.",
}


def _draw(name):
    def draw(model, strategy=None):
        from .figures import FIGURES

        return FIGURES[name](model, strategy)

    return draw


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=TASK, name=name, summary=summary, draw=_draw(name),
                       needs_strategy=name in {"proof-map", "min-gap"})
            for name, summary in _FIGURE_SUMMARIES.items()]
