"""The store: round trips of packed and Zarr entries, corruption found on read, writers killed mid-write,
concurrent writers, garbage collection and info."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gbmi_core import Store, StoreError
from gbmi_core.store import PACKED_LIMIT, CorruptEntryWarning, tensor_cache_key

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from gbmi_core import Store
    store = Store(sys.argv[1])
    tag = int(sys.argv[2])
    for i in range(int(sys.argv[3])):
        value = tag * 1000 + i
        packed = sys.argv[4] == "packed"
        store.put("models/t/k", {"w": np.full((512, 1024 // (8 if packed else 1)), value, dtype=np.int64),
                                 "b": np.full(7, value)}, {"value": value}, packed=packed)
        print(value, flush=True)
""")


def _check_consistent(entry):
    value = entry.attrs["value"]
    assert (entry.arrays["w"] == value).all() and (entry.arrays["b"] == value).all()
    return value


@pytest.mark.parametrize("packed", [True, False, None])
def test_round_trip_and_keys(tmp_path, packed):
    store = Store(tmp_path / "s")
    assert store.get("results/a/b") is None
    store.put("results/a/b", {"x": np.arange(6.0).reshape(2, 3), "scalar": np.array(2)}, {"n": 1, "s": "t"},
              packed=packed)
    entry = store.get("results/a/b")
    np.testing.assert_array_equal(entry.arrays["x"], np.arange(6.0).reshape(2, 3))
    assert entry.arrays["scalar"] == 2 and entry.attrs == {"n": 1, "s": "t"}
    assert store.attrs("results/a/b") == {"n": 1, "s": "t"}
    link = tmp_path / "s" / "entries" / "results" / "a" / "b"
    assert link.is_symlink() == (packed is False)  # small entries are packed by default
    store.put("results/a/c", {}, {"n": 2})
    assert list(store.keys("results")) == ["results/a/b", "results/a/c"]
    assert list(store.keys("results/a/b")) == ["results/a/b"]
    store.put("results/a/b", {}, {"n": 3}, packed=not packed)  # replace, switching kind
    assert store.get("results/a/b").attrs == {"n": 3}
    import zarr

    assert zarr.open_group(str(tmp_path / "s"), mode="r").attrs["gbmi_store"] == 1


