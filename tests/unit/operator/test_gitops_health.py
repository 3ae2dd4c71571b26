"""GitOps, without a cluster: the Argo CD health script and kstatus on the statuses the
operator's own status logic produces, and the example manifests in ``examples/gitops/``.

The same rules run on live objects in ``tests/integration/operator/test_gitops.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from chromasnap.operator.checks import SPEC_PROBLEM_REASONS, Problem
from chromasnap.operator.conditions import operator_status
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.observed import CronJobState, DeploymentState, JobState, Observed
from chromasnap.resource import API_VERSION, KIND
from gitops_rules import CURRENT, HEALTH_LUA, IN_PROGRESS, ROOT, argocd_health, kstatus

EXAMPLES = ROOT / "examples" / "gitops"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SNAPSHOT = {"version": "0000000003-1a2b3c4d", "createdAt": "2026-05-01T11:59:00Z",
            "records": 40, "bytes": 123456}
SUCCEEDED = {"time": "2026-05-01T11:59:00Z", "result": "Succeeded", "reason": "Compacted",
             "identity": "docs-compactor-init-abcde"}
FAILED = {"time": "2026-05-01T11:59:30Z", "result": "Failed", "reason": "StorageError",
          "message": "PUT snapshots/...: 403 AccessDenied"}


def dep(name: str, ready: int, desired: int = 2, stalled: str | None = None,
        replicas: int | None = None) -> DeploymentState:
    return DeploymentState(name=name, desired=desired, replicas=desired if replicas is None
                           else replicas, ready=ready, updated=desired, available=ready,
                           generation=1, observed_generation=1, stalled=stalled)


def collection(obs: Observed, compactor_status: dict[str, Any] | None = None, *,
               problem: Problem | None = None, generation: int = 1, observed: int = 1,
               spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ChromaCollection whose status is exactly what the operator would write."""
    spec = spec or {"collection": {"name": "docs", "dimension": 8},
                    "storage": {"bucket": "vectors", "prefix": "collections/docs"}}
    st = dict(compactor_status or {})
    st.update(operator_status("docs", spec, st, obs, problem, observed, created=problem is None,
                              previous_conditions=[], now=NOW))
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "docs", "namespace": "search", "generation": generation},
            "spec": spec, "status": st}


CRON = CronJobState("docs-compactor", "*/5 * * * *", suspend=False)
READY = Observed(writer=dep("docs-writer", 2), reader=dep("docs-reader", 2), cronjob=CRON)


def states() -> dict[str, tuple[dict[str, Any], str, str]]:
    """name -> (object, expected Argo CD health, expected kstatus)."""
    return {
        "ready": (collection(READY, {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED,
                                     "pendingDeltas": 0}), "Healthy", CURRENT),
        "starting, no snapshot yet": (collection(Observed(
            writer=dep("docs-writer", 0), reader=dep("docs-reader", 0), cronjob=CRON,
            jobs=(JobState("docs-compactor-init", "compactor", "2026-05-01T11:59:50Z", 1,
                           False, False),))), "Progressing", IN_PROGRESS),
        "readers starting": (collection(
            Observed(writer=dep("docs-writer", 2), reader=dep("docs-reader", 1),
                     cronjob=CRON), {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED}),
            "Progressing", IN_PROGRESS),
        "spec change not yet observed": (collection(
            READY, {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED}, generation=2),
            "Progressing", IN_PROGRESS),
        "credentials Secret missing": (collection(
            Observed(), problem=Problem("CredentialsSecretNotFound",
                                        "Secret 's3' not found in namespace 'search'")),
            "Degraded", IN_PROGRESS),
        "last compaction failed": (collection(READY, {"snapshot": SNAPSHOT,
                                                      "lastCompaction": FAILED}),
                                   "Degraded", IN_PROGRESS),
        "compaction Job failed": (collection(Observed(
            writer=dep("docs-writer", 2), reader=dep("docs-reader", 2), cronjob=CRON,
            jobs=(JobState("docs-compactor-x", "compactor", "2026-05-01T11:59:40Z", 0, False,
                           True, "2026-05-01T11:59:59Z", "BackoffLimitExceeded"),)),
            {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED}), "Degraded", IN_PROGRESS),
        "rollout stuck": (collection(Observed(
            writer=dep("docs-writer", 1, stalled="ReplicaSet has timed out progressing"),
            reader=dep("docs-reader", 2), cronjob=CRON),
            {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED}), "Degraded", IN_PROGRESS),
        "readers scaled to zero": (collection(Observed(
            writer=dep("docs-writer", 2), reader=dep("docs-reader", 0, desired=0),
            cronjob=CRON), {"snapshot": SNAPSHOT, "lastCompaction": SUCCEEDED},
            spec={"collection": {"name": "docs", "dimension": 8},
                  "storage": {"bucket": "vectors", "prefix": "collections/docs"},
                  "reader": {"replicas": 0}}), "Suspended", IN_PROGRESS),
    }


@pytest.mark.parametrize("state", list(states()))
def test_argocd_health_and_kstatus_of_each_state(state: str) -> None:
    obj, health, k = states()[state]
    got = argocd_health(obj)
    assert got["status"] == health, (state, got, obj["status"]["conditions"][0])
    assert got["message"], state
    status, message = kstatus(obj)
    assert status == k, (state, message)


def test_health_messages_say_what_is_wrong() -> None:
    s = states()
    assert argocd_health(s["credentials Secret missing"][0])["message"].startswith(
        "CredentialsSecretNotFound: Secret 's3' not found")
    assert "StorageError" in argocd_health(s["last compaction failed"][0])["message"]
    assert "generation 2" in argocd_health(s["spec change not yet observed"][0])["message"]
    ready = argocd_health(s["ready"][0])
    assert ready == {"status": "Healthy",
                     "message": "writers, readers, compactor and snapshot are ready"}


