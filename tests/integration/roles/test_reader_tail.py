"""A fresh reader's tail never re-applies a delta its snapshot already contains (issue 20).

The manifest's applied set only names folded deltas that still exist, so once
clean-up deletes a delta the next version no longer names it. A reader that
held the delta in its tail (it was pushed, fetched or LISTed before it was
folded) must still recognise it as folded: otherwise its old writes are
merged again on top of the version, and once the tombstones of later deletes
are pruned they bring deleted records back.

The deterministic cases run on both backends; the seeded model test drives a
real reader on MinIO behind the fault proxy (outages, skipped versions,
versions that move in the middle of a read, pushes and fetches of folded
deltas) and compares it with ``modelgen.ideal_state`` after every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from chromasnap.api.models import GetRequest
from chromasnap.compactor.policy import MergePolicy
from chromasnap.engine.merge import Record
from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind
from chromasnap.reader import metrics
from chromasnap.reader.backend import ReaderBackend
from chromasnap.reader.replica import Replica, open_replica
from chromasnap.reader.snapshot import records_of
from chromasnap.reader.tail import DeltaTail, UnconfirmedDelta
from chromasnap.storage import deltas
from chromasnap.storage.s3 import S3Store
from chromasnap.storage.store import Blob, NotFound, ObjectStore, StoreError, open_store
from dataplane import FULL, SEGMENTS, SETTINGS, compactor, current_records, put_delta
from faultproxy import Fault, FaultProxy
from minio_server import MinioServer
from modelgen import Delta, ideal_state, random_history, records_equal

DIM = SETTINGS.dimension


def _delta(ts: int, kind: OpKind, rids: list[str]) -> Delta:
    rng = np.random.default_rng(ts)
    ops = [Op(kind, rid, OpKey(ts, "w1", i + 1),
              rng.standard_normal(DIM).astype(np.float32) if kind != OpKind.DELETE else None,
              f"doc {rid} at {ts}" if kind != OpKind.DELETE else None)
           for i, rid in enumerate(rids)]
    return Delta(f"{ts:017d}-w1.arrow", "w1", ops)


def _compact(store: ObjectStore, tmp: Path, policy: MergePolicy = FULL) -> str:
    # Grace 0: folded deltas are deleted at once and tombstones pruned at every full run,
    # what a long run reaches after its grace period.
    res = compactor(store, tmp / "compactor", grace=0.0, policy=policy).run()
    assert res.result == "succeeded", res
    assert res.version is not None
    return res.version


def _fresh_reader(store: ObjectStore, tmp: Path) -> Replica:
    return open_replica(store, tmp / "reader", DIM, fresh=True)


def _ids(backend: ReaderBackend) -> list[str]:
    got = asyncio.run(backend.get(GetRequest(include=())))
    return sorted(got["ids"])


def _push(store: ObjectStore, tail: DeltaTail, d: Delta) -> None:
    data = store.get(deltas.DELTA_PREFIX + d.name).data
    assert tail.confirm(d.name, data)


@pytest.mark.parametrize("sees_every_version", [False, True], ids=["skips", "every"])
def test_deleted_records_stay_deleted_whichever_versions_the_reader_loads(
    store: ObjectStore, tmp_path: Path, sees_every_version: bool
) -> None:
    """A delta folded and then cleaned up never comes back, whether the reader skips the
    version that folded it or loads it (the next version no longer names it)."""
    put_delta(store, _delta(1_000_000, OpKind.UPSERT, ["keep"]), DIM)
    _compact(store, tmp_path)
    replica = _fresh_reader(store, tmp_path)
    reader, tail, backend = replica.reader, replica.tail, replica.backend
    assert tail is not None
    assert reader.refresh()
    early = _delta(1_000_001, OpKind.UPSERT, ["a", "b"])
    put_delta(store, early, DIM)
    _push(store, tail, early)
    assert _ids(backend) == ["a", "b", "keep"]
    _compact(store, tmp_path)  # folds `early`, then deletes it
    if sees_every_version:
        assert reader.refresh()
    put_delta(store, _delta(1_000_002, OpKind.DELETE, ["a", "b"]), DIM)
    _compact(store, tmp_path)  # the deletes' tombstones are pruned at once
    assert reader.refresh()
    assert _ids(backend) == ["keep"]
    assert asyncio.run(backend.count(None)) == 1
    assert tail.names() == frozenset()
    reader.close()


def test_a_read_on_the_previous_version_still_sees_what_only_the_new_one_folded(
    store: ObjectStore, tmp_path: Path
) -> None:
    _compact(store, tmp_path)
    replica = _fresh_reader(store, tmp_path)
    reader, tail = replica.reader, replica.tail
    assert tail is not None and reader.refresh()
    early = _delta(1_000_001, OpKind.UPSERT, ["a"])
    put_delta(store, early, DIM)
    _push(store, tail, early)
    with reader.use() as old:  # a read that borrowed the version before the swap
        _compact(store, tmp_path)  # folds `early` and deletes it
        assert reader.refresh()
        new = reader.current
        assert new is not None and new is not old
        space = SETTINGS.space.value
        on_old = tail.overlay(old.lineage, old.versions, records_of(old.collection), old.pending,
                              space=space)
        on_new = tail.overlay(new.lineage, new.versions, records_of(new.collection), new.pending,
                              space=space)
        assert set(on_old.records) == {"a"}  # not in its snapshot: the tail still serves it
        assert on_new.empty  # in the new snapshot: merged once, not twice
    assert tail.names() == frozenset()
    reader.close()


def test_a_late_write_meets_a_filtered_delete_the_version_folded(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Issue 17, 1: written before the delete, arriving after it was folded, matching: gone.

    The version keeps the filtered delete (its manifest's ``filtered_deletes``),
    so the reader's fresh view and the next compaction decide it alike.
    """
    def compact(policy: MergePolicy | None = None) -> None:
        # Model timestamps are in 1970: a huge grace keeps the filtered delete.
        res = compactor(store, tmp_path / "compactor", grace=1e10, policy=policy).run()
        assert res.result == "succeeded", res

    put_delta(store, _delta(1_000_000, OpKind.UPSERT, ["x", "y"]), DIM)
    compact()
    where = Op(OpKind.DELETE_WHERE, "", OpKey(1_000_005, "w2", 1),
               filter=DeleteFilter(None, {"$contains": "marked"}))
    put_delta(store, Delta(f"{1_000_005:017d}-w2.arrow", "w2", [where]), DIM)
    compact()  # no document is marked yet: nothing deleted
    replica = _fresh_reader(store, tmp_path)
    reader, tail, backend = replica.reader, replica.tail, replica.backend
    assert tail is not None and reader.refresh()
    assert _ids(backend) == ["x", "y"]
    # Written at 3 by a slower writer, older than the delete at 5: it arrives only now.
    late = Delta(f"{1_000_006:017d}-w3.arrow", "w3", [
        Op(OpKind.UPDATE, "y", OpKey(1_000_003, "w3", 1), document="marked")])
    put_delta(store, late, DIM)
    _push(store, tail, late)
    assert _ids(backend) == ["x"]  # y matched at the delete's place
    compact(SEGMENTS)  # a full run, whatever the policy
    assert reader.refresh()
    assert _ids(backend) == ["x"]
    reader.close()


