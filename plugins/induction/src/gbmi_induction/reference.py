"""The shipped reference models: each preset's default config, seed 0, trained once here.

They live in ``reference/`` as ``.npz`` model files (weights plus a JSON header with the config, its hash,
the weights' hash and the training metrics) that the store imports, so demos and tests need no training.
Regenerate them with ``python -m gbmi_induction.reference [OUTPUT_DIR]``.
"""

from __future__ import annotations

import pathlib

from gbmi_core.models import ShippedModels

from . import TASK
from .config import PRESETS, SHIPPED_PRESETS, InductionConfig

SHIPPED = ShippedModels(TASK, pathlib.Path(__file__).parent / "reference",
                        {f"{preset.replace('-', '_')}_seed_0.npz": InductionConfig(**overrides)
                         for preset, overrides in PRESETS.items() if preset in SHIPPED_PRESETS})


def load_reference_model(name: str = "induction_6_seed_0.npz"):
    """A shipped model as a TransformerLens model of the installed version (checked against the hashes in its header)."""
    from .plugin import task_spec

    return SHIPPED.load(task_spec(), name)


if __name__ == "__main__":
    from .train import train

    SHIPPED.main(train)
