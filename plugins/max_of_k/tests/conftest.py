import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gbmi_core import lens
from gbmi_max_of_k.config import MaxOfKConfig
from gbmi_max_of_k.model import build_model


GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")


def gbmi(*args, **env):
    """Run the ``gbmi`` CLI as a user would: none of this shell's ``GBMI_*`` settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    return subprocess.run([GBMI, *args], capture_output=True, text=True, env={**base, **env}, timeout=300)


@pytest.fixture(scope="module")
def registry():
    import gbmi_core

    return gbmi_core.get_registry()


@pytest.fixture(scope="session")
def reference_model():
    from gbmi_max_of_k.reference import load_reference_model

    return load_reference_model()


def small_model(V, K, d_model=8, seed=0, qk_scale=1.0, scale=1.0):
    """An untrained model with its attention sharpened by ``qk_scale`` and all weights scaled by ``scale``."""
    model = build_model(MaxOfKConfig(V=V, K=K, d_model=d_model, seed=seed))
    with lens.editing(model) as w:
        for name, parameter in w.items():
            if ".W_" in name:
                parameter.mul_(scale)
        w["blocks.0.attn.W_Q"].mul_(qk_scale)
        w["blocks.0.attn.W_K"].mul_(qk_scale)
    return model


@functools.lru_cache(maxsize=None)
def _trained_weights(V, K, seed, steps):
    from gbmi_max_of_k.train import train

    return lens.canonical_state(train(MaxOfKConfig(V=V, K=K, d_model=16, seed=seed, steps=steps), progress=False).model)


def trained_model(V, K, seed=0, steps=300):
    """A small trained model (trained once per process and configuration)."""
    model = build_model(MaxOfKConfig(V=V, K=K, d_model=16, seed=seed))
    return lens.load_state(model, _trained_weights(V, K, seed, steps))


def their_model(d_head=8, seed=0, zero_biases=True, **changes):
    """A Max-of-3-over-10-tokens model written by plain code of the installed TransformerLens, as a user would:
    a ``HookedTransformer`` under 3.x, a ``TransformerBridge.boot_native`` under 4.x; its biases set to 0
    unless ``zero_biases=False`` (then they are what the library's initialisation made, and trainable)."""
    fields = {**dict(n_layers=1, n_heads=1, d_model=16, d_head=d_head, d_vocab=10, d_vocab_out=10, n_ctx=3,
                     attn_only=True, normalization_type=None, act_fn=None, seed=seed), **changes}
    if lens.version()[0] < 4:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        model = HookedTransformer(HookedTransformerConfig(device="cpu", **fields))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if zero_biases and name.rsplit(".", 1)[-1].startswith("b_"):
                    parameter.zero_()
            model.blocks[0].attn.W_K.mul_(3.0)  # make it attend somewhat
    else:
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_native(fields)
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                if zero_biases and name.endswith(".bias"):
                    tensor.zero_()
            model.blocks[0].attn.k.weight.mul_(3.0)
    return model


def save(model, path):
    """Save a state dict as a user of the installed TransformerLens would, with the config beside it under
    4.x (a bridge's state dict does not say its head layout)."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    elif path.endswith(".npz"):
        np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
    else:
        torch.save(model.state_dict(), path)
    if lens.version()[0] >= 4:
        with open(path + ".json", "w") as handle:
            json.dump(model.cfg.to_dict(), handle, default=str)
    return path
