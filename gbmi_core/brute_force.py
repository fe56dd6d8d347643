"""A certified brute force for any task with a finite, enumerable input space, on any model the certified
evaluator takes (:mod:`gbmi_core.evaluate`: layers, heads, MLPs, LayerNorm, biases).

A task registers it in one line, from its ``gbmi_proof_strategies`` hook (importing this module imports no
torch, so listing strategies stays fast)::

    brute_force_strategy("my-task", batches=lambda model: my_batches(model.cfg), count=lambda model: ...)

``batches(model)`` yields ``(tokens [b, n], labels [b])`` covering every input once; ``count(model)`` is how
many there are (checked against what the batches held).  Every input is decided in exact arithmetic:
intervals first, arb balls for what they cannot separate; an input undecided at the largest precision (an
exact tie) is not counted as correct.  The count is therefore the exact number of correct inputs, less
the undecided ones, which ``extra["undecided"]`` reports.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .records import Bound, StrategySpec

#: Elements of the largest interval tensor a chunk may make (about 64 MiB per end).
CHUNK_ELEMENTS = 1 << 23


def chunk_rows(net, n: int) -> int:
    """How many inputs of length ``n`` one chunk evaluates within :data:`CHUNK_ELEMENTS`."""
    a = net.arch
    widest = max(a["n_heads"] * n * n * n, n * a["d_model"] * a["n_heads"], n * a["d_mlp"] * (not a["attn_only"]),
                 a["d_vocab_out"])
    return max(1, CHUNK_ELEMENTS // widest)


def count_correct(model: Any, batches: Iterable, certified: bool = True,
                  progress: Callable[[int], None] | None = None) -> tuple[int, int, dict]:
    """``(correct, total, counts)`` over every ``(tokens [b, n], labels [b])`` batch; ``counts`` says how
    each was decided."""
    import torch

    from .evaluate import Exact, Network, decide

    net = Network.of(model)
    exact = Exact(net)
    correct = total = 0
    counts = {"by_intervals": 0, "by_arb": 0, "undecided": 0}
    for tokens, labels in batches:
        tokens, labels = torch.as_tensor(tokens, dtype=torch.int64), torch.as_tensor(labels, dtype=torch.int64)
        if tokens.dim() != 2 or labels.shape != tokens.shape[:1]:
            raise ValueError(f"a batch must be tokens [b, n] and labels [b], not {tuple(tokens.shape)} and "
                             f"{tuple(labels.shape)}")
        step = chunk_rows(net, tokens.shape[1])
        for start in range(0, len(tokens), step):
            ok, c = decide(net, tokens[start: start + step], labels[start: start + step], exact, certified)
            correct += int(ok.sum())
            for key in counts:
                counts[key] += c[key]
        total += len(tokens)
        if progress is not None:
            progress(len(tokens))
    return correct, total, counts


def brute_force_strategy(task: str, batches: Callable[[Any], Iterable], count: Callable[[Any], int], *,
                         name: str = "brute-force",
                         summary: str = "Evaluate every input in certified arithmetic (intervals, then arb "
                                        "balls for the rest).") -> StrategySpec:
    """A :class:`~gbmi_core.StrategySpec` that counts the correct inputs of ``task`` exactly (see module)."""

    def verify(model, certificate):
        expected = count(model)
        correct, total, counts = count_correct(model, batches(model))
        if total != expected:
            raise ValueError(f"task {task!r}: the batches held {total} inputs, not the {expected} the task counts")
        return Bound(correct, total, extra=counts, certified=True)

    def unexplained(model) -> int:  # every input's every logit, as the paper counts brute force
        from .evaluate import Network

        return count(model) * Network.of(model).arch["d_vocab_out"]

    return StrategySpec(task=task, name=name, summary=summary, complexity="O(inputs · forward)", verify=verify,
                        unexplained_dimension=unexplained, family="brute-force")


__all__ = ["CHUNK_ELEMENTS", "brute_force_strategy", "chunk_rows", "count_correct"]
