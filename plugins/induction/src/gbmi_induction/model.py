"""The induction model (a 2-layer attention-only TransformerLens model), its inputs, and its path tables.

Any TransformerLens model (3.x or 4.x) of the shape family is accepted, ours or someone else's: two attention-only layers
of one head, no LayerNorm, learned positions, biases allowed (they are folded into the tables below).
"""

from __future__ import annotations

import math

import attrs
import torch

from gbmi_core import ModelRefused
from gbmi_core.lens import Weights
from gbmi_core.attention import attention_only_weights, build_attention_only, check_attention_only
from gbmi_core.certified import Interval, matmul

from .config import InductionConfig


def build_model(config: InductionConfig):
    """A fresh model (of the installed TransformerLens) for ``config``, initialised from ``config.seed``, biases frozen at 0."""
    return build_attention_only(n_layers=2, d_model=config.d_model, d_head=config.d_head, d_vocab=config.d,
                                n_ctx=config.n, seed=config.seed)


def check_model(model) -> None:
    """Raise :class:`ModelRefused` unless ``model`` is a TransformerLens model the induction proofs handle."""
    check_attention_only(model, n_layers=2, n_heads=1, what="the induction task")
    cfg = model.cfg
    if cfg.n_ctx < 3 or cfg.n_ctx - 1 > cfg.d_vocab:
        raise ModelRefused(f"model refused by the induction task: its context of {cfg.n_ctx} positions does not fit "
                           f"a vocabulary of {cfg.d_vocab} (need 3 <= n_ctx <= d_vocab + 1)")


def config_from_model(model) -> InductionConfig:
    return InductionConfig(d=model.cfg.d_vocab, n=model.cfg.n_ctx, d_model=model.cfg.d_model, d_head=model.cfg.d_head)


def match_position(tokens: torch.Tensor) -> torch.Tensor:
    """``i``: where (``i <= n-3``) the last token occurred before.  ``[b, n] -> [b]``"""
    n = tokens.shape[-1]
    return (tokens[..., : n - 2] == tokens[..., -1:]).int().argmax(-1)


def label(tokens: torch.Tensor) -> torch.Tensor:
    """The answer ``x_{i+1}`` where ``x_i`` (``i <= n-3``) is the last token's earlier occurrence.  ``[b, n] -> [b]``"""
    return tokens.gather(-1, (match_position(tokens) + 1)[..., None])[..., 0]


def count_inputs(d: int, n: int) -> int:
    """``d (d-1) ... (d-n+2)`` distinct prefixes times ``n-2`` match positions."""
    return math.perm(d, n - 1) * (n - 2)


