import functools
import os
import subprocess
import sys

import pytest
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
