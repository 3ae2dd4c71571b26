"""Operator benchmarks on a real control plane (no peer: the targets are absolute).

- ``operator_reconcile``: time from a ChromaCollection being created to every one of
  its 13 children existing, median over ~20 collections created one after another.
  Watches on the kinds the operator applies last (RoleBinding, Deployments,
  PodDisruptionBudgets, the CronJob) timestamp each child's arrival; the first wave
  (ConfigMap, ServiceAccount, Role, Lease, Services) is applied before them, and a
  final read checks all 13 exist.
- ``operator_rss_200``: resident memory of the operator process with 200
  collections reconciled and their Deployments reporting ready pods (kwok).

The operator runs as in the tests: the chart installed with helm, the command,
args and env of the chart's Deployment, the chart ServiceAccount's token.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import Result

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "tests", ROOT / "hack"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

RECONCILE_SAMPLES = 20
MANY = 200
MANAGED = "app.kubernetes.io/managed-by=chromasnap-operator"


def _wait(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB (10^6 bytes)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / 1e6
    return fields["VmRSS"], fields["VmHWM"]


def _body(name: str, ns: str, replicas: int) -> dict[str, Any]:
    from kubeops import collection_body

    return collection_body(
        name, ns,
        # workload identity (no Secret to check), one pod each: the operator's cost does
        # not depend on the number of pods, the test machine's does
        writer={"replicas": replicas}, reader={"replicas": replicas},
        compactor={"schedule": "0 3 1 1 *"},
    )


class ArrivalWatch:
    """Records when each managed Deployment, PDB and CronJob of a namespace first appears."""

    def __init__(self, kube_api: Any, ns: str) -> None:
        from kubernetes import client

        self.seen: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.watches: list[Any] = []
        apps, policy, batch, rbac = (
            client.AppsV1Api(kube_api), client.PolicyV1Api(kube_api),
            client.BatchV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api))
        lists = [("Deployment", apps.list_namespaced_deployment),
                 ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget),
                 ("CronJob", batch.list_namespaced_cron_job),
                 ("RoleBinding", rbac.list_namespaced_role_binding)]
        self.threads = [threading.Thread(target=self._run, args=(kind, fn, ns), daemon=True)
                        for kind, fn in lists]
        self.ready = threading.Barrier(len(self.threads) + 1)
        for t in self.threads:
            t.start()
        self.ready.wait(timeout=30)

    def _run(self, kind: str, list_fn: Callable[..., Any], ns: str) -> None:
        from kubernetes import watch

        w = watch.Watch()
        self.watches.append(w)
        rv = list_fn(ns, label_selector=MANAGED).metadata.resource_version
        self.ready.wait(timeout=30)
        try:
            for ev in w.stream(list_fn, ns, label_selector=MANAGED, resource_version=rv,
                               timeout_seconds=3600):
                if ev["type"] == "ADDED":
                    now = time.monotonic()
                    with self.lock:
                        self.seen.setdefault((kind, ev["object"].metadata.name), now)
        except Exception:  # noqa: S110 - stop() closes the stream under the reader
            pass

    def arrived(self, name: str) -> float | None:
        """When the last of ``name``'s six watched children arrived (None: not yet)."""
        wanted = [("Deployment", f"{name}-writer"), ("Deployment", f"{name}-reader"),
                  ("PodDisruptionBudget", f"{name}-writer"),
                  ("PodDisruptionBudget", f"{name}-reader"), ("CronJob", f"{name}-compactor"),
                  ("RoleBinding", f"{name}-chromasnap")]
        with self.lock:
            times = [self.seen.get(k) for k in wanted]
        return None if any(t is None for t in times) else max(t for t in times if t)

    def stop(self) -> None:
        for w in self.watches:
            w.stop()


def _all_children_exist(kube_api: Any, name: str, ns: str) -> bool:
    from chromasnap.operator.crd import ChromaCollection
    from chromasnap.operator.settings import OperatorSettings
    from chromasnap.operator.specs.children import desired_children
    from kubeops import Collections, get_manifest

    cc = ChromaCollection.from_body(Collections(kube_api).get(ns, name))
    return all(get_manifest(kube_api, m) is not None
               for m in desired_children(cc, OperatorSettings()))


