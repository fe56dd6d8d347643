"""Brute force: the exact accuracy (and mean loss) over all V^K inputs, through the path decomposition.

With ``q`` the last token, the final-position logits of a sequence ``t`` are, exactly,

    logit[x] = EUPU[q,x] + Σ_i a_i (EVOU[t_i,x] + PVOU[i,x]),   a = softmax_i((EQKE[q,t_i] + EQKP[q,i]) / s)

so with ``w_i = exp(score_i)`` and ``Z = Σ_i w_i``, ``Z·logit[x] = Σ_i D_i[t_i, x]`` where
``D_i[t, x] = w_i(t) (EVOU[t,x] + PVOU[i,x] + EUPU[q,x])``.  For each query token we build all ``Z·logit``
rows by broadcasting sums of the ``D_i`` tables, which costs ``O(V^K · V)`` additions and no matmul per
sequence.  An input counts as correct only when the max token's logit is *strictly* the largest.

Arithmetic: the weights are taken in float64; the screen over all inputs runs in float32; every input
whose float32 margin is within a proven rounding allowance of a tie is recomputed in float64.  The result
is the float64 model's exact count.
"""

from __future__ import annotations

import torch

from gbmi_core import Bound, GbmiError

from .model import Paths, paths

MAX_INPUTS = 2**32  # beyond this, enumerating every input is not a sensible proof


def _path_tables(P: Paths) -> dict:
    """The path matrices brute force needs, computed once: ``O(V^2 D)``."""
    return {"EQKE": P.EQKE(), "EQKP": P.EQKP(), "EUPU": P.EUPU(), "OV": P.EVOU()[None, :, :] + P.PVOU()[:, None, :]}


def _tables(P: Paths, q: int, paths_: dict | None = None):
    """Per-position tables for query token ``q``: ``D [n, V, V]`` (position, token, output) and ``w [n, V]``."""
    t = paths_ or _path_tables(P)
    scores = (t["EQKE"][q][None, :] + t["EQKP"][q][:, None]) / P.attn_scale  # [n, V]: position x key token
    scores = scores - scores.max()  # softmax is shift-invariant: keep exp() in range
    w = scores.exp()  # [n, V]
    base = t["OV"] + t["EUPU"][q][None, None, :]  # [n, V, V]: EVOU[t,x] + PVOU[p,x] + EUPU[q,x]
    return w[:, :, None] * base, w


def _sequence_logits64(P: Paths, tokens: torch.Tensor) -> torch.Tensor:
    """Float64 last-position logits of explicit sequences ``[b, n] -> [b, V]`` (the reference formula)."""
    q = tokens[:, -1]
    scores = (P.EQKE()[q[:, None], tokens] + P.EQKP()[q]) / P.attn_scale  # [b, n]
    attention = scores.softmax(-1)
    ov = P.EVOU()[tokens] + P.PVOU()[None]  # [b, n, V]
    return P.EUPU()[q] + torch.einsum("bn,bnv->bv", attention, ov)