def test_a_resource_without_status_is_progressing() -> None:
    obj = {"apiVersion": API_VERSION, "kind": KIND,
           "metadata": {"name": "docs", "generation": 1}, "spec": {}}
    assert argocd_health(obj) == {
        "status": "Progressing",
        "message": "Waiting for the chromasnap operator to report a status"}


def test_every_spec_problem_reason_is_degraded() -> None:
    # the Lua script lists them by hand; the operator's list is the source of truth
    for reason in sorted(SPEC_PROBLEM_REASONS):
        obj = collection(Observed(), problem=Problem(reason, "fix it"))
        assert argocd_health(obj)["status"] == "Degraded", reason


def test_status_carries_kstatus_fields() -> None:
    obj = states()["ready"][0]
    st = obj["status"]
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    # no Reconciling/Stalled conditions: kstatus decides by generation and Ready alone
    assert {c["type"] for c in st["conditions"]}.isdisjoint({"Reconciling", "Stalled"})


def test_kstatus_rules() -> None:
    base = {"kind": KIND, "metadata": {"generation": 2}}
    assert kstatus({**base, "metadata": {"deletionTimestamp": "x"}})[0] == "Terminating"
    assert kstatus({**base, "status": {"observedGeneration": 1}})[0] == IN_PROGRESS
    stalled = {"type": "Stalled", "status": "True", "message": "m"}
    assert kstatus({**base, "status": {"conditions": [stalled]}})[0] == "Failed"
    assert kstatus(base)[0] == CURRENT


# --- examples/gitops --------------------------------------------------------------------


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_examples_have_the_expected_kinds() -> None:
    found = {(d["apiVersion"], d["kind"], d["metadata"]["name"]) if "metadata" in d
             else (d["apiVersion"], d["kind"], p.name)
             for p in sorted(EXAMPLES.rglob("*.yaml")) for d in _docs(p)}
    assert found == {
        ("argoproj.io/v1alpha1", "Application", "search-collections"),
        ("v1", "ConfigMap", "argocd-cm"),
        ("source.toolkit.fluxcd.io/v1", "GitRepository", "search"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "search-collections"),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization", "kustomization.yaml"),
        (API_VERSION, KIND, "docs"),
    }


def test_the_argocd_application_syncs_the_collections_directory() -> None:
    (app,) = _docs(EXAMPLES / "argocd-application.yaml")
    spec = app["spec"]
    assert (ROOT / spec["source"]["path"] / "kustomization.yaml").is_file()
    assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]
    assert spec["destination"]["namespace"] == "search"


def test_the_flux_kustomization_checks_the_collection() -> None:
    repo, ks = _docs(EXAMPLES / "flux-kustomization.yaml")
    assert ks["spec"]["sourceRef"] == {"kind": repo["kind"], "name": repo["metadata"]["name"]}
    assert (ROOT / ks["spec"]["path"] / "kustomization.yaml").is_file()
    (check,) = ks["spec"]["healthChecks"]
    assert (check["apiVersion"], check["kind"], check["name"]) == (API_VERSION, KIND, "docs")


def test_the_kustomize_directory_holds_a_valid_collection() -> None:
    (kz,) = _docs(EXAMPLES / "collections" / "kustomization.yaml")
    for rel in kz["resources"]:
        for d in _docs(EXAMPLES / "collections" / rel):
            cc = ChromaCollection.from_body(d)  # the operator's own checks
            assert cc.name == "docs"
            assert cc.spec.storage.credentials_secret_ref is None  # no Secret in Git


def test_the_argocd_configmap_carries_the_health_script_verbatim() -> None:
    (cm,) = _docs(EXAMPLES / "argocd-cm-health.yaml")
    key = "resource.customizations.health.chromasnap.dev_ChromaCollection"
    assert cm["data"][key] == HEALTH_LUA.read_text()


HEALTH_DB_LUA = ROOT / "docs" / "argocd-health-database.lua"


def _database(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaDatabase",
            "metadata": {"name": "team-a", "generation": generation}, "status": status}


def _ready(status: str, reason: str, message: str = "m") -> list[dict[str, str]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


@pytest.mark.parametrize(("obj", "health"), [
    (_database(), "Progressing"),
    (_database(observedGeneration=1, conditions=_ready("True", "AllPodsReady")), "Progressing"),
    (_database(observedGeneration=2, conditions=_ready("False", "NoPodReady")), "Progressing"),
    (_database(observedGeneration=2, conditions=_ready("False", "InvalidSpec",
                                                       "spec.pool.cacheSize: bad")), "Degraded"),
    (_database(observedGeneration=2, conditions=_ready("False", "ScaledToZero")), "Suspended"),
    (_database(observedGeneration=2, conditions=_ready("True", "AllPodsReady"),
               failingCollections=0), "Healthy"),
    (_database(observedGeneration=2, conditions=_ready("True", "SomePodsReady"),
               failingCollections=3, failing=[{"id": "c1", "reason": "StorageError: x"}]),
     "Degraded"),
])
def test_argocd_health_of_a_database(obj: dict[str, Any], health: str) -> None:
    got = argocd_health(obj, HEALTH_DB_LUA.read_text())
    assert got["status"] == health, got
    if health == "Degraded" and obj["status"].get("failing"):
        assert got["message"] == "3 collection(s) fail to compact (e.g. c1: StorageError: x)"


def test_the_argocd_configmap_carries_the_database_health_script_verbatim() -> None:
    (cm,) = _docs(EXAMPLES / "argocd-cm-health.yaml")
    key = "resource.customizations.health.chromasnap.dev_ChromaDatabase"
    assert cm["data"][key] == HEALTH_DB_LUA.read_text()
