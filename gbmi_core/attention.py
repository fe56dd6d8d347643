"""Attention-only transformers, for any task: architecture checks, weights as float64, certified bounds.

Two tasks' proofs need the same pieces, so they live here:

* :func:`attention_only_problems` names why a TransformerLens model (either version) is not an
  attention-only model of the wanted depth and width (a task's ``check_model`` turns the list into a
  :class:`~gbmi_core.ModelRefused`).
* :func:`attention_only_weights` reads such a model's weights, every layer's head 0, biases included, as
  float64 tensors (float32 to float64 is exact, so proofs start from the exact weights).
* :func:`fold_biases` turns a model with biases into one without that computes the same function (a
  constant residual direction carries them), so a proof written for bias-free models proves biased ones.
* :func:`softmax_weight_lower` and :func:`mixture_bounds` are the two certified inequalities behind
  every attention argument: "this key gets at least this much attention", and "an average that puts at
  least this much weight on one term lies between these bounds".  Both take and return plain float64
  tensors that are rigorous bounds, and compute with :class:`~gbmi_core.certified.Interval` inside.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from . import lens
from .certified import Interval
from .errors import ModelRefused


@attrs.frozen
class Layer:
    """One attention layer's head 0, float64: ``W_Q, W_K, W_V [D, H]``, ``W_O [H, D]``, biases, score scale.

    Scores are ``(x W_Q + b_Q)·(y W_K + b_K) / attn_scale``; the layer adds ``softmax(scores) (y W_V + b_V)
    W_O + b_O`` to the residual stream.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    b_Q: torch.Tensor
    b_K: torch.Tensor
    b_V: torch.Tensor
    b_O: torch.Tensor
    attn_scale: float


@attrs.frozen
class AttentionOnly:
    """An attention-only transformer's weights in float64: embeddings, layers (head 0 each), unembedding."""

    W_E: torch.Tensor  # [V, D]
    W_pos: torch.Tensor  # [n, D]
    layers: tuple[Layer, ...]
    W_U: torch.Tensor  # [D, V_out]
    b_U: torch.Tensor  # [V_out]

    @property
    def d_vocab(self) -> int:
        return self.W_E.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.W_pos.shape[0]

    def embed(self) -> torch.Tensor:
        """Token plus position embedding of every (token, position).  ``[V, n, D]``"""
        return self.W_E[:, None, :] + self.W_pos[None, :, :]

    def has_biases(self) -> bool:
        """Whether any bias is nonzero (``-0.0`` counts as zero)."""
        biases = [self.b_U] + [b for layer in self.layers for b in (layer.b_Q, layer.b_K, layer.b_V, layer.b_O)]
        return any(bool((b != 0).any()) for b in biases)


def fold_biases(w: AttentionOnly) -> AttentionOnly:
    """The same function with every bias zero: biases become weights of one constant residual direction.

    The residual stream gets one more dimension ``c`` (index ``D``), 1 at every position (``W_pos[:, c] =
    1``, ``W_E[:, c] = 0``), and each head one more dimension ``h`` (index ``H``)::

        W_Q' = [[W_Q, 0], [b_Q, 0]]   W_K' = [[W_K, 0], [b_K, 0]]   W_V' = [[W_V, 0], [b_V, 1]]
        W_O' = [[W_O, 0], [b_O, 0]]   W_U' = [[W_U], [b_U]]

    so that ``x' W_Q' = [x W_Q + b_Q, 0]`` (likewise ``K``), ``x' W_V' = [x W_V + b_V, 1]``, and a head writes
    ``[Σ a_i (x_i W_V + b_V) W_O + (Σ a_i) b_O, 0]``: attention sums to 1, so this is the biased head's output,
    and ``c`` stays 1 through every layer (no head writes it).  The unembedding reads ``c`` as ``b_U``.  In
    exact arithmetic the folded model's logits are the biased model's, for every input; every new entry is a
    copy of a stored value, 0 or 1, so nothing is rounded.  Proofs about the folded model are proofs about the
    biased one.  Cost: ``D + 1`` and ``H + 1`` in every path product.
    """
    dtype = w.W_E.dtype

    def grow(M: torch.Tensor, rows: int = 0, cols: int = 0) -> torch.Tensor:
        out = torch.zeros(M.shape[0] + rows, M.shape[1] + cols, dtype=dtype)
        out[: M.shape[0], : M.shape[1]] = M
        return out

    W_pos = grow(w.W_pos, cols=1)
    W_pos[:, -1] = 1
    layers = []
    for layer in w.layers:
        Q, K, Vw, O = grow(layer.W_Q, 1, 1), grow(layer.W_K, 1, 1), grow(layer.W_V, 1, 1), grow(layer.W_O, 1, 1)
        Q[-1, :-1], K[-1, :-1], Vw[-1, :-1], O[-1, :-1] = layer.b_Q, layer.b_K, layer.b_V, layer.b_O
        Vw[-1, -1] = 1
        H, D = Q.shape[1], O.shape[1]
        layers.append(Layer(W_Q=Q, W_K=K, W_V=Vw, W_O=O, b_Q=torch.zeros(H, dtype=dtype),
                            b_K=torch.zeros(H, dtype=dtype), b_V=torch.zeros(H, dtype=dtype),
                            b_O=torch.zeros(D, dtype=dtype), attn_scale=layer.attn_scale))
    W_U = grow(w.W_U, rows=1)
    W_U[-1] = w.b_U
    return AttentionOnly(W_E=grow(w.W_E, cols=1), W_pos=W_pos, layers=tuple(layers), W_U=W_U,
                         b_U=torch.zeros_like(w.b_U))


