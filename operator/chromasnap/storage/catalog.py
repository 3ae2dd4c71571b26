"""The pool's catalog: which tenants, databases and collections a pool holds.

A pool is one bucket root serving many collections. Each collection keeps today's
layout, protocol and fence under its own prefix, ``collections/<id>/``; the
catalog says which of those prefixes are live and what Chroma knows about each
(name, metadata, configuration, dimension).

The catalog is a log of changes (``storage/cataloglog.py`` keeps it in the
bucket). This module is its pure half: the state (``PoolCatalog``), the changes
(``CatalogOp``), the rules that decide whether a change is allowed against a state
(``decide_*``, raising Chroma's errors) and ``apply``, which replays a logged
change. A change is decided against the state at the log's end and appended only
if nothing was appended meanwhile, so replaying the log never meets a change that
its state refuses.

Semantics follow ``chromadb`` 1.5.9 as measured (``tests/unit/storage/test_catalog.py``
runs the same calls on ``chromadb.PersistentClient``): names are unique per
database, ``get_or_create`` of an existing name returns it unchanged, metadata is
replaced (not merged), the dimension is fixed by the first write, collections list
in id order, and deleting a database takes its collections with it. A deleted
collection's id stays in ``deleted`` until the compactor has removed its bytes, so
a write that races the delete lands where that cleanup finds it, never in a new
collection of the same name (new id, new prefix).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chromasnap.engine.errors import AlreadyExists, Forbidden, InvalidArgument, NotFound

COLLECTIONS_PREFIX = "collections/"


def collection_root(collection_id: str) -> str:
    """The prefix under which one collection keeps its snapshots, deltas and pointer."""
    return f"{COLLECTIONS_PREFIX}{uuid.UUID(collection_id)}/"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CollectionEntry(_Frozen):
    """One live collection, as Chroma describes it."""

    id: str
    name: str
    tenant: str
    database: str
    metadata: dict[str, Any] | None = None
    configuration_json: dict[str, Any] = Field(default_factory=dict)
    #: Chroma's serialized schema (``schema`` would shadow a pydantic method).
    serialized_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    dimension: int | None = None
    created_at: datetime
    #: Bumped on every change of this entry; Chroma's ``version``.
    version: int = 0
    #: The ChromaCollection (``namespace/name``) that declares this collection in Git:
    #: the API may not delete or rename it (``decide_declare`` sets and clears it).
    declared_by: str | None = None


class DeletedCollection(_Frozen):
    """A deleted collection whose bytes the compactor has not reclaimed yet."""

    id: str
    name: str
    tenant: str
    database: str
    deleted_at: datetime


class DatabaseEntry(_Frozen):
    """One database."""

    id: str
    name: str
    tenant: str
    created_at: datetime


# -- changes -----------------------------------------------------------------------


class CreateTenant(_Frozen):
    op: Literal["create_tenant"] = "create_tenant"
    tenant: str
    at: datetime


class CreateDatabase(_Frozen):
    op: Literal["create_database"] = "create_database"
    entry: DatabaseEntry


class DeleteDatabase(_Frozen):
    op: Literal["delete_database"] = "delete_database"
    tenant: str
    database: str
    at: datetime


class CreateCollection(_Frozen):
    op: Literal["create_collection"] = "create_collection"
    entry: CollectionEntry


class DeleteCollection(_Frozen):
    op: Literal["delete_collection"] = "delete_collection"
    id: str
    at: datetime


class ModifyCollection(_Frozen):
    """A rename, new metadata or configuration, or the first write's dimension."""

    op: Literal["modify_collection"] = "modify_collection"
    entry: CollectionEntry


class Reclaimed(_Frozen):
    """The compactor removed these deleted collections' bytes."""

    op: Literal["reclaimed"] = "reclaimed"
    ids: tuple[str, ...]


CatalogOp = Annotated[
    CreateTenant | CreateDatabase | DeleteDatabase | CreateCollection | DeleteCollection
    | ModifyCollection | Reclaimed,
    Field(discriminator="op"),
]


# -- the state ----------------------------------------------------------------------


