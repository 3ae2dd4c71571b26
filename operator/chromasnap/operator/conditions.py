"""Status and conditions: what is true now, derived from what the cluster reports.

The operator owns ``observedGeneration``, ``conditions`` (``Ready`` and one per
part), ``readers`` and ``writers``; the compactor owns ``snapshot``,
``lastCompaction`` and ``pendingDeltas``. Nothing here talks to the API server:
the controller feeds in the collection's status and the :class:`Observed`
children, patches what comes out, and posts an Event per :class:`Transition`.

Status is derived from what is true now, never from what the operator hopes:
a Deployment is ready when Kubernetes says its pods are ready, a snapshot
exists when a compactor reported publishing one, a compaction failed when it
said so or its Job failed; a pod is stuck when the scheduler or the kubelet says why it
cannot start (unschedulable, image pull, a missing Secret or ConfigMap key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chromasnap.operator.checks import SPEC_PROBLEM_REASONS, Problem
from chromasnap.operator.crd import (
    CONDITION_COMPACTOR_HEALTHY,
    CONDITION_READERS_READY,
    CONDITION_READY,
    CONDITION_SNAPSHOT_AVAILABLE,
    CONDITION_WRITERS_READY,
)
from chromasnap.operator.observed import (
    IMAGE_PULL_REASONS,
    UNSCHEDULABLE,
    DeploymentState,
    JobState,
    Observed,
    PodState,
)
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    COMPONENT_READER,
    COMPONENT_WRITER,
    reader_selector,
)
from chromasnap.resource import COMPACT_NOW_ANNOTATION

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
#: Condition the purge Job adds to the collection's status once the prefix is empty.
CONDITION_PURGED = "Purged"

_REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
#: Conditions and events keep messages short; the CRD allows 32 KiB, kubectl shows one line.
MAX_MESSAGE = 1024


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters (for condition and Event messages)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def camel_reason(value: object, fallback: str) -> str:
    """``value`` if it is a valid condition reason (CamelCase), else ``fallback``."""
    text = str(value or "")
    return text if _REASON_RE.match(text) else fallback


def now_iso(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with a ``Z``, seconds precision (what metav1.Time serialises)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Verdict:
    """One condition before it gets its timestamps."""

    type: str
    status: str
    reason: str
    message: str


def stuck_kind(pod: PodState) -> str:
    """``Unschedulable``, ``ImagePullFailed`` or ``ContainerConfigError``."""
    if pod.stuck == UNSCHEDULABLE:
        return "Unschedulable"
    if pod.stuck in IMAGE_PULL_REASONS:
        return "ImagePullFailed"
    return "ContainerConfigError"


#: Condition reasons for stuck pods, by :func:`stuck_kind`.
WORKLOAD_STUCK_REASONS = {
    "Unschedulable": "PodsUnschedulable",
    "ImagePullFailed": "ImagePullFailed",
    "ContainerConfigError": "ContainerConfigError",
}
COMPACTION_STUCK_REASONS = {
    "Unschedulable": "CompactionUnschedulable",
    "ImagePullFailed": "CompactionImagePullFailed",
    "ContainerConfigError": "CompactionContainerConfigError",
}
#: Reasons that need someone to act (a bigger node, an image, a Secret): warned about even
#: when the condition was never True (a new collection that cannot start).
STUCK_REASONS = frozenset({*WORKLOAD_STUCK_REASONS.values(), *COMPACTION_STUCK_REASONS.values()})


def stuck_summary(pods: Sequence[PodState]) -> str:
    """What the first stuck pod reports, and how many more there are."""
    first = pods[0]
    more = f" (and {len(pods) - 1} more)" if len(pods) > 1 else ""
    what = "cannot be scheduled" if first.stuck == UNSCHEDULABLE else "cannot start"
    return f"pod {first.name}{more} {what}: {first.message}"


def _workload_verdict(
    ctype: str, what: str, dep: DeploymentState | None, desired: int | None, created: bool,
    waiting_for_snapshot: bool = False, stuck: Sequence[PodState] = (),
    compactor_stuck: Verdict | None = None,
) -> Verdict:
    if dep is None:
        if not created:
            return Verdict(ctype, FALSE, "NotCreated",
                           f"the {what} Deployment has not been created (see the Ready condition)")
        return Verdict(ctype, FALSE, "DeploymentMissing",
                       f"the {what} Deployment does not exist; the operator is re-creating it")
    want = dep.desired if desired is None else desired
    rollout = " (rolling out a new pod template)" if dep.rolling_out else ""
    if want == 0:
        return Verdict(ctype, FALSE, "ScaledToZero",
                       f"{what} are scaled to 0 replicas; scale them up to serve")
    if stuck and dep.ready < want:
        return Verdict(ctype, FALSE, WORKLOAD_STUCK_REASONS[stuck_kind(stuck[0])],
                       f"{dep.ready}/{want} {what} ready{rollout}; {stuck_summary(stuck)}")
    if dep.stalled:
        return Verdict(ctype, FALSE, "ProgressDeadlineExceeded",
                       f"{dep.ready}/{want} {what} ready; Deployment {dep.name}: {dep.stalled}")
    if dep.ready >= want:
        # New pods of a rollout may be stuck while the old ones still serve.
        held = f"; new pods are stuck: {stuck_summary(stuck)}" if stuck else ""
        return Verdict(ctype, TRUE, "RollingUpdate" if dep.rolling_out else "AllReplicasReady",
                       f"{dep.ready}/{want} {what} ready{rollout}{held}")
    if waiting_for_snapshot:
        blocked = (
            f"; no compaction can run ({compactor_stuck.reason}, see CompactorHealthy)"
            if compactor_stuck is not None else ""
        )
        return Verdict(ctype, FALSE, "WaitingForSnapshot",
                       f"{dep.ready}/{want} {what} ready: readers become ready once a snapshot "
                       f"is published (see SnapshotAvailable){blocked}")
    return Verdict(ctype, FALSE, "ReplicasNotReady",
                   f"{dep.ready}/{want} {what} ready{rollout}; see "
                   f"`kubectl describe deployment {dep.name}` and its pods")


def _newest(jobs: Iterable[JobState]) -> JobState | None:
    best: JobState | None = None
    for j in jobs:
        if best is None or (j.finished or j.created) > (best.finished or best.created):
            best = j
    return best


def _compactor_verdict(obs: Observed, last: Mapping[str, Any] | None, created: bool) -> Verdict:
    ctype = CONDITION_COMPACTOR_HEALTHY
    if obs.cronjob is None:
        if not created:
            return Verdict(ctype, FALSE, "NotCreated",
                           "the compactor CronJob has not been created (see the Ready condition)")
        return Verdict(ctype, FALSE, "CronJobMissing",
                       "the compactor CronJob does not exist; the operator is re-creating it")
    suspended = (
        "; scheduled runs are suspended (spec.compactor.suspend)" if obs.cronjob.suspend else ""
    )
    stuck = obs.stuck(COMPONENT_COMPACTOR)
    if stuck:
        # A compaction pod that cannot start is today's news, whatever the last run said;
        # its Job waits (and the snapshot with it) until this is fixed.
        return Verdict(ctype, FALSE, COMPACTION_STUCK_REASONS[stuck_kind(stuck[0])],
                       f"a compaction Job's {stuck_summary(stuck)}{suspended}")
    last_time = str((last or {}).get("time") or "")
    compaction_jobs = [j for j in obs.jobs if j.component == COMPONENT_COMPACTOR]
    failed = _newest(j for j in compaction_jobs if j.failed and (j.finished or "") > last_time)
    if failed is not None:
        # A Job that failed without reporting (killed, deadline, image pull, no permission
        # to report) is newer news than the last run that did report.
        return Verdict(ctype, FALSE, "JobFailed",
                       f"compaction Job {failed.name} failed ({failed.reason})"
                       + (f": {failed.message}" if failed.message else "")
                       + f"; see `kubectl logs job/{failed.name}`{suspended}")
    if not last:
        running = [j.name for j in compaction_jobs if j.active]
        doing = f"; running: {', '.join(sorted(running))}" if running else ""
        return Verdict(ctype, UNKNOWN, "AwaitingFirstRun",
                       f"no compaction has reported a result yet (schedule "
                       f"{obs.cronjob.schedule!r}){doing}{suspended}")
    result = str(last.get("result") or "")
    reason = camel_reason(last.get("reason"), "CompactionFailed" if result == "Failed" else result)
    message = str(last.get("message") or "")
    when = f"last compaction at {last_time or 'an unknown time'}"
    if result == "Failed":
        return Verdict(ctype, FALSE, reason,
                       f"{when} failed: {message or reason}; the next run retries{suspended}")
    return Verdict(ctype, TRUE, reason or "LastRunSucceeded",
                   f"{when}: {result.lower()}" + (f" ({message})" if message else "") + suspended)


def _snapshot_verdict(name: str, status: Mapping[str, Any],
                      compactor_stuck: Verdict | None = None) -> Verdict:
    snap = status.get("snapshot") or {}
    if not snap.get("version") and compactor_stuck is not None:
        return Verdict(
            CONDITION_SNAPSHOT_AVAILABLE, FALSE, "NoSnapshot",
            "no snapshot has been published yet: the first compaction cannot run "
            f"({compactor_stuck.reason}, see CompactorHealthy)",
        )
    if not snap.get("version"):
        return Verdict(
            CONDITION_SNAPSHOT_AVAILABLE, FALSE, "NoSnapshot",
            "no snapshot has been published yet: the first compaction creates one "
            f"(to run one now: kubectl annotate ccol/{name} {COMPACT_NOW_ANNOTATION}="
            "\"$(date +%s)\" --overwrite)",
        )
    parts = [f"snapshot {snap['version']}"]
    if snap.get("records") is not None:
        parts.append(f"{snap['records']} records")
    if snap.get("bytes") is not None:
        parts.append(f"{snap['bytes']} bytes")
    if snap.get("createdAt"):
        parts.append(f"created {snap['createdAt']}")
    pending = status.get("pendingDeltas")
    tail = f"; {pending} deltas pending" if pending else ""
    return Verdict(CONDITION_SNAPSHOT_AVAILABLE, TRUE, "SnapshotPublished",
                   ", ".join(parts) + tail)


_NOT_READY_REASON = {
    CONDITION_WRITERS_READY: "WritersNotReady",
    CONDITION_READERS_READY: "ReadersNotReady",
    CONDITION_COMPACTOR_HEALTHY: "CompactorUnhealthy",
    CONDITION_SNAPSHOT_AVAILABLE: "SnapshotNotAvailable",
}


def verdicts(
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    obs: Observed,
    problem: Problem | None,
    created: bool,
) -> list[Verdict]:
    """All five conditions, ``Ready`` first, before timestamps are attached."""
    compactor = _compactor_verdict(obs, status.get("lastCompaction"), created)
    compactor_stuck = compactor if compactor.reason in COMPACTION_STUCK_REASONS.values() else None
    snapshot = _snapshot_verdict(name, status, compactor_stuck)
    writer_spec = spec.get("writer") or {}
    reader_spec = spec.get("reader") or {}
    parts = [
        _workload_verdict(CONDITION_WRITERS_READY, "writers", obs.writer,
                          _int_or_none(writer_spec.get("replicas")), created,
                          stuck=obs.stuck(COMPONENT_WRITER)),
        _workload_verdict(CONDITION_READERS_READY, "readers", obs.reader,
                          _int_or_none(reader_spec.get("replicas")), created,
                          waiting_for_snapshot=snapshot.status != TRUE,
                          stuck=obs.stuck(COMPONENT_READER), compactor_stuck=compactor_stuck),
        compactor,
        snapshot,
    ]
    if problem is not None:
        ready = Verdict(CONDITION_READY, FALSE, problem.reason, problem.message)
    else:
        bad = [p for p in parts if p.status != TRUE]
        if not bad:
            ready = Verdict(CONDITION_READY, TRUE, "AllComponentsReady",
                            "writers, readers, compactor and snapshot are ready")
        else:
            reason = _NOT_READY_REASON[bad[0].type] if len(bad) == 1 else "ComponentsNotReady"
            ready = Verdict(CONDITION_READY, FALSE, reason,
                            "; ".join(f"{p.type}: {p.message}" for p in bad))
    return [ready, *parts]


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def conditions(
    found: Sequence[Verdict],
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Conditions in API form; ``lastTransitionTime`` moves only when the status changes."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    out = []
    for v in found:
        old = before.get(v.type)
        since = (
            old["lastTransitionTime"]
            if old and old.get("status") == v.status and old.get("lastTransitionTime")
            else now_iso(now)
        )
        cond: dict[str, Any] = {
            "type": v.type,
            "status": v.status,
            "reason": v.reason,
            "message": clip(v.message),
            "lastTransitionTime": since,
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    # Conditions other writers added (e.g. Purged) are kept as they are.
    known = {v.type for v in found}
    out += [dict(c) for c in previous if isinstance(c, Mapping) and c.get("type") not in known]
    return out


def operator_status(
    name: str,
    body_spec: Mapping[str, Any],
    body_status: Mapping[str, Any],
    obs: Observed,
    problem: Problem | None,
    observed_generation: int | None,
    created: bool,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status fields the operator owns (the compactor owns snapshot, lastCompaction,
    pendingDeltas): ``observedGeneration``, ``conditions``, ``readers``, ``writers``.
    """
    found = verdicts(name, body_spec, body_status, obs, problem, created)
    out: dict[str, Any] = {
        "conditions": conditions(found, previous_conditions, observed_generation,
                                 now or datetime.now(UTC)),
        "readers": {
            "replicas": obs.reader.replicas if obs.reader else 0,
            "ready": obs.reader.ready if obs.reader else 0,
            "selector": reader_selector(name),
        },
        "writers": {
            "replicas": obs.writer.replicas if obs.writer else 0,
            "ready": obs.writer.ready if obs.writer else 0,
        },
    }
    if observed_generation is not None:
        out["observedGeneration"] = observed_generation
    return out


def condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    """The condition of type ``ctype`` in a status, if any."""
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == ctype:
            return c
    return None


@dataclass(frozen=True)
class Transition:
    """A change worth an Event."""

    type: str  # Normal | Warning
    reason: str
    message: str


def transitions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    """Events for condition changes people care about.

    ``Ready`` becoming True is Normal; a problem with the spec, or a condition that
    was True turning False, is a Warning. Reaching readiness for the first time
    (False while starting up) is not warned about: that is how every collection starts;
    a pod that cannot start (unschedulable, image pull, …) is, whatever came before.
    """
    old = {c.get("type"): c for c in before}
    out: list[Transition] = []
    for c in after:
        ctype = c.get("type")
        prev = old.get(ctype)
        same = prev is not None and prev.get("status") == c.get("status") and prev.get(
            "reason") == c.get("reason")
        if same:
            continue
        status, reason, message = c.get("status"), str(c.get("reason")), str(c.get("message"))
        if ctype == CONDITION_READY:
            if status == TRUE:
                out.append(Transition("Normal", "Ready", message))
            elif reason in SPEC_PROBLEM_REASONS:
                out.append(Transition("Warning", reason, message))
            elif prev is not None and prev.get("status") == TRUE:
                out.append(Transition("Warning", "NotReady", f"{reason}: {message}"))
        elif status == FALSE and (
            (prev is not None and prev.get("status") == TRUE) or reason in STUCK_REASONS
        ):
            out.append(Transition("Warning", reason, f"{ctype}: {message}"))
    return out


def recorded_problem(status: Mapping[str, Any], generation: Any) -> Problem | None:
    """A spec problem recorded in the status for this generation (after a restart, until
    the resume handler has judged the spec again)."""
    ready = condition(status, CONDITION_READY)
    if (ready is not None and ready.get("status") == FALSE
            and ready.get("reason") in SPEC_PROBLEM_REASONS
            and ready.get("observedGeneration") == generation):
        return Problem(str(ready["reason"]), str(ready.get("message") or ""))
    return None
