"""Cubic proof time on the shipped model (target <= 0.25 s) and training time of the default config
(target <= 20 s), on this machine, in one process.

    .venv/bin/python benchmarks/bench_cubic_and_training.py [--repeat 5]
"""

import argparse
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    import gbmi_core
    from gbmi_max_of_k.config import MaxOfKConfig
    from gbmi_max_of_k.reference import load_reference_model
    from gbmi_max_of_k.train import train

    model = load_reference_model()
    cubic = gbmi_core.get_registry().strategy("max-of-k", "cubic")
    times, counted = [], []
    for _ in range(args.repeat):
        from gbmi_max_of_k.cubic import verify

        start = time.perf_counter()
        bound = verify(model)
        times.append(time.perf_counter() - start)
        counted.append(cubic.prove(model).seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"cubic proof: best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s "
          f"(bound {bound.correct_count / bound.total_count:.4f}); under the FLOP counter: best {min(counted):.3f} s")
    if not args.skip_training:
        start = time.perf_counter()
        trained = train(MaxOfKConfig(seed=123), progress=False)
        print(f"training the default Max-of-4 config (3000 steps): {time.perf_counter() - start:.2f} s, "
              f"eval accuracy {trained.metrics['eval_accuracy']:.4f}")


if __name__ == "__main__":
    main()
