"""Training an induction model: AdamW on fresh uniform samples, deterministic for a seed on CPU."""

from __future__ import annotations

from gbmi_core import TrainedModel
from gbmi_core.training import train_on_samples

from .config import InductionConfig
from .model import build_model, label, last_logits, sample


def train(config: InductionConfig, progress: bool = True) -> TrainedModel:
    """Train ``config``'s model from scratch and return it with its metrics.

    AdamW (betas 0.9, 0.98), the learning rate decaying linearly to a tenth over the run, which settles the
    margins the proofs need."""
    return train_on_samples(
        build_model(config), sample=lambda count, generator: sample(config.d, config.n, count, generator),
        label=label, forward=last_logits, seed=config.seed, steps=config.steps, batch_size=config.batch_size,
        lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay, eval_samples=config.eval_samples,
        decay=0.9, what=f"training induction-{config.n} seed {config.seed}", progress=progress,
        evaluate_every=200)