@dataclass
class Database:
    """One database's live collections, indexed by id and by name."""

    entry: DatabaseEntry
    by_id: dict[str, CollectionEntry] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    _listed: list[CollectionEntry] | None = None

    def listed(self) -> list[CollectionEntry]:
        """Collections in Chroma's list order (by id); cached until the next change."""
        if self._listed is None:
            self._listed = sorted(self.by_id.values(), key=lambda c: c.id)
        return self._listed

    def put(self, entry: CollectionEntry) -> None:
        """Insert or replace ``entry`` (renames drop the old name)."""
        old = self.by_id.get(entry.id)
        if old is not None:
            del self.by_name[old.name]
        self.by_id[entry.id] = entry
        self.by_name[entry.name] = entry.id
        self._listed = None

    def remove(self, collection_id: str) -> CollectionEntry:
        """Take the collection out; return it."""
        entry = self.by_id.pop(collection_id)
        del self.by_name[entry.name]
        self._listed = None
        return entry


@dataclass
class PoolCatalog:
    """Everything the catalog's log says, as of ``seq`` (the last change applied)."""

    seq: int = 0
    tenants: dict[str, datetime] = field(default_factory=dict)
    databases: dict[tuple[str, str], Database] = field(default_factory=dict)
    #: Deleted collections by id, until their bytes are reclaimed.
    deleted: dict[str, DeletedCollection] = field(default_factory=dict)
    #: Which database each live collection is in: record routes name only the id.
    where: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: One object per distinct ``configuration_json`` and schema (by canonical JSON):
    #: most collections carry Chroma's defaults, and 10,000 copies would cost ~70 MB.
    shared: dict[str, dict[str, Any]] = field(default_factory=dict)

    def database(self, tenant: str, database: str) -> Database:
        """The database, or Chroma's ``NotFound``."""
        db = self.databases.get((tenant, database))
        if db is None:
            raise NotFound(f"Database [{database}] does not exist")
        return db

    def collection(self, tenant: str, database: str, name_or_id: str) -> CollectionEntry:
        """A live collection by name (or id), or Chroma's ``NotFound``."""
        db = self.database(tenant, database)
        cid = db.by_name.get(name_or_id, name_or_id)
        entry = db.by_id.get(cid)
        if entry is None:
            raise NotFound(f"Collection [{name_or_id}] does not exist")
        return entry

    def place(self, entry: CollectionEntry) -> None:
        """Put a live collection in its database (inserted, or replaced by id)."""
        entry = entry.model_copy(update={
            "configuration_json": self.share(entry.configuration_json),
            "serialized_schema": None if entry.serialized_schema is None
            else self.share(entry.serialized_schema)})
        self.databases[(entry.tenant, entry.database)].put(entry)
        self.where[entry.id] = (entry.tenant, entry.database)

    def share(self, value: dict[str, Any]) -> dict[str, Any]:
        """The one object equal to ``value`` that entries hold (never changed in place)."""
        return self.shared.setdefault(_canonical(value), value)

    def by_id(self, collection_id: str) -> CollectionEntry | None:
        """A live collection anywhere in the pool."""
        where = self.where.get(collection_id)
        return None if where is None else self.databases[where].by_id[collection_id]


def page(db: Database, *, limit: int | None = None, offset: int = 0) -> list[CollectionEntry]:
    """Collections in Chroma's list order, cut by ``offset`` and ``limit``."""
    end = None if limit is None else offset + limit
    return db.listed()[offset:end]


# -- decisions: is a change allowed? ---------------------------------------------------


def decide_create_tenant(state: PoolCatalog, tenant: str, at: datetime) -> CreateTenant | None:
    """Create a tenant (nothing to do when it exists: Chroma's create is idempotent
    for our callers, and ``get_tenant`` is what tells them apart)."""
    return None if tenant in state.tenants else CreateTenant(tenant=tenant, at=at)


def decide_create_database(state: PoolCatalog, entry: DatabaseEntry) -> CreateDatabase:
    """Create a database; ``AlreadyExists`` as Chroma answers for a taken name."""
    if (entry.tenant, entry.name) in state.databases:
        raise AlreadyExists(f"Database [{entry.name}] already exists")
    return CreateDatabase(entry=entry)


def decide_delete_database(state: PoolCatalog, tenant: str, database: str,
                           at: datetime) -> DeleteDatabase:
    """Delete a database and every collection in it (none of them declared)."""
    for entry in state.database(tenant, database).by_id.values():
        _refuse_declared(entry, f"delete database {database} with")
    return DeleteDatabase(tenant=tenant, database=database, at=at)


