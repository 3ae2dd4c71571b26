"""Readers whose cache fails keep serving, say so, and recover by themselves.

Real reader processes on MinIO. A cache that cannot be written (here: its path
is taken by a regular file, which even root cannot mkdir through) and a
snapshot larger than the cache budget must not kill the poll loop: the error
is logged and counted, the previous snapshot keeps serving, and the reader
loads the newest version as soon as the cache is usable again.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import chromadb
import numpy as np
import pytest

from chromasnap.config import CollectionSettings, Space
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import pointer, snapshots
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import compactor, put_delta
from minio_server import MinioServer
from modelgen import Delta
from servers import Proc, Stack, stack_env

pytestmark = pytest.mark.minio
DIM = 8
SETTINGS = CollectionSettings(name="docs", dimension=DIM, space=Space.L2)


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status(p: Proc, path: str) -> int:
    try:
        with urllib.request.urlopen(p.url + path, timeout=5) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def metric(p: Proc, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(p.url + "/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def root(minio: MinioServer, tmp_path: Path) -> Iterator[tuple[str, ObjectStore, Stack]]:
    url = minio.new_bucket_url()
    store = open_store(url, minio.endpoint)
    stack = Stack(stack_env(url, minio.endpoint, SETTINGS.name, DIM, "l2",
                            CHROMASNAP_READ_LEVEL="snapshot"), tmp_path / "procs")
    yield url, store, stack
    stack.stop()


def _compact(store: ObjectStore, tmp: Path) -> None:
    res = compactor(store, tmp / "compactor", settings=SETTINGS).run()
    assert res.result == "succeeded", res


def _add(store: ObjectStore, ts: int, n: int) -> None:
    rng = np.random.default_rng(ts)
    ops = [Op(OpKind.ADD, f"r{ts}-{i}", OpKey(ts, "w1", i + 1),
              rng.standard_normal(DIM).astype(np.float32), "x" * 200, {"i": i})
           for i in range(n)]
    put_delta(store, Delta(f"{ts:017d}-w1.arrow", "w1", ops), DIM)


def test_unusable_cache_is_retried_until_it_works(
    root: tuple[str, ObjectStore, Stack], tmp_path: Path
) -> None:
    _, store, stack = root
    _compact(store, tmp_path)
    blocked = tmp_path / "cache"
    blocked.write_text("not a directory")  # every mkdir below it fails, as on a read-only mount
    reader = stack.start("reader", CHROMASNAP_CACHE_DIR=str(blocked))
    wait_until(lambda: metric(reader, "chromasnap_reader_errors_total", '{kind="cache"}') >= 2,
               "the cache error to be counted more than once (the loop retries)")
    assert status(reader, "/readyz") == 503
    assert metric(reader, "chromasnap_reader_refresh_failing") == 1
    assert status(reader, "/healthz") == 200
    assert "snapshot could not be cached" in reader.log.read_text()

    blocked.unlink()  # the mount becomes usable
    wait_until(lambda: status(reader, "/readyz") == 200, "the reader to recover by itself")
    wait_until(lambda: metric(reader, "chromasnap_reader_refresh_failing") == 0,
               "the failing gauge to clear")
    assert metric(reader, "chromasnap_reader_last_refresh_timestamp_seconds") > 0


def test_snapshot_over_the_budget_fails_early_and_keeps_serving(
    root: tuple[str, ObjectStore, Stack], tmp_path: Path
) -> None:
    _, store, stack = root
    _add(store, 1_000_001, 5)
    _compact(store, tmp_path)
    cur = pointer.read(store).pointer
    assert cur is not None
    v1 = snapshots.load_manifest(store, cur.manifest)
    cache = tmp_path / "reader-cache"
    # Room for v1 and a little more; not for v1 plus a much larger v2.
    reader = stack.start("reader", CHROMASNAP_CACHE_DIR=str(cache),
                         CHROMASNAP_CACHE_MAX_BYTES=str(int(v1.byte_size * 1.5)))
    stack.wait(reader, "/readyz")
    client = chromadb.HttpClient(host="127.0.0.1", port=reader.port)
    assert client.get_collection(SETTINGS.name).count() == 5

    _add(store, 1_000_002, 4000)
    _compact(store, tmp_path)
    wait_until(lambda: metric(reader, "chromasnap_reader_errors_total", '{kind="cache"}') >= 1,
               "the over-budget snapshot to be refused")
    assert metric(reader, "chromasnap_reader_refresh_failing") == 1
    # Still serving the previous version (ready, and saying it is stale), and nothing of
    # the new one was downloaded.
    with urllib.request.urlopen(reader.url + "/readyz", timeout=5) as r:  # noqa: S310
        assert r.status == 200
        assert r.read().decode().startswith("ready; stale: snapshot refresh failing")
    assert client.get_collection(SETTINGS.name).count() == 5
    assert [p.name for p in (cache / "snapshots").iterdir()] == [v1.version]
    assert "raise spec.reader.cacheSize" in reader.log.read_text()
