"""Pictures of the Max-of-K mechanism (the paper's figures), for ``gbmi explain max-of-k``.

Each function takes a model (any TransformerLens model the proofs accept) and returns a matplotlib ``Figure``
(no pyplot state: safe in scripts, servers and notebooks alike).  The ones about a proof also take the
registry's strategy and draw its certificate and what verification proved.
"""

from __future__ import annotations

import numpy as np
import torch

from gbmi_core import NotApplicable
from gbmi_core.plots import figure as _figure, heatmap as _heatmap, integer_ticks

from .model import paths


def eqke(model, strategy=None):
    P = paths(model)
    figure, axes = _figure()
    return _heatmap(figure, axes, (P.EQKE() / P.attn_scale).numpy(),
                    "EQKE / scale: attention score of query token on key token\n(rising along keys: the size direction)",
                    "key token", "query token", unit="attention score (before softmax)")


def eqkp(model, strategy=None):
    P = paths(model)
    figure, axes = _figure()
    return _heatmap(figure, axes, (P.EQKP() / P.attn_scale).numpy(),
                    "EQKP / scale: attention score of query token on key position", "key position", "query token",
                    unit="attention score (before softmax)")


def eqke_svd(model, strategy=None):
    """EQKE's singular values (one dominates: it is nearly rank one) and its size direction."""
    P = paths(model)
    U, S, Vh = torch.linalg.svd(P.EQKE() / P.attn_scale)
    sign = 1.0 if float(U[:, 0].mean()) >= 0 else -1.0
    figure, (left, right) = _figure(11, 4.2, ncols=2)
    left.semilogy(np.arange(1, len(S) + 1), S.numpy(), "o-", ms=3)
    left.set_title(f"singular values of EQKE / scale (σ1/σ2 = {float(S[0] / S[1]):.3g})", fontsize=10)
    left.set_xlabel("index")
    left.set_ylabel("singular value (attention score units)")
    integer_ticks(left, "x")
    left.grid(alpha=0.3)
    tokens = np.arange(P.V)
    # Each side on its own scale: the key side carries σ1 (score units), the query side is a unit vector.
    key_line, = right.plot(tokens, (sign * float(S[0]) * Vh[0]).numpy(), color="C0",
                           label="key side: σ1 · v1 (size direction)")
    right.set_ylabel("σ1 · v1 (attention score units)", color="C0")
    query = right.twinx()
    query_line, = query.plot(tokens, (sign * U[:, 0]).numpy(), color="C1", label="query side: u1")
    query.set_ylabel("u1 (unit vector entries)", color="C1")
    right.set_title("the rank-one part of EQKE: u1 σ1 v1ᵀ", fontsize=10)
    right.set_xlabel("token")
    integer_ticks(right, "x")
    right.legend(handles=[key_line, query_line], fontsize=8, loc="upper left")
    right.grid(alpha=0.3)
    return figure


def evou(model, strategy=None):
    P = paths(model)
    figure, axes = _figure()
    return _heatmap(figure, axes, P.EVOU().numpy(),
                    "EVOU: logit of each output from attending to a key token\n(a bright diagonal: copying)",
                    "output token", "key token", unit="logit")


def pvou(model, strategy=None):
    P = paths(model)
    figure, axes = _figure(6, 3)
    return _heatmap(figure, axes, P.PVOU().numpy(), "PVOU: logit of each output from attending to a position",
                    "output token", "key position", unit="logit")


def eupu(model, strategy=None):
    P = paths(model)
    figure, axes = _figure()
    return _heatmap(figure, axes, P.EUPU().numpy(), "EUPU: direct path, logit of each output from the query token",
                    "output token", "query token", unit="logit")


def _proof_tables(model, strategy):
    """``(kind, proved [V, V] fraction of the (q, m) cells' c values proved, gaps or None)``."""
    from . import cubic, subcubic

    if strategy is None:
        raise ValueError("this figure is about a proof: give a strategy")
    P = paths(model)
    if strategy.name == "cubic":
        t = cubic._tables(P, cubic.interval_paths(P), cubic.query_chunk(P.V, P.n))
        good = cubic._count_good_k(t, torch.arange(P.V)).double()  # [q, m, c-1]: passing k < m
        below = torch.arange(P.V).double().clamp(min=1)[None, :, None]
        fraction = (good / below).mean(-1)
        return "share of non-max tokens k < m proved, mean over c", fraction.numpy(), None
    if not strategy.name.startswith("subcubic"):
        raise NotApplicable(f"no proof map for strategy {strategy.name!r} (cubic and subcubic strategies have one)")
    options = subcubic.SubcubicOptions(**strategy.spec.options)
    certificate = strategy.search(model)
    G, directions, abar = subcubic._check_certificate(certificate, P.V, P.n, P.D)
    parts = subcubic._precompute(P, options, directions)
    proved = subcubic._proved(parts, G, abar, subcubic._cell_chunk(P.V, P.n, "figure"))
    valid = subcubic._cells(P.V, P.n, G)[4]
    fraction = proved.double().sum(-1) / valid.double().sum(-1).clamp(min=1)
    return "cells (q, m, c) proved, share over c", fraction.numpy(), G.numpy()


def proof_map(model, strategy=None):
    """Where the proof loses: for each (query, max) pair, how much of it verification proved."""
    title, fraction, _ = _proof_tables(model, strategy)
    figure, axes = _figure()
    shown = np.where(np.tri(len(fraction), dtype=bool).T, fraction, np.nan)  # q <= m only
    _heatmap(figure, axes, shown, f"{strategy.spec.display_name}: {title}", "max token m", "query token q",
             diverging=False, unit="share proved (0 to 1)", vmin=0.0)
    return figure


def min_gap(model, strategy=None):
    """The certificate's min-gap table G[q, m, c] for c = K - 1 (every non-query slot), where defined."""
    _, _, G = _proof_tables(model, strategy)
    if G is None:
        raise NotApplicable(f"strategy {strategy.name!r} has no min-gap table (subcubic strategies do)")
    V = G.shape[0]
    shown = np.where(np.tri(V, dtype=bool).T, G[:, :, -1].astype(np.float64), np.nan)
    figure, axes = _figure()
    return _heatmap(figure, axes, shown, f"{strategy.spec.display_name}: min gap G[q, m, c=K-1]", "max token m",
                    "query token q", diverging=False, unit="min gap (tokens)")


#: The figures by name (their summaries are in the plugin module, which must not import torch).
FIGURES = {"eqke": eqke, "eqkp": eqkp, "eqke-svd": eqke_svd, "evou": evou, "pvou": pvou, "eupu": eupu,
           "proof-map": proof_map, "min-gap": min_gap}
