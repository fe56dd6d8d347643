"""Modular addition: every strategy on a trained model of each preset, beside the certified brute force.

Prints, per preset: training time and the step it grokked at, then per strategy the bound, verification
FLOPs (and their ratio to brute force's), and seconds (search included).  Target: the best compact bound
>= 0.9 with verification FLOPs <= 1/5 of brute force's.

    .venv/bin/python benchmarks/bench_modular.py [--preset small --preset pizza] [--seed 0]
"""

import argparse

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="presets to train and prove (default: small, pizza)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import gbmi_core
    from gbmi_modular_arithmetic.config import PRESETS, ModularConfig
    from gbmi_modular_arithmetic.train import train

    registry = gbmi_core.get_registry()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in args.preset or ["small", "pizza"]:
        trained = train(ModularConfig(**{**PRESETS[preset], "seed": args.seed}), progress=False)
        m = trained.metrics
        print(f"\n{preset} (seed {args.seed}): trained in {m['train_seconds']:.1f} s, {m['steps']} steps, grokked at "
              f"{m['grokked_at']}, held-out accuracy {m['eval_accuracy']:.4f}")
        print(f"{'strategy':14s} {'bound':>8s} {'FLOPs':>14s} {'vs brute':>9s} {'seconds':>8s}")
        results = [s.prove(trained.model) for s in registry.strategies("modular-arithmetic")]
        brute = next(r for r in results if r.strategy == "brute-force")
        for r in results:
            print(f"{r.strategy:14s} {r.accuracy_lower_bound:8.4f} {r.flops:14,d} {brute.flops / r.flops:8.1f}x "
                  f"{r.seconds:8.2f}")


if __name__ == "__main__":
    main()
