"""The induction task against its public peer (xocelyk/induction-heads-compact-proofs), on models of both recipes.

Seven seeds of induction-6 and seed 0 of induction-8, each trained twice: by our recipe (presets
``induction-6``, ``induction-8``) and by the peer's (``induction-6-peer``, ``induction-8-peer``: numpy
initialisation and data, float64, constant lr 3e-3; ``gbmi_induction.train``).  Each model is trained once
and kept in the store given by ``--store``.  Per model: both compact proofs' bound, groups proved, FLOPs and
seconds (search included), and brute force beside them on the same model, in this process (at n=8 only with
``--n8-brute-force``, about 10 minutes).

Targets (issue 20), peer recipe: n=6 mean >= 0.998 and every model >= 0.996, each proof <= 15 s; n=8 >= 0.935
within 60 s.  Our recipe: no bound below the previous pair-bounds', FLOPs below brute force's at n=6.

    .venv/bin/python benchmarks/bench_induction.py --store /tmp/gbmi-induction-bench [--n8-brute-force]
"""

import argparse
import statistics
import time

#: The peer's v4 proof (rigorous mode), run unmodified on seven n=6 models and one n=8 model of its recipe
#: (issue 20): mean / min bound, seconds per model.
PEER_N6 = (0.9985, 0.9969, 90)
PEER_N8 = (0.9326, 1343, 270)
STRATEGIES = ["pair-bounds", "pair-bounds-crude"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/gbmi-induction-bench")
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--recipes", default="peer,gbmi", help="comma-separated: peer, gbmi")
    parser.add_argument("--n8-brute-force", action="store_true", help="also run brute force at n=8 (~10 min)")
    args = parser.parse_args()

    import torch

    import gbmi_core

    registry = gbmi_core.get_registry()
    store = gbmi_core.Store(args.store)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; store {args.store}")

    def run(preset, seed, brute=True):
        config = registry.make_config("induction", preset=preset, overrides={"seed": seed})
        model, _ = registry.train_or_load("induction", config, store=store, progress=True)
        rows = {}
        for name in STRATEGIES + (["brute-force"] if brute else []):
            start = time.perf_counter()
            result = registry.strategy("induction", name).prove(model)
            rows[name] = (result, time.perf_counter() - start)
        base = rows.get("brute-force")
        for name, (result, seconds) in rows.items():
            groups = result.extra.get("groups_proved")
            groups = f"{groups}/{result.extra['groups']}" if groups is not None else ""
            ratio = (f"{base[0].flops / result.flops:8.1f}x {base[1] / seconds:8.1f}x" if base and name != "brute-force"
                     else f"{'':9s} {'':9s}")
            print(f"{preset + ' s' + str(seed):20s} {name:18s} {result.accuracy_lower_bound:7.4f} {groups:>10s} "
                  f"{result.flops:9.3g} {seconds:8.2f} {ratio}", flush=True)
        return rows

    for recipe in args.recipes.split(","):
        suffix = "-peer" if recipe == "peer" else ""
        print(f"\n== {'the peer' if recipe == 'peer' else 'our'} recipe ==")
        print(f"{'model':20s} {'strategy':18s} {'bound':>7s} {'groups':>10s} {'FLOPs':>9s} {'seconds':>8s} "
              f"{'brute force: FLOPs':>18s}x {'seconds':>8s}x")
        results = {name: [] for name in STRATEGIES}
        worst_seconds, below = 0.0, 0
        for seed in range(args.seeds):
            rows = run("induction-6" + suffix, seed)
            for name in STRATEGIES:
                results[name].append(rows[name][0].accuracy_lower_bound)
            worst_seconds = max(worst_seconds, rows["pair-bounds"][1])
            below += rows["pair-bounds"][0].flops < rows["brute-force"][0].flops
        n8 = run("induction-8" + suffix, 0, brute=args.n8_brute_force)
        print()
        for name in STRATEGIES:
            bounds = results[name]
            print(f"n=6 {name} over {len(bounds)} seeds: mean {statistics.mean(bounds):.4f}, min {min(bounds):.4f}"
                  + (f"; slowest proof {worst_seconds:.1f} s; FLOPs below brute force on {below}/{len(bounds)}"
                     if name == "pair-bounds" else ""))
            result, seconds = n8[name]
            print(f"n=8 {name} seed 0: {result.accuracy_lower_bound:.4f} "
                  f"({result.extra['groups_proved']}/{result.extra['groups']} groups) in {seconds:.1f} s")
        if recipe == "peer":
            print(f"targets: n=6 mean >= 0.998, every model >= 0.996, <= 15 s each; n=8 >= 0.935 in <= 60 s.  "
                  f"Peer v4 (rigorous) on its recipe's models: n=6 mean {PEER_N6[0]:.4f}, min {PEER_N6[1]:.4f}, "
                  f"~{PEER_N6[2]} s each; n=8 {PEER_N8[0]:.4f} ({PEER_N8[1]}/1440), ~{PEER_N8[2]} s")


if __name__ == "__main__":
    main()
