"""Unit tests of :mod:`chromasnap.operator.specs.network`: Services, PDBs, the scale selector,
and the NetworkPolicies of ``spec.networkPolicy``."""

from __future__ import annotations

from typing import Any

import pytest
from specsupport import NS, UID, body, by_kind, cc_of, one

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import deployments, naming, network
from chromasnap.operator.specs.children import desired_children, unwanted_children

# --- services, PDBs, scale --------------------------------------------------------------


def test_services_select_their_deployments_pods(
    children: list[dict[str, Any]],
) -> None:
    writer = one(children, "Deployment", "docs-writer")
    reader = one(children, "Deployment", "docs-reader")
    for d in (writer, reader):
        sel = d["spec"]["selector"]["matchLabels"]
        tmpl_labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= tmpl_labels.items()
    w_svc = one(children, "Service", "docs-writer")
    r_svc = one(children, "Service", "docs-reader")
    h_svc = one(children, "Service", "docs-readers-headless")
    assert w_svc["spec"]["selector"] == writer["spec"]["selector"]["matchLabels"]
    assert r_svc["spec"]["selector"] == reader["spec"]["selector"]["matchLabels"]
    assert h_svc["spec"]["selector"] == reader["spec"]["selector"]["matchLabels"]
    assert h_svc["spec"]["clusterIP"] == "None"
    assert h_svc["spec"]["publishNotReadyAddresses"] is False
    for svc in (w_svc, r_svc, h_svc):
        assert svc["spec"]["ports"][0]["port"] == 8000
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # Only the headless Service (what writers push through) exposes the internal port.
    assert [p["port"] for p in w_svc["spec"]["ports"]] == [8000]
    assert [p["port"] for p in r_svc["spec"]["ports"]] == [8000]
    assert h_svc["spec"]["ports"][1] == {"name": "internal", "port": 8001,
                                         "targetPort": "internal", "protocol": "TCP",
                                         "appProtocol": "http"}
    reader_ports = {p["name"]: p["containerPort"]
                    for p in reader["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert reader_ports == {"http": 8000, "internal": 8001}
    # The metrics label marks exactly one Service per pod, so nothing is scraped twice.
    labelled = [
        s["metadata"]["name"]
        for s in by_kind(children, "Service")
        if s["metadata"]["labels"].get(naming.LABEL_METRICS) == "true"
    ]
    assert sorted(labelled) == ["docs-reader", "docs-writer"]


def test_disruption_budgets_allow_one_at_a_time(children: list[dict[str, Any]]) -> None:
    for comp in ("writer", "reader"):
        pdb = one(children, "PodDisruptionBudget", f"docs-{comp}")
        dep = one(children, "Deployment", f"docs-{comp}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def test_reader_selector_matches_the_reader_pods(
    cc: ChromaCollection, settings: OperatorSettings
) -> None:
    sel = naming.reader_selector(cc.name)
    parsed = dict(kv.split("=", 1) for kv in sel.split(","))
    dep = deployments.reader_deployment(cc, settings)
    assert parsed == dep["spec"]["selector"]["matchLabels"]


# --- NetworkPolicies --------------------------------------------------------------------

WEB = {"podSelector": {"matchLabels": {"app": "web"}}}
TEAM = {"namespaceSelector": {"matchLabels": {"team": "search"}},
        "podSelector": {"matchExpressions": [{"key": "role", "operator": "In",
                                              "values": ["api", "batch"]}]}}
OFFICE = {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def _policies(**np: Any) -> dict[str, dict[str, Any]]:
    cc = cc_of(body(networkPolicy={"enabled": True, **np}))
    return {p["metadata"]["labels"]["app.kubernetes.io/component"]: p
            for p in network.network_policies(cc)}


def _pods(component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": naming.selector_labels("docs", component)}}


HTTP = [{"protocol": "TCP", "port": 8000}]
INTERNAL = [{"protocol": "TCP", "port": 8001}]


def test_no_policies_unless_enabled(children: list[dict[str, Any]]) -> None:
    assert not by_kind(children, "NetworkPolicy")
    assert network.network_policies(cc_of(body(networkPolicy={"enabled": False}))) == []
    # ... and what is not wanted is what the operator deletes if it finds it
    assert unwanted_children(cc_of(body())) == {
        ("NetworkPolicy", "docs-writer"), ("NetworkPolicy", "docs-reader"),
        ("NetworkPolicy", "docs-compactor")}
    assert unwanted_children(cc_of(body(networkPolicy={"enabled": True}))) == set()


def test_one_owned_policy_per_component_before_the_workloads(
    settings: OperatorSettings,
) -> None:
    cc = cc_of(body(networkPolicy={"enabled": True, "ingressFrom": [WEB]}))
    children = desired_children(cc, settings)
    kinds = [c["kind"] for c in children]
    policies = by_kind(children, "NetworkPolicy")
    assert [p["metadata"]["name"] for p in policies] == [
        "docs-writer", "docs-reader", "docs-compactor"]
    # applied before any pod exists that they protect
    assert max(i for i, k in enumerate(kinds) if k == "NetworkPolicy") < kinds.index("Deployment")
    for p in policies:
        assert p["apiVersion"] == "networking.k8s.io/v1"
        meta = p["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"][0]["uid"] == UID
        assert meta["ownerReferences"][0]["controller"] is True
        comp = meta["labels"]["app.kubernetes.io/component"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "chromasnap-operator"
        # each selects exactly its component's pods, as the Deployments/Jobs label them
        assert p["spec"]["podSelector"] == {"matchLabels": naming.selector_labels("docs", comp)}
        assert p["spec"]["policyTypes"] == ["Ingress"]  # egress is left alone


def test_writers_admit_clients_and_the_collections_readers() -> None:
    writer = _policies(ingressFrom=[WEB, TEAM, OFFICE])["writer"]
    assert writer["spec"]["ingress"] == [
        {"ports": HTTP, "from": [WEB, TEAM, OFFICE, _pods("reader")]},
    ]


def test_readers_admit_clients_on_http_and_only_writers_on_the_internal_port() -> None:
    reader = _policies(ingressFrom=[WEB])["reader"]
    assert reader["spec"]["ingress"] == [
        {"ports": HTTP, "from": [WEB]},
        {"ports": INTERNAL, "from": [_pods("writer")]},
    ]


def test_the_compactor_admits_nothing() -> None:
    compactor = _policies(ingressFrom=[WEB], metricsFrom=[PROMETHEUS])["compactor"]
    assert compactor["spec"]["ingress"] == []
    assert compactor["spec"]["policyTypes"] == ["Ingress"]


def test_metrics_scrapers_get_the_http_port() -> None:
    policies = _policies(ingressFrom=[WEB], metricsFrom=[PROMETHEUS])
    assert policies["writer"]["spec"]["ingress"][1] == {"ports": HTTP, "from": [PROMETHEUS]}
    assert policies["reader"]["spec"]["ingress"][1] == {"ports": HTTP, "from": [PROMETHEUS]}


def test_empty_ingress_from_means_only_the_collections_own_pods() -> None:
    policies = _policies()
    assert policies["writer"]["spec"]["ingress"] == [{"ports": HTTP, "from": [_pods("reader")]}]
    assert policies["reader"]["spec"]["ingress"] == [
        {"ports": INTERNAL, "from": [_pods("writer")]}]


@pytest.mark.parametrize("np", [
    {}, {"ingressFrom": [WEB]}, {"metricsFrom": [PROMETHEUS]},
    {"ingressFrom": [OFFICE], "metricsFrom": [PROMETHEUS]},
])
def test_no_rule_ever_admits_everyone(np: dict[str, Any]) -> None:
    # A rule without "from" (or with an empty one) admits every source: never render one.
    for p in _policies(**np).values():
        for rule in p["spec"]["ingress"]:
            assert rule.get("from"), p["metadata"]["name"]
            assert rule.get("ports"), p["metadata"]["name"]
            assert all(peer for peer in rule["from"])


def test_peers_are_rendered_as_written() -> None:
    # podSelector {} (every pod) and namespaceSelector {} (every namespace) keep their meaning.
    everyone_here = {"podSelector": {}}
    anywhere = {"namespaceSelector": {}}
    writer = _policies(ingressFrom=[everyone_here, anywhere])["writer"]
    assert writer["spec"]["ingress"][0]["from"][:2] == [everyone_here, anywhere]
