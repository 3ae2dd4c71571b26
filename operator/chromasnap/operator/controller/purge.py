"""``deletionPolicy: Delete``: stop the workloads, empty the prefix, then let the collection go.

Runs under a finalizer. The data is deleted by a Job (it needs the collection's
storage identity, which the operator does not have), and only the Job's own
report in the status (a ``Purged`` condition) counts as done: a Job's completion
alone proves nothing about what the process did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from chromasnap.operator.checks import prefixes_overlap
from chromasnap.operator.conditions import CONDITION_PURGED, TRUE, condition
from chromasnap.operator.controller.cache import ClusterCache, meta
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.retry import backoff
from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.operator.observed import JobState
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.access import service_account
from chromasnap.operator.specs.jobs import purge_job
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    COMPONENT_WRITER,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    names,
    purge_job_name,
)

#: Field manager for objects the purge path creates without an owner (see purge()).
PURGE_FIELD_MANAGER = "chromasnap-operator-purge"


class Purger:
    """Deletes a collection's data before its finalizer goes."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: ClusterCache,
                 events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.events = events
        #: uids of failed purge Jobs already reported (one Warning per failed Job)
        self.failures_seen: set[str] = set()

    async def purge(self, body: Mapping[str, Any], retry: int) -> None:
        """Stop the workloads, empty the prefix, then let go.

        Returns when the data is gone (kopf then removes the finalizer); raises
        ``kopf.TemporaryError`` while waiting. The purge Job reports success itself
        (a ``Purged`` condition): a Job's completion alone proves nothing.
        """
        m = meta(body)
        ns, name = str(m["namespace"]), str(m["name"])
        status = cast(Mapping[str, Any], body.get("status") or {})
        try:
            cc = ChromaCollection.from_body(body)
        except SpecError as e:
            await self.events.post(body, "Warning", "PurgeSkipped",
                                   f"the spec is invalid, so the data cannot be located; kept: {e}")
            return
        where = cc.spec.storage.bucket_url
        purged = condition(status, CONDITION_PURGED)
        job_path = path("batch/v1", "Job", ns, purge_job_name(name))
        if purged is not None and purged.get("status") == TRUE:
            await self.kube.delete(job_path)
            await self._drop_orphan_service_account(cc)
            await self.events.post(body, "Normal", "DataPurged",
                                   f"deleted everything under {where}/: {purged.get('message')}")
            return
        sharing = self._sharing(cc)
        if sharing:
            await self.events.post(body, "Warning", "PurgeSkipped",
                                   f"{where}/ overlaps the storage of ChromaCollection {sharing}; "
                                   "the data is kept")
            return
        try:
            if await self._stop_workloads(cc):
                raise kopf.TemporaryError("waiting for writers and compactors to stop", delay=2)
            job = await self.kube.get(job_path)
            if job is None:
                await self._ensure_service_account(cc)
                await self.kube.create(purge_job(cc, self.settings))
                await self.events.post(body, "Normal", "PurgeStarted",
                                       f"deletionPolicy is Delete: Job {purge_job_name(name)} "
                                       f"is deleting everything under {where}/")
                raise kopf.TemporaryError("waiting for the purge Job", delay=2)
            state = JobState.from_body(job)
            if state.failed:
                uid = str(meta(job).get("uid"))
                if uid not in self.failures_seen:
                    self.failures_seen.add(uid)
                    await self.events.post(
                        body, "Warning", "PurgeFailed",
                        f"Job {state.name} failed ({state.reason}): {state.message}; "
                        "retrying with a new Job. To keep the data instead, set "
                        "spec.deletionPolicy to Retain")
                await self.kube.delete(job_path)
                raise kopf.TemporaryError("the purge Job failed", delay=backoff(retry))
        except ApiError as e:
            raise kopf.TemporaryError(f"API call failed: {e}", delay=backoff(retry)) from e
        # Still running, or finished without reporting (then it did not purge): keep waiting.
        raise kopf.TemporaryError(f"waiting for Job {state.name} to report the purge", delay=2)

    def _sharing(self, cc: ChromaCollection) -> str | None:
        """Another live collection whose storage overlaps ``cc``'s (purging would hit it)."""
        mine = cc.spec.storage
        for other in self.cache.all_collections():
            om = meta(other)
            if om.get("uid") == cc.uid or om.get("deletionTimestamp"):
                continue
            st = (other.get("spec") or {}).get("storage") or {}
            if (st.get("bucket") == mine.bucket and st.get("endpoint") == mine.endpoint
                    and prefixes_overlap(str(st.get("prefix") or ""), mine.prefix)):
                return f"{om.get('namespace')}/{om.get('name')}"
        return None

    async def _stop_workloads(self, cc: ChromaCollection) -> bool:
        """Delete writers, readers and compactions first, so nothing writes during the purge.

        Returns whether writer or compactor pods still exist (wait for them to finish:
        a writer flushes acknowledged writes on its way out).
        """
        n = names(cc)
        for p in (path("apps/v1", "Deployment", cc.namespace, n.writer),
                  path("apps/v1", "Deployment", cc.namespace, n.reader),
                  path("batch/v1", "CronJob", cc.namespace, n.compactor)):
            await self.kube.delete(p)
        jobs = await self.kube.request(
            "GET", path("batch/v1", "Job", cc.namespace),
            params={"labelSelector": f"{LABEL_INSTANCE}={cc.name},"
                                     f"{LABEL_COMPONENT}={COMPONENT_COMPACTOR}"})
        for job in jobs.get("items") or []:
            await self.kube.delete(path("batch/v1", "Job", cc.namespace, job["metadata"]["name"]))
        pods = await self.kube.request(
            "GET", path("v1", "Pod", cc.namespace),
            params={"labelSelector": f"{LABEL_INSTANCE}={cc.name},"
                                     f"{LABEL_COMPONENT} in "
                                     f"({COMPONENT_WRITER},{COMPONENT_COMPACTOR})"})
        return bool(pods.get("items"))

    async def _ensure_service_account(self, cc: ChromaCollection) -> None:
        """The purge pod runs as the collection's ServiceAccount (its cloud identity).

        A foreground deletion may already have garbage-collected it; apply it under a
        second field manager without an owner, which leaves an existing one untouched.
        """
        sa = service_account(cc)
        sa["metadata"].pop("ownerReferences", None)
        await self.kube.apply(sa, field_manager=PURGE_FIELD_MANAGER)

    async def _drop_orphan_service_account(self, cc: ChromaCollection) -> None:
        sa_path = path("v1", "ServiceAccount", cc.namespace, names(cc).service_account)
        sa = await self.kube.get(sa_path)
        if sa is not None and not meta(sa).get("ownerReferences"):
            await self.kube.delete(sa_path)
