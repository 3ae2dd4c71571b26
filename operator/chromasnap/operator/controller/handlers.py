"""``chromasnap operator``: kopf handlers that turn ChromaCollections into workloads.

The handlers are thin: each hands the event to one part of the running
operator (:mod:`.wiring`), which parses the resource (``crd``), builds the
children (``specs``, pure), sends them with server-side apply (``kubeapi``), and
derives the status from what the cluster reports (``conditions``, pure).

What triggers what:

- create / update of ``spec`` / resume after a restart: check what the schema
  cannot (cron line, credentials Secret), then apply every child; a spec the
  operator cannot act on gets ``Ready=False`` and nothing is applied.
- every event of a child (watched by label, server-side filtered): a child
  deleted or edited by hand is restored, a NetworkPolicy the spec no longer asks
  for is deleted; Deployment, CronJob and Job events refresh the collection's status.
- every event of the collection itself (e.g. a compactor reporting its run in
  the status): refresh the conditions.
- the ``chromasnap.dev/compact-now`` annotation: start a compaction Job now.
- deletion: children go with their owner references (garbage collection); with
  ``deletionPolicy: Delete`` a finalizer first stops the workloads and runs a
  purge Job that empties the prefix and reports back.
- a slow periodic resync re-applies everything (collections and databases), in case a
  watch missed an event.
- ChromaDatabases (pools of collections) have their own controller
  (:mod:`.databases`): create / update / resume (and the periodic resync) apply the
  pool's children, and the pool's children's events restore them and refresh its status;
  with ``deletionPolicy: Delete`` the same finalizer and purge (:mod:`.purge`) first stop
  the pool's pods and empty its root.

Status patches and Events go through the operator's own client; kopf's own
event posting is off so that each notable transition produces exactly one Event.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Sequence
from typing import Any, cast

import kopf

from chromasnap import logs
from chromasnap.operator.controller.cache import INDEXES, STORAGE_PREFIX, Key, meta, slim
from chromasnap.operator.controller.retry import backoff
from chromasnap.operator.controller.wiring import Operator, Parts
from chromasnap.operator.database import declared_database
from chromasnap.operator.kubeapi import ApiError, load_connection
from chromasnap.operator.observed import (
    CronJobState,
    DeploymentState,
    JobState,
    OwnedChild,
    PodState,
)
from chromasnap.operator.settings import OperatorSettings, RuntimeSettings
from chromasnap.operator.specs.database import COMPONENT_POOL
from chromasnap.operator.specs.naming import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from chromasnap.resource import (
    COMPACT_NOW_ANNOTATION,
    DATABASE_KIND,
    DATABASE_PLURAL,
    GROUP,
    PLURAL,
    VERSION,
)

log = logging.getLogger("chromasnap.operator")

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
#: Added only for deletionPolicy: Delete (see purge() and purge_database()).
FINALIZER = "chromasnap.dev/purge"

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
    ("networking.k8s.io", "v1", "networkpolicies"),
)
#: Watched read-only (never repaired): their pods say why a workload or a compaction is stuck.
POD_RESOURCE = ("", "v1", "pods")


class _WaitingIsNotAnError(logging.Filter):
    """kopf logs every ``TemporaryError`` at ERROR; the operator raises them to wait (for a
    Secret to appear, for a purge Job to report), which is worth a warning at most."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "failed temporarily" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _operator(memo: Any) -> Operator:
    return cast(Operator, memo["chromasnap"])


def _parts(memo: Any) -> Parts:
    return _operator(memo).parts


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
    for group, version, plural in (*CHILD_RESOURCES, POD_RESOURCE):
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
    op = _operator(memo)
    configure(settings, op.runtime)
    await op.start({name: kwargs[name] for name in INDEXES if name in kwargs})


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    """Close the client on shutdown."""
    await _operator(memo).stop()


@kopf.index(GROUP, VERSION, PLURAL, id="collections")
async def collections(body: kopf.Body, namespace: str | None, name: str,
                      **_: Any) -> dict[Key, dict[str, Any]]:
    """(namespace, name) -> the collection (slim copy), for child events and resync."""
    return {(str(namespace), name): slim(body)}


