"""``gbmi-check PATH...``: check bundles (files, or folders of ``*.gbmi-proof.npz``); exit 1 on any disagreement."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from . import check


def _bundles(paths):
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            yield from sorted(path.glob("*.gbmi-proof.npz"))
        else:
            yield path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gbmi-check", description="Check gbmi proof bundles independently "
                                     "of gbmi (numpy and FLINT only); exit 1 if any bundle disagrees.")
    parser.add_argument("paths", nargs="+", help="bundle files or folders of *.gbmi-proof.npz")
    args = parser.parse_args(argv)
    bundles = list(_bundles(args.paths))
    missing = [str(p) for p in bundles if not p.exists()]
    if missing:
        print(f"gbmi-check: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not bundles:
        print("gbmi-check: error: no bundles found", file=sys.stderr)
        return 2
    bad = 0
    for path in bundles:
        start = time.perf_counter()
        verdict = check(path)
        bad += not verdict.agree
        print(f"{path}: {verdict.message} [{time.perf_counter() - start:.1f} s]", flush=True)
    if bad:
        print(f"{bad} of {len(bundles)} bundles disagree", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
