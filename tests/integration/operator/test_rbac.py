"""Least privilege, checked on the real API server with RBAC on.

Each identity is checked two ways: SubjectAccessReviews (what the authorizer
decides, for every verb the identity needs and a list it must not have) and
actual calls made with a TokenRequest token of the ServiceAccount.

- the operator: the chart's ServiceAccount (ClusterRole for all namespaces);
- a collection's pods: ``<name>-chromasnap`` with the Role the operator creates
  (its own Lease and its own collection's status; nothing else).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeops import (
    GROUP,
    PLURAL,
    VERSION,
    ChartRelease,
    Collections,
    OperatorProcess,
    api_as_token,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    maybe,
    operator,  # noqa: F401 - fixture
    sa_token,
    wait_for,
)

pytestmark = pytest.mark.cluster


@dataclass(frozen=True)
class Can:
    """One access check: verb on resource (group/resource[/subresource]) [named]."""

    verb: str
    resource: str
    name: str | None = None
    namespaced: bool = True

    def attributes(self, ns: str) -> client.V1ResourceAttributes:
        """``resource`` is ``<group>/<resource>[/<subresource>]``, ``core`` for the core group."""
        group, res, *sub = self.resource.split("/")
        return client.V1ResourceAttributes(
            namespace=ns if self.namespaced else None, verb=self.verb,
            group="" if group == "core" else group, resource=res,
            subresource=sub[0] if sub else None, name=self.name)

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f" {self.name}" if self.name else "")


def allowed(kube_api: Any, user: str, ns: str, check: Can) -> bool:
    sa_ns = user.split(":")[2]
    review: Any = client.AuthorizationV1Api(kube_api).create_subject_access_review(
        client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}",
                    "system:authenticated"],
            resource_attributes=check.attributes(ns))))
    return bool(review.status.allowed)


CR = f"{GROUP}/{PLURAL}"
CHILDREN = ["core/configmaps", "core/services", "core/serviceaccounts", "apps/deployments",
            "batch/cronjobs", "batch/jobs", "policy/poddisruptionbudgets",
            "rbac.authorization.k8s.io/roles", "rbac.authorization.k8s.io/rolebindings",
            "coordination.k8s.io/leases", "networking.k8s.io/networkpolicies"]

OPERATOR_NEEDS = [
    *(Can(v, CR) for v in ("get", "list", "watch", "patch")),
    Can("patch", f"{CR}/status"), Can("update", f"{CR}/finalizers"),
    *(Can(v, res) for res in CHILDREN for v in ("get", "list", "watch", "create", "patch",
                                                 "delete")),
    Can("get", "core/secrets"),
    # pods: watched read-only, for why a workload or a compaction is stuck
    *(Can(v, "core/pods") for v in ("get", "list", "watch")),
    Can("create", "core/events"),
    # it may grant only what it holds: the collection Role's rules
    Can("update", "coordination.k8s.io/leases"), Can("get", f"{CR}/status"),
]
OPERATOR_MUST_NOT = [
    Can("list", "core/secrets"), Can("watch", "core/secrets"), Can("create", "core/secrets"),
    Can("update", "core/secrets"), Can("delete", "core/secrets"),
    Can("create", "core/pods"), Can("delete", "core/pods"), Can("create", "core/pods/exec"),
    Can("update", "core/pods"), Can("patch", "core/pods"), Can("deletecollection", "core/pods"),
    Can("get", "core/pods/log"), Can("create", "core/pods/eviction"),
    Can("patch", "core/pods/status"),
    Can("create", "core/serviceaccounts/token"),
    Can("create", CR), Can("delete", CR), Can("update", CR),
    Can("get", "core/nodes", namespaced=False), Can("list", "core/namespaces", namespaced=False),
    Can("create", "core/namespaces", namespaced=False),
    Can("create", "apiextensions.k8s.io/customresourcedefinitions", namespaced=False),
    Can("create", "rbac.authorization.k8s.io/clusterroles", namespaced=False),
    Can("create", "rbac.authorization.k8s.io/clusterrolebindings", namespaced=False),
    Can("escalate", "rbac.authorization.k8s.io/roles"),
    Can("bind", "rbac.authorization.k8s.io/roles"),
    Can("impersonate", "core/serviceaccounts"),
    Can("create", "admissionregistration.k8s.io/mutatingwebhookconfigurations",
        namespaced=False),
    Can("create", "core/persistentvolumeclaims"),
    # networking: its own NetworkPolicies only
    Can("create", "networking.k8s.io/ingresses"),
    Can("create", "networking.k8s.io/ingressclasses", namespaced=False),
    Can("create", "networking.k8s.io/ipaddresses", namespaced=False),
]


@dataclass
class Setup:
    ns: str
    name: str
    sa: str
    lease: str
    operator_user: str
    collection_user: str


@pytest.fixture(scope="module")
def setup(kube_api: Any, chart_release: ChartRelease,  # noqa: F811
          operator: OperatorProcess) -> Iterator[Setup]:  # noqa: F811
    core = client.CoreV1Api(kube_api)
    ns = "rbac-checks"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    colls = Collections(kube_api)
    for name in ("docs", "other"):
        colls.create(collection_body(name, ns, compactor={"schedule": "0 3 1 1 *"}))
    rbac = client.RbacAuthorizationV1Api(kube_api)
    for name in ("docs", "other"):
        wait_for(f"{name}'s RoleBinding", lambda name=name: maybe(
            lambda: rbac.read_namespaced_role_binding(f"{name}-chromasnap", ns)), timeout=30)
    try:
        yield Setup(ns, "docs", "docs-chromasnap", "docs-compactor",
                    f"system:serviceaccount:{chart_release.namespace}:"
                    f"{chart_release.service_account}",
                    f"system:serviceaccount:{ns}:docs-chromasnap")
    finally:
        core.delete_namespace(ns)


@pytest.mark.parametrize("check", OPERATOR_NEEDS, ids=str)
def test_operator_can(check: Can, setup: Setup, kube_api: Any) -> None:
    assert allowed(kube_api, setup.operator_user, setup.ns, check), check


@pytest.mark.parametrize("check", OPERATOR_MUST_NOT, ids=str)
def test_operator_cannot(check: Can, setup: Setup, kube_api: Any) -> None:
    assert not allowed(kube_api, setup.operator_user, setup.ns, check), check


def collection_needs(s: Setup) -> list[Can]:
    return [Can("get", "coordination.k8s.io/leases", s.lease),
            Can("update", "coordination.k8s.io/leases", s.lease),
            Can("patch", "coordination.k8s.io/leases", s.lease),
            Can("get", f"{CR}/status", s.name), Can("patch", f"{CR}/status", s.name)]


def collection_must_not(s: Setup) -> list[Can]:
    return [
        Can("create", "coordination.k8s.io/leases"),
        Can("list", "coordination.k8s.io/leases"),
        Can("get", "coordination.k8s.io/leases", "other-compactor"),
        Can("update", "coordination.k8s.io/leases", "other-compactor"),
        Can("delete", "coordination.k8s.io/leases", s.lease),
        Can("patch", f"{CR}/status", "other"),
        Can("get", CR, s.name), Can("patch", CR, s.name), Can("list", CR),
        Can("get", "core/secrets"), Can("list", "core/secrets"),
        Can("get", "core/configmaps", f"{s.name}-config"),
        Can("list", "core/pods"), Can("create", "core/events"),
        Can("patch", "apps/deployments", f"{s.name}-writer"),
        Can("create", "batch/jobs"),
        Can("create", "core/serviceaccounts/token", s.sa),
        # not the tokens of spec.auth (the kubelet mounts them), not its NetworkPolicies
        Can("get", "core/secrets", f"{s.name}-tokens"),
        Can("get", "networking.k8s.io/networkpolicies", f"{s.name}-reader"),
        Can("patch", "networking.k8s.io/networkpolicies", f"{s.name}-reader"),
        Can("delete", "networking.k8s.io/networkpolicies", f"{s.name}-writer"),
    ]


def test_collection_service_account_has_exactly_its_lease_and_status(
    setup: Setup, kube_api: Any
) -> None:
    for check in collection_needs(setup):
        assert allowed(kube_api, setup.collection_user, setup.ns, check), check
    denied = [str(c) for c in collection_must_not(setup)
              if allowed(kube_api, setup.collection_user, setup.ns, c)]
    assert denied == [], f"the collection's ServiceAccount may: {denied}"


def _status(e: ApiException) -> int:
    return int(e.status or 0)


def test_actual_calls_as_the_collection_service_account(setup: Setup, kube_api: Any) -> None:
    api = api_as_token(kube_api, sa_token(kube_api, setup.ns, setup.sa))
    try:
        custom = client.CustomObjectsApi(api)
        coord = client.CoordinationV1Api(api)
        # allowed: its own status and Lease
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, setup.ns, PLURAL, setup.name, {"status": {"pendingDeltas": 0}},
            _content_type="application/merge-patch+json")
        lease: Any = coord.read_namespaced_lease(setup.lease, setup.ns)
        coord.replace_namespaced_lease(setup.lease, setup.ns, lease)
        # denied: anything else
        for call in (
            lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, setup.ns, PLURAL, "other", {"status": {"pendingDeltas": 1}},
                _content_type="application/merge-patch+json"),
            lambda: custom.patch_namespaced_custom_object(
                GROUP, VERSION, setup.ns, PLURAL, setup.name,
                {"spec": {"reader": {"replicas": 9}}},
                _content_type="application/merge-patch+json"),
            lambda: coord.create_namespaced_lease(setup.ns, client.V1Lease(
                metadata=client.V1ObjectMeta(name="squatter"))),
            lambda: client.CoreV1Api(api).list_namespaced_secret(setup.ns),
            lambda: coord.read_namespaced_lease("other-compactor", setup.ns),
        ):
            with pytest.raises(ApiException) as err:
                call()
            assert _status(err.value) == 403
    finally:
        api.close()


def test_actual_calls_as_the_operator(setup: Setup, kube_api: Any,
                                      chart_release: ChartRelease) -> None:  # noqa: F811
    api = api_as_token(kube_api, sa_token(kube_api, chart_release.namespace,
                                          chart_release.service_account))
    try:
        rbac = client.RbacAuthorizationV1Api(api)
        core = client.CoreV1Api(api)
        # RBAC's escalation check: it cannot hand out what it does not hold
        with pytest.raises(ApiException) as err:
            rbac.create_namespaced_role(setup.ns, client.V1Role(
                metadata=client.V1ObjectMeta(name="sneaky"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                                           verbs=["list"])]))
        assert _status(err.value) == 403
        with pytest.raises(ApiException) as err:
            core.list_namespaced_secret(setup.ns)
        assert _status(err.value) == 403
        with pytest.raises(ApiException) as err:
            core.create_namespaced_service_account_token(
                setup.sa, setup.ns, client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(audiences=[])))
        assert _status(err.value) == 403
        # it can manage NetworkPolicies (a collection's, when spec.networkPolicy asks) …
        net = client.NetworkingV1Api(api)
        net.create_namespaced_network_policy(setup.ns, client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name="like-a-collection"),
            spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(),
                                            policy_types=["Ingress"])))
        net.delete_namespaced_network_policy("like-a-collection", setup.ns)
        # … but not Ingresses
        with pytest.raises(ApiException) as err:
            net.create_namespaced_ingress(setup.ns, client.V1Ingress(
                metadata=client.V1ObjectMeta(name="sneaky"),
                spec=client.V1IngressSpec(default_backend=client.V1IngressBackend(
                    service=client.V1IngressServiceBackend(
                        name="docs-reader", port=client.V1ServiceBackendPort(number=8000))))))
        assert _status(err.value) == 403
        # and it can make the collection's Role, holding exactly those rules itself
        rbac.create_namespaced_role(setup.ns, client.V1Role(
            metadata=client.V1ObjectMeta(name="like-a-collection"),
            rules=[client.V1PolicyRule(api_groups=["coordination.k8s.io"],
                                       resources=["leases"], resource_names=["x"],
                                       verbs=["get", "update", "patch"])]))
    finally:
        api.close()
