"""A pool's answers to Chroma's API: the catalog for what exists, members for the records.

This is the ``api.backends.Catalog`` of a pool process. Tenants, databases and
collections are changes in the catalog's log (``storage/cataloglog.py``): one
conditional PUT each, decided by the pure rules of ``storage/catalog.py``. Record
routes get the collection's writer and its reader, loaded on the first read
(``members.Members``), except for a collection that has never been written to:
its dimension is not fixed yet, so it has no files at all, answers reads as
empty, and its first write with embeddings fixes the dimension (as Chroma's
first ``add`` does) before its writer takes it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from chromasnap.api.backends import Target
from chromasnap.api.createbody import CreateRequest, ignored_settings
from chromasnap.api.models import GetRequest, QueryRequest, WriteAck, WriteRequest
from chromasnap.api.responses import DEFAULT_DATABASE, DEFAULT_TENANT
from chromasnap.api.service import check_uuid
from chromasnap.config import CollectionSettings
from chromasnap.engine.errors import NotFound
from chromasnap.engine.ops import OpKind
from chromasnap.engine.validation import needs_embeddings
from chromasnap.logs import fields
from chromasnap.pool.configurations import ChromaConfigurations, settings_of
from chromasnap.pool.members import Members
from chromasnap.storage import catalog as cat
from chromasnap.storage.cataloglog import CatalogLog

T = TypeVar("T")
log = logging.getLogger("chromasnap.pool")


def model_json(entry: cat.CollectionEntry) -> dict[str, Any]:
    """Chroma's JSON for a pool collection (a local Chroma keeps ``version`` and
    ``log_position`` at 0, measured)."""
    return {"id": entry.id, "name": entry.name, "configuration_json": entry.configuration_json,
            "schema": entry.serialized_schema, "metadata": entry.metadata,
            "dimension": entry.dimension, "tenant": entry.tenant, "database": entry.database,
            "log_position": 0, "version": 0}


def database_json(db: cat.DatabaseEntry) -> dict[str, Any]:
    """Chroma's JSON for a database."""
    return {"id": db.id, "name": db.name, "tenant": db.tenant}


