"""gbmi hook implementations for modular arithmetic.

Only ``gbmi_core``'s public API is used; every callable is a :class:`gbmi_core.lazy` reference, so listing
plugins imports no torch.
"""

from __future__ import annotations

from gbmi_core import FigureSpec, ModelSpec, StrategySpec, TaskSpec, TrainerSpec, hookimpl, lazy

from . import OPERATIONS, TASK
from .config import PRESETS, ModularConfig

_HERE = __package__
_SUMMARY = {"add": "(a, b) -> (a + b) mod p, read after 'a b =': the clock and pizza models.",
            "subtract": "(a, b) -> (a - b) mod p, read after 'a b =': the clock and pizza recipes on subtraction."}


def task_spec(task: str = TASK) -> TaskSpec:
    from .reference import SHIPPED

    return TaskSpec(
        name=task,
        summary=_SUMMARY[OPERATIONS[task]],
        config_type=ModularConfig,
        build_model=lazy(f"{_HERE}.model:build_model"),
        input_space="every pair (a, b) of [0, p)",
        check_model=lazy(f"{_HERE}.model:check_model"),
        presets=PRESETS,
        config_from_model=lazy(f"{_HERE}.model:config_from_model"),
        reference_strategy="brute-force",
        reference_models=SHIPPED.by_config_hash() if task == TASK else {},
    )


@hookimpl
def gbmi_tasks():
    return [task_spec(task) for task in OPERATIONS]


@hookimpl
def gbmi_models():
    return [ModelSpec(task=task, name="attn-mlp-1l",
                      summary="One layer: attention heads (learned, or uniform for pizza) and a ReLU MLP, no LayerNorm.",
                      build=lazy(f"{_HERE}.model:build_model")) for task in OPERATIONS]


@hookimpl
def gbmi_training():
    return [TrainerSpec(task=task, name="adamw-full-batch",
                        summary="Full-batch AdamW on a fixed split until the held-out pairs are all right.",
                        train=lazy(f"{_HERE}.train:train", operation=operation))
            for task, operation in OPERATIONS.items()]


#: The ranks of the low-rank readout variants.
RANKS = (8, 12, 16)


def _basis_schema():
    """low-rank-R's certificate: the readout basis, float rows over the outputs (checked by verify: at most R
    rows of d_vocab_out finite floats)."""
    from gbmi_core.schema import ArrayField, CertificateSchema

    return CertificateSchema({"basis": ArrayField("float")})


@hookimpl
def gbmi_proof_strategies():
    return [spec for task, operation in OPERATIONS.items() for spec in _strategies(task, operation)]


def _strategies(task: str, operation: str) -> list[StrategySpec]:
    from gbmi_core.brute_force import brute_force_strategy

    return [
        brute_force_strategy(task, batches=lazy(f"{_HERE}.model:batches", operation=operation),
                             count=lazy(f"{_HERE}.model:count")),
        StrategySpec(task=task, name="factored",
                     summary="Per-token attention and value tables, pre-activations as sums of per-token rows; "
                             "every pair's MLP and readout in intervals.",
                     complexity="O(p^2 d_mlp (h n + p) + p D d_mlp h n)",
                     verify=lazy(f"{_HERE}.factored:verify_factored", operation=operation),
                     unexplained_dimension=lazy(f"{_HERE}.factored:unexplained_dimension"), family="factored"),
    ] + [
        StrategySpec(task=task, name=f"low-rank-{rank}",
                     summary=f"As factored, with the neurons read out through {rank} output directions and the "
                             f"rest bounded by Cauchy-Schwarz.",
                     complexity="O(p^2 d_mlp (h n + R) + p^2 d_mlp)",
                     search=lazy(f"{_HERE}.factored:search_low_rank", rank=rank),
                     verify=lazy(f"{_HERE}.factored:verify_low_rank", rank=rank, operation=operation),
                     unexplained_dimension=lazy(f"{_HERE}.factored:unexplained_dimension", rank=rank),
                     family="low-rank", options={"rank": rank}, search_version="1", certificate=_basis_schema())
        for rank in RANKS
    ]


_FIGURES = {
    "fourier": "The number tokens' embedding per Fourier frequency: the key frequencies.",
    "neurons": "The most variable neurons' activations against (a, b).",
    "neurons-by-sum": "The same neurons' activations against (a + b) mod p.",
    "logits-by-sum": "Each output's mean logit over the pairs with a + b = s: the answer on the diagonal.",
    "proof-map": "For factored or low-rank-R: which pairs (a, b) its verification proves.",
}


#: The figures whose drawing reads the label (the others show the model alone).
_BY_LABEL = ("neurons-by-sum", "logits-by-sum")


@hookimpl
def gbmi_figures():
    return [FigureSpec(task=task, name=name,
                       summary=summary.replace("a + b", "a - b") if operation == "subtract" else summary,
                       draw=lazy(f"{_HERE}.figures:{name.replace('-', '_')}",
                                 **({"operation": operation} if name in _BY_LABEL else {})),
                       needs_strategy=name == "proof-map")
            for task, operation in OPERATIONS.items() for name, summary in _FIGURES.items()]
