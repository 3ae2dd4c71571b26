"""``chromasnap operator``: kopf handlers that turn ChromaCollections into workloads.

The handlers are thin: parse the resource (``crd``), build the children
(``specs``, pure), send them with server-side apply (``kubeapi``), and derive
the status from what the cluster reports (``opstatus``, pure).

What triggers what:

- create / update of ``spec`` / resume after a restart: check what the schema
  cannot (cron line, credentials Secret), then apply every child; a spec the
  operator cannot act on gets ``Ready=False`` and nothing is applied.
- every event of a child (watched by label, server-side filtered): a child
  deleted or edited by hand is restored; Deployment, CronJob and Job events
  refresh the collection's status.
- every event of the collection itself (e.g. a compactor reporting its run in
  the status): refresh the conditions.
- the ``chromasnap.dev/compact-now`` annotation: start a compaction Job now.
- deletion: children go with their owner references (garbage collection); with
  ``deletionPolicy: Delete`` a finalizer first stops the workloads and runs a
  purge Job that empties the prefix and reports back.
- a slow periodic resync re-applies everything, in case a watch missed an event.

Status patches and Events go through the operator's own client; kopf's own
event posting is off so that each notable transition produces exactly one Event.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chromasnap import logs
from chromasnap.config import ENV_PREFIX
from chromasnap.operator import specs
from chromasnap.operator import status as opstatus
from chromasnap.operator.crd import ChromaCollection, SpecError
from chromasnap.operator.kubeapi import ApiError, Kube, load_connection, object_path, path
from chromasnap.operator.status import Problem
from chromasnap.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("chromasnap.operator")

MANAGED = {specs.LABEL_MANAGED_BY: specs.MANAGED_BY}
MANAGED_SELECTOR = f"{specs.LABEL_MANAGED_BY}={specs.MANAGED_BY}"
#: kopf's bookkeeping annotations live under this prefix (the status schema would prune
#: kopf's default status fields). Not "chromasnap.dev" itself: kopf hides every annotation
#: under its storage prefix from change detection, and chromasnap.dev/compact-now must be
#: seen. The finalizer is added only for deletionPolicy: Delete.
STORAGE_PREFIX = "kopf.chromasnap.dev"
FINALIZER = "chromasnap.dev/purge"
#: Field manager for objects the purge path creates without an owner (see purge()).
PURGE_FIELD_MANAGER = "chromasnap-operator-purge"

#: Every kind the operator creates, watched (by label, filtered by the API server) so
#: that a child deleted or edited by hand is restored at once.
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
    ("", "v1", "services"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("coordination.k8s.io", "v1", "leases"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("batch", "v1", "cronjobs"),
    ("batch", "v1", "jobs"),
)
#: Kinds whose events change the collection's status.
STATUS_KINDS = frozenset({"Deployment", "CronJob", "Job"})
INDEXES = ("collections", "deployments", "cronjobs", "jobs")

Key = tuple[str, str]  # (namespace, name) of a ChromaCollection


class RuntimeSettings(BaseSettings):
    """How the operator itself runs (``CHROMASNAP_*`` env; the chart leaves the defaults)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    resync_seconds: float = Field(
        default=600.0, ge=0,
        description="re-apply every collection's children this often, in case a watch event "
                    "was missed (0: never)",
    )
    watch_timeout_seconds: int = Field(
        default=300, ge=10,
        description="server-side timeout of each watch request; watches are then re-opened",
    )
    log_format: str = Field(default="json", pattern="^(json|text)$")
    max_concurrent_reconciles: int = Field(
        default=8, ge=1, le=256,
        description="collections applied at the same time; bounds the operator's memory "
                    "when many change at once (e.g. on startup), not the latency of one",
    )


