"""All 102 Max-of-K strategies, search included, on the shipped model: total and per-family seconds.

Target: <= 60 s on the project's 2-core machines.  A fresh process, so nothing is cached in memory and
no store is used (every certificate is searched).

    .venv/bin/python benchmarks/bench_all_strategies.py
"""

import collections
import time

import torch


def main():
    start_all = time.perf_counter()
    import gbmi_core
    from gbmi_max_of_k.reference import load_reference_model

    model = load_reference_model()
    registry = gbmi_core.get_registry()
    per_family = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # count, total, search, verify
    results = []
    start = time.perf_counter()
    for strategy in registry.strategies("max-of-k"):
        result = strategy.prove(model)
        results.append(result)
        family = per_family[strategy.spec.family]
        family[0] += 1
        family[1] += result.seconds
        family[2] += result.search_seconds
        family[3] += result.verify_seconds
    total = time.perf_counter() - start
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'family':34s} {'n':>3s} {'total s':>8s} {'search s':>9s} {'verify s':>9s}")
    for name, (count, seconds, search, verify) in sorted(per_family.items()):
        print(f"{name:34s} {count:3d} {seconds:8.2f} {search:9.2f} {verify:9.2f}")
    print(f"all {len(results)} strategies: {total:.2f} s (plus {start - start_all:.2f} s of imports and loading)")
    best = max((r for r in results if r.strategy.startswith("subcubic")), key=lambda r: r.accuracy_lower_bound)
    print(f"best subcubic: {best.strategy} bound {best.accuracy_lower_bound:.4f}")


if __name__ == "__main__":
    main()
