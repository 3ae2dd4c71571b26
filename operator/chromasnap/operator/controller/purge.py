"""``deletionPolicy: Delete``: stop the workloads, empty the prefix, then let the resource go.

Runs under a finalizer, for a ChromaCollection (its prefix) and for a
ChromaDatabase (its pool's root: every collection of the pool) alike. The data
is deleted by a Job (it needs the resource's storage identity, which the operator
does not have; the operator never reads the bucket), and only the Job's own
report in the status (a ``Purged`` condition) counts as done: a Job's
completion alone proves nothing about what the process did.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from chromasnap.operator.checks import prefixes_overlap
from chromasnap.operator.conditions import CONDITION_PURGED, TRUE, condition
from chromasnap.operator.controller.cache import ClusterCache, meta
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.retry import backoff
from chromasnap.operator.crd import ChromaCollection, SpecError, StorageSpec
from chromasnap.operator.database import ChromaDatabase
from chromasnap.operator.kubeapi import ApiError, Kube, path
from chromasnap.operator.observed import JobState
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import database as pool_specs
from chromasnap.operator.specs.access import role as access_role
from chromasnap.operator.specs.access import role_binding as access_role_binding
from chromasnap.operator.specs.access import service_account
from chromasnap.operator.specs.jobs import purge_job
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    COMPONENT_WRITER,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    Manifest,
    names,
)
from chromasnap.resource import DATABASE_KIND

#: Field manager for objects the purge path creates without an owner (see purge()).
PURGE_FIELD_MANAGER = "chromasnap-operator-purge"


@dataclass(frozen=True)
class PurgeTarget:
    """What purging one resource's data takes; the rest of the purge is the same for
    every kind."""

    uid: str
    namespace: str
    storage: StorageSpec
    #: The Job that empties the prefix and reports back (``specs``' purge builders).
    job: Manifest
    #: The identity the Job runs as (its cloud identity too) and the rights it reports
    #: with: ServiceAccount, Role, RoleBinding; re-applied if a foreground deletion
    #: garbage-collected them.
    identity: tuple[Manifest, ...]
    #: Workloads deleted first (API paths), so nothing writes during the purge.
    workloads: tuple[str, ...]
    #: Label selector of Jobs deleted with them (a collection's compactions), if any.
    jobs: str | None
    #: Label selector of the pods that must be gone before the purge starts (they
    #: store acknowledged writes on their way out).
    writers: str
    #: What those pods are, for the wait's message.
    writers_are: str

    @classmethod
    def of_collection(cls, cc: ChromaCollection, settings: OperatorSettings) -> PurgeTarget:
        """A ChromaCollection's: its writers, readers and compactions stop first."""
        n = names(cc)
        instance = f"{LABEL_INSTANCE}={cc.name}"
        return cls(
            uid=cc.uid, namespace=cc.namespace, storage=cc.spec.storage,
            job=purge_job(cc, settings),
            identity=(service_account(cc), access_role(cc), access_role_binding(cc)),
            workloads=(path("apps/v1", "Deployment", cc.namespace, n.writer),
                       path("apps/v1", "Deployment", cc.namespace, n.reader),
                       path("batch/v1", "CronJob", cc.namespace, n.compactor)),
            jobs=f"{instance},{LABEL_COMPONENT}={COMPONENT_COMPACTOR}",
            writers=f"{instance},{LABEL_COMPONENT} in ({COMPONENT_WRITER},{COMPONENT_COMPACTOR})",
            writers_are="writers and compactors")

    @classmethod
    def of_database(cls, db: ChromaDatabase, settings: OperatorSettings) -> PurgeTarget:
        """A ChromaDatabase's: its pool's pods (which write, read and compact) stop first."""
        return cls(
            uid=db.uid, namespace=db.namespace, storage=db.spec.storage,
            job=pool_specs.purge_job(db, settings),
            identity=(pool_specs.service_account(db), pool_specs.role(db),
                      pool_specs.role_binding(db)),
            workloads=(path("apps/v1", "Deployment", db.namespace, pool_specs.pool_name(db)),),
            jobs=None,
            writers=f"{LABEL_INSTANCE}={db.name},{LABEL_COMPONENT}={pool_specs.COMPONENT_POOL}",
            writers_are="the pool's pods")

    @property
    def job_name(self) -> str:
        """The purge Job's name."""
        return str(self.job["metadata"]["name"])


