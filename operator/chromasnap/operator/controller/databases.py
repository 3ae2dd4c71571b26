"""Applies a ChromaDatabase's children, restores them when changed by hand, writes its status.

The builders are pure (:mod:`chromasnap.operator.specs.database`); this is where
their output meets the API server, with server-side apply, one database at a
time. The pool's pods write the pool's totals into the same status; the
operator patches only the fields it owns (:mod:`chromasnap.operator.database_status`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf

from chromasnap import logs
from chromasnap.operator.conditions import Verdict, conditions
from chromasnap.operator.controller.cache import ClusterCache, Key, meta
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.retry import backoff
from chromasnap.operator.crd import DeletionPolicy, SpecError
from chromasnap.operator.database import (
    ChromaDatabase,
    DeclaredCollection,
    declared_database,
)
from chromasnap.operator.database_status import CONDITION_READY, operator_fields
from chromasnap.operator.drift import drift
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.database import COMPONENT_POOL, database_children, role
from chromasnap.operator.specs.naming import LABEL_COMPONENT, LABEL_INSTANCE, selector_labels
from chromasnap.resource import API_VERSION, DATABASE_KIND, KIND, POOL_DELETE_FINALIZER

log = logging.getLogger("chromasnap.operator")

#: Applied once what they refer to exists (the Role a binding names, the ConfigMap and
#: ServiceAccount a pod uses).
_SECOND_WAVE = frozenset({"RoleBinding", "Deployment", "PodDisruptionBudget"})


def desired_by_name(body: Mapping[str, Any], settings: OperatorSettings,
                    members: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The database's children by (kind, name); empty if its spec is invalid."""
    try:
        db = ChromaDatabase.from_body(body)
    except SpecError:
        return {}
    return {(m["kind"], m["metadata"]["name"]): m
            for m in database_children(db, settings, members)}


def member_problem(generation: int | None, reason: str, message: str,
                   now: datetime) -> dict[str, Any]:
    """The status of a declared ChromaCollection the operator cannot hand to a pool (its
    pool's pods write it otherwise)."""
    return {"observedGeneration": generation, "conditions": conditions(
        [Verdict(CONDITION_READY, "False", reason, message)], [], generation, now)}


