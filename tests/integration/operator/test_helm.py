"""The Helm chart with the real helm binary: lint, render, install into the test cluster.

The installed release is the one every operator test runs under (its
ServiceAccount, its RBAC, the command and env of its Deployment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from chromasnap.cli import main as cli
from kubeops import (
    CHART,
    GROUP,
    PLURAL,
    ROOT,
    ChartRelease,
    OperatorProcess,
    chart_release,  # noqa: F401 - fixture
    helm,
    operator,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = pytest.mark.cluster


def render(control_plane: Any, *values: str) -> list[dict[str, Any]]:
    args = ["template", "chromasnap", str(CHART), "--namespace", "chromasnap-system"]
    for v in values:
        args += ["--set", v]
    out = helm(control_plane, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_lints_strictly(control_plane: Any) -> None:
    proc = helm(control_plane, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout


def test_values_schema_refuses_bad_values(control_plane: Any) -> None:
    proc = helm(control_plane, "template", "x", str(CHART), "--set", "logLevel=LOUD",
                check=False)
    assert proc.returncode != 0
    assert "logLevel" in proc.stderr


def _operator_args(docs: list[dict[str, Any]]) -> list[str]:
    dep = next(d for d in docs if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["chromasnap", "operator"]
    return list(container["args"])


def test_cluster_wide_by_default(control_plane: Any) -> None:
    docs = render(control_plane)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    args = _operator_args(docs)
    assert "--all-namespaces" in args and "--standalone" in args
    # the operator's own CLI accepts exactly what the chart passes
    ns = cli.build_parser().parse_args(["operator", *args])
    assert ns.all_namespaces and ns.standalone and ns.namespace is None
    assert ns.liveness == "http://0.0.0.0:8080/healthz"
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_one_namespace_gets_a_role_not_a_cluster_role(control_plane: Any) -> None:
    docs = render(control_plane, "watchNamespace=team-a")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "team-a"
    args = _operator_args(docs)
    assert "--namespace=team-a" in args
    ns = cli.build_parser().parse_args(["operator", *args])
    assert ns.namespace == ["team-a"] and not ns.all_namespaces


def test_secrets_access_can_be_turned_off(control_plane: Any) -> None:
    docs = render(control_plane, "rbac.readSecrets=false")
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert all("secrets" not in r["resources"] for r in role["rules"])


def test_install_created_the_release_and_the_crd(
    control_plane: Any, kube_api: Any, chart_release: ChartRelease,  # noqa: F811
) -> None:
    status = helm(control_plane, "status", chart_release.name, "--namespace",
                  chart_release.namespace, "-o", "yaml").stdout
    assert yaml.safe_load(status)["info"]["status"] == "deployed"
    crd: Any = client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(
        f"{PLURAL}.{GROUP}")
    shipped = yaml.safe_load(Path(ROOT / "crds" / f"{GROUP}_{PLURAL}.yaml").read_text())
    assert crd.spec.names.short_names == shipped["spec"]["names"]["shortNames"]
    assert [v.name for v in crd.spec.versions] == [v["name"] for v in shipped["spec"]["versions"]]
    assert crd.spec.versions[0].subresources.scale.spec_replicas_path == ".spec.reader.replicas"
    apps = client.AppsV1Api(kube_api)
    wait_for("the operator Deployment to be available (kwok runs its pod)", lambda: (
        (apps.read_namespaced_deployment(chart_release.service_account, chart_release.namespace)
         .status.available_replicas or 0) == 1), timeout=60)


def test_operator_runs_as_the_charts_service_account(
    kube_api: Any, operator: OperatorProcess, chart_release: ChartRelease,  # noqa: F811
) -> None:
    cfg = yaml.safe_load(operator.kubeconfig.read_text())
    assert "token" in cfg["users"][0]["user"] and "client-certificate" not in cfg["users"][0][
        "user"]
    review: Any = client.AuthenticationV1Api(
        _token_client(kube_api, cfg["users"][0]["user"]["token"])
    ).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == (
        f"system:serviceaccount:{chart_release.namespace}:{chart_release.service_account}")
    # the command line is the chart's, with only the liveness address moved to loopback
    assert operator.argv[1:] == ["operator", "--standalone", f"--liveness={operator.liveness}",
                                 "--all-namespaces"]
    assert operator.alive()


def _token_client(kube_api: Any, token: str) -> Any:
    from kubeops import api_as_token

    return api_as_token(kube_api, token)


def test_a_namespaced_release_runs_with_a_role_in_that_namespace_only(
    control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    """watchNamespace: the operator gets a Role there, and that is enough to run it."""
    from kubeops import Collections, collection_body, maybe, start_operator

    core = client.CoreV1Api(kube_api)
    apps = client.AppsV1Api(kube_api)
    watched, other = "helm-team-a", "helm-team-b"
    for ns in (watched, other):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    release = ChartRelease("chromasnap-ns", "chromasnap-ns-system", "chromasnap-ns", "")
    helm(control_plane, "install", release.name, str(CHART), "--namespace", release.namespace,
         "--create-namespace", "--set", f"watchNamespace={watched}", "--wait",
         "--timeout", "120s")
    # One operator per collection: the cluster-wide one pauses meanwhile.
    operator.stop()
    second = None
    try:
        second = start_operator(control_plane, kube_api, release, tmp_path / "ns-operator")
        assert f"--namespace={watched}" in second.argv
        colls = Collections(kube_api)
        for ns in (watched, other):
            colls.create(collection_body("docs", ns, compactor={"schedule": "0 3 1 1 *"}))
        wait_for("the watched namespace's children", lambda: maybe(
            lambda: apps.read_namespaced_deployment("docs-writer", watched)), timeout=30)
        wait_for("its status", lambda: (colls.get(watched, "docs").get("status") or {}).get(
            "observedGeneration") == 1, timeout=30)
        assert maybe(lambda: apps.read_namespaced_deployment("docs-writer", other)) is None
        assert "status" not in colls.get(other, "docs")
        errors = [line for line in second.log_text().splitlines()
                  if '"level": "error"' in line and "TooManyRequests" not in line]
        assert errors == [], errors  # e.g. a 403 for something the Role lacks
    finally:
        if second is not None:
            second.stop()
        operator.start()
        helm(control_plane, "uninstall", release.name, "--namespace", release.namespace,
             check=False)
        for ns in (watched, other):
            core.delete_namespace(ns)
