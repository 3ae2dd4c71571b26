"""The purge of ``deletionPolicy: Delete`` (:mod:`chromasnap.operator.controller.purge`)
for a ChromaDatabase, and the refusals it shares with a ChromaCollection's.

Through the real :class:`Purger` with an API client that records what it is sent and
answers what the test says; the purge against the real API server, with its Job run,
is in ``tests/integration/operator/test_database.py``."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from chromasnap.operator.controller.cache import ClusterCache
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.purge import PURGE_FIELD_MANAGER, Purger
from chromasnap.operator.settings import OperatorSettings

NS = "team-a"
SETTINGS = OperatorSettings(default_image="chromasnap:test")


def database(name: str = "pool", prefix: str = "pools/a", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaDatabase",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"storage": {"bucket": "vectors", "prefix": prefix,
                                 "credentialsSecretRef": {"name": "s3"}},
                     "deletionPolicy": "Delete"}, **extra}


def collection(name: str, prefix: str | None, **spec: Any) -> dict[str, Any]:
    storage = {"storage": {"bucket": "vectors", "prefix": prefix}} if prefix else {}
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaCollection",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"collection": {"name": name, "dimension": 8}, **storage, **spec}}


class FakeKube:
    """Records deletes, applies, creates and Events; ``pods`` are what a pod LIST finds."""

    def __init__(self, pods: int = 0) -> None:
        self.pods = pods
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.applied: list[tuple[dict[str, Any], str | None]] = []
        self.events: list[tuple[str, str]] = []  # (reason, message)

    async def get(self, url_path: str) -> dict[str, Any] | None:
        return self.jobs.get(url_path.rsplit("/", 1)[-1])

    async def delete(self, url_path: str, **_: Any) -> None:
        self.deleted.append(url_path)
        self.jobs.pop(url_path.rsplit("/", 1)[-1], None)

    async def apply(self, manifest: Mapping[str, Any], field_manager: str | None = None,
                    **_: Any) -> dict[str, Any]:
        self.applied.append((copy.deepcopy(dict(manifest)), field_manager))
        return dict(manifest)

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.jobs[manifest["metadata"]["name"]] = {**manifest, "status": {}}
        return dict(manifest)

    async def request(self, method: str, url_path: str, **kw: Any) -> dict[str, Any]:
        if url_path.endswith("/events"):
            self.events.append((kw["body"]["reason"], kw["body"]["message"]))
            return {}
        assert method == "GET" and url_path.endswith("/pods"), url_path
        assert kw["params"]["labelSelector"] == (
            "app.kubernetes.io/instance=pool,app.kubernetes.io/component=pool")
        return {"items": [{"metadata": {"name": f"pool-pool-{i}"}}
                          for i in range(self.pods)]}


def purger(kube: FakeKube, *others: dict[str, Any]) -> Purger:
    index = {(NS, o["metadata"]["name"]): [o] for o in others}
    cache = ClusterCache({
        "collections": {k: v for k, v in index.items() if v[0]["kind"] == "ChromaCollection"},
        "databases": {k: v for k, v in index.items() if v[0]["kind"] == "ChromaDatabase"}})
    return Purger(kube, SETTINGS, cache, EventRecorder(kube, "op-1"))  # type: ignore[arg-type]


def test_a_database_s_pods_stop_then_its_job_runs_and_reports() -> None:
    kube = FakeKube(pods=1)
    p = purger(kube, database())
    # 1. the pool's Deployment goes first; its pods are waited for (they store what
    # they acknowledged on their way out)
    with pytest.raises(kopf.TemporaryError, match="waiting for the pool's pods to stop"):
        asyncio.run(p.purge(database(), 0))
    assert kube.deleted == [f"/apis/apps/v1/namespaces/{NS}/deployments/pool-pool"]
    assert not kube.jobs
    # 2. gone: the Job starts, as the pool's ServiceAccount, reporting with its Role (all
    # re-applied without an owner: a foreground deletion may have collected them)
    kube.pods = 0
    with pytest.raises(kopf.TemporaryError, match="waiting for the purge Job"):
        asyncio.run(p.purge(database(), 1))
    (job,) = kube.jobs.values()
    assert job["metadata"]["name"] == "pool-pool-purge"
    assert [(m["kind"], m["metadata"]["name"], manager) for m, manager in kube.applied] == [
        (kind, "pool-pool", PURGE_FIELD_MANAGER)
        for kind in ("ServiceAccount", "Role", "RoleBinding")]
    assert all("ownerReferences" not in m["metadata"] for m, _ in kube.applied)
    assert kube.events[-1][0] == "PurgeStarted"
    assert "s3://vectors/pools/a/" in kube.events[-1][1]
    # 3. running: wait; it reported Purged: the Job goes and the finalizer may go
    with pytest.raises(kopf.TemporaryError, match="to report the purge"):
        asyncio.run(p.purge(database(), 2))
    done = database(status={"conditions": [{"type": "Purged", "status": "True",
                                            "message": "deleted 12 objects"}]})
    asyncio.run(p.purge(done, 3))
    assert kube.deleted[-1] == f"/apis/batch/v1/namespaces/{NS}/jobs/pool-pool-purge"
    assert kube.events[-1] == ("DataPurged", "deleted everything under "
                                             "s3://vectors/pools/a/: deleted 12 objects")


@pytest.mark.parametrize(("others", "named"), [
    ([collection("inside", "pools/a/docs")], "ChromaCollection team-a/inside"),
    ([database("parent", "pools")], "ChromaDatabase team-a/parent"),
])
def test_a_database_sharing_its_storage_is_never_purged(others: list[dict[str, Any]],
                                                        named: str) -> None:
    kube = FakeKube()
    asyncio.run(purger(kube, database(), *others).purge(database(), 0))
    assert kube.deleted == [] and kube.jobs == {}
    ((reason, message),) = kube.events
    assert reason == "PurgeSkipped" and named in message


def test_neither_a_declared_collection_nor_one_elsewhere_holds_a_purge_back() -> None:
    kube = FakeKube(pods=1)
    gone = database("old", "pools")
    gone["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"  # being deleted too
    others = [collection("handbook", None, database="pool"),
              collection("docs", "pools/b"), database("other", "pools/ab"), gone]
    with pytest.raises(kopf.TemporaryError, match="to stop"):
        asyncio.run(purger(kube, database(), *others).purge(database(), 0))
    assert not [r for r, _ in kube.events if r == "PurgeSkipped"]


def test_a_collection_inside_a_pool_s_root_is_not_purged_either() -> None:
    kube = FakeKube()
    cc = collection("docs", "pools/a/x", deletionPolicy="Delete")
    asyncio.run(purger(kube, cc, database()).purge(cc, 0))
    ((reason, message),) = kube.events
    assert reason == "PurgeSkipped" and "ChromaDatabase team-a/pool" in message
