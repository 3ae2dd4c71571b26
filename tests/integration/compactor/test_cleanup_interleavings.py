"""Clean-up and retention under every interleaving of compactors and a writer.

Process races almost never hit the window where a compactor that read an old
pointer cleans up after another one published a newer version. Here each
actor runs in a thread on a store wrapper whose every call is a scheduling
point, and a seeded scheduler decides who moves next: the same seed gives the
same interleaving. Real chromadb, real store backends, no lock, grace 0 —
safety must hold without either.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chromasnap.compactor.policy import MergePolicy
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ObjectInfo, ObjectStore, open_store
from dataplane import compactor, current_records, put_delta
from modelgen import Delta

WAIT_S = 120.0
#: Chance that the actor that moved last moves again.
STICKINESS = 0.9


def _delta(ts: int, writer: str, ids: list[str]) -> Delta:
    rng = np.random.default_rng(ts)
    ops = [
        Op(OpKind.UPSERT, rid, OpKey(ts, writer, i + 1),
           rng.standard_normal(4).astype(np.float32), f"doc {rid}", {"n": i})
        for i, rid in enumerate(ids)
    ]
    return Delta(f"{ts:017d}-{writer}.arrow", writer, ops)


class Scheduler:
    """Runs actors in threads, one at a time, switching only at store calls."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cv = threading.Condition()
        self.turn: str | None = None
        self.waiting: set[str] = set()
        self.done: set[str] = set()
        self.errors: list[BaseException] = []
        self.steps = 0
        self.actors: set[str] = set()
        self.last: str | None = None

    def point(self) -> None:
        """A scheduling point: hand the turn back and wait to be picked again."""
        me = threading.current_thread().name
        if me not in self.actors:
            return  # a transfer pool's worker: part of its actor's current step
        with self.cv:
            self.waiting.add(me)
            if self.turn == me:
                self.turn = None
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: self.turn == me, timeout=WAIT_S):
                raise TimeoutError(f"{me} was never scheduled again")
            self.waiting.discard(me)

    def _finish(self, me: str) -> None:
        with self.cv:
            self.done.add(me)
            if self.turn == me:
                self.turn = None
            self.cv.notify_all()

    def run(self, actors: dict[str, Callable[[], None]]) -> None:
        """Run every actor to completion under this scheduler's seeded choices."""

        def body(name: str, fn: Callable[[], None]) -> None:
            try:
                self.point()
                fn()
            except BaseException as e:  # re-raised in the test thread
                self.errors.append(e)
            finally:
                self._finish(name)

        threads = [
            threading.Thread(target=body, args=(n, f), name=n, daemon=True)
            for n, f in actors.items()
        ]
        names = self.actors = set(actors)
        for t in threads:
            t.start()
        while True:
            with self.cv:
                settled = self.cv.wait_for(
                    lambda: self.turn is None and self.waiting | self.done == names,
                    timeout=WAIT_S,
                )
                assert settled, "an actor neither finished nor reached a store call"
                if self.done == names:
                    break
                # Sticky choices: long bursts of one actor (a whole compaction while
                # another is stalled) are what the dangerous windows need.
                if self.last in self.waiting and self.rng.random() < STICKINESS:
                    self.turn = self.last
                else:
                    self.turn = self.rng.choice(sorted(self.waiting))
                self.last = self.turn
                self.steps += 1
                self.cv.notify_all()
        for t in threads:
            t.join(WAIT_S)
        if self.errors:
            raise self.errors[0]


class SteppedStore:
    """An ``ObjectStore`` whose every call is a scheduling point."""

    def __init__(self, inner: ObjectStore, sched: Scheduler) -> None:
        self._inner = inner
        self._sched = sched

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def stepped(*args: Any, **kwargs: Any) -> Any:
            self._sched.point()
            return attr(*args, **kwargs)

        return stepped

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Materialised at one point in time, like one LIST page.
        self._sched.point()
        return iter(list(self._inner.list(prefix)))


#: Odd seeds: every run writes a segment and tiers of two merge, so runs race with merges.
MERGING = MergePolicy(segments_per_tier=2, full_merge_ratio=1e9, shadowed_ratio=1e9,
                      floor_ops=1, max_segments=1000)