def decide_create_collection(state: PoolCatalog, entry: CollectionEntry, *,
                             get_or_create: bool) -> tuple[CreateCollection | None,
                                                           CollectionEntry]:
    """Create ``entry``, or answer as Chroma does for a taken name: the existing
    collection, unchanged, for ``get_or_create``; else ``AlreadyExists``."""
    db = state.database(entry.tenant, entry.database)
    existing = db.by_name.get(entry.name)
    if existing is not None:
        if get_or_create:
            return None, db.by_id[existing]
        raise AlreadyExists(f"Collection [{entry.name}] already exists")
    if entry.id in state.where or entry.id in state.deleted:
        raise InvalidArgument(f"collection id {entry.id} is already in use")
    return CreateCollection(entry=entry), entry


def decide_delete_collection(state: PoolCatalog, tenant: str, database: str, name: str,
                             at: datetime) -> DeleteCollection:
    """Delete the collection ``name``; its name is free once this is logged."""
    db = state.database(tenant, database)
    cid = db.by_name.get(name)
    if cid is None:
        raise NotFound(f"Collection [{name}] does not exist")
    _refuse_declared(db.by_id[cid], "delete")
    return DeleteCollection(id=cid, at=at)


def _refuse_declared(entry: CollectionEntry, action: str) -> None:
    if entry.declared_by is not None:
        raise Forbidden(
            f"cannot {action} collection {entry.name}: it is declared by ChromaCollection "
            f"{entry.declared_by}; change or delete that resource instead (its "
            "deletionPolicy decides whether the data goes with it)")


def decide_declare(state: PoolCatalog, collection_id: str, declared_by: str | None
                   ) -> tuple[ModifyCollection | None, CollectionEntry]:
    """Mark a collection as declared by a ChromaCollection (``None``: no longer)."""
    entry = state.by_id(collection_id)
    if entry is None:
        raise NotFound(f"Collection [{collection_id}] does not exist")
    if entry.declared_by == declared_by:
        return None, entry
    changed = entry.model_copy(update={"declared_by": declared_by})
    return ModifyCollection(entry=changed), changed


def decide_modify(state: PoolCatalog, collection_id: str, *, name: str | None = None,
                  metadata: Mapping[str, Any] | None = None,
                  configuration_json: Mapping[str, Any] | None = None,
                  dimension: int | None = None,
                  ) -> tuple[ModifyCollection | None, CollectionEntry]:
    """Rename, replace metadata or configuration, or fix the first write's dimension.

    ``None`` (nothing to log) when the entry already is as asked. A dimension other
    than the fixed one is Chroma's ``InvalidArgument``; a taken name ``AlreadyExists``.
    """
    entry = state.by_id(collection_id)
    if entry is None:
        raise NotFound(f"Collection [{collection_id}] does not exist")
    update: dict[str, Any] = {}
    if name is not None and name != entry.name:
        _refuse_declared(entry, "rename")
        if name in state.databases[(entry.tenant, entry.database)].by_name:
            raise AlreadyExists(f"Collection [{name}] already exists")
        update["name"] = name
    if metadata is not None and dict(metadata) != entry.metadata:
        update["metadata"] = dict(metadata)
    if configuration_json is not None and dict(configuration_json) != entry.configuration_json:
        update["configuration_json"] = dict(configuration_json)
    if dimension is not None and dimension != entry.dimension:
        if entry.dimension is not None:
            raise InvalidArgument(
                f"Collection expecting embedding with dimension of {entry.dimension}, "
                f"got {dimension}")
        update["dimension"] = dimension
    if not update:
        return None, entry
    changed = entry.model_copy(update={**update, "version": entry.version + 1})
    return ModifyCollection(entry=changed), changed


# -- replay ------------------------------------------------------------------------------


class CorruptCatalog(Exception):
    """A logged change the state cannot take: the log was written by something else."""


def apply(state: PoolCatalog, seq: int, op: CatalogOp) -> None:
    """Replay change ``seq`` onto ``state`` (in place; ``seq`` must be the next one)."""
    if seq != state.seq + 1:
        raise CorruptCatalog(f"catalog change {seq} applied after {state.seq}")
    try:
        _apply(state, op)
    except (KeyError, NotFound, AlreadyExists, InvalidArgument) as e:
        raise CorruptCatalog(f"catalog change {seq} ({op.op}) does not apply: {e}") from e
    state.seq = seq


def _drop(state: PoolCatalog, db: Database, collection_id: str, at: datetime) -> None:
    gone = db.remove(collection_id)
    del state.where[collection_id]
    state.deleted[gone.id] = DeletedCollection(id=gone.id, name=gone.name, tenant=gone.tenant,
                                               database=gone.database, deleted_at=at)


