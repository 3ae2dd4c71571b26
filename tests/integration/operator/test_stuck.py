"""Status says why a collection is stuck: on the real control plane (kube-scheduler, the
kwok node's capacity from hack/cluster.py), a compactor that asks for more CPU than any
node has leaves the bootstrap Job's pod Pending, and the conditions say so."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubeops import (
    Collections,
    OperatorProcess,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    namespace,  # noqa: F401 - fixture
    operator,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = pytest.mark.cluster


def test_an_unschedulable_compaction_is_reported(
    kube_api: Any, namespace: str, operator: OperatorProcess,  # noqa: F811
) -> None:
    ns, name = namespace, "too-big"
    colls = Collections(kube_api)
    colls.create(collection_body(
        name, ns,
        # far more than the kwok node's 32 CPUs; a schedule that does not fire meanwhile
        compactor={"schedule": "0 3 1 1 *", "resources": {"requests": {"cpu": "500"}}},
    ))

    def unschedulable_pod() -> str | None:
        pods = client.CoreV1Api(kube_api).list_namespaced_pod(
            ns, label_selector=f"app.kubernetes.io/instance={name},"
                               "app.kubernetes.io/component=compactor").items
        for p in pods:
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" \
                        and c.reason == "Unschedulable":
                    return str(p.metadata.name)
        return None

    pod = wait_for("the bootstrap Job's pod to be Unschedulable", unschedulable_pod,
                   timeout=60)
    cond = colls.wait_condition(ns, name, "CompactorHealthy", "False",
                                "CompactionUnschedulable", timeout=60)
    assert "Insufficient cpu" in cond["message"], cond
    assert pod in cond["message"], cond
    snap = colls.condition(ns, name, "SnapshotAvailable")
    assert snap is not None and snap["reason"] == "NoSnapshot", snap
    assert "CompactionUnschedulable" in snap["message"], snap
    ready = colls.condition(ns, name, "Ready")
    assert ready is not None and ready["status"] == "False", ready
    assert "Insufficient cpu" in ready["message"], ready
    # and someone is told: a Warning Event, though the condition was never True
    wait_for("a CompactionUnschedulable Warning Event", lambda: [
        ev for ev in client.CoreV1Api(kube_api).list_namespaced_event(ns).items
        if ev.type == "Warning" and ev.reason == "CompactionUnschedulable"
        and ev.involved_object.name == name], timeout=30)
