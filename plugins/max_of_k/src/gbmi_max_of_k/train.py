"""Training a Max-of-K model: AdamW on fresh uniform samples, deterministic for a seed on CPU."""

from __future__ import annotations

import functools

import torch

from gbmi_core import TrainedModel
from gbmi_core.attention import frozen_zero_biases
from gbmi_core.training import train_on_samples

from .config import MaxOfKConfig
from .model import build_model, label, last_logits


def sample(config: MaxOfKConfig, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` sequences of K i.i.d. uniform tokens from [0, V).  ``[count, K]``"""
    return torch.randint(0, config.V, (count, config.K), generator=generator)


def train(config: MaxOfKConfig, progress: bool = True) -> TrainedModel:
    """Train ``config``'s model from scratch and return it with its metrics."""
    model = build_model(config)
    forward = functools.partial(last_logits, biases=False) if frozen_zero_biases(model) else last_logits
    return train_on_samples(
        model, sample=lambda count, generator: sample(config, count, generator), label=label,
        forward=forward, seed=config.seed, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
        betas=tuple(config.betas), weight_decay=config.weight_decay, eval_samples=config.eval_samples,
        what=f"training max-of-{config.K} seed {config.seed}", progress=progress, evaluate_every=100)
