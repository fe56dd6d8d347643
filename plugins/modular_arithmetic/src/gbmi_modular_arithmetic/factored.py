"""Compact proofs for one-layer modular-addition models: the model's structure, then its low-rank readout.

**Structure (``factored``).**  The answer is read at the last position, whose token is ``=`` (one value) or
``b``.  Every head's score of key position ``j`` is ``S_h[j][t_last, t_j]``, a table over token pairs, and
what it reads there is the per-token vector ``O_h[j][t] = ((W_E[t] + W_pos[j]) W_V + b_V) W_O``.  So the
MLP's pre-activation at ``(a, b)`` is

    pre(a, b) = base[t_last] + Σ_h Σ_j w_hj(a, b) · O_h[j][t_j] W_in        (base = (e_last + b_O) W_in + b_in)

with ``w = softmax`` of the table scores: the per-token products ``O_h[j][t] W_in`` cost ``O(p D d_mlp)`` once,
and each pair costs ``O(h n d_mlp)`` instead of brute force's ``O(D d_mlp)`` (``D`` = d_model).  The logits
are ``resid(a, b) W_U + act(pre) (W_out W_U) + b_out W_U + b_U``, the residual's readout factored the same
way.  Every quantity is an :class:`~gbmi_core.certified.Interval`; a pair counts when the right logit's lower
end exceeds every other's upper end.  Nothing is approximated, so on a clean model the count is brute
force's, at a fraction of its FLOPs.

**Low rank (``low-rank-R``).**  A grokked model reads its neurons through a few Fourier frequencies:
``W_out W_U ≈ A B`` with ``B`` ``R`` rows over the outputs (the certificate: any rows are sound; search takes
the top right singular vectors) and ``A = (W_out W_U) Bᵀ``.  With ``Rem = W_out W_U - A B`` (an enclosure),
the neurons' contribution to ``logit_c - logit_s`` differs from ``act(pre) A (B_c - B_s)`` by
``Σ_i act_i (Rem_ic - Rem_is)``, at most ``||act||_2 · ||Rem_c - Rem_s||_2`` in absolute value (Cauchy-Schwarz;
the column distances once, ``O(p^2 d_mlp)``), so each pair costs ``O(d_mlp R)`` instead of ``O(d_mlp p)``.  A pair counts when every
``logit_c - logit_s`` is below 0 after adding that bound.

Both take any model the task accepts with one layer and no LayerNorm (any heads, any activation, biases).
"""

from __future__ import annotations

import torch

from gbmi_core import Bound, CertificateRejected, ModelRefused
from gbmi_core.certified import Interval, matmul
from gbmi_core.evaluate import Network, activation, softmax

from .model import label


def _network(model) -> Network:
    net = Network.of(model)
    if net.arch["n_layers"] != 1 or net.arch["normalization_type"] is not None or net.arch["attn_only"]:
        raise ModelRefused("the factored proofs need one layer with an MLP and no LayerNorm "
                           f"(this model: {net.arch['n_layers']} layers, normalization "
                           f"{net.arch['normalization_type']!r}, attn_only={net.arch['attn_only']})")
    return net


