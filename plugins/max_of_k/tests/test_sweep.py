"""Sweeps and reports on tiny Max-of-K configs: Dask vs local, resuming, kills, concurrent sweeps."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

import gbmi_core
from gbmi_core import Store
from gbmi_core.report import collect, pareto_frontier, render, summarise
from gbmi_core.store import CorruptEntryWarning
from gbmi_core.sweep import parse_seeds, run_sweep

GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")
TINY = {"V": 6, "K": 3, "d_model": 8, "steps": 60}
STRATEGIES = ["brute-force", "cubic", "subcubic--eupu-max-diff-exact--attn-mean-query+diff--err-max-diff-exact",
              "subcubic--eupu-mean-query+max-diff--attn-drop-average-query-per-output-logit-reasoning--err-svd"]


@pytest.fixture(scope="module")
def registry():
    return gbmi_core.get_registry()


def configs(registry, seeds):
    return [registry.make_config("max-of-k", overrides={**TINY, "seed": s}) for s in seeds]


def results(store):
    out = {}
    for key in store.keys("results/max-of-k"):
        r = store.get(key).attrs
        out[key] = (r["correct_count"], r["total_count"], r["flops"])
    return out


def test_dask_local_cluster_equals_a_local_run(registry, tmp_path):
    local, dask = Store(tmp_path / "local"), Store(tmp_path / "dask")
    first = run_sweep(registry, "max-of-k", configs(registry, [0, 1, 2]), STRATEGIES, local, executor="inline",
                      progress=False)
    assert (first.done, first.skipped, first.failed) == (12, 0, ())
    second = run_sweep(registry, "max-of-k", configs(registry, [0, 1, 2]), STRATEGIES, dask, executor="dask",
                       workers=2, progress=False, chunk=1)
    assert (second.done, second.failed) == (12, ())
    assert results(local) == results(dask) and len(results(local)) == 12


def test_rerun_skips_what_is_stored(registry, tmp_path):
    store = Store(tmp_path / "s")
    run_sweep(registry, "max-of-k", configs(registry, [0, 1]), STRATEGIES[:2], store, executor="inline", progress=False)
    again = run_sweep(registry, "max-of-k", configs(registry, [0, 1, 2]), STRATEGIES[:2], store, executor="inline",
                      progress=False)
    assert (again.skipped, again.done, again.models) == (4, 2, 3)


def _sweep_cli(store, seeds, jobs="1"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    args = [GBMI, "--store", str(store), "sweep", "max-of-k", "--seeds", seeds, "--jobs", jobs]
    for field, value in TINY.items():
        args += ["--set", f"{field}={value}"]
    for name in STRATEGIES:
        args += ["--strategies", name]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_killed_sweep_rerun_loses_and_duplicates_nothing(tmp_path):
    store = Store(tmp_path / "s")
    proc = _sweep_cli(store.root, "0:6")
    deadline = time.time() + 120
    while len(list(store.keys("results/max-of-k"))) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(store.keys("results/max-of-k")))
    assert 0 < partial < 24
    rerun = _sweep_cli(store.root, "0:6")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{24 - partial} proved now, {partial} already stored, 0 failed" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptEntryWarning)
        assert len(results(store)) == 24


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (children, grandchildren, ...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", [["--jobs", "2"], ["--workers", "2"]], ids=["process-pool", "dask"])
def test_workers_exit_when_the_sweep_is_killed(tmp_path, how):
    """SIGKILL a running sweep: its workers (a process pool, or a Dask LocalCluster) are gone within seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    proc = subprocess.Popen([GBMI, "--store", str(tmp_path / "s"), "sweep", "max-of-k", "--seeds", "0:8", *how,
                             "--set", "steps=20000", "--set", "V=8", "--set", "K=3", "--set", "d_model=8",
                             "--strategies", "cubic"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None:  # wait until both workers are training
        workers = {p for p in _descendants(proc.pid) if _alive(p)}
        busy = [p for p in workers if "spawn_main" in open(f"/proc/{p}/cmdline").read() or "distributed" in
                open(f"/proc/{p}/cmdline").read()]
        if len(busy) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(workers) >= 2, "the sweep did not start its workers"
    time.sleep(3)  # inside the workers' work
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    survivors = [p for p in workers if _alive(p)]
    for p in survivors:  # do not leave them behind for the rest of the suite
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"workers outlived the killed sweep: {survivors}"


def test_two_sweeps_on_one_store(tmp_path):
    store = Store(tmp_path / "s")
    procs = [_sweep_cli(store.root, "0:4"), _sweep_cli(store.root, "2:6")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptEntryWarning)
        assert len(results(store)) == 24
        assert len(list(store.keys("models/max-of-k"))) == 6


def test_report_formats_and_plots(registry, tmp_path):
    store = Store(tmp_path / "s")
    run_sweep(registry, "max-of-k", configs(registry, [0, 1, 2]), STRATEGIES, store, executor="inline", progress=False)
    rows = collect(registry, "max-of-k", store, configs(registry, [0])[0])
    assert len(rows) == 12 and {r.seed for r in rows} == {0, 1, 2}
    assert all(r.normalised is not None and r.normalised <= 1 for r in rows)
    summary = summarise(rows)
    assert [f["family"] for f in summary["families"]] == ["brute-force", "cubic", "subcubic",
                                                         "subcubic:without-vocab-squared"]
    brute = summary["strategies"][0]
    assert brute["strategy"] == "brute-force" and brute["normalised_mean"] == 1.0 and brute["seeds"] == 3
    markdown = render(summary, "markdown")
    assert "| family | members | seeds | best bound |" in markdown and "| brute-force | 1 | 3 |" in markdown
    table = list(csv.DictReader(io.StringIO(render(summary, "csv"))))  # one table, one header
    assert [r["level"] for r in table] == ["family"] * 4 + ["strategy"] * 4
    brute_row = next(r for r in table if r["level"] == "strategy" and r["name"] == "brute-force")
    assert float(brute_row["normalised_mean"]) == 1.0 and brute_row["seeds"] == "3"
    assert json.loads(render(summary, "json"))["families"][1]["family"] == "cubic"
    assert "\\begin{tabular}" in render(summary, "latex")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    cli = subprocess.run([GBMI, "--store", str(store.root), "report", "max-of-k", *sum([["--set", f"{k}={v}"] for k, v in TINY.items()], []),
                          "--plot", str(tmp_path / "plots" / "r.svg")], capture_output=True, text=True, env=env)
    assert cli.returncode == 0, cli.stderr
    for name in ("bound-vs-flops", "bound-vs-dimension", "family-spread"):
        assert (tmp_path / "plots" / f"r-{name}.svg").read_text().lstrip().startswith("<?xml")
    empty = subprocess.run([GBMI, "--store", str(tmp_path / "empty"), "report", "max-of-k"], capture_output=True,
                           text=True, env=env)
    assert empty.returncode == 1 and "holds no results" in empty.stderr


def test_pareto_frontier():
    points = [(1, 0.5, "a"), (2, 0.4, "b"), (3, 0.9, "c"), (3, 0.8, "d"), (10, 1.0, "e")]
    assert [p[2] for p in pareto_frontier(points)] == ["a", "c", "d", "e"]


def test_seed_parsing_and_cli_errors(tmp_path):
    assert parse_seeds("0:3,7,2") == [0, 1, 2, 7]
    with pytest.raises(gbmi_core.ConfigError, match="bad --seeds 'a:b'"):
        parse_seeds("a:b")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}
    both = subprocess.run([GBMI, "--store", str(tmp_path), "sweep", "max-of-k", "--workers", "2", "--scheduler",
                           "tcp://127.0.0.1:1"], capture_output=True, text=True, env=env)
    assert both.returncode == 1 and "not both" in both.stderr
    unknown = subprocess.run([GBMI, "--store", str(tmp_path), "sweep", "max-of-k", "--strategies", "cubc"],
                             capture_output=True, text=True, env=env)
    assert unknown.returncode == 1 and "did you mean 'cubic'" in unknown.stderr
