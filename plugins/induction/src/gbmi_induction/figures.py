"""Pictures of the induction mechanism, for ``gbmi explain induction``.

Each function takes a model (any TransformerLens model the proofs accept) and returns a matplotlib ``Figure``
(no pyplot state).  Attention patterns are averaged over a fixed sample of the task's inputs; the circuit
pictures read the model's path tables directly.
"""

from __future__ import annotations

import numpy as np
import torch

from gbmi_core import NotApplicable
from gbmi_core.plots import figure as _figure, heatmap as _heatmap, integer_ticks

from .model import check_model, match_position, sample, tables

_SAMPLES = 4096


def _patterns(model):
    check_model(model)
    d, n = model.cfg.d_vocab, model.cfg.n_ctx
    tokens = sample(d, n, _SAMPLES, torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return tokens, cache["blocks.0.attn.hook_pattern"][:, 0], cache["blocks.1.attn.hook_pattern"][:, 0, -1]


def previous_token(model, strategy=None):
    _, layer0, _ = _patterns(model)
    figure, axes = _figure()
    return _heatmap(figure, axes, layer0.mean(0).numpy(),
                    "layer 0: mean attention (query position x key position)\nthe sub-diagonal is the previous token",
                    "key position", "query position", diverging=False, annotate=True, unit="attention weight",
                    vmin=0.0)


def induction(model, strategy=None):
    tokens, _, layer1 = _patterns(model)
    n = tokens.shape[1]
    match = match_position(tokens)
    rows = np.stack([layer1[match == i].mean(0).numpy() for i in range(n - 2)])
    figure, axes = _figure()
    return _heatmap(figure, axes, rows,
                    "layer 1 at the last position: mean attention by match position i\n"
                    "(the answer sits at key i+1)", "key position", "match position i", diverging=False,
                    annotate=True, unit="attention weight", vmin=0.0)


def matching(model, strategy=None):
    """Mean layer-1 score from the query token q (its own position) to keys whose previous token is u."""
    T = tables(model)
    n = T.n
    Q = T.EQ.mid[:, n - 1]  # [q, H]: the query's own-token part
    prev = T.EK.mid[:, 1:].mean(0)[None] + T.OK.mid[:, :-1]  # [u, positions, H]: key whose previous token is u
    scores = torch.einsum("qh,ujh->qu", Q, prev) / (n - 1)
    figure, axes = _figure()
    return _heatmap(figure, axes, scores.numpy(),
                    "layer 1 score: query token q against a key whose previous token is u\n"
                    "(mean over key positions; the diagonal is the induction match)", "previous token u",
                    "query token q", unit="attention score (before softmax)")


def copying(model, strategy=None):
    T = tables(model)
    figure, axes = _figure()
    ov = T.EV.mid.mean(1)  # [token, output]: what attending to a token adds to each logit
    return _heatmap(figure, axes, ov.numpy(), "layer 1 OV circuit through the unembedding\n"
                    "(key token x output logit; the diagonal copies)", "output token", "attended token",
                    unit="logit")


def proof_map(model, strategy=None):
    if strategy is None:
        raise ValueError("the proof map needs a strategy (gbmi explain induction --strategy pair-bounds)")
    if not strategy.spec.name.startswith("pair-bounds"):
        raise NotApplicable(f"strategy {strategy.spec.name!r} has no proof map (the pair-bounds strategies do)")
    from .pairs import group_map

    proved = group_map(model, int(strategy.spec.options.get("steps", 2)))  # [q, i, a]
    n_match = proved.shape[1]
    figure, axes = _figure(3.2 * n_match, 3.4, ncols=n_match)
    axes = np.atleast_1d(axes)
    for i in range(n_match):
        axes[i].imshow(proved[:, i].numpy(), cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        axes[i].set_title(f"i = {i}: {int(proved[:, i].sum())} groups proved", fontsize=9)
        axes[i].set_xlabel("answer a")
        axes[i].set_ylabel("query q")
        integer_ticks(axes[i], "x", "y")
    figure.suptitle(f"{strategy.spec.name}: groups (q, i, a) proved (green) or not (white)", fontsize=10)
    return figure


FIGURES = {"previous-token": previous_token, "induction": induction, "matching": matching, "copying": copying,
           "proof-map": proof_map}