def sample(d: int, n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` inputs drawn uniformly from the task's input space.  ``[count, n]``"""
    prefix = torch.rand(count, d, generator=generator).argsort(-1)[:, : n - 1]
    i = torch.randint(0, n - 2, (count,), generator=generator)
    return torch.cat([prefix, prefix.gather(1, i[:, None])], 1)


def prefixes(d: int, length: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows ``start:stop`` of every sequence of ``length`` distinct tokens of ``[0, d)``, in lexicographic order.

    Row ``r`` is decoded from its mixed-radix digits (radices ``d, d-1, ...``): no Python-level loop over rows.
    ``[rows, length]``
    """
    total = math.perm(d, length)
    stop = total if stop is None else min(stop, total)
    index = torch.arange(start, stop, dtype=torch.int64)
    radices = [d - j for j in range(length)]
    digits = []
    for j in range(length):
        below = math.prod(radices[j + 1:])
        digits.append((index // below) % radices[j])
    # digit j picks the digits[j]-th token not yet used
    out = torch.empty(len(index), length, dtype=torch.int64)
    used = torch.zeros(len(index), d, dtype=torch.bool)
    for j in range(length):
        free_rank = (~used).cumsum(1) - 1  # rank of each token among the unused ones
        pick = ((free_rank == digits[j][:, None]) & ~used).int().argmax(1)
        out[:, j] = pick
        used[torch.arange(len(index)), pick] = True
    return out


def all_inputs(d: int, n: int) -> torch.Tensor:
    """Every input, ``[count_inputs(d, n), n]`` (small tasks only)."""
    p = prefixes(d, n - 1)
    return torch.cat([torch.cat([p, p[:, i: i + 1]], 1) for i in range(n - 2)], 0)


def last_logits(model: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the last position, from a model's canonical weights (differentiable), biases included.

    Equal to ``model(tokens)[:, -1]`` for the models :func:`check_model` accepts, computing the second
    layer for the last query only.  ``[batch, n] -> [batch, d]``
    """
    n = tokens.shape[1]
    residual = model.W_E[tokens] + model.W_pos[:n]  # [b, n, D]

    def attn(layer, leaf):
        value = model[f"blocks.{layer}.attn.{leaf}"]
        return value if leaf == "b_O" else value[0]

    q = residual @ attn(0, "W_Q") + attn(0, "b_Q")
    k = residual @ attn(0, "W_K") + attn(0, "b_K")
    v = residual @ attn(0, "W_V") + attn(0, "b_V")
    scores = torch.einsum("bqh,bkh->bqk", q, k) / model.attn_scale[0]
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
    residual = residual + torch.einsum("bqk,bkh->bqh", pattern, v) @ attn(0, "W_O") + attn(0, "b_O")
    q1 = residual[:, -1] @ attn(1, "W_Q") + attn(1, "b_Q")
    k1 = residual @ attn(1, "W_K") + attn(1, "b_K")
    v1 = residual @ attn(1, "W_V") + attn(1, "b_V")
    pattern1 = (torch.einsum("bh,bkh->bk", q1, k1) / model.attn_scale[1]).softmax(-1)
    final = residual[:, -1] + torch.einsum("bk,bkh->bh", pattern1, v1) @ attn(1, "W_O") + attn(1, "b_O")
    return final @ model.W_U + model.b_U


@attrs.frozen
class Tables:
    """The model as tables over (token, position), each an :class:`Interval` enclosing its exact value.

    With ``e(t, j) = W_E[t] + W_pos[j]`` and ``o(t, k) = (e(t,k) W_V0 + b_V0) W_O0`` (what layer 0 moves from
    key ``k``), the residual at position ``j`` after layer 0 is ``e(x_j, j) + b_O0 + Σ_k a_jk o(x_k, k)``, a
    convex combination, so everything layer 1 reads from it is the same combination of per-(token,
    position) rows:

    ``S0 [d, n, d, n]``  layer-0 score of query (t, j) on key (t', k) (scale applied; not causally masked)
    ``EQ [d, n, H], OQ [d, n, H]``  layer-1 query (scale applied) from the ``e + b_O0`` part and from ``o``
    ``EK, OK [d, n, H]``  layer-1 key; ``EV, OV [d, n, d]`` layer-1 value read through ``W_O1 W_U``
    ``ED, OD [d, n, d]``  the direct path to the logits (``b_U`` and ``b_O1 W_U`` in ``ED``)

    Then the logits are ``ED_q + Σ c_k OD_k + Σ_j b_j (EV_j + Σ_k a_jk OV_k)``, with the query row's
    layer-0 attention ``c`` and layer-1 attention ``b = softmax_j((EQ_q + Σ c OQ)·(EK_j + Σ a_j OK))``.
    """

    S0: Interval
    EQ: Interval
    OQ: Interval
    EK: Interval
    OK: Interval
    EV: Interval
    OV: Interval
    ED: Interval
    OD: Interval

    @property
    def d(self) -> int:
        return self.S0.shape[0]

    @property
    def n(self) -> int:
        return self.S0.shape[1]


def tables(model, certified: bool = True) -> Tables:
    """The :class:`Tables` of a checked model, by certified products of its exact weights.  ``O(d n D^2)``"""
    check_model(model)
    w = attention_only_weights(model)
    L0, L1 = w.layers
    d, n, D = w.d_vocab, w.n_ctx, w.W_E.shape[1]

    def rows(x):  # [d, n, D] -> [d*n, D]
        return x.reshape(d * n, -1)

    def back(x):
        return x.reshape(d, n, -1)

    e = Interval.exact(rows(w.W_E[:, None, :].expand(d, n, D)), certified) + rows(w.W_pos[None].expand(d, n, D))
    q0 = (matmul(e, L0.W_Q) + L0.b_Q) / L0.attn_scale
    k0 = matmul(e, L0.W_K) + L0.b_K
    S0 = matmul(q0, k0.T).reshape(d, n, d, n)
    o = matmul(matmul(e, L0.W_V) + L0.b_V, L0.W_O)
    e1 = e + L0.b_O
    OVU = matmul(Interval.exact(L1.W_O, certified), w.W_U)
    return Tables(
        S0=S0,
        EQ=back((matmul(e1, L1.W_Q) + L1.b_Q) / L1.attn_scale), OQ=back(matmul(o, L1.W_Q) / L1.attn_scale),
        EK=back(matmul(e1, L1.W_K) + L1.b_K), OK=back(matmul(o, L1.W_K)),
        EV=back(matmul(matmul(e1, L1.W_V) + L1.b_V, OVU)), OV=back(matmul(matmul(o, L1.W_V), OVU)),
        ED=back(matmul(e1, w.W_U) + (matmul(Interval.exact(L1.b_O[None], certified), w.W_U) + w.b_U)), OD=back(matmul(o, w.W_U)),
    )


def unexplained_dimension_brute_force(model) -> int:
    """Brute force explains nothing: every input's d logits."""
    return count_inputs(model.cfg.d_vocab, model.cfg.n_ctx) * model.cfg.d_vocab