def _tail_gauges() -> tuple[float, float]:
    return (metrics.READER_TAIL_DELTAS._value.get(), metrics.READER_TAIL_RECORDS._value.get())


def test_tail_gauges_count_what_fresh_reads_merge(store: ObjectStore, tmp_path: Path) -> None:
    """Issue 17, item 5: the gauges fall to 0 once the loaded version folded the burst.

    They used to count the deltas the tail kept for reads on the previous
    version until the next swap, and pushes taken before any version was loaded.
    """
    replica = _fresh_reader(store, tmp_path)
    reader, tail = replica.reader, replica.tail
    assert tail is not None
    first = _delta(1_000_000, OpKind.UPSERT, ["keep"])
    put_delta(store, first, DIM)
    _push(store, tail, first)  # no version yet: no read merges it
    assert _tail_gauges() == (0, 0)
    _compact(store, tmp_path)
    assert reader.refresh()
    assert _tail_gauges() == (0, 0)
    burst = [_delta(1_000_001, OpKind.UPSERT, ["a", "b"]), _delta(1_000_002, OpKind.DELETE, ["a"])]
    for d in burst:
        put_delta(store, d, DIM)
        _push(store, tail, d)
    assert _tail_gauges() == (2, 3)
    _compact(store, tmp_path)  # the burst's last compaction folds both deltas
    assert reader.refresh()
    assert _tail_gauges() == (0, 0)
    reader.close()


