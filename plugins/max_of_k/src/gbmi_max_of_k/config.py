"""The Max-of-K config and its presets (no torch here: listing must stay fast)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from gbmi_core.config import adam_betas, positive


@attrs.frozen
class MaxOfKConfig:
    """One Max-of-K model: the task's size, the architecture's width, and how it is trained.

    The defaults are the paper's Max-of-4: V=64, K=4, d_model=d_head=32, one layer, one head,
    attention-only, no LayerNorm, learned absolute positions, biases fixed at zero (as the paper trains
    them; the proofs also take models with biases); AdamW (lr 1e-3,
    betas 0.9/0.999, weight decay 0.01), batch 128, 3000 steps, fresh random samples each step.
    """

    V: int = attrs.field(default=64, validator=[v.instance_of(int), v.ge(2)])
    K: int = attrs.field(default=4, validator=[v.instance_of(int), v.ge(2)])
    d_model: int = attrs.field(default=32, validator=[v.instance_of(int), v.ge(1)])
    seed: int = attrs.field(default=123, validator=[v.instance_of(int), v.ge(0)])
    steps: int = attrs.field(default=3000, validator=[v.instance_of(int), v.ge(0)])
    batch_size: int = attrs.field(default=128, validator=[v.instance_of(int), v.ge(1)])
    lr: float = attrs.field(default=1e-3, validator=positive)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), validator=adam_betas)
    weight_decay: float = attrs.field(default=0.01, validator=v.ge(0.0))
    eval_samples: int = attrs.field(default=1024, validator=[v.instance_of(int), v.ge(1)])


#: The paper's other sizes, as overrides of the default.
PRESETS = {
    "max-of-4": {},
    "max-of-5": {"K": 5},
    "max-of-10": {"K": 10},
    "max-of-10-128v": {"K": 10, "V": 128},
    "max-of-20": {"K": 20},
    "max-of-20-512v": {"K": 20, "V": 512},
}
