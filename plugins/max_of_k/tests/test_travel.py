"""Stores that travel: a sweep on two Dask workers that share no disk, only an S3 server (a real one, moto's,
on this machine); one worker SIGKILLed mid-sweep; the store it leaves read back as a local sweep's, from S3
and from an exported archive (report, results, check, and the independent checker)."""

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

from gbmi_core import Store
from gbmi_core.store import CorruptEntryWarning

from .conftest import GBMI, gbmi

pytest.importorskip("moto")
pytest.importorskip("s3fs")

TINY = ["--set", "V=6", "--set", "K=3", "--set", "d_model=8", "--set", "steps=60"]
SEEDS = "0:4"
TIMINGS = {"seconds", "search_seconds", "verify_seconds"}


def _env(s3, home):
    """A process's environment on its own 'machine': the S3 settings, its own home and temporary folder."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GBMI_", "AWS_", "DASK_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    return {**base, **s3, "HOME": str(home), "TMPDIR": str(home / "tmp"), "MPLCONFIGDIR": str(home / "mpl")}


def _gbmi(args, env, cwd, timeout=600):
    return subprocess.run([GBMI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _rows(csv_text):
    rows = [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(io.StringIO(csv_text))]
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_sweep_across_machines_with_no_shared_disk(tmp_path, monkeypatch):
    from gbmi_core.testing import s3_server

    with s3_server() as s3:
        for name, value in s3.items():  # this process reads the store too
            monkeypatch.setenv(name, value)
        url = f"s3://{s3['GBMI_TEST_BUCKET']}/sweep"
        machines = {name: tmp_path / name for name in ("scheduler", "worker-1", "worker-2", "client")}
        for folder in machines.values():
            folder.mkdir()
        processes = []
        try:
            scheduler = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--no-dashboard", "--scheduler-file", "scheduler.json"],
                cwd=machines["scheduler"], env=_env(s3, machines["scheduler"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(scheduler)
            address_file = machines["scheduler"] / "scheduler.json"
            deadline = time.time() + 60
            while not address_file.exists() and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)
            address = json.loads(address_file.read_text())["address"]
            workers = []
            for name in ("worker-1", "worker-2"):  # each in its own folder, with its own home: no common path
                folder = machines[name]
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--local-directory", str(folder / "dask")],
                    cwd=folder, env=_env(s3, folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            processes += workers
            client = machines["client"]
            client_env = _env(s3, client)
            before = _files(client)
            sweep = subprocess.Popen([GBMI, "--store", url, "sweep", "max-of-k", "--seeds", SEEDS, "--scheduler",
                                      address, *TINY], cwd=client, env=client_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            processes.append(sweep)
            watcher = Store(url)
            deadline = time.time() + 300
            while len(list(watcher.keys("results/max-of-k"))) < 120 and time.time() < deadline:
                assert sweep.poll() is None, sweep.communicate()
                time.sleep(0.2)
            assert sweep.poll() is None and len(list(watcher.keys("results/max-of-k"))) < 408
            os.kill(workers[0].pid, signal.SIGKILL)  # mid-sweep: it is proving (and writing) its share
            workers[0].wait()
            out, err = sweep.communicate(timeout=600)
            # Dask runs the lost worker's units again on the other: the sweep completes
            assert sweep.returncode == 0 and "408 proved now, 0 already stored, 0 failed" in out, (out, err)
            again = _gbmi(["--store", url, "sweep", "max-of-k", "--seeds", SEEDS, "--scheduler", address, *TINY],
                          client_env, client)
            assert again.returncode == 0 and "0 proved now, 408 already stored, 0 failed" in again.stdout, again.stderr
            assert _files(client) == before, "the client wrote files locally"
            for name in ("worker-1", "worker-2"):  # nothing of the store is on a worker's disk
                assert not any("results" in path or "entries" in path for path in _files(machines[name]))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error", CorruptEntryWarning)  # a killed writer left nothing half-written
            stored = Store(url)
            assert len(stored.get_many(list(stored.keys("results/max-of-k")))) == 408
            assert all(entry is not None for entry in stored.get_many(list(stored.keys())).values())

        # the same sweep on a local disk gives the same results
        local = tmp_path / "local-store"
        here = _env(s3, tmp_path / "local-home")
        done = _gbmi(["--store", str(local), "sweep", "max-of-k", "--seeds", SEEDS, "--jobs", "2", *TINY], here, tmp_path)
        assert done.returncode == 0, done.stderr
        expected = _gbmi(["--store", str(local), "results", "max-of-k", "--format", "csv"], here, tmp_path)
        from_s3 = _gbmi(["--store", url, "results", "max-of-k", "--format", "csv"], here, tmp_path)
        assert expected.returncode == 0 and from_s3.returncode == 0, from_s3.stderr
        assert _rows(from_s3.stdout) == _rows(expected.stdout) and len(_rows(expected.stdout)) == 408

        # report, results and check straight from S3 and from an exported archive
        report = _gbmi(["--store", url, "report", "max-of-k", *TINY], here, tmp_path)
        assert report.returncode == 0 and "brute-force" in report.stdout, report.stderr
        checked = _gbmi(["check", url, "--match", "*/cubic.*"], here, tmp_path)
        assert checked.returncode == 0 and checked.stdout.count(": agree:") == 4, checked.stdout + checked.stderr
        archive = tmp_path / "sweep.zip"
        exported = _gbmi(["store", "export", url, "--to", str(archive), "--bundles"], here, tmp_path)
        assert exported.returncode == 0 and "408 bundles" in exported.stdout, exported.stderr
        from_zip = _gbmi(["--store", str(archive), "results", "max-of-k", "--format", "csv"], here, tmp_path)
        assert _rows(from_zip.stdout) == _rows(expected.stdout)
        report_zip = _gbmi(["--store", str(archive), "report", "max-of-k", *TINY], here, tmp_path)
        assert report_zip.returncode == 0 and report_zip.stdout == report.stdout
        for how in ([], ["--independent"]):
            checked = _gbmi(["check", str(archive), "--match", "*/brute-force.*", *how], here, tmp_path)
            assert checked.returncode == 0 and checked.stdout.count("agree") >= 4, checked.stdout + checked.stderr


def test_check_reads_an_archive_and_rejects_a_forged_result(tmp_path):
    """A result whose entry is well-formed (its checksum recomputed) but claims one input more than was
    proved: `gbmi check` on the archive rebuilds the bundle from the entries and verification refuses it."""
    from gbmi_core.export import export_store

    local = tmp_path / "store"
    proved = gbmi("--store", str(local), "prove", "max-of-k", "--seed", "0", *TINY, "--strategy", "brute-force",
                  "--strategy", "cubic")
    assert proved.returncode == 0, proved.stderr
    store = Store(local)
    export_store(store, tmp_path / "honest.zip")
    honest = gbmi("check", str(tmp_path / "honest.zip"))
    assert honest.returncode == 0 and honest.stdout.count(": agree:") == 2, honest.stdout + honest.stderr
    key = next(k for k in store.keys("results/max-of-k") if k.endswith("/brute-force"))
    claim = dict(store.get(key).attrs)
    claim["correct_count"] += 1
    claim["accuracy_lower_bound"] = claim["correct_count"] / claim["total_count"]
    store.put(key, {}, claim)
    export_store(store, tmp_path / "forged.zip")
    forged = gbmi("check", str(tmp_path / "forged.zip"))
    assert forged.returncode == 1 and "brute-force.gbmi-proof.npz: disagree" in forged.stdout, forged.stdout
    assert "1 of 2 bundles disagree" in forged.stderr
    cubic = next(k for k in store.keys("results/max-of-k") if k.endswith("/cubic"))
    store.put(cubic, {}, {"correct_count": "all of them"})  # malformed, its checksum recomputed
    export_store(store, tmp_path / "malformed.zip")
    malformed = gbmi("check", str(tmp_path / "malformed.zip"))
    assert malformed.returncode == 1 and "cubic.gbmi-proof.npz: disagree: cannot be rebuilt" in malformed.stdout
