"""The test control plane is real: API server, RBAC, controllers, scheduler, kwok, GC.

Needs the binaries from ``hack/build-tools.sh k8s``; skipped without them unless
``CHROMASNAP_REQUIRE_CLUSTER`` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import cluster  # hack/cluster.py
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeops import api_as_token

# fixtures control_plane, kube_api, cluster_namespace (registered once even if a
# conftest registers the same plugin)
pytestmark = pytest.mark.cluster

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def impersonating(kube_api: Any, user: str, group: str) -> Any:
    """An ApiClient that acts as ``user`` in ``group`` (admin may impersonate anyone)."""
    api: Any = client.ApiClient(kube_api.configuration)
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", group)
    return api


def test_apiserver_answers_with_pinned_version(control_plane: Any, kube_api: Any) -> None:
    info = client.VersionApi(kube_api).get_code()
    assert info.git_version == cluster.pinned_version("kube-apiserver")
    assert control_plane.api_url.startswith("https://127.0.0.1:")
    status, body = control_plane.api("GET", "/readyz")
    assert (status, body) == (200, "ok")


def test_rbac_denies_serviceaccount_without_bindings(kube_api: Any, cluster_namespace: str) -> None:
    ns = cluster_namespace
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    sa_user = f"system:serviceaccount:{ns}:nobody"
    as_sa = impersonating(kube_api, sa_user, "system:serviceaccounts")
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_sa).list_namespaced_pod(ns)
        assert denied.value.status == 403
        assert "forbidden" in str(denied.value.body).lower()

        # and RBAC is what decides: a Role + RoleBinding lets the same identity in
        rbac = client.RbacAuthorizationV1Api(kube_api)
        rbac.create_namespaced_role(
            ns,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            ns,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="nobody-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=ns)],
            ),
        )
        pods = wait_for(
            "the RoleBinding to take effect",
            lambda: _try(lambda: client.CoreV1Api(as_sa).list_namespaced_pod(ns)),
            timeout=30,
        )
        assert pods.items == []
        with pytest.raises(ApiException) as still_denied:
            client.CoreV1Api(as_sa).list_namespaced_secret(ns)
        assert still_denied.value.status == 403
    finally:
        as_sa.close()


def _try(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except ApiException as e:
        if e.status == 403:
            return None
        raise


def test_serviceaccount_tokens_are_issued_and_accepted(
    kube_api: Any, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="worker"))
    )
    tr: Any = core.create_namespaced_service_account_token(
        "worker",
        ns,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    token: str = tr.status.token
    assert token.count(".") == 2  # a JWT
    api = api_as_token(kube_api, token)
    try:
        review: Any = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:worker"
    finally:
        api.close()


def _pod_running(pod: Any) -> bool:
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return bool(pod.status.phase == "Running" and ready and pod.spec.node_name)


def test_deployment_pods_are_scheduled_and_running(kube_api: Any, cluster_namespace: str) -> None:
    ns = cluster_namespace
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(name="main", image="registry.invalid/smoke:1")
                        ]
                    ),
                ),
            ),
        ),
    )

    def running_pods() -> list[Any] | None:
        pods = core.list_namespaced_pod(ns, label_selector="app=smoke").items
        ok = [p for p in pods if _pod_running(p)]
        return ok if len(ok) == 2 else None

    pods = wait_for("2 Running pods of the Deployment", running_pods)
    assert {p.spec.node_name for p in pods} == {cluster.NODE_NAME}
    assert all(p.status.pod_ip for p in pods)
    # the ReplicaSet in between was made by the deployment controller
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)

    def available() -> bool:
        dep: Any = apps.read_namespaced_deployment_status("smoke", ns)
        return bool(dep.status.available_replicas == 2)

    wait_for("the Deployment to report 2 available replicas", available)

    # scale down: the replicaset controller deletes a pod, kwok finishes the deletion
    apps.patch_namespaced_deployment_scale("smoke", ns, {"spec": {"replicas": 1}})
    wait_for(
        "the Deployment to scale down to 1 pod",
        lambda: len(core.list_namespaced_pod(ns, label_selector="app=smoke").items) == 1,
    )


def _job_template(labels: dict[str, str]) -> client.V1JobTemplateSpec:
    return client.V1JobTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="registry.invalid/job:1")],
                ),
            ),
        ),
    )


def test_job_created_from_cronjob_runs_to_completion(kube_api: Any, cluster_namespace: str) -> None:
    ns = cluster_namespace
    batch = client.BatchV1Api(kube_api)
    cron: Any = batch.create_namespaced_cron_job(
        ns,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="nightly"),
            spec=client.V1CronJobSpec(
                schedule="0 3 1 1 *",
                suspend=True,
                job_template=_job_template({"app": "nightly"}),
            ),
        ),
    )
    # what `kubectl create job --from=cronjob/nightly manual-1` sends
    template = cron.spec.job_template
    batch.create_namespaced_job(
        ns,
        client.V1Job(
            metadata=client.V1ObjectMeta(
                name="manual-1",
                labels=template.metadata.labels,
                annotations={"cronjob.kubernetes.io/instantiate": "manual"},
                owner_references=[
                    client.V1OwnerReference(
                        api_version="batch/v1",
                        kind="CronJob",
                        name=cron.metadata.name,
                        uid=cron.metadata.uid,
                        controller=True,
                    )
                ],
            ),
            spec=template.spec,
        ),
    )
    core = client.CoreV1Api(kube_api)
    pod: Any = wait_for(
        "the Job's pod",
        lambda: next(iter(core.list_namespaced_pod(ns, label_selector="app=nightly").items), None),
    )
    assert pod.metadata.owner_references[0].kind == "Job"

    def complete() -> bool:
        job: Any = batch.read_namespaced_job_status("manual-1", ns)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    wait_for("the Job to complete (kwok marks its pod Succeeded)", complete)
    job: Any = batch.read_namespaced_job_status("manual-1", ns)
    assert job.status.succeeded == 1


def test_cronjob_controller_starts_scheduled_jobs(kube_api: Any, cluster_namespace: str) -> None:
    ns = cluster_namespace
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_cron_job(
        ns,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="every-minute"),
            spec=client.V1CronJobSpec(
                schedule="* * * * *",
                concurrency_policy="Forbid",
                job_template=_job_template({"app": "every-minute"}),
            ),
        ),
    )
    job: Any = wait_for(
        "the cronjob controller to create a Job",
        lambda: next(iter(batch.list_namespaced_job(ns).items), None),
        timeout=90,
    )
    assert job.metadata.owner_references[0].kind == "CronJob"
    assert job.metadata.owner_references[0].name == "every-minute"


def test_garbage_collector_deletes_dependents(kube_api: Any, cluster_namespace: str) -> None:
    ns = cluster_namespace
    core = client.CoreV1Api(kube_api)
    owner: Any = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"})
    )
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            ),
            data={"k": "v"},
        ),
    )
    core.delete_namespaced_config_map("owner", ns)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", ns)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for("the garbage collector to delete the child ConfigMap", child_gone)
