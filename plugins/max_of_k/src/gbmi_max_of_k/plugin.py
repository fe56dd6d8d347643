"""gbmi hook implementations for Max-of-K.  Heavy modules are imported inside the callables only."""

from __future__ import annotations

from gbmi_core import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec, hookimpl, lazy

from . import TASK
from .config import PRESETS, MaxOfKConfig
from .options import strategy_specs

_HERE = __package__


def task_spec() -> TaskSpec:
    from .reference import SHIPPED

    return TaskSpec(
        name=TASK,
        summary="K tokens drawn uniformly from [0, V); predict the largest (read at the last position).",
        config_type=MaxOfKConfig,
        build_model=lazy(f"{_HERE}.model:build_model"),
        input_space="[0, V)^K",
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
    return [ModelSpec(task=TASK, name="attn-only-1l1h",
                      summary="One-layer, one-head, attention-only transformer, no LayerNorm (biases: any).",
                      build=lazy(f"{_HERE}.model:build_model"))]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adamw",
                        summary="AdamW on fresh uniform samples each step; deterministic for a seed on CPU.",
                        train=lazy(f"{_HERE}.train:train"))]


@hookimpl
def gbmi_proof_strategies():
    strategies = [
        StrategySpec(task=TASK, name="brute-force",
                     summary="Evaluate every one of the V^K inputs exactly (path decomposition, float64 ties).",
                     complexity="O(V^(K+1))", verify=lazy(f"{_HERE}.brute_force:verify"),
                     unexplained_dimension=lazy(f"{_HERE}.model:unexplained_dimension_brute_force"),
                     family="brute-force"),
        StrategySpec(task=TASK, name="cubic",
                     summary="Extreme-attention and largest-wrong-logit tables over (q, m, k, c), then counting.",
                     complexity="O(V^3 log V + V^2 K log V)", verify=lazy(f"{_HERE}.cubic:verify"),
                     unexplained_dimension=lazy(f"{_HERE}.cubic:unexplained_dimension"), family="cubic"),
    ]
    return strategies + strategy_specs(TASK, lazy(f"{_HERE}.subcubic:search"), lazy(f"{_HERE}.subcubic:verify"))


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


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=TASK, name=name, summary=summary, draw=lazy(f"{_HERE}.figures:{name.replace('-', '_')}"),
                       needs_strategy=name in {"proof-map", "min-gap"})
            for name, summary in _FIGURE_SUMMARIES.items()]
