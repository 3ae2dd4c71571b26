"""Starts compaction Jobs outside the schedule: on request, and a collection's first.

Job names are deterministic (:func:`chromasnap.operator.schedule.compaction_run_id`),
so a create that returns 409 Conflict means the run was already started: retries
and duplicate events never start a second Job for one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.kubeapi import ApiError, Kube
from chromasnap.operator.schedule import BOOTSTRAP_RUN_ID, compaction_run_id
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.jobs import compaction_job
from chromasnap.operator.specs.naming import Manifest
from chromasnap.resource import COMPACT_NOW_ANNOTATION


class CompactionLauncher:
    """Creates on-demand compaction Jobs and says so in an Event."""

    def __init__(self, kube: Kube, settings: OperatorSettings, events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.events = events

    async def _create(self, job: Manifest) -> bool:
        """Create ``job``; ``False`` if it exists already (that run was started before)."""
        try:
            await self.kube.create(job)
        except ApiError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def compact_now(self, body: Mapping[str, Any], request: str) -> None:
        """Start a compaction Job for one value of the compact-now annotation."""
        try:
            cc = ChromaCollection.from_body(body)
        except SpecError as e:
            await self.events.post(body, "Warning", "CompactionNotStarted",
                                   f"{COMPACT_NOW_ANNOTATION} ignored: the spec is invalid: {e}")
            return
        job = compaction_job(cc, self.settings, compaction_run_id(cc.uid, request))
        if not await self._create(job):
            return  # this request was already handled
        await self.events.post(body, "Normal", "CompactionRequested",
                               f"started Job {job['metadata']['name']} "
                               f"({COMPACT_NOW_ANNOTATION}={request!r})")

    async def bootstrap(self, cc: ChromaCollection, body: Mapping[str, Any]) -> None:
        """Start one compaction right away when no snapshot was ever reported.

        Readers are ready only with a snapshot, and the first scheduled run may be minutes
        away; the first run also picks up data a previous collection left under the prefix.
        """
        status = body.get("status") or {}
        if status.get("snapshot") or status.get("lastCompaction"):
            return
        job = compaction_job(cc, self.settings, BOOTSTRAP_RUN_ID)
        if not await self._create(job):
            return
        await self.events.post(body, "Normal", "CompactionStarted",
                               f"no snapshot yet: started Job {job['metadata']['name']} to "
                               "publish the first one")
