"""What the cluster reports about a collection's workloads, reduced to what status needs.

Plain frozen values parsed from API objects (Deployments, the CronJob, Jobs, pods), so
that the status logic in :mod:`.conditions` is pure and the kopf indexes hold
a few fields per object rather than whole manifests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chromasnap.operator.specs.naming import LABEL_COMPONENT


@dataclass(frozen=True)
class DeploymentState:
    """The parts of a Deployment's status that conditions need."""

    name: str
    desired: int
    replicas: int
    ready: int
    updated: int
    available: int
    generation: int
    observed_generation: int
    stalled: str | None = None  # message of a ProgressDeadlineExceeded condition

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeploymentState:
        """From a Deployment object as the API returns it."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        st = body.get("status") or {}
        stalled = None
        for c in st.get("conditions") or []:
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
                stalled = str(c.get("message") or "progress deadline exceeded")
        return cls(
            name=str(meta.get("name") or ""),
            desired=int(spec.get("replicas", 1)),
            replicas=int(st.get("replicas") or 0),
            ready=int(st.get("readyReplicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            available=int(st.get("availableReplicas") or 0),
            generation=int(meta.get("generation") or 0),
            observed_generation=int(st.get("observedGeneration") or 0),
            stalled=stalled,
        )

    @property
    def rolling_out(self) -> bool:
        """Whether the controller has not yet brought every pod to the current template."""
        return self.observed_generation < self.generation or self.updated < self.desired


@dataclass(frozen=True)
class CronJobState:
    """The compactor CronJob."""

    name: str
    schedule: str
    suspend: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CronJobState:
        """From a CronJob object."""
        spec = body.get("spec") or {}
        return cls(
            name=str((body.get("metadata") or {}).get("name") or ""),
            schedule=str(spec.get("schedule") or ""),
            suspend=bool(spec.get("suspend")),
        )


@dataclass(frozen=True)
class JobState:
    """One compaction (or purge) Job."""

    name: str
    component: str
    created: str
    active: int
    succeeded: bool
    failed: bool
    finished: str | None = None
    reason: str = ""
    message: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> JobState:
        """From a Job object; ``failed``/``succeeded`` follow the Job's terminal conditions."""
        meta = body.get("metadata") or {}
        st = body.get("status") or {}
        failed = succeeded = False
        finished: str | None = None
        reason = message = ""
        for c in st.get("conditions") or []:
            if c.get("status") != "True":
                continue
            if c.get("type") == "Failed":
                failed = True
                reason = str(c.get("reason") or "Failed")
                message = str(c.get("message") or "")
                finished = str(c.get("lastTransitionTime") or "") or None
            elif c.get("type") == "Complete":
                succeeded = True
                finished = str(c.get("lastTransitionTime") or "") or None
        return cls(
            name=str(meta.get("name") or ""),
            component=str((meta.get("labels") or {}).get(LABEL_COMPONENT) or ""),
            created=str(meta.get("creationTimestamp") or ""),
            active=int(st.get("active") or 0),
            succeeded=succeeded,
            failed=failed,
            finished=finished or (str(st.get("completionTime")) if succeeded else None),
            reason=reason,
            message=message,
        )


@dataclass(frozen=True)
class OwnedChild:
    """An optional child that exists (a NetworkPolicy): enough to delete it safely."""

    name: str
    uid: str
    owner_uid: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OwnedChild:
        """From any object; ``owner_uid`` is its controller's."""
        meta = body.get("metadata") or {}
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
        return cls(
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            owner_uid=str(owner["uid"]) if owner and owner.get("uid") else None,
        )


#: Why a pod is stuck, by what Kubernetes reports: the scheduler's ``PodScheduled`` reason,
#: or a container's waiting reason that does not go away by waiting.
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError"})
STUCK_WAITING_REASONS = IMAGE_PULL_REASONS | CONFIG_ERROR_REASONS
#: Stuck messages kept per pod (the scheduler's can list every node).
MAX_POD_MESSAGE = 512


@dataclass(frozen=True)
class PodState:
    """One of a collection's pods: its component and, if it is stuck, why."""

    name: str
    component: str
    stuck: str = ""  # Unschedulable, or a container's waiting reason (ImagePullBackOff…)
    message: str = ""  # the scheduler's or the kubelet's message

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodState:
        """From a Pod object. Pods being deleted and finished pods are never stuck."""
        meta = body.get("metadata") or {}
        st = body.get("status") or {}
        name = str(meta.get("name") or "")
        component = str((meta.get("labels") or {}).get(LABEL_COMPONENT) or "")
        if meta.get("deletionTimestamp") or st.get("phase") in ("Succeeded", "Failed"):
            return cls(name, component)
        for c in st.get("conditions") or []:
            if (c.get("type") == "PodScheduled" and c.get("status") == "False"
                    and c.get("reason") == UNSCHEDULABLE):
                return cls(name, component, UNSCHEDULABLE,
                           _short(c.get("message") or "no node fits the pod"))
        for cs in [*(st.get("initContainerStatuses") or []),
                   *(st.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason in STUCK_WAITING_REASONS:
                detail = str(waiting.get("message") or "")
                text = f"container {cs.get('name')}: {reason}" + (f": {detail}" if detail else "")
                return cls(name, component, reason, _short(text))
        return cls(name, component)


def _short(text: object) -> str:
    out = " ".join(str(text).split())
    return out if len(out) <= MAX_POD_MESSAGE else out[: MAX_POD_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class Observed:
    """Everything about one collection's children that the status is computed from."""

    writer: DeploymentState | None = None
    reader: DeploymentState | None = None
    cronjob: CronJobState | None = None
    jobs: tuple[JobState, ...] = field(default_factory=tuple)
    pods: tuple[PodState, ...] = field(default_factory=tuple)

    def stuck(self, component: str) -> tuple[PodState, ...]:
        """The component's stuck pods, by name."""
        return tuple(sorted((p for p in self.pods if p.component == component and p.stuck),
                            key=lambda p: p.name))
