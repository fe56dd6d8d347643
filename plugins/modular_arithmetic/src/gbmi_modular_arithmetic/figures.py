"""Pictures of the modular-addition mechanism, for ``gbmi explain modular-arithmetic``.

Each function takes a model (one layer with an MLP, no LayerNorm: what the compact proofs take) and returns a
matplotlib ``Figure``.  Activations and logits are the model's float64 values on every pair ``(a, b)``.
"""

from __future__ import annotations

import numpy as np
import torch

from gbmi_core import NotApplicable
from gbmi_core.evaluate import Network
from gbmi_core.plots import figure as _figure, heatmap as _heatmap, integer_ticks

from .factored import activations
from .model import label

_NEURONS = 3


def _spectrum(model) -> tuple[np.ndarray, int]:
    """Power of the number tokens' embeddings per frequency ``k = 0 .. p // 2`` (summed over d_model)."""
    net = Network.of(model)
    p = net.arch["d_vocab_out"]
    E = net.weights["embed.W_E"][:p].numpy()
    power = (np.abs(np.fft.rfft(E, axis=0)) ** 2).sum(-1)  # [p // 2 + 1]
    return power, p


def fourier(model, strategy=None):
    power, p = _spectrum(model)
    figure, axes = _figure()
    axes.bar(np.arange(len(power)), power, color="tab:blue")
    key = np.nonzero(power[1:] >= 0.2 * power[1:].max())[0] + 1  # frequencies with a fifth of the top power
    axes.set_title(f"embedding of the numbers 0..{p - 1}: power per frequency k\n"
                   f"(key frequencies: {', '.join(str(k) for k in sorted(key))})", fontsize=10)
    axes.set_xlabel("frequency k (cos/sin of 2πka/p)")
    axes.set_ylabel("power (summed over d_model)")
    integer_ticks(axes, "x")
    return figure


def _top_neurons(post: torch.Tensor) -> list[int]:
    return post.reshape(-1, post.shape[-1]).var(0).argsort(descending=True)[:_NEURONS].tolist()


def neurons(model, strategy=None):
    post, _ = activations(model)
    figure, axes = _figure(4.2 * _NEURONS, 3.8, ncols=_NEURONS)
    for ax, i in zip(np.atleast_1d(axes), _top_neurons(post)):
        _heatmap(figure, ax, post[..., i].numpy(), f"neuron {i}", "b", "a", unit="activation", diverging=False)
    figure.suptitle("the most variable neurons' activations against (a, b): periodic in a and b", fontsize=10)
    return figure


def _sign(operation: str) -> str:
    return "-" if operation == "subtract" else "+"


def neurons_by_sum(model, strategy=None, operation: str = "add"):
    post, _ = activations(model)
    p = post.shape[0]
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    total = label(a, b, p, operation).numpy()
    op = _sign(operation)
    figure, axes = _figure(4.2 * _NEURONS, 3.4, ncols=_NEURONS)
    for ax, i in zip(np.atleast_1d(axes), _top_neurons(post)):
        ax.scatter(total.reshape(-1), post[..., i].numpy().reshape(-1), s=2, alpha=0.4)
        ax.set_title(f"neuron {i}", fontsize=9)
        ax.set_xlabel(f"(a {op} b) mod p")
        ax.set_ylabel("activation")
        integer_ticks(ax, "x")
    figure.suptitle(f"the same neurons against a {op} b: the spread at each sum is what the readout must cancel",
                    fontsize=10)
    return figure


def logits_by_sum(model, strategy=None, operation: str = "add"):
    _, logits = activations(model)
    p = logits.shape[0]
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    total = label(a, b, p, operation).reshape(-1)
    op = _sign(operation)
    flat = logits.reshape(-1, p)
    mean = torch.stack([flat[total == s].mean(0) for s in range(p)])  # [s, c]
    figure, axes = _figure()
    return _heatmap(figure, axes, mean.numpy(), f"mean logit of each output c over the pairs with a {op} b = s\n"
                    "(the diagonal is the answer)", "output c", f"(a {op} b) mod p", unit="logit")


def proof_map(model, strategy=None):
    if strategy is None:
        raise ValueError("the proof map needs a strategy (gbmi explain modular-arithmetic --strategy factored)")
    name = strategy.spec.name
    if name != "factored" and not name.startswith("low-rank-"):
        raise NotApplicable(f"strategy {name!r} has no proof map (factored and low-rank-R do)")
    proved: list = []  # the strategy's own verify (its task's operation bound in), asked for the map
    strategy.spec.verify(model, strategy.spec.search(model), proved=proved)
    grid = torch.cat(proved).numpy()
    figure, axes = _figure()
    axes.imshow(grid, cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(f"{name}: pairs (a, b) proved (green) or not (white): {int(grid.sum())} of {grid.size}",
                   fontsize=10)
    axes.set_xlabel("b")
    axes.set_ylabel("a")
    integer_ticks(axes, "x", "y")
    return figure


FIGURES = {"fourier": fourier, "neurons": neurons, "neurons-by-sum": neurons_by_sum, "logits-by-sum": logits_by_sum,
           "proof-map": proof_map}
