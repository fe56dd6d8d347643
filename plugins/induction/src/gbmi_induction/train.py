"""Training an induction model: AdamW on fresh uniform samples, deterministic for a seed on CPU."""

from __future__ import annotations

import time

import torch

from gbmi_core import TrainedModel

from .config import InductionConfig
from .model import build_model, label, last_logits, sample

# Distinct streams for training and evaluation data, derived from the config's seed.
_TRAIN_STREAM, _EVAL_STREAM = 1, 2


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@torch.no_grad()
def evaluate(model, tokens: torch.Tensor) -> tuple[float, float]:
    logits = last_logits(model, tokens)
    target = label(tokens)
    loss = torch.nn.functional.cross_entropy(logits, target).item()
    accuracy = (logits.argmax(-1) == target).double().mean().item()
    return loss, accuracy


def train(config: InductionConfig, progress: bool = True) -> TrainedModel:
    """Train ``config``'s model from scratch and return it with its metrics.

    The learning rate decays linearly to a tenth over the run, which settles the margins the proofs need.
    """
    from gbmi_core.progress import progress as reporter

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is fast, and sums are ordered the same everywhere
    try:
        model = build_model(config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(trainable, lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: 1.0 - 0.9 * step / max(1, config.steps))
        data = _generator(config.seed, _TRAIN_STREAM)
        eval_tokens = sample(config.d, config.n, config.eval_samples, _generator(config.seed, _EVAL_STREAM))
        bar = reporter(config.steps, f"training induction-{config.n} seed {config.seed}", "step", enabled=progress)
        loss = torch.tensor(float("nan"))
        for step in range(config.steps):
            tokens = sample(config.d, config.n, config.batch_size, data)
            loss = torch.nn.functional.cross_entropy(last_logits(model, tokens), label(tokens))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if progress and (step % 200 == 0 or step == config.steps - 1):
                bar.set_postfix_str(f"loss={loss.item():.4f}")
            bar.update(1)
        bar.close()
        eval_loss, eval_accuracy = evaluate(model, eval_tokens)
    finally:
        torch.set_num_threads(threads)
    metrics = {
        "final_train_loss": float(loss.item()),
        "eval_loss": eval_loss,
        "eval_accuracy": eval_accuracy,
        "eval_samples": config.eval_samples,
        "steps": config.steps,
        "train_seconds": round(time.perf_counter() - start, 3),
    }
    return TrainedModel(model, metrics)
