"""Unit tests of :mod:`chromasnap.operator.conditions` (status, conditions, Events), and
of the compactor's status patch the conditions are read from.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from chromasnap.compactor.result import CompactionResult
from chromasnap.compactor.statusreport import compaction_patch, parse_resource, purged_condition
from chromasnap.operator import conditions
from chromasnap.operator.checks import Problem
from chromasnap.operator.observed import CronJobState, DeploymentState, JobState, Observed
from chromasnap.operator.specs import naming

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


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
    return conditions.operator_status("docs", spec or {}, st, obs, problem, 3, created,
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
    assert st["readers"] == {"replicas": 2, "ready": 2, "selector": naming.reader_selector("docs")}
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
    assert conditions.transitions([], starting) == []  # starting up is not news
    became_ready = conditions.transitions(starting, healthy)
    assert [(t.type, t.reason) for t in became_ready] == [("Normal", "Ready")]
    worse = status_of(Observed(writer=dep("docs-writer", ready=0), reader=HEALTHY.reader,
                               cronjob=HEALTHY.cronjob), COMPACTED)["conditions"]
    got = {(t.type, t.reason) for t in conditions.transitions(healthy, worse)}
    assert got == {("Warning", "NotReady"), ("Warning", "ReplicasNotReady")}
    bad = status_of(Observed(), {}, problem=Problem("InvalidSpec", "spec.x: bad"))["conditions"]
    assert [(t.type, t.reason) for t in conditions.transitions([], bad)] == [
        ("Warning", "InvalidSpec")]
    assert conditions.transitions(healthy, healthy) == []


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