def attention_only_problems(model: Any, n_layers: int | None = None, n_heads: int = 1) -> list[str]:
    """Why ``model`` is not an attention-only transformer with ``n_layers`` layers of ``n_heads`` heads.

    ``model`` is a TransformerLens ``HookedTransformer`` (3.x) or ``TransformerBridge`` (4.x), read through
    :mod:`gbmi_core.lens`.  An empty list means it is one: no MLP, no LayerNorm, learned absolute positions,
    raw logits and scores, input and output vocabularies equal, finite weights.  Biases are allowed (see
    :class:`Layer`).  ``n_layers=None`` accepts any depth.
    """
    if lens.kind(model) is None:
        return [f"the proofs take a TransformerLens HookedTransformer or TransformerBridge, not a {type(model).__name__}"]
    try:
        cfg = lens.architecture(model)
    except (ModelRefused, lens.LensError) as error:
        return [str(error)]
    problems = []
    if n_layers is not None and cfg["n_layers"] != n_layers:
        problems.append(f"it has {cfg['n_layers']} layers (the proofs need exactly {n_layers})")
    if cfg["n_heads"] != n_heads:
        problems.append(f"it has {cfg['n_heads']} attention heads (the proofs need exactly {n_heads})")
    if not cfg["attn_only"]:
        problems.append("it has an MLP (the proofs need an attention-only model)")
    if cfg["normalization_type"] is not None:
        problems.append(f"it uses {cfg['normalization_type']} normalisation (the proofs need none)")
    if cfg["final_rms"]:
        problems.append("it has a final RMS norm (the proofs need none)")
    if cfg["positional_embedding_type"] != "standard":
        problems.append(f"its positional embedding is {cfg['positional_embedding_type']!r} (the proofs need 'standard')")
    if cfg["d_vocab"] != cfg["d_vocab_out"]:
        problems.append(f"its input vocabulary ({cfg['d_vocab']}) differs from its output vocabulary "
                        f"({cfg['d_vocab_out']})")
    for name in ("output_logits_soft_cap", "attn_scores_soft_cap"):
        if cfg[name] > 0:
            problems.append(f"it uses {name} (the proofs need raw logits and scores)")
    if cfg["use_local_attn"] or cfg["use_qk_norm"]:
        problems.append("it uses local attention or QK norm")
    if cfg["n_key_value_heads"] is not None:
        problems.append("it uses grouped-query attention")
    if problems:
        return problems
    for name, tensor in lens.canonical_state(model, cfg).items():
        if tensor.dtype.is_floating_point and not torch.isfinite(tensor).all() and not name.endswith(".IGNORE"):
            problems.append(f"weight {name} holds NaN or infinite values")
    return problems


def check_attention_only(model: Any, n_layers: int | None = None, n_heads: int = 1, what: str = "the proofs") -> None:
    """Raise :class:`~gbmi_core.ModelRefused` naming every problem :func:`attention_only_problems` finds."""
    problems = attention_only_problems(model, n_layers, n_heads)
    if problems:
        raise ModelRefused(f"model refused by {what}: " + "; ".join(problems))


