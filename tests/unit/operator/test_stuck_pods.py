"""Why a collection is stuck: pods parsed into :class:`PodState` (the kopf index keeps only
that), and the conditions that say so (:mod:`chromasnap.operator.conditions`, pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chromasnap.operator import conditions
from chromasnap.operator.controller.cache import INDEXES, ClusterCache
from chromasnap.operator.observed import (
    MAX_POD_MESSAGE,
    CronJobState,
    DeploymentState,
    Observed,
    PodState,
)
from chromasnap.operator.specs import naming

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SCHEDULER = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
             "available: 1 No preemption victims found for incoming pod.")


def pod(name: str = "docs-compactor-bootstrap-x1", component: str = "compactor",
        phase: str = "Pending", conditions_: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None, init: list[dict[str, Any]] | None = None,
        **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns",
                     "labels": naming.labels("docs", component), **meta},
        "status": {"phase": phase, "conditions": conditions_ or [],
                   "containerStatuses": containers or [],
                   **({"initContainerStatuses": init} if init else {})},
    }


def unschedulable(message: str = SCHEDULER) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": message}]


def waiting(reason: str, message: str = "", name: str = "compactor") -> list[dict[str, Any]]:
    return [{"name": name, "ready": False,
             "state": {"waiting": {"reason": reason, "message": message}}}]


# --- parsing --------------------------------------------------------------------------------


def test_an_unschedulable_pod_keeps_the_schedulers_message() -> None:
    p = PodState.from_body(pod(conditions_=unschedulable()))
    assert p == PodState("docs-compactor-bootstrap-x1", "compactor", "Unschedulable", SCHEDULER)


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                                    "CreateContainerConfigError"])
def test_stuck_container_reasons_are_kept_with_their_message(reason: str) -> None:
    p = PodState.from_body(pod(component="writer", phase="Pending",
                               containers=waiting(reason, "Back-off pulling image \"x:1\"",
                                                  name="writer")))
    assert (p.component, p.stuck) == ("writer", reason)
    assert p.message == f"container writer: {reason}: Back-off pulling image \"x:1\""


def test_an_init_containers_stuck_reason_counts() -> None:
    p = PodState.from_body(pod(init=waiting("CreateContainerConfigError",
                                            'secret "s3" not found', name="init")))
    assert p.stuck == "CreateContainerConfigError" and 'secret "s3" not found' in p.message


@pytest.mark.parametrize("body", [
    pod(phase="Running", conditions_=[{"type": "PodScheduled", "status": "True"}],
        containers=[{"name": "c", "state": {"running": {}}}]),
    # still being scheduled, or starting: not stuck (yet)
    pod(conditions_=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]),
    pod(containers=waiting("ContainerCreating")),
    pod(containers=waiting("CrashLoopBackOff")),
    # gone or going: never stuck
    pod(phase="Failed", conditions_=unschedulable()),
    pod(phase="Succeeded", containers=waiting("ErrImagePull")),
    pod(conditions_=unschedulable(), deletionTimestamp="2026-01-02T03:04:05Z"),
], ids=["running", "gated", "creating", "crashloop", "failed", "succeeded", "deleting"])
def test_pods_that_are_not_stuck(body: dict[str, Any]) -> None:
    p = PodState.from_body(body)
    assert (p.component, p.stuck, p.message) == ("compactor", "", "")


def test_long_messages_are_clipped_to_one_line() -> None:
    p = PodState.from_body(pod(conditions_=unschedulable("0/900 nodes:\n" + "x " * 2000)))
    assert len(p.message) == MAX_POD_MESSAGE and "\n" not in p.message
    assert p.message.endswith("…")


def test_the_cache_hands_the_pods_index_to_observed() -> None:
    assert "pods" in INDEXES
    stuck = PodState("docs-writer-1", "writer", "ErrImagePull", "m")
    fine = PodState("docs-reader-1", "reader")
    cache = ClusterCache({"pods": {("ns", "docs"): [stuck, fine]}})
    obs = cache.observe(("ns", "docs"))
    assert obs.pods == (stuck, fine)
    assert obs.stuck("writer") == (stuck,) and obs.stuck("reader") == ()
    assert ClusterCache({}).observe(("ns", "docs")).pods == ()


# --- conditions -----------------------------------------------------------------------------


def dep(name: str, desired: int = 2, ready: int = 2, **kw: Any) -> DeploymentState:
    return DeploymentState(name=name, desired=desired, replicas=desired, ready=ready,
                           updated=kw.pop("updated", desired), available=ready, generation=1,
                           observed_generation=1, **kw)


CRON = CronJobState("docs-compactor", "*/5 * * * *", False)
COMPACTED = {
    "snapshot": {"version": "0000000002-ab"},
    "lastCompaction": {"time": "2026-01-02T03:00:00Z", "result": "Succeeded",
                       "reason": "Compacted"},
}


def conds(obs: Observed, st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = conditions.operator_status("docs", {}, st, obs, None, 1, True, [], NOW)
    return {c["type"]: c for c in out["conditions"]}


def test_an_unschedulable_first_compaction_says_why_there_is_no_snapshot() -> None:
    stuck = PodState.from_body(pod(conditions_=unschedulable()))
    obs = Observed(writer=dep("docs-writer"), reader=dep("docs-reader", ready=0), cronjob=CRON,
                   pods=(stuck, PodState("docs-writer-1", "writer")))
    c = conds(obs, {})
    comp = c["CompactorHealthy"]
    assert (comp["status"], comp["reason"]) == ("False", "CompactionUnschedulable")
    assert comp["message"] == (f"a compaction Job's pod {stuck.name} cannot be scheduled: "
                               f"{SCHEDULER}")
    snap = c["SnapshotAvailable"]
    assert (snap["status"], snap["reason"]) == ("False", "NoSnapshot")
    assert "first compaction cannot run (CompactionUnschedulable, see CompactorHealthy)" in \
        snap["message"]
    readers = c["ReadersReady"]
    assert readers["reason"] == "WaitingForSnapshot"
    assert "no compaction can run (CompactionUnschedulable, see CompactorHealthy)" in \
        readers["message"]
    assert c["WritersReady"]["status"] == "True"
    ready = c["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ComponentsNotReady")
    assert "Insufficient cpu" in ready["message"] and len(ready["message"]) <= 1024


@pytest.mark.parametrize(("waiting_reason", "reason"), [
    ("ImagePullBackOff", "CompactionImagePullFailed"),
    ("ErrImagePull", "CompactionImagePullFailed"),
    ("InvalidImageName", "CompactionImagePullFailed"),
    ("CreateContainerConfigError", "CompactionContainerConfigError"),
])
def test_a_compaction_pod_that_cannot_start(waiting_reason: str, reason: str) -> None:
    stuck = PodState.from_body(pod(containers=waiting(waiting_reason, "details")))
    obs = Observed(writer=dep("docs-writer"), reader=dep("docs-reader"), cronjob=CRON,
                   pods=(stuck,))
    comp = conds(obs, COMPACTED)["CompactorHealthy"]
    # news about now beats the last run's success
    assert (comp["status"], comp["reason"]) == ("False", reason)
    assert f"cannot start: container compactor: {waiting_reason}: details" in comp["message"]


def test_healthy_or_other_pods_change_nothing() -> None:
    obs = Observed(writer=dep("docs-writer"), reader=dep("docs-reader"), cronjob=CRON,
                   pods=(PodState("docs-compactor-1", "compactor"),
                         PodState("docs-purge-1", "purge", "Unschedulable", "no"),
                         PodState("docs-writer-1", "writer")))
    c = conds(obs, COMPACTED)
    assert {k: v["status"] for k, v in c.items()} == dict.fromkeys(c, "True")
    assert c["CompactorHealthy"]["reason"] == "Compacted"
    # no snapshot and nothing stuck: the usual NoSnapshot advice
    c = conds(Observed(writer=dep("docs-writer"), reader=dep("docs-reader", ready=0),
                       cronjob=CRON), {})
    assert "the first compaction creates one" in c["SnapshotAvailable"]["message"]
    assert "no compaction can run" not in c["ReadersReady"]["message"]


@pytest.mark.parametrize(("ctype", "component", "stuck", "reason"), [
    ("WritersReady", "writer", "Unschedulable", "PodsUnschedulable"),
    ("WritersReady", "writer", "ImagePullBackOff", "ImagePullFailed"),
    ("ReadersReady", "reader", "Unschedulable", "PodsUnschedulable"),
    ("ReadersReady", "reader", "ErrImagePull", "ImagePullFailed"),
    ("ReadersReady", "reader", "CreateContainerConfigError", "ContainerConfigError"),
])
def test_stuck_writer_or_reader_pods(ctype: str, component: str, stuck: str,
                                     reason: str) -> None:
    pods = (PodState(f"docs-{component}-b", component, stuck, "msg B"),
            PodState(f"docs-{component}-a", component, stuck, "msg A"))
    obs = Observed(writer=dep("docs-writer", ready=0 if component == "writer" else 2),
                   reader=dep("docs-reader", ready=0 if component == "reader" else 2),
                   cronjob=CRON, pods=pods)
    # readers stuck take precedence over waiting for the snapshot
    c = conds(obs, {} if component == "reader" else COMPACTED)
    assert (c[ctype]["status"], c[ctype]["reason"]) == ("False", reason)
    assert f"0/2 {component}s ready; pod docs-{component}-a (and 1 more) cannot" in \
        c[ctype]["message"]
    assert c[ctype]["message"].endswith("msg A")
    assert c["Ready"]["status"] == "False"


def test_stuck_new_pods_of_a_rollout_are_mentioned_while_old_ones_serve() -> None:
    obs = Observed(writer=dep("docs-writer", updated=1), reader=dep("docs-reader"),
                   cronjob=CRON, pods=(PodState("docs-writer-new", "writer", "ErrImagePull",
                                                "container writer: ErrImagePull"),))
    w = conds(obs, COMPACTED)["WritersReady"]
    assert (w["status"], w["reason"]) == ("True", "RollingUpdate")
    assert "new pods are stuck: pod docs-writer-new cannot start" in w["message"]


def test_scaled_to_zero_wins_over_stuck_pods() -> None:
    obs = Observed(writer=dep("docs-writer", desired=0, ready=0), reader=dep("docs-reader"),
                   cronjob=CRON, pods=(PodState("docs-writer-x", "writer", "Unschedulable",
                                                "m"),))
    assert conds(obs, COMPACTED)["WritersReady"]["reason"] == "ScaledToZero"


def test_a_stuck_pod_is_warned_about_once_even_on_a_new_collection() -> None:
    stuck = PodState.from_body(pod(conditions_=unschedulable()))
    obs = Observed(writer=dep("docs-writer"), reader=dep("docs-reader", ready=0), cronjob=CRON,
                   pods=(stuck,))
    starting = conditions.operator_status(
        "docs", {}, {}, Observed(writer=dep("docs-writer"), reader=dep("docs-reader", ready=0),
                                 cronjob=CRON), None, 1, True, [], NOW)["conditions"]
    now = conditions.operator_status("docs", {}, {}, obs, None, 1, True, starting,
                                     NOW)["conditions"]
    warned = conditions.transitions(starting, now)
    assert [(t.type, t.reason) for t in warned] == [("Warning", "CompactionUnschedulable")]
    assert "Insufficient cpu" in warned[0].message
    assert conditions.transitions(now, now) == []
