"""``kubectl chromasnap status NAME``: one page on a collection.

Everything comes from what the cluster already says: the resource's status
(conditions, snapshot, pending deltas, last compaction), its pods and compaction
Jobs, and each reader's own ``/metrics`` (read through the API server's pod proxy):
``chromasnap_reader_snapshot_seq`` is the version a reader has loaded, compared here
with the one the status names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chromasnap.cli.plugin.kube import Kube, PluginError, condition, path
from chromasnap.operator.crd import CONDITION_TYPES
from chromasnap.operator.specs.naming import (
    APP_NAME,
    COMPONENT_COMPACTOR,
    COMPONENT_READER,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_NAME,
    LABEL_TRIGGER,
)
from chromasnap.operator.specs.pods import HTTP_PORT

#: Reader gauges shown per pod (metric name -> key in the output).
READER_METRICS = {
    "chromasnap_reader_snapshot_seq": "snapshotSeq",
    "chromasnap_reader_snapshot_created_timestamp_seconds": "snapshotCreated",
    "chromasnap_reader_tail_deltas": "tailDeltas",
    "chromasnap_reader_refresh_failing": "refreshFailing",
    "chromasnap_reader_rejected_snapshots": "rejectedSnapshots",
}
RECENT_JOBS = 5


def selector(name: str, component: str | None = None) -> str:
    """Label selector of a collection's pods (or Jobs), by the operator's labels."""
    out = f"{LABEL_NAME}={APP_NAME},{LABEL_INSTANCE}={name}"
    return out + (f",{LABEL_COMPONENT}={component}" if component else "")


def parse_reader_metrics(text: str) -> dict[str, float]:
    """The reader gauges of :data:`READER_METRICS` from a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            base = sample.name.removesuffix("_total")
            if base in READER_METRICS and not sample.labels:
                out[READER_METRICS[base]] = float(sample.value)
    return out


def version_seq(version: str | None) -> int | None:
    """Lineage depth of a version name (``0000000007-1a2b3c4d`` -> 7)."""
    head = (version or "").split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _restarts(pod: Mapping[str, Any]) -> int:
    return sum(int(c.get("restartCount") or 0)
               for c in (pod.get("status") or {}).get("containerStatuses") or [])


def pod_summary(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Name, component, phase, readiness, restarts and node of a pod."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    return {
        "name": meta.get("name"),
        "component": (meta.get("labels") or {}).get(LABEL_COMPONENT),
        "phase": st.get("phase"),
        "ready": _pod_ready(pod),
        "restarts": _restarts(pod),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "started": st.get("startTime"),
    }


def reader_versions(kube: Kube, readers: list[dict[str, Any]],
                    current_seq: int | None) -> list[dict[str, Any]]:
    """Each reader pod with the snapshot it has loaded, from its ``/metrics``."""
    out = []
    for pod in readers:
        row = pod_summary(pod)
        name = str(row["name"])
        try:
            text = kube.request("GET", path("Pod", kube.namespace, f"{name}:{HTTP_PORT}",
                                            "proxy/metrics"), raw=True, timeout=5)
            metrics = parse_reader_metrics(text)
        except PluginError as e:
            row["metricsError"] = "/metrics not readable through the API server's pod " \
                f"proxy: {str(e).split('. This needs')[0]}"
        else:
            row.update(metrics)
            seq = metrics.get("snapshotSeq")
            if seq is not None and current_seq is not None:
                row["behind"] = max(0, current_seq - int(seq))
        out.append(row)
    return out


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """A compaction Job: trigger, times and outcome."""
    meta, st = job.get("metadata") or {}, job.get("status") or {}
    outcome = "running" if st.get("active") else "pending"
    for c in st.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            outcome = "succeeded" if c["type"] == "Complete" else f"failed ({c.get('reason')})"
    return {"name": meta.get("name"),
            "trigger": (meta.get("labels") or {}).get(LABEL_TRIGGER),
            "created": meta.get("creationTimestamp"),
            "completed": st.get("completionTime"), "outcome": outcome}


