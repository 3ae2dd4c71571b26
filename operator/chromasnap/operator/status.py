"""Pure operator logic: status and conditions, schedule checks, drift, on-demand runs.

Nothing here talks to the API server; ``operator_main`` feeds it what the
cluster reports (Deployments, the CronJob, compaction Jobs, the collection's
own status as the compactor patched it) and applies what it returns. Keeping
this pure lets unit tests cover every condition and reason without a cluster.

Status is derived from what is true now, never from what the operator hopes:
a Deployment is ready when Kubernetes says its pods are ready, a snapshot
exists when a compactor reported publishing one, a compaction failed when it
said so or its Job failed.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chromasnap.operator import specs
from chromasnap.operator.crd import (
    CONDITION_COMPACTOR_HEALTHY,
    CONDITION_READERS_READY,
    CONDITION_READY,
    CONDITION_SNAPSHOT_AVAILABLE,
    CONDITION_WRITERS_READY,
    ChromaCollection,
    SpecError,
    parse_quantity,
)

#: Set this annotation (to any new value, e.g. the time) to run a compaction now.
COMPACT_NOW_ANNOTATION = "chromasnap.dev/compact-now"
#: Run id of the compaction the operator starts when a collection has no snapshot yet.
BOOTSTRAP_RUN_ID = "init"
#: Condition the purge Job adds to the collection's status once the prefix is empty.
CONDITION_PURGED = "Purged"
COMPONENT_PURGE = "purge"

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Reasons for a spec the operator will not act on (Ready=False, nothing applied).
REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_SCHEDULE = "InvalidSchedule"
REASON_SECRET_NOT_FOUND = "CredentialsSecretNotFound"  # noqa: S105 - a reason, not a secret
REASON_SECRET_KEY_MISSING = "CredentialsSecretKeyMissing"  # noqa: S105
REASON_APPLY_REJECTED = "ApplyRejected"
SPEC_PROBLEM_REASONS = frozenset(
    {
        REASON_INVALID_SPEC,
        REASON_INVALID_SCHEDULE,
        REASON_SECRET_NOT_FOUND,
        REASON_SECRET_KEY_MISSING,
        REASON_APPLY_REJECTED,
    }
)

_REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
#: Conditions and events keep messages short; the CRD allows 32 KiB, kubectl shows one line.
MAX_MESSAGE = 1024


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def camel_reason(value: object, fallback: str) -> str:
    """``value`` if it is a valid condition reason (CamelCase), else ``fallback``."""
    text = str(value or "")
    return text if _REASON_RE.match(text) else fallback


# --- what the cluster reports -----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why the operator will not (or could not) apply a collection's spec."""

    reason: str
    message: str


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
            if c.get("status") != TRUE:
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
            component=str((meta.get("labels") or {}).get(specs.LABEL_COMPONENT) or ""),
            created=str(meta.get("creationTimestamp") or ""),
            active=int(st.get("active") or 0),
            succeeded=succeeded,
            failed=failed,
            finished=finished or (str(st.get("completionTime")) if succeeded else None),
            reason=reason,
            message=message,
        )


@dataclass(frozen=True)
class Observed:
    """Everything about one collection's children that the status is computed from."""

    writer: DeploymentState | None = None
    reader: DeploymentState | None = None
    cronjob: CronJobState | None = None
    jobs: tuple[JobState, ...] = field(default_factory=tuple)


# --- compactor schedule -----------------------------------------------------------------

_CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, minimum, maximum, names): the five fields of a standard cron line, as the
# CronJob controller (robfig/cron's ParseStandard) reads them.
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
CRON_HELP = "a cron line is 'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *'"


def _cron_number(text: str, names: Mapping[str, int], what: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{what} field: {text!r} is not a number" + (
            " or a name (" + ", ".join(n.upper() for n in names) + ")" if names else ""))
    return int(text)