class _Tables:
    """Per-token tables of the factored model (see the module doc), as intervals."""

    def __init__(self, net: Network, certified: bool = True, operation: str = "add"):
        w, a = net.weights, net.arch
        self.operation = operation
        self.n, self.p, self.heads = a["n_ctx"], a["d_vocab_out"], a["n_heads"]
        n, p = self.n, self.p
        W_in, W_U = w["blocks.0.mlp.W_in"], w["unembed.W_U"]
        tokens = [torch.arange(p), torch.arange(p)] + ([torch.tensor([p])] if n == 3 else [])
        att = "blocks.0.attn."
        e = [Interval.exact(w["embed.W_E"][t], certified) + w["pos_embed.W_pos"][j] for j, t in enumerate(tokens)]
        last = e[n - 1]  # [L, D]: the last position's token embeddings (L = 1 for '=', p for b)
        q = matmul(last[None], w[att + "W_Q"]) + w[att + "b_Q"][:, None, :]  # [h, L, H]
        # What a head writes, read by the MLP and the unembedding: V_h = W_V W_O [W_in | W_U] ([h, D, d_mlp + p]);
        # a token's row is W_E[t] V_h (exact embeddings: two products), the same at every position, plus the
        # position's own row W_pos[j] V_h and the bias row b_V W_O [W_in | W_U]
        readout = Interval.cat([Interval.exact(W_in, certified), Interval.exact(W_U, certified)], -1)  # [D, d_mlp + p]
        OR = matmul(Interval.exact(w[att + "W_O"], certified), readout)  # [h, H, d_mlp + p]
        V = matmul(Interval.exact(w[att + "W_V"], certified), OR)  # [h, D, d_mlp + p]
        bias = matmul(Interval.exact(w[att + "b_V"][:, None, :], certified), OR)  # [h, 1, d_mlp + p]
        by_token = matmul(Interval.exact(w["embed.W_E"], certified)[None], V)  # [h, d_vocab, d_mlp + p]
        self.d_mlp = d_mlp = W_in.shape[1]
        self.S, self.OI, self.OU = [], [], []
        for j in range(n):
            k = matmul(e[j][None], w[att + "W_K"]) + w[att + "b_K"][:, None, :]  # [h, p_j, H]
            self.S.append(matmul(q, k.permute(0, 2, 1)) / net.scales[0])  # [h, L, p_j]
            row = matmul(Interval.exact(w["pos_embed.W_pos"][j][None, None, :], certified), V) + bias  # [h, 1, .]
            table = by_token[:, tokens[j]] + row  # [h, p_j, d_mlp + p]
            self.OI.append(table[..., :d_mlp])
            self.OU.append(table[..., d_mlp:])
        resid = last + w[att + "b_O"]
        self.base_in = matmul(resid, W_in) + w["blocks.0.mlp.b_in"]  # [L, d_mlp]
        self.base_U = matmul(resid, W_U) + matmul(Interval.exact(w["blocks.0.mlp.b_out"][None], certified), W_U)[0] \
            + w["unembed.b_U"]  # [L, p]
        self.WoutU = matmul(Interval.exact(w["blocks.0.mlp.W_out"], certified), W_U)  # [d_mlp, p]
        self.act = a["act_fn"]

    def chunk(self, a_values: torch.Tensor):
        """``(activations [k, d_mlp], residual logits [k, p], answers [k])`` for the pairs with ``a`` in
        ``a_values`` (all ``b``), as intervals."""
        p, n = self.p, self.n
        A = a_values.repeat_interleave(p)
        B = torch.arange(p).repeat(len(a_values))
        tok = [A, B, torch.zeros_like(A)][:n]  # index into each position's token table ('=' is row 0)
        l = torch.zeros_like(A) if n == 3 else B  # row of the last position's tables
        scores = Interval.stack([self.S[j][:, l, tok[j]] for j in range(n)], -1)  # [h, k, n]
        w = softmax(scores)  # every position is a key of the last query
        k = len(A)
        rows = len(a_values)
        pre, resid = self.base_in[l], self.base_U[l]
        for j in range(n):
            wj = w[..., j]  # [h, k]: Σ_h w_hj · table_h[t_j] as a matrix product per shared token
            for table, out in ((self.OI[j], "pre"), (self.OU[j], "resid")):
                if j == 0:  # token a: one product per a, over the b's
                    part = matmul(wj.reshape(-1, rows, p).permute(1, 2, 0), table[:, a_values].permute(1, 0, 2))
                elif j == 1:  # token b: one product per b, over the a's
                    part = matmul(wj.reshape(-1, rows, p).permute(2, 1, 0), table.permute(1, 0, 2)).permute(1, 0, 2)
                else:  # '=': one product
                    part = matmul(wj.permute(1, 0), table[:, 0])
                part = part.reshape(k, -1)
                if out == "pre":
                    pre = pre + part
                else:
                    resid = resid + part
        return activation(pre, self.act), resid, label(A, B, p, self.operation)


