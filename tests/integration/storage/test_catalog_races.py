"""The pool's catalog log under racing clients, on both backends (``file://`` and MinIO).

Each test starts many threads at once, each with its own ``CatalogLog`` (as
separate processes have), and then checks what only a correct conditional append
guarantees: one collection per name, one ``AlreadyExists`` for each losing create,
the same id to every ``get_or_create`` of a name, no acknowledged change lost, and
every process's state, once refreshed, equal to a fresh replay of the log.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from chromasnap.engine.errors import AlreadyExists, NotFound
from chromasnap.storage.catalog import (
    CollectionEntry,
    DatabaseEntry,
    PoolCatalog,
    decide_create_collection,
    decide_create_database,
    decide_delete_collection,
    decide_modify,
    to_checkpoint,
)
from chromasnap.storage.cataloglog import CHECKPOINT_PREFIX, LOG_PREFIX, CatalogLog
from chromasnap.storage.manifest import now
from chromasnap.storage.store import ObjectStore, PreconditionFailed

T = TypeVar("T")
THREADS = 8
TENANT, DB = "default_tenant", "default_database"


def _race(n: int, work: Callable[[int], T]) -> list[T | Exception]:
    """Run ``work(0..n-1)`` on ``THREADS`` threads, the first ones released together."""
    gate = threading.Barrier(min(n, THREADS))

    def one(i: int) -> T | Exception:
        if i < THREADS:
            gate.wait(timeout=30)
        try:
            return work(i)
        except Exception as e:  # the test inspects which errors occurred
            return e

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(n)))


def _log(store: ObjectStore, who: str = "t", **kw: Any) -> CatalogLog:
    return CatalogLog(store, identity=who, rng=random.Random(who), **kw)


def _create_db(log: CatalogLog, tenant: str = TENANT, name: str = DB) -> None:
    entry = DatabaseEntry(id=str(random.Random(name).getrandbits(128)), name=name,
                          tenant=tenant, created_at=now())
    log.change(lambda s: (decide_create_database(s, entry), None))


def _create(log: CatalogLog, name: str, *, get_or_create: bool = False,
            **kw: Any) -> tuple[CollectionEntry, bool]:

    entry = CollectionEntry(id=str(uuid.uuid4()), name=name, tenant=TENANT, database=DB,
                            created_at=now(), **kw)

    def decide(s: PoolCatalog) -> tuple[Any, tuple[CollectionEntry, bool]]:
        op, got = decide_create_collection(s, entry, get_or_create=get_or_create)
        return op, (got, op is not None)

    return log.change(decide)


def _delete(log: CatalogLog, name: str) -> str:
    def decide(s: PoolCatalog) -> tuple[Any, str]:
        op = decide_delete_collection(s, TENANT, DB, name, now())
        return op, op.id

    return log.change(decide)


def _replayed(store: ObjectStore) -> PoolCatalog:
    return _log(store, "fresh").view(lambda s: s)


@pytest.fixture
def seeded(store: ObjectStore) -> ObjectStore:
    _create_db(_log(store))
    return store


def test_racing_creates_of_one_name_give_one_collection(seeded: ObjectStore) -> None:
    logs = [_log(seeded, f"p{i}") for i in range(16)]
    results = _race(16, lambda i: _create(logs[i], "shared", metadata={"by": i}))
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(wins) == 1, results
    assert len(losses) == 15 and all(isinstance(e, AlreadyExists) for e in losses), losses
    state = _replayed(seeded)
    assert state.collection(TENANT, DB, "shared") == wins[0][0]
    for log in logs:
        assert log.view(lambda s: s.collection(TENANT, DB, "shared"), refresh=True) == wins[0][0]


def test_racing_get_or_create_gives_everyone_the_same_id(seeded: ObjectStore) -> None:
    logs = [_log(seeded, f"p{i}") for i in range(THREADS)]
    results = _race(24, lambda i: _create(logs[i % THREADS], f"name{i % 3}",
                                          get_or_create=True))
    assert not [r for r in results if isinstance(r, Exception)], results
    ids: dict[str, set[str]] = {}
    created = Counter[str]()
    for r in results:
        assert not isinstance(r, Exception)
        entry, new = r
        ids.setdefault(entry.name, set()).add(entry.id)
        created[entry.name] += new
    assert all(len(v) == 1 for v in ids.values()), ids
    assert created == {"name0": 1, "name1": 1, "name2": 1}


def test_distinct_creates_all_land_and_checkpoints_cover_them(seeded: ObjectStore) -> None:
    logs = [_log(seeded, f"p{i}", checkpoint_every=7) for i in range(THREADS)]
    results = _race(40, lambda i: _create(logs[i % THREADS], f"col{i:03d}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    state = _replayed(seeded)
    listed = state.database(TENANT, DB).listed()
    assert sorted(c.name for c in listed) == [f"col{i:03d}" for i in range(40)]
    assert [c.id for c in listed] == sorted(c.id for c in listed)
    assert len(list(seeded.list(CHECKPOINT_PREFIX))) == 41 // 7
    # A new process starts from the newest checkpoint and the changes after it.
    pruned = _log(seeded, "compactor").prune(keep_checkpoints=1, grace_seconds=0)
    assert pruned >= 40 and len(list(seeded.list(CHECKPOINT_PREFIX))) == 1
    assert to_checkpoint(_replayed(seeded)) == to_checkpoint(state)
    # An old process whose next change was pruned reloads from the checkpoint.
    for log in logs:
        assert to_checkpoint(log.view(lambda s: s, refresh=True)) == to_checkpoint(state)


def test_deletes_racing_creates_and_writes_never_reuse_an_id(seeded: ObjectStore) -> None:
    """Creates, deletes and first writes of one name at once: every acknowledged change
    is in the final catalog, and a deleted id is never live again."""
    rng = random.Random(3)
    plan = [rng.choice(["create", "delete", "dim"]) for _ in range(48)]
    logs = [_log(seeded, f"p{i}") for i in range(THREADS)]

    def work(i: int) -> tuple[str, str]:
        log = logs[i % THREADS]
        if plan[i] == "create":
            return "create", _create(log, "shared", get_or_create=True)[0].id
        if plan[i] == "delete":
            return "delete", _delete(log, "shared")
        cid = log.view(lambda s: s.collection(TENANT, DB, "shared").id, refresh=True)
        return "dim", log.change(lambda s: decide_modify(s, cid, dimension=4)).id

    results = _race(len(plan), work)
    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, NotFound)]
    assert not unexpected, unexpected
    state = _replayed(seeded)
    done = [r for r in results if not isinstance(r, Exception)]
    assert {cid for kind, cid in done if kind == "delete"} <= set(state.deleted)
    assert not set(state.where) & set(state.deleted) and len(state.where) <= 1
    for kind, cid in done:
        assert cid in set(state.where) | set(state.deleted), f"acknowledged {kind} missing"
        live = state.by_id(cid)
        if kind == "dim" and live is not None:
            assert live.dimension == 4


class _LostResponse:
    """A store whose next append lands and then reports a lost race, as a retried
    request does when its first attempt's response went missing."""

    def __init__(self, store: ObjectStore) -> None:
        self.inner, self.armed = store, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_if_absent(self, key: str, data: bytes) -> str:
        new = self.inner.put_if_absent(key, data)
        if self.armed and key.startswith(LOG_PREFIX):
            self.armed = False
            raise PreconditionFailed(f"{key}: response lost after the write landed")
        return new


