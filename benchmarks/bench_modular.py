"""Modular arithmetic: every strategy on the shipped grokked models, beside the certified brute force.

Prints, per model: its training time and the step it grokked at (from the file's header, or measured with
``--train``), then per strategy the bound, verification FLOPs (and brute force's FLOPs over them), and seconds
(search included), and the TransformerLens float forward over the same p^2 inputs (the price of
certification).  Target: the best compact bound >= 0.9 with verification FLOPs <= 1/5 of brute force's.

    .venv/bin/python benchmarks/bench_modular.py                       # the shipped clock and pizza
    .venv/bin/python benchmarks/bench_modular.py --train small --seed 3  # train a preset's seed, then prove
"""

import argparse
import time

import torch


def _forward_seconds(model, p: int, eq_token: bool) -> float:
    from gbmi_modular_arithmetic.model import pairs, tokens_of

    tokens = tokens_of(pairs(p), p, eq_token)
    start = time.perf_counter()
    with torch.no_grad():
        for chunk in tokens.split(4096):
            model(chunk)[:, -1].argmax(-1)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="append", metavar="PRESET", help="train these presets instead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import gbmi_core
    from gbmi_core.evaluate import Network
    from gbmi_core.models import read_model_file
    from gbmi_modular_arithmetic.config import PRESETS, ModularConfig
    from gbmi_modular_arithmetic.reference import SHIPPED, load_reference_model
    from gbmi_modular_arithmetic.train import train

    registry = gbmi_core.get_registry()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.train:
        runs = []
        for preset in args.train:
            trained = train(ModularConfig(**{**PRESETS[preset], "seed": args.seed}), progress=False)
            runs.append((f"{preset} seed {args.seed} (trained here)", trained.model, trained.metrics))
    else:
        runs = [(name, load_reference_model(name), read_model_file(SHIPPED.directory / name)[1]["metrics"])
                for name in SHIPPED.configs]
    met = []
    for name, model, m in runs:
        arch = Network.of(model).arch
        p, eq = arch["d_vocab_out"], arch["n_ctx"] == 3
        print(f"\n{name}: trained in {m['train_seconds']:.0f} s, {m['steps']} steps, grokked at {m['grokked_at']}, "
              f"held-out accuracy {m['eval_accuracy']:.4f}")
        print(f"{'strategy':14s} {'bound':>8s} {'FLOPs':>10s} {'brute/it':>9s} {'seconds':>8s}")
        results = [s.prove(model) for s in registry.strategies("modular-arithmetic")]
        brute = next(r for r in results if r.strategy == "brute-force")
        for r in results:
            print(f"{r.strategy:14s} {r.accuracy_lower_bound:8.4f} {r.flops:10.3g} {brute.flops / r.flops:8.1f}x "
                  f"{r.seconds:8.2f}")
        forward = _forward_seconds(model, p, eq)
        print(f"TransformerLens float forward over the {p * p} inputs: {forward:.2f} s "
              f"(certified brute force {brute.seconds / forward:.1f}x that)")
        good = [r for r in results if r.strategy != "brute-force" and r.accuracy_lower_bound >= 0.9
                and r.flops * 5 <= brute.flops]
        met.append(bool(good))
        print("target (compact bound >= 0.9 at <= 1/5 of brute force's FLOPs): "
              + (f"met by {', '.join(r.strategy for r in good)}" if good else "NOT met"))
    return 0 if all(met) else 1


if __name__ == "__main__":
    raise SystemExit(main())
