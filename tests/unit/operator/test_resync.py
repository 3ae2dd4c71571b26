"""The periodic resync (:mod:`chromasnap.operator.controller.resync`): it re-applies
every ChromaCollection and every ChromaDatabase of the cache, and one that fails stops
neither the others nor the loop.

The databases go through the real :class:`DatabaseController` with an API client that
records what it is sent (the apply itself is covered against the real API server in
``tests/integration/operator/test_database.py``)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from chromasnap.operator.controller.cache import ClusterCache, Key
from chromasnap.operator.controller.databases import DatabaseController
from chromasnap.operator.controller.events import EventRecorder
from chromasnap.operator.controller.memory import Memory
from chromasnap.operator.controller.resync import resync_forever, resync_once
from chromasnap.operator.kubeapi import ApiError
from chromasnap.operator.settings import OperatorSettings

NS = "team-a"
SETTINGS = OperatorSettings(default_image="chromasnap:test")
#: A pass pauses up to half the interval over its objects: a short one keeps tests fast.
INTERVAL = 0.02


def database(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaDatabase",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "generation": 1, **meta},
            "spec": {"storage": {"bucket": "vectors", "prefix": f"pools/{name}",
                                 "credentialsSecretRef": {"name": "s3"}}},
            "status": {}}


def collection(name: str) -> dict[str, Any]:
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaCollection",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "generation": 1},
            "spec": {"collection": {"name": name, "dimension": 8},
                     "storage": {"bucket": "vectors", "prefix": f"collections/{name}"}}}


class RecordingKube:
    """The operator's API client as DatabaseController uses it: records applies and
    status patches; ``fail`` maps a database's name to what applying its children
    raises."""

    def __init__(self, fail: Mapping[str, Exception] | None = None) -> None:
        self.fail = dict(fail or {})
        self.applied: list[tuple[str, str]] = []  # (kind, name)
        self.patched: list[tuple[str, dict[str, Any]]] = []  # (path, patch)

    async def apply(self, manifest: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        labels = manifest["metadata"].get("labels") or {}
        owner = labels.get("app.kubernetes.io/instance")
        if owner in self.fail:
            raise self.fail[owner]
        self.applied.append((manifest["kind"], manifest["metadata"]["name"]))
        return dict(manifest)

    async def get(self, url_path: str) -> dict[str, Any] | None:
        return None  # no NetworkPolicy left to delete

    async def delete(self, url_path: str, **_: Any) -> None:
        raise AssertionError(f"nothing is deleted: {url_path}")

    async def merge_patch(self, url_path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.patched.append((url_path, copy.deepcopy(dict(patch))))
        return {}

    async def request(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}  # Events


def cache_of(collections: list[dict[str, Any]],
             databases: list[dict[str, Any]]) -> ClusterCache:
    def index(bodies: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
        return {(NS, b["metadata"]["name"]): [b] for b in bodies}

    return ClusterCache({"collections": index(collections), "databases": index(databases)})


def controller(kube: RecordingKube, cache: ClusterCache) -> DatabaseController:
    return DatabaseController(kube, SETTINGS, cache,  # type: ignore[arg-type]
                              EventRecorder(kube, "op-1"))  # type: ignore[arg-type]


def applied_to(kube: RecordingKube, name: str) -> set[str]:
    return {kind for kind, child in kube.applied if child in (name, f"{name}-pool")}


def test_a_database_is_resynced_children_and_status() -> None:
    kube = RecordingKube()
    cache = cache_of([], [database("pool-a")])
    dbs = controller(kube, cache)
    reconciled: list[str] = []

    async def reconcile(body: Mapping[str, Any], retry: int) -> None:
        reconciled.append(body["metadata"]["name"])

    asyncio.run(resync_once(INTERVAL, cache, Memory(), reconcile, dbs.resync))
    assert reconciled == []  # no collection in the cache
    assert applied_to(kube, "pool-a") == {"ConfigMap", "ServiceAccount", "Role",
                                          "RoleBinding", "Service", "Deployment",
                                          "PodDisruptionBudget"}
    [(url, patch)] = kube.patched
    assert url.endswith(f"/namespaces/{NS}/chromadatabases/pool-a/status")
    assert patch["status"]["endpoint"] == f"http://pool-a.{NS}.svc:8000"


def test_a_resync_compares_the_status_with_the_object_not_with_memory() -> None:
    kube = RecordingKube()
    body = database("pool-a")
    cache = cache_of([], [body])
    dbs = controller(kube, cache)

    async def reconcile(body: Mapping[str, Any], retry: int) -> None:
        pass

    asyncio.run(resync_once(INTERVAL, cache, Memory(), reconcile, dbs.resync))
    written = kube.patched[-1][1]["status"]
    # The object now holds what was patched: a resync patches nothing...
    body["status"] = copy.deepcopy(written)
    asyncio.run(resync_once(INTERVAL, cache, Memory(), reconcile, dbs.resync))
    assert len(kube.patched) == 1
    # ...until someone edits the status by hand: the next resync puts it back.
    body["status"]["endpoint"] = "http://elsewhere:8000"
    asyncio.run(resync_once(INTERVAL, cache, Memory(), reconcile, dbs.resync))
    assert len(kube.patched) == 2 and kube.patched[-1][1]["status"] == written


@pytest.mark.parametrize("error", [
    ApiError(500, "InternalError", "etcd timeout"),  # the controller's TemporaryError
    ApiError(422, "Invalid", "bad child"),  # the controller's PermanentError
    RuntimeError("a bug"),
])
def test_a_failing_database_does_not_stop_the_others(error: Exception) -> None:
    kube = RecordingKube(fail={"pool-b": error})
    cache = cache_of([collection("docs")],
                     [database("pool-a"), database("pool-b"), database("pool-c"),
                      database("gone", deletionTimestamp="2026-12-01T00:00:00Z")])
    dbs = controller(kube, cache)
    reconciled: list[str] = []

    async def reconcile(body: Mapping[str, Any], retry: int) -> None:
        reconciled.append(body["metadata"]["name"])

    asyncio.run(resync_once(INTERVAL, cache, Memory(), reconcile, dbs.resync))
    assert reconciled == ["docs"]
    assert "Deployment" in applied_to(kube, "pool-a")
    assert "Deployment" in applied_to(kube, "pool-c")
    assert applied_to(kube, "pool-b") == set()
    assert applied_to(kube, "gone") == set()  # being deleted: left alone


def test_a_failing_collection_does_not_stop_the_databases() -> None:
    kube = RecordingKube()
    cache = cache_of([collection("docs"), collection("faq")], [database("pool-a")])
    dbs = controller(kube, cache)
    memory = Memory()
    memory.written["uid-faq"] = {"stale": True}
    reconciled: list[str] = []

    async def reconcile(body: Mapping[str, Any], retry: int) -> None:
        reconciled.append(body["metadata"]["name"])
        if body["metadata"]["name"] == "docs":
            raise ApiError(0, "Unreachable", "connection refused")

    asyncio.run(resync_once(INTERVAL, cache, memory, reconcile, dbs.resync))
    assert reconciled == ["docs", "faq"]
    assert "uid-faq" not in memory.written  # compared with the object again
    assert "Deployment" in applied_to(kube, "pool-a")


def test_the_loop_resyncs_databases_again_and_again() -> None:
    kube = RecordingKube(fail={"pool-b": RuntimeError("a bug")})
    cache = cache_of([], [database("pool-a"), database("pool-b")])
    dbs = controller(kube, cache)
    seen: list[str] = []

    async def resync(body: Mapping[str, Any]) -> None:
        seen.append(body["metadata"]["name"])
        await dbs.resync(body)

    async def reconcile(body: Mapping[str, Any], retry: int) -> None:
        pass

    async def run() -> None:
        task = asyncio.create_task(resync_forever(INTERVAL, cache, Memory(), reconcile, resync))
        for _ in range(500):
            if seen.count("pool-a") >= 3:
                break
            await asyncio.sleep(0.01)
        assert not task.done()  # the failures did not end the loop
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert seen.count("pool-a") >= 3 and seen.count("pool-b") >= 2
