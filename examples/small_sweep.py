"""A small sweep: a handful of Max-of-4 seeds x every strategy, then the Table-1 summary and the plots.

    .venv/bin/python examples/small_sweep.py [--seeds 0:4] [--store DIR] [--plots DIR]

It uses the programmatic API (the same as `gbmi sweep` / `gbmi report`).  Models are trained (or loaded
from the store) and every result is stored, so running it again is instant.
"""

import argparse
import pathlib

import gbmi_core
from gbmi_core import Store
from gbmi_core.report import collect, plot, render, summarise
from gbmi_core.sweep import parse_seeds, run_sweep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:4")
    parser.add_argument("--store", default="gbmi-store", help="store directory (default ./gbmi-store)")
    parser.add_argument("--plots", default="plots", help="where to write the plots (PNG)")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes (default: one per CPU)")
    args = parser.parse_args()

    registry = gbmi_core.get_registry()
    store = Store(args.store)
    configs = [registry.make_config("max-of-k", overrides={"seed": seed}) for seed in parse_seeds(args.seeds)]
    strategies = [s.name for s in registry.strategies("max-of-k")]
    summary = run_sweep(registry, "max-of-k", configs, strategies, store, jobs=args.jobs)
    print(f"{summary.done} proofs run, {summary.skipped} already stored, {summary.seconds:.0f} s")
    rows = collect(registry, "max-of-k", store, registry.make_config("max-of-k"))
    table = summarise(rows)
    print(render(table, "table"))
    for path in plot(rows, table, pathlib.Path(args.plots) / "max-of-4.png", title="Max-of-4: "):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
