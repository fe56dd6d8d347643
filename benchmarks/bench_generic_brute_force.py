"""The price of certification: the core's generic certified brute force (``gbmi_core.brute_force``) against
TransformerLens' own float forward pass on the same inputs, in the same process.

The float forward is not certified (its float32 rounding decides near-ties as it falls), so the ratio is
what exact answers cost for models no task has a specialised brute force for.  Models: the shipped
Max-of-4 and induction-6 models (a slice of their inputs), and a one-layer model with LayerNorm, GELU and an
MLP (untrained; all of Max-of-3 over 32 tokens).

    .venv/bin/python benchmarks/bench_generic_brute_force.py [--inputs 262144]
"""

import argparse
import time

import torch


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def forward_count(model, batches):
    correct = 0
    with torch.no_grad():
        for tokens, labels in batches:
            logits = model(tokens)[:, -1]
            right = logits.gather(1, labels[:, None])[:, 0]
            logits.scatter_(1, labels[:, None], float("-inf"))
            correct += int((right > logits.amax(-1)).sum())
    return correct


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1 << 18, help="inputs of each shipped model to evaluate")
    args = parser.parse_args()
    from gbmi_core import lens
    from gbmi_core.brute_force import count_correct
    from gbmi_induction.model import all_inputs, label
    from gbmi_induction.reference import load_reference_model as induction_model
    from gbmi_max_of_k.reference import load_reference_model as max_of_k_model

    def sequences(V, n, count, batch=8192):
        for start in range(0, count, batch):
            index = torch.arange(start, min(count, start + batch))
            tokens = (index[:, None] // V ** torch.arange(n - 1, -1, -1)) % V
            yield tokens, tokens.max(-1).values

    def induction_batches(count, batch=8192):
        X = all_inputs(16, 6)[:count]
        for start in range(0, len(X), batch):
            yield X[start: start + batch], label(X[start: start + batch])

    mlp = lens.build({"n_layers": 1, "n_heads": 4, "d_model": 64, "d_head": 16, "d_vocab": 32, "n_ctx": 3,
                      "attn_only": False, "d_mlp": 256, "act_fn": "gelu", "normalization_type": "LN"}, seed=0)
    cases = [("Max-of-4 (shipped)", max_of_k_model(), lambda: sequences(64, 4, args.inputs)),
             ("induction-6 (shipped)", induction_model(), lambda: induction_batches(args.inputs)),
             ("1 layer, LN, GELU MLP", mlp, lambda: sequences(32, 3, 32**3))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':24s} {'inputs':>8s} {'certified s':>12s} {'forward s':>10s} {'ratio':>7s} {'certified':>10s} "
          f"{'forward':>8s}  decided by")
    for name, model, batches in cases:
        (correct, total, counts), certified = timed(lambda: count_correct(model, batches()))
        plain, seconds = timed(lambda: forward_count(model, batches()))
        print(f"{name:24s} {total:8d} {certified:12.2f} {seconds:10.2f} {certified / seconds:6.1f}x {correct:10d} "
              f"{plain:8d}  {counts}")


if __name__ == "__main__":
    main()