def test_large_entries_are_zarr_groups(tmp_path):
    import zarr

    store = Store(tmp_path / "s")
    store.put("cache/m/big", {"w": np.zeros(PACKED_LIMIT // 8 + 1)}, {})
    link = tmp_path / "s" / "entries" / "cache" / "m" / "big"
    assert link.is_symlink()
    assert zarr.open_group(os.path.realpath(link), mode="r")["w"].shape == (PACKED_LIMIT // 8 + 1,)


def test_bad_keys_and_unusable_location(tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(StoreError, match="invalid store key"):
        store.put("a/../b", {}, {})
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot use store at"):
        Store(tmp_path / "file" / "store").put("a", {}, {})


def _flip_byte(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("packed", [True, False])
def test_corrupt_entry_is_reported_set_aside_and_recomputed(tmp_path, packed):
    store = Store(tmp_path / "s")
    store.put("cache/m/x", {"w": np.arange(1000.0)}, {"v": 1}, packed=packed)
    target = os.path.realpath(tmp_path / "s" / "entries" / "cache" / "m" / "x")
    if packed:
        _flip_byte(target, os.path.getsize(target) // 2)  # inside the compressed archive
    else:
        chunk = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(target, "w")) for f in fs if f != "zarr.json"][0]
        _flip_byte(chunk, 10)  # one byte of the compressed chunk
    with pytest.warns(CorruptEntryWarning, match="store entry 'cache/m/x'"):
        assert store.get("cache/m/x") is None
    assert os.listdir(tmp_path / "s" / ".corrupt")  # kept for inspection
    calls = []
    entry = store.cached("cache/m/x", lambda: calls.append(1) or ({"w": np.arange(3.0)}, {"v": 2}))
    assert calls == [1] and entry.attrs == {"v": 2}
    assert store.cached("cache/m/x", lambda: calls.append(1)).attrs == {"v": 2} and calls == [1]


def test_tampered_attrs_fail_the_checksum(tmp_path):
    import json

    import zarr

    store = Store(tmp_path / "s")
    store.put("results/t/m/s", {}, {"correct_count": 5})
    path = tmp_path / "s" / "entries" / "results" / "t" / "m" / "s"
    path.write_text(path.read_text().replace('"correct_count":5', '"correct_count":6'))
    assert json.loads(path.read_text())["attrs"] == {"correct_count": 6}
    with pytest.warns(CorruptEntryWarning, match="fails its checksum"):
        assert store.get("results/t/m/s") is None
    store.put("models/t/m", {"w": np.ones(3)}, {"seed": 1}, packed=False)
    group = zarr.open_group(os.path.realpath(tmp_path / "s" / "entries" / "models" / "t" / "m"), mode="a")
    group.attrs["attrs"] = {"seed": 2}
    with pytest.warns(CorruptEntryWarning, match="fails its checksum"):
        assert store.attrs("models/t/m") is None  # the attrs-only read checks them too


@pytest.mark.parametrize("kind", ["packed", "zarr"])
def test_writer_killed_mid_write_leaves_old_or_new_entry(tmp_path, kind):
    root = str(tmp_path / "s")
    store = Store(root)
    store.put("models/t/k", {"w": np.full((512, 1024), -1, dtype=np.int64), "b": np.full(7, -1)}, {"value": -1},
              packed=kind == "packed")
    seen = set()
    for attempt, delay in enumerate([0.3, 0.45, 0.6, 0.8, 1.0]):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, root, str(attempt + 1), "1000", kind],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one write finished: the kill lands in a later one
        time.sleep(delay - 0.25)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            entry = store.get("models/t/k")
        assert not [w for w in caught if issubclass(w.category, CorruptEntryWarning)]
        assert entry is not None
        seen.add(_check_consistent(entry) // 1000)
    assert seen <= {1, 2, 3, 4, 5}
    # Objects or temporary files orphaned by the kills are invisible and can be collected.
    assert store.info()["unreferenced_objects"] + store.info()["temporary_files"] >= 1
    assert store.collect_garbage(older_than_s=0) >= 1
    assert store.info()["unreferenced_objects"] == store.info()["temporary_files"] == 0
    _check_consistent(store.get("models/t/k"))


@pytest.mark.parametrize("kind", ["packed", "zarr"])
def test_two_concurrent_writers_of_one_key(tmp_path, kind):
    root = str(tmp_path / "s")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, root, str(tag), "15", kind], stdout=subprocess.PIPE,
                              text=True) for tag in (1, 2)]
    outputs = [proc.communicate(timeout=120)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert [len(out) for out in outputs] == [15, 15]
    value = _check_consistent(Store(root).get("models/t/k"))
    assert value in {1014, 2014}  # one writer's last write wins, whole


def test_tensor_cache_key_depends_on_params():
    a = tensor_cache_key("abc", "EQKE", {"dtype": "float64"})
    assert a == tensor_cache_key("abc", "EQKE", {"dtype": "float64"})
    assert a != tensor_cache_key("abc", "EQKE", {"dtype": "float32"})
    assert a.startswith("cache/abc/EQKE/")


def test_info_counts_entries_by_kind_and_files(tmp_path):
    store = Store(tmp_path / "s")
    for i in range(3):
        store.put(f"results/t/m/{i}", {}, {"i": i})
    store.put("certificates/t/m/0", {"G": np.ones((8, 8), dtype=np.int16)}, {})
    store.put("models/t/a", {"w": np.ones(4)}, {}, packed=False)
    info = store.info()
    assert info["by_kind"] == {"certificates": 1, "models": 1, "results": 3}
    assert (info["entries"], info["packed_entries"], info["zarr_entries"]) == (5, 4, 1)
    assert info["files"] >= 5 and info["bytes_on_disk"] > 0 and info["set_aside"] == 0
