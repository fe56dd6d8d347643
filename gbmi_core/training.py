"""Training on fresh samples: the loop both tasks' trainers share, deterministic for a seed on CPU.

``train_on_samples`` draws a fresh batch every step from a generator derived from the seed, takes one AdamW
step on the cross-entropy of ``forward(model, tokens)`` against ``label(tokens)``, and finally evaluates on
a fixed sample drawn from a second stream.  It runs with one torch thread (small matmuls are faster so, and
sums are ordered the same on every machine) and restores the caller's setting.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .records import TrainedModel

# Distinct streams for training and evaluation data, derived from the config's seed.
TRAIN_STREAM, EVAL_STREAM = 1, 2


def generator(seed: int, stream: int):
    """The torch generator of one data stream of a seed."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def evaluate(model, tokens, forward: Callable, label: Callable) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``forward(model, tokens)`` against ``label(tokens)``."""
    import torch

    with torch.no_grad():
        logits = forward(model, tokens)
        target = label(tokens)
        loss = torch.nn.functional.cross_entropy(logits, target).item()
        accuracy = (logits.argmax(-1) == target).double().mean().item()
    return loss, accuracy


def train_on_samples(model, *, sample: Callable[[int, Any], Any], label: Callable, forward: Callable, seed: int,
                     steps: int, batch_size: int, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                     weight_decay: float = 0.0, eval_samples: int = 1024, decay: float = 0.0,
                     what: str = "training", progress: bool = True, evaluate_every: int = 0) -> TrainedModel:
    """Train ``model`` (its parameters with ``requires_grad``) and return it with its metrics.

    ``sample(count, generator)`` draws inputs; the learning rate falls linearly by the fraction ``decay`` over
    the run; every ``evaluate_every`` steps (when showing progress) the evaluation sample is scored."""
    import torch

    from .progress import progress as reporter

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        schedule = None
        if decay:
            schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - decay * step / max(1, steps))
        data = generator(seed, TRAIN_STREAM)
        eval_tokens = sample(eval_samples, generator(seed, EVAL_STREAM))
        bar = reporter(steps, what, "step", enabled=progress)
        loss = torch.tensor(float("nan"))
        for step in range(steps):
            tokens = sample(batch_size, data)
            loss = torch.nn.functional.cross_entropy(forward(model, tokens), label(tokens))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            if progress and evaluate_every and (step % evaluate_every == 0 or step == steps - 1):
                _, accuracy = evaluate(model, eval_tokens, forward, label)
                bar.set_postfix_str(f"loss={loss.item():.4f}, acc={accuracy:.4f}")
            bar.update(1)
        bar.close()
        eval_loss, eval_accuracy = evaluate(model, eval_tokens, forward, label)
    finally:
        torch.set_num_threads(threads)
    metrics = {
        "final_train_loss": float(loss.item()),
        "eval_loss": eval_loss,
        "eval_accuracy": eval_accuracy,
        "eval_samples": eval_samples,
        "steps": steps,
        "train_seconds": round(time.perf_counter() - start, 3),
    }
    return TrainedModel(model, metrics)


__all__ = ["EVAL_STREAM", "TRAIN_STREAM", "evaluate", "generator", "train_on_samples"]
