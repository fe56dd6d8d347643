"""Certified brute force: every one of the V^K inputs decided exactly, rounding accounted for.

With ``q`` the last token, the final-position logits of a sequence ``t`` are

    logit[x] = EUPU[q,x] + Σ_i a_i (EVOU[t_i,x] + PVOU[i,x]),   a = softmax_i((EQKE[q,t_i] + EQKP[q,i]) / s)

so with weights ``w_i = exp(score_i - M)`` for *any* shift ``M`` the sign of ``logit[x] - logit[m]`` is the
sign of ``N[x] = Σ_i w_i (b_i(t_i, x) - b_i(t_i, m))``, ``b_i(t, x) = EVOU[t,x] + PVOU[i,x] + EUPU[q,x]``.  An
input is correct when ``N[x] < 0`` for every ``x ≠ m`` in exact arithmetic (``docs/certified.md``).

Three stages, each sound on its own:

1. **Screen** (float32, all inputs).  For each query token, the prefix rows (``t_0 .. t_{K-3}`` and the
   query) are summed in float64, each row normalised by its own largest score, then sorted by that score
   and cut into blocks whose scores lie within :data:`SPREAD` of each other.  A block meets the keys of
   position ``K-2`` in one fused ``addcmul``: ``T = α_k b_k + γ_k Ã_r``, with one of ``α_k, γ_k`` equal to 1,
   so every input's largest weight is at least ``e^-SPREAD`` and nothing underflows that matters (the
   old screen's global shift let whole inputs underflow to zero).  Each input carries a rigorous
   allowance: the float64 path tables' radii (certified products), the weights' relative error, float32
   rounding of every product and sum (Higham's ``γ_n``) and an absolute underflow term.  ``margin >
   allowance`` is correct, ``margin < -allowance`` is wrong, anything else (NaN included) goes on.
2. **Float64 intervals** (:func:`classify`): each remaining input evaluated on its own, shifted by its own
   largest score, in :class:`~gbmi_core.certified.Interval` arithmetic.  Outputs whose unembedding column
   equals the max token's exactly tie in exact arithmetic, so such inputs are wrong without arithmetic.
3. **mpmath intervals** at :data:`MPMATH_BITS` bits for what float64 cannot decide, and for what is still
   open an exact test for a true tie (wrong), else doubled precision until decided (:class:`_Exact`).
   Every input is decided: ``extra["undecided"]`` is always 0.

The mean loss (not part of the bound) is the float32 screen's, made stable by the per-input shift, with
non-finite entries recomputed from float64 log-sum-exp.  Where the path tables keep every logit within float32's
range for ``2^x`` (:func:`_plain_loss`), no shift is needed: the right logit is divided out of each input's sum.
Where most of a block's inputs have every wrong logit more than :data:`_FAR` nats below the right one (sharp
models), only the others take an exponential per output; each far input's loss is taken as ``e^(max d)``, within
``(V-1) e^-_FAR`` of the truth.
"""

from __future__ import annotations

import math

import torch

from gbmi_core import Bound, GbmiError, TooLarge
from gbmi_core.certified import check_floating_point
from gbmi_core.flops import charge
from gbmi_core.memory import require
from gbmi_core.progress import progress as reporter

from .model import Paths, interval_paths, paths

MAX_INPUTS = 2**32  # beyond this, enumerating every input is not a sensible proof
PROGRESS_FROM = 2**28  # report progress (a bar, or log lines) from this many inputs on
SPREAD = 40.0  # the scores of one block's rows lie within this of each other
MPMATH_BITS = 256  # the first precision of the last stage; doubled until an input is decided
U32, ETA32 = 2.0**-24, 2.0**-126  # float32 unit roundoff; underflow allowance per float32 op (covers flushing)

CORRECT, WRONG, UNDECIDED = 1, 0, -1
_LOG2E = 1.0 / math.log(2.0)
_NEGLIGIBLE = 2.0**-100  # weights below this (the largest is 1) are dropped from the float32 screen, and paid for
# An input whose every wrong logit is below the right one by more than this (in nats) has a loss under
# (V-1) e^-_FAR, taken as e^(its largest d_x) without an exponential per output: less than 1e-11 off for V up
# to 512, far below float32's rounding of the mean loss.  The loss is not part of the bound.
_FAR = 32.0


