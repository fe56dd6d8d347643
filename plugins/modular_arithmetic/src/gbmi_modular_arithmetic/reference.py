"""The shipped models: one grokked model per full-size preset (``clock`` and ``pizza``, seed 0), trained once.

They live in ``reference/`` as ``.npz`` model files (weights plus a JSON header with the config, its hash,
the weights' hash and the training metrics, training seconds included), so ``gbmi prove modular-arithmetic
--preset clock`` and the demos train nothing.  Regenerate them with
``python -m gbmi_modular_arithmetic.reference [OUTPUT_DIR] [--only NAME]``; training is deterministic on CPU,
so the result is the same file.
"""

from __future__ import annotations

import pathlib

from gbmi_core.models import ShippedModels

from . import TASK
from .config import PRESETS, ModularConfig

SHIPPED = ShippedModels(TASK, pathlib.Path(__file__).parent / "reference", {
    "clock_seed_0.npz": ModularConfig(**PRESETS["clock"], seed=0),
    "pizza_seed_0.npz": ModularConfig(**PRESETS["pizza"], seed=0),
})


def load_reference_model(name: str):
    """A shipped model as a TransformerLens model of the installed version (checked against its header's hashes)."""
    from .plugin import task_spec

    return SHIPPED.load(task_spec(), name)


if __name__ == "__main__":
    from .train import train

    SHIPPED.main(train)
