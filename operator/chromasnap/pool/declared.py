"""Collections declared in Git: ChromaCollections whose ``spec.database`` names this pool.

The operator never reads the bucket, so the pool's own pods do the declared
collections' work, with the pods' ServiceAccount (the operator keeps its Role
to exactly the declared names):

- each declared collection exists in the pool (``get_or_create`` with the declared
  space and HNSW settings, in the default tenant and database); one that exists
  already, e.g. created by an application first, is kept as it is;
- applications cannot delete or rename it: the catalog marks it as declared
  (``CollectionEntry.declared_by``), so every pod of the pool refuses;
- its status (version, records, pending deltas, last compaction, conditions) is
  patched into the ChromaCollection, as a collection of its own reports it (from
  what the passes recorded: :mod:`chromasnap.pool.published`);
- when it is deleted with ``deletionPolicy: Delete``, the pool deletes it and
  then removes the ``chromasnap.dev/pool-delete`` finalizer the operator added.

The functions that read the resources are pure; :class:`DeclaredCollections`
does the calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chromasnap.api.createbody import parse_create
from chromasnap.engine.errors import NotFound
from chromasnap.logs import fields
from chromasnap.pool.published import Published, as_last_compaction, as_snapshot, iso
from chromasnap.resource import GROUP, PLURAL, POOL_DELETE_FINALIZER, VERSION

if TYPE_CHECKING:
    from chromasnap.pool.service import PoolService

log = logging.getLogger("chromasnap.pool")

TENANT, DATABASE = "default_tenant", "default_database"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Declared:
    """One ChromaCollection that declares a collection of this pool."""

    resource: str
    uid: str
    generation: int | None
    name: str
    space: str
    m: int
    construction_ef: int
    search_ef: int
    deleting: bool
    finalizers: tuple[str, ...]
    resource_version: str


def declared_in(items: Sequence[Mapping[str, Any]], database: str) -> list[Declared]:
    """The ChromaCollections (of one namespace's list) that declare a collection of the
    ChromaDatabase ``database`` (pure)."""
    out = []
    for item in items:
        spec = item.get("spec") or {}
        if spec.get("database") != database:
            continue
        meta = item.get("metadata") or {}
        coll = spec.get("collection") or {}
        hnsw = coll.get("hnsw") or {}
        out.append(Declared(
            resource=str(meta.get("name")), uid=str(meta.get("uid")),
            generation=meta.get("generation"), name=str(coll.get("name")),
            space=str(coll.get("space") or "l2"), m=int(hnsw.get("m", 16)),
            construction_ef=int(hnsw.get("constructionEf", 100)),
            search_ef=int(hnsw.get("searchEf", 100)),
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=tuple(meta.get("finalizers") or ()),
            resource_version=str(meta.get("resourceVersion") or "")))
    return sorted(out, key=lambda d: d.resource)


def create_body(d: Declared) -> dict[str, Any]:
    """The create-collection request a client would send for ``d``."""
    return {"name": d.name, "get_or_create": True, "configuration": {"hnsw": {
        "space": d.space, "max_neighbors": d.m, "ef_construction": d.construction_ef,
        "ef_search": d.search_ef}}}


def member_status(d: Declared, database: str, cid: str | None, error: str | None,
                  published: Published | None, pending: int, previous: Mapping[str, Any],
                  now: datetime) -> dict[str, Any]:
    """The ChromaCollection's ``status`` for a declared collection (pure): ``Ready`` and
    ``SnapshotAvailable`` as a collection of its own has them, its snapshot, the
    deltas not folded yet (``pending``), and the last compaction a pass recorded."""
    if error is not None:
        ready = ("False", "PoolRefused", error)
    else:
        ready = ("True", "InPool", f"collection {d.name} ({cid}) of ChromaDatabase {database}")
    found = [("Ready", *ready),
             ("SnapshotAvailable", "True" if published else "False",
              "SnapshotPublished" if published else "NoSnapshot",
              f"version {published.version}" if published else
              "no version yet: the first write's compaction pass publishes one")]
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    conds = []
    for ctype, status, reason, message in found:
        old = before.get(ctype) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        conds.append({"type": ctype, "status": status, "reason": reason, "message": message,
                      "lastTransitionTime": since or iso(now),
                      "observedGeneration": d.generation})
    out: dict[str, Any] = {"observedGeneration": d.generation, "conditions": conds}
    if cid is not None:
        out["pendingDeltas"] = pending
    if published is not None:
        out["snapshot"] = as_snapshot(published)
        if (last := as_last_compaction(published)) is not None:
            out["lastCompaction"] = last
    return out


class DeclaredCollections:
    """Keeps the pool's declared collections in step with their ChromaCollections."""

    def __init__(self, namespace: str, database: str, service: PoolService,
                 published_of: Callable[[list[str]], Mapping[str, Published]],
                 pending_of: Callable[[str], int], api: Callable[[], Any]) -> None:
        self.namespace = namespace
        self.database = database
        self.service = service
        #: the newest versions of these collections (blocking: run in a thread)
        self.published_of = published_of
        #: a collection's deltas not folded yet, as this process knows them
        self.pending_of = pending_of
        self._api = api
        self._client: Any = None
        self._sent: dict[str, dict[str, Any]] = {}
        #: uids of the resources whose collection this process created (or found)
        self._created: set[str] = set()

    @property
    def client(self) -> Any:
        """The CustomObjectsApi, created on first use."""
        if self._client is None:
            self._client = self._api()
        return self._client

    async def sync(self) -> None:
        """One round: list the namespace's ChromaCollections, then create, mark, delete
        and report the declared ones."""
        listed = await asyncio.to_thread(
            self.client.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL)
        mine = declared_in(listed.get("items") or [], self.database)
        marked = await self.service.declared(TENANT, DATABASE)
        await self._release_gone(marked, {self._by(d) for d in mine})
        outcomes: list[tuple[Declared, str | None, str | None]] = []
        for d in mine:
            if d.deleting:
                await self._delete(d)
                continue
            cid, error = None, None
            try:
                cid = await self._ensure(d, marked)
            except Exception as e:  # reported in the resource's status
                error = str(e)[:1000]
            if cid is not None or error is not None:
                outcomes.append((d, cid, error))
        found = await asyncio.to_thread(
            self.published_of, [cid for _, cid, _ in outcomes if cid is not None])
        for d, cid, error in outcomes:
            await self._report(d, cid, error, found.get(cid) if cid else None)

    def _by(self, d: Declared) -> str:
        return f"{self.namespace}/{d.resource}"

    async def _release_gone(self, marked: Mapping[str, tuple[str, str]],
                            present: set[str]) -> None:
        """Collections whose ChromaCollection is gone (deleted with ``Retain``) are no
        longer declared: the API may delete them now."""
        for cid, (name, by) in marked.items():
            if by.startswith(f"{self.namespace}/") and by not in present:
                await self.service.declare(cid, None)
                log.info("declared collection released: its resource is gone",
                         extra=fields(collection=name, resource=by))

    async def _ensure(self, d: Declared, marked: Mapping[str, tuple[str, str]]
                      ) -> str | None:
        """The declared collection's id, created the first time this process sees the
        resource, and marked as declared in the catalog (so that every pod refuses to
        delete or rename it). Later rounds only look it up: a round's list may be older
        than a deletion another pod just made for the resource, and creating again would
        bring the collection back after its resource is gone."""
        if d.uid not in self._created:
            model = await self.service.create_collection(
                TENANT, DATABASE, parse_create(create_body(d)))
            self._created.add(d.uid)
        else:
            try:
                model = await self.service.get_collection(TENANT, DATABASE, d.name)
            except NotFound:
                return None
        cid = str(model["id"])
        if cid not in marked or marked[cid][1] != self._by(d):
            # Only when not marked yet: each mark is a conditional append (a LIST of the
            # log's tail first), and a round visits every declared collection.
            await self.service.declare(cid, self._by(d))
        return cid

    async def _delete(self, d: Declared) -> None:
        if POOL_DELETE_FINALIZER not in d.finalizers:
            return  # Retain: released once the resource is gone (_release_gone)
        try:
            model = await self.service.get_collection(TENANT, DATABASE, d.name)
            await self.service.declare(str(model["id"]), None)
            await self.service.delete_collection(TENANT, DATABASE, d.name)
            log.info("declared collection deleted with its resource", extra=fields(
                collection=d.name, resource=self._by(d)))
        except NotFound:
            pass  # deleted already (by another pod, or earlier)
        rest = [f for f in d.finalizers if f != POOL_DELETE_FINALIZER]
        patch = {"metadata": {"finalizers": rest, "resourceVersion": d.resource_version}}
        await asyncio.to_thread(
            self.client.patch_namespaced_custom_object, GROUP, VERSION, self.namespace,
            PLURAL, d.resource, patch, _content_type=MERGE_PATCH)

    async def _report(self, d: Declared, cid: str | None, error: str | None,
                      published: Published | None) -> None:
        previous = self._sent.get(d.uid) or {}
        pending = self.pending_of(cid) if cid else 0
        status = member_status(d, self.database, cid, error, published, pending, previous,
                               datetime.now(UTC))
        if status == previous:
            return
        await asyncio.to_thread(
            self.client.patch_namespaced_custom_object_status, GROUP, VERSION,
            self.namespace, PLURAL, d.resource, {"status": status},
            _content_type=MERGE_PATCH)
        self._sent[d.uid] = status
