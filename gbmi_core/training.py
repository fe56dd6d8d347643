"""Training on fresh samples: the loop both tasks' trainers share, deterministic for a seed on CPU.

``train_on_samples`` draws a fresh batch every step from a generator derived from the seed, takes one AdamW
step on the cross-entropy of ``forward(weights, tokens)`` against ``label(tokens)``, and finally evaluates on
a fixed sample drawn from a second stream.  A TransformerLens model is trained through its canonical
weights (:class:`gbmi_core.lens.Weights`, leaf tensors of their own, written back at the end), so the
same config and seed train the same weights bit for bit under TransformerLens 3.x and 4.x; any other
torch module is handed to ``forward`` as it is.  It runs with one torch thread (small matmuls are faster so, and
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
    """``(mean cross-entropy, accuracy)`` of ``forward(weights, tokens)`` against ``label(tokens)``, where
    ``weights`` is a TransformerLens model's :class:`~gbmi_core.lens.Weights` (or any other module itself)."""
    import torch

    from . import lens

    if lens.kind(model) is not None:
        model = lens.Weights.of(model)
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

    ``forward(weights, tokens)`` gives the logits to train; for a TransformerLens model ``weights`` is a
    :class:`~gbmi_core.lens.Weights` of trainable leaf tensors in the canonical layout.

    ``sample(count, generator)`` draws inputs; the learning rate falls linearly by the fraction ``decay`` over
    the run; every ``evaluate_every`` steps (when showing progress) the evaluation sample is scored."""
    import torch

    from . import lens
    from .progress import progress as reporter

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if lens.kind(model) is not None:
            arch, names = lens.architecture(model), lens.trainable(model)
            state = {name: value.clone() for name, value in lens.canonical_state(model).items()}
            trainable = [name for name in lens.parameter_names(arch) if name in names]
            optimiser = _FlatAdamW(state, trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
            weights = lens.Weights(state, arch)
        else:
            trainable, weights, state = [p for p in model.parameters() if p.requires_grad], model, None
            optimiser = torch.optim.AdamW(trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        data = generator(seed, TRAIN_STREAM)
        eval_tokens = sample(eval_samples, generator(seed, EVAL_STREAM))
        bar = reporter(steps, what, "step", enabled=progress)
        loss = torch.tensor(float("nan"))
        for step in range(steps):
            if decay:  # what torch's LambdaLR sets: the initial rate times the factor, as floats
                for group in optimiser.param_groups:
                    group["lr"] = lr * (1.0 - decay * step / max(1, steps))
            tokens = sample(batch_size, data)
            loss = torch.nn.functional.cross_entropy(forward(weights, tokens), label(tokens))
            if isinstance(optimiser, _FlatAdamW):
                optimiser.step(loss)
            else:
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            if progress and evaluate_every and (step % evaluate_every == 0 or step == steps - 1):
                _, accuracy = evaluate(weights, eval_tokens, forward, label)
                bar.set_postfix_str(f"loss={loss.item():.4f}, acc={accuracy:.4f}")
            bar.update(1)
        bar.close()
        eval_loss, eval_accuracy = evaluate(weights, eval_tokens, forward, label)
        if state is not None:
            lens.load_state(model, {name: value.detach() for name, value in state.items()})
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


class _FlatAdamW:
    """AdamW over one flat tensor whose slices are the trainable weights (each a leaf of its own for
    autograd): one update of eight ops per step instead of eight per weight tensor.  AdamW is elementwise
    and every weight shares its hyperparameters and step count, so every weight gets the same floats as under
    torch's AdamW with one parameter per tensor.

    The update is torch's own single-tensor AdamW (``torch.optim.adam._single_tensor_adam`` with decoupled
    weight decay, no AMSGrad), op for op and with the same Python floats, written out here: torch's
    optimiser machinery (hooks, profiler records, state lookups) costs several times the update itself on
    these small models.  ``tests/test_training.py`` pins it bit for bit against ``torch.optim.AdamW``.  The
    first step that leaves some weight without a gradient (torch's AdamW skips such a tensor, its step count
    too) hands the run, state included, to a per-tensor ``torch.optim.AdamW``, which carries on exactly as if
    it had been used from the start."""

    def __init__(self, state: dict, names: list[str], *, lr: float, betas: tuple[float, float],
                 weight_decay: float, eps: float = 1e-8):
        import torch

        self.shapes = [state[name].shape for name in names]
        self.sizes = [state[name].numel() for name in names]
        self.flat = torch.cat([state[name].reshape(-1) for name in names]) if names else torch.zeros(0)
        self.leaves = [piece.view(shape).requires_grad_()
                       for piece, shape in zip(self.flat.split(self.sizes), self.shapes)]
        for name, leaf in zip(names, self.leaves):
            state[name] = leaf
        self.hyper = {"betas": tuple(betas), "weight_decay": weight_decay, "eps": eps}
        self.param_groups = [{"lr": lr}]  # the loop's learning-rate schedule writes here, as into torch's
        self.steps = 0
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.per_tensor = None  # torch's AdamW, once some step left a weight without a gradient

    def step(self, loss) -> None:
        """Backpropagate ``loss`` (``autograd.grad``: the gradients, with no accumulation into ``.grad``) and
        take one AdamW step."""
        import torch

        if self.per_tensor is not None:
            self.per_tensor.zero_grad(set_to_none=True)
            loss.backward()
            self.per_tensor.step()
            return
        grads = torch.autograd.grad(loss, self.leaves, allow_unused=True)
        if any(grad is None for grad in grads):
            for leaf, grad in zip(self.leaves, grads):
                leaf.grad = grad
            self._hand_over()
            self.per_tensor.step()
            return
        grad = torch.cat([grad.reshape(-1) for grad in grads])
        lr, (beta1, beta2) = self.param_groups[0]["lr"], self.hyper["betas"]
        weight_decay, eps = self.hyper["weight_decay"], self.hyper["eps"]
        self.steps += 1
        step = float(self.steps)  # torch counts in a float32 tensor and reads it back: exact integers
        with torch.no_grad():
            if weight_decay != 0:
                self.flat.mul_(1 - lr * weight_decay)
            self.exp_avg.lerp_(grad, 1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (self.exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
            self.flat.addcdiv_(self.exp_avg, denom, value=-step_size)

    def _hand_over(self) -> None:
        """Switch to torch's AdamW with one parameter per weight, each starting from its slice of the flat state."""
        import torch

        per_tensor = torch.optim.AdamW(self.leaves, lr=self.param_groups[0]["lr"], **self.hyper)
        if self.steps:
            moments = {"exp_avg": self.exp_avg.split(self.sizes), "exp_avg_sq": self.exp_avg_sq.split(self.sizes)}
            for i, leaf in enumerate(self.leaves):
                per_tensor.state[leaf] = {"step": torch.tensor(float(self.steps), dtype=torch.float32),
                                          "exp_avg": moments["exp_avg"][i].view(self.shapes[i]).clone(),
                                          "exp_avg_sq": moments["exp_avg_sq"][i].view(self.shapes[i]).clone()}
        self.param_groups = per_tensor.param_groups
        self.per_tensor = per_tensor


__all__ = ["EVAL_STREAM", "TRAIN_STREAM", "evaluate", "generator", "train_on_samples"]
