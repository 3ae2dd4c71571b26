"""The pure half of collections declared in a pool (pool/declared.py): which resources
declare one, the create request they make, the status they get, the protection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chromasnap.api.createbody import parse_create
from chromasnap.engine.errors import Forbidden
from chromasnap.pool.declared import (
    create_body,
    declared_in,
    member_status,
)
from chromasnap.pool.published import Published
from chromasnap.storage import catalog as cat

T0, T1 = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)


def item(name: str, database: str | None, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"collection": {"name": f"c-{name}", "dimension": 4,
                                           "space": "cosine", "hnsw": {"m": 32}}}
    if database:
        spec["database"] = database
    return {"metadata": {"name": name, "uid": f"u-{name}", "generation": 2,
                         "resourceVersion": "7", **meta}, "spec": spec}


def test_only_the_pool_s_own_declarations_are_taken() -> None:
    items = [item("b", "team-a"), item("own", None), item("other", "team-b"),
             item("a", "team-a", deletionTimestamp="2026-12-01T00:00:00Z",
                  finalizers=["chromasnap.dev/pool-delete"])]
    got = declared_in(items, "team-a")
    assert [d.resource for d in got] == ["a", "b"]
    assert got[0].deleting and got[0].finalizers == ("chromasnap.dev/pool-delete",)
    b = got[1]
    assert (b.name, b.space, b.m, b.construction_ef, b.search_ef) == ("c-b", "cosine", 32,
                                                                       100, 100)


def test_the_create_request_is_what_a_client_would_send() -> None:
    (d,) = declared_in([item("b", "team-a")], "team-a")
    req = parse_create(create_body(d))
    assert req.name == "c-b" and req.get_or_create
    assert req.configuration == {"hnsw": {"space": "cosine", "max_neighbors": 32,
                                          "ef_construction": 100, "ef_search": 100}}


def test_status_says_in_pool_and_keeps_transition_times() -> None:
    (d,) = declared_in([item("b", "team-a")], "team-a")
    first = member_status(d, "team-a", "cid-1", None, None, 0, {}, T0)
    ready, snap = first["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "InPool")
    assert (snap["status"], snap["reason"]) == ("False", "NoSnapshot")
    assert first["observedGeneration"] == 2 and "snapshot" not in first
    assert first["pendingDeltas"] == 0 and "lastCompaction" not in first
    published = Published(version="0000000002-aa", records=3, bytes=10,
                          created_at="2026-12-01T12:00:00Z", compacted_at="2026-12-01T12:00:01Z",
                          result="succeeded", reason="Compacted")
    second = member_status(d, "team-a", "cid-1", None, published, 2, first, T1)
    assert second["snapshot"] == {"version": "0000000002-aa", "records": 3, "bytes": 10,
                                  "createdAt": "2026-12-01T12:00:00Z"}
    assert second["pendingDeltas"] == 2
    assert second["lastCompaction"] == {"time": "2026-12-01T12:00:01Z", "result": "Succeeded",
                                        "reason": "Compacted", "snapshotVersion": "0000000002-aa"}
    assert second["conditions"][0]["lastTransitionTime"] == "2026-12-01T00:00:00Z"
    assert second["conditions"][1]["lastTransitionTime"] == "2026-12-02T00:00:00Z"
    # unchanged input, unchanged status: nothing to patch
    assert member_status(d, "team-a", "cid-1", None, published, 2, second, T1) == second
    # a version read from the pointer (no pass recorded it): no lastCompaction
    backfilled = Published(version="0000000001-bb", records=1, bytes=5, created_at="t")
    assert "lastCompaction" not in member_status(d, "team-a", "cid-1", None, backfilled, 0,
                                                 second, T1)
    refused = member_status(d, "team-a", None, "Collection c-b has dimension 8", None, 0,
                            second, T1)
    assert refused["conditions"][0]["reason"] == "PoolRefused"
    assert "pendingDeltas" not in refused


def _state_with(declared_by: str | None) -> tuple[cat.PoolCatalog, str]:
    state = cat.PoolCatalog()
    cat.apply(state, 1, cat.decide_create_tenant(state, "t", T0))
    db = cat.DatabaseEntry(id="db-1", name="d", tenant="t", created_at=T0)
    cat.apply(state, 2, cat.decide_create_database(state, db))
    entry = cat.CollectionEntry(id="00000000-0000-0000-0000-000000000001", name="handbook",
                                tenant="t", database="d", created_at=T0)
    op, _ = cat.decide_create_collection(state, entry, get_or_create=False)
    assert op is not None
    cat.apply(state, 3, op)
    mark, _ = cat.decide_declare(state, entry.id, declared_by)
    if mark is not None:
        cat.apply(state, 4, mark)
    return state, entry.id


def test_a_declared_collection_cannot_be_deleted_or_renamed_through_the_api() -> None:
    state, cid = _state_with("ns/handbook")
    with pytest.raises(Forbidden, match="cannot delete collection handbook: it is declared "
                                        "by ChromaCollection ns/handbook"):
        cat.decide_delete_collection(state, "t", "d", "handbook", T1)
    with pytest.raises(Forbidden, match="cannot rename"):
        cat.decide_modify(state, cid, name="other")
    with pytest.raises(Forbidden, match="cannot delete database d"):
        cat.decide_delete_database(state, "t", "d", T1)
    # metadata may still change; marking again is no change at all
    assert cat.decide_modify(state, cid, metadata={"a": 1})[0] is not None
    assert cat.decide_declare(state, cid, "ns/handbook")[0] is None
    # released (its resource deleted with Retain): the API may delete it
    released, _ = _state_with(None)
    assert cat.decide_delete_collection(released, "t", "d", "handbook", T1).id == cid
