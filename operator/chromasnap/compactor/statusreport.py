"""Compactor and purge runs report their results into their ChromaCollection's status.

The run patches ``status`` through the API with its own ServiceAccount (the
collection's Role grants ``get`` and ``patch`` on exactly this collection's
``/status``): in a pod by the mounted token, elsewhere through ``KUBECONFIG``.

A compaction writes the fields the compactor owns — ``lastCompaction``,
``snapshot`` and ``pendingDeltas`` — with a JSON merge patch that leaves the
operator's fields (conditions, readers, writers) alone; the operator derives
its conditions from them. A purge adds a ``Purged`` condition, the signal the
operator's finalizer waits for.

Reporting is best effort for compactions (the result is also in the pod's
termination message): failures are logged and retried briefly, never raised.
A purge must be reported: :func:`report_purged` raises if it cannot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from chromasnap.compactor.result import CompactionResult
from chromasnap.config import default_identity
from chromasnap.logs import fields
from chromasnap.resource import COMPACTION_RESULTS, GROUP, PLURAL, VERSION

log = logging.getLogger("chromasnap.statusreport")

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
CONDITION_PURGED = "Purged"
#: Messages are for people and ``kubectl get``; the full result is in the pod's
#: termination message.
MAX_MESSAGE = 2048
_RESULTS = {r.lower(): r for r in COMPACTION_RESULTS}
_RETRYABLE = {0, 429, 500, 502, 503, 504}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def parse_resource(resource: str) -> tuple[str, str]:
    """``"<namespace>/<name>"`` -> (namespace, name); ``ValueError`` otherwise."""
    ns, sep, name = resource.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ValueError(f"status resource {resource!r} must be <namespace>/<name>")
    return ns, name


def compaction_patch(
    res: CompactionResult,
    current: Mapping[str, Any] | None = None,
    *,
    identity: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The merge patch for one compaction result (pure; ``current`` is the status now).

    - ``lastCompaction`` always: when it finished, its result in Kubernetes'
      capitalisation, the CamelCase reason, and what it folded.
    - ``snapshot`` when the run knows which snapshot is current (it published one,
      or found the current one up to date); ``createdAt`` is the publication time
      for a new snapshot and is kept only while the version is unchanged otherwise.
    - ``pendingDeltas`` only when the run got as far as listing deltas (a run that
      failed earlier knows nothing about them).
    """
    finished = now if now is not None else time.time()
    data = res.to_dict()
    last: dict[str, Any] = {
        "time": _iso(finished),
        "result": _RESULTS.get(res.result, "Failed"),
        "reason": res.reason,
        "message": _clip(res.message),
        "durationSeconds": round(max(0.0, float(res.duration_seconds)), 3),
        "deltasFolded": int(res.deltas_folded),
        "recordsFolded": int(res.records_folded),
        "identity": identity or default_identity(),
        # null removes the previous run's version when this run published none
        "snapshotVersion": res.version if res.result == "succeeded" and res.version else None,
    }
    status: dict[str, Any] = {"lastCompaction": last}
    if res.version and res.record_count is not None:
        snap: dict[str, Any] = {
            "version": res.version,
            "records": int(res.record_count),
            "bytes": int(res.snapshot_bytes) if res.snapshot_bytes is not None else None,
        }
        if res.segments is not None:
            snap["segments"] = int(res.segments)
        created = data.get("snapshot_created_at")
        previous = (current or {}).get("snapshot") or {}
        if created:
            snap["createdAt"] = created if isinstance(created, str) else _iso(float(created))
        elif res.result == "succeeded":
            snap["createdAt"] = _iso(finished)
        elif previous.get("version") != res.version:
            snap["createdAt"] = None  # unknown for this version: drop a stale one
        status["snapshot"] = snap
    if "list_deltas" in res.steps:
        status["pendingDeltas"] = int(res.pending_deltas)
    return {"status": status}


def purged_condition(url: str, deleted: int, now: float | None = None) -> dict[str, Any]:
    """The condition a successful purge adds."""
    return {
        "type": CONDITION_PURGED,
        "status": "True",
        "reason": "PrefixDeleted",
        "message": f"deleted {deleted} objects under {url}/",
        "lastTransitionTime": _iso(now if now is not None else time.time()),
    }


def custom_objects_api() -> Any:
    """A CustomObjectsApi with the pod's ServiceAccount token, else the kubeconfig."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(client.ApiClient(cfg))


def _status_of(err: Exception) -> int:
    status = getattr(err, "status", None)
    return int(status) if isinstance(status, int) else 0


def _retrying(what: str, call: Callable[[], T], attempts: int, retry_on: set[int]) -> T:
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as e:
            status = _status_of(e)
            if status not in retry_on or attempt == attempts:
                raise
            log.warning("status report failed; retrying",
                        extra=fields(what=what, status=status, attempt=attempt))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


def patch_compaction_status(resource: str, res: CompactionResult, *, attempts: int = 5) -> bool:
    """Patch one run's result into ``<namespace>/<name>``'s status; ``False`` if it failed."""
    try:
        ns, name = parse_resource(resource)
        api = custom_objects_api()

        def get() -> Any:
            return api.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name)

        try:
            current = (_retrying("get", get, attempts, _RETRYABLE) or {}).get("status") or {}
        except Exception as e:
            # Reading is only needed to keep a createdAt; report without it.
            log.warning("could not read the current status", extra=fields(error=str(e)))
            current = {}
        patch = compaction_patch(res, current)

        def send() -> Any:
            return api.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, patch, _content_type=MERGE_PATCH)

        _retrying("patch", send, attempts, _RETRYABLE)
    except Exception as e:
        log.warning("could not report the compaction in the collection's status",
                    extra=fields(resource=resource, status=_status_of(e), error=str(e)[:500]))
        return False
    log.info("reported compaction in status", extra=fields(
        resource=resource, result=patch["status"]["lastCompaction"]["result"]))
    return True


def patch_status(resource: str, plural: str, patch: Mapping[str, Any], *,
                 attempts: int = 3) -> bool:
    """Merge ``patch`` into the status of ``<namespace>/<name>`` of ``plural`` (best
    effort: ``False``, logged, if the API keeps refusing)."""
    try:
        ns, name = parse_resource(resource)
        api = custom_objects_api()
        _retrying("patch", lambda: api.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, plural, name, dict(patch), _content_type=MERGE_PATCH),
            attempts, _RETRYABLE)
    except Exception as e:
        log.warning("could not report in the resource's status", extra=fields(
            resource=resource, status=_status_of(e), error=str(e)[:500]))
        return False
    return True


def report_purged(resource: str, url: str, deleted: int, *, plural: str = PLURAL,
                  attempts: int = 8) -> None:
    """Add (or replace) the ``Purged`` condition on ``<namespace>/<name>`` of ``plural``
    (a ChromaCollection's, or a ChromaDatabase's); raises if the API keeps refusing.

    The conditions list is replaced as a whole by a merge patch, so the patch carries
    the ``resourceVersion`` it was computed from: a concurrent change makes it fail
    with 409 and it is recomputed.
    """
    ns, name = parse_resource(resource)
    api = custom_objects_api()

    def once() -> Any:
        obj = api.get_namespaced_custom_object_status(GROUP, VERSION, ns, plural, name)
        rv = obj["metadata"]["resourceVersion"]
        conds = [c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") != CONDITION_PURGED]
        body = {"metadata": {"resourceVersion": rv},
                "status": {"conditions": [*conds, purged_condition(url, deleted)]}}
        return api.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, plural, name, body, _content_type=MERGE_PATCH)

    _retrying("purged", once, attempts, _RETRYABLE | {409})
