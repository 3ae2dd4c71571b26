"""Writes the status fields the operator owns, and an Event for each notable change.

The status itself is computed by :func:`chromasnap.operator.conditions.operator_status`
from the cached children; this class decides what to feed it (the spec problem,
the generation judged) and patches only when the result differs from what was
last written, so the many child events cost no API calls when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from chromasnap.operator.checks import Problem
from chromasnap.operator.conditions import operator_status, recorded_problem, transitions
from chromasnap.operator.controller.cache import ClusterCache, Key, meta
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.database import declared_database
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.resource import API_VERSION, KIND


class StatusWriter:
    """Recomputes a collection's status and patches it if it changed."""

    def __init__(self, kube: Kube, cache: ClusterCache, memory: Memory,
                 events: EventRecorder) -> None:
        self.kube = kube
        self.cache = cache
        self.memory = memory
        self.events = events

    async def refresh(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        """Recompute the status of one collection and patch it if it changed."""
        async with self.memory.lock(key):
            await self.refresh_locked(key, body)

    async def refresh_locked(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        """:meth:`refresh` for a caller that holds the collection's lock already."""
        body = body if body is not None else self.cache.collection(key)
        if body is None:
            return
        m = meta(body)
        if m.get("deletionTimestamp"):
            return  # going away: the purge path owns the conditions now
        if declared_database(body):
            return  # in a pool: its pods write the status (pool/declared.py)
        uid = str(m.get("uid"))
        mem = self.memory
        status = cast(Mapping[str, Any], body.get("status") or {})
        written = mem.written.get(uid)
        previous = (written or status).get("conditions") or []
        if uid in mem.problems:
            problem: Problem | None = mem.problems[uid]
        elif uid in mem.judged:
            problem = None
        else:
            problem = recorded_problem(status, m.get("generation"))
        obs = self.cache.observe(key)
        created = uid in mem.applied or any((obs.writer, obs.reader, obs.cronjob))
        new = operator_status(
            key[1], body.get("spec") or {}, status, obs, problem,
            mem.judged.get(uid, status.get("observedGeneration")), created, previous,
        )
        base = written if written is not None else {k: status.get(k) for k in new}
        if new == base:
            return
        try:
            await self.kube.merge_patch(
                path(API_VERSION, KIND, key[0], key[1], "status"), {"status": new})
        except ApiError as e:
            if e.status == 404:
                return  # deleted meanwhile
            raise
        mem.written[uid] = new
        for t in transitions(previous, new["conditions"]):
            await self.events.post(body, t.type, t.reason, t.message)