def settle_catalog_memory() -> None:
    """Keep the catalog out of the garbage collector's full passes.

    A catalog of 10,000 collections is about a million small Python objects
    (each entry's configuration and schema are nested dicts). CPython's full
    collections walk all of them, and one is triggered every few thousand
    allocations: queries and loads then stall for hundreds of milliseconds
    as the pool grows. The catalog lives as long as the process, so its
    objects are moved out of the collector's reach (``gc.freeze``); what was
    freed since the last call is collected first.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _now() -> datetime:
    return datetime.now(UTC)


class PoolService:
    """Chroma's tenants, databases and collections over one pool root."""

    def __init__(self, catalog: CatalogLog, members: Members,
                 configurations: ChromaConfigurations | None = None) -> None:
        self.catalog = catalog
        self.members = members
        self.configurations = configurations or ChromaConfigurations()
        #: collection id -> when a record route last named it (see ``take_used``)
        self._used: dict[str, float] = {}

    # -- plumbing --------------------------------------------------------------------

    async def _view(self, read: Callable[[cat.PoolCatalog], T]) -> T:
        """``read`` the state; on ``NotFound``, once more after catching up with the log
        (another process may have just created what is asked for)."""
        try:
            return await asyncio.to_thread(self.catalog.view, read)
        except NotFound:
            return await asyncio.to_thread(self.catalog.view, read, refresh=True)

    async def _change(self, decide: Callable[[cat.PoolCatalog],
                                             tuple[cat.CatalogOp | None, T]]) -> T:
        return await asyncio.to_thread(self.catalog.change, decide)

    async def start(self) -> None:
        """Make sure Chroma's default tenant and database exist (a new pool's first run)."""
        def default_tenant(s: cat.PoolCatalog) -> tuple[cat.CatalogOp | None, None]:
            return cat.decide_create_tenant(s, DEFAULT_TENANT, _now()), None

        def default_database(s: cat.PoolCatalog) -> tuple[cat.CatalogOp | None, None]:
            if (DEFAULT_TENANT, DEFAULT_DATABASE) in s.databases:
                return None, None
            return cat.decide_create_database(s, cat.DatabaseEntry(
                id=str(uuid.uuid4()), name=DEFAULT_DATABASE, tenant=DEFAULT_TENANT,
                created_at=_now())), None

        await self._change(default_tenant)
        await self._change(default_database)
        settle_catalog_memory()

    def take_used(self) -> dict[str, float]:
        """The collections a record route named since the last call (id -> epoch
        seconds of the last one): what ``kubectl chromasnap collections --sort used``
        sorts by, once a pass recorded it."""
        used, self._used = self._used, {}
        return used

    def give_back_used(self, used: dict[str, float]) -> None:
        """Uses ``take_used`` returned that could not be recorded yet: the next call
        returns them again (with any later use of the same collection)."""
        for cid, at in used.items():
            self._used[cid] = max(at, self._used.get(cid, 0.0))

    def catch_up(self) -> int:
        """Bring the catalog up to date with other processes' changes (one LIST of the
        log's tail, blocking); returns the sequence number it is at."""
        return self.catalog.view(lambda state: state.seq, refresh=True)

    def settings(self, cid: str) -> CollectionSettings | None:
        """A live collection's settings (``None`` when deleted or not written yet)."""
        entry = self.catalog.view(lambda s: s.by_id(cid))
        if entry is None or entry.dimension is None:
            return None
        return settings_of(entry.id, entry.configuration_json, entry.dimension)

    # -- records -----------------------------------------------------------------------

    async def target(self, tenant: str, database: str, cid: str) -> Target:
        """The collection a record route names: its reader (loaded by the first read)
        and writer, or, before its first write, an empty one that fixes the dimension
        on that write."""
        check_uuid(cid)
        cid = str(uuid.UUID(cid))
        entry = await self._view(lambda s: _in(s, tenant, database, cid))
        self._used[cid] = time.time()
        if entry.dimension is None:
            return Target(model_json(entry), EmptyRead(), FirstWrite(self, entry))
        settings = settings_of(entry.id, entry.configuration_json, entry.dimension)
        return Target(model_json(entry), LazyRead(self.members, settings),
                      LazyWrite(self.members, settings))

    async def fix_dimension(self, entry: cat.CollectionEntry, dimension: int) -> Target:
        """Log the dimension of a collection's first write; the loaded target after it."""
        await self._change(lambda s: cat.decide_modify(s, entry.id, dimension=dimension))
        return await self.target(entry.tenant, entry.database, entry.id)

    # -- collections -----------------------------------------------------------------

    async def create_collection(self, tenant: str, database: str,
                                req: CreateRequest) -> Mapping[str, Any]:
        """See ``Catalog.create_collection``."""
        configuration, schema, metadata = await asyncio.to_thread(
            self.configurations.created, req)
        entry = cat.CollectionEntry(
            id=str(uuid.uuid4()), name=req.name, tenant=tenant, database=database,
            metadata=metadata, configuration_json=configuration, schema=schema,
            created_at=_now())
        made = await self._change(
            lambda s: cat.decide_create_collection(s, entry, get_or_create=req.get_or_create))
        model = model_json(made)
        ignored = ignored_settings(req, model) if made.id != entry.id else []
        if ignored:
            log.warning("get_or_create_collection(%r) asked for settings the existing collection "
                        "does not have; ignored, as Chroma ignores them: %s",
                        req.name, "; ".join(ignored),
                        extra=fields(collection=req.name, ignored=ignored))
        return model

    async def get_collection(self, tenant: str, database: str, name: str) -> Mapping[str, Any]:
        """See ``Catalog.get_collection``."""
        return model_json(await self._view(lambda s: s.collection(tenant, database, name)))

    async def list_collections(self, tenant: str, database: str, limit: int | None,
                               offset: int) -> list[Mapping[str, Any]]:
        """See ``Catalog.list_collections``."""
        entries = await self._view(lambda s: cat.page(s.database(tenant, database),
                                                      limit=limit, offset=offset))
        return [model_json(e) for e in entries]

    async def count_collections(self, tenant: str, database: str) -> int:
        """See ``Catalog.count_collections``."""
        return await self._view(lambda s: len(s.database(tenant, database).by_id))

    async def delete_collection(self, tenant: str, database: str, name: str) -> None:
        """See ``Catalog.delete_collection``; a declared collection is refused."""
        op = await self._change(lambda s: _logged(
            cat.decide_delete_collection(s, tenant, database, name, _now())))
        await self.members.drop(op.id)

    async def modify_collection(self, tenant: str, database: str, cid: str, *,
                                name: str | None, metadata: Mapping[str, Any] | None,
                                configuration: Mapping[str, Any] | None) -> None:
        """See ``Catalog.modify_collection``."""
        check_uuid(cid)
        cid = str(uuid.UUID(cid))
        entry = await self._view(lambda s: _in(s, tenant, database, cid))
        new_config = None
        if metadata is not None or configuration is not None:
            # Chroma's own checks: no new space, only the settings it lets change.
            new_config = await asyncio.to_thread(
                self.configurations.modified, entry.configuration_json, entry.metadata,
                metadata, configuration)
        await self._change(lambda s: cat.decide_modify(
            s, cid, name=name, metadata=metadata, configuration_json=new_config))

    # -- tenants and databases ---------------------------------------------------------

    async def declare(self, cid: str, declared_by: str | None) -> None:
        """Mark a collection as declared by a ChromaCollection (``None``: no longer):
        every process of the pool then refuses to delete or rename it."""
        await self._change(lambda s: cat.decide_declare(s, cid, declared_by))

    async def declared(self, tenant: str, database: str) -> dict[str, tuple[str, str]]:
        """The declared collections of a database: id -> (name, declaring resource)."""
        return await self._view(lambda s: {
            e.id: (e.name, e.declared_by) for e in s.database(tenant, database).by_id.values()
            if e.declared_by is not None})

    async def create_tenant(self, tenant: str) -> None:
        """See ``Catalog.create_tenant``."""
        await self._change(lambda s: (cat.decide_create_tenant(s, tenant, _now()), None))

    async def get_tenant(self, tenant: str) -> None:
        """See ``Catalog.get_tenant``."""
        def known(s: cat.PoolCatalog) -> None:
            if tenant not in s.tenants:
                raise NotFound(f"Tenant [{tenant}] not found")

        await self._view(known)

    async def create_database(self, tenant: str, database: str) -> None:
        """See ``Catalog.create_database``."""
        entry = cat.DatabaseEntry(id=str(uuid.uuid4()), name=database, tenant=tenant,
                                  created_at=_now())
        await self._change(lambda s: (cat.decide_create_database(s, entry), None))

    async def get_database(self, tenant: str, database: str) -> Mapping[str, Any]:
        """See ``Catalog.get_database``."""
        return database_json(await self._view(lambda s: s.database(tenant, database).entry))

    async def list_databases(self, tenant: str, limit: int | None,
                             offset: int) -> list[Mapping[str, Any]]:
        """See ``Catalog.list_databases``."""
        dbs = await self._view(lambda s: [db.entry for (t, _), db in s.databases.items()
                                          if t == tenant])
        end = None if limit is None else offset + limit
        return [database_json(d) for d in dbs[offset:end]]

    async def delete_database(self, tenant: str, database: str) -> None:
        """See ``Catalog.delete_database``."""
        ids = await self._view(lambda s: list(s.database(tenant, database).by_id))
        await self._change(lambda s: _logged(
            cat.decide_delete_database(s, tenant, database, _now())))
        for cid in ids:
            await self.members.drop(cid)


