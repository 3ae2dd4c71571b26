"""The operator's view of the cluster: kopf's in-memory indexes, read by key.

kopf keeps the indexes current from its watches (collections, and the
Deployments, CronJobs, Jobs, NetworkPolicies and pods the operator labels as its own); reading them
costs no API call, so every child event can recompute a status cheaply.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, cast

from chromasnap.operator.observed import DeploymentState, Observed, OwnedChild
from chromasnap.operator.specs.database import COMPONENT_POOL
from chromasnap.operator.specs.naming import COMPONENT_READER, COMPONENT_WRITER
from chromasnap.resource import API_VERSION, KIND

#: kopf's bookkeeping annotations live under this prefix (the status schema would prune
#: kopf's default status fields). Not "chromasnap.dev" itself: kopf hides every annotation
#: under its storage prefix from change detection, and chromasnap.dev/compact-now must be
#: seen.
STORAGE_PREFIX = "kopf.chromasnap.dev"
#: The ids of the kopf indexes (see the ``@kopf.index`` handlers).
INDEXES = ("collections", "databases", "deployments", "cronjobs", "jobs", "networkpolicies",
           "pods")

Key = tuple[str, str]  # (namespace, name) of a ChromaCollection


def meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """An object's ``metadata`` (empty if it has none)."""
    return cast(Mapping[str, Any], body.get("metadata") or {})


def slim(body: Mapping[str, Any], kind: str = KIND) -> dict[str, Any]:
    """A private copy of a collection (or a database: ``kind``), without the bulky
    bookkeeping (managedFields, kopf's last-handled configuration), for the in-memory
    index."""
    m = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "labels",
            "deletionTimestamp", "finalizers")
    annotations = {k: v for k, v in (m.get("annotations") or {}).items()
                   if not k.startswith(STORAGE_PREFIX + "/")
                   and k != "kubectl.kubernetes.io/last-applied-configuration"}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {k: copy.deepcopy(m[k]) for k in keep if k in m}
        | {"annotations": annotations},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _first(values: Iterable[Any] | None) -> Any:
    for v in values or ():
        return v
    return None


class ClusterCache:
    """Reads kopf's indexes (by id, as passed to the startup handler)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        self.indices = dict(indices)

    def collection(self, key: Key) -> dict[str, Any] | None:
        """The collection as last seen by the watch (a slim private copy)."""
        idx = self.indices.get("collections")
        return cast(dict[str, Any] | None, _first(idx.get(key)) if idx is not None else None)

    def all_collections(self) -> list[dict[str, Any]]:
        """Every collection the operator watches."""
        return self._all("collections")

    def _all(self, index: str) -> list[dict[str, Any]]:
        idx = self.indices.get(index)
        return [b for store in (idx.values() if idx is not None else ()) for b in store]

    def observe(self, key: Key) -> Observed:
        """What the cluster reports about one collection's workloads."""
        ns, name = key
        deps = self.indices.get("deployments")
        crons = self.indices.get("cronjobs")
        jobs = self.indices.get("jobs")
        pods = self.indices.get("pods")
        return Observed(
            writer=_first(deps.get((ns, name, COMPONENT_WRITER))) if deps else None,
            reader=_first(deps.get((ns, name, COMPONENT_READER))) if deps else None,
            cronjob=_first(crons.get(key)) if crons else None,
            jobs=tuple(jobs.get(key, ())) if jobs else (),
            pods=tuple(pods.get(key, ())) if pods else (),
        )

    def database(self, key: Key) -> dict[str, Any] | None:
        """The ChromaDatabase as last seen by the watch (a slim private copy)."""
        idx = self.indices.get("databases")
        return cast(dict[str, Any] | None, _first(idx.get(key)) if idx is not None else None)

    def all_databases(self) -> list[dict[str, Any]]:
        """Every ChromaDatabase the operator watches."""
        return self._all("databases")

    def pool_deployment(self, key: Key) -> DeploymentState | None:
        """The status of a ChromaDatabase's Deployment, if it exists."""
        deps = self.indices.get("deployments")
        return cast(DeploymentState | None,
                    _first(deps.get((*key, COMPONENT_POOL))) if deps else None)

    def network_policies(self, key: Key) -> list[OwnedChild]:
        """The NetworkPolicies labelled as one collection's (owned or not: check ``owner_uid``)."""
        idx = self.indices.get("networkpolicies")
        return list(idx.get(key, ())) if idx is not None else []
