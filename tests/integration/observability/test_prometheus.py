"""A real Prometheus scrapes the real operator, writer and reader, and evaluates every
alert and every dashboard query of the chart.

On the real control plane (see tests/kubeops.py): the chart's operator, a
ChromaCollection on MinIO, its writer and reader run as processes from the pod
templates the operator made, and compactions run from its Job templates — their
results reach Prometheus through the collection's status and the operator's
``/metrics`` (the compactor pod itself is never scraped: it exits). Prometheus
(built by ``hack/build-tools.sh``) listens on loopback only and scrapes every
second, with the rule file the chart renders and scrape labels as the chart's
ServiceMonitors produce them.

The test then asks Prometheus' HTTP API for every alert expression and every
dashboard query: each evaluates without error, the series they read exist, the rules
evaluate healthy, and the Lease contention alert fires after a run that found the
Lease held.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chromadb
import cluster  # hack/cluster.py
import numpy as np
import pytest
import yaml
from kubernetes import client
from obssupport import (
    alerts,
    binary,
    dashboard,
    dashboard_queries,
    helm_template,
    rule_groups,
    series_in,
    substitute,
    write_rule_file,
)

from chromasnap.operator import schedule
from chromasnap.resource import COMPACT_NOW_ANNOTATION, DATABASE_PLURAL, GROUP, VERSION
from chromasnap.storage import manifest as mf
from kubeops import (
    Collections,
    OperatorProcess,
    PodProcess,
    Runner,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    create_secret,
    maybe,
    operator,  # noqa: F401 - fixture
    pod_template,
    stop_process,
    wait_for,
)
from minio_server import MinioServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
NAME = "docs"
POOL = "team"  # a ChromaDatabase in the same namespace
DIM = 8
N = 30
#: Stands in for Grafana's $__rate_interval (four scrape intervals and more).
RATE_INTERVAL = "30s"
#: Dashboard series that exist only once something went wrong (a labelled counter gets
#: its first series with its first error); their queries may return nothing.
ONLY_ON_ERRORS = {"chromasnap_reader_errors_total"}


# --- Prometheus ---------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A Prometheus server on loopback."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; the decoded JSON (``status`` is checked by the caller)."""
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{q}", timeout=10) as r:  # noqa: S310
                out: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query, with its error
            out = json.loads(e.read())
        return out

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query."""
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        """An instant query that must succeed; its samples."""
        res = self.query(expr)
        assert res["status"] == "success", (expr, res)
        samples: list[dict[str, Any]] = res["data"]["result"]
        return samples

    def value(self, expr: str) -> float | None:
        """The value of a query that returns at most one sample."""
        samples = self.vector(expr)
        assert len(samples) <= 1, (expr, samples)
        return float(samples[0]["value"][1]) if samples else None

    def stop(self) -> None:
        stop_process(self.proc, grace=30)


def start_prometheus(workdir: Path, rules: Path, targets: dict[str, Any]) -> Prometheus:
    """Prometheus with ``rules``, scraping every second. ``targets``: the operator's
    address, and (address, labels) of each workload."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                # as the chart's operator ServiceMonitor: honorLabels keeps each series'
                # own namespace; the target's is the operator pod's
                "job_name": "chromasnap-operator",
                "honor_labels": True,
                "static_configs": [{"targets": [targets["operator"]],
                                    "labels": {"namespace": "chromasnap-system"}}],
            },
            {
                # as the chart's workloads ServiceMonitor: namespace and pod from service
                # discovery, collection and component from its relabelings
                "job_name": "chromasnap-workloads",
                "static_configs": [{"targets": [addr], "labels": labels}
                                   for addr, labels in targets["workloads"]],
            },
        ],
    }
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    check = subprocess.run([str(binary("promtool")), "check", "config", str(cfg)],
                           capture_output=True, text=True, check=False, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [str(binary("prometheus")), f"--config.file={cfg}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=fh, stderr=subprocess.STDOUT, cwd=workdir,
            preexec_fn=cluster._die_with_parent)  # noqa: PLW1509
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for("Prometheus to be ready", ready, timeout=60)
    return prom


# --- the collection ---------------------------------------------------------------------


@dataclass
class Scene:
    """What the test set up, for the assertions."""

    ns: str
    prom: Prometheus
    colls: Collections
    rendered: list[dict[str, Any]]
    procs: dict[str, PodProcess] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return dict(self.colls.get(self.ns, NAME).get("status") or {})


def metered(operator: OperatorProcess) -> str:  # noqa: F811
    """The session operator's metrics address (``kubeops.start_operator`` moves the
    chart's 0.0.0.0:8081 to a free loopback port)."""
    assert operator.env["CHROMASNAP_OPERATOR_METRICS_HOST"] == "127.0.0.1"
    addr = f"127.0.0.1:{operator.env['CHROMASNAP_OPERATOR_METRICS_PORT']}"

    def serving() -> bool:
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
                return b"chromasnap_operator_collections" in r.read()
        except OSError:
            return False

    wait_for("the operator's /metrics", serving, timeout=30)
    return addr


def run_job(runner: Runner, kube_api: Any, ns: str, job: str) -> dict[str, Any]:
    """Run a compaction Job's pod as a process; its JSON result (termination message)."""
    wait_for(f"Job {job}", lambda: maybe(
        lambda: client.BatchV1Api(kube_api).read_namespaced_job(job, ns)), timeout=30)
    p = runner.run(pod_template(kube_api, "Job", ns, job), f"{job}-{uuid.uuid4().hex[:5]}")
    assert p.proc.returncode == 0, p.log_text()[-4000:]
    result: dict[str, Any] = json.loads(p.files["termination-log"].read_text())
    return result


def compact_now(colls: Collections, runner: Runner, kube_api: Any, ns: str, uid: str,
                request: str) -> dict[str, Any]:
    """The compact-now annotation, then the Job it starts; waits for the report."""
    colls.patch(ns, NAME, {"metadata": {"annotations": {
        COMPACT_NOW_ANNOTATION: request}}})
    job = f"{NAME}-compactor-{schedule.compaction_run_id(uid, request)}"
    result = run_job(runner, kube_api, ns, job)
    wait_for(f"{job}'s report in the status", lambda: (
        (colls.get(ns, NAME).get("status") or {}).get("lastCompaction", {}).get("time")
        and result), timeout=30)
    return result


class LeaseHolder:
    """Holds the collection's Lease as another compactor would: renews it every 0.5 s."""

    def __init__(self, kube_api: Any, ns: str, name: str) -> None:
        self.api = client.CoordinationV1Api(kube_api)
        self.ns, self.name = ns, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _write(self, holder: str | None) -> None:
        lease: Any = self.api.read_namespaced_lease(self.name, self.ns)
        now = datetime.now(UTC)
        lease.spec.holder_identity = holder
        lease.spec.renew_time = now if holder else None
        lease.spec.acquire_time = lease.spec.acquire_time or now
        lease.spec.lease_duration_seconds = lease.spec.lease_duration_seconds or 10
        self.api.replace_namespaced_lease(self.name, self.ns, lease)

    def _renew(self) -> None:
        while not self._stop.wait(0.5):
            # a conflict with the compactor reading the Lease: renew on the next tick
            with contextlib.suppress(client.ApiException):
                self._write("another-compactor")

    def __enter__(self) -> LeaseHolder:
        self._write("another-compactor")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._write(None)


@pytest.fixture(scope="module")
def scene(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
          minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    op_addr = metered(operator)
    core = client.CoreV1Api(kube_api)
    ns = f"obs-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    work = tmp_path_factory.mktemp("observability")
    runner = Runner(control_plane, kube_api, ns, work / "pods")
    (work / "pods").mkdir(exist_ok=True)
    prom: Prometheus | None = None
    try:
        bucket = minio.create_bucket()
        create_secret(kube_api, ns, "minio-credentials",
                      {"AWS_ACCESS_KEY_ID": minio.access_key,
                       "AWS_SECRET_ACCESS_KEY": minio.secret_key})
        colls = Collections(kube_api)
        created = colls.create(collection_body(
            NAME, ns,
            collection={"name": "docs", "dimension": DIM, "space": "l2"},
            storage={"bucket": bucket, "prefix": "collections/docs", "endpoint": minio.endpoint,
                     "credentialsSecretRef": {"name": "minio-credentials"}},
            # does not fire during the test: compactions are run on demand
            compactor={"schedule": "0 3 1 1 *", "leaseDurationSeconds": 10},
            reader={"replicas": 1, "pollIntervalSeconds": 1, "cacheSize": "2Gi"},
            retention={"deltaGracePeriodSeconds": 5},
        ))
        uid = created["metadata"]["uid"]
        # the first snapshot, from the operator's bootstrap Job
        first = run_job(runner, kube_api, ns, f"{NAME}-compactor-init")
        assert first["result"] == "succeeded", first
        colls.wait_condition(ns, NAME, "SnapshotAvailable", "True", timeout=60)

        wport, rport, iport = free_port(), free_port(), free_port()
        writer_pod, reader_pod = f"{NAME}-writer-6f7d-abcde", f"{NAME}-reader-5c8b-fghij"
        writer = runner.start_pod(
            pod_template(kube_api, "Deployment", ns, f"{NAME}-writer"), writer_pod,
            services={}, port=wport,
            internal={f"{NAME}-readers-headless": f"127.0.0.1:{iport}"})
        reader = runner.start_pod(
            pod_template(kube_api, "Deployment", ns, f"{NAME}-reader"), reader_pod,
            services={f"{NAME}-writer": f"127.0.0.1:{wport}"}, port=rport,
            internal_port=iport)
        writer.wait_http("/healthz")
        reader.wait_http("/readyz")

        # A pool (ChromaDatabase) beside the collection: its pod from its Deployment.
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, ns, DATABASE_PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaDatabase",
                "metadata": {"name": POOL, "namespace": ns},
                "spec": {"storage": {"bucket": bucket, "prefix": f"pools/{POOL}",
                                     "endpoint": minio.endpoint,
                                     "credentialsSecretRef": {
                                         "name": "minio-credentials",
                                         "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
                                         "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"}},
                         "pool": {"replicas": 1, "cacheSize": "1Gi"},
                         "compactor": {"intervalSeconds": 1}}})
        wait_for("the pool's Deployment", lambda: maybe(
            lambda: client.AppsV1Api(kube_api).read_namespaced_deployment(f"{POOL}-pool", ns)),
            timeout=30)
        pool_pod = f"{POOL}-pool-7d9c-klmno"
        pool = runner.start(pod_template(kube_api, "Deployment", ns, f"{POOL}-pool"), pool_pod,
                            serve=True)
        pool.wait_http("/readyz")

        rendered = helm_template(work, "prometheusRule.enabled=true",
                                 "prometheusRule.leaseContentionPerHour=1")
        rules = write_rule_file(rendered, work / "chromasnap-rules.yaml")
        labels = {"namespace": ns, "collection": NAME}
        prom = start_prometheus(work, rules, {
            "operator": op_addr,
            "workloads": [
                (f"127.0.0.1:{wport}", labels | {"component": "writer", "pod": writer_pod}),
                (f"127.0.0.1:{rport}", labels | {"component": "reader", "pod": reader_pod}),
                # the workloads ServiceMonitor on the pool's Service: collection = its name
                (f"127.0.0.1:{pool.port}", {"namespace": ns, "collection": POOL,
                                            "component": "pool", "pod": pool_pod}),
            ],
        })
        # Counters are scraped at 0 before anything happens, so increase() sees each run.
        wait_for("every target up", lambda: prom.value(
            'count(up == 1)') == 4, timeout=60, interval=0.5)
        wait_for("the lock acquisition failure counter at 0", lambda: prom.value(
            f'chromasnap_collection_lock_acquisition_failures_total{{namespace="{ns}"}}') == 0,
            timeout=60, interval=0.5)

        # Ingest through the writer and through the reader (forwarded), read, and one
        # client error.
        vecs = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
        ids = [f"doc-{i:03d}" for i in range(N)]
        to_writer = chromadb.HttpClient(host="127.0.0.1", port=wport).get_collection("docs")
        to_reader = chromadb.HttpClient(host="127.0.0.1", port=rport).get_collection("docs")
        half = N // 2
        to_writer.add(ids=ids[:half], embeddings=vecs[:half].tolist(),
                      documents=[f"text {i}" for i in range(half)])
        to_reader.add(ids=ids[half:], embeddings=vecs[half:].tolist(),
                      documents=[f"text {i}" for i in range(half, N)])
        to_writer.upsert(ids=ids[:3], embeddings=vecs[:3].tolist())
        assert to_reader.count() == N
        for i in range(5):
            assert to_reader.query(query_embeddings=[vecs[i].tolist()],
                                   n_results=1)["ids"] == [[ids[i]]]
        to_reader.get(ids=ids[:2])
        with pytest.raises(Exception, match=r"(?i)not.*found|does not exist"):
            chromadb.HttpClient(host="127.0.0.1", port=rport).get_collection("no-such")

        # The pool: two collections written, one read (loaded), through its pod.
        in_pool = chromadb.HttpClient(host="127.0.0.1", port=pool.port)
        for c in ("tenant-a", "tenant-b"):
            in_pool.create_collection(c, embedding_function=None).add(
                ids=ids[:5], embeddings=vecs[:5].tolist())
        assert in_pool.get_collection("tenant-a").query(
            query_embeddings=[vecs[0].tolist()], n_results=1)["ids"] == [[ids[0]]]

        # A compaction that publishes, then one that finds the Lease held.
        published = compact_now(colls, runner, kube_api, ns, uid, "obs-1")
        assert published["result"] == "succeeded", published
        seq = mf.version_seq(published["version"])
        wait_for("the reader to serve the new snapshot (as Prometheus sees it)", lambda: prom.value(
            f'chromasnap_reader_snapshot_seq{{namespace="{ns}", component="reader"}}') == seq,
            timeout=60,
            interval=0.5)
        with LeaseHolder(kube_api, ns, f"{NAME}-compactor"):
            held = compact_now(colls, runner, kube_api, ns, uid, "obs-2")
        assert (held["result"], held["reason"]) == ("skipped", "LockHeld"), held
        wait_for("the LockHeld run counted", lambda: prom.value(
            f'chromasnap_collection_lock_acquisition_failures_total{{namespace="{ns}"}}') == 1,
            timeout=60, interval=0.5)
        yield Scene(ns, prom, colls, rendered,
                    {"writer": writer, "reader": reader, "pool": pool})
    finally:
        if prom is not None:
            prom.stop()
        runner.stop_all()
        core.delete_namespace(ns)