def collect(kube: Kube, name: str, *, metrics: bool = True) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data."""
    obj = kube.collection(name)
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    snapshot = dict(st.get("snapshot") or {})
    current_seq = version_seq(snapshot.get("version"))
    pods = kube.items("Pod", selector(name))
    readers = [p for p in pods if (p["metadata"].get("labels") or {}).get(
        LABEL_COMPONENT) == COMPONENT_READER]
    jobs = sorted(kube.items("Job", selector(name, COMPONENT_COMPACTOR)),
                  key=lambda j: str(j["metadata"].get("creationTimestamp") or ""), reverse=True)
    storage = spec.get("storage") or {}
    return {
        "name": name,
        "namespace": kube.namespace,
        "generation": meta.get("generation"),
        "observedGeneration": st.get("observedGeneration"),
        "bucketUrl": f"s3://{storage.get('bucket')}/{storage.get('prefix')}",
        "conditions": [c for t in CONDITION_TYPES if (c := condition(obj, t))]
        + [c for c in st.get("conditions") or [] if c.get("type") not in CONDITION_TYPES],
        "snapshot": snapshot | ({"seq": current_seq} if current_seq is not None else {}),
        "pendingDeltas": st.get("pendingDeltas"),
        "writers": st.get("writers") or {},
        "readers": st.get("readers") or {},
        "lastCompaction": st.get("lastCompaction") or {},
        "readerPods": (reader_versions(kube, readers, current_seq) if metrics
                       else [pod_summary(p) for p in readers]),
        "pods": [pod_summary(p) for p in pods if p not in readers],
        "recentJobs": [job_summary(j) for j in jobs[:RECENT_JOBS]],
    }


def _age(ts: str | None, now: datetime | None = None) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    secs = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def _state(p: Mapping[str, Any]) -> str:
    if p["phase"] != "Running":
        return str(p["phase"] or "?")
    return f"Running, {'ready' if p['ready'] else 'not ready'}"


def _reader_line(r: Mapping[str, Any]) -> str:
    state = _state(r)
    if "metricsError" in r:
        loaded = f"loaded version unknown ({r['metricsError']})"
    elif "snapshotSeq" in r:
        seq = int(r["snapshotSeq"])
        behind = r.get("behind")
        where = ("current" if behind == 0 else f"{behind} behind" if behind else "")
        loaded = f"snapshot seq {seq}" + (f" ({where})" if where else "")
        if r.get("tailDeltas") is not None:
            loaded += f", {int(r['tailDeltas'])} tail deltas"
        if r.get("refreshFailing"):
            loaded += ", REFRESH FAILING"
    else:
        loaded = "no snapshot loaded"
    return f"  {r['name']}  {state}, {r['restarts']} restarts; {loaded}"


def header(kind: str, s: Mapping[str, Any]) -> list[str]:
    """The first lines of a resource's page: identity, generations, conditions."""
    gen, seen = s.get("generation"), s.get("observedGeneration")
    lag = "" if gen == seen else "  (the operator has not caught up with the latest spec)"
    lines = [f"{kind} {s['namespace']}/{s['name']}  {s['bucketUrl']}",
             f"generation {gen}, observed {seen}{lag}", "", "Conditions:"]
    if not s["conditions"]:
        lines.append("  (none yet: is the operator running?)")
    for c in s["conditions"]:
        lines.append(f"  {c.get('type'):<18} {c.get('status'):<8} {c.get('reason', ''):<24} "
                     f"{_age(c.get('lastTransitionTime')):>5}  {c.get('message', '')}")
    return lines


def render(s: Mapping[str, Any]) -> str:
    """The human-readable page."""
    lines = header("ChromaCollection", s)
    snap = s["snapshot"]
    lines.append("")
    if snap.get("version"):
        lines.append(f"Snapshot:        {snap['version']} (seq {snap.get('seq')}), "
                     f"{snap.get('records')} records, {snap.get('bytes')} bytes, "
                     f"{snap.get('segments', 0)} segments, "
                     f"created {_age(snap.get('createdAt'))} ago")
    else:
        lines.append("Snapshot:        none published yet")
    lines.append(f"Pending deltas:  {s.get('pendingDeltas', '-')}")
    w, r = s["writers"], s["readers"]
    lines.append(f"Writers:         {w.get('ready', 0)}/{w.get('replicas', 0)} ready")
    lines.append(f"Readers:         {r.get('ready', 0)}/{r.get('replicas', 0)} ready")
    last = s["lastCompaction"]
    if last:
        lines.append(
            f"Last compaction: {last.get('result')} ({last.get('reason')}) "
            f"{_age(last.get('time'))} ago in {last.get('durationSeconds', '?')}s; "
            f"{last.get('deltasFolded', 0)} deltas, {last.get('recordsFolded', 0)} records"
            + (f" -> {last['snapshotVersion']}" if last.get("snapshotVersion") else "")
            + f"; by {last.get('identity', '?')}")
        if last.get("message"):
            lines.append(f"                 {last['message']}")
    else:
        lines.append("Last compaction: none reported yet")
    lines += ["", "Reader pods (loaded snapshot from each pod's /metrics):"]
    lines += [_reader_line(p) for p in s["readerPods"]] or ["  (none)"]
    if s["pods"]:
        lines += ["", "Other pods:"]
        lines += [f"  {p['name']}  {p['component']}  {_state(p)}, {p['restarts']} restarts"
                  for p in s["pods"]]
    lines += ["", "Recent compaction Jobs:"]
    lines += [f"  {j['name']}  {j['trigger'] or '?'}  {j['outcome']}  "
              f"created {_age(j['created'])} ago" for j in s["recentJobs"]] or ["  (none)"]
    return "\n".join(lines)