# -- the model test -------------------------------------------------------------------

INCLUDE = ("embeddings", "documents", "metadatas", "uris")


class RacingStore:
    """The reader's store, able to run a compaction and a refresh in the middle of a GET.

    Armed, the next GET of a delta returns its bytes only after ``during``
    ran: the version a push, fetch or LIST was judged against changes under it.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.during: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> Blob:
        blob = self.inner.get(key)
        during, self.during = self.during, None
        if during is not None and key.startswith(deltas.DELTA_PREFIX):
            during()
        return blob


class Run:
    """A writer, a compactor (both on the bucket directly) and a fresh reader behind faults."""

    def __init__(self, rng: random.Random, minio: MinioServer, proxy: FaultProxy,
                 tmp: Path, filtered_deletes: float = 0.0) -> None:
        self.rng = rng
        self.tmp = tmp
        url = minio.new_bucket_url()
        self.store = open_store(url, minio.endpoint)
        self.racing = RacingStore(S3Store(url, endpoint_url=proxy.endpoint, max_attempts=1,
                                          connect_timeout=2, read_timeout=5))
        self.proxy = proxy
        self.history = {d.name: d for d in random_history(rng, dimension=DIM, writers=1,
                                                          n_ops=160, ids=10,
                                                          filtered_deletes=filtered_deletes)}
        self.unwritten = sorted(self.history)
        self.acked: list[str] = []
        self.folded: dict[str, frozenset[str]] = {}  # version -> the deltas its lineage folded
        self.compact()
        self.replica = open_replica(cast(ObjectStore, self.racing), tmp / "reader", DIM,
                                    fresh=True)
        assert self.replica.poll_once()
        self.tail = self.replica.tail
        assert self.tail is not None

    # -- the actors ---------------------------------------------------------------------

    def write(self) -> None:
        """A writer makes the next delta durable (acknowledged), then maybe pushes it."""
        if not self.unwritten:
            return
        d = self.history[self.unwritten.pop(0)]
        put_delta(self.store, d, DIM)
        self.acked.append(d.name)
        if self.rng.random() < 0.7:
            self.push(d.name)

    def push(self, name: str) -> None:
        data = self.store.get(deltas.DELTA_PREFIX + name).data if self.exists(name) else b""
        with contextlib.suppress(StoreError, UnconfirmedDelta):  # the writer logs and goes on
            self.tail.confirm(name, data)  # type: ignore[union-attr]

    def exists(self, name: str) -> bool:
        try:
            self.store.head(deltas.DELTA_PREFIX + name)
            return True
        except NotFound:
            return False

    def compact(self) -> None:
        """A compaction on the live pointer: full, segment or tiered, grace 0, short retention."""
        policy = self.rng.choice([FULL, SEGMENTS, MergePolicy()])
        res = compactor(self.store, self.tmp / "compactor", grace=0.0, policy=policy,
                        retain=self.rng.randint(1, 3)).run()
        assert res.result in ("succeeded", "skipped"), res
        if res.result == "succeeded":
            assert res.version is not None
            self.folded[res.version] = frozenset(self.acked)  # every acked delta is listed

    def step(self) -> str:
        """One seeded action; returns its name for the failure message."""
        r = self.rng.random()
        tail = self.tail
        assert tail is not None
        if r < 0.25:
            self.write()
            return "write"
        if r < 0.40:
            self.compact()
            return "compact"
        if r < 0.55:
            with contextlib.suppress(StoreError):  # the poll loop counts and backs off
                self.replica.poll_once()
            return "poll"
        if r < 0.62:
            self.replica.reader.refresh()
            return "refresh"
        if r < 0.68:
            with contextlib.suppress(StoreError):  # a read-after catch-up LIST
                tail.poll()
            return "list"
        if r < 0.75 and self.acked:
            with contextlib.suppress(StoreError):  # a read-your-writes miss
                tail.fetch(self.rng.choice(self.acked))
            return "fetch"
        if r < 0.80 and self.acked:
            self.push(self.rng.choice(self.acked))  # a late or repeated push
            return "push-again"
        if r < 0.85:
            # The version moves (maybe twice) while a push, fetch or LIST reads a delta.
            def during() -> None:
                for _ in range(self.rng.randint(1, 2)):
                    self.write()
                    self.compact()
                self.replica.reader.refresh()

            self.racing.during = during
            return "race"
        if r < 0.90:
            # A fold reads the segments again: in an outage it fails, and is retried.
            with contextlib.suppress(StoreError):
                self.replica.reader.fold_pending()
            return "fold"
        if r < 0.95:
            fault = self.rng.choice([Fault.error(503, "SlowDown"), Fault.reset()])
            self.proxy.fail_fraction(self.rng.choice([1.0, 0.3]), fault,
                                     seed=self.rng.randrange(1 << 30))
            return "outage"
        self.proxy.clear()
        return "heal"

    # -- the checks ---------------------------------------------------------------------

    def check(self) -> None:
        """The reader answers exactly the model's state of the deltas it says it holds."""
        tail = self.tail
        assert tail is not None
        with self.replica.reader.use() as snap:
            folded = self.folded[snap.manifest.version]
            held = tail.names()
            assert not held & folded, f"tail holds deltas {snap.manifest.version} folded"
            want = ideal_state([self.history[n] for n in sorted(folded | held)])
            backend = self.replica.backend
            got = asyncio.run(backend.get(GetRequest(include=INCLUDE)))
            assert asyncio.run(backend.count(None)) == len(want)
        records = {rid: Record(rid, np.asarray(got["embeddings"][i], dtype=np.float32),
                               got["documents"][i], got["metadatas"][i] or None,
                               got["uris"][i])
                   for i, rid in enumerate(got["ids"])}
        assert records_equal(records, want), (sorted(records), sorted(want))

    def catch_up(self) -> None:
        """Without faults one poll brings every acknowledged write: the reporter's final check."""
        self.proxy.clear()
        assert self.replica.poll_once(), self.replica.reader.last_error
        with self.replica.reader.use() as snap:
            folded = self.folded[snap.manifest.version]
        assert folded | self.tail.names() == set(self.acked)  # type: ignore[union-attr]
        self.check()


@pytest.mark.minio
@pytest.mark.parametrize(("seed", "filtered_deletes"),
                         [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.1), (5, 0.1)])
def test_fresh_reader_matches_the_model_through_outages_and_skipped_versions(
    minio: MinioServer, tmp_path: Path, seed: int, filtered_deletes: float
) -> None:
    """Seeds 4 and 5 add ``delete(where=...)``: decided on the copy, segments and tail."""
    rng = random.Random(seed)
    with FaultProxy(minio.endpoint) as proxy:
        run = Run(rng, minio, proxy, tmp_path, filtered_deletes)
        done: list[str] = []
        try:
            while run.unwritten or len(done) < 60:
                done.append(run.step())
                if done[-1] == "heal":
                    run.catch_up()
                else:
                    run.check()
            run.write()
            run.compact()
            run.catch_up()
            _, exported = current_records(run.store, tmp_path)
            assert records_equal(exported, ideal_state(list(run.history.values())))
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, after steps {done}: {e}") from e
        finally:
            run.replica.reader.close()
