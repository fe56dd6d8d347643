"""Bundles for the independent checker's tests, made by the prover (the tests may use both; the checker may not)."""

import pathlib

import numpy as np
import pytest
import torch

import gbmi_core
from gbmi_core import lens
from gbmi_core.bundle import write_bundle


@pytest.fixture(scope="session")
def registry():
    return gbmi_core.get_registry()


def max_of_k_model(V, K, seed=0, kind="random", d_model=8):
    """Small Max-of-K models where rounding and ties bite: ``random``, ``sharp`` (scores ~1e3), ``tied``
    (two equal unembedding columns), ``hidden`` (two outputs tie though their columns differ), ``huge``
    (embeddings and unembeddings of 1e8), ``biased`` (every bias nonzero), ``trained`` (a few hundred steps)."""
    from gbmi_max_of_k.config import MaxOfKConfig
    from gbmi_max_of_k.model import build_model

    config = MaxOfKConfig(V=V, K=K, d_model=d_model, seed=seed, steps=300)
    if kind == "trained":
        from gbmi_max_of_k.train import train

        return train(config, progress=False).model, config
    model = build_model(config)
    with lens.editing(model) as w:
        W_E, W_pos, W_U = w["embed.W_E"], w["pos_embed.W_pos"], w["unembed.W_U"]
        if kind == "sharp":
            w["blocks.0.attn.W_Q"].mul_(30.0)
            w["blocks.0.attn.W_K"].mul_(30.0)
        if kind == "tied":
            W_U[:, 1].copy_(W_U[:, 2])
        if kind == "hidden":
            W_E[:, -1] = 0
            W_pos[:, -1] = 0
            w["blocks.0.attn.W_O"][0, :, -1] = 0
            W_U[:, 3] = W_U[:, 2]
            W_U[-1, 3] += 1.0
        if kind == "huge":
            W_E.mul_(1e8)
            W_U.mul_(1e8)
        if kind == "biased":
            g = torch.Generator().manual_seed(seed)
            for name, value in w.items():
                if name.rsplit(".", 1)[1].startswith("b_"):
                    value.copy_(torch.randn(value.shape, generator=g))
    return model, config


def induction_model(d, n, seed=0, kind="random"):
    """Small induction models: ``random``, ``sharp``, ``biased`` (every bias nonzero), ``trained``."""
    from gbmi_induction.config import InductionConfig
    from gbmi_induction.model import build_model

    config = InductionConfig(d=d, n=n, d_model=8, d_head=4, seed=seed, steps=800, eval_samples=256)
    if kind == "trained":
        from gbmi_induction.train import train

        return train(config, progress=False).model, config
    model = build_model(config)
    generator = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:
        for name in lens.parameter_names(lens.architecture(model)):
            parameter = w[name]
            if name.split(".")[-1].startswith("b_") and kind != "biased":
                continue
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (3.0 if kind == "sharp" else 1.0)
                            / max(1, parameter.shape[-2] if parameter.dim() >= 2 else 4) ** 0.5)
    return model, config


def bundle(registry, directory, task, strategy, model, config) -> pathlib.Path:
    """Prove ``strategy`` on ``model`` and write its bundle."""
    strategy = registry.strategy(task, strategy)
    certificate = strategy.search(model)
    result = strategy.prove(model, certificate=certificate)
    return write_bundle(directory, strategy, model, config, certificate, result)


def claimed(path) -> int:
    import json

    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["__bundle__"]))["claimed"]["correct_count"]


def modular_model(p, kind="random", seed=0, **fields):
    """Small modular-addition models: ``random`` (every weight and bias, ReLU MLP), ``ln-gelu`` (LayerNorm and
    GELU), ``lnpre-gelu-new`` (two layers), ``pizza`` (no '=' token, uniform attention), ``trained``."""
    from gbmi_modular_arithmetic.config import ModularConfig
    from gbmi_modular_arithmetic.model import build_model

    config = ModularConfig(p=p, d_model=16, n_heads=2, d_head=8, d_mlp=24, seed=seed, steps=200, lr=3e-3,
                           train_fraction=0.7, eq_token=kind != "pizza",
                           attention="uniform" if kind == "pizza" else "learned")
    if kind == "trained":
        from gbmi_modular_arithmetic.train import train

        return train(config, progress=False).model, config
    if kind in ("ln-gelu", "lnpre-gelu-new"):
        arch = {"n_layers": 1 if kind == "ln-gelu" else 2, "n_heads": 2, "d_model": 16, "d_head": 8, "d_mlp": 24,
                "d_vocab": p + 1, "d_vocab_out": p, "n_ctx": 3, "attn_only": False,
                "act_fn": "gelu" if kind == "ln-gelu" else "gelu_new",
                "normalization_type": "LN" if kind == "ln-gelu" else "LNPre", "positional_embedding_type": "standard"}
        model = lens.build(arch, seed=seed)
    else:
        model = build_model(config)
    g = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:
        for name, value in w.items():
            if value.dtype.is_floating_point and not name.endswith("IGNORE") and value.requires_grad is not None:
                if kind == "pizza" and ("W_Q" in name or "W_K" in name or "b_Q" in name or "b_K" in name):
                    continue
                value.add_(torch.randn(value.shape, generator=g) * 0.3)
    return model, config