def _gamma32(k: int) -> float:
    return k * U32 / (1 - k * U32)


def _path_tables(P: Paths) -> dict:
    """Certified path tables (``O(V^2 D)``), ``OV [n, V, V] = EVOU[t,x] + PVOU[i,x]``, and tied output columns."""
    T = interval_paths(P)
    T["OV"] = T["EVOU"][None, :, :] + T["PVOU"][:, None, :]
    T["tied"] = (P.W_U[:, :, None] == P.W_U[:, None, :]).all(0) & ~torch.eye(P.V, dtype=torch.bool)  # [m, x]
    return T


def _digits(index: torch.Tensor, V: int, n: int) -> torch.Tensor:
    """Sequence number -> tokens, position 0 the least significant digit.  ``[b] -> [b, n]``"""
    powers = V ** torch.arange(n, dtype=torch.int64)
    return (index[:, None] // powers) % V


class _Query:
    """The screen's tables for one query token ``q``: score mids, base mids and per-term error budgets."""

    def __init__(self, P: Paths, T: dict, q: int):
        n = P.n
        scores = (T["EQKE"][q][None, :] + T["EQKP"][q][:, None]) / P.attn_scale  # [n, V]: position x key token
        base = T["OV"] + T["EUPU"][q][None, None, :]  # [n, V, V]: b_i(t, x)
        self.s = scores.mid
        self.b = base.mid
        magnitude = self.b.abs().amax(-1)  # [n, V]
        radius = base.radius.amax(-1)
        # Relative error of a computed weight against exp(exact score - the same shift): the score's radius
        # (doubled: e^r - 1 <= 2r), and per exp in its chain of at most K + 2 rescalings, 4 ulps plus the
        # rounding of its argument (at most u · 2 max|s|).  Generous by a factor of 2.
        largest = float(self.s.abs().max())
        rho = 2 * float(scores.radius.max()) + 2 * (n + 2) * (4 * 2.0**-52 + 2.0**-53 * (2 * largest + 1))
        # The float32 screen needs small weight errors and logits far inside float32's range.
        self.usable = math.isfinite(rho) and rho < 1e-3 and float((magnitude + radius).max()) < 2.0**100
        c_sum = 2 * _gamma32(n + 2) + 10 * U32  # float32 sums, products, casts and the final subtraction
        # Per unit of weight: what one term may contribute to |computed margin - exact margin|.
        self.budget = (2 * (magnitude * (2 * rho + 2 * U32) + 2 * radius)
                       + c_sum * (magnitude + radius)) * (1 + 2.0**-10)  # [n, V]
        self.c_sum = c_sum  # budget >= c_sum · (magnitude + radius): a dropped term costs at most budget / c_sum


def _prefix_rows(Qt: _Query, q: int, n: int, V: int):
    """Rows ``t_0 .. t_{K-3}`` (plus the query), each normalised by its own largest score, in float64.

    Returns ``(M [rows], A [rows, V], Z [rows], B [rows], top [rows])``: the largest score, Σ w b, Σ w, Σ w
    budget (with ``w = exp(s - M)``), and the largest token of the row including the query.
    """
    M = Qt.s[n - 1, q].reshape(1)
    A, Z, B = Qt.b[n - 1, q][None, :], torch.ones(1, dtype=torch.float64), Qt.budget[n - 1, q].reshape(1)
    top = torch.full((1,), q, dtype=torch.int64)
    tokens = torch.arange(V)
    for p in range(n - 2):
        s = Qt.s[p][:, None]  # [V(t), 1]
        M_new = torch.maximum(s, M[None, :])  # [V, rows]
        a, g = (s - M_new).exp(), (M[None, :] - M_new).exp()
        A = (a[..., None] * Qt.b[p][:, None, :] + g[..., None] * A[None]).reshape(-1, V)
        Z = (a + g * Z[None]).reshape(-1)
        B = (a * Qt.budget[p][:, None] + g * B[None]).reshape(-1)
        top = torch.maximum(tokens[:, None], top[None, :]).reshape(-1)
        M = M_new.reshape(-1)
    return M, A, Z, B, top


def _row_blocks(M: torch.Tensor, row_block: int) -> list[tuple[int, int]]:
    """Cut rows sorted by their largest score into blocks ``[start, end)`` of at most ``row_block`` rows whose
    scores lie within :data:`SPREAD` of the block's first (greedy, so as few blocks as the two limits allow)."""
    reach = torch.searchsorted(M, M + SPREAD, right=True).tolist()  # first row beyond SPREAD of each row
    blocks, start = [], 0
    while start < len(reach):
        end = min(reach[start], start + row_block)
        blocks.append((start, end))
        start = end
    return blocks


def _block_groups(blocks: list[tuple[int, int]], row_block: int) -> list[tuple[int, int, int | None]]:
    """Consecutive blocks of fewer than ``row_block / 4`` rows gathered into groups of at most ``row_block`` rows,
    computed together: ``(start, end, j)`` with ``j`` the block's index when the group is one block, else None.
    Sharp models cut a query's rows into dozens of small blocks; a group pays the fixed cost of each op once."""
    small = max(1, row_block // 4)
    groups, i = [], 0
    while i < len(blocks):
        start, end = blocks[i]
        j = i + 1
        if end - start < small:
            while j < len(blocks) and blocks[j][1] - blocks[j][0] < small and blocks[j][1] - start <= row_block:
                j += 1
        groups.append((start, blocks[j - 1][1], i if j == i + 1 else None))
        i = j
    return groups


def _loss(logits, right, scale, t, in_place=False):
    """Each input's ``t + log(e^-t + Σ_{x≠m} 2^((logit_x - logit_m) scale - t log2 e))`` with ``scale =
    log2(e) / Z``: its loss ``log(1 + Σ e^(d_x))`` (the right logit's slot holds -inf).  ``in_place``
    overwrites ``logits`` (one pass less over memory).  ``[..., V] -> [...]``"""
    shifted = logits.mul_(scale[..., None]) if in_place else logits * scale[..., None]
    # 2^x below -126 makes float32 subnormals, several times slower; 2^-115 changes no loss
    total = shifted.sub_((right * scale + t * _LOG2E)[..., None]).clamp_(min=-115.0).exp2_().sum(-1)
    return t + torch.log1p(torch.expm1(-t) + total)


def _plain_loss(logits, right, scale, in_place=False):
    """:func:`_loss` for logits whose every ``logit · scale`` lies in ``[-120, 100]`` (the caller checks the path
    tables' range), so that each ``2^(logit · scale)`` is a normal float32 and their sum cannot overflow: no
    shift and no clamp over the block (two passes fewer), the right logit divided out of the sum in float64."""
    shifted = logits.mul_(scale[..., None]) if in_place else logits * scale[..., None]
    total = shifted.exp2_().sum(-1).double()
    return torch.log1p(total * torch.exp2(-(right.double() * scale)))


#: :func:`_plain_loss` applies where ``log2(e) · b`` lies in ``[-120, 100]`` for every entry ``b`` of the path
#: tables (a logit is a weighted mean of them), with room for float32 rounding.
_PLAIN_LOW, _PLAIN_HIGH = -119.0, 99.0


def _screen_query(Qt: _Query, q: int, n: int, V: int, sizes: tuple[int, int], with_loss: bool, buffers: dict):
    """The float32 screen of every input with query token ``q``.

    Returns ``(correct, undecided, loss, overflowed)``: the count proved correct, the sequence numbers
    left for float64, the summed float32 loss, and the sequence numbers whose float32 loss overflowed.

    Everything that does not need a block's logits (each row normalised to its block, each key's weight
    against each block, the allowances, the loss's normalisers, where each input's right answer sits) is
    computed once per query for all blocks: sharp models cut a query's rows into dozens of small blocks,
    where a hundred small ops per block used to cost more than the logits themselves.
    """
    key_block, row_block = sizes
    M, A, Z, B, top = _prefix_rows(Qt, q, n, V)
    order = M.argsort()  # rows by their largest score, so that a block's scores are close
    M, A, Z, B, top = M[order], A[order], Z[order], B[order], top[order]
    R = len(M)
    blocks = _row_blocks(M, row_block)
    groups = _block_groups(blocks, row_block)
    ends = torch.tensor([end for _, end in blocks])
    row = torch.arange(R)
    block_of_row = torch.searchsorted(ends, row, right=True)  # [R]
    group_starts = torch.tensor([start for start, _, _ in groups])
    group_start_of_row = group_starts[torch.searchsorted(group_starts, row, right=True) - 1]  # [R]
    M_top = M[ends - 1]  # [blocks]: each block's largest score (rows are sorted: its last row's)
    scale = (M - M_top[block_of_row]).exp()  # every row normalised to its block's largest score
    A_s = (A * scale[:, None]).float()  # [R, V]
    Z_s, B_s = Z * scale, B * scale
    margin = torch.empty(R, V)  # [rows, keys], sorted rows: Z · (logit[m] - the largest wrong logit), float32
    allowance = torch.empty(R, V, dtype=torch.float64)
    losses = torch.zeros(R, V) if with_loss else None
    require(48 * len(blocks) * V, f"brute force's tables for {len(blocks)} row blocks at V={V}")
    # Every logit is a weighted mean of path-table entries: within range, the loss needs no shift (_plain_loss)
    plain = _PLAIN_LOW < float(Qt.b.min()) * _LOG2E and float(Qt.b.max()) * _LOG2E < _PLAIN_HIGH
    for k0 in range(0, V, key_block):
        ks = slice(k0, min(k0 + key_block, V))
        nk = ks.stop - ks.start
        s_k = Qt.s[n - 2, ks]
        S = torch.maximum(s_k[None, :], M_top[:, None])  # [blocks, keys]
        alpha, gamma = (s_k[None, :] - S).exp(), (M_top[:, None] - S).exp()  # one of each pair is 1
        # Weights below 2^-100 of the largest are dropped (float32 subnormals are slow); the allowance pays
        # for them in full.
        dropped_a, dropped_g = alpha < _NEGLIGIBLE, gamma < _NEGLIGIBLE
        a32 = alpha.masked_fill(dropped_a, 0.0).float()
        g32 = gamma.masked_fill(dropped_g, 0.0).float()[:, None, :, None]  # [blocks, 1, keys, 1]
        b_k = Qt.b[n - 2, ks].float()  # [keys, V]
        coef_a = (alpha * (1 + 2 * dropped_a / Qt.c_sum)) * Qt.budget[n - 2, ks][None, :]
        coef_g = gamma * (1 + 2 * dropped_g / Qt.c_sum)
        torch.mul(coef_g[block_of_row], B_s[:, None], out=allowance[:, ks]).add_(coef_a[block_of_row])
        # Where each input's right answer sits in its block's flat logits: ((row - block start) · keys + key) · V + m
        m = torch.maximum(top[:, None], torch.arange(V)[None, ks])  # [R, keys]: the max token
        at = m.add_(_steps(buffers, R * nk, V).view(R, nk)).sub_((group_start_of_row * (nk * V))[:, None])
        if len(groups) < len(blocks):  # some groups hold several blocks: each row's own key weights
            a32_rows, g32_rows = a32[block_of_row][..., None], g32[block_of_row, 0]  # [R, keys, 1]
        if with_loss:
            inv_Z = (1.0 / (alpha[block_of_row] + gamma[block_of_row] * Z_s[:, None])).float()  # [R, keys]
            minus_inv_Z, inv_Z2 = -inv_Z, inv_Z * _LOG2E
        for start, end, j in groups:
            rows = slice(start, end)
            logits = _buffer(buffers, "logits", (end - start, nk, V))  # [rows, keys, V] = Z · logits
            if j is not None:  # one block: its keys' weights are shared by its rows
                torch.addcmul(a32[j, :, None] * b_k, g32[j], A_s[rows, None, :], out=logits)
            else:  # small blocks together: the same products, each row with its block's weights
                torch.mul(a32_rows[rows], b_k, out=logits).addcmul_(g32_rows[rows], A_s[rows, None, :])
            flat = logits.view(-1)
            at_m = at[rows].view(-1)
            right = flat.gather(0, at_m).view(end - start, nk)
            flat.index_put_((at_m,), buffers["-inf"])  # only the wrong outputs x != m remain
            gap = torch.sub(right, logits.amax(-1), out=margin[rows, ks])  # > 0: correct
            if with_loss:  # log(1 + Σ_{x≠m} exp(d_x)), d_x = logit[x] - logit[m]
                d_max = gap * minus_inv_Z[rows]  # the largest d_x
                near = ~(d_max < -_FAR)  # NaN too: the float64 path takes non-finite losses
                count = int(near.sum())
                if count > near.numel() // 4:  # logits' last use: overwritten
                    losses[rows, ks] = (_plain_loss(logits, right, inv_Z2[rows], in_place=True) if plain else
                                        _loss(logits, right, inv_Z2[rows], d_max.clamp(min=0), in_place=True))
                else:  # most inputs far from wrong (sharp logits): exponentials only for the others
                    # A far input's loss: between e^d_max and (V-1) e^d_max < e^-_FAR V; below e^-87 (float32
                    # subnormals, tens of times slower to make) taken as e^-87, some 1e-38.
                    block = d_max.clamp(min=-87.0).exp_()
                    if count:
                        idx = near.view(-1).nonzero()[:, 0]
                        args = logits.view(-1, V)[idx], right.view(-1)[idx], inv_Z2[rows].reshape(-1)[idx]
                        near_loss = _plain_loss(*args) if plain else _loss(*args, d_max.view(-1)[idx].clamp(min=0))
                        block.view(-1)[idx] = near_loss.to(block.dtype)
                    losses[rows, ks] = block
    allowance += 2 * (n + 4) * ETA32
    sure = margin > allowance
    unsure = ~(margin.abs() > allowance)  # neither surely right nor surely wrong; NaN lands here too
    first = q * V * R  # sequence number = row + rows · (key + V · q)
    none = torch.zeros(0, dtype=torch.int64)

    def numbers(where):  # [rows, keys] positions -> sequence numbers
        return order[where[:, 0]] + where[:, 1] * R + first

    undecided = numbers(unsure.nonzero()) if bool(unsure.any()) else none
    loss, overflowed = torch.zeros((), dtype=torch.float64), none
    if with_loss:
        loss = losses.sum(dtype=torch.float64)
        if not bool(loss.isfinite()):  # some float32 loss overflowed (or is NaN): float64 takes those
            finite = torch.isfinite(losses)
            loss = losses[finite].sum(dtype=torch.float64)
            overflowed = numbers((~finite).nonzero())
    return int(sure.sum()), undecided, loss, overflowed


def _buffer(buffers: dict, name: str, shape) -> torch.Tensor:
    """A reused float32 tensor of ``shape``: a view of one flat buffer per name that only grows (fresh
    multi-megabyte outputs in every block cost page faults, and blocks cut by :data:`SPREAD` come in many
    shapes)."""
    size = math.prod(shape)
    if name not in buffers or buffers[name].numel() < size:
        buffers[name] = torch.empty(size)
    return buffers[name][:size].view(shape)


def _steps(buffers: dict, count: int, V: int) -> torch.Tensor:
    """``arange(count) · V``: the flat offset of each input's first output in a block's logits."""
    if "steps" not in buffers or len(buffers["steps"]) < count:
        buffers["steps"] = torch.arange(count) * V
    return buffers["steps"][:count]


def brute_force(model, *, block_elements: int = 1 << 22, with_loss: bool = True) -> Bound:
    """The exact number of inputs the model gets right (strictly, in exact arithmetic), and its mean loss.

    Cost ``O(V^(K+1))`` float32 additions, comparisons and (for the loss) exponentials, plus a float64
    recheck of the inputs the screen cannot decide.  ``extra``: ``undecided`` (not counted),
    ``rechecked_float64``, ``rechecked_mpmath``, ``mean_loss``.
    """
    check_floating_point()
    P = paths(model)
    V, n = P.V, P.n
    total = V**n
    if total > MAX_INPUTS:
        raise TooLarge(f"brute force over {V}^{n} = {total:.3g} inputs is infeasible here (limit {MAX_INPUTS:.3g})")
    if n < 2:
        raise GbmiError("brute force needs K >= 2")
    # The path tables (OV is [K, V, V] intervals, a few copies alive), the float32 block (4 bytes a logit; the
    # loss of a block's near inputs takes at most 4 more) and one query's per-input tables (its V^(K-2) rows x V
    # keys: the prefix sums and their sorted copy, float64, margins, allowances, losses, right answers' places,
    # each row's key weights and normalisers, with their temporaries: about 112 bytes an input).  Blocks of 4M
    # logits: the per-block ops (about thirty, each paying the FLOP counter's dispatch) stay a small share.
    require(8 * 8 * n * V * V + 32 * block_elements + 112 * V ** (n - 1), f"brute force at V={V}, K={n}")
    T = _path_tables(P)
    rows = V ** (n - 2)
    key_block = max(1, min(V, block_elements // (V * min(rows, 256))))
    row_block = max(1, min(rows, block_elements // (key_block * V)))
    correct, loss_sum = 0, torch.zeros((), dtype=torch.float64)
    recheck, loss64 = [], []  # sequence numbers to decide in float64; to take the loss of in float64
    buffers = {"-inf": torch.tensor(float("-inf"))}
    bar = reporter(V, f"brute force over {V}^{n} inputs", "query token", enabled=total >= PROGRESS_FROM)
    for q in range(V):
        Qt = _Query(P, T, q)
        if not Qt.usable:  # scores or logits beyond what the float32 screen can bound: all go to float64
            require(8 * 4 * rows * V * (V - q), f"brute force's float64 recheck of {V - q} queries' inputs at V={V}, K={n}")
            recheck.append(torch.arange(rows * V) + q * V * rows)
            loss64.append(recheck[-1])
        else:
            proved, undecided, loss, overflowed = _screen_query(Qt, q, n, V, (key_block, row_block), with_loss, buffers)
            correct += proved
            loss_sum += loss
            recheck.append(undecided)
            loss64.append(overflowed)
        bar.update(1)
    bar.close()
    extra = {"rechecked_float64": 0, "rechecked_mpmath": 0, "undecided": 0}
    recheck, loss64 = torch.cat(recheck), torch.cat(loss64)
    if len(recheck):
        status, losses, stats = classify_indices(P, T, recheck)
        correct += int((status == CORRECT).sum())
        extra.update(stats)
        loss_sum += losses[torch.isin(recheck, loss64)].sum()  # float64 losses already computed here
        loss64 = loss64[~torch.isin(loss64, recheck)]
    if with_loss:
        if len(loss64):
            loss_sum += classify_indices(P, T, loss64, decide=False)[1].sum()
        extra["mean_loss"] = float(loss_sum / total)
    return Bound(correct_count=correct, total_count=total, extra=extra, certified=True)


def classify_indices(P: Paths, T: dict, index: torch.Tensor, *, decide: bool = True, chunk: int = 4096):
    """:func:`classify` for inputs given by their sequence numbers, in chunks: ``(status, float64 losses,
    stats)``.  ``decide=False`` only computes the losses."""
    statuses, losses = [], []
    for start in range(0, len(index), chunk):
        seqs = _digits(index[start : start + chunk], P.V, P.n)
        status, loss = _classify64(P, T, seqs)
        statuses.append(status)
        losses.append(loss)
    status = torch.cat(statuses) if statuses else torch.zeros(0, dtype=torch.int8)
    loss = torch.cat(losses) if losses else torch.zeros(0, dtype=torch.float64)
    stats = {"rechecked_float64": len(index), "rechecked_mpmath": 0, "undecided": 0}
    if decide:
        open_ = (status == UNDECIDED).nonzero()[:, 0]
        stats["rechecked_mpmath"] = len(open_)
        if len(open_):
            exact = _Exact(P)
            seqs = _digits(index[open_], P.V, P.n)
            status[open_] = torch.tensor([exact.classify(s.tolist()) for s in seqs], dtype=status.dtype)
        stats["undecided"] = int((status == UNDECIDED).sum())  # always 0: kept for the result's schema
    return status, loss, stats


def classify(model_or_paths, seqs: torch.Tensor) -> torch.Tensor:
    """Each input's status in exact arithmetic: ``CORRECT`` (1), ``WRONG`` (0) or ``UNDECIDED`` (-1).

    Float64 intervals first, then mpmath; the reference every strategy's soundness tests use.
    ``[b, K] -> [b]`` (int8).
    """
    P = model_or_paths if isinstance(model_or_paths, Paths) else paths(model_or_paths)
    T = _path_tables(P)
    powers = P.V ** torch.arange(P.n, dtype=torch.int64)
    return classify_indices(P, T, (seqs * powers).sum(-1))[0]


def _classify64(P: Paths, T: dict, seqs: torch.Tensor):
    """Float64 interval decision per input, shifted by its own largest score; and its float64 loss."""
    b, n = seqs.shape
    q, m = seqs[:, -1], seqs.max(-1).values
    pos = torch.arange(n)[None, :]
    scores = (T["EQKE"][q[:, None], seqs] + T["EQKP"][q]) / P.attn_scale  # [b, n]
    w = (scores - scores.mid.amax(-1, keepdim=True)).exp()  # [b, n]
    ov = T["OV"][pos, seqs]  # [b, n, V]
    ov_m = T["OV"][pos, seqs, m[:, None]]  # [b, n]
    eupu = T["EUPU"][q]  # [b, V]
    N = (w[..., None] * (ov - ov_m[..., None])).sum(1) + w.sum(1)[:, None] * (eupu - eupu[torch.arange(b), m][:, None])
    others = torch.ones(b, P.V, dtype=torch.bool)
    others[torch.arange(b), m] = False
    right = (N.certainly_negative() | ~others).all(-1)
    wrong = (N.certainly_positive() & others).any(-1) | T["tied"][m].any(-1)
    status = torch.full((b,), UNDECIDED, dtype=torch.int8)
    status[right] = CORRECT
    status[wrong] = WRONG
    # The loss (not part of the bound) in plain float64: softmax and log-sum-exp are stable for any scores.
    logits = eupu.mid + (scores.mid.softmax(-1)[..., None] * ov.mid).sum(1)  # [b, V]
    loss = logits.logsumexp(-1) - logits[torch.arange(b), m]
    return status, loss


class _Exact:
    """The last stage, for one call of :func:`classify_indices`: mpmath interval arithmetic at
    :data:`MPMATH_BITS` bits, doubled until the input is decided, and an exact test for true ties.

    Everything it caches (rows of the path tables, per token and precision) lives and dies with this object,
    so no other model's values can ever be read.

    Why it always ends: with ``w_i = exp(s_i)``, ``N[x] = Σ_i w_i c_i(x)`` where every score ``s_i`` and
    coefficient ``c_i(x) = b_i(t_i, x) - b_i(t_i, m)`` is a rational number (float32 weights, a float64 scale).
    Grouping positions of equal score, ``N[x] = Σ_σ exp(σ) C_σ(x)``; by the Lindemann–Weierstrass theorem the
    ``exp(σ)`` of distinct rationals are linearly independent over the rationals, so ``N[x] = 0`` exactly when
    every ``C_σ(x) = 0``.  That is decided in exact rational arithmetic (:meth:`ties`): a tie is wrong (not
    strictly correct); any other ``N[x] ≠ 0``, and enough precision decides its sign.
    """

    def __init__(self, P: Paths):
        self.P = P
        self.rows: dict = {}
        self.fractions: dict | None = None  # the weights as exact rationals, made on the first tie test

    def _tables(self, bits: int, iv):
        if bits not in self.rows:
            P = self.P

            def mat(t):
                return iv.matrix([[iv.mpf(float(v)) for v in row] for row in t.tolist()])

            self.rows[bits] = {"OVU": mat(P.W_V) * (mat(P.W_O) * mat(P.W_U)), "QK": mat(P.W_Q) * mat(P.W_K).T,
                               "W_E": mat(P.W_E), "W_pos": mat(P.W_pos), "W_U": mat(P.W_U)}
        return self.rows[bits]

    def classify(self, seq: list[int]) -> int:
        import mpmath

        bits = MPMATH_BITS
        while True:
            saved, mpmath.iv.prec = mpmath.iv.prec, bits
            try:
                status = self._classify_iv(seq, bits, mpmath.iv)
            finally:
                mpmath.iv.prec = saved
            if status != UNDECIDED:
                return status
            if bits == MPMATH_BITS and self.ties(seq):
                return WRONG
            bits *= 2

    def _classify_iv(self, seq: list[int], bits: int, iv) -> int:
        W = self._tables(bits, iv)
        P = self.P
        n, V, D = P.n, P.V, P.D
        charge(n * D * (2 * V + 2 * D), "mpmath recheck")
        m = max(seq)
        resid = [W["W_E"][t, :] + W["W_pos"][i, :] for i, t in enumerate(seq)]  # [n] rows of D
        query = resid[-1] * W["QK"]  # [D]
        scale = iv.mpf(P.attn_scale)
        scores = [sum((query[d] * resid[i][d] for d in range(D)), iv.mpf(0)) / scale for i in range(n)]
        shift = max(float(s.mid) for s in scores)
        w = [iv.exp(s - shift) for s in scores]
        direct = resid[-1] * W["W_U"]  # [V]
        ov = [resid[i] * W["OVU"] for i in range(n)]  # [n] rows of V
        Z = sum(w, iv.mpf(0))
        decided_right = True
        for x in range(V):
            if x == m:
                continue
            N = sum((w[i] * (ov[i][x] - ov[i][m]) for i in range(n)), iv.mpf(0)) + Z * (direct[x] - direct[m])
            if N.a > 0:
                return WRONG
            if not N.b < 0:
                decided_right = False
        return CORRECT if decided_right else UNDECIDED

    def ties(self, seq: list[int]) -> bool:
        """Whether some wrong output's logit equals the right one's exactly (see the class doc)."""
        from fractions import Fraction

        P = self.P
        if self.fractions is None:
            self.fractions = {name: [[Fraction(float(v)) for v in row] for row in getattr(P, name).tolist()]
                              for name in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")}

        def vecmat(v, M):
            return [sum((v[d] * M[d][j] for d in range(len(v))), Fraction(0)) for j in range(len(M[0]))]

        W_E, W_pos, W_Q, W_K, W_V, W_O, W_U = (self.fractions[name] for name in
                                               ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U"))
        n, m = P.n, max(seq)
        resid = [[a + b for a, b in zip(W_E[t], W_pos[i])] for i, t in enumerate(seq)]
        query = vecmat(resid[-1], W_Q)
        scale = Fraction(P.attn_scale)
        scores = [sum((a * b for a, b in zip(query, vecmat(r, W_K))), Fraction(0)) / scale for r in resid]
        direct = vecmat(resid[-1], W_U)
        ov = [vecmat(vecmat(vecmat(r, W_V), W_O), W_U) for r in resid]
        for x in range(P.V):
            if x == m:
                continue
            groups: dict = {}
            for i in range(n):
                c = ov[i][x] - ov[i][m] + direct[x] - direct[m]
                groups[scores[i]] = groups.get(scores[i], Fraction(0)) + c
            if all(c == 0 for c in groups.values()):
                return True
        return False


def enumerate_with_forward(model, *, batch_size: int = 8192, progress: bool = False, with_loss: bool = False):
    """The naive reference: run ``model`` forward on every input in batches; ``(strictly correct, total)``,
    plus the mean cross-entropy loss with ``with_loss`` (as the research code's brute force records it).

    Uses the model's own dtype and its own rounding; the benchmark's baseline, not a certified count.
    """
    from tqdm import tqdm

    V, n = model.cfg.d_vocab, model.cfg.n_ctx
    total = V**n
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in tqdm(range(0, total, batch_size), disable=not progress, desc="forward enumeration"):
            seqs = _digits(torch.arange(start, min(start + batch_size, total)), V, n)
            logits = model(seqs)[:, -1]
            labels = seqs.max(-1).values
            if with_loss:
                loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int(strictly_right(logits, labels).sum())
    return (correct, total, loss / total) if with_loss else (correct, total)


def strictly_right(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Whether the logit of the right answer ``m`` is strictly the largest (in the logits' own floats).
    ``[b, V], [b] -> [b]``.  Overwrites ``logits`` in place."""
    right = logits.gather(-1, m[:, None])[:, 0]
    logits.scatter_(-1, m[:, None], float("-inf"))
    return right > logits.amax(-1)


def verify(model, certificate=None) -> Bound:
    """The strategy's verification: brute force needs no certificate."""
    return brute_force(model)
