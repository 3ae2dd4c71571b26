"""The slow periodic re-apply of every collection, in case a watch missed an event."""

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


async def resync_forever(interval: float, cache: ClusterCache, memory: Memory,
                         reconcile: Callable[[Mapping[str, Any], int], Awaitable[None]]
                         ) -> None:
    """Every ``interval`` seconds, re-apply each collection, spread over the interval."""
    while True:
        await asyncio.sleep(interval)
        bodies = cache.all_collections()
        gap = min(1.0, interval / max(1, len(bodies)) / 2)
        for body in bodies:
            m = meta(body)
            if m.get("deletionTimestamp"):
                continue
            uid = str(m.get("uid"))
            # Compare against the object, not our memory: heals hand-edited status too.
            memory.written.pop(uid, None)
            try:
                await reconcile(body, 0)
            except (kopf.TemporaryError, kopf.PermanentError, ApiError) as e:
                log.info("resync deferred", extra=logs.fields(
                    collection=f"{m.get('namespace')}/{m.get('name')}", error=str(e)))
            except Exception:
                log.exception("resync failed")
            await asyncio.sleep(gap)