@kopf.index(GROUP, VERSION, DATABASE_PLURAL, id="databases")
async def databases(body: kopf.Body, namespace: str | None, name: str,
                    **_: Any) -> dict[Key, dict[str, Any]]:
    """(namespace, name) -> the ChromaDatabase (slim copy), for child events and resync."""
    return {(str(namespace), name): slim(body, DATABASE_KIND)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED, id="deployments")
async def deployments(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                      **_: Any) -> dict[tuple[str, str, str], DeploymentState] | None:
    """(namespace, collection, component) -> Deployment status."""
    inst, comp = labels.get(LABEL_INSTANCE), labels.get(LABEL_COMPONENT)
    if not inst or not comp:
        return None
    return {(str(namespace), inst, comp): DeploymentState.from_body(body)}


@kopf.index("batch", "v1", "cronjobs", labels=MANAGED, id="cronjobs")
async def cronjobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                   **_: Any) -> dict[Key, CronJobState] | None:
    """(namespace, collection) -> the compactor CronJob."""
    inst = labels.get(LABEL_INSTANCE)
    return {(str(namespace), inst): CronJobState.from_body(body)} if inst else None


@kopf.index("batch", "v1", "jobs", labels=MANAGED, id="jobs")
async def jobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
               **_: Any) -> dict[Key, JobState] | None:
    """(namespace, collection) -> its compaction and purge Jobs."""
    inst = labels.get(LABEL_INSTANCE)
    return {(str(namespace), inst): JobState.from_body(body)} if inst else None


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED, id="networkpolicies")
async def networkpolicies(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                          **_: Any) -> dict[Key, OwnedChild] | None:
    """(namespace, collection) -> its NetworkPolicies (to delete them once disabled)."""
    inst = labels.get(LABEL_INSTANCE)
    return {(str(namespace), inst): OwnedChild.from_body(body)} if inst else None


@kopf.index("", "v1", "pods", labels=MANAGED, id="pods")
async def pods(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
               **_: Any) -> dict[Key, PodState] | None:
    """(namespace, collection) -> its pods: component, and why one is stuck."""
    inst = labels.get(LABEL_INSTANCE)
    return {(str(namespace), inst): PodState.from_body(body)} if inst else None


@kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod-status")
async def pod_event(body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: Any,
                    **_: Any) -> None:
    """A pod changed (scheduled, stuck, gone): the owner's conditions may change."""
    inst = labels.get(LABEL_INSTANCE)
    if not inst or not namespace:
        return
    try:
        await _parts(memo).repair.pod_event((str(namespace), inst))
    except ApiError as e:
        log.warning("refreshing status on a pod's event failed",
                    extra=logs.fields(error=str(e)))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """Apply the collection's children (create, spec change, operator restart); one
    declared in a pool (``spec.database``) goes to its pool instead."""
    await _parts(memo).reconcile_collection(body, retry)


@kopf.on.field(GROUP, VERSION, PLURAL, id="compact-now",
               field=("metadata", "annotations", COMPACT_NOW_ANNOTATION))
async def compact_now(body: kopf.Body, new: Any, memo: Any, retry: int, **_: Any) -> None:
    """A new value of ``chromasnap.dev/compact-now`` starts a compaction Job."""
    if not new or meta(body).get("deletionTimestamp"):
        return
    if declared_database(body):
        log.info("compact-now ignored: a collection in a pool is compacted by the pool's "
                 "passes", extra=logs.fields(collection=meta(body).get("name")))
        return
    try:
        await _parts(memo).compactions.compact_now(body, str(new))
    except ApiError as e:
        raise kopf.TemporaryError(f"API call failed: {e}", delay=backoff(retry)) from e