def _backoff(retry: int, cap: float = 60.0) -> float:
    """Retry delay for transient trouble: 2, 4, 8 … seconds, at most ``cap``."""
    return float(min(cap, 2 ** min(retry + 1, 10)))


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy of a collection, without the bulky bookkeeping (managedFields, kopf's
    last-handled configuration), for the in-memory index."""
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "labels",
            "deletionTimestamp", "finalizers")
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith(STORAGE_PREFIX + "/")
                   and k != "kubectl.kubernetes.io/last-applied-configuration"}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {k: copy.deepcopy(meta[k]) for k in keep if k in meta}
        | {"annotations": annotations},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _first(values: Iterable[Any] | None) -> Any:
    for v in values or ():
        return v
    return None


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], body.get("metadata") or {})


class State:
    """The operator's memory: API client, per-collection locks, what it last wrote.

    Everything here can be lost (a restart): resume handlers re-apply, and status is
    recomputed from the cluster.
    """

    def __init__(self, settings: specs.OperatorSettings, runtime: RuntimeSettings) -> None:
        self.settings = settings
        self.runtime = runtime
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._kube: Kube | None = None
        self.indices: dict[str, Any] = {}
        self.locks: dict[Key, asyncio.Lock] = {}
        #: uid -> the operator-owned status fields last patched (compared before patching)
        self.written: dict[str, dict[str, Any]] = {}
        #: uid -> generation last applied or judged invalid (status.observedGeneration)
        self.judged: dict[str, int | None] = {}
        #: uid -> why the current spec is not applied (absent: applied fine)
        self.problems: dict[str, Problem] = {}
        #: uids whose children were applied at least once by this process
        self.applied: set[str] = set()
        self.purge_failures_seen: set[str] = set()
        self.resync_task: asyncio.Task[None] | None = None
        self._reconciles: asyncio.Semaphore | None = None

    @property
    def kube(self) -> Kube:
        """The API client (created at startup, inside the event loop)."""
        if self._kube is None:
            raise RuntimeError("operator not started")
        return self._kube

    async def start(self) -> None:
        """Open the API client and start the periodic resync."""
        self._kube = Kube(load_connection(), specs.FIELD_MANAGER)
        self._reconciles = asyncio.Semaphore(self.runtime.max_concurrent_reconciles)
        if self.runtime.resync_seconds > 0:
            self.resync_task = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        """Stop the resync and close the client."""
        if self.resync_task is not None:
            self.resync_task.cancel()
            await asyncio.gather(self.resync_task, return_exceptions=True)
        if self._kube is not None:
            await self._kube.close()

    def lock(self, key: Key) -> asyncio.Lock:
        """One lock per collection: applies, drift repairs and status patches never interleave."""
        return self.locks.setdefault(key, asyncio.Lock())

    def forget(self, uid: str, key: Key) -> None:
        """Drop what is remembered about a deleted collection."""
        self.written.pop(uid, None)
        self.judged.pop(uid, None)
        self.problems.pop(uid, None)
        self.applied.discard(uid)
        lock = self.locks.get(key)
        if lock is not None and not lock.locked():
            self.locks.pop(key, None)

    # -- reading the indexes ---------------------------------------------------------

    def collection(self, key: Key) -> dict[str, Any] | None:
        """The collection as last seen by the watch (a slim private copy)."""
        idx = self.indices.get("collections")
        return cast(dict[str, Any] | None, _first(idx.get(key)) if idx is not None else None)

    def all_collections(self) -> list[dict[str, Any]]:
        """Every collection the operator watches."""
        idx = self.indices.get("collections")
        return [b for store in (idx.values() if idx is not None else ()) for b in store]

    def observe(self, key: Key) -> opstatus.Observed:
        """What the cluster reports about one collection's workloads."""
        ns, name = key
        deps = self.indices.get("deployments")
        crons = self.indices.get("cronjobs")
        jobs = self.indices.get("jobs")
        return opstatus.Observed(
            writer=_first(deps.get((ns, name, specs.COMPONENT_WRITER))) if deps else None,
            reader=_first(deps.get((ns, name, specs.COMPONENT_READER))) if deps else None,
            cronjob=_first(crons.get(key)) if crons else None,
            jobs=tuple(jobs.get(key, ())) if jobs else (),
        )

    # -- events ----------------------------------------------------------------------

    async def event(self, body: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about a collection; failures are logged, never raised."""
        meta = _meta(body)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.",
                         "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"),
                "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            },
            "type": etype,
            "reason": opstatus.camel_reason(reason, "Unknown"),
            "message": opstatus._clip(message),
            "source": {"component": specs.MANAGED_BY},
            "reportingComponent": specs.MANAGED_BY,
            "reportingInstance": self.instance,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "eventTime": now,
            "action": "Reconcile",
            "count": 1,
        }
        try:
            await self.kube.request("POST", path("v1", "Event", str(meta.get("namespace"))),
                                    body=ev)
        except ApiError as e:
            log.warning("could not post event", extra=logs.fields(reason=reason, error=str(e)))
        log.info("event %s %s", etype, reason, extra=logs.fields(
            collection=f"{meta.get('namespace')}/{meta.get('name')}", message=message))

    # -- reconcile -------------------------------------------------------------------

    async def check_secret(self, cc: ChromaCollection) -> Problem | None:
        """Check that the credentials Secret exists and has the keys (only the key names)."""
        ref = cc.spec.storage.credentials_secret_ref
        if ref is None:
            return None
        try:
            secret = await self.kube.get(path("v1", "Secret", cc.namespace, ref.name))
        except ApiError as e:
            if e.status == 403:
                # The chart's rbac.readSecrets=false: pods will report the problem instead.
                log.debug("not allowed to check the credentials Secret",
                          extra=logs.fields(secret=ref.name, namespace=cc.namespace))
                return None
            raise
        return opstatus.secret_problem(cc, secret)

    def desired_children(self, body: Mapping[str, Any]) -> dict[tuple[str, str], specs.Manifest]:
        """The children of a collection by (kind, name); empty if its spec is invalid.

        Built again on each call rather than cached: the builders take about a
        millisecond, while keeping 13 manifests per collection costs ~50 KB per
        collection (10 MB for 200) for the operator's lifetime.
        """
        try:
            cc = ChromaCollection.from_body(body)
        except SpecError:
            return {}
        if opstatus.check_spec(cc) is not None:
            return {}
        return {(m["kind"], m["metadata"]["name"]): m
                for m in specs.desired_children(cc, self.settings)}

    async def reconcile(self, body: Mapping[str, Any], retry: int) -> None:
        """Check the spec, apply every child, refresh the status.

        Raises ``kopf.TemporaryError`` when retrying later can help (a Secret that may
        yet be created, API trouble); a spec that needs a human returns normally with
        ``Ready=False`` (the next spec change runs this again).
        """
        meta = _meta(body)
        key: Key = (str(meta["namespace"]), str(meta["name"]))
        uid = str(meta.get("uid"))
        assert self._reconciles is not None
        async with self.lock(key), self._reconciles:
            cc: ChromaCollection | None = None
            try:
                cc = ChromaCollection.from_body(body)
                problem = opstatus.check_spec(cc)
            except SpecError as e:
                problem = opstatus.spec_problem(e)
            try:
                if problem is None and cc is not None:
                    problem = await self.check_secret(cc)
                if problem is not None or cc is None:
                    assert problem is not None
                    self.problems[uid] = problem
                    self.judged[uid] = meta.get("generation")
                    await self._refresh_locked(key, body)
                    if problem.reason in (opstatus.REASON_SECRET_NOT_FOUND,
                                          opstatus.REASON_SECRET_KEY_MISSING):
                        # Secrets are not watched (get only): look again later.
                        raise kopf.TemporaryError(problem.message, delay=_backoff(retry, 30))
                    return
                await self._apply_all(cc, body)
                log.info("applied children", extra=logs.fields(
                    collection=f"{key[0]}/{key[1]}", generation=meta.get("generation")))
                self.problems.pop(uid, None)
                self.judged[uid] = meta.get("generation")
                await self._bootstrap(cc, body)
                await self._refresh_locked(key, body)
            except ApiError as e:
                if e.transient or e.status in (403, 404, 409):
                    raise kopf.TemporaryError(f"API call failed: {e}", delay=_backoff(retry)) from e
                raise

    async def _apply_all(self, cc: ChromaCollection, body: Mapping[str, Any]) -> None:
        """Apply the children in two waves: what pods need first, then the workloads.

        Within a wave the applies run concurrently (one round trip instead of many); the
        waves keep a pod from being created before its ConfigMap or ServiceAccount, and
        the RoleBinding from being checked against a Role that does not exist yet (RBAC's
        escalation check resolves the Role when the binding is created).
        """
        children = specs.desired_children(cc, self.settings)
        workloads = {"RoleBinding", "Deployment", "PodDisruptionBudget", "CronJob"}
        for wave in ([c for c in children if c["kind"] not in workloads],
                     [c for c in children if c["kind"] in workloads]):
            results = await asyncio.gather(*(self.kube.apply(c) for c in wave),
                                           return_exceptions=True)
            for child, res in zip(wave, results, strict=True):
                if isinstance(res, ApiError) and res.status in (400, 422):
                    problem = Problem(
                        opstatus.REASON_APPLY_REJECTED,
                        f"the API server rejected {child['kind']} {child['metadata']['name']}: "
                        f"{res.message}",
                    )
                    self.problems[cc.uid] = problem
                    self.judged[cc.uid] = cc.generation
                    key = (cc.namespace, cc.name)
                    await self._refresh_locked(key, body)
                    raise kopf.PermanentError(problem.message)
                if isinstance(res, BaseException):
                    raise res
        self.applied.add(cc.uid)

    async def _bootstrap(self, cc: ChromaCollection, body: Mapping[str, Any]) -> None:
        """Start one compaction right away when no snapshot was ever reported.

        Readers are ready only with a snapshot, and the first scheduled run may be minutes
        away; the first run also picks up data a previous collection left under the prefix.
        """
        status = body.get("status") or {}
        if status.get("snapshot") or status.get("lastCompaction"):
            return
        job = specs.compaction_job(cc, self.settings, opstatus.BOOTSTRAP_RUN_ID)
        try:
            await self.kube.create(job)
        except ApiError as e:
            if e.status == 409:
                return
            raise
        await self.event(body, "Normal", "CompactionStarted",
                         f"no snapshot yet: started Job {job['metadata']['name']} to publish "
                         "the first one")

    # -- status ----------------------------------------------------------------------

    async def refresh(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        """Recompute the status of one collection and patch it if it changed."""
        async with self.lock(key):
            await self._refresh_locked(key, body)

    async def _refresh_locked(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        body = body if body is not None else self.collection(key)
        if body is None:
            return
        meta = _meta(body)
        if meta.get("deletionTimestamp"):
            return  # going away: the purge path owns the conditions now
        uid = str(meta.get("uid"))
        status = cast(Mapping[str, Any], body.get("status") or {})
        written = self.written.get(uid)
        previous = (written or status).get("conditions") or []
        if uid in self.problems:
            problem: Problem | None = self.problems[uid]
        elif uid in self.judged:
            problem = None
        else:
            problem = _problem_in(status, meta.get("generation"))
        obs = self.observe(key)
        created = uid in self.applied or any((obs.writer, obs.reader, obs.cronjob))
        new = opstatus.operator_status(
            key[1], body.get("spec") or {}, status, obs, problem,
            self.judged.get(uid, status.get("observedGeneration")), created, previous,
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
        self.written[uid] = new
        for t in opstatus.transitions(previous, new["conditions"]):
            await self.event(body, t.type, t.reason, t.message)

    # -- drift -----------------------------------------------------------------------

    async def child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A child changed: restore it if it drifted, refresh the owner's status."""
        meta = _meta(body)
        labels = meta.get("labels") or {}
        instance = labels.get(specs.LABEL_INSTANCE)
        ns = meta.get("namespace")
        if not instance or not ns:
            return
        key: Key = (str(ns), str(instance))
        parent = self.collection(key)
        if parent is None:
            return
        kind = str(body.get("kind") or "")
        if kind != "Job":
            await self._repair(key, parent, kind, str(meta.get("name")), event_type, body)
        if kind in STATUS_KINDS and str(_meta(parent).get("uid")) in self.judged:
            await self.refresh(key)

    async def _repair(self, key: Key, parent: Mapping[str, Any], kind: str, name: str,
                      event_type: str | None, live: Mapping[str, Any]) -> None:
        desired = self.desired_children(parent).get((kind, name))
        if desired is None or _meta(parent).get("deletionTimestamp"):
            return
        if event_type != "DELETED" and not opstatus.drift(desired, live):
            return
        async with self.lock(key):
            # The event may be stale (the reconcile that held the lock may have fixed it),
            # and deletions after the collection itself was deleted are the garbage
            # collector's doing: look again at both before touching anything.
            owner = await self.kube.get(path(API_VERSION, KIND, key[0], key[1]))
            if owner is None or _meta(owner).get("deletionTimestamp") or (
                _meta(owner).get("uid") != _meta(parent).get("uid")
            ):
                return
            desired = self.desired_children(slim(owner)).get((kind, name))
            if desired is None:
                return
            fresh = await self.kube.get(object_path(desired))
            if fresh is None:
                action, detail = "ChildRestored", f"re-created {kind} {name}, which was deleted"
            else:
                paths = opstatus.drift(desired, fresh)
                if not paths:
                    return
                action = "ChildReverted"
                detail = (f"reverted changes to {kind} {name} made outside the operator: "
                          + ", ".join(paths[:5]))
            applied = await self.kube.apply(desired)
            before_rv = _meta(fresh or {}).get("resourceVersion")
            if fresh is not None and _meta(applied).get("resourceVersion") == before_rv:
                # Nothing changed: the difference was only in how the server renders a
                # value (e.g. a quantity). Not worth an Event.
                log.debug("apply was a no-op", extra=logs.fields(kind=kind, name=name))
                return
            await self.event(owner, "Normal", action, detail)

    # -- on-demand compaction --------------------------------------------------------

    async def compact_now(self, body: Mapping[str, Any], request: str) -> None:
        """Start a compaction Job for one value of the compact-now annotation."""
        try:
            cc = ChromaCollection.from_body(body)
        except SpecError as e:
            await self.event(body, "Warning", "CompactionNotStarted",
                             f"{opstatus.COMPACT_NOW_ANNOTATION} ignored: the spec is invalid: {e}")
            return
        job = specs.compaction_job(cc, self.settings, opstatus.compaction_run_id(cc.uid, request))
        try:
            await self.kube.create(job)
        except ApiError as e:
            if e.status == 409:
                return  # this request was already handled
            raise
        await self.event(body, "Normal", "CompactionRequested",
                         f"started Job {job['metadata']['name']} "
                         f"({opstatus.COMPACT_NOW_ANNOTATION}={request!r})")

    # -- deletion --------------------------------------------------------------------

    async def purge(self, body: Mapping[str, Any], retry: int) -> None:
        """``deletionPolicy: Delete``: stop the workloads, empty the prefix, then let go.

        Returns when the data is gone (kopf then removes the finalizer); raises
        ``kopf.TemporaryError`` while waiting. The purge Job reports success itself
        (a ``Purged`` condition): a Job's completion alone proves nothing.
        """
        meta = _meta(body)
        ns, name = str(meta["namespace"]), str(meta["name"])
        status = cast(Mapping[str, Any], body.get("status") or {})
        try:
            cc = ChromaCollection.from_body(body)
        except SpecError as e:
            await self.event(body, "Warning", "PurgeSkipped",
                             f"the spec is invalid, so the data cannot be located; kept: {e}")
            return
        where = cc.spec.storage.bucket_url
        purged = opstatus.condition(status, opstatus.CONDITION_PURGED)
        job_path = path("batch/v1", "Job", ns, opstatus.purge_job_name(name))
        if purged is not None and purged.get("status") == opstatus.TRUE:
            await self.kube.delete(job_path)
            await self._drop_orphan_service_account(cc)
            await self.event(body, "Normal", "DataPurged",
                             f"deleted everything under {where}/: {purged.get('message')}")
            return
        sharing = self._sharing(cc)
        if sharing:
            await self.event(body, "Warning", "PurgeSkipped",
                             f"{where}/ overlaps the storage of ChromaCollection {sharing}; "
                             "the data is kept")
            return
        try:
            if await self._stop_workloads(cc):
                raise kopf.TemporaryError("waiting for writers and compactors to stop", delay=2)
            job = await self.kube.get(job_path)
            if job is None:
                await self._ensure_service_account(cc)
                await self.kube.create(opstatus.purge_job(cc, self.settings))
                await self.event(body, "Normal", "PurgeStarted",
                                 f"deletionPolicy is Delete: Job {opstatus.purge_job_name(name)} "
                                 f"is deleting everything under {where}/")
                raise kopf.TemporaryError("waiting for the purge Job", delay=2)
            state = opstatus.JobState.from_body(job)
            if state.failed:
                uid = str(_meta(job).get("uid"))
                if uid not in self.purge_failures_seen:
                    self.purge_failures_seen.add(uid)
                    await self.event(body, "Warning", "PurgeFailed",
                                     f"Job {state.name} failed ({state.reason}): {state.message}; "
                                     "retrying with a new Job. To keep the data instead, set "
                                     "spec.deletionPolicy to Retain")
                await self.kube.delete(job_path)
                raise kopf.TemporaryError("the purge Job failed", delay=_backoff(retry))
        except ApiError as e:
            raise kopf.TemporaryError(f"API call failed: {e}", delay=_backoff(retry)) from e
        # Still running, or finished without reporting (then it did not purge): keep waiting.
        raise kopf.TemporaryError(f"waiting for Job {state.name} to report the purge", delay=2)

    def _sharing(self, cc: ChromaCollection) -> str | None:
        """Another live collection whose storage overlaps ``cc``'s (purging would hit it)."""
        mine = cc.spec.storage
        for other in self.all_collections():
            om = _meta(other)
            if om.get("uid") == cc.uid or om.get("deletionTimestamp"):
                continue
            st = (other.get("spec") or {}).get("storage") or {}
            if (st.get("bucket") == mine.bucket and st.get("endpoint") == mine.endpoint
                    and opstatus.prefixes_overlap(str(st.get("prefix") or ""), mine.prefix)):
                return f"{om.get('namespace')}/{om.get('name')}"
        return None

    async def _stop_workloads(self, cc: ChromaCollection) -> bool:
        """Delete writers, readers and compactions first, so nothing writes during the purge.

        Returns whether writer or compactor pods still exist (wait for them to finish:
        a writer flushes acknowledged writes on its way out).
        """
        n = specs.names(cc)
        for p in (path("apps/v1", "Deployment", cc.namespace, n.writer),
                  path("apps/v1", "Deployment", cc.namespace, n.reader),
                  path("batch/v1", "CronJob", cc.namespace, n.compactor)):
            await self.kube.delete(p)
        jobs = await self.kube.request(
            "GET", path("batch/v1", "Job", cc.namespace),
            params={"labelSelector": f"{specs.LABEL_INSTANCE}={cc.name},"
                                     f"{specs.LABEL_COMPONENT}={specs.COMPONENT_COMPACTOR}"})
        for job in jobs.get("items") or []:
            await self.kube.delete(path("batch/v1", "Job", cc.namespace, job["metadata"]["name"]))
        pods = await self.kube.request(
            "GET", path("v1", "Pod", cc.namespace),
            params={"labelSelector": f"{specs.LABEL_INSTANCE}={cc.name},"
                                     f"{specs.LABEL_COMPONENT} in "
                                     f"({specs.COMPONENT_WRITER},{specs.COMPONENT_COMPACTOR})"})
        return bool(pods.get("items"))

    async def _ensure_service_account(self, cc: ChromaCollection) -> None:
        """The purge pod runs as the collection's ServiceAccount (its cloud identity).

        A foreground deletion may already have garbage-collected it; apply it under a
        second field manager without an owner, which leaves an existing one untouched.
        """
        sa = specs.service_account(cc)
        sa["metadata"].pop("ownerReferences", None)
        await self.kube.apply(sa, field_manager=PURGE_FIELD_MANAGER)

    async def _drop_orphan_service_account(self, cc: ChromaCollection) -> None:
        sa_path = path("v1", "ServiceAccount", cc.namespace, specs.names(cc).service_account)
        sa = await self.kube.get(sa_path)
        if sa is not None and not _meta(sa).get("ownerReferences"):
            await self.kube.delete(sa_path)

    # -- resync ----------------------------------------------------------------------

    async def _resync_loop(self) -> None:
        """Every ``resync_seconds``, re-apply each collection, spread over the interval."""
        interval = self.runtime.resync_seconds
        while True:
            await asyncio.sleep(interval)
            bodies = self.all_collections()
            gap = min(1.0, interval / max(1, len(bodies)) / 2)
            for body in bodies:
                meta = _meta(body)
                if meta.get("deletionTimestamp"):
                    continue
                uid = str(meta.get("uid"))
                # Compare against the object, not our memory: heals hand-edited status too.
                self.written.pop(uid, None)
                try:
                    await self.reconcile(body, retry=0)
                except (kopf.TemporaryError, kopf.PermanentError, ApiError) as e:
                    log.info("resync deferred", extra=logs.fields(
                        collection=f"{meta.get('namespace')}/{meta.get('name')}", error=str(e)))
                except Exception:
                    log.exception("resync failed")
                await asyncio.sleep(gap)


def _problem_in(status: Mapping[str, Any], generation: Any) -> Problem | None:
    """A spec problem recorded in the status for this generation (after a restart, until
    the resume handler has judged the spec again)."""
    ready = opstatus.condition(status, "Ready")
    if (ready is not None and ready.get("status") == opstatus.FALSE
            and ready.get("reason") in opstatus.SPEC_PROBLEM_REASONS
            and ready.get("observedGeneration") == generation):
        return Problem(str(ready["reason"]), str(ready.get("message") or ""))
    return None


class _WaitingIsNotAnError(logging.Filter):
    """kopf logs every ``TemporaryError`` at ERROR; the operator raises them to wait (for a
    Secret to appear, for a purge Job to report), which is worth a warning at most."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "failed temporarily" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _state(memo: Any) -> State:
    return cast(State, memo["chromasnap"])


# --- kopf wiring ------------------------------------------------------------------------


def configure(settings: kopf.OperatorSettings, runtime: RuntimeSettings) -> None:
    """Production settings for kopf."""
    # No CRD or namespace discovery (and no RBAC for it): the resources are known and the
    # namespaces come from the command line.
    settings.scanning.disabled = True
    # Events are posted by the operator itself, one per notable transition.
    settings.posting.enabled = False
    settings.persistence.finalizer = FINALIZER
    # Annotations, not status: the CRD's structural status schema prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=STORAGE_PREFIX, v1=False)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration", v1=False)
    # Re-open watches regularly (a stuck stream cannot hide events for long); the client
    # gives the server a margin before it gives up on a watch request itself.
    settings.watching.server_timeout = runtime.watch_timeout_seconds
    settings.watching.client_timeout = runtime.watch_timeout_seconds + 60
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 15
    # API errors: retry quickly at first, then back off to half a minute.
    settings.networking.error_backoffs = (1, 2, 4, 8, 15, 30)
    settings.execution.max_workers = 4
    # Only our own children are watched: the API server filters by label, so the
    # operator never receives (or holds) the cluster's other ConfigMaps, Services, Jobs…
    for group, version, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group, version, plural] = MANAGED_SELECTOR


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf authenticates exactly as the operator's own client does."""
    conn = load_connection()
    token = conn.token()
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_path,
        insecure=conn.insecure,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=conn.cert_path,
        private_key_path=conn.key_path,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    """Configure kopf, open the API client, keep references to the indexes."""
    st = _state(memo)
    configure(settings, st.runtime)
    st.indices = {name: kwargs[name] for name in INDEXES if name in kwargs}
    await st.start()


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    """Close the client on shutdown."""
    await _state(memo).stop()


@kopf.index(GROUP, VERSION, PLURAL, id="collections")
async def collections(body: kopf.Body, namespace: str | None, name: str,
                      **_: Any) -> dict[Key, dict[str, Any]]:
    """(namespace, name) -> the collection (slim copy), for child events and resync."""
    return {(str(namespace), name): slim(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED, id="deployments")
async def deployments(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                      **_: Any) -> dict[tuple[str, str, str], opstatus.DeploymentState] | None:
    """(namespace, collection, component) -> Deployment status."""
    inst, comp = labels.get(specs.LABEL_INSTANCE), labels.get(specs.LABEL_COMPONENT)
    if not inst or not comp:
        return None
    return {(str(namespace), inst, comp): opstatus.DeploymentState.from_body(body)}


@kopf.index("batch", "v1", "cronjobs", labels=MANAGED, id="cronjobs")
async def cronjobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                   **_: Any) -> dict[Key, opstatus.CronJobState] | None:
    """(namespace, collection) -> the compactor CronJob."""
    inst = labels.get(specs.LABEL_INSTANCE)
    return {(str(namespace), inst): opstatus.CronJobState.from_body(body)} if inst else None


@kopf.index("batch", "v1", "jobs", labels=MANAGED, id="jobs")
async def jobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
               **_: Any) -> dict[Key, opstatus.JobState] | None:
    """(namespace, collection) -> its compaction and purge Jobs."""
    inst = labels.get(specs.LABEL_INSTANCE)
    return {(str(namespace), inst): opstatus.JobState.from_body(body)} if inst else None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """Apply the collection's children (create, spec change, operator restart)."""
    await _state(memo).reconcile(body, retry)


