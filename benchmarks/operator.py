"""Operator benchmarks on a real control plane (no peer: the targets are absolute).

- ``operator_reconcile``: time from a ChromaCollection being created to every one of
  its 13 children existing, median over ~20 collections created one after another.
  Watches on the kinds the operator applies last (RoleBinding, Deployments,
  PodDisruptionBudgets, the CronJob) timestamp each child's arrival; the first wave
  (ConfigMap, ServiceAccount, Role, Lease, Services) is applied before them, and a
  final read checks all 13 exist.
- ``operator_rss_200``: resident memory of the operator process with 200
  collections reconciled and their Deployments reporting ready pods (kwok).

``--only database`` (:func:`run_database`, pools on MinIO):

- ``operator_reconcile_database``: a ChromaDatabase created → all 7 of its children
  exist (the Deployment, PodDisruptionBudget and RoleBinding, applied last, are
  watched; a read checks the rest), median over 10 created one after another.
- ``declared_collection_ready``: a ChromaCollection with ``spec.database`` created →
  its ``Ready=True`` (``InPool``), median over 10, in a pool of 10,000 collections
  whose pod runs as a local process against MinIO with exactly the env the operator
  rendered (tests/kubeops.py ``PodRunner``, as tests/integration/operator/
  test_database.py does). The operator updates the pool's Role (the pod may then
  patch that resource's status); the pod's declared loop (every 2 s) creates the
  collection and reports it. Each one is created at a random point of that loop
  (after a uniform 0-2 s pause), as a GitOps sync would be.
- ``operator_rss_pool_10k``: the operator's RSS once that pool's status reports
  10,000 collections and 200 declared ChromaCollections are Ready (the 10 above
  and 190 naming collections already in the pool). The pool's catalog is written as
  one checkpoint before its pod starts (what a pool that created them one by one
  would start from): the operator never reads the bucket, only the status.

The operator runs as in the tests: the chart installed with helm, the command,
args and env of the chart's Deployment, the chart ServiceAccount's token.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.report import Result

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "tests", ROOT / "hack"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

RECONCILE_SAMPLES = 20
MANY = 200
DATABASE_SAMPLES = 10
DECLARED_SAMPLES = 10
POOL_COLLECTIONS = 10_000
DECLARED = 200
DB_DIM = 384
#: The pool pods' declared-collections loop (pool/process.py, Intervals.declare).
DECLARE_LOOP_S = 2.0
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
        return self.arrived_all([
            ("Deployment", f"{name}-writer"), ("Deployment", f"{name}-reader"),
            ("PodDisruptionBudget", f"{name}-writer"), ("PodDisruptionBudget", f"{name}-reader"),
            ("CronJob", f"{name}-compactor"), ("RoleBinding", f"{name}-chromasnap")])

    def arrived_all(self, wanted: list[tuple[str, str]]) -> float | None:
        """When the last of ``wanted`` (kind, name) arrived (None: not yet)."""
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


@contextmanager
def _operator_on_control_plane(work: Path, nodes: int) -> Iterator[tuple[Any, Any, Any]]:
    """A fresh control plane with the chart installed and the operator running as in
    the tests: (control plane, API client, operator process)."""
    import cluster
    from kubernetes import config

    from kubeops import (
        CHART,
        OPERATOR_NAMESPACE,
        OPERATOR_SA,
        RELEASE,
        ChartRelease,
        helm,
        start_operator,
    )

    cp = cluster.ControlPlane(work / "cluster")
    cp.start()
    op = None
    try:
        _add_nodes(cp, nodes)
        helm(cp, "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
             "--create-namespace", "--wait", "--timeout", "120s")
        kube_api = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
        _wait("the CRD", lambda: _crd_ready(kube_api), timeout=60)
        op = start_operator(cp, kube_api, ChartRelease(RELEASE, OPERATOR_NAMESPACE,
                                                       OPERATOR_SA, ""), work / "operator")
        yield cp, kube_api, op
    finally:
        if op is not None:
            op.stop()
        cp.stop()


def _error_lines(op: Any) -> int:
    return sum(1 for line in op.log_text().splitlines() if '"level": "error"' in line)


def run() -> list[Result]:
    """Both operator benchmarks on a fresh control plane."""
    import cluster

    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-operator-"))
    # 200 collections have 400 ClusterIP Services: more than the test control plane's
    # default /24 service range holds.
    cluster.SERVICE_CIDR = "10.0.0.0/16"
    with _operator_on_control_plane(work, 6) as (_, kube_api, op):
        lat = measure_reconcile(kube_api, RECONCILE_SAMPLES)
        many = measure_many(kube_api, op.proc.pid, MANY)
        errors = _error_lines(op)
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


# --- ChromaDatabase: the pool's children, declared collections, the operator at 10k ---


def _database_body(name: str, ns: str, bucket: str, endpoint: str) -> dict[str, Any]:
    from kubeops import GROUP, VERSION

    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaDatabase",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "storage": {"bucket": bucket, "prefix": f"pools/{name}", "endpoint": endpoint,
                        "credentialsSecretRef": {"name": "minio", "accessKeyIdKey": "accessKey",
                                                 "secretAccessKeyKey": "secretKey"}},
            "pool": {"replicas": 1, "cacheSize": "1Gi"},
            # the pods report the totals into the status after each pass
            "compactor": {"intervalSeconds": 1},
        },
    }


def _declared_body(name: str, ns: str, database: str, collection: str) -> dict[str, Any]:
    from kubeops import GROUP, VERSION

    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaCollection",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"database": database,
                     "collection": {"name": collection, "dimension": DB_DIM}}}


def _namespace_with_credentials(kube_api: Any, ns: str, minio: Any) -> None:
    from kubernetes import client

    from kubeops import create_secret

    client.CoreV1Api(kube_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    create_secret(kube_api, ns, "minio", {"accessKey": minio.access_key,
                                          "secretKey": minio.secret_key})


def _all_database_children_exist(kube_api: Any, name: str, ns: str) -> bool:
    from kubernetes import client

    from chromasnap.operator.database import ChromaDatabase
    from chromasnap.operator.settings import OperatorSettings
    from chromasnap.operator.specs.database import database_children
    from chromasnap.resource import DATABASE_PLURAL
    from kubeops import GROUP, VERSION, get_manifest

    body = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, ns, DATABASE_PLURAL, name)
    return all(get_manifest(kube_api, m) is not None
               for m in database_children(ChromaDatabase.from_body(body), OperatorSettings()))


def measure_database_reconcile(kube_api: Any, minio: Any, samples: int) -> list[float]:
    """Seconds from a ChromaDatabase's create to all 7 of its children, ``samples`` in a
    row (the Deployment, PodDisruptionBudget and RoleBinding, applied last, are watched;
    a read then checks every child exists)."""
    from kubernetes import client

    from chromasnap.resource import DATABASE_PLURAL
    from kubeops import GROUP, VERSION

    ns = "bench-databases"
    _namespace_with_credentials(kube_api, ns, minio)
    bucket = minio.create_bucket()
    api = client.CustomObjectsApi(kube_api)
    watch = ArrivalWatch(kube_api, ns)
    out: list[float] = []
    try:
        for i in range(samples + 1):  # the first one warms up the operator's watches
            name = f"db{i:03d}"
            wanted = [("RoleBinding", f"{name}-pool"), ("Deployment", f"{name}-pool"),
                      ("PodDisruptionBudget", f"{name}-pool")]
            t0 = time.monotonic()
            api.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL,
                                                _database_body(name, ns, bucket,
                                                               minio.endpoint))
            done = _wait(f"{name}'s children", lambda w=wanted: watch.arrived_all(w),
                         timeout=60, interval=0.005)
            if not _all_database_children_exist(kube_api, name, ns):
                raise AssertionError(f"{name}: not all 7 children exist")
            if i > 0:
                out.append(done - t0)
    finally:
        watch.stop()
    return out


def seed_pool_catalog(store: Any, count: int) -> int:
    """Write a pool catalog of ``count`` collections (Chroma's default configuration, no
    records) as one checkpoint: what a pool that created them one by one would start
    from, in seconds instead of minutes. Returns the checkpoint's bytes."""
    import uuid

    from benchmarks.catalog import _chroma_defaults
    from chromasnap.storage.catalog import (
        CollectionEntry,
        CreateCollection,
        CreateDatabase,
        CreateTenant,
        DatabaseEntry,
        PoolCatalog,
        apply,
        to_checkpoint,
    )
    from chromasnap.storage.cataloglog import checkpoint_key
    from chromasnap.storage.manifest import now

    tenant, db = "default_tenant", "default_database"
    config, schema = _chroma_defaults()
    state = PoolCatalog()
    at = now()
    ops: list[Any] = [CreateTenant(tenant=tenant, at=at), CreateDatabase(entry=DatabaseEntry(
        id=str(uuid.uuid4()), name=db, tenant=tenant, created_at=at))]
    ops += [CreateCollection(entry=CollectionEntry(
        id=str(uuid.uuid4()), name=f"tenant-{i:05d}", tenant=tenant, database=db,
        configuration_json=config, schema=schema, created_at=at)) for i in range(count)]
    for seq, op in enumerate(ops, start=1):
        apply(state, seq, op)
    data = to_checkpoint(state).model_dump_json(by_alias=True).encode()
    store.put(checkpoint_key(state.seq), data)
    return len(data)


