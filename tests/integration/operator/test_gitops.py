"""GitOps on the real control plane: collections applied the way Argo CD and Flux apply
them (server-side apply, each tool's field manager), with the chart's operator running.

- The operator never writes to a field the Git manifest owns: re-applying the same
  manifest is a no-op (a server-side dry-run apply returns the live object unchanged,
  and ``kubectl diff --server-side`` finds nothing) once the collection is Ready, after
  a compaction, after a spec change, and while it is broken; and no field manager but
  the GitOps tool's owns anything under ``spec``.
- ``status`` is kstatus-compatible and the Argo CD health script reads it right, on live
  objects while progressing, ready and degraded (rules in tests/gitops_rules.py).
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cluster  # hack/cluster.py
import pytest
import yaml
from kubernetes import client

from gitops_rules import CURRENT, IN_PROGRESS, argocd_health, kstatus
from kubeops import (
    OperatorProcess,
    chart_release,  # noqa: F401 - fixture
    create_secret,
    operator,  # noqa: F401 - fixture
    wait_for,
)
from live_collection import Live, new_live, server_side_apply
from minio_server import MinioServer

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
ARGO = "argocd-controller"  # Argo CD's field manager for server-side apply
FLUX = "kustomize-controller"  # Flux's
NAME = "docs"


@pytest.fixture(scope="module")
def live(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
         minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    lv = new_live(kube_api, control_plane, minio, tmp_path_factory.mktemp("pods"), "gitops")
    try:
        yield lv
    finally:
        lv.runner.stop_all()
        client.CoreV1Api(kube_api).delete_namespace(lv.ns)


def git_manifest(live: Live, name: str = NAME, **spec: Any) -> dict[str, Any]:
    """What the Git repository holds (an annotation and a label, as people write them)."""
    m = live.manifest(name, **spec)
    m["metadata"]["labels"] = {"team": "search"}
    m["metadata"]["annotations"] = {"docs.example.com/owner": "search-team"}
    return m


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("managedFields", None)
    return out


def _kubectl_diff(control_plane: Any, manifest: dict[str, Any], manager: str,
                  tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    kubectl = cluster.tool("kubectl")
    f = tmp / f"{manifest['metadata']['name']}.yaml"
    f.write_text(yaml.safe_dump(manifest))
    return subprocess.run(
        [str(kubectl), "--kubeconfig", str(control_plane.kubeconfig_path), "diff",
         "--server-side", f"--field-manager={manager}", *extra, "-f", str(f)],
        capture_output=True, text=True, timeout=60, check=False)


def assert_reapply_is_a_no_op(control_plane: Any, kube_api: Any, live: Live,
                              manifest: dict[str, Any], manager: str, tmp: Path) -> None:
    """A server-side dry-run apply returns the live object unchanged, and ``kubectl diff
    --server-side`` finds nothing. A check during which the object changed (the operator
    or a compactor writing status) is repeated: it proves nothing either way."""
    name = manifest["metadata"]["name"]
    for _ in range(20):
        before = live.get(name)
        echoed = server_side_apply(kube_api, manifest, manager, dry_run=True)
        diff = _kubectl_diff(control_plane, manifest, manager, tmp)
        if live.get(name)["metadata"]["resourceVersion"] != before["metadata"][
                "resourceVersion"]:
            time.sleep(0.5)
            continue
        assert echoed["metadata"]["generation"] == before["metadata"]["generation"]
        assert _comparable(echoed) == _comparable(before)
        assert echoed["metadata"]["managedFields"] == before["metadata"]["managedFields"]
        assert diff.returncode == 0, f"kubectl diff found changes:\n{diff.stdout}{diff.stderr}"
        assert diff.stdout == ""
        return
    pytest.fail(f"{name} kept changing during every no-op check")


def spec_owners(obj: dict[str, Any]) -> dict[str, set[str]]:
    """Field manager -> the top-level spec fields it owns."""
    out: dict[str, set[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if spec:
            out.setdefault(entry["manager"], set()).update(
                k.removeprefix("f:") for k in spec if k.startswith("f:"))
    return out


def test_a_collection_from_git_progresses_then_is_healthy(live: Live, kube_api: Any) -> None:
    server_side_apply(kube_api, git_manifest(live), ARGO)
    obj = wait_for("the operator's first status", lambda: (
        (o := live.get(NAME)).get("status", {}).get("conditions") and o), timeout=30)
    # progressing: no snapshot yet, the bootstrap compaction has not run
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    status, message = kstatus(obj)
    assert status == IN_PROGRESS, message
    assert "NoSnapshot" in message or "NotReady" in message
    health = argocd_health(obj)
    assert health["status"] == "Progressing", health
    # ready
    live.make_ready(NAME)
    obj = live.get(NAME)
    assert kstatus(obj) == (CURRENT, "writers, readers, compactor and snapshot are ready")
    assert argocd_health(obj) == {
        "status": "Healthy", "message": "writers, readers, compactor and snapshot are ready"}


def test_reapplying_the_manifest_is_a_no_op_once_ready(
        live: Live, kube_api: Any, control_plane: Any, tmp_path: Path) -> None:
    assert_reapply_is_a_no_op(control_plane, kube_api, live, git_manifest(live), ARGO,
                              tmp_path)


def test_reapplying_is_a_no_op_after_a_compaction(
        live: Live, kube_api: Any, control_plane: Any, tmp_path: Path) -> None:
    before = live.status(NAME)["lastCompaction"]
    live.write(NAME, 20)
    after = live.compact(NAME, "gitops-1")["lastCompaction"]
    assert after != before and after["result"] == "Succeeded"
    assert after["recordsFolded"] == 20
    assert_reapply_is_a_no_op(control_plane, kube_api, live, git_manifest(live), ARGO,
                              tmp_path)
    # a real re-apply leaves the annotation another manager set (SSA owns per field)
    server_side_apply(kube_api, git_manifest(live), ARGO)
    assert live.get(NAME)["metadata"]["annotations"]["chromasnap.dev/compact-now"] == \
        "gitops-1"
    assert kstatus(live.get(NAME))[0] == CURRENT


def test_no_one_but_the_gitops_tool_owns_spec_fields(live: Live) -> None:
    obj = live.get(NAME)
    owners = spec_owners(obj)
    assert set(owners) == {ARGO}, owners
    assert owners[ARGO] == set(git_manifest(live)["spec"])
    managers = {m["manager"]: m for m in obj["metadata"]["managedFields"]}
    # the operator and the compactor write status only (and bookkeeping annotations)
    status_writers = [m for m, e in managers.items() if e.get("subresource") == "status"]
    assert status_writers, managers.keys()
    for m, e in managers.items():
        if m == ARGO:
            continue
        fields = set(e.get("fieldsV1") or {})
        assert fields <= {"f:status", "f:metadata"}, (m, fields)
        meta = set((e.get("fieldsV1") or {}).get("f:metadata") or {})
        assert meta <= {"f:annotations", "f:finalizers"}, (m, meta)


def test_a_spec_change_from_git_is_in_progress_until_observed(
        live: Live, kube_api: Any, control_plane: Any, tmp_path: Path) -> None:
    changed = git_manifest(live, collection={"hnsw": {"searchEf": 64}})
    echoed = server_side_apply(kube_api, changed, ARGO)
    # the object as the API server stored the change, before the operator acted on it
    assert echoed["metadata"]["generation"] == echoed["status"]["observedGeneration"] + 1
    status, message = kstatus(echoed)
    assert status == IN_PROGRESS and "latest observed generation" in message
    assert argocd_health(echoed)["status"] == "Progressing"
    obj = wait_for("the operator to observe the new generation", lambda: (
        (o := live.get(NAME))["status"].get("observedGeneration")
        == o["metadata"]["generation"] and kstatus(o)[0] == CURRENT and o), timeout=60)
    assert argocd_health(obj)["status"] == "Healthy"
    assert_reapply_is_a_no_op(control_plane, kube_api, live, changed, ARGO, tmp_path)


def test_a_broken_collection_is_degraded_then_recovers(
        live: Live, kube_api: Any, control_plane: Any, tmp_path: Path) -> None:
    broken = git_manifest(live, "broken", storage={"credentialsSecretRef": {
        "name": "not-there-yet", "accessKeyIdKey": "accessKey",
        "secretAccessKeyKey": "secretKey"}})
    server_side_apply(kube_api, broken, FLUX)
    live.colls.wait_condition(live.ns, "broken", "Ready", "False",
                              "CredentialsSecretNotFound", timeout=60)
    obj = live.get("broken")
    health = argocd_health(obj)
    assert health["status"] == "Degraded", health
    assert health["message"].startswith("CredentialsSecretNotFound: ")
    status, message = kstatus(obj)
    # kstatus has no "degraded": not Current, with the reason for Flux's timeout message
    assert status == IN_PROGRESS and "CredentialsSecretNotFound" in message
    assert_reapply_is_a_no_op(control_plane, kube_api, live, broken, FLUX, tmp_path)
    assert set(spec_owners(live.get("broken"))) == {FLUX}
    # fixed outside Git (the Secret comes from a secrets manager): progressing again
    create_secret(kube_api, live.ns, "not-there-yet",
                  {"accessKey": live.minio.access_key, "secretKey": live.minio.secret_key})

    def recovering() -> dict[str, Any] | None:
        o = live.get("broken")
        ready = next((c for c in o["status"]["conditions"] if c["type"] == "Ready"), {})
        return o if ready.get("reason") != "CredentialsSecretNotFound" else None

    obj = wait_for("the collection to get past the missing Secret", recovering, timeout=90)
    assert argocd_health(obj)["status"] == "Progressing", argocd_health(obj)
    assert kstatus(obj)[0] == IN_PROGRESS


def test_the_checks_see_a_spec_field_written_by_anyone_else(
        live: Live, kube_api: Any, control_plane: Any, tmp_path: Path) -> None:
    """What the no-op checks would catch if the operator wrote spec, shown with the scale
    subresource (an HPA, or `kubectl scale`): the writer owns the field, the GitOps
    tool's re-apply conflicts, and a diff shows it (hence: leave reader.replicas out of
    Git when an HPA scales readers; docs/gitops.md)."""
    from kubernetes.client.exceptions import ApiException

    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_scale(
        "chromasnap.dev", "v1alpha1", live.ns, "chromacollections", "broken",
        {"spec": {"replicas": 2}}, field_manager="kubectl-scale",
        _content_type="application/merge-patch+json")
    assert "reader" in spec_owners(live.get("broken"))["kubectl-scale"]
    broken = git_manifest(live, "broken", storage={"credentialsSecretRef": {
        "name": "not-there-yet", "accessKeyIdKey": "accessKey",
        "secretAccessKeyKey": "secretKey"}})
    with pytest.raises(ApiException) as conflict:
        server_side_apply(kube_api, broken, FLUX, dry_run=True)
    assert conflict.value.status == 409
    diff = _kubectl_diff(control_plane, broken, FLUX, tmp_path)
    assert diff.returncode > 1 and "conflict" in diff.stderr
    assert ".spec.reader.replicas" in diff.stderr
    diff = _kubectl_diff(control_plane, broken, FLUX, tmp_path, "--force-conflicts")
    assert diff.returncode == 1 and "replicas: 2" in diff.stdout, diff.stdout + diff.stderr
