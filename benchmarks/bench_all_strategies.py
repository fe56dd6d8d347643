"""All 102 Max-of-K strategies, search included, on the shipped model: total and per-family seconds, and
what certification costs (certified verification against the same verification in plain float64).

Target: all 102 certified, with search, within about 25 s on the project's 2-core machines, and
certified verification at most 2x the plain one.  A fresh process: nothing cached, no store.

    .venv/bin/python benchmarks/bench_all_strategies.py
"""

import collections
import time

import torch


def main():
    start_all = time.perf_counter()
    import gbmi_core
    from gbmi_core.flops import FlopCounter
    from gbmi_max_of_k import cubic, subcubic
    from gbmi_max_of_k.options import ALL_OPTIONS
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
    print(f"all {len(results)} strategies, certified: {total:.2f} s "
          f"(plus {start - start_all:.2f} s of imports and loading); all certified: {all(r.certified for r in results)}")

    # The cost of certification: the same verifications (under the FLOP counter, as prove runs them) in
    # certified intervals and in plain float64.
    certificates = {o.name: registry.strategy("max-of-k", o.name).search(model) for o in ALL_OPTIONS}
    timing = {True: 0.0, False: 0.0}
    counts = {True: [], False: []}
    for certified in (False, True):
        begin = time.perf_counter()
        with FlopCounter():
            counts[certified].append(cubic.verify(model, certified=certified).correct_count)
            for options in ALL_OPTIONS:
                bound = subcubic.verify(model, certificates[options.name], options, certified=certified)
                counts[certified].append(bound.correct_count)
        timing[certified] = time.perf_counter() - begin
    print(f"verification of cubic + 100 subcubic: certified {timing[True]:.2f} s, plain float64 {timing[False]:.2f} s, "
          f"ratio {timing[True] / timing[False]:.2f}x; counts identical: {counts[True] == counts[False]}")
    best = max((r for r in results if r.strategy.startswith("subcubic")), key=lambda r: r.accuracy_lower_bound)
    print(f"best subcubic: {best.strategy} bound {best.accuracy_lower_bound:.4f}")


if __name__ == "__main__":
    main()