class DatabaseController:
    """Brings ChromaDatabases' children to their specs and reports what the cluster says."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: ClusterCache,
                 events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.events = events
        self._locks: dict[Key, asyncio.Lock] = {}
        #: uid -> why the current spec is not applied
        self._problems: dict[str, str] = {}
        #: uid -> the operator's status fields last patched (compared before patching)
        self._written: dict[str, dict[str, Any]] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reconcile(self, body: Mapping[str, Any], retry: int) -> None:
        """Apply every child (create, spec change, resume); an invalid spec gets
        ``Ready=False`` with the reason and nothing is applied."""
        m = meta(body)
        key: Key = (str(m["namespace"]), str(m["name"]))
        uid = str(m.get("uid"))
        async with self._lock(key):
            try:
                db = ChromaDatabase.from_body(body)
            except SpecError as e:
                self._problems[uid] = str(e)
                await self._refresh_locked(key, body)
                return
            self._problems.pop(uid, None)
            children = database_children(db, self.settings, self.members_of(key))
            try:
                for wave in ([c for c in children if c["kind"] not in _SECOND_WAVE],
                             [c for c in children if c["kind"] in _SECOND_WAVE]):
                    await asyncio.gather(*(self.kube.apply(c) for c in wave))
                await self._drop_network_policy(db, children)
                await self._refresh_locked(key, body)
            except ApiError as e:
                if e.status in (400, 422):
                    self._problems[uid] = f"the API server rejected a child: {e.message}"
                    await self._refresh_locked(key, body)
                    raise kopf.PermanentError(self._problems[uid]) from e
                raise kopf.TemporaryError(f"API call failed: {e}", delay=backoff(retry)) from e
        log.info("applied the database's children", extra=logs.fields(
            database=f"{key[0]}/{key[1]}", generation=m.get("generation")))

    async def resync(self, body: Mapping[str, Any]) -> None:
        """The periodic re-apply: every child, and the operator's status fields compared
        with the object's, not with what was last patched (heals a hand-edited status)."""
        self._written.pop(str(meta(body).get("uid")), None)
        await self.reconcile(body, 0)

    async def _drop_network_policy(self, db: ChromaDatabase,
                                   children: list[dict[str, Any]]) -> None:
        if any(c["kind"] == "NetworkPolicy" for c in children):
            return
        name = f"{db.name}-pool"
        live = await self.kube.get(path("networking.k8s.io/v1", "NetworkPolicy",
                                        db.namespace, name))
        owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == db.uid for o in owners):
            await self.kube.delete(path("networking.k8s.io/v1", "NetworkPolicy",
                                        db.namespace, name))

    async def refresh(self, key: Key) -> None:
        """Recompute the operator's status fields and patch them if they changed."""
        body = self.cache.database(key)
        if body is None:
            return
        async with self._lock(key):
            await self._refresh_locked(key, body)

    async def _refresh_locked(self, key: Key, body: Mapping[str, Any]) -> None:
        m = meta(body)
        if m.get("deletionTimestamp"):
            return
        uid = str(m.get("uid"))
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        desired = int((spec.get("pool") or {}).get("replicas", 2))
        written = self._written.get(uid)
        previous = (written or status).get("conditions") or []
        sel = ",".join(f"{k}={v}" for k, v in selector_labels(key[1], COMPONENT_POOL).items())
        new = operator_fields(
            endpoint=f"http://{key[1]}.{key[0]}.svc:8000", selector=sel,
            dep=self.cache.pool_deployment(key), desired=desired,
            problem=self._problems.get(uid), generation=m.get("generation"),
            previous=previous, now=datetime.now(UTC))
        base = written if written is not None else {k: status.get(k) for k in new}
        if new == base:
            return
        try:
            await self.kube.merge_patch(
                path(API_VERSION, DATABASE_KIND, key[0], key[1], "status"), {"status": new})
        except ApiError as e:
            if e.status == 404:
                return
            raise
        self._written[uid] = new

    async def child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A pool child changed: restore it if deleted or edited by hand; a Deployment's
        news refreshes the status."""
        m = meta(body)
        labels = m.get("labels") or {}
        if labels.get(LABEL_COMPONENT) != COMPONENT_POOL or not m.get("namespace"):
            return
        key: Key = (str(m["namespace"]), str(labels.get(LABEL_INSTANCE)))
        parent = self.cache.database(key)
        if parent is None or meta(parent).get("deletionTimestamp"):
            return
        kind, name = str(body.get("kind")), str(m.get("name"))
        desired = desired_by_name(parent, self.settings, self.members_of(key)).get((kind, name))
        if desired is not None and (event_type == "DELETED" or drift(desired, body)):
            async with self._lock(key):
                owner = await self.kube.get(path(API_VERSION, DATABASE_KIND, *key))
                if owner is None or meta(owner).get("deletionTimestamp") or (
                        meta(owner).get("uid") != meta(parent).get("uid")):
                    return
                await self.kube.apply(desired)
                what = "re-created" if event_type == "DELETED" else "reverted changes to"
                await self.events.post(owner, "Normal", "ChildRestored",
                                       f"{what} {kind} {name}")
        if kind == "Deployment":
            await self.refresh(key)

    # -- ChromaCollections declared in a pool (spec.database) ----------------------------

    def members_of(self, key: Key) -> list[str]:
        """Names of the ChromaCollections declared in database ``key`` (not deleted, or
        still waiting for the pool to delete their collection)."""
        return sorted(str(meta(b).get("name")) for b in self.cache.all_collections()
                      if meta(b).get("namespace") == key[0]
                      and declared_database(b) == key[1]
                      and (not meta(b).get("deletionTimestamp")
                           or POOL_DELETE_FINALIZER in (meta(b).get("finalizers") or ())))

    async def declare(self, body: Mapping[str, Any], retry: int) -> None:
        """A ChromaCollection with ``spec.database``: let its pool's pods manage it (their
        Role names it), with the pool's finalizer for ``deletionPolicy: Delete``. The
        pods create the collection and report its status; the operator reports only why
        it cannot hand it over."""
        m = meta(body)
        ns, name = str(m["namespace"]), str(m["name"])
        now = datetime.now(UTC)
        try:
            member = DeclaredCollection.from_body(body)
        except SpecError as e:
            await self._member_status(ns, name, member_problem(
                m.get("generation"), "InvalidSpec", str(e), now))
            return
        key: Key = (ns, member.spec.database)
        await self._finalizer(body, member.spec.deletion_policy is DeletionPolicy.DELETE)
        parent = self.cache.database(key)
        if parent is None and await self.release_orphan(body):
            return
        if parent is None:
            await self._member_status(ns, name, member_problem(
                member.generation, "DatabaseNotFound",
                f"ChromaDatabase {member.spec.database} does not exist in namespace {ns}: "
                "create it, or fix spec.database", now))
            return
        try:
            db = ChromaDatabase.from_body(parent)
        except SpecError:
            return  # the database reports its own problem; its next apply names this one
        members = sorted({*self.members_of(key), name})
        try:
            async with self._lock(key):
                await self.kube.apply(role(db, members))
        except ApiError as e:
            raise kopf.TemporaryError(f"API call failed: {e}", delay=backoff(retry)) from e

    async def member_gone(self, body: Mapping[str, Any]) -> None:
        """A declared ChromaCollection is gone: its name leaves the pool's Role."""
        database = declared_database(body)
        key: Key = (str(meta(body).get("namespace")), str(database))
        parent = self.cache.database(key)
        if database is None or parent is None:
            return
        try:
            db = ChromaDatabase.from_body(parent)
        except SpecError:
            return
        gone = str(meta(body).get("name"))
        async with self._lock(key):
            await self.kube.apply(role(db, [n for n in self.members_of(key) if n != gone]))

    async def release_orphan(self, body: Mapping[str, Any]) -> bool:
        """A declared ChromaCollection being deleted whose ChromaDatabase is gone: no pool
        pod is left to delete its collection and remove the pool's finalizer, so the
        operator removes it (the pool's data went with the database's own
        ``deletionPolicy``). Returns whether it did."""
        m = meta(body)
        database = declared_database(body)
        if (database is None or not m.get("deletionTimestamp")
                or POOL_DELETE_FINALIZER not in (m.get("finalizers") or ())):
            return False
        key: Key = (str(m.get("namespace")), database)
        if self.cache.database(key) is not None or not await self._gone(key):
            return False
        await self._finalizer(body, False, deleting=True)
        log.info("released a declared collection whose database is gone", extra=logs.fields(
            namespace=key[0], name=m.get("name"), database=database))
        return True

    async def _gone(self, key: Key) -> bool:
        """Whether the ChromaDatabase ``key`` does not exist (asked of the API: the cache
        may not have listed it yet when the operator has just started)."""
        return await self.kube.get(path(API_VERSION, DATABASE_KIND, *key)) is None

    async def _finalizer(self, body: Mapping[str, Any], wanted: bool, *,
                         deleting: bool = False) -> None:
        """Add or remove the pool's finalizer; never on an object being deleted, unless
        ``deleting`` (removing it then lets the deletion finish)."""
        m = meta(body)
        have = list(m.get("finalizers") or [])
        if (m.get("deletionTimestamp") and not deleting) or (
                POOL_DELETE_FINALIZER in have) == wanted:
            return
        new = ([*have, POOL_DELETE_FINALIZER] if wanted
               else [f for f in have if f != POOL_DELETE_FINALIZER])
        await self.kube.merge_patch(
            path(API_VERSION, KIND, str(m["namespace"]), str(m["name"])),
            {"metadata": {"finalizers": new, "resourceVersion": m.get("resourceVersion")}})

    async def _member_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.kube.merge_patch(path(API_VERSION, KIND, ns, name, "status"),
                                        {"status": status})
        except ApiError as e:
            if e.status != 404:
                raise

    def forget(self, uid: str, key: Key) -> None:
        """Drop what is remembered about a deleted database."""
        self._problems.pop(uid, None)
        self._written.pop(uid, None)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            self._locks.pop(key, None)
