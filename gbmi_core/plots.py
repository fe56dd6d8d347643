"""Figure helpers both tasks' pictures use: a figure, and a heatmap with a labelled colour bar and integer
ticks on its discrete axes.  (``gbmi explain`` stamps every figure with the model it shows.)"""

from __future__ import annotations

import numpy as np


def figure(width: float = 6.0, height: float = 4.5, ncols: int = 1):
    """``(figure, axes)``: a matplotlib ``Figure`` (no pyplot state) with ``ncols`` axes in a row."""
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def integer_ticks(axes, *which: str) -> None:
    """Only whole-number ticks on the named axes (``"x"``, ``"y"``): tokens and positions are discrete."""
    from matplotlib.ticker import MaxNLocator

    for name in which or ("x", "y"):
        getattr(axes, f"{name}axis").set_major_locator(MaxNLocator(integer=True))


def heatmap(fig, axes, matrix, title: str, xlabel: str, ylabel: str, *, unit: str, diverging: bool = True,
            annotate: bool = False, vmin: float | None = None):
    """A matrix as an image: rows down ``ylabel``, columns along ``xlabel``, the colour bar labelled ``unit``;
    diverging colours (centred on 0) or sequential; integer ticks on both axes."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if diverging:
        top = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
        top = top or 1.0
        image = axes.imshow(matrix, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto", interpolation="nearest")
    else:
        image = axes.imshow(matrix, cmap="viridis", aspect="auto", interpolation="nearest", vmin=vmin)
    if annotate:
        for (r, c), value in np.ndenumerate(matrix):
            axes.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    integer_ticks(axes, "x", "y")
    fig.colorbar(image, ax=axes, label=unit)
    return fig


def stamp(fig, text: str) -> None:
    """A small grey line at the figure's foot saying what it shows (task, model hash, seed or file)."""
    fig.text(0.995, 0.002, text, ha="right", va="bottom", fontsize=7, color="0.4")


__all__ = ["figure", "heatmap", "integer_ticks", "stamp"]
