"""Commands on a shared machine: gbmi's own thread sizing against every fixed thread count, quiet and with
one core kept busy by another process (started here).

For each command and situation it prints the seconds with ``OMP_NUM_THREADS`` = 1 .. cores (fixed) and with
nothing set (gbmi sizes its threads to the free cores, :mod:`gbmi_core.threads`), and the ratio of the latter
to the best fixed count.  Target: every ratio <= 1.5.  Each command runs in a fresh process on a store that
already holds its model (a warm-up run imports the shipped file first), so the times are imports, search
and verification.

    .venv/bin/python benchmarks/bench_threads.py            # brute force, all 102 Max-of-K strategies, pizza
    .venv/bin/python benchmarks/bench_threads.py --quick    # brute force only
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")
COMMANDS = {
    "max-of-4 brute force": ["prove", "max-of-k", "--seed", "123", "--strategy", "brute-force"],
    "max-of-4, all 102": ["prove", "max-of-k", "--seed", "123", "--strategy", "all"],
    "pizza, all 5": ["prove", "modular-arithmetic", "--preset", "pizza"],
}


def _run(store: str, args: list[str], threads: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GBMI_THREADS", "GBMI_STORE")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run([GBMI, "--store", store, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the Max-of-4 brute force")
    args = parser.parse_args()
    from gbmi_core.threads import cores

    n = cores()
    commands = {k: v for k, v in COMMANDS.items() if not args.quick or k == "max-of-4 brute force"}
    counts = list(range(1, n + 1))
    worst = 0.0
    with tempfile.TemporaryDirectory() as store:
        for command in commands.values():  # import the shipped models once
            _run(store, command, None)
        for situation in ("quiet", "one core busy"):
            spinner = None
            if situation != "quiet":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)
            try:
                print(f"\n{situation} ({n} cores)")
                header = " ".join(f"{f'{t} thr':>8s}" for t in counts)
                print(f"{'command':24s} {header} {'gbmi':>8s} {'gbmi/best':>10s}")
                for name, command in commands.items():
                    fixed = [_run(store, command, t) for t in counts]
                    sized = _run(store, command, None)
                    ratio = sized / min(fixed)
                    worst = max(worst, ratio)
                    print(f"{name:24s} " + " ".join(f"{s:8.1f}" for s in fixed) + f" {sized:8.1f} {ratio:9.2f}x",
                          flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print(f"\nworst gbmi/best: {worst:.2f}x (target <= 1.5x)")
    return 0 if worst <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