def test_a_change_that_landed_but_reported_a_conflict_is_decided_again(
        seeded: ObjectStore) -> None:
    """The retry re-reads the log and finds its own change there: a get_or_create
    returns the collection, a plain create says AlreadyExists (as Chroma does when a
    client retries a create whose response was lost), and nothing is logged twice."""
    flaky = _LostResponse(seeded)
    log = CatalogLog(flaky, identity="flaky")  # type: ignore[arg-type]
    flaky.armed = True
    entry, created = _create(log, "alpha", get_or_create=True)
    assert not created and entry.name == "alpha"
    flaky.armed = True
    with pytest.raises(AlreadyExists):
        _create(log, "beta")
    state = _replayed(seeded)
    assert sorted(c.name for c in state.database(TENANT, DB).listed()) == ["alpha", "beta"]
    assert state.seq == 3


@pytest.mark.parametrize("grace", [0.0, None])
def test_a_change_decided_while_another_process_prunes_is_never_lost(
        seeded: ObjectStore, grace: float | None) -> None:
    """B refreshes, then (while it decides) A appends past a checkpoint and prunes: B's
    append must not land on a slot the prune just freed. Without the prune's grace
    (``grace=0``) it does, and the change is lost; with it, B's append conflicts,
    B refreshes and appends at the end."""
    a, b = _log(seeded, "a", checkpoint_every=4), _log(seeded, "b")
    _create(a, "first")
    b.view(lambda s: s.seq, refresh=True)
    late = CollectionEntry(id=str(uuid.uuid4()), name="late", tenant=TENANT, database=DB,
                           created_at=now())
    raced: list[int] = []

    def decide(s: PoolCatalog) -> tuple[Any, None]:
        if not raced:
            raced.append(1)
            for i in range(6):
                _create(a, f"col{i}")
            if grace is None:
                a.prune()
            else:
                a.prune(grace_seconds=grace)
        op, _ = decide_create_collection(s, late, get_or_create=False)
        return op, None

    b.change(decide)
    names = {c.name for c in _replayed(seeded).database(TENANT, DB).listed()}
    if grace == 0.0:
        assert "late" not in names  # the race this guards against is real
    else:
        assert names == {"first", "late", *(f"col{i}" for i in range(6))}