# --- the checks -------------------------------------------------------------------------


def test_operator_series_follow_the_status(scene: Scene) -> None:
    p, ns = scene.prom, scene.ns
    status = scene.status()
    sel = f'namespace="{ns}", collection="{NAME}"'
    snap = status["snapshot"]
    assert p.value(f"chromasnap_collection_snapshot_seq{{{sel}}}") == mf.version_seq(
        snap["version"])
    assert p.value(f"chromasnap_collection_snapshot_bytes{{{sel}}}") == snap["bytes"] > 0
    assert p.value(f"chromasnap_collection_snapshot_records{{{sel}}}") == snap["records"] == N
    assert p.value(f"chromasnap_collection_pending_deltas{{{sel}}}") == status["pendingDeltas"]
    last = status["lastCompaction"]
    assert (last["result"], last["reason"]) == ("Skipped", "LockHeld")
    assert p.value(f'chromasnap_collection_last_compaction_result{{{sel}, result="Skipped"}}'
                   ) == 1
    assert p.value(f'chromasnap_collection_last_compaction_reason{{{sel}, reason="LockHeld"}}'
                   ) == 1
    assert p.value(f"chromasnap_collection_last_compaction_duration_seconds{{{sel}}}") == \
        pytest.approx(last["durationSeconds"])
    # the operator saw every run: the bootstrap one, the publishing one, the LockHeld one
    assert p.value(f'chromasnap_collection_compactions_total{{{sel}, result="Succeeded"}}') == 2
    assert p.value(f'chromasnap_collection_compactions_total{{{sel}, result="Skipped"}}') == 1
    assert p.value(f'chromasnap_collection_compactions_total{{{sel}, result="Failed"}}') == 0
    assert p.value(f"chromasnap_collection_compaction_duration_seconds_count{{{sel}}}") == 3
    assert p.value(f"chromasnap_collection_fenced_runs_total{{{sel}}}") == 0
    assert p.value(f"chromasnap_collection_readers_desired{{{sel}}}") == 1
    # the one-a-year schedule of the test collection
    assert p.value(f"chromasnap_collection_compactor_schedule_interval_seconds{{{sel}}}") in (
        365 * 86400, 366 * 86400)
    # the reader is not behind the pointer
    assert p.value(f'max(chromasnap_collection_snapshot_seq{{{sel}}}) - '
                   f'max(chromasnap_reader_snapshot_seq{{{sel}, component="reader"}})') == 0
    assert p.value(f'sum(chromasnap_writer_records_total{{{sel}}})') == N + 3
    # each role exports only its own series
    assert p.value(f'chromasnap_reader_snapshot_seq{{{sel}, component="writer"}}') is None
    assert p.value(f'sum(chromasnap_writer_records_total{{{sel}, component="reader"}})') is None


