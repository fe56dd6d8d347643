"""gbmi hook implementations for modular arithmetic.

Only ``gbmi_core``'s public API is used; every callable is a :class:`gbmi_core.lazy` reference, so listing
plugins imports no torch.
"""

from __future__ import annotations

from gbmi_core import ModelSpec, TaskSpec, TrainerSpec, hookimpl, lazy

from . import TASK
from .config import PRESETS, ModularConfig

_HERE = __package__


def task_spec() -> TaskSpec:
    return TaskSpec(
        name=TASK,
        summary="(a, b) -> (a + b) mod p (or a - b), read after 'a b =': the clock and pizza models.",
        config_type=ModularConfig,
        build_model=lazy(f"{_HERE}.model:build_model"),
        input_space="every pair (a, b) of [0, p)",
        check_model=lazy(f"{_HERE}.model:check_model"),
        presets=PRESETS,
        config_from_model=lazy(f"{_HERE}.model:config_from_model"),
        reference_strategy="brute-force",
    )


@hookimpl
def gbmi_tasks():
    return [task_spec()]


@hookimpl
def gbmi_models():
    return [ModelSpec(task=TASK, name="attn-mlp-1l",
                      summary="One layer: attention heads (learned, or uniform for pizza) and a ReLU MLP, no LayerNorm.",
                      build=lazy(f"{_HERE}.model:build_model"))]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=TASK, name="adamw-full-batch",
                        summary="Full-batch AdamW on a fixed split until the held-out pairs are all right.",
                        train=lazy(f"{_HERE}.train:train"))]


@hookimpl
def gbmi_proof_strategies():
    from gbmi_core.brute_force import brute_force_strategy

    return [brute_force_strategy(TASK, batches=lazy(f"{_HERE}.model:batches"), count=lazy(f"{_HERE}.model:count"))]
