"""Unit tests of :mod:`chromasnap.operator.drift`: what counts as a hand edit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opsupport import UID, body

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.drift import drift
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import access, deployments, environment, naming, network


@pytest.fixture
def deployment(cc: ChromaCollection, settings: OperatorSettings) -> dict[str, Any]:
    return deployments.writer_deployment(cc, settings)


def served(manifest: dict[str, Any]) -> dict[str, Any]:
    """Roughly what the API server returns: defaults, status, other managers' additions."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="x", resourceVersion="7", generation=2,
                            annotations={"deployment.kubernetes.io/revision": "1"})
    spec = live["spec"]
    spec["progressDeadlineSeconds"] = 600
    pod = spec["template"]["spec"]
    pod["dnsPolicy"] = "ClusterFirst"
    c = pod["containers"][0]
    c["imagePullPolicy"] = "IfNotPresent"
    c["env"].append({"name": "INJECTED_BY_A_WEBHOOK", "value": "1"})
    pod["containers"].append({"name": "sidecar", "image": "proxy:1"})
    for e in c["env"]:
        if "fieldRef" in e.get("valueFrom", {}):
            e["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    live["status"] = {"replicas": 2, "readyReplicas": 2}
    return live


def test_no_drift_when_only_the_server_and_others_added_fields(
    deployment: dict[str, Any]
) -> None:
    assert drift(deployment, served(deployment)) == []


def test_changed_fields_the_operator_sets_are_drift(deployment: dict[str, Any]) -> None:
    live = served(deployment)
    live["spec"]["replicas"] = 7
    live["metadata"]["labels"].pop(naming.LABEL_MANAGED_BY)
    c = live["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "CHROMASNAP_FLUSH_MAX_DELAY_MS"]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    paths = drift(deployment, live)
    assert "spec.replicas" in paths
    assert f"metadata.labels.{naming.LABEL_MANAGED_BY}" in paths
    assert any("env[name=CHROMASNAP_FLUSH_MAX_DELAY_MS]" in p for p in paths)
    assert any(p.endswith("securityContext.readOnlyRootFilesystem") for p in paths)


def test_an_extra_rule_in_the_role_is_drift(cc: ChromaCollection) -> None:
    role = access.role(cc)
    live = copy.deepcopy(role)
    live["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    assert drift(role, live) == ["rules"]


def test_quantities_compare_by_value_and_zero_values_may_be_omitted(cc: ChromaCollection) -> None:
    reader = deployments.reader_deployment(ChromaCollection.from_body(body(
        reader={"cacheSize": "1.5Gi", "resources": {"limits": {"cpu": "1.5"}}})),
        OperatorSettings())
    live = copy.deepcopy(reader)
    pod = live["spec"]["template"]["spec"]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    cache["emptyDir"]["sizeLimit"] = "1536Mi"
    pod["containers"][0]["resources"]["limits"]["cpu"] = "1500m"
    assert drift(reader, live) == []
    svc = network.readers_headless_service(cc)
    live_svc = copy.deepcopy(svc)
    del live_svc["spec"]["publishNotReadyAddresses"]  # false is omitted by the server
    assert drift(svc, live_svc) == []


def test_a_foreign_owner_reference_is_not_drift_but_a_missing_one_is(cc: ChromaCollection) -> None:
    cm = environment.config_map(cc)
    live = copy.deepcopy(cm)
    live["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "X", "name": "x",
                                                "uid": "other"})
    assert drift(cm, live) == []
    live["metadata"]["ownerReferences"] = []
    assert drift(cm, live) == [f"metadata.ownerReferences[uid={UID}]"]


# --- NetworkPolicies ----------------------------------------------------------------------


def _policies() -> dict[str, dict[str, Any]]:
    cc = ChromaCollection.from_body(body(networkPolicy={
        "enabled": True, "ingressFrom": [{"podSelector": {}}, {"namespaceSelector": {}}]}))
    return {p["metadata"]["name"]: p for p in network.network_policies(cc)}


def test_network_policies_as_served_have_no_drift() -> None:
    for name, want in _policies().items():
        live = copy.deepcopy(want)
        live["metadata"].update(uid="x", resourceVersion="3", generation=1)
        if not live["spec"]["ingress"]:
            del live["spec"]["ingress"]  # the API server leaves out an empty list
        assert drift(want, live) == [], name


def test_a_widened_network_policy_is_drift() -> None:
    for name, want in _policies().items():
        live = copy.deepcopy(want)
        live["spec"]["ingress"] = [*live["spec"]["ingress"], {"from": [{"ipBlock": {
            "cidr": "0.0.0.0/0"}}]}]
        assert drift(want, live) == ["spec.ingress"], name
    reader = copy.deepcopy(_policies()["docs-reader"])
    reader["spec"]["ingress"][-1]["from"] = [{"podSelector": {}}]  # any pod to port 8001
    assert drift(_policies()["docs-reader"], reader) != []