def test_pool_series_are_scraped_and_name_no_collection(scene: Scene) -> None:
    p, ns = scene.prom, scene.ns
    sel = f'namespace="{ns}", collection="{POOL}", component="pool"'
    wait_for("the pool's batches and load scraped", lambda: (
        (p.value(f"chromasnap_pool_batches_total{{{sel}}}") or 0) >= 1
        and (p.value(f"chromasnap_pool_loads_total{{{sel}}}") or 0) >= 1), timeout=30,
        interval=0.5)
    assert p.value(f"chromasnap_pool_batch_deltas_total{{{sel}}}") >= 2
    assert p.value(f"chromasnap_pool_compaction_failing_collections{{{sel}}}") == 0
    assert p.value(f"chromasnap_pool_pending_collections{{{sel}}}") == 0
    # bounded: one series per pod and name, whatever the pool's collections (two here)
    series = p.vector(f'{{__name__=~"chromasnap_pool_.*", namespace="{ns}"}}')
    assert len(series) == len({s["metric"]["__name__"] for s in series}) >= 9
    assert {s["metric"]["collection"] for s in series} == {POOL}
    assert not any(k in s["metric"] for s in series for k in ("tenant", "database", "id"))


def test_every_alert_expression_evaluates(scene: Scene) -> None:
    for a in alerts(rule_groups(scene.rendered)):
        res = scene.prom.query(a["expr"])
        assert res["status"] == "success", (a["alert"], res)
        # and every series it reads exists for the test's collection
        for name in series_in(a["expr"]):
            found = scene.prom.vector(f'{name}{{namespace="{scene.ns}"}}')
            assert found, (a["alert"], name)


