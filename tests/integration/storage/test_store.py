"""The ObjectStore contract, run against both backends (``file://`` and MinIO)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from chromasnap.storage.s3 import S3Store
from chromasnap.storage.store import (
    ChecksumMismatch,
    NotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    open_store,
)
from faultproxy import Fault, FaultProxy
from minio_server import MinioServer

BIG = 20_000_000  # > the 16 MiB multipart threshold: three 8 MiB parts, in parallel


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _write_random(path: Path, size: int, seed: int) -> str:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# -- basic reads and writes -------------------------------------------------------------


def test_put_get_head_etag(store: ObjectStore) -> None:
    etag = store.put("pointer.json", b'{"v": 1}')
    assert etag == _md5(b'{"v": 1}')  # bare hex: no quotes, same on both backends
    blob = store.get("pointer.json")
    assert (blob.data, blob.etag) == (b'{"v": 1}', etag)
    info = store.head("pointer.json")
    assert (info.key, info.size, info.etag) == ("pointer.json", 8, etag)
    assert info.last_modified > 0

    etag2 = store.put("pointer.json", b'{"v": 2}')
    assert etag2 != etag
    assert store.get("pointer.json").data == b'{"v": 2}'

    empty = store.put("empty", b"")
    assert store.get("empty").data == b""
    assert store.head("empty").etag == empty

    with pytest.raises(NotFound):
        store.get("missing")
    with pytest.raises(NotFound):
        store.head("missing")


def test_put_if_match(store: ObjectStore) -> None:
    e1 = store.put("pointer.json", b"v1")
    e2 = store.put_if_match("pointer.json", b"v2", e1)
    assert e2 == store.head("pointer.json").etag
    # A stale ETag loses and changes nothing.
    with pytest.raises(PreconditionFailed):
        store.put_if_match("pointer.json", b"v3", e1)
    assert store.get("pointer.json").data == b"v2"
    # Quoted ETags, as HTTP spells them, are accepted too.
    store.put_if_match("pointer.json", b"v3", f'"{e2}"')
    assert store.get("pointer.json").data == b"v3"
    # A missing object never matches.
    with pytest.raises(PreconditionFailed):
        store.put_if_match("absent.json", b"x", e1)
    with pytest.raises(NotFound):
        store.get("absent.json")


def test_put_if_absent(store: ObjectStore) -> None:
    etag = store.put_if_absent("deltas/0001-w1.arrow", b"first")
    assert etag == _md5(b"first")
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("deltas/0001-w1.arrow", b"second")
    assert store.get("deltas/0001-w1.arrow").data == b"first"


def test_get_if_changed(store: ObjectStore) -> None:
    e1 = store.put("pointer.json", b"v1")
    assert store.get_if_changed("pointer.json", e1) is None
    assert store.get_if_changed("pointer.json", f'"{e1}"') is None
    first = store.get_if_changed("pointer.json", None)
    assert first is not None and first.data == b"v1"
    e2 = store.put("pointer.json", b"v2")
    blob = store.get_if_changed("pointer.json", e1)
    assert blob is not None and (blob.data, blob.etag) == (b"v2", e2)
    with pytest.raises(NotFound):
        store.get_if_changed("missing", e1)


def test_invalid_keys(store: ObjectStore) -> None:
    for key in ["", "/abs", "a//b", "../escape", "a/./b"]:
        with pytest.raises(StoreError):
            store.put(key, b"x")


# -- listing and deleting ---------------------------------------------------------------


def test_list_in_key_order(store: ObjectStore) -> None:
    # "a-c" < "a/b" < "a0" in byte order, which a depth-first directory walk gets wrong.
    keys = ["b", "a0", "a/c/d", "a/b", "a-c", "z/\u00fc.bin", "\u00e9", "snapshots/v1/x"]
    for i, key in enumerate(keys):
        store.put(key, bytes(i + 1))
    listed = list(store.list(""))
    assert [o.key for o in listed] == sorted(keys)
    assert [o.key for o in listed] == sorted(keys, key=lambda k: k.encode())
    for obj in listed:
        info = store.head(obj.key)
        assert (obj.size, obj.etag) == (info.size, info.etag)
    assert [o.key for o in store.list("a/")] == ["a/b", "a/c/d"]
    assert [o.key for o in store.list("a")] == ["a-c", "a/b", "a/c/d", "a0"]
    assert [o.key for o in store.list("snapshots/v1/")] == ["snapshots/v1/x"]
    assert list(store.list("nothing/")) == []
    # StartAfter: keys strictly after it (it need not exist), within the prefix.
    assert [o.key for o in store.list("a", start_after="a/b")] == ["a/c/d", "a0"]
    assert [o.key for o in store.list("a/", start_after="a/bb")] == ["a/c/d"]
    assert [o.key for o in store.list("", start_after="z/\u00fc.bin")] == ["\u00e9"]


def test_delete_many(store: ObjectStore) -> None:
    for key in ["deltas/1", "deltas/2", "deltas/3", "snapshots/v1/a", "snapshots/v1/b"]:
        store.put(key, b"x")
    store.delete_many(["deltas/1", "deltas/3", "snapshots/v1/a", "snapshots/v1/b", "gone"])
    assert [o.key for o in store.list("")] == ["deltas/2"]
    store.delete_many([])
    # A key whose directory was pruned can be written again.
    store.put("snapshots/v1/a", b"y")
    assert store.get("snapshots/v1/a").data == b"y"


@pytest.mark.minio
def test_s3_pagination_and_batched_delete(minio: MinioServer) -> None:
    """More than one ListObjectsV2 page (1000) and more than one DeleteObjects batch."""
    url = minio.new_bucket_url()
    store = S3Store(url, endpoint_url=minio.endpoint)
    keys = [f"deltas/{i:05d}" for i in range(1001)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"d"), keys))
    assert [o.key for o in store.list("deltas/")] == keys
    small_pages = S3Store(url, endpoint_url=minio.endpoint, page_size=7)
    assert [o.key for o in small_pages.list("deltas/0000")] == keys[:10]
    store.delete_many(keys[:-1])
    assert [o.key for o in store.list("")] == keys[-1:]


@pytest.mark.minio
def test_s3_empty_prefix_url(minio: MinioServer) -> None:
    store = S3Store(minio.new_bucket_url(prefix=""), endpoint_url=minio.endpoint)
    store.put("pointer.json", b"x")
    assert [o.key for o in store.list("")] == ["pointer.json"]


# -- file transfers ---------------------------------------------------------------------


def test_upload_download_large(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "index.bin"
    sha = _write_random(src, BIG, seed=1)
    sent: list[int] = []
    assert store.upload_file("snapshots/v1/index.bin", src, on_bytes=sent.append) == sha
    assert sum(sent) == BIG
    info = store.head("snapshots/v1/index.bin")
    assert info.size == BIG
    if isinstance(store, S3Store):
        assert info.etag.endswith("-3")  # really went multipart

    dest = tmp_path / "out" / "index.bin"
    got: list[int] = []
    store.download_file("snapshots/v1/index.bin", dest, BIG, sha, on_bytes=got.append)
    assert sum(got) == BIG
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in dest.parent.iterdir()) == ["index.bin"]

    with pytest.raises(NotFound):
        store.download_file("snapshots/v1/missing", tmp_path / "m", 1, sha)
    assert not (tmp_path / "m").exists()


def test_upload_download_small(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "manifest.json"
    sha = _write_random(src, 1000, seed=2)
    assert store.upload_file("snapshots/v1/manifest.json", src) == sha
    assert store.get("snapshots/v1/manifest.json").data == src.read_bytes()
    dest = tmp_path / "copy.json"
    store.download_file("snapshots/v1/manifest.json", dest, 1000, sha)
    assert dest.read_bytes() == src.read_bytes()


def test_corrupt_download_detected(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    sha = _write_random(src, 3_000_000, seed=3)
    store.upload_file("snapshots/v1/data.bin", src)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "data.bin"

    with pytest.raises(ChecksumMismatch):
        store.download_file("snapshots/v1/data.bin", dest, 3_000_000, "0" * 64)
    with pytest.raises(ChecksumMismatch):
        store.download_file("snapshots/v1/data.bin", dest, 3_000_001, sha)
    # The object's bytes change under the manifest: same size, different content.
    store.put("snapshots/v1/data.bin", random.Random(4).randbytes(3_000_000))
    with pytest.raises(ChecksumMismatch):
        store.download_file("snapshots/v1/data.bin", dest, 3_000_000, sha)
    assert list(out.iterdir()) == []  # no file at dest and no temp file left behind


# -- concurrency ------------------------------------------------------------------------


def _race_worker(
    url: str,
    endpoint: str | None,
    rounds: list[tuple[str, str]],
    *,
    name: str,
    barrier: Barrier,
    results: Queue[tuple[int, str, bool]],
) -> None:
    store = open_store(url, endpoint_url=endpoint)
    for i, (key, etag) in enumerate(rounds):
        barrier.wait(timeout=60)
        try:
            store.put_if_match(key, f"{name}:{i}".encode(), etag)
            results.put((i, name, True))
        except PreconditionFailed:
            results.put((i, name, False))


def test_processes_race_put_if_match(
    store: ObjectStore, store_url: str, store_endpoint: str | None
) -> None:
    """Several processes swap the same pointer from the same ETag: exactly one wins each time."""
    n_procs, n_rounds = 3, 8
    rounds = [
        (f"race/{i}/pointer.json", store.put(f"race/{i}/pointer.json", b"initial"))
        for i in range(n_rounds)
    ]
    # spawn, not fork: the parent holds boto3 clients and threads.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n_procs)
    results: Queue[tuple[int, str, bool]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_worker,
            args=(store_url, store_endpoint, rounds),
            kwargs={"name": f"p{j}", "barrier": barrier, "results": results},
        )
        for j in range(n_procs)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(n_procs * n_rounds)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for i, (key, _) in enumerate(rounds):
        winners = [name for r, name, won in outcomes if r == i and won]
        assert len(winners) == 1, (i, outcomes)
        assert store.get(key).data == f"{winners[0]}:{i}".encode()


def test_threads_race_put_if_absent(store: ObjectStore) -> None:
    def attempt(n: int) -> bool:
        try:
            store.put_if_absent("deltas/only-once", str(n).encode())
            return True
        except PreconditionFailed:
            return False

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(attempt, range(8)))
    assert won.count(True) == 1
    assert store.get("deltas/only-once").data == str(won.index(True)).encode()


# -- retries through the fault proxy ----------------------------------------------------


@pytest.fixture
def proxy(minio: MinioServer) -> Iterator[FaultProxy]:
    with FaultProxy(minio.endpoint) as p:
        yield p


def _puts(method: str, path: str) -> bool:
    return method == "PUT"


@pytest.mark.minio
def test_retries_slowdown(minio: MinioServer, proxy: FaultProxy) -> None:
    store = S3Store(minio.new_bucket_url(), endpoint_url=proxy.endpoint)
    proxy.fail_next(2, Fault.error(503, "SlowDown"))
    etag = store.put("pointer.json", b"v1")
    assert store.get("pointer.json").data == b"v1"
    assert [s.fault for s in proxy.seen[:3]] == ["error", "error", None]
    assert proxy.seen[2].method == "PUT"

    proxy.fail_next(2, Fault.error(500, "InternalError"))
    assert store.put_if_match("pointer.json", b"v2", etag) == _md5(b"v2")


@pytest.mark.minio
def test_retries_connection_reset(minio: MinioServer, proxy: FaultProxy) -> None:
    store = S3Store(minio.new_bucket_url(), endpoint_url=proxy.endpoint)
    proxy.fail_next(2, Fault.reset())
    store.put_if_absent("deltas/a", b"x")
    assert store.get("deltas/a").data == b"x"
    assert proxy.faults_injected() == 2


@pytest.mark.minio
def test_conditional_put_whose_response_was_lost(minio: MinioServer, proxy: FaultProxy) -> None:
    """MinIO applied the write but the client saw a reset; the retry's 412 is our own write."""
    store = S3Store(minio.new_bucket_url(), endpoint_url=proxy.endpoint)
    etag = store.put("pointer.json", b"v1")
    proxy.fail_next(1, Fault.drop_response(), match=_puts)
    assert store.put_if_match("pointer.json", b"v2", etag) == _md5(b"v2")
    assert store.get("pointer.json").data == b"v2"

    proxy.fail_next(1, Fault.drop_response(), match=_puts)
    store.put_if_absent("deltas/d1", b"delta")
    assert store.get("deltas/d1").data == b"delta"

    # ...whereas a genuine loss is still a loss, with or without a retry before it.
    with pytest.raises(PreconditionFailed):
        store.put_if_match("pointer.json", b"v3", etag)
    proxy.fail_next(1, Fault.error(503, "SlowDown"))
    with pytest.raises(PreconditionFailed):
        store.put_if_match("pointer.json", b"v3", etag)
    assert store.get("pointer.json").data == b"v2"