def _rows(p: int, d_mlp: int, heads: int) -> int:
    return max(1, (1 << 22) // (p * max(d_mlp, p) * heads))


def _count(T: _Tables, decide, proved: list | None = None) -> int:
    """Pairs ``decide`` proves, chunk by chunk of ``a``; their ``[a, b]`` map appended to ``proved`` if given."""
    correct = 0
    step = _rows(T.p, T.d_mlp, T.heads)
    for start in range(0, T.p, step):
        post, resid, s = T.chunk(torch.arange(start, min(T.p, start + step)))
        ok = decide(T, post, resid, s)
        correct += int(ok.sum())
        if proved is not None:
            proved.append(ok.reshape(-1, T.p))
    return correct


def activations(model) -> tuple[torch.Tensor, torch.Tensor]:
    """``(neuron activations [p, p, d_mlp], logits [p, p, p])`` of every pair ``(a, b)``, in plain float64."""
    T = _Tables(_network(model), certified=False)
    post, resid, _ = T.chunk(torch.arange(T.p))
    logits = resid.lo + post.lo @ T.WoutU.lo
    return post.lo.reshape(T.p, T.p, -1), logits.reshape(T.p, T.p, -1)


def _separated(L: Interval, s: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(s))
    others = L.hi.clone()
    others[rows, s] = float("-inf")
    return L.lo[rows, s] > others.amax(-1)


def verify_factored(model, certificate=None, certified: bool = True, proved: list | None = None,
                    operation: str = "add") -> Bound:
    net = _network(model)

    def decide(T, post, resid, s):
        return _separated(resid + matmul(post, T.WoutU), s)

    p = net.arch["d_vocab_out"]
    return Bound(_count(_Tables(net, certified, operation), decide, proved), p * p, certified=certified)


def search_low_rank(model, rank: int) -> dict:
    """The top ``rank`` right singular vectors of ``W_out W_U`` (float64): the outputs' Fourier directions."""
    w = Network.of(model).weights
    M = w["blocks.0.mlp.W_out"] @ w["unembed.W_U"]
    return {"basis": torch.linalg.svd(M, full_matrices=False).Vh[:rank].numpy()}


def verify_low_rank(model, certificate, rank: int, certified: bool = True, proved: list | None = None,
                    operation: str = "add") -> Bound:
    net = _network(model)
    p = net.arch["d_vocab_out"]
    basis = certificate.arrays["basis"] if hasattr(certificate, "arrays") else certificate["basis"]
    basis = torch.as_tensor(basis, dtype=torch.float64)
    if basis.dim() != 2 or basis.shape[1] != p or not 0 <= basis.shape[0] <= rank:
        raise CertificateRejected(f"certificate field 'basis' has shape {tuple(basis.shape)}; expected "
                                  f"[at most {rank}, {p}]")
    T = _Tables(net, certified, operation)
    A = matmul(T.WoutU, basis.T)  # [d_mlp, R]
    rem = T.WoutU - matmul(A, basis)  # [d_mlp, p]
    # D[c, s] >= ||Rem[:, c] - Rem[:, s]||_2: the remainder's effect on logit_c - logit_s is at most
    # ||act||_2 D[c, s] (Cauchy-Schwarz)
    D = (rem[:, :, None] - rem[:, None, :]).square().sum(0).sqrt().hi  # [c, s]

    def decide(T, post, resid, s):
        L = resid + matmul(matmul(post, A), basis)  # [k, p]: everything but the remainder
        rows = torch.arange(len(s))
        gap = L - L[rows, s][:, None]  # [k, p]: logit_c - logit_s without the remainder
        norm = post.square().sum(-1).sqrt()  # [k]
        worst = (gap + norm[:, None] * Interval.exact(D.T[s], certified)).hi
        worst[rows, s] = float("-inf")
        return worst.amax(-1) < 0

    return Bound(_count(T, decide, proved), p * p, certified=certified)


def unexplained_dimension(model, rank: int | None = None) -> int:
    """The free quantities the proof leaves as a table: each pair's attention weights (``h n``), and each
    token's rows into the neurons and the readout (``p h n (d_mlp + p)``; with a rank, ``d_mlp + R`` per row
    and the ``d_mlp R`` readout).  Brute force's is every logit of every pair, ``p^3``."""
    a = Network.of(model).arch
    p, d_mlp, hn = a["d_vocab_out"], a["d_mlp"], a["n_heads"] * a["n_ctx"]
    if rank is None:
        return p * p * hn + p * hn * (d_mlp + p)
    return p * p * hn + p * hn * (d_mlp + rank) + d_mlp * rank
