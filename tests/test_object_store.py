"""Stores at fsspec URLs: S3 (a real S3 server, moto's, on this machine) and read-only zip archives.

Publication on object storage is one PUT per entry: concurrent and killed writers are tested against the
server itself, not a mock."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile

import numpy as np
import pytest

from gbmi_core import Store, StoreError
from gbmi_core.export import export_store
from gbmi_core.objectstore import ObjectStore
from gbmi_core.store import PACKED_LIMIT, CorruptEntryWarning, meta_for, pack

from .conftest import run_gbmi

pytest.importorskip("moto")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3():
    """The environment of a live S3 server (one per module), also set in this process."""
    from gbmi_core.testing import s3_server

    with s3_server() as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


_counter = iter(range(10**6))


@pytest.fixture
def url(s3):
    return f"s3://{s3['GBMI_TEST_BUCKET']}/t{os.getpid()}-{next(_counter)}"


def test_round_trip_on_s3(url):
    store = Store(url)
    assert isinstance(store, ObjectStore) and not store.present()
    assert store.get("results/a/b") is None and store.attrs("results/a/b") is None
    big = np.arange(PACKED_LIMIT // 8 * 3, dtype=np.float64)  # a model-sized entry is one object too
    store.put("models/t/m", {"w": big}, {"n": 1}, packed=False)
    store.put("results/t/m/s1", {}, {"bound": 0.5})
    store.put("results/t/m/s2", {"x": np.arange(3)}, {"bound": 0.25})
    assert store.present()
    np.testing.assert_array_equal(store.get("models/t/m").arrays["w"], big)
    assert store.attrs("models/t/m") == {"n": 1} and store.attrs("results/t/m/s1") == {"bound": 0.5}
    assert list(store.keys()) == ["models/t/m", "results/t/m/s1", "results/t/m/s2"]
    assert list(store.keys("results/t")) == ["results/t/m/s1", "results/t/m/s2"]
    assert store.children("results/t") == ["m"] and store.children("results/t/m") == ["s1", "s2"]
    assert store.exists("results/t/m/s1") and not store.exists("results/t/m")
    other = Store(url)  # another client sees every write at once (no stale listing)
    other.put("results/t/m/s3", {}, {"bound": 0.125})
    assert store.exists("results/t/m/s3") and len(list(store.keys("results"))) == 3
    assert store.delete("results/t/m/s3") and not store.delete("results/t/m/s3")
    info = store.info()
    assert info["by_kind"] == {"models": 1, "results": 2} and info["zarr_entries"] == 0
    assert info["bytes_on_disk"] > big.nbytes // 10
    again = pickle.loads(pickle.dumps(store))  # how a sweep hands a store to a worker
    assert list(again.keys()) == list(store.keys())


def test_a_corrupt_object_is_set_aside_and_dropped_by_gc(url, s3):
    store = Store(url)
    store.put("results/t/m/s", {}, {"bound": 0.5})
    store.put("models/t/m", {"w": np.ones(4)}, {"n": 1})
    store.fs.pipe_file(store._entry_path("results/t/m/s"), b'{"attrs": {"bound": 0.9}}')  # forged, no checksum
    meta, _ = meta_for("models/t/m", {"w": np.ones(4)}, {"n": 1})
    store.fs.pipe_file(store._entry_path("models/t/m"), pack(meta, {"w": np.zeros(4)}))  # other weights
    with pytest.warns(CorruptEntryWarning, match="moved to s3://"):
        assert store.get("results/t/m/s") is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get("models/t/m") is None
    assert any(issubclass(w.category, CorruptEntryWarning) for w in caught)
    assert list(store.keys()) == [] and store.info()["set_aside"] == 2
    info = run_gbmi("--store", url, "store", "info", env=s3)
    assert info.returncode == 0 and "set aside as corrupt: 2" in info.stdout, info.stderr
    gc = run_gbmi("--store", url, "store", "gc", "--corrupt", env=s3)
    assert gc.returncode == 0 and "dropped 2 set-aside entries" in gc.stdout, gc.stderr
    assert store.info()["set_aside"] == 0


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from gbmi_core import Store
    store = Store(sys.argv[1])
    tag = int(sys.argv[2])
    for i in range(int(sys.argv[3])):
        value = tag * 1000 + i
        store.put("models/t/k", {"w": np.full((256, 1024), value, dtype=np.int64)}, {"value": value})
        print(value, flush=True)
""")


def _writer(url, tag, count, s3):
    env = {**os.environ, **s3}
    return subprocess.Popen([sys.executable, "-c", WRITER, url, str(tag), str(count)], stdout=subprocess.PIPE,
                            text=True, env=env)


def test_concurrent_and_killed_writers_leave_one_complete_entry(url, s3):
    """Two writers race on one key while a reader reads it; then a writer is killed mid-upload."""
    store = Store(url)
    writers = [_writer(url, tag, 6, s3) for tag in (1, 2)]
    seen = set()
    while any(w.poll() is None for w in writers):
        entry = store.get("models/t/k")  # never partial: a reader sees one whole upload or none
        if entry is not None:
            value = entry.attrs["value"]
            assert (entry.arrays["w"] == value).all()
            seen.add(value)
    assert all(w.wait() == 0 for w in writers)
    final = store.get("models/t/k")
    assert final.attrs["value"] in {1005, 2005} and (final.arrays["w"] == final.attrs["value"]).all()
    killed = _writer(url, 3, 1000, s3)
    assert killed.stdout.readline()  # it has published one version and is uploading the next
    time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    entry = store.get("models/t/k")
    assert (entry.arrays["w"] == entry.attrs["value"]).all()
    prefix = url.split("://", 1)[1]
    objects = sorted(o[len(prefix) + 1:] for o in store.fs.find(prefix))
    assert objects == ["entries/models/t/k", "gbmi-store.json"]  # nothing half-written is visible