def _member_ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "InPool"
               for c in (obj.get("status") or {}).get("conditions") or [])


def measure_pool(cp: Any, kube_api: Any, pid: int, minio: Any, work: Path,
                 collections: int, declared: int, samples: int) -> dict[str, Any]:
    """One pool of ``collections`` collections with a pod running (a local process, as
    in tests/integration/operator/test_database.py): the seconds from a declared
    ChromaCollection's create to Ready=True (InPool), ``samples`` in a row, then
    ``declared`` in all and the operator's RSS once every one is Ready and the pool's
    status reports ``collections``."""
    from kubernetes import client

    from chromasnap.resource import DATABASE_PLURAL
    from chromasnap.storage.s3 import S3Store
    from kubeops import GROUP, PLURAL, VERSION, PodRunner, pod_template

    ns, name = "bench-pool", "big"
    _namespace_with_credentials(kube_api, ns, minio)
    bucket = minio.create_bucket()
    # the samples' collections are new ones; the other declared ones name seeded ones
    seeded = collections - samples - 1
    t = time.monotonic()
    checkpoint_bytes = seed_pool_catalog(
        S3Store(f"s3://{bucket}/pools/{name}", endpoint_url=minio.endpoint), seeded)
    print(f"pool catalog of {seeded:,} collections written in {time.monotonic() - t:.1f} s "
          f"({checkpoint_bytes / 1e6:.1f} MB)")
    before_rss, _ = _rss_mb(pid)
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL,
                                        _database_body(name, ns, bucket, minio.endpoint))
    apps = client.AppsV1Api(kube_api)

    def deployment() -> bool:
        try:
            apps.read_namespaced_deployment(f"{name}-pool", ns)
        except client.ApiException:
            return False
        return True

    _wait("the pool's Deployment", deployment, timeout=60)
    runner = PodRunner(cp, kube_api, ns, work / "pool-pods")
    try:
        pod = runner.start(pod_template(kube_api, "Deployment", ns, f"{name}-pool"),
                           f"{name}-pool-a", serve=True)
        t = time.monotonic()
        pod.wait_http("/readyz", timeout=180)
        print(f"pool pod ready in {time.monotonic() - t:.1f} s at {seeded:,} collections")

        def status() -> dict[str, Any]:
            return dict(api.get_namespaced_custom_object(
                GROUP, VERSION, ns, DATABASE_PLURAL, name).get("status") or {})

        _wait(f"the pool's status at {seeded:,} collections",
              lambda: status().get("collections") == seeded, timeout=120)

        def member(n: str) -> dict[str, Any]:
            return dict(api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, n))

        lat: list[float] = []
        rng = random.Random(19)
        for i in range(samples + 1):  # the first one: the pod's first declaration
            n = f"new-{i:03d}"
            # Applied at a random point of the pod's 2 s declaration loop, as a GitOps
            # sync is (right after the last one became Ready would wait a whole loop).
            time.sleep(rng.uniform(0, DECLARE_LOOP_S))
            t0 = time.monotonic()
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                _declared_body(n, ns, name, n))
            _wait(f"{n} Ready", lambda n=n: _member_ready(member(n)), timeout=60,
                  interval=0.02)
            if i > 0:
                lat.append(time.monotonic() - t0)
        t0 = time.monotonic()
        for i in range(declared - samples - 1):
            n = f"tenant-{i:05d}"
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                _declared_body(n, ns, name, n))

        def all_ready() -> bool:
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            return len(items) == declared and all(_member_ready(o) for o in items)

        _wait(f"{declared} declared collections Ready", all_ready, timeout=600, interval=2.0)
        _wait(f"the pool's status at {collections:,} collections",
              lambda: status().get("collections") == collections, timeout=120)
        settled = time.monotonic() - t0
        rss = []
        for _ in range(10):
            rss.append(_rss_mb(pid))
            time.sleep(0.5)
        pool_rss, _ = _rss_mb(pod.proc.pid)
    finally:
        runner.stop_all()
    return {"latency": lat, "rss": max(r[0] for r in rss), "hwm": max(r[1] for r in rss),
            "before": before_rss, "seconds_to_ready": round(settled, 1),
            "pool_rss": pool_rss, "checkpoint_bytes": checkpoint_bytes,
            "status_collections": status().get("collections")}


