"""Thread sizing on a shared machine (gbmi_core.threads): measured from /proc/stat, overridable, validated."""

import os
import subprocess
import sys
import time

import pytest

from gbmi_core import GbmiError, threads

GBMI = os.path.join(os.path.dirname(sys.executable), "gbmi")
needs_proc = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat here")


@needs_proc
def test_a_busy_core_is_seen_and_left_free():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = threads.busy_cores(0.2)
        assert busy is not None and busy >= 0.7  # the spinner (other tests may add more)
        assert threads.free_threads(0.2) <= max(1, threads.cores() - 1)
    finally:
        spinner.kill()
        spinner.wait()
    assert 1 <= threads.free_threads() <= threads.cores()


def test_an_explicit_count_wins_and_a_users_omp_setting_stands(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("GBMI_THREADS", "1")
        monkeypatch.setenv("OMP_NUM_THREADS", "7")
        assert threads.size_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
        monkeypatch.delenv("GBMI_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.size_threads() is None and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("GBMI_THREADS", value)
    with pytest.raises(GbmiError, match="GBMI_THREADS"):
        threads.requested()


def test_the_cli_refuses_a_bad_thread_count(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GBMI_")}, "GBMI_THREADS": "many"}
    run = subprocess.run([GBMI, "--store", str(tmp_path / "s"), "prove", "max-of-k", "--preset", "nope"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip() == "Error: GBMI_THREADS='many' is not a positive whole number of threads"