def _policy(seed: int) -> MergePolicy | None:
    return MERGING if seed % 2 else None


def _check_final_state(store: ObjectStore, acked: set[str], tmp: Path,
                       policy: MergePolicy | None = None) -> None:
    """Pointer valid, every acknowledged write present, no delta lost."""
    res = compactor(store, tmp / "final", grace=0, policy=policy).run()
    assert res.result in ("succeeded", "skipped"), res
    man, recs = current_records(store, tmp)
    assert set(recs) == acked, f"lost {sorted(acked - set(recs))}"
    # Every delta still in the bucket is either pending or applied by the live lineage.
    assert not res.corrupt_deltas
    assert man.record_count == len(acked)


SEEDS = [pytest.param("local", s, id=f"local-{s}") for s in range(40)] + [
    pytest.param("s3", s, id=f"s3-{s}", marks=pytest.mark.minio) for s in range(8)
]


@pytest.mark.parametrize(("backend", "seed"), SEEDS)
def test_seeded_interleavings_never_lose_a_write(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, seed: int
) -> None:
    if backend == "s3":
        minio = request.getfixturevalue("minio")
        store = open_store(minio.new_bucket_url(), endpoint_url=minio.endpoint)
    else:
        store = open_store((tmp_path / "store").as_uri())
    sched = Scheduler(seed)
    stepped: Any = SteppedStore(store, sched)
    acked: set[str] = set()
    # A first version, so that clean-up and retention have something to judge.
    assert compactor(store, tmp_path / "seed", grace=0, retain=1).run().result == "succeeded"

    def writer() -> None:
        for i in range(4):
            d = _delta(1_000_000 + seed * 100 + i, "w1", [f"s{seed}-r{i}-{j}" for j in range(3)])
            put_delta(stepped, d)
            acked.update(op.id for op in d.ops)

    def compactor_actor(name: str, runs: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(runs):
                # Merging seeds also index every segment: more objects per run to race.
                c = compactor(stepped, tmp_path / name, grace=0, retain=1, identity=name,
                              policy=_policy(seed), index_min_rows=1 if seed % 2 else None)
                res = c.run()
                assert res.result in ("succeeded", "skipped"), res

        return go

    sched.run({"writer": writer, "a": compactor_actor("a", 3), "b": compactor_actor("b", 3)})
    assert sched.steps > 20
    _check_final_state(store, acked, tmp_path, _policy(seed))


def test_stale_cleanup_cannot_delete_the_live_version(store: ObjectStore, tmp_path: Path) -> None:
    """The reported sequence: A reads P1 and finds nothing; B folds b and publishes P2;
    A's clean-up must neither delete P2 nor b's only copy."""
    assert compactor(store, tmp_path / "init", grace=0).run().result == "succeeded"
    p1 = pointer.read(store).pointer
    assert p1 is not None

    class AfterListing:
        """Lets B run to completion right after A has listed the deltas."""

        def __init__(self, inner: ObjectStore) -> None:
            self._inner = inner
            self.fired = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def list(self, prefix: str) -> Iterator[ObjectInfo]:
            out = list(self._inner.list(prefix))
            if prefix == deltas.DELTA_PREFIX and not self.fired:
                self.fired = True
                put_delta(store, _delta(2_000_000, "w1", ["b1", "b2"]))
                res_b = compactor(store, tmp_path / "b", grace=0, identity="b").run()
                assert (res_b.result, res_b.deltas_deleted) == ("succeeded", 1)
            return iter(out)

    a_store: Any = AfterListing(store)
    res_a = compactor(a_store, tmp_path / "a", grace=0, identity="a").run()
    assert a_store.fired
    assert (res_a.result, res_a.reason) == ("skipped", "NothingToDo")
    live = pointer.read(store).pointer
    assert live is not None and live.version != p1.version
    # The live version is intact and holds b.
    snapshots.load_manifest(store, live.manifest)
    man, recs = current_records(store, tmp_path)
    assert set(recs) == {"b1", "b2"}
    assert man.version == live.version
    assert res_a.snapshots_deleted <= 1  # at most the superseded P1, never P2
    assert any(o.key.startswith(mf.snapshot_prefix(live.version)) for o in store.list(""))
