import functools
import os
import subprocess
import sys

import pytest
import torch

from gbmi_core import lens
from gbmi_induction.config import InductionConfig
from gbmi_induction.model import build_model

GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")


def gbmi(*args, **env):
    """Run the ``gbmi`` CLI as a user would: none of this shell's ``GBMI_*`` settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    return subprocess.run([GBMI, *args], capture_output=True, text=True, env={**base, **env}, timeout=600)


@pytest.fixture(scope="module")
def registry():
    import gbmi_core

    return gbmi_core.get_registry()


@pytest.fixture(scope="session")
def reference_model():
    from gbmi_induction.reference import load_reference_model

    return load_reference_model()


def random_model(d, n, seed=0, scale=1.0, qk_scale=1.0, d_model=8, d_head=4, biases=False):
    """An untrained model with normal weights times ``scale``, attention scores sharpened by ``qk_scale``."""
    model = build_model(InductionConfig(d=d, n=n, d_model=d_model, d_head=d_head, seed=seed))
    generator = torch.Generator().manual_seed(seed)
    with lens.editing(model) as w:
        for name in lens.parameter_names(lens.architecture(model)):
            parameter = w[name]
            if "b_" in name.split(".")[-1] and not biases:
                continue
            fan_in = parameter.shape[-2] if parameter.dim() >= 2 else parameter.shape[-1]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale / fan_in**0.5)
        for layer in (0, 1):
            w[f"blocks.{layer}.attn.W_Q"].mul_(qk_scale)
            w[f"blocks.{layer}.attn.W_K"].mul_(qk_scale)
    return model


def plain_model(seed=0, **fields):
    """A fresh model built by plain code of the installed TransformerLens, as a user would: a
    ``HookedTransformer`` under 3.x, ``TransformerBridge.boot_native`` under 4.x (its own initialisation)."""
    fields = {"attn_only": True, "normalization_type": None, "act_fn": None, "seed": seed, **fields}
    if lens.version()[0] < 4:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        return HookedTransformer(HookedTransformerConfig(device="cpu", **fields))
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(fields)


def save_plain(model, path):
    """``torch.save(model.state_dict())`` as a user would, with the config beside it under 4.x (a bridge's
    state dict does not say its head layout)."""
    import json

    torch.save(model.state_dict(), path)
    if lens.version()[0] >= 4:
        with open(f"{path}.json", "w") as handle:
            json.dump(model.cfg.to_dict(), handle, default=str)
    return path


@functools.lru_cache(maxsize=None)
def _trained_weights(d, n, seed, steps, recipe):
    from gbmi_induction.train import train

    config = InductionConfig(d=d, n=n, d_model=16, d_head=8, seed=seed, steps=steps, eval_samples=512, recipe=recipe,
                             **({"lr": 3e-3} if recipe == "peer" else {}))
    return lens.canonical_state(train(config, progress=False).model)


def trained_model(d, n, seed=0, steps=1500, recipe="gbmi"):
    """A small model trained by our recipe or the peer's (once per process and configuration)."""
    model = build_model(InductionConfig(d=d, n=n, d_model=16, d_head=8, seed=seed))
    return lens.load_state(model, _trained_weights(d, n, seed, steps, recipe))
