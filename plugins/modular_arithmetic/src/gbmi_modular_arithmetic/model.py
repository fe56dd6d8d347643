"""The modular-arithmetic model, its inputs and labels.

Any TransformerLens model (3.x or 4.x) the core's certified evaluator takes (:mod:`gbmi_core.evaluate`:
any depth and width, MLPs, LayerNorm, biases) is accepted when its vocabulary and context fit the task:
``d_vocab = p + 1`` and ``n_ctx = 3`` with the ``=`` token, ``d_vocab = p`` and ``n_ctx = 2`` without;
``d_vocab_out = p``.
"""

from __future__ import annotations

import torch

from gbmi_core import ModelRefused, lens
from gbmi_core.evaluate import Network

from .config import ModularConfig


def architecture(config: ModularConfig) -> dict:
    return {"n_layers": 1, "n_heads": config.n_heads, "d_model": config.d_model, "d_head": config.d_head,
            "d_mlp": config.d_mlp, "d_vocab": config.d_vocab, "d_vocab_out": config.p, "n_ctx": config.n_ctx,
            "attn_only": False, "act_fn": config.act_fn, "normalization_type": None,
            "positional_embedding_type": "standard"}


def build_model(config: ModularConfig):
    """A fresh model for ``config`` (gbmi's initialisation for its seed); with ``attention="uniform"`` the
    queries and keys are 0 and frozen, so every head averages the positions."""
    model = lens.build(architecture(config), seed=config.seed)
    names = frozen(config)
    if names:
        with lens.editing(model) as w:
            for name in names:
                w[name].zero_()
        lens.freeze(model, names)
    return model


def frozen(config: ModularConfig) -> list[str]:
    """The parameters training leaves alone: the queries and keys of uniform attention (held at 0)."""
    return [f"blocks.0.attn.{w}" for w in ("W_Q", "W_K", "b_Q", "b_K")] if config.attention == "uniform" else []


def check_model(model) -> None:
    """Raise :class:`ModelRefused` unless the certified evaluator takes ``model`` and its sizes fit the task."""
    net = Network.of(model)
    a = net.arch
    if a["n_ctx"] not in (2, 3) or a["d_vocab_out"] < 2:
        raise ModelRefused(f"model refused by modular arithmetic: its context is {a['n_ctx']} positions "
                           f"(the task reads 'a b =' or 'a b')")
    p = a["d_vocab_out"]
    if a["d_vocab"] != p + (a["n_ctx"] == 3):
        raise ModelRefused(f"model refused by modular arithmetic: {a['d_vocab']} input tokens for {p} outputs "
                           f"(need p + 1 with the '=' token, p without)")


def config_from_model(model) -> ModularConfig:
    a = Network.of(model).arch
    return ModularConfig(p=a["d_vocab_out"], eq_token=a["n_ctx"] == 3, d_model=a["d_model"], n_heads=a["n_heads"],
                         d_head=a["d_head"], d_mlp=a["d_mlp"],
                         act_fn=a["act_fn"] if a["act_fn"] in ("relu", "gelu", "gelu_new", "gelu_fast") else "relu")


def pairs(p: int) -> torch.Tensor:
    """Every ``(a, b)``, ``a`` major.  ``[p^2, 2]``"""
    a = torch.arange(p).repeat_interleave(p)
    return torch.stack([a, torch.arange(p).repeat(p)], 1)


def tokens_of(ab: torch.Tensor, p: int, eq_token: bool) -> torch.Tensor:
    """``[b, 2] -> [b, 3]`` (``a b =``, ``=`` being token ``p``) or ``[b, 2]`` as it is."""
    return torch.cat([ab, torch.full_like(ab[:, :1], p)], 1) if eq_token else ab


def label(a: torch.Tensor, b: torch.Tensor, p: int, operation: str = "add") -> torch.Tensor:
    """``(a + b) mod p``, or ``(a - b) mod p`` for ``operation="subtract"`` (always in ``[0, p)``)."""
    if operation == "add":
        return (a + b) % p
    if operation == "subtract":
        return (a - b) % p
    raise ValueError(f"unknown operation {operation!r} (add or subtract)")


def answer(ab: torch.Tensor, p: int, operation: str = "add") -> torch.Tensor:
    """The label of each pair.  ``[b, 2] -> [b]``"""
    return label(ab[:, 0], ab[:, 1], p, operation)


def batches(model, batch: int = 4096, operation: str = "add"):
    """Every input of ``model``'s task once, as ``(tokens, labels)`` batches (the generic brute force's input)."""
    a = Network.of(model).arch
    p, eq = a["d_vocab_out"], a["n_ctx"] == 3
    ab = pairs(p)
    for start in range(0, len(ab), batch):
        chunk = ab[start: start + batch]
        yield tokens_of(chunk, p, eq), answer(chunk, p, operation)


def count(model) -> int:
    return Network.of(model).arch["d_vocab_out"] ** 2


def last_logits(w: lens.Weights, tokens: torch.Tensor) -> torch.Tensor:
    """The logits at the last position from canonical weights (differentiable): one layer of attention and an
    MLP, no LayerNorm.  Equal to ``model(tokens)[:, -1]`` for the models :func:`build_model` makes.
    ``[b, n] -> [b, p]``"""
    x = w["embed.W_E"][tokens] + w["pos_embed.W_pos"][: tokens.shape[1]]  # [b, n, D]
    p = "blocks.0.attn."
    q = torch.einsum("bd,hdk->bhk", x[:, -1], w[p + "W_Q"]) + w[p + "b_Q"]
    k = torch.einsum("bnd,hdk->bhnk", x, w[p + "W_K"]) + w[p + "b_K"][:, None]
    v = torch.einsum("bnd,hdk->bhnk", x, w[p + "W_V"]) + w[p + "b_V"][:, None]
    pattern = (torch.einsum("bhk,bhnk->bhn", q, k) / w.attn_scale[0]).softmax(-1)
    r = x[:, -1] + torch.einsum("bhk,hkd->bd", torch.einsum("bhn,bhnk->bhk", pattern, v), w[p + "W_O"]) + w[p + "b_O"]
    pre = r @ w["blocks.0.mlp.W_in"] + w["blocks.0.mlp.b_in"]
    act = w.arch["act_fn"]
    post = torch.relu(pre) if act == "relu" else torch.nn.functional.gelu(pre, approximate="none" if act == "gelu" else "tanh")
    r = r + post @ w["blocks.0.mlp.W_out"] + w["blocks.0.mlp.b_out"]
    return r @ w["unembed.W_U"] + w["unembed.b_U"]