@kopf.on.field(GROUP, VERSION, PLURAL, id="compact-now",
               field=("metadata", "annotations", opstatus.COMPACT_NOW_ANNOTATION))
async def compact_now(body: kopf.Body, new: Any, memo: Any, retry: int, **_: Any) -> None:
    """A new value of ``chromasnap.dev/compact-now`` starts a compaction Job."""
    if not new or _meta(body).get("deletionTimestamp"):
        return
    try:
        await _state(memo).compact_now(body, str(new))
    except ApiError as e:
        raise kopf.TemporaryError(f"API call failed: {e}", delay=_backoff(retry)) from e


def _purge_requested(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deletionPolicy") == "Delete")


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_purge_requested, id="purge")
async def purge(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """deletionPolicy: Delete — empty the prefix before the collection goes."""
    await _state(memo).purge(body, retry)


@kopf.on.event(GROUP, VERSION, PLURAL, id="collection-status")
async def collection_event(event: kopf.RawEvent, body: kopf.Body, memo: Any,
                           **_: Any) -> None:
    """Any change of the collection (e.g. a compactor's report) may change its conditions."""
    st = _state(memo)
    meta = _meta(body)
    key: Key = (str(meta.get("namespace")), str(meta.get("name")))
    uid = str(meta.get("uid"))
    if event.get("type") == "DELETED":
        st.forget(uid, key)
        return
    if uid in st.judged:  # otherwise the reconcile handler refreshes when it is done
        await st.refresh(key)


async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A child changed or disappeared."""
    try:
        await _state(memo).child_event(event.get("type"), body)
    except ApiError as e:
        # Not retried by kopf (event handlers are fire-and-forget); the next event or
        # the resync repairs it.
        log.warning("handling a child's event failed", extra=logs.fields(error=str(e)))


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(group=_group, version=_version, plural=_plural, labels=MANAGED,
                  id=f"child-{_plural}")(child_event)


def run_operator(
    namespaces: Sequence[str] = (),
    liveness: str | None = None,
    *,
    all_namespaces: bool = False,
    standalone: bool = True,
) -> int:
    """Run until SIGTERM/SIGINT: every namespace, or only ``namespaces``."""
    settings = specs.OperatorSettings()
    runtime = RuntimeSettings()
    logs.setup(settings.log_level, runtime.log_format)
    # kopf logs every handler call at INFO ("Handler 'child-deployments' succeeded"): one
    # line per watch event of every child. Its warnings and errors still show; the
    # operator logs what it did itself.
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    kopf_objects.addFilter(_WaitingIsNotAnError())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes
    clusterwide = all_namespaces or not namespaces
    log.info("operator starting", extra=logs.fields(
        namespaces="*" if clusterwide else ",".join(namespaces), standalone=standalone,
        default_image=settings.default_image, liveness=liveness))
    kopf.run(
        standalone=standalone,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else list(namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(chromasnap=State(settings, runtime)),
    )
    return 0
