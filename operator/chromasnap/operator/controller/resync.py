"""The slow periodic re-apply of every ChromaCollection and ChromaDatabase, in case a watch
missed an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from chromasnap import logs
from chromasnap.operator.controller.cache import ClusterCache, meta
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.kubeapi import ApiError

log = logging.getLogger("chromasnap.operator")

#: A collection's reconcile: (body, retry).
Reconcile = Callable[[Mapping[str, Any], int], Awaitable[None]]
#: A ChromaDatabase's re-apply: (body).
Resync = Callable[[Mapping[str, Any]], Awaitable[None]]


async def resync_forever(interval: float, cache: ClusterCache, memory: Memory,
                         reconcile: Reconcile, resync_database: Resync) -> None:
    """Every ``interval`` seconds, :func:`resync_once`."""
    while True:
        await asyncio.sleep(interval)
        await resync_once(interval, cache, memory, reconcile, resync_database)


async def resync_once(interval: float, cache: ClusterCache, memory: Memory,
                      reconcile: Reconcile, resync_database: Resync) -> None:
    """Re-apply each collection (``reconcile``), then each ChromaDatabase
    (``resync_database``), with pauses that spread the pass over at most half of
    ``interval``; one that fails is logged and the others go on."""

    async def collection(body: Mapping[str, Any]) -> None:
        # Compare against the object, not our memory: heals hand-edited status too.
        memory.written.pop(str(meta(body).get("uid")), None)
        await reconcile(body, 0)

    targets: list[tuple[str, Mapping[str, Any], Resync]] = [
        *(("collection", b, collection) for b in cache.all_collections()),
        *(("database", b, resync_database) for b in cache.all_databases())]
    gap = min(1.0, interval / max(1, len(targets)) / 2)
    for kind, body, apply in targets:
        m = meta(body)
        if m.get("deletionTimestamp"):
            continue
        what = f"{m.get('namespace')}/{m.get('name')}"
        try:
            await apply(body)
        except (kopf.TemporaryError, kopf.PermanentError, ApiError) as e:
            log.info("resync deferred", extra=logs.fields(**{kind: what}, error=str(e)))
        except Exception:
            # One bad object must stop neither this pass nor the loop.
            log.exception("resync failed", extra=logs.fields(**{kind: what}))
        await asyncio.sleep(gap)