def _local_store(tmp_path):
    store = Store(tmp_path / "local")
    store.put("models/t/m", {"w": np.arange(PACKED_LIMIT // 4, dtype=np.float64)}, {"n": 1}, packed=False)
    store.put("results/t/m/s", {}, {"bound": 0.5})
    store.put("certificates/t/m/s", {"c": np.arange(5)}, {"k": "v"})
    store.put("cache/t/m/x", {"c": np.arange(5)}, {})
    return store


def test_export_to_zip_is_a_read_only_store(tmp_path):
    local = _local_store(tmp_path)
    target = tmp_path / "sweep.zip"
    counts = export_store(local, target)
    assert counts["entries"] == 3 and counts["bytes"] == target.stat().st_size
    archive = Store(str(target))
    assert archive.read_only and archive.present()
    assert list(archive.keys()) == ["certificates/t/m/s", "models/t/m", "results/t/m/s"]  # no cache/
    for key in archive.keys():
        ours, theirs = local.get(key), archive.get(key)
        assert ours.attrs == theirs.attrs and ours.arrays.keys() == theirs.arrays.keys()
        assert all(np.array_equal(ours.arrays[n], theirs.arrays[n]) for n in ours.arrays)
    assert archive.attrs("models/t/m") == {"n": 1} and archive.children("results/t") == ["m"]
    with pytest.raises(StoreError, match="read-only"):
        archive.put("results/t/m/z", {}, {})
    with pytest.raises(StoreError, match="read-only"):
        archive.delete("results/t/m/s")
    assert not list(tmp_path.glob(".sweep.zip*"))  # written beside the target, then renamed
    gc = run_gbmi("--store", str(target), "store", "gc")
    assert gc.returncode == 1 and "read-only" in gc.stderr
    info = run_gbmi("--store", str(target), "store", "info")
    assert info.returncode == 0 and "3 packed" in info.stdout


def test_a_corrupt_archive_member_reads_as_absent(tmp_path):
    local = _local_store(tmp_path)
    target = tmp_path / "sweep.zip"
    export_store(local, target)
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(target) as source, zipfile.ZipFile(forged, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "entries/results/t/m/s":
                data = data.replace(b"0.5", b"0.9")  # a better bound than was proved
            out.writestr(item, data)
    archive = Store(str(forged))
    with pytest.warns(CorruptEntryWarning, match="read-only"):
        assert archive.get("results/t/m/s") is None
    assert archive.get("models/t/m") is not None


def test_bad_store_locations_and_targets_are_named(tmp_path):
    bad = run_gbmi("--store", "nosuchprotocol://bucket/x", "store", "info")
    assert bad.returncode == 1 and "nosuchprotocol" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_gbmi("--store", str(tmp_path / "absent.zip"), "store", "info")
    assert missing.returncode == 1 and "absent.zip" in missing.stderr and "Traceback" not in missing.stderr
    local = _local_store(tmp_path)
    export = run_gbmi("store", "export", str(local.root), "--to", str(tmp_path / "x.tar"))
    assert export.returncode == 1 and ".zip" in export.stderr
    assert not (tmp_path / "x.tar").exists()


def test_gbmi_store_env_takes_a_url(url, s3):
    Store(url).put("results/t/m/s", {}, {"bound": 0.5})
    info = run_gbmi("store", "info", "--json", env={**s3, "GBMI_STORE": url})
    assert info.returncode == 0 and '"results": 1' in info.stdout, info.stderr


def test_an_archive_over_http_is_read_in_place(tmp_path, s3):
    """A published archive at an https:// (here http://) URL: a public object of the S3 server, which answers
    range requests as real servers do; read without credentials."""
    import boto3

    local = _local_store(tmp_path)
    export_store(local, tmp_path / "sweep.zip")
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.upload_file(str(tmp_path / "sweep.zip"), s3["GBMI_TEST_BUCKET"], "published/sweep.zip")
    client.put_object_acl(Bucket=s3["GBMI_TEST_BUCKET"], Key="published/sweep.zip", ACL="public-read")
    url = f"{s3['AWS_ENDPOINT_URL']}/{s3['GBMI_TEST_BUCKET']}/published/sweep.zip"
    archive = Store(url)
    assert archive.read_only and list(archive.keys()) == list(Store(str(tmp_path / "sweep.zip")).keys())
    assert archive.attrs("models/t/m") == {"n": 1}
    np.testing.assert_array_equal(archive.get("models/t/m").arrays["w"], local.get("models/t/m").arrays["w"])
    info = run_gbmi("--store", url, "store", "info")
    assert info.returncode == 0 and "3 packed" in info.stdout, info.stderr
    missing = run_gbmi("--store", url.replace("sweep.zip", "absent.zip"), "store", "info")
    assert missing.returncode == 1 and "no such archive" in missing.stderr


def test_which_locations_are_written_and_how(tmp_path):
    """Local paths and file:// URLs are the local store (atomic by rename); object stores are written by one
    PUT; every other fsspec location is read-only, since a write there could be seen half-done."""
    local = Store(f"file://{tmp_path}/s")
    assert type(local) is Store and local.root == tmp_path / "s"
    memory = Store(f"memory://gbmi-test/{os.getpid()}")
    assert isinstance(memory, ObjectStore) and not memory.read_only
    memory.put("results/t/m/s", {}, {"bound": 0.5})
    cached = Store(f"simplecache::memory://gbmi-test/{os.getpid()}")
    assert cached.read_only and cached.get("results/t/m/s").attrs == {"bound": 0.5}
    with pytest.raises(StoreError, match="read-only"):
        cached.put("results/t/m/z", {}, {})
