"""Sweep throughput: an N-seed x all-strategy sweep of the default Max-of-4 config, and the speed-up of
2 Dask workers over 1 on a smaller sweep.  Fresh temporary stores, so everything is trained and proved.

    .venv/bin/python benchmarks/bench_sweep.py --seeds 16            # the 16-seed sweep (~10 min), local pool
    .venv/bin/python benchmarks/bench_sweep.py --dask-only --small-seeds 4

Prints wall times, the extrapolation to the paper's 151 seeds, and the Table-1 summary in markdown.
"""

import argparse
import tempfile
import time


def sweep(registry, seeds, store, **kwargs):
    from gbmi_core.sweep import run_sweep

    configs = [registry.make_config("max-of-k", overrides={"seed": s}) for s in seeds]
    names = [s.name for s in registry.strategies("max-of-k")]
    start = time.perf_counter()
    summary = run_sweep(registry, "max-of-k", configs, names, store, progress=True, **kwargs)
    assert not summary.failed, summary.failed[:3]
    return time.perf_counter() - start, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--small-seeds", type=int, default=4, help="seeds of the Dask 1-vs-2 worker comparison")
    parser.add_argument("--dask-only", action="store_true")
    args = parser.parse_args()

    import gbmi_core
    from gbmi_core import Store
    from gbmi_core.report import collect, render, summarise

    registry = gbmi_core.get_registry()
    if not args.dask_only:
        with tempfile.TemporaryDirectory() as root:
            store = Store(root)
            seconds, summary = sweep(registry, range(args.seeds), store, executor="processes", jobs=2)
            print(f"{args.seeds}-seed x {summary.pairs // args.seeds}-strategy sweep, local pool of 2: "
                  f"{seconds:.0f} s; extrapolated to 151 seeds: {seconds * 151 / args.seeds / 3600:.2f} h")
            rows = collect(registry, "max-of-k", store, registry.make_config("max-of-k"))
            print(render(summarise(rows), "markdown"))
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as root:
            times[workers], _ = sweep(registry, range(100, 100 + args.small_seeds), Store(root), executor="dask",
                                      workers=workers)
        print(f"Dask LocalCluster, {workers} worker(s), {args.small_seeds} seeds x all strategies: "
              f"{times[workers]:.1f} s")
    print(f"speed-up of 2 workers over 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