def strictly_right(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Whether the logit of the right answer ``m`` is strictly the largest.  ``[b, V], [b] -> [b]``

    Overwrites ``logits`` in place."""
    right = logits.gather(-1, m[:, None])[:, 0]
    logits.scatter_(-1, m[:, None], float("-inf"))
    return right > logits.amax(-1)


def _digits(index: torch.Tensor, V: int, n: int) -> torch.Tensor:
    """Sequence number -> tokens, position 0 the least significant digit.  ``[b] -> [b, n]``"""
    powers = V ** torch.arange(n, dtype=torch.int64)
    return (index[:, None] // powers) % V


def brute_force(model, *, block_elements: int = 1 << 20, with_loss: bool = True) -> Bound:
    """The exact number of inputs the model gets right (strictly), and its exact mean loss.

    Cost ``O(V^(K+1))`` additions, comparisons and (for the loss) exponentials.  Sound by construction:
    every input is evaluated.  Work is done in blocks of about ``block_elements`` floats, small enough to
    stay in cache.
    """
    P = paths(model)
    V, n = P.V, P.n
    total = V**n
    if total > MAX_INPUTS:
        raise GbmiError(f"brute force over {V}^{n} = {total:.3g} inputs is infeasible here (limit {MAX_INPUTS:.3g})")
    tokens = torch.arange(V)
    rows = V ** (n - 2)  # prefixes t_0 .. t_{n-3}, t_0 the least significant digit
    prefix_max = torch.zeros(1, dtype=torch.int64)
    for _ in range(n - 2):
        prefix_max = torch.maximum(tokens[:, None], prefix_max[None, :]).reshape(-1)
    row_block = max(1, min(rows, 1024))
    key_block = max(1, min(V, block_elements // (row_block * V)))
    correct = 0
    loss_sum = torch.zeros((), dtype=torch.float64)
    near_ties = []
    eps32 = torch.finfo(torch.float32).eps
    last = n - 2  # the free position just before the query
    tables = _path_tables(P)
    for q in range(V):
        D64, w64 = _tables(P, q, tables)  # [n, V, V], [n, V]
        D, w, size = D64.float(), w64.float(), D64.abs().amax(-1).float()  # size bounds each term, for rounding
        # Sums over the prefix positions, with the query's own term folded in: [rows, V], [rows], [rows]
        A, Z, S = D[n - 1, q][None, :], w[n - 1, q].reshape(1), size[n - 1, q].reshape(1)
        for p in range(n - 2):
            A = (D[p][:, None, :] + A[None, :, :]).reshape(-1, V)
            Z = (w[p][:, None] + Z[None, :]).reshape(-1)
            S = (size[p][:, None] + S[None, :]).reshape(-1)
        for k0 in range(0, V, key_block):
            ks = tokens[k0 : k0 + key_block]
            for r0 in range(0, rows, row_block):
                r1 = r0 + row_block
                T = torch.add(D[last, ks][:, None, :], A[None, r0:r1])  # [keys, rows, V] = Z * logits
                m = torch.maximum(ks[:, None], prefix_max[None, r0:r1]).clamp_(min=q)[..., None]  # max token
                U = T.sub_(T.gather(-1, m))  # Z * (logit[x] - logit[m]), in place
                U.scatter_(-1, m, float("-inf"))  # only the wrong outputs x != m remain
                margin = -U.amax(-1)  # > 0 means correct
                allowance = (8 * (n + 2) * eps32) * (size[last, ks][:, None] + S[None, r0:r1])
                correct += int((margin > allowance).sum())
                unsure = (margin.abs() <= allowance).nonzero()
                if len(unsure):
                    index = (unsure[:, 1] + r0) + (ks[unsure[:, 0]] + q * V) * rows
                    near_ties.append(index)
                if with_loss:  # loss = log(1 + sum_{x != m} exp(logit[x] - logit[m]))
                    inv_Z = 1.0 / (w[last, ks][:, None] + Z[None, r0:r1])
                    loss_sum += U.mul_(inv_Z[..., None]).exp_().sum(-1).log1p_().sum(dtype=torch.float64)
    rechecked = 0
    if near_ties:
        index = torch.cat(near_ties)
        rechecked = len(index)
        seqs = _digits(index, V, n)
        logits = _sequence_logits64(P, seqs)
        correct += int(strictly_right(logits, seqs.max(-1).values).sum())
    extra = {"near_ties_rechecked_in_float64": rechecked}
    if with_loss:
        extra["mean_loss"] = float(loss_sum / total)
    return Bound(correct_count=correct, total_count=total, extra=extra)


def enumerate_with_forward(model, *, batch_size: int = 8192, progress: bool = False) -> tuple[int, int]:
    """The naive reference: run ``model`` forward on every input in batches; ``(strictly correct, total)``.

    Uses the model's own dtype; this is what the brute-force proof is checked against, and its baseline.
    """
    from tqdm import tqdm

    V, n = model.cfg.d_vocab, model.cfg.n_ctx
    total = V**n
    correct = 0
    with torch.no_grad():
        for start in tqdm(range(0, total, batch_size), disable=not progress, desc="forward enumeration"):
            seqs = _digits(torch.arange(start, min(start + batch_size, total)), V, n)
            logits = model(seqs)[:, -1]
            correct += int(strictly_right(logits, seqs.max(-1).values).sum())
    return correct, total