def run_database(minio: Any) -> list[Result]:
    """The ChromaDatabase benchmarks on a fresh control plane, pools on ``minio``."""
    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-database-"))
    with _operator_on_control_plane(work, 1) as (cp, kube_api, op):
        lat = measure_database_reconcile(kube_api, minio, DATABASE_SAMPLES)
        pool = measure_pool(cp, kube_api, op.proc.pid, minio, work, POOL_COLLECTIONS,
                            DECLARED, DECLARED_SAMPLES)
        errors = _error_lines(op)
    median = statistics.median(lat)
    ready = pool["latency"]
    print(f"operator_reconcile_database: median {median:.3f}s, max {max(lat):.3f}s over "
          f"{len(lat)}")
    print(f"declared_collection_ready: median {statistics.median(ready):.3f}s, max "
          f"{max(ready):.3f}s over {len(ready)}")
    print(f"operator_rss_pool_10k: {pool['rss']:.1f} MB (peak {pool['hwm']:.1f} MB; "
          f"{pool['before']:.1f} MB before the pool; the pool pod {pool['pool_rss']:.1f} MB; "
          f"all {DECLARED} Ready {pool['seconds_to_ready']} s after the first create)")
    return [
        Result(
            name="operator_reconcile_database", value=round(median, 4), peer=None, unit="s",
            target="≤ 1 s", n=len(lat), higher_is_better=False,
            notes="ChromaDatabase created → all 7 children exist (median)",
            extra={"samples_s": [round(x, 4) for x in lat], "max_s": round(max(lat), 4)},
        ),
        Result(
            name="declared_collection_ready", value=round(statistics.median(ready), 4),
            peer=None, unit="s", target="≤ 5 s", n=len(ready), higher_is_better=False,
            notes=f"ChromaCollection with spec.database created → Ready=True (InPool), in a "
                  f"pool of {POOL_COLLECTIONS:,} collections with one pod running (median)",
            extra={"samples_s": [round(x, 4) for x in ready],
                   "max_s": round(max(ready), 4)},
        ),
        Result(
            name="operator_rss_pool_10k", value=round(pool["rss"], 1), peer=None, unit="MB",
            target="≤ 150 MB", n=DECLARED, higher_is_better=False,
            notes=f"operator RSS with one pool of {POOL_COLLECTIONS:,} collections (its status "
                  f"says so) and {DECLARED} declared ChromaCollections Ready, plus the "
                  f"{DATABASE_SAMPLES + 1} ChromaDatabases of the latency run",
            extra={"peak_rss_mb": round(pool["hwm"], 1),
                   "rss_before_pool_mb": round(pool["before"], 1),
                   "pool_pod_rss_mb": round(pool["pool_rss"], 1),
                   "pool_status_collections": pool["status_collections"],
                   "catalog_checkpoint_bytes": pool["checkpoint_bytes"],
                   "seconds_until_all_declared_ready": pool["seconds_to_ready"],
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
