"""The induction task against its public peer (xocelyk/induction-heads-compact-proofs, results/v4_*.log).

Seven seeds of induction-6 trained by our recipe (``gbmi_induction.train``; each model is trained once and
kept in the store given by ``--store``), and seed 0 of induction-8.  Per model: the compact proofs'
bound, FLOPs and seconds (search included), and brute force beside them on the same model, in this process.

Targets: n=6 mean bound >= 0.995, every seed >= 0.98, pair-bounds' FLOPs and seconds below brute force's;
n=8 bound >= 0.95 within 20 s, brute force over all 3.5e8 inputs within 15 minutes (``--n8-brute-force``).

    .venv/bin/python benchmarks/bench_induction.py --store /tmp/induction-bench [--n8-brute-force]
"""

import argparse
import statistics
import time

PEER_N6 = [0.9990, 0.9969, 0.9990, 0.9760, 1.0000, 0.9969, 0.9958]  # v4, 7 seeds, ~8 s float / ~52 s rigorous
PEER_N8 = 0.9368  # 1349/1440 in 37 s float / 174 s rigorous; brute force estimated at 0.64 h


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/gbmi-induction-bench")
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--n8-brute-force", action="store_true", help="also run brute force at n=8 (~10 min)")
    args = parser.parse_args()

    import torch

    import gbmi_core

    registry = gbmi_core.get_registry()
    store = gbmi_core.Store(args.store)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; store {args.store}")
    header = (f"{'model':14s} {'strategy':18s} {'bound':>7s} {'FLOPs':>9s} {'seconds':>8s} "
              f"{'vs brute force: FLOPs':>22s} {'seconds':>8s}")

    def run(preset, seed, brute=True):
        config = registry.make_config("induction", preset=preset, overrides={"seed": seed})
        model, _ = registry.train_or_load("induction", config, store=store, progress=False)
        rows = {}
        names = ["pair-bounds", "pair-bounds-crude"] + (["brute-force"] if brute else [])
        for name in names:
            start = time.perf_counter()
            result = registry.strategy("induction", name).prove(model)
            rows[name] = (result, time.perf_counter() - start)
        base = rows.get("brute-force")
        for name in names:
            result, seconds = rows[name]
            ratio = (f"{base[0].flops / result.flops:21.1f}x {base[1] / seconds:7.1f}x" if base and name != "brute-force"
                     else f"{'':22s} {'':8s}")
            print(f"{preset + ' s' + str(seed):14s} {name:18s} {result.accuracy_lower_bound:7.4f} "
                  f"{result.flops:9.3g} {seconds:8.2f} {ratio}")
        return rows

    print(header)
    bounds, faster = [], []
    for seed in range(args.seeds):
        rows = run("induction-6", seed)
        pair, pair_seconds = rows["pair-bounds"]
        brute, brute_seconds = rows["brute-force"]
        bounds.append(pair.accuracy_lower_bound)
        faster.append(pair.flops < brute.flops and pair_seconds < brute_seconds)
    print(f"\nn=6 pair-bounds over {len(bounds)} seeds: mean {statistics.mean(bounds):.4f} (target >= 0.995; "
          f"peer {statistics.mean(PEER_N6):.4f}), min {min(bounds):.4f} (target >= 0.98; peer {min(PEER_N6):.4f}); "
          f"FLOPs and seconds below brute force on {sum(faster)}/{len(faster)} seeds")
    rows = run("induction-8", 0, brute=args.n8_brute_force)
    pair, seconds = rows["pair-bounds"]
    print(f"\nn=8 seed 0 pair-bounds: {pair.accuracy_lower_bound:.4f} in {seconds:.1f} s (target >= 0.95 in <= 20 s; "
          f"peer {PEER_N8:.4f} in 174 s certified)")
    if "brute-force" in rows:
        brute, brute_seconds = rows["brute-force"]
        print(f"n=8 brute force: {brute.correct_count}/{brute.total_count} in {brute_seconds:.0f} s "
              f"(target <= 900 s; peer estimate 2300 s)")


if __name__ == "__main__":
    main()