def _cron_range(expr: str, what: str, lo: int, hi: int, names: Mapping[str, int]) -> None:
    parts = expr.split("/")
    if len(parts) > 2:
        raise ValueError(f"{what} field: {expr!r} has more than one '/'")
    bounds = parts[0].split("-")
    if len(bounds) > 2:
        raise ValueError(f"{what} field: {expr!r} has more than one '-'")
    if bounds[0] in ("*", "?"):
        if len(bounds) > 1:
            raise ValueError(f"{what} field: {expr!r}: '*' cannot start a range")
        start, end = lo, hi
    else:
        start = _cron_number(bounds[0], names, what)
        end = _cron_number(bounds[1], names, what) if len(bounds) == 2 else start
        if len(parts) == 2 and len(bounds) == 1:
            end = hi  # "a/n" means from a to the maximum, every n
    if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) == 0):
        raise ValueError(f"{what} field: step in {expr!r} must be a positive number")
    if start < lo or end > hi:
        raise ValueError(f"{what} field: {expr!r} is out of range {lo}-{hi}")
    if start > end:
        raise ValueError(f"{what} field: {expr!r} starts after it ends")


def validate_schedule(schedule: str) -> None:
    """Raise ``ValueError`` (a message saying what to fix) unless the CronJob controller
    would accept ``schedule``.

    The CRD's pattern only checks the shape (five fields or a macro); this checks
    ranges, steps and names the way Kubernetes' cron parser does, so that a bad
    line is reported on the collection instead of failing the CronJob half-way
    through creating the children.
    """
    text = schedule.strip()
    if "TZ=" in text:
        raise ValueError("time zones (TZ= or CRON_TZ=) are not supported in the schedule; "
                         "schedules run in the kube-controller-manager's time zone")
    if text.startswith("@"):
        if text not in _CRON_MACROS:
            raise ValueError(f"{text!r} is not a supported macro (use one of "
                             + ", ".join(sorted(_CRON_MACROS)) + ")")
        return
    fields_ = text.split()
    if len(fields_) != 5:
        raise ValueError(f"{text!r} has {len(fields_)} fields; {CRON_HELP}")
    for value, (what, lo, hi, names) in zip(fields_, _CRON_FIELDS, strict=True):
        for expr in value.split(","):
            if not expr:
                raise ValueError(f"{what} field: {value!r} has an empty list item")
            _cron_range(expr, what, lo, hi, names)


def check_spec(cc: ChromaCollection) -> Problem | None:
    """What the schema cannot reject but Kubernetes would, found before anything is applied."""
    try:
        validate_schedule(cc.spec.compactor.schedule)
    except ValueError as e:
        return Problem(
            REASON_INVALID_SCHEDULE,
            f"spec.compactor.schedule {cc.spec.compactor.schedule!r}: {e}; {CRON_HELP}",
        )
    return None


def spec_problem(err: SpecError) -> Problem:
    """A ``SpecError`` from parsing, as a condition."""
    return Problem(REASON_INVALID_SPEC, f"{err}; fix the ChromaCollection's spec")


def secret_problem(
    cc: ChromaCollection, secret: Mapping[str, Any] | None
) -> Problem | None:
    """Check the credentials Secret the spec names (``None``: it does not exist).

    Only key names are looked at; values are never read into messages.
    """
    ref = cc.spec.storage.credentials_secret_ref
    if ref is None:
        return None
    where = f"Secret {ref.name!r} in namespace {cc.namespace!r}"
    wanted = (ref.access_key_id_key, ref.secret_access_key_key)
    if secret is None:
        return Problem(
            REASON_SECRET_NOT_FOUND,
            f"{where} (spec.storage.credentialsSecretRef.name) does not exist: create it with "
            f"keys {wanted[0]} and {wanted[1]}, or point credentialsSecretRef at the right "
            "Secret (remove it to use workload identity)",
        )
    present = set((secret.get("data") or {}).keys()) | set(
        (secret.get("stringData") or {}).keys()
    )
    missing = [k for k in wanted if k not in present]
    if missing:
        return Problem(
            REASON_SECRET_KEY_MISSING,
            f"{where} has no key {', '.join(missing)}: add it, or set "
            "spec.storage.credentialsSecretRef.accessKeyIdKey/secretAccessKeyKey to the keys "
            f"it has ({', '.join(sorted(present)) or 'none'})",
        )
    return None