def test_every_dashboard_query_evaluates_and_returns_data(scene: Scene) -> None:
    empty = []
    for title, expr in dashboard_queries(dashboard()):
        q = substitute(expr, scene.ns, NAME, RATE_INTERVAL)
        res = scene.prom.query(q)
        assert res["status"] == "success", (title, q, res)
        if not res["data"]["result"]:
            empty.append((title, q))
    # only queries of series that exist once something failed may be empty
    assert all(series_in(q) & ONLY_ON_ERRORS for _, q in empty), empty
    # the dashboard's variables resolve
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        expr = var["query"]["query"]
        inner = expr[len("label_values("):-1].rsplit(",", 1)
        selector = substitute(inner[0], scene.ns, NAME, RATE_INTERVAL)
        got = scene.prom.get("/api/v1/series", **{"match[]": selector})
        assert got["status"] == "success" and got["data"], (var["name"], got)


def test_rules_evaluate_healthy_and_lease_contention_fires(scene: Scene) -> None:
    p = scene.prom
    names = {a["alert"] for a in alerts(rule_groups(scene.rendered))}

    def evaluated() -> list[dict[str, Any]] | None:
        res = p.get("/api/v1/rules")
        assert res["status"] == "success", res
        rules = [r for g in res["data"]["groups"] for r in g["rules"]]
        done = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if done else None

    rules = wait_for("every rule evaluated", evaluated, timeout=30, interval=0.5)
    assert {r["name"] for r in rules} == names
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []

    def contention() -> list[dict[str, Any]]:
        res = p.get("/api/v1/alerts")
        return [a for a in res["data"]["alerts"]
                if a["labels"]["alertname"] == "ChromasnapLeaseContention"
                and a["labels"].get("namespace") == scene.ns]

    fired = wait_for("ChromasnapLeaseContention to fire", contention, timeout=30, interval=0.5)
    assert fired[0]["state"] == "firing"
    assert fired[0]["labels"]["collection"] == NAME
    assert fired[0]["annotations"]["runbook_url"].endswith("#chromasnapleasecontention")
    # nothing else is wrong with this collection
    others = [a["labels"]["alertname"] for a in p.get("/api/v1/alerts")["data"]["alerts"]
              if a["labels"].get("namespace") == scene.ns
              and a["labels"]["alertname"] != "ChromasnapLeaseContention"]
    assert others == []


def test_prometheus_is_debians_package() -> None:
    """The binaries are Debian's prometheus package (hack/system-packages.sh installs it)
    and report its upstream version, so a figure or a failure names a known build."""
    script = (Path(__file__).resolve().parents[3] / "hack" / "system-packages.sh").read_text()
    assert re.search(r"^PACKAGES=\(.*\bprometheus\b.*\)", script, re.M), script[:400]
    pkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prometheus"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert pkg.returncode == 0, pkg.stderr
    upstream = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", pkg.stdout)
    assert upstream is not None, pkg.stdout
    for tool in ("prometheus", "promtool"):
        owner = subprocess.run(["dpkg", "-S", str(binary(tool))], capture_output=True,
                               text=True, check=False, timeout=60)
        assert owner.stdout.startswith("prometheus:"), owner.stdout + owner.stderr
        out = subprocess.run([str(binary(tool)), "--version"], capture_output=True, text=True,
                             check=False, timeout=60)
        assert out.returncode == 0
        assert f"{tool}, version {upstream[1]}" in out.stdout + out.stderr, (
            out.stdout + out.stderr)
