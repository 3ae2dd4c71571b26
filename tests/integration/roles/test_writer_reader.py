"""Writer group commit and snapshot readers on real MinIO and chromadb, with injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from chromasnap.compactor.policy import MergePolicy
from chromasnap.engine import chromadir
from chromasnap.engine.errors import InvalidWrite, Unavailable
from chromasnap.engine.ops import OpKind
from chromasnap.engine.validation import Limits
from chromasnap.reader.poller import Poller
from chromasnap.reader.replica import open_replica
from chromasnap.reader.snapshot import SnapshotReader
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.s3 import S3Store
from chromasnap.storage.store import ObjectStore
from chromasnap.writer.groupcommit import FlushWindow, GroupCommitWriter
from dataplane import FULL, SETTINGS, compactor
from faultproxy import Fault, FaultProxy
from minio_server import MinioServer

LIMITS = Limits(dimension=SETTINGS.dimension)


def vec(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return [float(x) for x in rng.standard_normal(SETTINGS.dimension)]


async def write_many(w: GroupCommitWriter, n: int, prefix: str = "id") -> list[str]:
    async def one(i: int) -> str:
        return await w.submit(
            OpKind.UPSERT,
            [f"{prefix}{i}"],
            embeddings=[vec(i)],
            documents=[f"doc {i}"],
            metadatas=[{"i": i}],
        )

    await w.start()
    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        await w.stop()


def test_group_commit_acknowledges_after_durable_delta(store: ObjectStore) -> None:
    w = GroupCommitWriter(store, LIMITS, "writer-a", FlushWindow(max_records=16, max_delay_s=0.05))
    tokens = asyncio.run(write_many(w, 100))
    names = {o.key[len(deltas.DELTA_PREFIX) :] for o in store.list(deltas.DELTA_PREFIX)}
    # Every acknowledged token names a delta that exists and holds that write.
    assert set(tokens) == names
    assert len(names) < 100  # grouped: many requests per delta
    by_delta = {
        n: {op.id for op in deltas.decode(store.get(deltas.DELTA_PREFIX + n).data, 4)}
        for n in names
    }
    for i, tok in enumerate(tokens):
        assert f"id{i}" in by_delta[tok]
    assert sum(len(v) for v in by_delta.values()) == 100


def test_rejected_request_writes_nothing(store: ObjectStore) -> None:
    async def go() -> None:
        w = GroupCommitWriter(store, LIMITS, "writer-a")
        await w.start()
        try:
            with pytest.raises(InvalidWrite, match="dimension 3 does not match"):
                await w.submit(OpKind.ADD, ["a", "b"], embeddings=[[1, 2, 3], [1, 2, 3]])
            with pytest.raises(InvalidWrite, match="NaN"):
                await w.submit(OpKind.ADD, ["a"], embeddings=[[1, 2, 3, float("nan")]])
        finally:
            await w.stop()

    asyncio.run(go())
    assert list(store.list(deltas.DELTA_PREFIX)) == []


@pytest.mark.minio
def test_writer_retries_transient_s3_errors_and_never_acks_failed_ones(minio: MinioServer) -> None:
    url = minio.new_bucket_url()
    with FaultProxy(minio.endpoint) as proxy:
        store = S3Store(url, endpoint_url=proxy.endpoint, max_attempts=3)
        is_put = lambda method, path: method == "PUT"  # noqa: E731
        # Two throttles then success: boto3's retry absorbs them, all writes acknowledged.
        proxy.fail_next(2, Fault.error(503, "SlowDown"), match=is_put)
        w = GroupCommitWriter(store, LIMITS, "writer-a", FlushWindow(max_records=100))
        assert len(asyncio.run(write_many(w, 10))) == 10
        # Every PUT fails: the writes are refused with Unavailable, nothing is stored.
        proxy.fail_fraction(1.0, Fault.reset(), match=is_put)
        before = {o.key for o in store.list(deltas.DELTA_PREFIX)}
        w2 = GroupCommitWriter(store, LIMITS, "writer-b")
        with pytest.raises(Unavailable, match="nothing was acknowledged"):
            asyncio.run(write_many(w2, 3, prefix="lost"))
        proxy.clear()
        assert {o.key for o in store.list(deltas.DELTA_PREFIX)} == before


def publish_generation(store: ObjectStore, cache: Path, gen: int,
                       policy: MergePolicy | None = None) -> None:
    async def go() -> None:
        w = GroupCommitWriter(store, LIMITS, f"writer-{gen}")
        await w.start()
        try:
            await w.submit(
                OpKind.UPSERT,
                ["fixed", f"gen{gen}"],
                embeddings=[vec(0), vec(gen)],
                documents=[f"gen {gen}", f"gen {gen}"],
            )
        finally:
            await w.stop()

    asyncio.run(go())
    res = compactor(store, cache, policy=policy).run()
    assert res.result == "succeeded", res.message


def test_reader_loads_and_swaps_new_versions(store: ObjectStore, tmp_path: Path) -> None:
    downloaded: list[int] = []
    reader = SnapshotReader(store, tmp_path / "reader", on_bytes=downloaded.append)
    assert not reader.ready() and not reader.refresh()
    publish_generation(store, tmp_path / "c", 1)
    assert reader.refresh() and reader.ready()
    assert not reader.refresh()  # unchanged pointer: 304, nothing downloaded
    with reader.use() as snap:
        first_path = snap.path
        assert snap.collection.count() == 2
        hit = snap.collection.query(query_embeddings=[vec(0)], n_results=1)
        assert hit["ids"][0] == ["fixed"]
        # A new version (a segment on the same base) arrives while this read holds the old.
        downloaded.clear()
        publish_generation(store, tmp_path / "c", 2)
        assert reader.refresh()
        new = reader.current
        assert new is not None and new.manifest.segments and new.path == first_path
        # Only the segment was downloaded; the base copy is shared, not fetched again.
        assert sum(downloaded) == sum(s.byte_size for s in new.manifest.segments)
        assert new.pending.records["fixed"].document == "gen 2"  # type: ignore[union-attr]
        assert snap.collection.count() == 2  # old snapshot still open for this read
    # Folding the segment into a new local copy swaps it in; the old copy goes once unused.
    assert reader.fold_pending()
    assert not first_path.exists()
    with reader.use() as snap:
        assert snap.pending.empty and snap.path != first_path
        assert snap.collection.count() == 3
        assert snap.collection.get(ids=["fixed"])["documents"] == ["gen 2"]
    reader.close()


@pytest.mark.parametrize("damaged", ["base", "segment"])
def test_reader_rejects_corrupt_snapshot_and_keeps_serving(
    store: ObjectStore, tmp_path: Path, damaged: str
) -> None:
    reader = SnapshotReader(store, tmp_path / "reader")
    publish_generation(store, tmp_path / "c", 1)
    assert reader.refresh()
    publish_generation(store, tmp_path / "c", 2, policy=FULL if damaged == "base" else None)
    cur = pointer.read(store).pointer
    assert cur is not None
    man = snapshots.load_manifest(store, cur.manifest)
    if damaged == "base":
        victim = max(man.files, key=lambda f: f.size)
        key = man.prefix + victim.path
    else:
        key = man.segments[-1].prefix + mf.OPS_FILE
    data = bytearray(store.get(key).data)
    data[-1] ^= 0xFF
    store.put(key, bytes(data))
    assert not reader.refresh()
    assert reader.last_error is not None and man.version in reader.last_error
    with reader.use() as snap:
        assert snap.manifest.version != man.version and snap.collection.count() == 2
        assert snap.pending.empty
    assert not (tmp_path / "reader" / "snapshots" / man.version).exists()
    reader.close()


def test_queries_never_fail_across_many_swaps(store: ObjectStore, tmp_path: Path) -> None:
    reader = SnapshotReader(store, tmp_path / "reader")
    publish_generation(store, tmp_path / "c", 1)
    assert reader.refresh()
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def query_loop() -> None:
        while not stop.is_set():
            try:
                with reader.use() as snap:
                    res = snap.collection.query(query_embeddings=[vec(0)], n_results=1)
                    assert res["ids"][0] == ["fixed"]
                done[0] += 1
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=query_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for gen in range(2, 8):
            publish_generation(store, tmp_path / "c", gen)
            assert reader.refresh()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert done[0] > 0 and reader.swaps == 7
    remaining = [p.name for p in (tmp_path / "reader" / "snapshots").iterdir()]
    with reader.use() as snap:
        assert remaining == [snap.path.name]
        assert snap.manifest.seq == mf.version_seq(snap.manifest.version)
    reader.close()


@pytest.mark.minio
def test_s3_faults_compactor_aborts_cleanly_and_readers_keep_serving(minio: MinioServer,
                                                                     tmp_path: Path) -> None:
    url = minio.new_bucket_url()
    with FaultProxy(minio.endpoint) as proxy:
        store = S3Store(url, endpoint_url=proxy.endpoint, max_attempts=2, read_timeout=5)
        publish_generation(store, tmp_path / "c", 1)
        reader = SnapshotReader(store, tmp_path / "reader")
        assert reader.refresh()
        before = pointer.read(store)
        asyncio.run(write_many(GroupCommitWriter(store, LIMITS, "w"), 5, prefix="late"))
        # Every S3 request fails (5xx, throttling, resets) while the compactor works.
        for fault in (Fault.error(500, "InternalError"), Fault.error(503, "SlowDown"),
                      Fault.reset()):
            proxy.fail_fraction(1.0, fault)
            res = compactor(store, tmp_path / "c").run()
            assert (res.result, res.reason) == ("failed", "StorageError"), res.message
            assert not reader.refresh()  # poll fails, reader keeps its snapshot
            with reader.use() as snap:
                assert snap.collection.count() == 2
            proxy.clear()
            assert pointer.read(store) == before
        res = compactor(store, tmp_path / "c").run()
        assert res.result == "succeeded" and res.record_count == 7
        assert reader.refresh()
        with reader.use() as snap:
            assert snap.collection.count() + len(snap.pending.live) == 7
        assert reader.fold_pending()
        with reader.use() as snap:
            assert snap.collection.count() == 7
        reader.close()


@pytest.mark.minio
def test_poll_loop_recovers_after_an_outage_without_a_new_version(minio: MinioServer,
                                                                  tmp_path: Path) -> None:
    url = minio.new_bucket_url()
    with FaultProxy(minio.endpoint) as proxy:
        store = S3Store(url, endpoint_url=proxy.endpoint, max_attempts=2, read_timeout=5)
        publish_generation(store, tmp_path / "c", 1)
        replica = open_replica(store, tmp_path / "reader", SETTINGS.dimension, fresh=True)
        poller = Poller(replica.poll_once, interval_s=1.0)
        assert poller.run_once()
        proxy.fail_fraction(1.0, Fault.error(503, "SlowDown"))
        assert not poller.run_once() and not poller.run_once()
        assert replica.reader.failing and poller.delay() > 1.0
        proxy.clear()
        # The pointer did not move: the bucket answering again is the recovery itself.
        assert poller.run_once()
        assert not replica.reader.failing and replica.reader.last_error is None
        assert poller.failures == 0 and poller.delay() == 1.0
        replica.reader.close()


def test_a_reader_releases_every_copy_it_no_longer_serves(store: ObjectStore,
                                                           tmp_path: Path) -> None:
    """Issue 20: swapped-out copies (new bases and folds alike) are closed and deleted:
    no chromadb client, no open file, nothing on disk but what is served."""
    cache = tmp_path / "reader"
    reader = SnapshotReader(store, cache)
    served = []
    for gen in range(1, 8):
        publish_generation(store, tmp_path / "c", gen, policy=FULL if gen % 3 == 0 else None)
        assert reader.refresh()
        reader.fold_pending()
        with reader.use() as snap:
            served.append(snap.path)
            assert snap.collection.count() == gen + 1
    current = served[-1]
    assert len(set(served)) > 3  # new bases and folds: each a copy of its own
    assert [p for p in served if p != current and (p.exists() or chromadir.is_open(p / mf.DB_DIR))
            ] == []
    assert [p.name for p in (cache / "snapshots").iterdir()] == [current.name]
    prefix = str(cache.resolve()) + os.sep
    held = [t for t in _fd_targets() if t.startswith(prefix)]
    assert held and all(t.startswith(str(current.resolve()) + os.sep) for t in held)
    reader.close()
    assert not [t for t in _fd_targets() if t.startswith(prefix)]


def _fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


def test_a_copy_remembers_the_records_overlays_ask_for(store: ObjectStore, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh reads rebuild their overlay on every new delta; the records the tail touches
    come from chromadb once per loaded copy, not once per overlay, and stay bounded."""
    from chromasnap.reader import snapshot

    reader = SnapshotReader(store, tmp_path / "reader")
    publish_generation(store, tmp_path / "c", 1)
    assert reader.refresh()
    with reader.use() as snap:
        local = snap.local
        got = local.records(["fixed", "nowhere"])
        assert list(got) == ["fixed"] and got["fixed"].document == "gen 1"
        assert local.known.keys() == {"fixed", "nowhere"} and local.known["nowhere"] is None
        calls: list[list[str]] = []
        real = snapshot.records_of

        def counting(col: object) -> object:
            lookup = real(col)
            return lambda ids: calls.append(list(ids)) or lookup(ids)

        monkeypatch.setattr(snapshot, "records_of", counting)
        assert list(local.records(["fixed", "nowhere", "gen1"])) == ["fixed", "gen1"]
        assert calls == [["gen1"]]  # only what it had not asked before
        monkeypatch.setattr(snapshot, "KNOWN_RECORDS", 3)
        local.records(["a", "b"])  # over the bound: forgets, then remembers only these
        assert local.known.keys() == {"a", "b"}
    reader.close()
