"""Training a modular-arithmetic model: full-batch AdamW on a fixed split, until it groks and a while after.

Deterministic for a config on CPU: the split comes from a generator seeded by ``seed``, the model from gbmi's
initialisation, and the loop runs on one torch thread through the canonical weights, so TransformerLens
3.x and 4.x train the same weights bit for bit.
"""

from __future__ import annotations

import time

import torch

from gbmi_core import TrainedModel, lens
from gbmi_core.progress import progress as reporter
from gbmi_core.training import TRAIN_STREAM, generator

from .config import ModularConfig
from .model import answer, build_model, frozen, last_logits, pairs, tokens_of


def split(config: ModularConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held out)`` pairs ``[k, 2]``: a random ``train_fraction`` of all ``p^2`` pairs and the rest."""
    ab = pairs(config.p)
    order = torch.randperm(len(ab), generator=generator(config.seed, TRAIN_STREAM))
    k = max(1, min(len(ab) - 1, round(config.train_fraction * len(ab))))
    return ab[order[:k]], ab[order[k:]]


def train(config: ModularConfig, progress: bool = True, operation: str = "add") -> TrainedModel:
    """Train ``config``'s model from scratch on ``operation``'s labels (:func:`.model.label`); stop
    ``after_grok`` steps after every held-out pair is first right (checked every ``eval_every`` steps), or
    after ``steps``.  Metrics: losses, accuracies, the step it grokked at, seconds."""
    start = time.perf_counter()
    model = build_model(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arch = lens.architecture(model)
        state = {name: value.clone() for name, value in lens.canonical_state(model).items()}
        # every parameter but the frozen attention of "uniform" (decided here, not by what the installed
        # TransformerLens lets train: 4.x keeps b_U as a buffer)
        trainable = [state[name].requires_grad_() for name in lens.parameter_names(arch) if name not in frozen(config)]
        weights = lens.Weights(state, arch)
        train_ab, test_ab = split(config)
        x, y = tokens_of(train_ab, config.p, config.eq_token), answer(train_ab, config.p, operation)
        tx, ty = tokens_of(test_ab, config.p, config.eq_token), answer(test_ab, config.p, operation)
        optimiser = torch.optim.AdamW(trainable, lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        bar = reporter(config.steps, f"training modular {operation} p={config.p} seed {config.seed}", "step",
                       enabled=progress)
        loss, grokked, accuracy, step = torch.tensor(float("nan")), None, 0.0, 0
        for step in range(1, config.steps + 1):
            loss = torch.nn.functional.cross_entropy(last_logits(weights, x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bar.update(1)
            if step % config.eval_every == 0:
                with torch.no_grad():
                    accuracy = float((last_logits(weights, tx).argmax(-1) == ty).float().mean())
                bar.set_postfix_str(f"loss={loss.item():.4f}, held-out acc={accuracy:.4f}")
                if accuracy == 1.0 and grokked is None:
                    grokked = step
            if grokked is not None and step >= grokked + config.after_grok:
                break
        bar.close()
        with torch.no_grad():
            test_loss = float(torch.nn.functional.cross_entropy(last_logits(weights, tx), ty))
            accuracy = float((last_logits(weights, tx).argmax(-1) == ty).float().mean())
            train_accuracy = float((last_logits(weights, x).argmax(-1) == y).float().mean())
        lens.load_state(model, {name: value.detach() for name, value in state.items()})
    finally:
        torch.set_num_threads(threads)
    metrics = {"final_train_loss": float(loss.item()), "train_accuracy": train_accuracy, "eval_loss": test_loss,
               "eval_accuracy": accuracy, "eval_samples": len(test_ab), "steps": step, "grokked_at": grokked,
               "train_seconds": round(time.perf_counter() - start, 3)}
    return TrainedModel(model, metrics)
