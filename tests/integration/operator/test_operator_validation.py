"""Bad ChromaCollection specs: each is refused by the API server (schema, CEL) or reported
by the operator as ``Ready=False`` with a reason and a message saying what to fix, and
then nothing is created for it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeops import (
    Collections,
    OperatorProcess,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    create_secret,
    namespace,  # noqa: F401 - fixture
    operator,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = pytest.mark.cluster


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        elif v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# (id, patch over a valid ChromaCollection, what the API server's message says)
REJECTED_BY_THE_API_SERVER: list[tuple[str, dict[str, Any], str]] = [
    ("name-too-long", {"metadata": {"name": "a" * 41}},
     "metadata.name must be at most 40 characters"),
    ("name-starts-with-a-digit", {"metadata": {"name": "9docs"}},
     "metadata.name must start with a lowercase letter"),
    ("no-collection", {"spec": {"collection": None}}, "spec.collection: Required value"),
    ("no-storage-prefix", {"spec": {"storage": {"prefix": None}}},
     "spec.storage.prefix: Required value"),
    ("dimension-zero", {"spec": {"collection": {"dimension": 0}}},
     "spec.collection.dimension: Invalid value: 0: spec.collection.dimension in body should be "
     "greater than or equal to 1"),
    ("dimension-too-large", {"spec": {"collection": {"dimension": 70000}}},
     "should be less than or equal to 65536"),
    ("unknown-space", {"spec": {"collection": {"space": "dot"}}},
     'spec.collection.space: Unsupported value: "dot"'),
    ("collection-name-with-dots", {"spec": {"collection": {"name": "a..b"}}},
     "collection.name must not contain '..'"),
    ("construction-ef-below-m",
     {"spec": {"collection": {"hnsw": {"m": 64, "constructionEf": 32}}}},
     "hnsw.constructionEf must be at least hnsw.m"),
    ("bucket-with-uppercase", {"spec": {"storage": {"bucket": "My_Bucket"}}},
     "spec.storage.bucket in body should match"),
    ("prefix-with-leading-slash", {"spec": {"storage": {"prefix": "/docs"}}},
     "spec.storage.prefix in body should match"),
    ("prefix-with-dotdot", {"spec": {"storage": {"prefix": "a/../b"}}},
     "storage.prefix must not contain '.' or '..' segments"),
    ("endpoint-not-http", {"spec": {"storage": {"endpoint": "ftp://minio:9000"}}},
     "spec.storage.endpoint in body should match"),
    ("too-many-writers", {"spec": {"writer": {"replicas": 101}}},
     "spec.writer.replicas in body should be less than or equal to 100"),
    ("unknown-read-level", {"spec": {"reader": {"readLevel": "eventual"}}},
     'spec.reader.readLevel: Unsupported value: "eventual"'),
    ("grace-shorter-than-poll",
     {"spec": {"reader": {"pollIntervalSeconds": 30},
               "retention": {"deltaGracePeriodSeconds": 10}}},
     "retention.deltaGracePeriodSeconds must be at least reader.pollIntervalSeconds"),
    ("lease-too-short", {"spec": {"compactor": {"leaseDurationSeconds": 1}}},
     "spec.compactor.leaseDurationSeconds in body should be greater than or equal to 5"),
    ("schedule-in-words", {"spec": {"compactor": {"schedule": "every five minutes"}}},
     "spec.compactor.schedule in body should match"),
    ("unknown-deletion-policy", {"spec": {"deletionPolicy": "Purge"}},
     'spec.deletionPolicy: Unsupported value: "Purge"'),
    ("quantity-in-words", {"spec": {"reader": {"resources": {"limits": {"memory": "lots"}}}}},
     "spec.reader.resources.limits.memory in body should match"),
    ("unknown-pull-policy", {"spec": {"imagePullPolicy": "Sometimes"}},
     'spec.imagePullPolicy: Unsupported value: "Sometimes"'),
    ("auth-without-secret", {"spec": {"auth": {"readTokensKey": "r"}}},
     "spec.auth.secretRef: Required value"),
    ("auth-shared-key", {"spec": {"auth": {"secretRef": {"name": "t"},
                                           "writeTokensKey": "read"}}},
     "must name three different keys"),
    ("auth-push-is-write", {"spec": {"auth": {"secretRef": {"name": "t"},
                                              "pushTokenKey": "write"}}},
     "must name three different keys"),
    ("auth-key-with-slash", {"spec": {"auth": {"secretRef": {"name": "t"},
                                               "readTokensKey": "a/b"}}},
     "spec.auth.readTokensKey in body should match"),
    ("network-policy-peers-but-not-enabled",
     {"spec": {"networkPolicy": {"ingressFrom": [{"podSelector": {}}]}}},
     "networkPolicy.ingressFrom and metricsFrom take effect only with"),
    ("network-policy-empty-peer", {"spec": {"networkPolicy": {"enabled": True,
                                                              "ingressFrom": [{}]}}},
     "a peer needs podSelector and/or namespaceSelector, or ipBlock alone"),
    ("network-policy-ipblock-and-selector",
     {"spec": {"networkPolicy": {"enabled": True, "ingressFrom": [
         {"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}}},
     "a peer needs podSelector and/or namespaceSelector, or ipBlock alone"),
    ("network-policy-cidr-without-prefix",
     {"spec": {"networkPolicy": {"enabled": True, "ingressFrom": [
         {"ipBlock": {"cidr": "10.0.0.1"}}]}}},
     "ipBlock.cidr in body should match"),
    ("network-policy-in-without-values",
     {"spec": {"networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {
         "matchExpressions": [{"key": "app", "operator": "In"}]}}]}}},
     "In and NotIn need values"),
    ("network-policy-unknown-operator",
     {"spec": {"networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {
         "matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}]}}},
     'Unsupported value: "Near"'),
    ("recovery-window-in-words", {"spec": {"retention": {"recoveryWindow": "a week"}}},
     "spec.retention.recoveryWindow in body should match"),
    ("bootstrap-version-and-time", {"spec": {"bootstrap": {"from": {
        "bucket": "vectors", "prefix": "old", "version": "0000000002-aabbccdd",
        "at": "2026-11-30T12:00:00Z"}}}}, "bootstrap.from takes version or at, not both"),
    ("bootstrap-without-prefix", {"spec": {"bootstrap": {"from": {"bucket": "vectors"}}}},
     "spec.bootstrap.from.prefix: Required value"),
]

# (id, spec patch after creation, message)
IMMUTABLE: list[tuple[str, dict[str, Any], str]] = [
    ("dimension", {"collection": {"dimension": 16}}, "collection.dimension is immutable"),
    ("collection-name", {"collection": {"name": "other"}}, "collection.name is immutable"),
    ("space", {"collection": {"space": "ip"}}, "collection.space is immutable"),
    ("hnsw-m", {"collection": {"hnsw": {"m": 32}}}, "collection.hnsw.m is immutable"),
    ("bucket", {"storage": {"bucket": "elsewhere"}}, "storage.bucket is immutable"),
    ("prefix", {"storage": {"prefix": "moved"}}, "storage.prefix is immutable"),
]

# (id, spec patch, condition reason, message fragment); the schema accepts these
REPORTED_BY_THE_OPERATOR: list[tuple[str, dict[str, Any], str, str]] = [
    ("schedule-minute-61", {"compactor": {"schedule": "61 * * * *"}}, "InvalidSchedule",
     "minute field: '61' is out of range 0-59"),
    ("schedule-step-zero", {"compactor": {"schedule": "*/0 * * * *"}}, "InvalidSchedule",
     "step in '*/0' must be a positive number"),
    ("schedule-month-13", {"compactor": {"schedule": "0 0 1 13 *"}}, "InvalidSchedule",
     "month field: '13' is out of range 1-12"),
    ("schedule-bad-weekday", {"compactor": {"schedule": "0 0 * * FUNDAY"}}, "InvalidSchedule",
     "day of week field: 'FUNDAY' is not a number or a name"),
    ("reader-cache-zero", {"reader": {"cacheSize": "0"}}, "InvalidSpec",
     "spec.reader.cacheSize: '0' must be greater than zero"),
    ("requests-above-limits",
     {"writer": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}},
     "InvalidSpec", "requests.memory (2Gi) is greater than limits.memory (1Gi)"),
    ("missing-secret", {"storage": {"credentialsSecretRef": {"name": "no-such-secret"}}},
     "CredentialsSecretNotFound", "Secret 'no-such-secret'"),
    ("secret-without-the-key", {"storage": {"credentialsSecretRef": {"name": "half-secret"}}},
     "CredentialsSecretKeyMissing", "has no key AWS_SECRET_ACCESS_KEY"),
    ("missing-auth-secret", {"auth": {"secretRef": {"name": "no-such-tokens"}}},
     "AuthSecretNotFound", "Secret 'no-such-tokens'"),
    ("auth-secret-without-push", {"auth": {"secretRef": {"name": "half-tokens"}}},
     "AuthSecretKeyMissing", "has no key push"),
    ("auth-secret-with-empty-key", {"auth": {"secretRef": {"name": "blank-tokens"}}},
     "AuthSecretKeyMissing", "has nothing but whitespace in write"),
    ("recovery-window-too-long", {"retention": {"recoveryWindow": "400d"}}, "InvalidSpec",
     "spec.retention.recoveryWindow: '400d' is longer than 366d"),
]


def _valid(name: str, ns: str) -> dict[str, Any]:
    return collection_body(name, ns, compactor={"schedule": "0 3 1 1 *"})


@pytest.fixture(scope="module")
def colls(kube_api: Any) -> Collections:
    return Collections(kube_api)


@pytest.fixture(scope="module")
def module_ns(kube_api: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = "invalid-specs"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.mark.parametrize(("case", "patch", "message"), REJECTED_BY_THE_API_SERVER,
                         ids=[c[0] for c in REJECTED_BY_THE_API_SERVER])
def test_the_api_server_rejects(case: str, patch: dict[str, Any], message: str,
                                colls: Collections, module_ns: str,
                                chart_release: Any) -> None:  # noqa: F811
    body = merged(_valid(f"bad-{case}"[:40], module_ns), patch)
    with pytest.raises(ApiException) as err:
        colls.create(body)
    assert err.value.status == 422, err.value.body
    assert message in json.loads(err.value.body)["message"], err.value.body


@pytest.mark.parametrize(("case", "patch", "message"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_immutable_fields_cannot_change(case: str, patch: dict[str, Any], message: str,
                                        colls: Collections, module_ns: str,
                                        chart_release: Any) -> None:  # noqa: F811
    name = f"immutable-{case}"
    colls.create(_valid(name, module_ns))
    with pytest.raises(ApiException) as err:
        colls.patch(module_ns, name, {"spec": patch})
    assert err.value.status == 422, err.value.body
    assert message in json.loads(err.value.body)["message"], err.value.body


def _children(kube_api: Any, ns: str, name: str) -> list[str]:
    sel = f"app.kubernetes.io/instance={name}"
    found = [f"ConfigMap {o.metadata.name}" for o in client.CoreV1Api(kube_api)
             .list_namespaced_config_map(ns, label_selector=sel).items]
    found += [f"Deployment {o.metadata.name}" for o in client.AppsV1Api(kube_api)
              .list_namespaced_deployment(ns, label_selector=sel).items]
    found += [f"CronJob {o.metadata.name}" for o in client.BatchV1Api(kube_api)
              .list_namespaced_cron_job(ns, label_selector=sel).items]
    found += [f"ServiceAccount {o.metadata.name}" for o in client.CoreV1Api(kube_api)
              .list_namespaced_service_account(ns, label_selector=sel).items]
    return found


def test_the_operator_reports_what_the_schema_cannot_check(
    kube_api: Any, colls: Collections, namespace: str,  # noqa: F811
    operator: OperatorProcess,  # noqa: F811
) -> None:
    ns = namespace
    create_secret(kube_api, ns, "half-secret", {"AWS_ACCESS_KEY_ID": "only-the-id"})
    create_secret(kube_api, ns, "half-tokens", {"read": "r-token", "write": "w-token"})
    create_secret(kube_api, ns, "blank-tokens", {"read": "r-token", "write": "\n",
                                                 "push": "p-token"})
    for case, patch, _, _ in REPORTED_BY_THE_OPERATOR:
        colls.create(merged(_valid(case, ns), {"spec": patch}))
    for case, _, reason, message in REPORTED_BY_THE_OPERATOR:
        cond = colls.wait_condition(ns, case, "Ready", "False", reason, timeout=30)
        assert message in cond["message"], (case, cond["message"])
        assert cond["observedGeneration"] == 1
        assert colls.get(ns, case)["status"]["observedGeneration"] == 1
    for case, *_ in REPORTED_BY_THE_OPERATOR:
        assert _children(kube_api, ns, case) == [], f"{case}: something was created"
    events = client.CoreV1Api(kube_api).list_namespaced_event(ns).items
    warned = {(ev.involved_object.name, ev.reason) for ev in events if ev.type == "Warning"}
    for case, _, reason, _ in REPORTED_BY_THE_OPERATOR:
        assert (case, reason) in warned, case

    # Fixing the problem is enough: the next spec change (or, for a Secret, the next
    # retry) applies everything.
    colls.patch(ns, "schedule-minute-61", {"spec": {"compactor": {"schedule": "1 * * * *"}}})
    create_secret(kube_api, ns, "no-such-secret", {"AWS_ACCESS_KEY_ID": "id",
                                                   "AWS_SECRET_ACCESS_KEY": "key"})
    for case in ("schedule-minute-61", "missing-secret"):
        wait_for(f"{case}'s children once fixed",
                 lambda case=case: len(_children(kube_api, ns, case)) >= 4, timeout=60)
        wait_for(f"{case}'s Ready condition to drop the problem", lambda case=case: (
            (c := colls.condition(ns, case, "Ready")) is not None
            and c["reason"] not in ("InvalidSchedule", "CredentialsSecretNotFound")
            and c["observedGeneration"] == colls.get(ns, case)["metadata"]["generation"]),
            timeout=20)
