"""Brute force on Max-of-4: our path-decomposition proof vs HookedTransformer forward on all 64^4 inputs.

Both run in this process on the shipped reference model; prints both times and the ratio (target >= 20x).

    .venv/bin/python benchmarks/bench_brute_force.py [--repeat 3]
"""

import argparse
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the proof (the best is reported)")
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args()

    from gbmi_max_of_k.brute_force import brute_force, enumerate_with_forward
    from gbmi_max_of_k.reference import load_reference_model

    model = load_reference_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    forward_correct, total = enumerate_with_forward(model, batch_size=args.batch_size, progress=True)
    forward_s = time.perf_counter() - start
    print(f"HookedTransformer forward, batches of {args.batch_size}: {forward_s:8.2f} s  "
          f"({forward_correct}/{total} correct, float32)")
    for with_loss in (False, True):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            bound = brute_force(model, with_loss=with_loss)
            times.append(time.perf_counter() - start)
        best = min(times)
        label = "with exact mean loss" if with_loss else "accuracy only"
        print(f"brute-force proof, {label:21s}: {best:8.2f} s  ({bound.correct_count}/{total} correct, float64 "
              f"model; {bound.extra['near_ties_rechecked_in_float64']} near-ties rechecked)  "
              f"ratio {forward_s / best:5.1f}x")
    print(f"inputs where float32 HookedTransformer and the float64 proof disagree: "
          f"{abs(forward_correct - bound.correct_count)} (net)")


if __name__ == "__main__":
    main()