def _in(s: cat.PoolCatalog, tenant: str, database: str, cid: str) -> cat.CollectionEntry:
    """The live collection ``cid`` of that database, or Chroma's ``NotFound``."""
    entry = s.by_id(cid)
    if entry is None or (entry.tenant, entry.database) != (tenant, database):
        raise NotFound(f"Collection [{cid}] does not exist.")
    return entry


OpT = TypeVar("OpT", bound=cat.CatalogOp)


def _logged(op: OpT) -> tuple[OpT, OpT]:
    """A decided change, to be logged, and returned to the caller."""
    return op, op


class LazyRead:
    """A collection's reads: its reader, loaded on the first of them."""

    def __init__(self, members: Members, settings: CollectionSettings) -> None:
        self.members = members
        self.settings = settings

    def collection_model(self) -> Mapping[str, Any]:
        """Not used: a pool's models come from its catalog."""
        raise NotFound("a pool's collection models come from its catalog")

    async def query(self, req: QueryRequest) -> Mapping[str, Any]:
        """See ``ReadBackend.query``."""
        return await (await self.members.reader(self.settings)).read.query(req)

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """See ``ReadBackend.get``."""
        return await (await self.members.reader(self.settings)).read.get(req)

    async def count(self, read_after: str | None) -> int:
        """See ``ReadBackend.count``."""
        return await (await self.members.reader(self.settings)).read.count(read_after)


class LazyWrite:
    """A collection's writes: its writer, made on the first of them (no reader needed)."""

    def __init__(self, members: Members, settings: CollectionSettings) -> None:
        self.members = members
        self.settings = settings

    async def write(self, kind: OpKind, req: WriteRequest) -> str | WriteAck:
        """See ``WriteBackend.write``."""
        return await (await self.members.writer(self.settings)).write.write(kind, req)


class EmptyRead:
    """Reads of a collection that has never been written to."""

    def collection_model(self) -> Mapping[str, Any]:
        """Not used: a pool's models come from its catalog."""
        raise NotFound("a pool's collection models come from its catalog")

    async def query(self, req: QueryRequest) -> Mapping[str, Any]:
        """No neighbours for any query."""
        n = req.query_embeddings.shape[0]
        return {"ids": [[] for _ in range(n)],
                **{c: [[] for _ in range(n)] for c in req.include}}

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """No records."""
        return {"ids": [], **{c: [] for c in req.include}}

    async def count(self, read_after: str | None) -> int:
        """None."""
        return 0


class FirstWrite:
    """Writes to a collection that has never been written to."""

    def __init__(self, pool: PoolService, entry: cat.CollectionEntry) -> None:
        self.pool = pool
        self.entry = entry

    async def write(self, kind: OpKind, req: WriteRequest) -> str | WriteAck:
        """With embeddings: fix the dimension, load the collection, write. Without, there
        is nothing to update or delete yet (as in an empty Chroma collection)."""
        if req.embeddings is None or not req.ids:
            if kind in (OpKind.ADD, OpKind.UPSERT) and req.ids:
                raise needs_embeddings(kind)
            return WriteAck(token="", deleted=0 if kind == OpKind.DELETE else None)
        target = await self.pool.fix_dimension(self.entry, int(req.embeddings.shape[1]))
        assert target.write is not None
        return await target.write.write(kind, req)
