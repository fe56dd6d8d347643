"""The Max-of-K model: a one-layer, one-head, attention-only TransformerLens model, and its paths.

A model is accepted by the proofs only when it has exactly the architecture the proofs assume; anything
else (an MLP, LayerNorm, several heads or layers, NaN/inf weights, ...) is refused with a
:class:`~gbmi_core.ModelRefused` naming the reason.  Biases are welcome: :func:`paths` folds them into one
more residual direction (:func:`gbmi_core.attention.fold_biases`), so every strategy, written for the
bias-free model of the paper, proves the biased model as it is.
"""

from __future__ import annotations

import attrs
import torch

from gbmi_core.lens import Weights
from gbmi_core.attention import attention_only_weights, build_attention_only, check_attention_only, fold_biases

from .config import MaxOfKConfig


def build_model(config: MaxOfKConfig):
    """A fresh model (of the installed TransformerLens) for ``config``, initialised from ``config.seed``, biases frozen at 0."""
    return build_attention_only(n_layers=1, d_model=config.d_model, d_head=config.d_model, d_vocab=config.V,
                                n_ctx=config.K, seed=config.seed)


def label(tokens: torch.Tensor) -> torch.Tensor:
    """The right answer: the largest token of each sequence.  ``[batch, K] -> [batch]``"""
    return tokens.amax(dim=-1)  # integers: the same values as max(...).values, without the indices


def check_model(model) -> None:
    """Raise :class:`ModelRefused` unless ``model`` is a TransformerLens model the Max-of-K proofs handle."""
    check_attention_only(model, n_layers=1, n_heads=1, what="Max-of-K")


@attrs.frozen
class Paths:
    """A checked model's weights in float64, with the derived path matrices of the proofs.

    Shapes: ``V`` vocabulary, ``n`` = K positions, ``D`` = d_model, ``H`` = d_head (each one more when the
    model has biases: they are folded into a constant direction, see :func:`paths`).
    """

    W_E: torch.Tensor  # [V, D]
    W_pos: torch.Tensor  # [n, D]
    W_Q: torch.Tensor  # [D, H]
    W_K: torch.Tensor  # [D, H]
    W_V: torch.Tensor  # [D, H]
    W_O: torch.Tensor  # [H, D]
    W_U: torch.Tensor  # [D, V]
    attn_scale: float

    @property
    def V(self) -> int:
        return self.W_E.shape[0]

    @property
    def n(self) -> int:
        return self.W_pos.shape[0]

    @property
    def D(self) -> int:
        return self.W_E.shape[1]

    @property
    def Eq(self) -> torch.Tensor:  # [V, D]: query-side residual (token + last position)
        return self.W_E + self.W_pos[-1]

    @property
    def QK(self) -> torch.Tensor:  # [D, D]
        return self.W_Q @ self.W_K.T

    @property
    def OVU(self) -> torch.Tensor:  # [D, V]
        return self.W_V @ (self.W_O @ self.W_U)

    def EQKE(self) -> torch.Tensor:  # [V, V]: query token x key token, key side without position; not / scale
        return (self.Eq @ self.QK) @ self.W_E.T

    def EQKP(self) -> torch.Tensor:  # [V, n]: query token x key position
        return (self.Eq @ self.QK) @ self.W_pos.T

    def EUPU(self) -> torch.Tensor:  # [V, V]: direct path, query token x output
        return self.Eq @ self.W_U

    def EVOU(self) -> torch.Tensor:  # [V, V]: key token x output
        return self.W_E @ self.OVU

    def PVOU(self) -> torch.Tensor:  # [n, V]: key position x output
        return self.W_pos @ self.OVU


