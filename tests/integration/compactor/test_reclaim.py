"""A pool's deleted collections lose their bytes in one compactor run past the grace,
on both backends; live collections and collections within the grace keep theirs."""

from __future__ import annotations

import uuid
from datetime import timedelta

from chromasnap.compactor.reclaim import reclaim
from chromasnap.storage.catalog import (
    CollectionEntry,
    DatabaseEntry,
    PoolCatalog,
    collection_root,
    decide_create_collection,
    decide_create_database,
    decide_delete_collection,
)
from chromasnap.storage.cataloglog import CatalogLog
from chromasnap.storage.manifest import now
from chromasnap.storage.store import ObjectStore


def _pool(store: ObjectStore, names: list[str]) -> tuple[CatalogLog, dict[str, str]]:
    cat = CatalogLog(store, identity="test")
    db = DatabaseEntry(id=str(uuid.uuid4()), name="d", tenant="t", created_at=now())
    cat.change(lambda s: (decide_create_database(s, db), None))
    ids = {}
    for name in names:
        entry = CollectionEntry(id=str(uuid.uuid4()), name=name, tenant="t", database="d",
                                created_at=now())
        cat.change(lambda s, e=entry: decide_create_collection(s, e, get_or_create=False))
        ids[name] = entry.id
        for key in ("pointer.json", "deltas/1.arrow", "snapshots/v1/db/x.bin"):
            store.put(collection_root(entry.id) + key, b"x")
    return cat, ids


def _delete(cat: CatalogLog, name: str) -> None:
    cat.change(lambda s: (decide_delete_collection(s, "t", "d", name, now()), None))


def _objects(store: ObjectStore, cid: str) -> int:
    return len(list(store.list(collection_root(cid))))


def test_deleted_collections_are_reclaimed_after_the_grace(store: ObjectStore) -> None:
    cat, ids = _pool(store, ["keep", "gone", "also-gone"])
    _delete(cat, "gone")
    _delete(cat, "also-gone")
    # Within the grace: a writer may still flush into the prefix; nothing goes.
    assert reclaim(store, cat, now=now(), grace_seconds=600) == []
    assert _objects(store, ids["gone"]) == 3
    later = now() + timedelta(seconds=601)
    assert reclaim(store, cat, now=later, grace_seconds=600) == sorted(
        [ids["gone"], ids["also-gone"]])
    assert _objects(store, ids["gone"]) == 0 and _objects(store, ids["also-gone"]) == 0
    assert _objects(store, ids["keep"]) == 3
    fresh = CatalogLog(store, identity="fresh").view(lambda s: s)
    assert fresh.deleted == {} and fresh.by_id(ids["keep"]) is not None
    assert reclaim(store, cat, now=later, grace_seconds=600) == []


def test_a_run_that_crashed_after_deleting_finishes_the_next_time(store: ObjectStore) -> None:
    cat, ids = _pool(store, ["gone"])
    _delete(cat, "gone")
    store.delete_many([i.key for i in store.list(collection_root(ids["gone"]))][:2])
    other = CatalogLog(store, identity="next-run")
    assert reclaim(store, other, now=now(), grace_seconds=0) == [ids["gone"]]
    assert _objects(store, ids["gone"]) == 0
    state: PoolCatalog = cat.view(lambda s: s, refresh=True)
    assert state.deleted == {}