def _apply(state: PoolCatalog, op: CatalogOp) -> None:
    if isinstance(op, CreateTenant):
        state.tenants.setdefault(op.tenant, op.at)
    elif isinstance(op, CreateDatabase):
        decide_create_database(state, op.entry)
        state.databases[(op.entry.tenant, op.entry.name)] = Database(op.entry)
    elif isinstance(op, DeleteDatabase):
        db = state.databases.pop((op.tenant, op.database))
        for cid in list(db.by_id):
            _drop(state, db, cid, op.at)
    elif isinstance(op, CreateCollection):
        decide_create_collection(state, op.entry, get_or_create=False)
        state.place(op.entry)
    elif isinstance(op, DeleteCollection):
        _drop(state, state.databases[state.where[op.id]], op.id, op.at)
    elif isinstance(op, ModifyCollection):
        old = state.by_id(op.entry.id)
        if old is None:
            raise KeyError(op.entry.id)
        if op.entry.name != old.name:
            decide_modify(state, old.id, name=op.entry.name)
        state.place(op.entry)
    elif isinstance(op, Reclaimed):
        for cid in op.ids:
            state.deleted.pop(cid, None)


# -- checkpoints -------------------------------------------------------------------------


class Checkpoint(_Frozen):
    """The whole state at ``seq``, so that a new reader need not replay the log from 1.

    Format 2 stores each distinct ``configuration_json`` and schema once, in
    ``shared``; its collections carry empty ones and, in ``configurations`` and
    ``schemas``, the index of theirs (a tenth of format 1's bytes and parse time
    at 10,000 collections of Chroma's defaults). Format 1 is still read.
    """

    format: Literal[1, 2] = 2
    seq: int
    tenants: dict[str, datetime]
    databases: tuple[DatabaseEntry, ...]
    collections: tuple[CollectionEntry, ...]
    deleted: tuple[DeletedCollection, ...]
    shared: tuple[dict[str, Any], ...] = ()
    configurations: tuple[int, ...] = ()
    schemas: tuple[int | None, ...] = ()

    @model_validator(mode="after")
    def _refs(self) -> Checkpoint:
        if self.format == 2:
            n = len(self.collections)
            if len(self.configurations) != n or len(self.schemas) != n:
                raise ValueError("one configuration and schema index per collection")
            if any(not 0 <= i < len(self.shared) for i in (*self.configurations, *(
                    j for j in self.schemas if j is not None))):
                raise ValueError("an index past the shared values")
        return self


def to_checkpoint(state: PoolCatalog) -> Checkpoint:
    """The state as one document, in a canonical order (equal states, equal bytes)."""
    dbs = [state.databases[k] for k in sorted(state.databases)]
    entries = [e for db in dbs for e in db.listed()]
    index: dict[int, int] = {}  # id() of a shared object -> its place in ``shared``
    shared: list[dict[str, Any]] = []

    def ref(value: dict[str, Any]) -> int:
        # By identity first: placed entries already hold one object per distinct value.
        got = index.get(id(value))
        if got is None:
            one = state.share(value)
            got = index.get(id(one))
            if got is None:
                got = index[id(one)] = len(shared)
                shared.append(one)
            index[id(value)] = got
        return got

    configurations = tuple(ref(e.configuration_json) for e in entries)
    schemas = tuple(None if e.serialized_schema is None else ref(e.serialized_schema)
                    for e in entries)
    return Checkpoint(
        seq=state.seq, tenants=dict(sorted(state.tenants.items())),
        databases=tuple(db.entry for db in dbs),
        collections=tuple(e.model_copy(update={"configuration_json": {},
                                               "serialized_schema": None}) for e in entries),
        deleted=tuple(state.deleted[k] for k in sorted(state.deleted)),
        shared=tuple(shared), configurations=configurations, schemas=schemas)


def from_checkpoint(cp: Checkpoint) -> PoolCatalog:
    """The state a checkpoint describes."""
    state = PoolCatalog(seq=cp.seq, tenants=dict(cp.tenants),
                        deleted={d.id: d for d in cp.deleted})
    for db in cp.databases:
        state.databases[(db.tenant, db.name)] = Database(db)
    if cp.format == 1:
        for entry in cp.collections:
            state.place(entry)
        return state
    shared = [state.share(v) for v in cp.shared]
    for stored, c, sch in zip(cp.collections, cp.configurations, cp.schemas, strict=True):
        entry = stored.model_copy(update={"configuration_json": shared[c],
                                          "serialized_schema": None if sch is None
                                          else shared[sch]})
        state.databases[(entry.tenant, entry.database)].put(entry)
        state.where[entry.id] = (entry.tenant, entry.database)
    return state


def _canonical(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