@pytest.mark.minio
def test_gives_up_after_max_attempts(minio: MinioServer, proxy: FaultProxy) -> None:
    store = S3Store(minio.new_bucket_url(), endpoint_url=proxy.endpoint, max_attempts=2)
    proxy.fail_next(2, Fault.error(503, "SlowDown"))
    with pytest.raises(StoreError) as err:
        store.put("pointer.json", b"v1")
    assert not isinstance(err.value, PreconditionFailed | NotFound)
    assert "SlowDown" in str(err.value)


@pytest.mark.minio
def test_multipart_transfer_survives_faults(
    minio: MinioServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    store = S3Store(
        minio.new_bucket_url(),
        endpoint_url=proxy.endpoint,
        multipart_threshold=5 * 1024 * 1024,
        multipart_chunksize=5 * 1024 * 1024,
    )
    src = tmp_path / "big.bin"
    sha = _write_random(src, 12_000_000, seed=5)
    # A bounded number of faults (whichever parts they hit) keeps the outcome certain.
    proxy.fail_next(2, Fault.error(503, "SlowDown"), match=lambda m, p: "partNumber=" in p)
    proxy.fail_next(1, Fault.reset(), match=lambda m, p: "partNumber=" in p)
    assert store.upload_file("snapshots/v1/big.bin", src) == sha
    assert proxy.faults_injected() == 3

    proxy.fail_next(2, Fault.error(503, "SlowDown"), match=lambda m, p: m == "GET")
    proxy.fail_next(1, Fault.truncate(), match=lambda m, p: m == "GET")
    dest = tmp_path / "back.bin"
    store.download_file("snapshots/v1/big.bin", dest, 12_000_000, sha)
    assert proxy.faults_injected() == 6
    assert os.path.getsize(dest) == 12_000_000


@pytest.mark.minio
def test_get_survives_broken_body(minio: MinioServer, proxy: FaultProxy) -> None:
    """A body cut off mid-stream is past botocore's retry handler; get() re-issues it."""
    store = S3Store(minio.new_bucket_url(), endpoint_url=proxy.endpoint)
    data = random.Random(6).randbytes(200_000)
    store.put("deltas/d1", data)
    proxy.fail_next(2, Fault.truncate(), match=lambda m, p: m == "GET")
    assert store.get("deltas/d1").data == data
    assert proxy.faults_injected() == 2


# -- LocalStore specifics ---------------------------------------------------------------


def test_local_etag_cache(tmp_path: Path) -> None:
    """The cached ETag is trusted only for the size and mtime it was computed for."""
    root = tmp_path / "store"
    store = open_store(root.as_uri())
    store.put("k", b"aaaa")
    path = root / "k"
    st = path.stat()
    path.write_bytes(b"bbbb")  # an outside edit, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert store.head("k").etag == _md5(b"bbbb")
    os.removexattr(path, "user.chromasnap.etag")  # e.g. copied by a tool without xattrs
    assert store.head("k").etag == _md5(b"bbbb")
    assert [o.key for o in store.list("")] == ["k"]  # .chromasnap/ never listed
    with pytest.raises(StoreError):
        store.put(".chromasnap/locks/x", b"x")
