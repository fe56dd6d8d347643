"""The induction task's config and presets (no torch here: listing must stay fast)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from gbmi_core.config import added_field, positive

#: How a model is trained: ``gbmi`` (ours) or ``peer`` (the public peer's recipe, see :mod:`.train`).
RECIPES = ("gbmi", "peer")


def _fits(instance, attribute, value):
    if instance.n - 1 > instance.d:
        raise ValueError(f"'n' - 1 = {instance.n - 1} distinct tokens do not fit in a vocabulary of d = {instance.d}")


@attrs.frozen
class InductionConfig:
    """One induction model: vocabulary ``d``, sequence length ``n``, widths, and how it is trained.

    Inputs: ``x_0 .. x_{n-2}`` pairwise distinct tokens of ``[0, d)``, and ``x_{n-1} = x_i`` for some
    ``i <= n-3``; the answer is ``x_{i+1}``.  The model is a 2-layer attention-only transformer, one
    head per layer, no LayerNorm, learned positions, attention scale ``sqrt(d_head)``.  Training: AdamW
    on fresh uniform samples each step (``steps`` of ``batch_size``), deterministic for ``seed`` on CPU.

    ``recipe="peer"`` trains as the public peer (xocelyk/induction-heads-compact-proofs) does instead: numpy
    initialisation and data, float64, constant learning rate (use ``lr=3e-3``, as the ``*-peer`` presets do).
    """

    d: int = attrs.field(default=16, validator=[v.instance_of(int), v.ge(3)])
    n: int = attrs.field(default=6, validator=[v.instance_of(int), v.ge(3), _fits])
    d_model: int = attrs.field(default=32, validator=[v.instance_of(int), v.ge(1)])
    d_head: int = attrs.field(default=16, validator=[v.instance_of(int), v.ge(1)])
    seed: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    steps: int = attrs.field(default=6000, validator=[v.instance_of(int), v.ge(0)])
    batch_size: int = attrs.field(default=256, validator=[v.instance_of(int), v.ge(1)])
    lr: float = attrs.field(default=5e-3, validator=positive)
    weight_decay: float = attrs.field(default=1e-4, validator=v.ge(0.0))
    eval_samples: int = attrs.field(default=20000, validator=[v.instance_of(int), v.ge(1)])
    recipe: str = added_field("gbmi", validator=v.in_(RECIPES))


#: The peer's two sizes, as overrides of the default; each also trained by the peer's own recipe.
PRESETS = {
    "induction-6": {},
    "induction-8": {"n": 8},
    "induction-6-peer": {"recipe": "peer", "lr": 3e-3},
    "induction-8-peer": {"n": 8, "recipe": "peer", "lr": 3e-3},
}

#: The presets whose seed-0 models ship with the plugin.
SHIPPED_PRESETS = ("induction-6", "induction-8")
