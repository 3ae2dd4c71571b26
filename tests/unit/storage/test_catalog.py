"""The catalog's pure transitions, checked against chromadb's own answers.

A seeded random sequence of create / get_or_create / delete / rename / metadata /
first-write operations runs on ``chromadb.PersistentClient`` and on the catalog's
transitions side by side: every call must fail or succeed the same way, and the
collections afterwards (names, ids' order, metadata, dimension) must agree.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chromadb
import pytest

from chromasnap.engine.errors import AlreadyExists, InvalidArgument, NotFound
from chromasnap.storage.catalog import (
    Checkpoint,
    CollectionEntry,
    CorruptCatalog,
    CreateCollection,
    DatabaseEntry,
    PoolCatalog,
    apply,
    collection_root,
    decide_create_collection,
    decide_create_database,
    decide_delete_collection,
    decide_delete_database,
    decide_modify,
    from_checkpoint,
    page,
    to_checkpoint,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _state() -> PoolCatalog:
    state = PoolCatalog()
    apply(state, 1, decide_create_database(
        state, DatabaseEntry(id="0" * 32, name="d", tenant="t", created_at=T0)))
    return state


def _entry(name: str, cid: str, **kw: Any) -> CollectionEntry:
    return CollectionEntry(id=cid, name=name, tenant="t", database="d", created_at=T0, **kw)


def _create(state: PoolCatalog, name: str, cid: str, **kw: Any) -> CollectionEntry:
    op, entry = decide_create_collection(state, _entry(name, cid, **kw), get_or_create=False)
    assert op is not None
    apply(state, state.seq + 1, op)
    return entry


def test_create_then_same_name_is_already_exists_or_the_existing_one() -> None:
    state = _state()
    a = _create(state, "alpha", "1" * 32)
    assert state.collection("t", "d", "alpha") == a == state.collection("t", "d", a.id)
    with pytest.raises(AlreadyExists, match=r"Collection \[alpha\] already exists"):
        decide_create_collection(state, _entry("alpha", "2" * 32), get_or_create=False)
    op, got = decide_create_collection(state, _entry("alpha", "2" * 32, metadata={"x": 1}),
                                       get_or_create=True)
    assert op is None and got == a and got.metadata is None
    with pytest.raises(NotFound, match=r"Database \[other\] does not exist"):
        decide_create_collection(state, _entry("alpha", "3" * 32).model_copy(
            update={"database": "other"}), get_or_create=True)


def test_list_order_is_by_id_and_pages_cut_it() -> None:
    state = _state()
    for cid, name in [("c" * 32, "one"), ("a" * 32, "two"), ("b" * 32, "three")]:
        _create(state, name, cid)
    db = state.database("t", "d")
    assert [c.name for c in page(db)] == ["two", "three", "one"]
    assert [c.name for c in page(db, limit=1, offset=1)] == ["three"]
    assert page(db, limit=5, offset=3) == []


def test_delete_frees_the_name_and_keeps_the_id_for_reclaiming() -> None:
    state = _state()
    old = _create(state, "alpha", "1" * 32)
    op = decide_delete_collection(state, "t", "d", "alpha", T0)
    apply(state, state.seq + 1, op)
    assert state.by_id(old.id) is None and list(state.deleted) == [old.id]
    with pytest.raises(NotFound, match=r"Collection \[alpha\] does not exist"):
        decide_delete_collection(state, "t", "d", "alpha", T0)
    new = _create(state, "alpha", "2" * 32)
    assert state.collection("t", "d", "alpha") == new
    with pytest.raises(InvalidArgument, match="already in use"):
        decide_create_collection(state, _entry("beta", old.id), get_or_create=False)


def test_rename_metadata_and_dimension() -> None:
    state = _state()
    a = _create(state, "alpha", "1" * 32)
    _create(state, "beta", "2" * 32)
    with pytest.raises(AlreadyExists):
        decide_modify(state, a.id, name="beta")
    op, renamed = decide_modify(state, a.id, name="gamma", metadata={"k": "v"})
    assert op is not None
    apply(state, state.seq + 1, op)
    assert renamed.name == "gamma" and renamed.metadata == {"k": "v"}
    assert renamed.version == a.version + 1
    with pytest.raises(NotFound):
        state.collection("t", "d", "alpha")
    assert decide_modify(state, a.id, name="gamma") == (None, renamed)
    op, fixed = decide_modify(state, a.id, dimension=3)
    assert op is not None and fixed.dimension == 3
    apply(state, state.seq + 1, op)
    assert decide_modify(state, a.id, dimension=3)[0] is None
    with pytest.raises(InvalidArgument,
                       match="Collection expecting embedding with dimension of 3, got 2"):
        decide_modify(state, a.id, dimension=2)
    with pytest.raises(NotFound):
        decide_modify(state, "9" * 32, dimension=2)


def test_deleting_a_database_deletes_its_collections() -> None:
    state = _state()
    made = [_create(state, f"col{i}", str(i) * 32) for i in range(3)]
    apply(state, state.seq + 1, decide_delete_database(state, "t", "d", T0))
    assert ("t", "d") not in state.databases and state.where == {}
    assert sorted(state.deleted) == sorted(c.id for c in made)
    with pytest.raises(NotFound):
        decide_delete_database(state, "t", "d", T0)
    apply(state, state.seq + 1, decide_create_database(
        state, DatabaseEntry(id="f" * 32, name="d", tenant="t", created_at=T0)))
    assert page(state.database("t", "d")) == []


def test_replay_refuses_a_change_out_of_order_or_against_the_state() -> None:
    state = _state()
    op = CreateCollection(entry=_entry("alpha", "1" * 32))
    with pytest.raises(CorruptCatalog, match="change 5 applied after 1"):
        apply(state, 5, op)
    apply(state, 2, op)
    with pytest.raises(CorruptCatalog, match="does not apply"):
        apply(state, 3, CreateCollection(entry=_entry("alpha", "2" * 32)))
    assert state.seq == 2


def test_a_checkpoint_stores_a_configuration_many_collections_share_once() -> None:
    state = _state()
    config = {"hnsw": {"space": "l2", "ef_search": 100}}
    for i in range(50):
        _create(state, f"c{i:03d}", f"{i:032x}", configuration_json=dict(config),
                schema={"keys": {"#document": {}}} if i % 2 else None)
    _create(state, "other", "f" * 32, configuration_json={"hnsw": {"space": "cosine"}})
    cp = to_checkpoint(state)
    assert len(cp.shared) == 3  # two configurations and one schema, not 50 + 25
    again = from_checkpoint(Checkpoint.model_validate_json(cp.model_dump_json(by_alias=True)))
    a, b = (again.collection("t", "d", n) for n in ("c000", "c001"))
    assert a.configuration_json == config and a.configuration_json is b.configuration_json
    assert a.serialized_schema is None and b.serialized_schema == {"keys": {"#document": {}}}
    assert again.collection("t", "d", "other").configuration_json == {"hnsw": {"space": "cosine"}}
    assert to_checkpoint(again) == cp


def test_a_format_1_checkpoint_is_still_read() -> None:
    state = _state()
    _create(state, "alpha", "1" * 32, configuration_json={"hnsw": {"space": "ip"}},
            schema={"keys": {}})
    old = to_checkpoint(state).model_dump(by_alias=True)
    old["collections"] = [c.model_dump(by_alias=True) for c in state.databases[
        ("t", "d")].listed()]
    old.update(format=1, shared=(), configurations=(), schemas=())
    again = from_checkpoint(Checkpoint.model_validate(old))
    assert again.collection("t", "d", "alpha").configuration_json == {"hnsw": {"space": "ip"}}
    assert to_checkpoint(again) == to_checkpoint(state)


def test_a_checkpoint_pointing_past_its_shared_values_is_refused() -> None:
    state = _state()
    _create(state, "alpha", "1" * 32)
    bad = to_checkpoint(state).model_dump(by_alias=True)
    bad["configurations"] = (7,)
    with pytest.raises(ValueError, match="past the shared values"):
        Checkpoint.model_validate(bad)


def test_checkpoint_round_trips() -> None:
    state = _state()
    _create(state, "alpha", "1" * 32, metadata={"a": [1, 2]}, schema={"keys": {}})
    _create(state, "beta", "2" * 32)
    apply(state, state.seq + 1, decide_delete_collection(state, "t", "d", "beta", T0))
    cp = to_checkpoint(state)
    again = from_checkpoint(Checkpoint.model_validate_json(cp.model_dump_json(by_alias=True)))
    assert to_checkpoint(again) == cp and again.seq == state.seq
    assert b'"schema"' in cp.model_dump_json(by_alias=True).encode()
    assert again.collection("t", "d", "alpha").serialized_schema == {"keys": {}}


def test_collection_roots_are_uuids_only() -> None:
    assert collection_root("1" * 32) == "collections/11111111-1111-1111-1111-111111111111/"
    with pytest.raises(ValueError):
        collection_root("../escape")


# -- the differential model test ----------------------------------------------

NAMES = ["alpha", "beta", "gamma", "delta"]


class _Ours:
    """The catalog's decisions and replay, with the API's calls on top."""

    def __init__(self) -> None:
        self.state = _state()
        self.n = 0

    def _log(self, op: Any) -> None:
        if op is not None:
            apply(self.state, self.state.seq + 1, op)

    def create(self, name: str, meta: dict[str, Any] | None, get_or_create: bool) -> str:
        self.n += 1
        op, entry = decide_create_collection(
            self.state, _entry(name, f"{self.n:032x}", metadata=meta),
            get_or_create=get_or_create)
        self._log(op)
        return entry.name

    def delete(self, name: str) -> None:
        self._log(decide_delete_collection(self.state, "t", "d", name, T0))

    def _id(self, name: str) -> str:
        return self.state.collection("t", "d", name).id

    def rename(self, name: str, new: str) -> None:
        self._log(decide_modify(self.state, self._id(name), name=new)[0])

    def set_metadata(self, name: str, meta: dict[str, Any]) -> None:
        self._log(decide_modify(self.state, self._id(name), metadata=meta)[0])

    def add(self, name: str, dim: int) -> None:
        self._log(decide_modify(self.state, self._id(name), dimension=dim)[0])

    def state_view(self) -> dict[str, tuple[Any, Any]]:
        return {c.name: (c.metadata, c.dimension) for c in page(self.state.database("t", "d"))}


class _Chroma:
    def __init__(self, path: Path) -> None:
        self.client = chromadb.PersistentClient(path=str(path))

    def create(self, name: str, meta: dict[str, Any] | None, get_or_create: bool) -> str:
        if get_or_create:
            return self.client.get_or_create_collection(name, metadata=meta).name
        return self.client.create_collection(name, metadata=meta).name

    def delete(self, name: str) -> None:
        self.client.delete_collection(name)

    def rename(self, name: str, new: str) -> None:
        self.client.get_collection(name).modify(name=new)

    def set_metadata(self, name: str, meta: dict[str, Any]) -> None:
        self.client.get_collection(name).modify(metadata=meta)

    def add(self, name: str, dim: int) -> None:
        col = self.client.get_collection(name)
        col.add(ids=[f"r{col.count()}"], embeddings=[[0.5] * dim])

    def state_view(self) -> dict[str, tuple[Any, Any]]:
        out = {}
        for c in self.client.list_collections():
            dim = len(c.peek(1)["embeddings"][0]) if c.count() else None
            out[c.name] = (c.metadata, dim)
        return out


def _outcome(call: Callable[[], Any]) -> str:
    """What a call did, in terms both sides share: its result, or the kind of failure."""
    try:
        return f"ok {call()!r}"
    except (AlreadyExists, chromadb.errors.InternalError) as e:
        # Chroma's create says "already exists"; its rename onto a taken name fails
        # in SQLite's UNIQUE constraint. Both are a conflict on the name.
        assert "already exists" in str(e) or "UNIQUE constraint" in str(e), e
        return "conflict"
    except (NotFound, chromadb.errors.NotFoundError):
        return "not found"
    except (InvalidArgument, chromadb.errors.InvalidArgumentError) as e:
        assert "dimension" in str(e), e
        return "dimension"


@pytest.mark.parametrize("seed", range(6))
def test_transitions_answer_as_chromadb_does(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    ours, theirs = _Ours(), _Chroma(tmp_path)
    for step in range(40):
        name, other = rng.choice(NAMES), rng.choice(NAMES)
        meta = rng.choice([None, {"step": step}])
        op = rng.choice(["create", "get_or_create", "delete", "rename", "meta", "add", "add"])
        args: tuple[Any, ...]
        if op in ("create", "get_or_create"):
            method, args = "create", (name, meta, op == "get_or_create")
        elif op == "rename":
            method, args = "rename", (name, other)
        elif op == "meta":
            method, args = "set_metadata", (name, {"step": step})
        elif op == "add":
            method, args = "add", (name, rng.choice([2, 3]))
        else:
            method, args = "delete", (name,)
        mine = _outcome(functools.partial(getattr(ours, method), *args))
        chroma = _outcome(functools.partial(getattr(theirs, method), *args))
        assert mine == chroma, f"seed {seed} step {step}: {op}{args}: {mine} vs {chroma}"
    assert ours.state_view() == theirs.state_view()
    listed = page(ours.state.database("t", "d"))
    assert [c.id for c in listed] == sorted(c.id for c in listed)
