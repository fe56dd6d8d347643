"""The shipped reference model: the default Max-of-4 config, seed 123, trained once here.

It lives in ``reference/`` as a ``.npz`` model file (weights plus a JSON header with the config, its
hash, the weights' hash and the training metrics) that the store imports, so demos and tests need no
training.  Regenerate it with ``python -m gbmi_max_of_k.reference OUTPUT_DIR``.
"""

from __future__ import annotations

import pathlib

from gbmi_core.models import ShippedModels

from . import TASK
from .config import MaxOfKConfig

SHIPPED = ShippedModels(TASK, pathlib.Path(__file__).parent / "reference",
                        {"max_of_4_seed_123.npz": MaxOfKConfig(seed=123)})
REFERENCE_DIR = SHIPPED.directory


def load_reference_model(name: str = "max_of_4_seed_123.npz"):
    """The shipped model as a TransformerLens model of the installed version (checked against the hashes in its header)."""
    from .plugin import task_spec

    return SHIPPED.load(task_spec(), name)


if __name__ == "__main__":
    from .train import train

    SHIPPED.main(train)
