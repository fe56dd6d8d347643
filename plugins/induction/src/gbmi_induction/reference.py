"""The shipped reference models: the presets' default configs, seed 0, trained once here.

They live in ``reference/`` as ``.npz`` model files (weights plus a JSON header with the config, its hash,
the weights' hash and the training metrics) that the store imports, so demos and tests need no training.
Regenerate them with ``python -m gbmi_induction.reference [OUTPUT_DIR]``.
"""

from __future__ import annotations

import pathlib

from .config import PRESETS, InductionConfig

REFERENCE_DIR = pathlib.Path(__file__).parent / "reference"
REFERENCE_CONFIGS = {f"{preset.replace('-', '_')}_seed_0.npz": InductionConfig(**overrides)
                     for preset, overrides in PRESETS.items()}


def reference_models() -> dict[str, pathlib.Path]:
    """Config content hash -> shipped model file."""
    from gbmi_core.config import content_hash

    return {content_hash(config): REFERENCE_DIR / name for name, config in REFERENCE_CONFIGS.items()
            if (REFERENCE_DIR / name).exists()}


def load_reference_model(name: str = "induction_6_seed_0.npz"):
    """A shipped model as a HookedTransformer (checked against the hashes in its header)."""
    from gbmi_core.models import model_from_entry, read_model_file

    from .plugin import task_spec

    arrays, attributes = read_model_file(REFERENCE_DIR / name)
    model, _ = model_from_entry(task_spec(), arrays, attributes, name)
    return model


def main(argv=None) -> None:
    import argparse

    from gbmi_core.models import export_model_file

    from . import TASK
    from .train import train

    parser = argparse.ArgumentParser(description="Train and write the shipped reference models.")
    parser.add_argument("output", type=pathlib.Path, nargs="?", default=REFERENCE_DIR)
    args = parser.parse_args(argv)
    for name, config in REFERENCE_CONFIGS.items():
        trained = train(config)
        path = export_model_file(args.output / name, TASK, config, trained.model, trained.metrics)
        print(f"wrote {path}: {trained.metrics}")


if __name__ == "__main__":
    main()