def _purge_requested(spec: kopf.Spec, **_: Any) -> bool:
    # A collection in a pool is deleted by the pool's pods (POOL_DELETE_FINALIZER); a
    # ChromaDatabase has no spec.database.
    return bool(spec.get("deletionPolicy") == "Delete" and not spec.get("database"))


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_purge_requested, id="purge")
async def purge(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """deletionPolicy: Delete — empty the prefix before the collection goes."""
    await _parts(memo).purger.purge(body, retry)


@kopf.on.event(GROUP, VERSION, PLURAL, id="collection-status")
async def collection_event(event: kopf.RawEvent, body: kopf.Body, memo: Any,
                           **_: Any) -> None:
    """Any change of the collection (e.g. a compactor's report) may change its conditions."""
    parts = _parts(memo)
    counters = _operator(memo).run_counters
    m = meta(body)
    key: Key = (str(m.get("namespace")), str(m.get("name")))
    uid = str(m.get("uid"))
    if event.get("type") == "DELETED":
        parts.memory.forget(uid, key)
        counters.forget(uid)
        if declared_database(body):
            await parts.databases.member_gone(body)
        return
    if declared_database(body) and m.get("deletionTimestamp"):
        # its pool may be gone, with no pod left to let go of it
        await parts.databases.release_orphan(body)
    counters.observe(body)  # a new status.lastCompaction is one more run for /metrics
    if uid in parts.memory.judged:  # otherwise the reconcile handler refreshes when it is done
        await parts.status.refresh(key)


@kopf.on.resume(GROUP, VERSION, DATABASE_PLURAL)
@kopf.on.create(GROUP, VERSION, DATABASE_PLURAL)
@kopf.on.update(GROUP, VERSION, DATABASE_PLURAL, field="spec")
async def reconcile_database(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """Apply a ChromaDatabase's children (create, spec change, operator restart)."""
    await _parts(memo).databases.reconcile(body, retry)


@kopf.on.delete(GROUP, VERSION, DATABASE_PLURAL, when=_purge_requested, id="purge-database")
async def purge_database(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """deletionPolicy: Delete — stop the pool's pods and empty its root before the
    ChromaDatabase goes."""
    await _parts(memo).purger.purge(body, retry)


@kopf.on.event(GROUP, VERSION, DATABASE_PLURAL, id="database-deleted")
async def database_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A deleted database's memory goes (its children go with their owner references)."""
    if event.get("type") == "DELETED":
        m = meta(body)
        _parts(memo).databases.forget(str(m.get("uid")),
                                      (str(m.get("namespace")), str(m.get("name"))))


async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A child changed or disappeared: a pool's goes to the databases' controller."""
    try:
        if (meta(body).get("labels") or {}).get(LABEL_COMPONENT) == COMPONENT_POOL:
            await _parts(memo).databases.child_event(event.get("type"), body)
            return
        await _parts(memo).repair.child_event(event.get("type"), body)
    except ApiError as e:
        # Not retried by kopf (event handlers are fire-and-forget); the next event or
        # the resync repairs it.
        log.warning("handling a child's event failed", extra=logs.fields(error=str(e)))


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(group=_group, version=_version, plural=_plural, labels=MANAGED,
                  id=f"child-{_plural}")(child_event)


def ensure_user_name() -> None:
    """Give kopf a user name: its peering identity calls ``getpass.getuser()``, which
    raises KeyError for a uid with no passwd entry and no USER/LOGNAME (the image's uid
    65532 under any other base or ``runAsUser``)."""
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["USER"] = f"uid-{os.getuid()}"


def run_operator(
    namespaces: Sequence[str] = (),
    liveness: str | None = None,
    *,
    all_namespaces: bool = False,
    standalone: bool = True,
) -> int:
    """Run until SIGTERM/SIGINT: every namespace, or only ``namespaces``."""
    settings = OperatorSettings()
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
    ensure_user_name()
    log.info("operator starting", extra=logs.fields(
        namespaces="*" if clusterwide else ",".join(namespaces), standalone=standalone,
        default_image=settings.default_image, liveness=liveness))
    kopf.run(
        standalone=standalone,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else list(namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(chromasnap=Operator(settings, runtime)),
    )
    return 0
