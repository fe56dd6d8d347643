"""The modular-arithmetic config and its presets (no torch here: listing must stay fast)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from gbmi_core.config import adam_betas, positive


def _fraction(instance, attribute, value):
    if not 0.0 < value < 1.0:
        raise ValueError(f"'{attribute.name}' must be in (0, 1) (got {value})")


@attrs.frozen
class ModularConfig:
    """One modular-addition model: the modulus, the architecture, and how it is trained.

    Inputs are every pair ``(a, b)`` of ``[0, p)``, read as the tokens ``a b =`` (``=`` is token ``p``) or,
    without ``eq_token``, ``a b``; the answer, read at the last position, is ``(a + b) mod p``.  The model:
    one layer of ``n_heads`` attention heads (``attention="uniform"``
    freezes the queries and keys at 0, so every head averages the positions: the "pizza" setting) and an MLP
    of ``d_mlp`` neurons (``act_fn``), no LayerNorm, learned positions.  Training: full-batch AdamW on a
    random ``train_fraction`` of the pairs (the split drawn from ``seed``), until the held-out pairs are all
    right ("grokked", checked every ``eval_every`` steps), then ``after_grok`` steps more (weight decay cleans
    the circuit up, which the compact proofs need), or until ``steps`` run out; deterministic on CPU.
    The default is the ``clock`` preset (Nanda et al.'s grokking model).
    """

    p: int = attrs.field(default=113, validator=[v.instance_of(int), v.ge(2)])
    eq_token: bool = attrs.field(default=True, validator=v.instance_of(bool))
    attention: str = attrs.field(default="learned", validator=v.in_(("learned", "uniform")))
    d_model: int = attrs.field(default=128, validator=[v.instance_of(int), v.ge(1)])
    n_heads: int = attrs.field(default=4, validator=[v.instance_of(int), v.ge(1)])
    d_head: int = attrs.field(default=32, validator=[v.instance_of(int), v.ge(1)])
    d_mlp: int = attrs.field(default=512, validator=[v.instance_of(int), v.ge(1)])
    act_fn: str = attrs.field(default="relu", validator=v.in_(("relu", "gelu", "gelu_new", "gelu_fast")))
    seed: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    train_fraction: float = attrs.field(default=0.3, validator=_fraction)
    steps: int = attrs.field(default=30000, validator=[v.instance_of(int), v.ge(0)])
    lr: float = attrs.field(default=1e-3, validator=positive)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.98), validator=adam_betas)
    weight_decay: float = attrs.field(default=1.0, validator=v.ge(0.0))
    eval_every: int = attrs.field(default=100, validator=[v.instance_of(int), v.ge(1)])
    after_grok: int = attrs.field(default=5000, validator=[v.instance_of(int), v.ge(0)])

    @property
    def n_ctx(self) -> int:
        return 3 if self.eq_token else 2

    @property
    def d_vocab(self) -> int:
        return self.p + 1 if self.eq_token else self.p


#: The seed's configurations, as overrides of the default (``clock``).
PRESETS = {
    "clock": {},
    "pizza": {"p": 59, "eq_token": False, "attention": "uniform", "train_fraction": 0.8, "after_grok": 3400},
    "small": {"p": 23, "d_model": 32, "n_heads": 2, "d_head": 16, "d_mlp": 64, "train_fraction": 0.8,
              "lr": 1e-2, "steps": 4000, "after_grok": 1000},
}
