"""Puts the operator's parts together at startup and takes them apart at shutdown.

kopf's memo carries one :class:`Operator` from before the event loop starts; the
parts need the API client, which must be created inside the loop, so they exist
only between :meth:`Operator.start` and :meth:`Operator.stop`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chromasnap.operator.controller.cache import ClusterCache
from chromasnap.operator.controller.compactions import CompactionLauncher
from chromasnap.operator.controller.databases import DatabaseController
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.controller.metrics import (
    CollectionCollector,
    MetricsServer,
    MetricsSettings,
    RunCounters,
    registry_for,
)
from chromasnap.operator.controller.purge import Purger
from chromasnap.operator.controller.reconcile import Reconciler
from chromasnap.operator.controller.repair import DriftRepair
from chromasnap.operator.controller.resync import resync_forever
from chromasnap.operator.controller.statuswriter import StatusWriter
from chromasnap.operator.database import declared_database
from chromasnap.operator.kubeapi import Kube, load_connection
from chromasnap.operator.settings import OperatorSettings, RuntimeSettings
from chromasnap.operator.specs.naming import FIELD_MANAGER


@dataclass(frozen=True)
class Parts:
    """The running operator: one object per job, sharing the client, cache and memory."""

    kube: Kube
    cache: ClusterCache
    memory: Memory
    events: EventRecorder
    status: StatusWriter
    compactions: CompactionLauncher
    reconciler: Reconciler
    repair: DriftRepair
    purger: Purger
    databases: DatabaseController

    @classmethod
    def wire(cls, kube: Kube, indices: Mapping[str, Any], settings: OperatorSettings,
             runtime: RuntimeSettings, instance: str) -> Parts:
        """Build every part around ``kube`` and kopf's ``indices``."""
        cache = ClusterCache(indices)
        memory = Memory()
        events = EventRecorder(kube, instance)
        status = StatusWriter(kube, cache, memory, events)
        compactions = CompactionLauncher(kube, settings, events)
        return cls(
            kube=kube,
            cache=cache,
            memory=memory,
            events=events,
            status=status,
            compactions=compactions,
            reconciler=Reconciler(kube, settings, cache, memory, status, compactions,
                                  runtime.max_concurrent_reconciles),
            repair=DriftRepair(kube, settings, cache, memory, status, events),
            purger=Purger(kube, settings, cache, events),
            databases=DatabaseController(kube, settings, cache, events),
        )

    async def reconcile_collection(self, body: Mapping[str, Any], retry: int) -> None:
        """A ChromaCollection's reconcile: its own children, or, declared in a pool
        (``spec.database``), the pool's."""
        if declared_database(body):
            await self.databases.declare(body, retry)
        else:
            await self.reconciler.reconcile(body, retry)


class Operator:
    """What kopf's memo carries: the settings, and the parts once started.

    Everything the parts remember can be lost (a restart): resume handlers re-apply,
    and status is recomputed from the cluster.
    """

    def __init__(self, settings: OperatorSettings, runtime: RuntimeSettings) -> None:
        self.settings = settings
        self.runtime = runtime
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._parts: Parts | None = None
        self._resync: asyncio.Task[None] | None = None
        #: compaction runs seen reported in each collection's status (for /metrics)
        self.run_counters = RunCounters()
        self._metrics: MetricsServer | None = None

    @property
    def parts(self) -> Parts:
        """The running parts (created at startup, inside the event loop)."""
        if self._parts is None:
            raise RuntimeError("operator not started")
        return self._parts

    async def start(self, indices: Mapping[str, Any]) -> None:
        """Open the API client, wire the parts, serve /metrics, start the periodic resync."""
        kube = Kube(load_connection(), FIELD_MANAGER)
        self._parts = Parts.wire(kube, indices, self.settings, self.runtime, self.instance)
        collector = CollectionCollector(self._parts.cache.all_collections, self.run_counters)
        self._metrics = MetricsServer(registry_for(collector), MetricsSettings())
        await self._metrics.start()
        if self.runtime.resync_seconds > 0:
            p = self._parts
            self._resync = asyncio.create_task(
                resync_forever(self.runtime.resync_seconds, p.cache, p.memory,
                               p.reconcile_collection, p.databases.resync),
                name="resync")

    async def stop(self) -> None:
        """Stop the resync and the metrics server, and close the client."""
        if self._metrics is not None:
            await self._metrics.stop()
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
        if self._parts is not None:
            await self._parts.kube.close()