# --- on-demand runs ---------------------------------------------------------------------


def compaction_run_id(uid: str, request: str) -> str:
    """Deterministic run id for one value of the compact-now annotation.

    The same value always maps to the same Job name, so a retried handler never
    starts a second Job for one request; a new value starts a new one.
    """
    return hashlib.sha256(f"{uid}/{request}".encode()).hexdigest()[:10]


def purge_job_name(name: str) -> str:
    """Name of the Job that deletes a collection's data (``deletionPolicy: Delete``)."""
    return f"{name}-purge"


def purge_job(cc: ChromaCollection, settings: specs.OperatorSettings) -> specs.Manifest:
    """The Job that empties ``s3://bucket/prefix/`` when the collection is deleted.

    Built from the compactor's Job template (same image, identity, credentials,
    security context), with three differences, each because the collection is
    going away while it runs:

    - no owner reference: a foreground deletion of the collection would
      otherwise garbage-collect the Job before it finished;
    - the shared settings are inline env rather than ``envFrom`` the ConfigMap,
      which the same garbage collection may already have removed;
    - it reports completion by adding a ``Purged`` condition to the collection's
      status (the collection's Role allows exactly that), because a Job's
      success alone says nothing about what the process did.
    """
    job = specs.compaction_job(cc, settings, "purge")
    meta = job["metadata"]
    meta["name"] = purge_job_name(cc.name)
    meta.pop("ownerReferences", None)
    meta["labels"] = specs.labels(cc.name, COMPONENT_PURGE)
    spec = job["spec"]
    spec["backoffLimit"] = 3
    spec["activeDeadlineSeconds"] = 3600
    spec["ttlSecondsAfterFinished"] = 86400
    template = spec["template"]
    template["metadata"]["labels"] = specs.labels(cc.name, COMPONENT_PURGE)
    template["metadata"].pop("annotations", None)
    pod = template["spec"]
    container = pod["containers"][0]
    container["name"] = COMPONENT_PURGE
    container["command"] = ["chromasnap", "purge", "--yes"]
    container.pop("envFrom", None)
    common = [e for e in container["env"] if not str(e["name"]).startswith("CHROMASNAP_")]
    shared = [{"name": k, "value": v} for k, v in specs.config_data(cc).items()]
    report = {"name": "CHROMASNAP_STATUS_RESOURCE", "value": f"{cc.namespace}/{cc.name}"}
    container["env"] = common + shared + [report]
    # Nothing to cache: only the scratch /tmp stays.
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] == "tmp"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    return job