def interval_paths(P: Paths, certified: bool = True) -> dict:
    """The path matrices as :class:`~gbmi_core.certified.Interval` s enclosing their exact values.

    ``Eq [V, D], EqQK [V, D], EQKE [V, V], EQKP [V, n], EUPU [V, V], EVOU [V, V], PVOU [n, V]``.  Each is a
    chain of certified products of the exact weights; ``certified=False`` gives the same in plain float64.
    Cost ``O(V^2 D + V D^2)``.
    """
    from gbmi_core.certified import Interval, matmul

    Eq = Interval.exact(P.W_E, certified) + P.W_pos[-1]
    EqQK = matmul(matmul(Eq, P.W_Q), P.W_K.T)
    OVU = matmul(Interval.exact(P.W_V, certified), matmul(Interval.exact(P.W_O, certified), P.W_U))
    return {"Eq": Eq, "EqQK": EqQK, "EQKE": matmul(EqQK, P.W_E.T), "EQKP": matmul(EqQK, P.W_pos.T),
            "EUPU": matmul(Eq, P.W_U), "EVOU": matmul(Interval.exact(P.W_E, certified), OVU),
            "PVOU": matmul(Interval.exact(P.W_pos, certified), OVU)}


def paths(model, dtype=torch.float64) -> Paths:
    """Extract a checked model's weights (layer 0, head 0) as :class:`Paths`.

    A model with any nonzero bias gets its biases folded into one more residual and head dimension
    (:func:`~gbmi_core.attention.fold_biases`: the same function in exact arithmetic, every entry a stored
    value), so ``EUPU`` carries ``b_U``, ``EQKE``/``EQKP`` carry ``b_Q`` and ``b_K`` (``b_K`` on the key
    positions), ``PVOU`` carries ``b_V`` and ``b_O`` (attention sums to 1).  A bias-free model is read as it
    is, so its proofs, counts and FLOPs do not change.
    """
    check_model(model)
    w = attention_only_weights(model, dtype)
    if w.has_biases():
        w = fold_biases(w)
    layer = w.layers[0]
    return Paths(W_E=w.W_E, W_pos=w.W_pos, W_Q=layer.W_Q, W_K=layer.W_K, W_V=layer.W_V, W_O=layer.W_O, W_U=w.W_U,
                 attn_scale=layer.attn_scale)


def last_logits(model: Weights, tokens: torch.Tensor, *, biases: bool = True) -> torch.Tensor:
    """The logits at the last position, computed from a model's canonical weights (differentiable).

    Equal to ``model(tokens)[:, -1]`` for the architecture :func:`check_model` accepts, but it computes
    only the last query, which makes training several times faster.  It reads layer 0, head 0 straight from
    the state (not through the stacked accessors, a copy per weight and step).  ``biases=False`` leaves the
    biases out: for a model whose biases are all frozen at zero (training's default) the logits are the same
    bit for bit (``x + 0.0 == x``), with ten fewer ops per step.  ``[batch, n] -> [batch, V]``
    """
    state = model.state
    W_Q, W_K, W_V, W_O = (state[f"blocks.0.attn.{name}"][0] for name in ("W_Q", "W_K", "W_V", "W_O"))
    residual = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][: tokens.shape[1]]  # [batch, n, D]
    q = residual[:, -1] @ W_Q  # [batch, H]
    k = residual @ W_K  # [batch, n, H]
    v = residual @ W_V  # [batch, n, H]
    if biases:
        q, k, v = (x + state[f"blocks.0.attn.b_{name}"][0] for x, name in ((q, "Q"), (k, "K"), (v, "V")))
    scores = torch.einsum("bh,bnh->bn", q, k) / model.attn_scale[0]
    attention = scores.softmax(dim=-1)
    head = torch.einsum("bn,bnh->bh", attention, v) @ W_O  # [batch, D]
    if biases:
        head = head + state["blocks.0.attn.b_O"]
    logits = (residual[:, -1] + head) @ state["unembed.W_U"]
    return logits + state["unembed.b_U"] if biases else logits


def unexplained_dimension_brute_force(model) -> int:
    """Brute force explains nothing: the reference counts V^(K+1)."""
    return model.cfg.d_vocab ** (model.cfg.n_ctx + 1)


def config_from_model(model) -> MaxOfKConfig:
    return MaxOfKConfig(V=model.cfg.d_vocab, K=model.cfg.n_ctx, d_model=model.cfg.d_model)
