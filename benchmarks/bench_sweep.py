"""Sweep throughput: an N-seed x all-strategy sweep of the default Max-of-4 config, and the speed-up of
2 Dask workers over 1 on a smaller sweep.  Fresh temporary stores, so everything is trained and proved.

    .venv/bin/python benchmarks/bench_sweep.py --seeds 16            # the 16-seed sweep (~2 min), local pool
    .venv/bin/python benchmarks/bench_sweep.py --seeds 151 --no-dask --keep /tmp/paper   # the paper's sweep
    .venv/bin/python benchmarks/bench_sweep.py --dask-only --small-seeds 4

Prints wall times with the workers' time split into training, search, verification and the rest (storing,
imports, scheduling, idle), the extrapolation to the paper's 151 seeds, the size of the sweep exported to
one archive and the time of `gbmi report` from it, and the Table-1 summary in markdown.
"""

import argparse
import os
import pathlib
import subprocess
import sys
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


def split(store, summary, seconds, jobs):
    """Where the workers' time went: training, search, verification (from the stored results), the rest."""
    search = verify = 0.0
    for entry in store.get_many(list(store.keys("results/max-of-k"))).values():
        search += entry.attrs["search_seconds"]
        verify += entry.attrs["verify_seconds"]
    worker = seconds * jobs
    rest = worker - summary.train_seconds - search - verify
    print(f"  the {jobs} workers' {worker:.0f} s: training {summary.train_seconds:.0f} s "
          f"({summary.train_seconds / worker:.0%}), search {search:.0f} s ({search / worker:.0%}), verification "
          f"{verify:.0f} s ({verify / worker:.0%}), the rest (store, imports, scheduling, idle) {rest:.0f} s "
          f"({rest / worker:.0%})")


def archive(root, scratch, seeds):
    """Export the sweep to one zip and time `gbmi report` from it (a fresh process, as a reader would)."""
    gbmi = str(pathlib.Path(sys.executable).parent / "gbmi")
    target = pathlib.Path(scratch) / "sweep.zip"
    start = time.perf_counter()
    subprocess.run([gbmi, "store", "export", str(root), "--to", str(target)], check=True, capture_output=True)
    exported = time.perf_counter() - start
    size = target.stat().st_size
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    start = time.perf_counter()
    subprocess.run([gbmi, "--store", str(target), "report", "max-of-k"], check=True, capture_output=True, env=env)
    report = time.perf_counter() - start
    print(f"  exported in {exported:.1f} s to one archive of {size / 1e6:.1f} MB ({size / seeds / 1e6:.2f} MB per seed, "
          f"{size / seeds * 151 / 1e6:.0f} MB at 151 seeds); `gbmi --store sweep.zip report max-of-k`: {report:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--small-seeds", type=int, default=4, help="seeds of the Dask 1-vs-2 worker comparison")
    parser.add_argument("--dask-only", action="store_true")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask 1-vs-2 worker comparison")
    parser.add_argument("--keep", default=None, metavar="DIR", help="sweep into DIR (kept) instead of a temporary store")
    args = parser.parse_args()

    import gbmi_core
    from gbmi_core import Store
    from gbmi_core.report import collect, render, summarise

    registry = gbmi_core.get_registry()
    if not args.dask_only:
        with tempfile.TemporaryDirectory() as scratch:
            root = args.keep or scratch
            store = Store(root)
            jobs = 2
            seconds, summary = sweep(registry, range(args.seeds), store, executor="processes", jobs=jobs)
            print(f"{args.seeds}-seed x {summary.pairs // args.seeds}-strategy sweep, local pool of {jobs}: "
                  f"{seconds:.0f} s = {seconds / 60:.1f} min; extrapolated to 151 seeds: "
                  f"{seconds * 151 / args.seeds / 60:.1f} min")
            split(store, summary, seconds, jobs)
            rows = collect(registry, "max-of-k", store, registry.make_config("max-of-k"))
            archive(root, scratch, args.seeds)
            print(render(summarise(rows), "markdown"))
        if args.no_dask:
            return
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
