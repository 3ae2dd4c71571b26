"""Securing a collection (``spec.auth``, ``spec.networkPolicy``), on the real control plane.

With the chart's operator running as its ServiceAccount: bearer tokens reach the
pods only as a Secret volume (the keys each role needs) and file paths in env —
no token value in any pod spec or status, Event, collection status or the
operator's log; a missing Secret or key is a ``False`` condition that clears once
fixed; NetworkPolicies are created, owned, repaired on drift and deleted when
turned off. (kwok's pods do not run, so client traffic through them is for the
data-plane tests.)
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.drift import drift
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.children import desired_children
from kubeops import (
    Collections,
    OperatorProcess,
    as_dict,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    create_secret,
    get_manifest,
    maybe,
    operator,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = pytest.mark.cluster

AUTH_DIR = "/var/run/chromasnap/auth"
NEVER = "0 3 1 1 *"  # a schedule that does not fire during the tests


def _tokens() -> dict[str, str]:
    """Token values unique to this run, to search for everywhere afterwards."""
    return {
        "read": f"read-{secrets.token_hex(16)}\nread2-{secrets.token_hex(16)}\n",
        "write": f"write-{secrets.token_hex(16)}\n",
        "push": f"push-{secrets.token_hex(16)}",
    }


def _values(tokens: dict[str, str]) -> list[str]:
    return [t for v in tokens.values() for t in v.split()]


@pytest.fixture(scope="module")
def ns(kube_api: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def colls(kube_api: Any) -> Collections:
    return Collections(kube_api)


def _desired(colls: Collections, ns: str, name: str,
             operator: OperatorProcess) -> dict[tuple[str, str], dict[str, Any]]:  # noqa: F811
    settings = OperatorSettings(default_image=operator.env["CHROMASNAP_DEFAULT_IMAGE"])
    cc = ChromaCollection.from_body(colls.get(ns, name))
    return {(m["kind"], m["metadata"]["name"]): m for m in desired_children(cc, settings)}


def _template(kube_api: Any, ns: str, deployment: str) -> dict[str, Any]:
    dep: Any = client.AppsV1Api(kube_api).read_namespaced_deployment(deployment, ns)
    out: dict[str, Any] = as_dict(kube_api, dep)["spec"]["template"]
    return out


def _deployment_exists(kube_api: Any, ns: str, name: str) -> bool:
    return maybe(lambda: client.AppsV1Api(kube_api).read_namespaced_deployment(name, ns)) \
        is not None


# --- bearer tokens ----------------------------------------------------------------------


def test_tokens_reach_the_pods_as_files_and_nowhere_else(
    kube_api: Any, colls: Collections, ns: str, operator: OperatorProcess,  # noqa: F811
) -> None:
    tokens = _tokens()
    create_secret(kube_api, ns, "docs-tokens", tokens)
    colls.create(collection_body("docs", ns, compactor={"schedule": NEVER},
                                 auth={"secretRef": {"name": "docs-tokens"}}))
    wait_for("the writer and reader Deployments", lambda: (
        _deployment_exists(kube_api, ns, "docs-writer")
        and _deployment_exists(kube_api, ns, "docs-reader")), timeout=30)

    writer = _template(kube_api, ns, "docs-writer")["spec"]
    reader = _template(kube_api, ns, "docs-reader")["spec"]
    for pod, files in ((writer, ["write", "push"]), (reader, ["read", "write", "push"])):
        (vol,) = [v for v in pod["volumes"] if v["name"] == "auth"]
        assert vol["secret"] == {"secretName": "docs-tokens", "defaultMode": 0o440,
                                 "items": [{"key": f, "path": f} for f in files]}
        (c,) = pod["containers"]
        assert {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True} in c["volumeMounts"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["CHROMASNAP_PUSH_TOKEN_FILE"] == f"{AUTH_DIR}/push"
    (wc,) = writer["containers"]
    (rc,) = reader["containers"]
    assert {e["name"]: e.get("value") for e in wc["env"]}["CHROMASNAP_AUTH_TOKEN_FILE"] == (
        f"{AUTH_DIR}/write")
    assert {e["name"]: e.get("value") for e in rc["env"]}["CHROMASNAP_AUTH_TOKEN_FILE"] == (
        f"{AUTH_DIR}/read,{AUTH_DIR}/write")
    # the compactor holds no token
    cron: Any = client.BatchV1Api(kube_api).read_namespaced_cron_job("docs-compactor", ns)
    cron_pod = as_dict(kube_api, cron)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert all(v["name"] != "auth" for v in cron_pod["volumes"])
    assert "TOKEN_FILE" not in json.dumps(cron_pod)
    # and the live children are what the builders make (once the operator applied them all)
    for (kind, name), m in _desired(colls, ns, "docs", operator).items():
        live = wait_for(f"{kind} {name}", lambda m=m: get_manifest(kube_api, m), timeout=30)
        assert drift(m, live) == [], f"{kind} {name}"

    # kwok makes the pods (and reports them ready): no token in their spec or status,
    # nor in the collection, its Events or the operator's log.
    core = client.CoreV1Api(kube_api)
    wait_for("writer and reader pods", lambda: len(core.list_namespaced_pod(
        ns, label_selector="app.kubernetes.io/instance=docs").items) >= 4, timeout=60)
    colls.wait_condition(ns, "docs", "WritersReady", "True", timeout=60)
    pods = as_dict(kube_api, core.list_namespaced_pod(ns))
    events = as_dict(kube_api, core.list_namespaced_event(ns))
    everything = json.dumps([pods, events, colls.get(ns, "docs")]) + operator.log_text()
    for value in _values(tokens):
        assert value not in everything
    assert f"{AUTH_DIR}/read,{AUTH_DIR}/write" in json.dumps(pods)


def test_changing_the_token_secret_rolls_writers_and_readers(
    kube_api: Any, colls: Collections, ns: str,
) -> None:
    create_secret(kube_api, ns, "docs-tokens-v2", _tokens())
    writer0 = _template(kube_api, ns, "docs-writer")
    reader0 = _template(kube_api, ns, "docs-reader")
    batch = client.BatchV1Api(kube_api)
    cron0 = batch.read_namespaced_cron_job("docs-compactor", ns).metadata.generation
    colls.patch(ns, "docs", {"spec": {"auth": {"secretRef": {"name": "docs-tokens-v2"}}}})

    def mounted(deployment: str) -> str:
        pod = _template(kube_api, ns, deployment)["spec"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "auth"]
        return str(vol["secret"]["secretName"])

    wait_for("the writers to mount the new Secret", lambda: (
        mounted("docs-writer") == "docs-tokens-v2"), timeout=30)
    wait_for("the readers to mount the new Secret", lambda: (
        mounted("docs-reader") == "docs-tokens-v2"), timeout=30)
    assert _template(kube_api, ns, "docs-writer") != writer0
    assert _template(kube_api, ns, "docs-reader") != reader0
    assert batch.read_namespaced_cron_job("docs-compactor", ns).metadata.generation == cron0


def test_a_missing_token_secret_or_key_is_a_condition_until_fixed(
    kube_api: Any, colls: Collections, ns: str, operator: OperatorProcess,  # noqa: F811
) -> None:
    tokens = _tokens()
    create_secret(kube_api, ns, "half-tokens", {"read": tokens["read"], "write": tokens["write"]})
    colls.create(collection_body("half", ns, compactor={"schedule": NEVER},
                                 auth={"secretRef": {"name": "half-tokens"}}))
    colls.create(collection_body("none", ns, compactor={"schedule": NEVER},
                                 auth={"secretRef": {"name": "no-such-tokens"},
                                       "pushTokenKey": "internal"}))
    half = colls.wait_condition(ns, "half", "Ready", "False", "AuthSecretKeyMissing", timeout=30)
    assert "Secret 'half-tokens' in namespace" in half["message"]
    assert "has no key push" in half["message"]
    assert "(read, write)" in half["message"]  # the keys it has: names only
    none = colls.wait_condition(ns, "none", "Ready", "False", "AuthSecretNotFound", timeout=30)
    assert "Secret 'no-such-tokens'" in none["message"]
    assert "keys read (read tokens, one per line), write (write tokens) and internal" in (
        none["message"])
    for name in ("half", "none"):
        assert not _deployment_exists(kube_api, ns, f"{name}-writer"), name
    core = client.CoreV1Api(kube_api)
    warned = {(ev.involved_object.name, ev.reason)
              for ev in core.list_namespaced_event(ns).items if ev.type == "Warning"}
    assert ("half", "AuthSecretKeyMissing") in warned
    assert ("none", "AuthSecretNotFound") in warned

    # Adding the key is enough: Secrets are not watched, the operator looks again.
    core.patch_namespaced_secret("half-tokens", ns, {"stringData": {"push": tokens["push"]}})
    wait_for("half's writers once the key exists", lambda: _deployment_exists(
        kube_api, ns, "half-writer"), timeout=60)
    wait_for("half's Ready condition to drop the problem", lambda: (
        (c := colls.condition(ns, "half", "Ready")) is not None
        and c["reason"] != "AuthSecretKeyMissing"), timeout=20)
    dumped = json.dumps(as_dict(kube_api, core.list_namespaced_event(ns))) + json.dumps(
        colls.get(ns, "half")) + operator.log_text()
    for value in _values(tokens):
        assert value not in dumped


# --- NetworkPolicies --------------------------------------------------------------------

INGRESS_FROM = [
    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "search-api"}}},
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "indexing"}}},
    {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}},
]
METRICS_FROM = [{"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "monitoring"}}}]
POLICIES = ("fenced-writer", "fenced-reader", "fenced-compactor")


def _policy(kube_api: Any, ns: str, name: str) -> dict[str, Any] | None:
    """The live NetworkPolicy as plain JSON (``None`` if it does not exist)."""
    return get_manifest(kube_api, {"apiVersion": "networking.k8s.io/v1",
                                   "kind": "NetworkPolicy",
                                   "metadata": {"name": name, "namespace": ns}})


def test_network_policies_are_created_owned_and_repaired(
    kube_api: Any, colls: Collections, ns: str, operator: OperatorProcess,  # noqa: F811
) -> None:
    net = client.NetworkingV1Api(kube_api)
    created = colls.create(collection_body(
        "fenced", ns, compactor={"schedule": NEVER},
        networkPolicy={"enabled": True, "ingressFrom": INGRESS_FROM,
                       "metricsFrom": METRICS_FROM}))
    uid = created["metadata"]["uid"]
    wait_for("the three NetworkPolicies", lambda: all(
        _policy(kube_api, ns, p) is not None for p in POLICIES), timeout=30)
    desired = _desired(colls, ns, "fenced", operator)
    for name in POLICIES:
        want = desired[("NetworkPolicy", name)]
        live = get_manifest(kube_api, want)
        assert live is not None
        assert drift(want, live) == [], name
        (owner,) = live["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "ChromaCollection", uid, True)
        assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "chromasnap-operator")
    # the API server stored the peers as given, and the internal port is writers-only
    reader = _policy(kube_api, ns, "fenced-reader")
    assert reader is not None
    assert reader["spec"]["ingress"][0]["from"] == INGRESS_FROM
    assert reader["spec"]["ingress"][1]["from"] == METRICS_FROM
    internal = reader["spec"]["ingress"][-1]
    assert internal["ports"] == [{"port": 8001, "protocol": "TCP"}]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in internal["from"]] == ["writer"]
    compactor = _policy(kube_api, ns, "fenced-compactor")
    assert compactor is not None
    assert compactor["spec"].get("ingress") in (None, [])
    assert compactor["spec"]["policyTypes"] == ["Ingress"]

    # deleted by hand: re-created; widened by hand: reverted
    net.delete_namespaced_network_policy("fenced-writer", ns)
    wait_for("the writers' NetworkPolicy to be re-created", lambda: (
        (p := _policy(kube_api, ns, "fenced-writer")) is not None
        and p["metadata"]["ownerReferences"][0]["uid"] == uid), timeout=20)
    net.patch_namespaced_network_policy("fenced-reader", ns, {"spec": {"ingress": [
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}})
    want = desired[("NetworkPolicy", "fenced-reader")]

    def reverted() -> bool:
        live = get_manifest(kube_api, want)
        return live is not None and drift(want, live) == []

    wait_for("the readers' NetworkPolicy to be reverted", reverted, timeout=20)

    def said() -> set[tuple[str, str]]:
        return {(ev.reason, ev.message) for ev in client.CoreV1Api(
            kube_api).list_namespaced_event(ns, field_selector="involvedObject.name=fenced").items}

    # (the Event is posted just after the repair)
    wait_for("the ChildRestored and ChildReverted Events", lambda: any(
        r == "ChildReverted" for r, _ in said()), timeout=10)
    events = said()
    assert any(r == "ChildRestored" and m.startswith(
        "re-created NetworkPolicy fenced-writer") for r, m in events), events
    assert any(r == "ChildReverted" and m.startswith(
        "reverted changes to NetworkPolicy fenced-reader made outside the operator: "
        "spec.ingress") for r, m in events), events


def test_turning_network_policies_off_deletes_them_and_only_them(
    kube_api: Any, colls: Collections, ns: str,
) -> None:
    net = client.NetworkingV1Api(kube_api)
    # Someone else's policy that happens to carry the collection's labels is left alone.
    net.create_namespaced_network_policy(ns, client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="fenced-extra", labels={
            "app.kubernetes.io/instance": "fenced",
            "app.kubernetes.io/managed-by": "chromasnap-operator"}),
        spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(),
                                        policy_types=["Ingress"])))
    colls.patch(ns, "fenced", {"spec": {"networkPolicy": {
        "enabled": False, "ingressFrom": None, "metricsFrom": None}}})
    wait_for("the NetworkPolicies to be deleted", lambda: all(
        _policy(kube_api, ns, p) is None for p in POLICIES), timeout=30)
    assert _policy(kube_api, ns, "fenced-extra") is not None
    # ... and turning them on again brings them back
    colls.patch(ns, "fenced", {"spec": {"networkPolicy": {"enabled": True}}})
    wait_for("the NetworkPolicies to be back", lambda: all(
        _policy(kube_api, ns, p) is not None for p in POLICIES), timeout=30)
    writer = _policy(kube_api, ns, "fenced-writer")
    assert writer is not None
    # with no ingressFrom, only the collection's readers may reach the writers
    (rule,) = writer["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in rule["from"]] == ["reader"]