def measure_reconcile(kube_api: Any, samples: int) -> list[float]:
    """Seconds from create to all children, for ``samples`` collections in a row."""
    from kubernetes import client

    from kubeops import Collections

    ns = "bench-reconcile"
    client.CoreV1Api(kube_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    colls = Collections(kube_api)
    watch = ArrivalWatch(kube_api, ns)
    out: list[float] = []
    try:
        for i in range(samples + 1):  # the first one warms up the operator's watches
            name = f"r{i:03d}"
            t0 = time.monotonic()
            colls.create(_body(name, ns, 1))
            done = _wait(f"{name}'s children", lambda name=name: watch.arrived(name),
                         timeout=60, interval=0.005)
            if not _all_children_exist(kube_api, name, ns):
                raise AssertionError(f"{name}: not all 13 children exist")
            if i > 0:
                out.append(done - t0)
    finally:
        watch.stop()
    return out


def measure_many(kube_api: Any, pid: int, count: int) -> dict[str, Any]:
    """RSS of the operator once ``count`` collections are reconciled and their pods ready."""
    from kubernetes import client

    from kubeops import GROUP, PLURAL, VERSION, Collections, raw

    core = client.CoreV1Api(kube_api)
    colls = Collections(kube_api)
    before_rss, _ = _rss_mb(pid)
    per_ns = 20
    t0 = time.monotonic()
    for n in range(count // per_ns):
        ns = f"bench-many-{n:02d}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        for i in range(per_ns):
            colls.create(_body(f"c{i:03d}", ns, 1))

    def reconciled() -> bool:
        items = (raw(kube_api, "GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}") or {})["items"]
        mine = [o for o in items if o["metadata"]["namespace"].startswith("bench-many-")]
        return len(mine) == count and all(
            (o.get("status") or {}).get("observedGeneration") == 1
            and (o.get("status") or {}).get("readers", {}).get("ready") == 1
            and (o.get("status") or {}).get("writers", {}).get("ready") == 1
            for o in mine)

    _wait(f"{count} collections reconciled with ready pods", reconciled, timeout=1200,
          interval=5.0)
    settled = time.monotonic() - t0
    samples = []
    for _ in range(10):
        samples.append(_rss_mb(pid))
        time.sleep(0.5)
    return {"rss": max(s[0] for s in samples), "hwm": max(s[1] for s in samples),
            "before": before_rss, "seconds_to_ready": round(settled, 1)}


def run() -> list[Result]:
    """Both operator benchmarks on a fresh control plane."""
    import cluster
    from kubernetes import config

    from kubeops import OPERATOR_NAMESPACE, OPERATOR_SA, RELEASE, ChartRelease, start_operator

    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-operator-"))
    # 200 collections have 400 ClusterIP Services: more than the test control plane's
    # default /24 service range holds.
    cluster.SERVICE_CIDR = "10.0.0.0/16"
    cp = cluster.ControlPlane(work / "cluster")
    cp.start()
    op = None
    try:
        _add_nodes(cp, 6)
        from kubeops import CHART, helm

        helm(cp, "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
             "--create-namespace", "--wait", "--timeout", "120s")
        kube_api = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
        _wait("the CRD", lambda: _crd_ready(kube_api), timeout=60)
        op = start_operator(cp, kube_api, ChartRelease(RELEASE, OPERATOR_NAMESPACE,
                                                       OPERATOR_SA, ""), work / "operator")
        lat = measure_reconcile(kube_api, RECONCILE_SAMPLES)
        many = measure_many(kube_api, op.proc.pid, MANY)
        errors = sum(1 for line in op.log_text().splitlines() if '"level": "error"' in line)
    finally:
        if op is not None:
            op.stop()
        cp.stop()
    median = statistics.median(lat)
    print(f"operator_reconcile: median {median:.3f}s, p90 "
          f"{statistics.quantiles(lat, n=10)[-1]:.3f}s, max {max(lat):.3f}s over {len(lat)}")
    print(f"operator_rss_200: {many['rss']:.1f} MB (peak {many['hwm']:.1f} MB; "
          f"{many['before']:.1f} MB before, with the {RECONCILE_SAMPLES + 1} collections of "
          f"the latency run; all ready after {many['seconds_to_ready']}s)")
    return [
        Result(
            name="operator_reconcile", value=round(median, 4), peer=None, unit="s",
            target="≤ 1 s", n=len(lat), higher_is_better=False,
            notes="ChromaCollection created → all 13 children exist (median)",
            extra={"samples_s": [round(x, 4) for x in lat], "max_s": round(max(lat), 4),
                   "p90_s": round(statistics.quantiles(lat, n=10)[-1], 4)},
        ),
        Result(
            name="operator_rss_200", value=round(many["rss"], 1), peer=None, unit="MB",
            target="≤ 150 MB", n=MANY, higher_is_better=False,
            notes="operator RSS with 200 collections reconciled and their pods ready",
            extra={"peak_rss_mb": round(many["hwm"], 1),
                   "rss_before_mb": round(many["before"], 1),
                   "seconds_until_all_ready": many["seconds_to_ready"],
                   "operator_error_log_lines": errors},
        ),
    ]


def _add_nodes(cp: Any, count: int) -> None:
    """More kwok nodes: one holds 110 pods, and 200 collections run ~600."""
    import cluster

    for i in range(1, count + 1):
        name = f"kwok-node-{i}"
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
        status, body = cp.api("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {cluster.KWOK_NODE_ANNOTATION: "fake",
                                         "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "type": "kwok"}},
            "status": {"allocatable": resources, "capacity": resources},
        })
        if status != 201:
            raise RuntimeError(f"creating node {name}: HTTP {status}: {body}")


def _crd_ready(kube_api: Any) -> bool:
    from kubernetes import client

    from kubeops import GROUP, PLURAL

    crd: Any = client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(
        f"{PLURAL}.{GROUP}")
    return any(c.type == "Established" and c.status == "True"
               for c in crd.status.conditions or [])
