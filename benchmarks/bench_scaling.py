"""How the proofs' cost grows: wall time, FLOPs and peak memory of brute force (where feasible), the cubic
proof and the best subcubic variant, against V in {32, 64, 128, 256, 512} at K=4 and against K in
{4, 5, 10, 20} at V=64, with fitted exponents and a log-log plot.

Each (model, strategy) runs in a fresh process, so its peak memory is its own: ``peak`` is the process's
peak resident set, ``proof`` that minus the resident set after imports and loading the model.  Models are
trained (default recipe, seed 123) or loaded from the store (``--store``, default a folder under /tmp).

    .venv/bin/python benchmarks/bench_scaling.py                 # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_scaling.py --plot docs/scaling.png

Expected: the FLOP exponent in V is about 3 for cubic (``V^3`` for its F table, ``V^3 log V`` to sort it)
and about 2 for subcubic; brute force grows as ``V^(K+1)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import pathlib
import sys

SUBCUBIC = "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-exact-EQKE+max-diff-exact"
STRATEGIES = {"brute force": "brute-force", "cubic": "cubic", "best subcubic": SUBCUBIC}
V_SWEEP = [(V, 4) for V in (32, 64, 128, 256, 512)]
K_SWEEP = [(64, K) for K in (4, 5, 10, 20)]


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(store_root: str, V: int, K: int, strategy: str) -> dict:
    """In a fresh process: load (or train) the model, run one proof, report time, FLOPs and memory."""
    import time

    import gbmi_core
    from gbmi_core import Store

    registry = gbmi_core.get_registry()
    config = registry.make_config("max-of-k", overrides={"V": V, "K": K})
    model, _ = registry.train_or_load("max-of-k", config, Store(store_root), progress=False)
    base = _rss_mb()
    start = time.perf_counter()
    result = registry.strategy("max-of-k", strategy).prove(model)
    return {"seconds": time.perf_counter() - start, "flops": result.flops, "bound": result.accuracy_lower_bound,
            "peak_mb": _rss_mb(), "proof_mb": _rss_mb() - base, "certified": result.certified}


def fit_exponent(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/gbmi-bench-scaling", help="store for the trained models")
    parser.add_argument("--brute-force-limit", type=float, default=2**28,
                        help="run brute force only where V^K is at most this (default 2^28)")
    parser.add_argument("--plot", default=None, help="write the log-log plot here (.png or .svg)")
    parser.add_argument("--quick", action="store_true", help="only V <= 128 and K <= 10 (a smoke test)")
    args = parser.parse_args(argv)
    sizes = {"V": V_SWEEP, "K": K_SWEEP}
    if args.quick:
        sizes = {"V": [s for s in V_SWEEP if s[0] <= 128], "K": [s for s in K_SWEEP if s[1] <= 10]}
    context = multiprocessing.get_context("spawn")
    rows = {}
    print(f"{'V':>4s} {'K':>3s} {'strategy':14s} {'bound':>7s} {'FLOPs':>10s} {'seconds':>8s} {'peak MB':>8s} "
          f"{'proof MB':>8s}", flush=True)
    for V, K in dict.fromkeys(sizes["V"] + sizes["K"]):
        for label, strategy in STRATEGIES.items():
            if strategy == "brute-force" and V**K > args.brute_force_limit:
                continue
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                row = pool.submit(measure, args.store, V, K, strategy).result()
            rows[V, K, label] = row
            print(f"{V:4d} {K:3d} {label:14s} {row['bound']:7.4f} {row['flops']:10.3e} {row['seconds']:8.2f} "
                  f"{row['peak_mb']:8.0f} {row['proof_mb']:8.0f}", flush=True)
    print("\nfitted exponents (least squares on log-log):")
    fits = {}
    for axis, points in sizes.items():
        for label in STRATEGIES:
            got = [(V if axis == "V" else K, rows[V, K, label]) for V, K in points if (V, K, label) in rows]
            if len(got) < 2:
                continue
            x = [g[0] for g in got]
            fits[axis, label] = {what: fit_exponent(x, [g[1][what] for g in got]) for what in ("flops", "seconds")}
            print(f"  against {axis} ({', '.join(map(str, x))}; {'K=4' if axis == 'V' else 'V=64'}): {label:14s} "
                  f"FLOPs ~ {axis}^{fits[axis, label]['flops']:.2f}, seconds ~ {axis}^{fits[axis, label]['seconds']:.2f}")
    if args.plot:
        plot(rows, sizes, fits, pathlib.Path(args.plot))
        print(f"wrote {args.plot}")


def plot(rows, sizes, fits, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = {"brute force": "tab:red", "cubic": "tab:blue", "best subcubic": "tab:green"}
    for ax, (axis, points) in zip(axes, sizes.items()):
        for label in STRATEGIES:
            got = [(V if axis == "V" else K, rows[V, K, label]) for V, K in points if (V, K, label) in rows]
            if not got:
                continue
            x = [g[0] for g in got]
            slope = fits.get((axis, label), {}).get("flops")
            name = label if slope is None else f"{label} (FLOPs ~ {axis}^{slope:.2f})"
            ax.plot(x, [g[1]["flops"] for g in got], "o-", color=colours[label], label=name)
            ax.plot(x, [g[1]["seconds"] * 1e9 for g in got], "x:", color=colours[label], alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"{axis} ({'K = 4' if axis == 'V' else 'V = 64'})")
        ax.set_ylabel("verification FLOPs (solid); wall seconds × 1e9 (dotted)")
        ax.set_title(f"Max-of-K proof cost against {axis}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
