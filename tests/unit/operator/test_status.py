"""Unit tests of the operator's pure logic: schedule checks, drift, conditions, the
compactor's status patch, the purge Job and the ``operator``/``purge`` command lines.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chromasnap.cli import main as cli
from chromasnap.compactor.compaction import CompactionResult
from chromasnap.compactor.statusreport import compaction_patch, parse_resource, purged_condition
from chromasnap.operator import specs
from chromasnap.operator import status as opstatus
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.status import (
    CronJobState,
    DeploymentState,
    JobState,
    Observed,
    Problem,
)
from chromasnap.storage.store import open_store

NS = "team-a"
UID = "0b5c3a52-0d7e-4c1b-9a57-6c1f1f0e2a10"
SECRET_VALUE = "s3cr3t/value-that-must-not-leak"  # noqa: S105 - a decoy
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "collection": {"name": "docs", "dimension": 8},
        "storage": {"bucket": "vectors", "prefix": "collections/docs",
                    "credentialsSecretRef": {"name": "s3"}},
    }
    base.update(spec)
    return {"apiVersion": "chromasnap.dev/v1alpha1", "kind": "ChromaCollection",
            "metadata": {"name": "docs", "namespace": NS, "uid": UID, "generation": 3},
            "spec": base}


@pytest.fixture
def cc() -> ChromaCollection:
    return ChromaCollection.from_body(body())


@pytest.fixture
def settings() -> specs.OperatorSettings:
    return specs.OperatorSettings(default_image="registry.example/chromasnap:1.0.0")


# --- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "*/5 * * * *", "0 3 * * *", "0 3 * * MON-FRI", "0 0 1,15 * *", "5/10 * * * *",
    "0 0 * * ?", "0 12 * JAN,jul sun", "59 23 31 12 6", "@hourly", "@daily", " */1 * * * * ",
])
def test_schedules_kubernetes_accepts(line: str) -> None:
    opstatus.validate_schedule(line)


@pytest.mark.parametrize(("line", "message"), [
    ("61 * * * *", "minute field: '61' is out of range 0-59"),
    ("* 24 * * *", "hour field: '24' is out of range 0-23"),
    ("* * 0 * *", "day of month field: '0' is out of range 1-31"),
    ("0 0 1 13 *", "month field: '13' is out of range 1-12"),
    ("0 0 * * 7", "day of week field: '7' is out of range 0-6"),
    ("*/0 * * * *", "step in '*/0' must be a positive number"),
    ("5-1 * * * *", "'5-1' starts after it ends"),
    ("1-2-3 * * * *", "more than one '-'"),
    ("*/2/3 * * * *", "more than one '/'"),
    ("0 0 * * FUNDAY", "'FUNDAY' is not a number or a name"),
    ("1,,2 * * * *", "empty list item"),
    ("* * * *", "has 4 fields"),
    ("@every 5m", "not a supported macro"),
    ("CRON_TZ=UTC 0 * * * *", "time zones"),
])
def test_schedules_kubernetes_refuses(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        opstatus.validate_schedule(line)


def test_check_spec_names_the_field_and_the_fix() -> None:
    cc = ChromaCollection.from_body(body(compactor={"schedule": "61 * * * *"}))
    problem = opstatus.check_spec(cc)
    assert problem is not None and problem.reason == "InvalidSchedule"
    assert problem.message.startswith("spec.compactor.schedule '61 * * * *':")
    assert "e.g. '*/5 * * * *'" in problem.message


# --- secrets ------------------------------------------------------------------------------


def test_missing_secret_says_what_to_create(cc: ChromaCollection) -> None:
    p = opstatus.secret_problem(cc, None)
    assert p is not None and p.reason == "CredentialsSecretNotFound"
    assert "Secret 's3' in namespace 'team-a'" in p.message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in p.message


def test_missing_key_lists_key_names_never_values(cc: ChromaCollection) -> None:
    secret = {"data": {"AWS_ACCESS_KEY_ID": "aWQ=", "password": SECRET_VALUE}}
    p = opstatus.secret_problem(cc, secret)
    assert p is not None and p.reason == "CredentialsSecretKeyMissing"
    assert "no key AWS_SECRET_ACCESS_KEY" in p.message
    assert "(AWS_ACCESS_KEY_ID, password)" in p.message
    assert SECRET_VALUE not in p.message


def test_complete_secret_and_workload_identity_are_fine(cc: ChromaCollection) -> None:
    assert opstatus.secret_problem(cc, {"data": {"AWS_ACCESS_KEY_ID": "x",
                                                 "AWS_SECRET_ACCESS_KEY": "y"}}) is None
    no_ref = body()
    del no_ref["spec"]["storage"]["credentialsSecretRef"]
    assert opstatus.secret_problem(ChromaCollection.from_body(no_ref), None) is None


# --- on-demand runs and purge -------------------------------------------------------------


def test_run_ids_are_deterministic_per_request(cc: ChromaCollection,
                                               settings: specs.OperatorSettings) -> None:
    a = opstatus.compaction_run_id(UID, "2026-01-01T00:00:00Z")
    assert a == opstatus.compaction_run_id(UID, "2026-01-01T00:00:00Z")
    assert a != opstatus.compaction_run_id(UID, "2026-01-01T00:00:01Z")
    assert a != opstatus.compaction_run_id("another-uid", "2026-01-01T00:00:00Z")
    assert re.fullmatch(r"[a-z0-9]{10}", a)
    job = specs.compaction_job(cc, settings, a)
    assert job["metadata"]["name"] == f"docs-compactor-{a}"
    assert len(job["metadata"]["name"]) <= 63


def test_purge_job_outlives_the_collection_and_reports_back(
    cc: ChromaCollection, settings: specs.OperatorSettings
) -> None:
    job = opstatus.purge_job(cc, settings)
    meta = job["metadata"]
    assert meta["name"] == "docs-purge"
    assert "ownerReferences" not in meta
    assert meta["labels"][specs.LABEL_COMPONENT] == "purge"
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["chromasnap", "purge", "--yes"]
    assert "envFrom" not in c  # the ConfigMap may be gone already
    env = {e["name"]: e for e in c["env"]}
    assert env["CHROMASNAP_BUCKET_URL"]["value"] == "s3://vectors/collections/docs"
    assert env["CHROMASNAP_STATUS_RESOURCE"]["value"] == "team-a/docs"
    assert "CHROMASNAP_LEASE_NAME" not in env
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert pod["serviceAccountName"] == "docs-chromasnap"
    assert pod["automountServiceAccountToken"] is True  # it patches the status
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert SECRET_VALUE not in json.dumps(job)


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("c/docs", "c/docs", True), ("c", "c/docs", True), ("c/docs", "c", True),
    ("c/docs", "c/docs2", False), ("c/doc", "c/docs", False), ("a", "b", False),
])
def test_prefix_overlap(a: str, b: str, overlap: bool) -> None:
    assert opstatus.prefixes_overlap(a, b) is overlap


# --- drift ---------------------------------------------------------------------------------


@pytest.fixture
def deployment(cc: ChromaCollection, settings: specs.OperatorSettings) -> dict[str, Any]:
    return specs.writer_deployment(cc, settings)


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
    assert opstatus.drift(deployment, served(deployment)) == []


def test_changed_fields_the_operator_sets_are_drift(deployment: dict[str, Any]) -> None:
    live = served(deployment)
    live["spec"]["replicas"] = 7
    live["metadata"]["labels"].pop(specs.LABEL_MANAGED_BY)
    c = live["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "CHROMASNAP_FLUSH_MAX_DELAY_MS"]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    paths = opstatus.drift(deployment, live)
    assert "spec.replicas" in paths
    assert f"metadata.labels.{specs.LABEL_MANAGED_BY}" in paths
    assert any("env[name=CHROMASNAP_FLUSH_MAX_DELAY_MS]" in p for p in paths)
    assert any(p.endswith("securityContext.readOnlyRootFilesystem") for p in paths)


def test_an_extra_rule_in_the_role_is_drift(cc: ChromaCollection) -> None:
    role = specs.role(cc)
    live = copy.deepcopy(role)
    live["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    assert opstatus.drift(role, live) == ["rules"]


def test_quantities_compare_by_value_and_zero_values_may_be_omitted(cc: ChromaCollection) -> None:
    reader = specs.reader_deployment(ChromaCollection.from_body(body(
        reader={"cacheSize": "1.5Gi", "resources": {"limits": {"cpu": "1.5"}}})),
        specs.OperatorSettings())
    live = copy.deepcopy(reader)
    pod = live["spec"]["template"]["spec"]
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    cache["emptyDir"]["sizeLimit"] = "1536Mi"
    pod["containers"][0]["resources"]["limits"]["cpu"] = "1500m"
    assert opstatus.drift(reader, live) == []
    svc = specs.readers_headless_service(cc)
    live_svc = copy.deepcopy(svc)
    del live_svc["spec"]["publishNotReadyAddresses"]  # false is omitted by the server
    assert opstatus.drift(svc, live_svc) == []


def test_a_foreign_owner_reference_is_not_drift_but_a_missing_one_is(cc: ChromaCollection) -> None:
    cm = specs.config_map(cc)
    live = copy.deepcopy(cm)
    live["metadata"]["ownerReferences"].append({"apiVersion": "v1", "kind": "X", "name": "x",
                                                "uid": "other"})
    assert opstatus.drift(cm, live) == []
    live["metadata"]["ownerReferences"] = []
    assert opstatus.drift(cm, live) == [f"metadata.ownerReferences[uid={UID}]"]


# --- status ---------------------------------------------------------------------------------


def dep(name: str, desired: int = 2, ready: int = 2, **kw: Any) -> DeploymentState:
    return DeploymentState(name=name, desired=desired, replicas=kw.pop("replicas", desired),
                           ready=ready, updated=kw.pop("updated", desired),
                           available=ready, generation=kw.pop("generation", 1),
                           observed_generation=kw.pop("observed_generation", 1), **kw)


HEALTHY = Observed(writer=dep("docs-writer"), reader=dep("docs-reader"),
                   cronjob=CronJobState("docs-compactor", "*/5 * * * *", False))
COMPACTED = {
    "snapshot": {"version": "0000000002-ab", "records": 40, "bytes": 1234,
                 "createdAt": "2026-01-02T03:00:00Z"},
    "pendingDeltas": 0,
    "lastCompaction": {"time": "2026-01-02T03:00:00Z", "result": "Succeeded",
                       "reason": "Compacted", "message": "folded 1 deltas"},
}


def status_of(obs: Observed, st: dict[str, Any], problem: Problem | None = None,
              created: bool = True, previous: list[dict[str, Any]] | None = None,
              spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return opstatus.operator_status("docs", spec or {}, st, obs, problem, 3, created,
                                    previous or [], NOW)


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_everything_healthy_is_ready() -> None:
    st = status_of(HEALTHY, COMPACTED)
    c = conds(st)
    assert [x["type"] for x in st["conditions"]] == [
        "Ready", "WritersReady", "ReadersReady", "CompactorHealthy", "SnapshotAvailable"]
    assert {k: v["status"] for k, v in c.items()} == dict.fromkeys(c, "True")
    assert c["Ready"]["reason"] == "AllComponentsReady"
    assert c["CompactorHealthy"]["reason"] == "Compacted"
    assert "snapshot 0000000002-ab, 40 records, 1234 bytes" in c["SnapshotAvailable"]["message"]
    assert all(x["observedGeneration"] == 3 for x in st["conditions"])
    assert st["observedGeneration"] == 3
    assert st["readers"] == {"replicas": 2, "ready": 2, "selector": specs.reader_selector("docs")}
    assert st["writers"] == {"replicas": 2, "ready": 2}
    for x in st["conditions"]:
        assert re.fullmatch(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", x["reason"])


def test_a_new_collection_waits_for_its_first_snapshot() -> None:
    obs = Observed(writer=dep("docs-writer"), reader=dep("docs-reader", ready=0),
                   cronjob=HEALTHY.cronjob)
    c = conds(status_of(obs, {}))
    assert (c["SnapshotAvailable"]["status"], c["SnapshotAvailable"]["reason"]) == (
        "False", "NoSnapshot")
    assert "kubectl annotate ccol/docs chromasnap.dev/compact-now=" in \
        c["SnapshotAvailable"]["message"]
    assert c["ReadersReady"]["reason"] == "WaitingForSnapshot"
    assert (c["CompactorHealthy"]["status"], c["CompactorHealthy"]["reason"]) == (
        "Unknown", "AwaitingFirstRun")
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ComponentsNotReady"


def test_a_spec_problem_is_the_ready_reason_and_nothing_is_claimed() -> None:
    problem = Problem("InvalidSchedule", "spec.compactor.schedule '61 * * * *': ...")
    c = conds(status_of(Observed(), {}, problem=problem, created=False))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "InvalidSchedule")
    assert c["Ready"]["message"] == problem.message
    assert c["WritersReady"]["reason"] == "NotCreated"
    assert c["CompactorHealthy"]["reason"] == "NotCreated"


def test_failed_runs_and_failed_jobs_make_the_compactor_unhealthy() -> None:
    failed = copy.deepcopy(COMPACTED)
    failed["lastCompaction"] = {"time": "2026-01-02T03:00:00Z", "result": "Failed",
                                "reason": "StorageError", "message": "AccessDenied"}
    c = conds(status_of(HEALTHY, failed))
    assert (c["CompactorHealthy"]["status"], c["CompactorHealthy"]["reason"]) == (
        "False", "StorageError")
    assert "AccessDenied" in c["CompactorHealthy"]["message"]
    assert c["Ready"]["reason"] == "CompactorUnhealthy"
    # a Job that failed after the last report (killed, deadline, no permission to report)
    job = JobState("docs-compactor-123", "compactor", "2026-01-02T03:10:00Z", 0, False, True,
                   "2026-01-02T03:11:00Z", "DeadlineExceeded", "Job was active longer")
    obs = Observed(HEALTHY.writer, HEALTHY.reader, HEALTHY.cronjob, (job,))
    c = conds(status_of(obs, COMPACTED))
    healthy = c["CompactorHealthy"]
    assert (healthy["status"], healthy["reason"]) == ("False", "JobFailed")
    assert "docs-compactor-123 failed (DeadlineExceeded)" in c["CompactorHealthy"]["message"]
    # an older failure, reported-over by a later successful run, does not count
    old = JobState("docs-compactor-1", "compactor", "2026-01-02T02:00:00Z", 0, False, True,
                   "2026-01-02T02:01:00Z", "BackoffLimitExceeded", "")
    obs = Observed(HEALTHY.writer, HEALTHY.reader, HEALTHY.cronjob, (old,))
    assert conds(status_of(obs, COMPACTED))["CompactorHealthy"]["status"] == "True"


def test_skipped_runs_are_healthy_and_suspension_is_said() -> None:
    skipped = copy.deepcopy(COMPACTED)
    skipped["lastCompaction"] = {"time": "t", "result": "Skipped", "reason": "LockHeld",
                                 "message": "another compactor holds the lock"}
    obs = Observed(HEALTHY.writer, HEALTHY.reader,
                   CronJobState("docs-compactor", "*/5 * * * *", True))
    c = conds(status_of(obs, skipped))
    healthy = c["CompactorHealthy"]
    assert (healthy["status"], healthy["reason"]) == ("True", "LockHeld")
    assert "suspended" in c["CompactorHealthy"]["message"]


def test_workload_conditions_follow_the_deployments() -> None:
    obs = Observed(writer=dep("docs-writer", ready=1), reader=dep("docs-reader", desired=0,
                                                                    ready=0),
                   cronjob=HEALTHY.cronjob)
    c = conds(status_of(obs, COMPACTED))
    assert (c["WritersReady"]["status"], c["WritersReady"]["reason"]) == (
        "False", "ReplicasNotReady")
    assert c["WritersReady"]["message"].startswith("1/2 writers ready")
    assert c["ReadersReady"]["reason"] == "ScaledToZero"
    rolling = Observed(writer=dep("docs-writer", ready=3, updated=1, generation=2,
                                  observed_generation=2), reader=dep("docs-reader"),
                       cronjob=HEALTHY.cronjob)
    c = conds(status_of(rolling, COMPACTED))
    assert (c["WritersReady"]["status"], c["WritersReady"]["reason"]) == ("True", "RollingUpdate")
    stalled = Observed(writer=dep("docs-writer", ready=1, stalled="ReplicaSet timed out"),
                       reader=dep("docs-reader"), cronjob=HEALTHY.cronjob)
    c = conds(status_of(stalled, COMPACTED))
    assert c["WritersReady"]["reason"] == "ProgressDeadlineExceeded"
    gone = Observed(reader=dep("docs-reader"), cronjob=HEALTHY.cronjob)
    assert conds(status_of(gone, COMPACTED))["WritersReady"]["reason"] == "DeploymentMissing"


def test_transition_times_move_only_when_the_status_changes() -> None:
    first = status_of(HEALTHY, COMPACTED)
    earlier = [dict(c, lastTransitionTime="2025-12-31T00:00:00Z") for c in first["conditions"]]
    earlier.append({"type": "Purged", "status": "True", "reason": "PrefixDeleted",
                    "message": "m", "lastTransitionTime": "2025-12-31T00:00:00Z"})
    again = status_of(HEALTHY, COMPACTED, previous=earlier)
    assert all(c["lastTransitionTime"] == "2025-12-31T00:00:00Z" for c in again["conditions"])
    assert again["conditions"][-1]["type"] == "Purged"  # other writers' conditions are kept
    worse = Observed(writer=dep("docs-writer", ready=0), reader=HEALTHY.reader,
                     cronjob=HEALTHY.cronjob)
    changed = conds(status_of(worse, COMPACTED, previous=earlier))
    assert changed["WritersReady"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert changed["ReadersReady"]["lastTransitionTime"] == "2025-12-31T00:00:00Z"


def test_events_for_readiness_degradation_and_spec_problems_only() -> None:
    healthy = status_of(HEALTHY, COMPACTED)["conditions"]
    starting = status_of(Observed(), {})["conditions"]
    assert opstatus.transitions([], starting) == []  # starting up is not news
    became_ready = opstatus.transitions(starting, healthy)
    assert [(t.type, t.reason) for t in became_ready] == [("Normal", "Ready")]
    worse = status_of(Observed(writer=dep("docs-writer", ready=0), reader=HEALTHY.reader,
                               cronjob=HEALTHY.cronjob), COMPACTED)["conditions"]
    got = {(t.type, t.reason) for t in opstatus.transitions(healthy, worse)}
    assert got == {("Warning", "NotReady"), ("Warning", "ReplicasNotReady")}
    bad = status_of(Observed(), {}, problem=Problem("InvalidSpec", "spec.x: bad"))["conditions"]
    assert [(t.type, t.reason) for t in opstatus.transitions([], bad)] == [
        ("Warning", "InvalidSpec")]
    assert opstatus.transitions(healthy, healthy) == []


# --- the compactor's report ------------------------------------------------------------------


def result(**kw: Any) -> CompactionResult:
    base: dict[str, Any] = dict(result="succeeded", reason="Compacted", message="folded 2 deltas",
                                version="0000000003-cd", record_count=50, snapshot_bytes=999,
                                deltas_folded=2, records_folded=10, pending_deltas=0,
                                steps={"lock": 0.01, "list_deltas": 0.02},
                                duration_seconds=1.23456, started_at=1767323045.0)
    base.update(kw)
    return CompactionResult(**base)


def test_a_published_snapshot_is_reported_capitalised() -> None:
    patch = compaction_patch(result(), identity="docs-compactor-x", now=1767323046.0)
    st = patch["status"]
    assert st["lastCompaction"] == {
        "time": "2026-01-02T03:04:06Z", "result": "Succeeded", "reason": "Compacted",
        "message": "folded 2 deltas", "durationSeconds": 1.235, "deltasFolded": 2,
        "recordsFolded": 10, "identity": "docs-compactor-x", "snapshotVersion": "0000000003-cd"}
    assert st["snapshot"] == {"version": "0000000003-cd", "records": 50, "bytes": 999,
                              "createdAt": "2026-01-02T03:04:06Z"}
    assert st["pendingDeltas"] == 0


def test_a_skip_keeps_the_known_creation_time_and_clears_the_run_version() -> None:
    skip = result(result="skipped", reason="NothingToDo", deltas_folded=0, records_folded=0)
    current = {"snapshot": {"version": "0000000003-cd", "createdAt": "2026-01-01T00:00:00Z"}}
    st = compaction_patch(skip, current, identity="p", now=1.0)["status"]
    assert st["lastCompaction"]["result"] == "Skipped"
    assert st["lastCompaction"]["snapshotVersion"] is None  # merge patch: removes the key
    assert "createdAt" not in st["snapshot"]  # kept as it is
    other = {"snapshot": {"version": "0000000002-ab", "createdAt": "2026-01-01T00:00:00Z"}}
    st = compaction_patch(skip, other, identity="p", now=1.0)["status"]
    assert st["snapshot"]["createdAt"] is None  # unknown for this version: dropped


def test_a_failure_before_listing_reports_no_snapshot_or_pending_count() -> None:
    failed = result(result="failed", reason="StorageError", message="connection refused",
                    version=None, record_count=None, snapshot_bytes=None, steps={"lock": 0.1})
    st = compaction_patch(failed, identity="p", now=1.0)["status"]
    assert st["lastCompaction"]["result"] == "Failed"
    assert "snapshot" not in st and "pendingDeltas" not in st


def test_report_fits_the_crd_schema_enum() -> None:
    for r in ("succeeded", "skipped", "failed"):
        got = compaction_patch(result(result=r), identity="p", now=1.0)
        assert got["status"]["lastCompaction"]["result"] in ("Succeeded", "Skipped", "Failed")
    with pytest.raises(ValueError, match="<namespace>/<name>"):
        parse_resource("docs")
    assert parse_resource("team-a/docs") == ("team-a", "docs")
    cond = purged_condition("s3://b/p", 12, now=0.0)
    assert (cond["type"], cond["status"], cond["reason"]) == ("Purged", "True", "PrefixDeleted")


# --- command lines ---------------------------------------------------------------------------


def test_operator_flags_are_what_the_chart_passes() -> None:
    p = cli.build_parser()
    a = p.parse_args(["operator", "--standalone", "--liveness=http://0.0.0.0:8080/healthz",
                      "--all-namespaces"])
    assert (a.standalone, a.all_namespaces, a.namespace) == (True, True, None)
    a = p.parse_args(["operator", "--namespace=a", "--namespace", "b"])
    assert a.namespace == ["a", "b"] and not a.standalone and a.liveness is None
    with pytest.raises(SystemExit):
        p.parse_args(["operator", "--all-namespaces", "--namespace=a"])


def test_purge_empties_a_root_and_needs_yes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = (tmp_path / "bucket" / "coll").as_uri()
    neighbour = (tmp_path / "bucket" / "coll2").as_uri()
    store = open_store(root)
    for key in ("pointer.json", "deltas/1-a.arrow", "snapshots/v1/manifest.json"):
        store.put(key, b"x")
    open_store(neighbour).put("pointer.json", b"keep")
    assert cli.main(["purge", root]) == 2
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["purge", root, "--yes", "--status-resource", ""]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "url": root, "deleted": 3}
    assert list(store.list("")) == []
    assert [o.key for o in open_store(neighbour).list("")] == ["pointer.json"]


def test_rest_paths_of_the_kinds_the_operator_touches(cc: ChromaCollection,
                                                      settings: specs.OperatorSettings) -> None:
    from chromasnap.operator.kubeapi import object_path, path

    got = {m["kind"]: object_path(m) for m in specs.desired_children(cc, settings)}
    assert got["ConfigMap"] == "/api/v1/namespaces/team-a/configmaps/docs-config"
    assert got["Deployment"] == "/apis/apps/v1/namespaces/team-a/deployments/docs-reader"
    assert got["Role"] == \
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/docs-chromasnap"
    assert got["Lease"] == "/apis/coordination.k8s.io/v1/namespaces/team-a/leases/docs-compactor"
    assert path("chromasnap.dev/v1alpha1", "ChromaCollection", "team-a", "docs", "status") == \
        "/apis/chromasnap.dev/v1alpha1/namespaces/team-a/chromacollections/docs/status"
    assert path("v1", "Event", "team-a") == "/api/v1/namespaces/team-a/events"