def prefixes_overlap(a: str, b: str) -> bool:
    """Whether deleting everything under prefix ``a`` would delete something under ``b``."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# --- drift ------------------------------------------------------------------------------

# Lists Kubernetes merges by key under server-side apply: other managers may add entries
# (a sidecar, an extra env var) without it being drift. Other lists are atomic: an entry
# added by hand (a Role rule, a RoleBinding subject) is drift and gets reverted.
_KEYED_LISTS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}
_QUANTITY_KEYS = frozenset({"sizeLimit", "cpu", "memory", "ephemeral-storage"})


def _same_scalar(key: str, want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if key in _QUANTITY_KEYS and isinstance(want, str | int) and isinstance(have, str | int):
        # The API server stores quantities canonically ("1.5Gi" comes back "1536Mi").
        try:
            return parse_quantity(want) == parse_quantity(have)
        except ValueError:
            return False
    return False


def _diff(want: Any, have: Any, path: str, key: str, out: list[str]) -> None:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            out.append(path or ".")
            return
        for k, v in want.items():
            if k not in have:
                # The API server leaves out empty maps and lists and, for most fields,
                # zero values (omitempty): false, 0, "".
                if v in ({}, [], False, 0, ""):
                    continue
                out.append(f"{path}.{k}")
            else:
                _diff(v, have[k], f"{path}.{k}", k, out)
        return
    if isinstance(want, list):
        if not isinstance(have, list):
            out.append(path)
            return
        merge_key = _KEYED_LISTS.get(key)
        if merge_key and all(isinstance(w, Mapping) and merge_key in w for w in want):
            by_key = {h.get(merge_key): h for h in have if isinstance(h, Mapping)}
            for w in want:
                k = w[merge_key]
                if k not in by_key:
                    out.append(f"{path}[{merge_key}={k}]")
                else:
                    _diff(w, by_key[k], f"{path}[{merge_key}={k}]", key, out)
            return
        if len(want) != len(have):
            out.append(path)
            return
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            _diff(w, h, f"{path}[{i}]", key, out)
        return
    if not _same_scalar(key, want, have):
        out.append(path)


def drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of fields the operator sets that differ in ``live`` (empty: no drift).

    Fields the operator does not set (defaults, status, other managers' additions to
    merged lists) are ignored, exactly as server-side apply leaves them alone.
    """
    out: list[str] = []
    want = copy.copy(dict(desired))
    meta = want.pop("metadata", {}) or {}
    have_meta = live.get("metadata") or {}
    for k in ("labels", "annotations", "ownerReferences"):
        if k in meta:
            _diff(meta[k], have_meta.get(k) or ({} if k != "ownerReferences" else []),
                  f"metadata.{k}", k, out)
    for k, v in want.items():
        if k in ("apiVersion", "kind", "status"):
            continue
        if k not in live:
            out.append(k)
        else:
            _diff(v, live[k], k, k, out)
    return out


# --- status -----------------------------------------------------------------------------


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


def _workload_verdict(
    ctype: str, what: str, dep: DeploymentState | None, desired: int | None, created: bool,
    waiting_for_snapshot: bool = False,
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
    if dep.stalled:
        return Verdict(ctype, FALSE, "ProgressDeadlineExceeded",
                       f"{dep.ready}/{want} {what} ready; Deployment {dep.name}: {dep.stalled}")
    if dep.ready >= want:
        return Verdict(ctype, TRUE, "RollingUpdate" if dep.rolling_out else "AllReplicasReady",
                       f"{dep.ready}/{want} {what} ready{rollout}")
    if waiting_for_snapshot:
        return Verdict(ctype, FALSE, "WaitingForSnapshot",
                       f"{dep.ready}/{want} {what} ready: readers become ready once a snapshot "
                       "is published (see SnapshotAvailable)")
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
    last_time = str((last or {}).get("time") or "")
    compaction_jobs = [j for j in obs.jobs if j.component == specs.COMPONENT_COMPACTOR]
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


def _snapshot_verdict(name: str, status: Mapping[str, Any]) -> Verdict:
    snap = status.get("snapshot") or {}
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
    snapshot = _snapshot_verdict(name, status)
    writer_spec = spec.get("writer") or {}
    reader_spec = spec.get("reader") or {}
    parts = [
        _workload_verdict(CONDITION_WRITERS_READY, "writers", obs.writer,
                          _int_or_none(writer_spec.get("replicas")), created),
        _workload_verdict(CONDITION_READERS_READY, "readers", obs.reader,
                          _int_or_none(reader_spec.get("replicas")), created,
                          waiting_for_snapshot=snapshot.status != TRUE),
        _compactor_verdict(obs, status.get("lastCompaction"), created),
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
            "message": _clip(v.message),
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
            "selector": specs.reader_selector(name),
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
    (False while starting up) is not warned about: that is how every collection starts.
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
        elif prev is not None and prev.get("status") == TRUE and status == FALSE:
            out.append(Transition("Warning", reason, f"{ctype}: {message}"))
    return out
