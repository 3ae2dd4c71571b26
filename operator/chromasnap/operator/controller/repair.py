"""Restores children that were deleted or edited by hand, and refreshes status on their news.

Every event of a labelled child arrives here. Desired manifests are rebuilt from
the cached collection (cheap, pure) and compared with :func:`~chromasnap.operator.drift.drift`;
only real differences take the lock and an API round trip. A NetworkPolicy the
spec no longer asks for (``networkPolicy.enabled`` turned off) is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from chromasnap import logs
from chromasnap.operator.checks import check_spec
from chromasnap.operator.controller.cache import ClusterCache, Key, meta, slim
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.controller.statuswriter import StatusWriter
from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.drift import drift
from chromasnap.operator.kubeapi import Kube, object_path, path
from chromasnap.operator.observed import OwnedChild
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.children import desired_children, unwanted_children
from chromasnap.operator.specs.naming import LABEL_INSTANCE, Manifest
from chromasnap.resource import API_VERSION, KIND

log = logging.getLogger("chromasnap.operator")

#: Kinds whose events change the collection's status.
STATUS_KINDS = frozenset({"Deployment", "CronJob", "Job"})


def desired_by_name(body: Mapping[str, Any],
                    settings: OperatorSettings) -> dict[tuple[str, str], Manifest]:
    """The children of a collection by (kind, name); empty if its spec is invalid.

    Built again on each call rather than cached: the builders take about a
    millisecond, while keeping 13 manifests per collection costs ~50 KB per
    collection (10 MB for 200) for the operator's lifetime.
    """
    try:
        cc = ChromaCollection.from_body(body)
    except SpecError:
        return {}
    if check_spec(cc) is not None:
        return {}
    return {(m["kind"], m["metadata"]["name"]): m for m in desired_children(cc, settings)}


def unwanted_by_name(body: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of optional children a collection no longer asks for; empty if its
    spec is invalid (nothing is changed for a spec the operator will not act on)."""
    try:
        cc = ChromaCollection.from_body(body)
    except SpecError:
        return set()
    if check_spec(cc) is not None:
        return set()
    return unwanted_children(cc)


class DriftRepair:
    """Handles child events: repair drift, then refresh the owner's status."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: ClusterCache,
                 memory: Memory, status: StatusWriter, events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.memory = memory
        self.status = status
        self.events = events

    async def child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A child changed: restore it if it drifted, refresh the owner's status."""
        m = meta(body)
        labels = m.get("labels") or {}
        instance = labels.get(LABEL_INSTANCE)
        ns = m.get("namespace")
        if not instance or not ns:
            return
        key: Key = (str(ns), str(instance))
        parent = self.cache.collection(key)
        if parent is None:
            return
        kind = str(body.get("kind") or "")
        if kind != "Job":
            await self._repair(key, parent, kind, str(m.get("name")), event_type, body)
        if kind in STATUS_KINDS and str(meta(parent).get("uid")) in self.memory.judged:
            await self.status.refresh(key)

    async def pod_event(self, key: Key) -> None:
        """One of the collection's pods changed: refresh its status (pods are never
        repaired; their controllers own them). Costs no API call if nothing changed."""
        parent = self.cache.collection(key)
        if parent is not None and str(meta(parent).get("uid")) in self.memory.judged:
            await self.status.refresh(key)

    async def _repair(self, key: Key, parent: Mapping[str, Any], kind: str, name: str,
                      event_type: str | None, live: Mapping[str, Any]) -> None:
        desired = desired_by_name(parent, self.settings).get((kind, name))
        if meta(parent).get("deletionTimestamp"):
            return
        if desired is None:
            if event_type != "DELETED" and (kind, name) in unwanted_by_name(parent):
                await self._drop(key, parent, kind, name, live)
            return
        if event_type != "DELETED" and not drift(desired, live):
            return
        async with self.memory.lock(key):
            # The event may be stale (the reconcile that held the lock may have fixed it),
            # and deletions after the collection itself was deleted are the garbage
            # collector's doing: look again at both before touching anything.
            owner = await self.kube.get(path(API_VERSION, KIND, key[0], key[1]))
            if owner is None or meta(owner).get("deletionTimestamp") or (
                meta(owner).get("uid") != meta(parent).get("uid")
            ):
                return
            desired = desired_by_name(slim(owner), self.settings).get((kind, name))
            if desired is None:
                return
            fresh = await self.kube.get(object_path(desired))
            if fresh is None:
                action, detail = "ChildRestored", f"re-created {kind} {name}, which was deleted"
            else:
                paths = drift(desired, fresh)
                if not paths:
                    return
                action = "ChildReverted"
                detail = (f"reverted changes to {kind} {name} made outside the operator: "
                          + ", ".join(paths[:5]))
            applied = await self.kube.apply(desired)
            before_rv = meta(fresh or {}).get("resourceVersion")
            if fresh is not None and meta(applied).get("resourceVersion") == before_rv:
                # Nothing changed: the difference was only in how the server renders a
                # value (e.g. a quantity). Not worth an Event.
                log.debug("apply was a no-op", extra=logs.fields(kind=kind, name=name))
                return
            await self.events.post(owner, "Normal", action, detail)

    async def _drop(self, key: Key, parent: Mapping[str, Any], kind: str, name: str,
                    live: Mapping[str, Any]) -> None:
        """Delete a child the spec no longer asks for (a NetworkPolicy), if the collection
        owns it: e.g. created by a reconcile that raced the spec change that disabled it."""
        child = OwnedChild.from_body(live)
        async with self.memory.lock(key):
            owner = await self.kube.get(path(API_VERSION, KIND, key[0], key[1]))
            if owner is None or meta(owner).get("deletionTimestamp") or (
                meta(owner).get("uid") != meta(parent).get("uid")
            ):
                return
            if child.owner_uid != meta(owner).get("uid"):
                return
            if (kind, name) not in unwanted_by_name(slim(owner)):
                return
            if await self.kube.delete(object_path(live), uid=child.uid):
                log.info("deleted a child the spec no longer asks for",
                         extra=logs.fields(collection=f"{key[0]}/{key[1]}", kind=kind,
                                           name=name))
