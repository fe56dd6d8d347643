"""Training an induction model, by our recipe or by the public peer's.

``recipe="gbmi"``: AdamW on fresh uniform samples from torch generators, the learning rate decaying
linearly to a tenth, deterministic for a seed on CPU (the core's ``train_on_samples``).

``recipe="peer"``: the recipe of xocelyk/induction-heads-compact-proofs (its ``src/model.py``), so that
users can reproduce the models that proof was built for: one ``numpy.random.default_rng(seed)`` draws the
initialisation (every matrix ``N(0, 1/fan_in)``, in the order ``E, P, Q1, K1, V1, O1, Q2, K2, V2, O2, U``)
and then the data (each row's ``n-1`` distinct tokens by ``rng.choice``, then the match positions; every
500 steps a held-out sample of 2000 that the recipe draws from the same stream), float64 throughout,
Adam (0.9, 0.98, eps 1e-8) at a constant learning rate with decoupled weight decay on every matrix, mean
cross-entropy at the last position, no biases.  The weights are stored in the model's float32.
"""

from __future__ import annotations

import time

import numpy as np

from gbmi_core import TrainedModel
from gbmi_core.training import EVAL_STREAM, evaluate, generator, train_on_samples

from .config import InductionConfig
from .model import build_model, label, last_logits, sample

#: The peer draws a held-out sample of this size from its data stream every ``_PEER_EVAL_EVERY`` steps.
_PEER_EVAL_EVERY, _PEER_EVAL_SIZE = 500, 2000


def train(config: InductionConfig, progress: bool = True) -> TrainedModel:
    """Train ``config``'s model from scratch by its recipe and return it with its metrics."""
    if config.recipe == "peer":
        return train_peer(config, progress)
    # AdamW (betas 0.9, 0.98), the learning rate decaying linearly to a tenth over the run, which settles
    # the margins the proofs need.
    return train_on_samples(
        build_model(config), sample=lambda count, generator: sample(config.d, config.n, count, generator),
        label=label, forward=last_logits, seed=config.seed, steps=config.steps, batch_size=config.batch_size,
        lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay, eval_samples=config.eval_samples,
        decay=0.9, what=f"training induction-{config.n} seed {config.seed}", progress=progress,
        evaluate_every=200)


def _peer_sample(rng: np.random.Generator, count: int, d: int, n: int) -> np.ndarray:
    tokens = np.empty((count, n), dtype=np.int64)
    for row in range(count):
        tokens[row, : n - 1] = rng.choice(d, n - 1, replace=False)
    i = rng.integers(0, n - 2, size=count)
    tokens[:, n - 1] = tokens[np.arange(count), i]
    return tokens


def train_peer(config: InductionConfig, progress: bool = True) -> TrainedModel:
    """The peer's recipe (module docstring) for ``config``'s sizes, seed, steps, batch, lr and weight decay."""
    import torch

    from gbmi_core import lens
    from gbmi_core.progress import progress as reporter

    start = time.perf_counter()
    model = build_model(config)
    arch = lens.architecture(model)
    d, n, D, H = config.d, config.n, config.d_model, config.d_head
    rng = np.random.default_rng(config.seed)

    def normal(*shape):
        return torch.from_numpy(rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape))

    initial = lens.canonical_state(model)
    state = {name: value.to(torch.float64) if value.is_floating_point() else value.clone()
             for name, value in initial.items()}
    drawn = {"embed.W_E": normal(d, D), "pos_embed.W_pos": normal(n, D)}
    for layer in range(2):
        for leaf, shape in (("W_Q", (D, H)), ("W_K", (D, H)), ("W_V", (D, H)), ("W_O", (H, D))):
            drawn[f"blocks.{layer}.attn.{leaf}"] = normal(*shape)[None]
    drawn["unembed.W_U"] = normal(D, d)
    state.update(drawn)
    trainable = [state[name].requires_grad_() for name in drawn]
    weights = lens.Weights(state, arch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bar = reporter(config.steps, f"training induction-{n} seed {config.seed} (peer recipe)", "step",
                   enabled=progress)
    try:
        optimiser = torch.optim.AdamW(trainable, lr=config.lr, betas=(0.9, 0.98), eps=1e-8,
                                      weight_decay=config.weight_decay)
        loss = torch.tensor(float("nan"))
        for step in range(1, config.steps + 1):
            tokens = torch.from_numpy(_peer_sample(rng, config.batch_size, d, n))
            loss = torch.nn.functional.cross_entropy(last_logits(weights, tokens), label(tokens))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if step % _PEER_EVAL_EVERY == 0:
                _peer_sample(rng, _PEER_EVAL_SIZE, d, n)  # the recipe's held-out draw, kept for its stream
                bar.set_postfix_str(f"loss={loss.item():.4f}")
            bar.update(1)
        bar.close()
        final = {name: value.detach().to(initial[name].dtype) for name, value in state.items()}
        lens.load_state(model, final)
        eval_tokens = sample(d, n, config.eval_samples, generator(config.seed, EVAL_STREAM))
        eval_loss, eval_accuracy = evaluate(model, eval_tokens, last_logits, label)
    finally:
        torch.set_num_threads(threads)
    return TrainedModel(model, {
        "final_train_loss": float(loss.item()), "eval_loss": eval_loss, "eval_accuracy": eval_accuracy,
        "eval_samples": config.eval_samples, "steps": config.steps,
        "train_seconds": round(time.perf_counter() - start, 3)})