class Purger:
    """Deletes a collection's or a database's data before its finalizer goes."""

    def __init__(self, kube: Kube, settings: OperatorSettings, cache: ClusterCache,
                 events: EventRecorder) -> None:
        self.kube = kube
        self.settings = settings
        self.cache = cache
        self.events = events
        #: uids of failed purge Jobs already reported (one Warning per failed Job)
        self.failures_seen: set[str] = set()

    async def purge(self, body: Mapping[str, Any], retry: int) -> None:
        """The purge of a ChromaCollection (its prefix) or a ChromaDatabase (its pool's
        root: every collection of the pool), by the body's kind (see :meth:`_purge`)."""
        try:
            target = (PurgeTarget.of_database(ChromaDatabase.from_body(body), self.settings)
                      if body.get("kind") == DATABASE_KIND else
                      PurgeTarget.of_collection(ChromaCollection.from_body(body),
                                                self.settings))
        except SpecError as e:
            await self.events.post(body, "Warning", "PurgeSkipped", "the spec is invalid, so "
                                   f"the data cannot be located; kept: {e}")
            return
        await self._purge(body, target, retry)

    async def _purge(self, body: Mapping[str, Any], target: PurgeTarget, retry: int) -> None:
        """Stop the workloads, empty the prefix, then let go.

        Returns when the data is gone (kopf then removes the finalizer); raises
        ``kopf.TemporaryError`` while waiting. The purge Job reports success itself
        (a ``Purged`` condition): a Job's completion alone proves nothing.
        """
        status = cast(Mapping[str, Any], body.get("status") or {})
        where = target.storage.bucket_url
        purged = condition(status, CONDITION_PURGED)
        job_path = path("batch/v1", "Job", target.namespace, target.job_name)
        if purged is not None and purged.get("status") == TRUE:
            await self.kube.delete(job_path)
            await self._drop_orphan_identity(target)
            await self.events.post(body, "Normal", "DataPurged",
                                   f"deleted everything under {where}/: {purged.get('message')}")
            return
        sharing = self._sharing(target)
        if sharing:
            await self.events.post(body, "Warning", "PurgeSkipped",
                                   f"{where}/ overlaps the storage of {sharing}; "
                                   "the data is kept")
            return
        try:
            if await self._stop_workloads(target):
                raise kopf.TemporaryError(f"waiting for {target.writers_are} to stop", delay=2)
            job = await self.kube.get(job_path)
            if job is None:
                await self._ensure_identity(target)
                await self.kube.create(target.job)
                await self.events.post(body, "Normal", "PurgeStarted",
                                       f"deletionPolicy is Delete: Job {target.job_name} "
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

    def _sharing(self, target: PurgeTarget) -> str | None:
        """Another live collection or database whose storage overlaps ``target``'s
        (purging would hit it), as ``Kind namespace/name``."""
        mine = target.storage
        for other in [*self.cache.all_collections(), *self.cache.all_databases()]:
            om = meta(other)
            if om.get("uid") == target.uid or om.get("deletionTimestamp"):
                continue
            # A collection declared in a pool has no storage of its own: never a match.
            st = (other.get("spec") or {}).get("storage") or {}
            if (st.get("bucket") == mine.bucket and st.get("endpoint") == mine.endpoint
                    and prefixes_overlap(str(st.get("prefix") or ""), mine.prefix)):
                return f"{other.get('kind')} {om.get('namespace')}/{om.get('name')}"
        return None

    async def _stop_workloads(self, target: PurgeTarget) -> bool:
        """Delete the workloads first, so nothing writes during the purge.

        Returns whether pods that write still exist (wait for them to finish: they
        store acknowledged writes on their way out).
        """
        for p in target.workloads:
            await self.kube.delete(p)
        if target.jobs is not None:
            jobs = await self.kube.request("GET", path("batch/v1", "Job", target.namespace),
                                           params={"labelSelector": target.jobs})
            for job in jobs.get("items") or []:
                await self.kube.delete(path("batch/v1", "Job", target.namespace,
                                            job["metadata"]["name"]))
        pods = await self.kube.request("GET", path("v1", "Pod", target.namespace),
                                       params={"labelSelector": target.writers})
        return bool(pods.get("items"))

    async def _ensure_identity(self, target: PurgeTarget) -> None:
        """The purge pod runs as the resource's ServiceAccount (its cloud identity) and
        reports with its Role.

        A foreground deletion may already have garbage-collected them; apply them under
        a second field manager without an owner, which leaves existing ones untouched.
        """
        for manifest in target.identity:
            orphan = copy.deepcopy(manifest)
            orphan["metadata"].pop("ownerReferences", None)
            await self.kube.apply(orphan, field_manager=PURGE_FIELD_MANAGER)

    async def _drop_orphan_identity(self, target: PurgeTarget) -> None:
        for manifest in target.identity:
            obj_path = path(manifest["apiVersion"], manifest["kind"], target.namespace,
                            manifest["metadata"]["name"])
            obj = await self.kube.get(obj_path)
            if obj is not None and not meta(obj).get("ownerReferences"):
                await self.kube.delete(obj_path)