def attention_only_weights(model: Any, dtype: torch.dtype = torch.float64) -> AttentionOnly:
    """The weights of an attention-only model (head 0 of each layer), detached, on the CPU.  ``model`` is a
    TransformerLens model or a :class:`gbmi_core.lens.Weights`."""
    w = model if isinstance(model, lens.Weights) else lens.Weights.of(model)

    def get(name):
        return w[name].detach().to(dtype=dtype, device="cpu")

    layers = []
    for index, scale in enumerate(w.attn_scale):
        p = f"blocks.{index}.attn."
        layers.append(Layer(W_Q=get(p + "W_Q")[0], W_K=get(p + "W_K")[0], W_V=get(p + "W_V")[0],
                            W_O=get(p + "W_O")[0], b_Q=get(p + "b_Q")[0], b_K=get(p + "b_K")[0],
                            b_V=get(p + "b_V")[0], b_O=get(p + "b_O"), attn_scale=scale))
    return AttentionOnly(W_E=get("embed.W_E"), W_pos=get("pos_embed.W_pos"), layers=tuple(layers),
                         W_U=get("unembed.W_U"), b_U=get("unembed.b_U"))


def build_attention_only(*, n_layers: int, d_model: int, d_head: int, d_vocab: int, n_ctx: int, seed: int,
                         n_heads: int = 1):
    """A fresh attention-only model (no LayerNorm, learned positions) of the installed TransformerLens,
    with gbmi's initialisation for ``seed`` (:func:`gbmi_core.lens.initial_state`, the same under every
    version) and every bias frozen at 0, as both tasks' proofs are usually trained."""
    arch = {"n_layers": n_layers, "n_heads": n_heads, "d_model": d_model, "d_head": d_head, "d_vocab": d_vocab,
            "d_vocab_out": d_vocab, "n_ctx": n_ctx, "attn_only": True, "normalization_type": None,
            "positional_embedding_type": "standard", "act_fn": None}
    model = lens.build(arch, seed=seed)
    lens.freeze(model, _bias_names(model))
    return model


def _bias_names(model) -> list[str]:
    return [name for name in lens.parameter_names(lens.architecture(model)) if name.rsplit(".", 1)[1].startswith("b_")]


def frozen_zero_biases(model) -> bool:
    """Whether every bias of ``model`` is frozen (not trained) and exactly zero, as
    :func:`build_attention_only` makes them: then a training forward may leave the biases out and compute
    the same floats (``x + 0.0 == x``)."""
    names = _bias_names(model)
    state = lens.canonical_state(model)
    return not (set(names) & lens.trainable(model)) and not any(bool(state[name].any()) for name in names)


def softmax_weight_lower(target_lo: torch.Tensor, others_hi: torch.Tensor, certified: bool = True) -> torch.Tensor:
    """A rigorous lower bound on the softmax weight of one key.

    ``target_lo [...]`` bounds its score from below, ``others_hi [..., k]`` bounds each other key's score
    from above (``-inf`` for a key that is not there).  The weight is ``1 / (1 + Σ exp(other - target))``,
    decreasing in every ``other - target``, so evaluating it at the bounds, rounding outward, bounds it
    below.  NaN anywhere gives 0 (nothing certified).
    """
    diff = Interval.exact(others_hi, certified) - Interval.exact(target_lo, certified)[..., None]
    weight = (1 + diff.exp().sum(-1)).reciprocal().lo
    return torch.nan_to_num(weight, nan=0.0).clamp(min=0.0)


def mixture_bounds(weight_lo: torch.Tensor, target_lo: torch.Tensor, target_hi: torch.Tensor,
                   others_lo: torch.Tensor, others_hi: torch.Tensor,
                   certified: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigorous bounds on ``Σ_k a_k y_k`` when ``a`` is a probability vector with ``a_t >= weight_lo``.

    ``y_t`` lies in ``[target_lo, target_hi]`` and every other ``y_k`` in ``[others_lo, others_hi]``.  The
    sum is ``o + a_t (y_t - o)`` with ``o`` an average of the others, linear in ``a_t ∈ [weight_lo, 1]``, so
    its least value is ``min(target_lo, others_lo + weight_lo (target_lo - others_lo))`` and its largest
    ``max(target_hi, others_hi + weight_lo (target_hi - others_hi))``.  Returns ``(lo, hi)``, rounded outward.
    """
    w = Interval.exact(weight_lo.clamp(0.0, 1.0), certified)
    t_lo, t_hi = Interval.exact(target_lo, certified), Interval.exact(target_hi, certified)
    o_lo, o_hi = Interval.exact(others_lo, certified), Interval.exact(others_hi, certified)
    lo = torch.minimum(target_lo, (o_lo + w * (t_lo - o_lo)).lo)
    hi = torch.maximum(target_hi, (o_hi + w * (t_hi - o_hi)).hi)
    return lo, hi


__all__ = ["AttentionOnly", "Layer", "attention_only_problems", "attention_only_weights", "build_attention_only",
           "check_attention_only", "fold_biases", "frozen_zero_biases",
           "mixture_bounds", "softmax_weight_lower"]
