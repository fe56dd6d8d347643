"""Max-of-4 models trained as a TransformerLens user trains them (every bias trainable) against the same
recipe with the biases frozen at 0: what every strategy proves on each, and what the biases cost.

Both are trained by the same plain loop on the library's own forward pass (AdamW lr 1e-3, weight decay
0.01, batch 128, 3000 steps, the paper's Max-of-4 sizes), saved as a state-dict file and proved through
the CLI's path (``gbmi prove max-of-k --model FILE`` does the same).  The biased model's proofs see its
biases folded into one more residual direction, so ``d_model + 1`` in every path product.

    .venv/bin/python benchmarks/bench_biases.py [--steps 3000] [--seed 0]
"""

import argparse
import statistics
import time

import torch


def train(biases: bool, steps: int, seed: int):
    from gbmi_core import lens

    arch = {"n_layers": 1, "n_heads": 1, "d_model": 32, "d_head": 32, "d_vocab": 64, "d_vocab_out": 64,
            "n_ctx": 4, "attn_only": True, "normalization_type": None, "positional_embedding_type": "standard",
            "act_fn": None}
    model = lens.build(arch, seed=seed)
    trained = []
    for name, parameter in model.named_parameters():
        is_bias = name.endswith(".bias") or ".b_" in name
        parameter.requires_grad_(biases or not is_bias)
        if parameter.requires_grad:
            trained.append(parameter)
    g = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        tokens = torch.randint(0, 64, (128, 4), generator=g)
        loss = torch.nn.functional.cross_entropy(model(tokens)[:, -1], tokens.max(-1).values)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import gbmi_core

    registry = gbmi_core.get_registry()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Max-of-4, V=64, {args.steps} steps, "
          f"seed {args.seed}")
    print(f"{'model':10s} {'train s':>8s} {'brute force':>12s} {'cubic':>8s} {'best sub':>9s} {'median sub':>11s} "
          f"{'all 102 s':>10s} {'cubic FLOPs':>12s}")
    for biases in (False, True):
        model, seconds = train(biases, args.steps, args.seed)
        start = time.perf_counter()
        results = {s.name: s.prove(model) for s in registry.strategies("max-of-k")}
        elapsed = time.perf_counter() - start
        exact = results["brute-force"].correct_count
        sub = [r.accuracy_lower_bound for name, r in results.items() if name.startswith("subcubic")]
        assert all(r.correct_count <= exact for r in results.values())
        print(f"{'biased' if biases else 'bias-free':10s} {seconds:8.1f} {results['brute-force'].accuracy_lower_bound:12.4f} "
              f"{results['cubic'].accuracy_lower_bound:8.4f} {max(sub):9.4f} {statistics.median(sub):11.4f} "
              f"{elapsed:10.1f} {results['cubic'].flops:12,d}")


if __name__ == "__main__":
    main()
