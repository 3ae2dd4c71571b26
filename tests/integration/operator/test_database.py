"""End to end: the chart's operator turns a ChromaDatabase into a pool that works.

On the real control plane (kube-apiserver with RBAC, kube-controller-manager,
kwok for pods), with the operator running as the chart's ServiceAccount. The
pool's pods run as local processes with exactly the env the operator rendered
(tests/kubeops.py), against MinIO, and report the pool's totals into the
database's status with the pods' own ServiceAccount. Clients are the real
``chromadb.HttpClient``. The tests run in order on one database.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings
from kubernetes import client

from chromasnap.operator.database import ChromaDatabase
from chromasnap.operator.drift import drift
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.database import database_children
from chromasnap.resource import DATABASE_PLURAL, GROUP, PLURAL, POOL_DELETE_FINALIZER, VERSION
from kubeops import (
    OperatorProcess,
    PodProcess,
    PodRunner,
    chart_release,  # noqa: F401 - fixture
    create_secret,
    get_manifest,
    maybe,
    operator,  # noqa: F401 - fixture
    pod_template,
    wait_for,
)
from minio_server import MinioServer

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
NAME = "team-a"
ADMIN = "tok-admin-" + uuid.uuid4().hex
ACME = "tok-acme-" + uuid.uuid4().hex


@dataclass
class Pool:
    """The database under test and what the tests share about it."""

    ns: str
    api: Any
    runner: PodRunner
    created: float
    settings: OperatorSettings
    pods: list[PodProcess]
    bucket: str = ""

    def get(self) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns,
                                                          DATABASE_PLURAL, NAME))

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def ready(self) -> dict[str, Any] | None:
        conds = {c["type"]: c for c in self.status().get("conditions") or []}
        return conds.get("Ready")

    def desired(self) -> list[dict[str, Any]]:
        return database_children(ChromaDatabase.from_body(self.get()), self.settings)


def http(p: PodProcess, token: str, tenant: str = "default_tenant",
         database: str = "default_database") -> chromadb.ClientAPI:
    return chromadb.HttpClient(host="127.0.0.1", port=p.port, tenant=tenant, database=database,
                               settings=Settings(
                                   anonymized_telemetry=False,
                                   chroma_client_auth_provider="chromadb.auth.token_authn."
                                                               "TokenAuthClientProvider",
                                   chroma_client_auth_credentials=token))


@pytest.fixture(scope="module")
def pool(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
         minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    core = client.CoreV1Api(kube_api)
    ns = f"cdb-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    bucket = minio.create_bucket()
    create_secret(kube_api, ns, "minio", {"accessKey": minio.access_key,
                                          "secretKey": minio.secret_key})
    create_secret(kube_api, ns, "pool-tokens", {"tokens": f"{ADMIN}\n{ACME} acme/main\n"})
    api = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaDatabase",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "storage": {"bucket": bucket, "prefix": "pools/team-a", "endpoint": minio.endpoint,
                        "credentialsSecretRef": {"name": "minio", "accessKeyIdKey": "accessKey",
                                                 "secretAccessKeyKey": "secretKey"}},
            "pool": {"replicas": 2, "cacheSize": "1Gi"},
            # short passes: the pods report totals into the status after each one
            "compactor": {"intervalSeconds": 1},
            "auth": {"secretRef": {"name": "pool-tokens"}},
        },
    }
    t0 = time.monotonic()
    api.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, body)
    runner = PodRunner(control_plane, kube_api, ns, tmp_path_factory.mktemp("pool-pods"))
    env = Pool(ns, api, runner, t0, OperatorSettings(
        default_image=operator.env["CHROMASNAP_DEFAULT_IMAGE"]), [], bucket)
    try:
        yield env
    finally:
        runner.stop_all()
        core.delete_namespace(ns)


def test_children_exist_as_built_and_the_status_says_why_not_ready(
        pool: Pool, kube_api: Any) -> None:
    desired = pool.desired()
    assert {m["kind"] for m in desired} == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding",
                                            "Service", "Deployment", "PodDisruptionBudget"}
    wait_for("every child of the database",
             lambda: all(get_manifest(kube_api, m) is not None for m in desired),
             timeout=30, interval=0.05)
    for m in desired:
        live = get_manifest(kube_api, m)
        assert live is not None
        assert drift(m, live) == [], f"{m['kind']} {m['metadata']['name']}"
        owner = live["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ChromaDatabase", NAME)
    status = wait_for("a status with an endpoint", lambda: pool.status().get("endpoint")
                      and pool.status())
    assert status["endpoint"] == f"http://{NAME}.{pool.ns}.svc:8000"
    assert status["observedGeneration"] == 1
    assert status["pool"]["selector"]
    # kwok runs no containers: its pods turn ready (or not) without our process
    assert pool.ready() is not None


def test_pool_pods_serve_share_writes_and_report_totals(pool: Pool, kube_api: Any) -> None:
    template = pod_template(kube_api, "Deployment", pool.ns, f"{NAME}-pool")
    a = pool.runner.start(template, f"{NAME}-pool-a", serve=True)
    b = pool.runner.start(template, f"{NAME}-pool-b", serve=True)
    pool.pods += [a, b]
    a.wait_http("/readyz")
    b.wait_http("/readyz")
    admin = http(a, ADMIN)
    for i in range(3):
        admin.create_collection(f"docs-{i}", embedding_function=None).add(
            ids=[f"x{i}"], embeddings=[[float(i), 1.0]], documents=[f"doc {i}"])
    # the other pod serves them too (same bucket root)
    other = http(b, ADMIN)
    wait_for("pod b to see pod a's writes",
             lambda: other.get_collection("docs-2").count() == 1, timeout=30)
    assert other.get_collection("docs-1").get(ids=["x1"])["documents"] == ["doc 1"]
    # a scoped token reaches only its tenant's database
    chromadb.AdminClient(admin.get_settings()).create_tenant("acme")
    chromadb.AdminClient(admin.get_settings()).create_database("main", tenant="acme")
    acme = http(a, ACME, "acme", "main")
    acme.create_collection("mine", embedding_function=None)
    with pytest.raises(Exception, match=r"(?i)forbidden|permission|unauthorized"):
        http(a, ACME).list_collections()
    # the pods patch the pool's totals into the status with their own ServiceAccount
    # (records: docs-0..2 hold one each once a pass folded them; "mine" has none)
    status = wait_for("the pods' totals in the status", lambda: (
        (s := pool.status()).get("collections") == 4 and s.get("records") == 3 and s),
        timeout=60)
    assert status["databases"] == 2
    assert status["failingCollections"] == 0
    assert status["lastPass"]["identity"] in (f"{NAME}-pool-a", f"{NAME}-pool-b")
    row = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, pool.ns, DATABASE_PLURAL, NAME)
    assert "tok-" not in str(row.get("status")), "tokens never reach the status"


def _member(name: str, ns: str, database: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaCollection",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"database": database, **spec}}


def test_a_declared_collection_is_created_protected_reported_and_deleted(
        pool: Pool, kube_api: Any) -> None:
    api = client.CustomObjectsApi(kube_api)
    body = _member("handbook", pool.ns, NAME, deletionPolicy="Delete", collection={
        "name": "handbook", "dimension": 2, "space": "cosine", "hnsw": {"m": 24}})
    t0 = time.monotonic()
    api.create_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, body)

    def member() -> dict[str, Any]:
        return dict(api.get_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL,
                                                     "handbook"))

    def ready() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in (member().get("status") or {}).get("conditions") or []}
        return conds.get("Ready") if conds.get("Ready", {}).get("status") == "True" else None

    cond = wait_for("the declared collection Ready", ready, timeout=30)
    print(f"declared collection ready after {time.monotonic() - t0:.2f} s")
    assert cond["reason"] == "InPool"
    assert POOL_DELETE_FINALIZER in member()["metadata"]["finalizers"]
    admin = http(pool.pods[0], ADMIN)
    coll = admin.get_collection("handbook")
    assert coll.configuration_json["hnsw"]["space"] == "cosine"
    assert coll.configuration_json["hnsw"]["max_neighbors"] == 24
    # an application cannot delete or rename it
    with pytest.raises(Exception, match="declared by ChromaCollection"):
        admin.delete_collection("handbook")
    with pytest.raises(Exception, match="declared by ChromaCollection"):
        coll.modify(name="renamed")
    coll.add(ids=["h1", "h2"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    try:
        snap = wait_for("the pool's version in the resource's status", lambda: (
            (s := (member().get("status") or {}).get("snapshot")) and s["records"] == 2 and s),
            timeout=60)
    except BaseException:
        print(member().get("status"))
        for p in pool.pods:
            print(p.name, p.log_text()[-3000:])
        raise
    assert snap["version"]
    # each pod reports what it holds unfolded: the other pod lets go of the folded batch
    # on its next poll
    status = wait_for("no pending deltas reported", lambda: (
        (s := member()["status"]).get("pendingDeltas") == 0 and s), timeout=30)
    assert status["lastCompaction"]["snapshotVersion"] == snap["version"]
    # (the other pod's pass may have listed the batch too, and found it folded already)
    assert status["lastCompaction"]["result"] in ("Succeeded", "Skipped")
    # deleted with deletionPolicy Delete: the pool deletes the collection, then lets go
    api.delete_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, "handbook")
    wait_for("the ChromaCollection gone", lambda: maybe(member) is None, timeout=30)

    def gone_from_the_pool() -> bool:
        try:
            admin.get_collection("handbook")  # a replica sees the deletion within a poll
        except Exception as e:
            return "does not exist" in str(e)
        return False

    wait_for("the collection deleted on every pod", gone_from_the_pool, timeout=10)


def test_a_declared_collection_names_its_problem(pool: Pool, kube_api: Any) -> None:
    api = client.CustomObjectsApi(kube_api)
    with pytest.raises(client.ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, _member(
            "both", pool.ns, NAME, collection={"name": "both", "dimension": 2},
            storage={"bucket": "vectors", "prefix": "x"}))
    assert refused.value.status == 422 and "set exactly one of storage" in str(refused.value.body)
    api.create_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, _member(
        "orphan", pool.ns, "no-such-db", collection={"name": "orphan", "dimension": 2}))
    cond = wait_for("Ready=False for the missing database", lambda: next(
        (c for c in (api.get_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, "orphan")
                     .get("status") or {}).get("conditions") or []
         if c["type"] == "Ready" and c["reason"] == "DatabaseNotFound"), None), timeout=30)
    assert "no-such-db" in cond["message"]
    api.delete_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, "orphan")


def test_kubectl_chromasnap_compact_runs_a_pass_now(pool: Pool, control_plane: Any) -> None:
    from chromasnap.cli.plugin.compact import compact
    from chromasnap.cli.plugin.kube import connect

    kube = connect(str(control_plane.kubeconfig_path), None, pool.ns)
    out = io.StringIO()
    # the pods read the compact-now annotation of their ChromaDatabase; a pass answers it
    assert compact(kube, NAME, request="req-1", timeout=60, out=out) == 0
    last = pool.status()["lastPass"]
    assert last["request"] == "req-1"
    assert f"pass by {last['identity']}" in out.getvalue()
    assert last["identity"] in (f"{NAME}-pool-a", f"{NAME}-pool-b")


def test_an_invalid_spec_is_reported_and_nothing_is_applied(pool: Pool) -> None:
    before = pool.get()["metadata"]["generation"]
    pool.api.patch_namespaced_custom_object(GROUP, VERSION, pool.ns, DATABASE_PLURAL, NAME,
                                            {"spec": {"pool": {"cacheSize": "0"}}})
    cond = wait_for("Ready=False for the invalid spec", lambda: (
        (c := pool.ready()) and c["reason"] == "InvalidSpec" and c), timeout=30)
    assert "spec.pool.cacheSize" in cond["message"] and cond["status"] == "False"
    cm: Any = client.CoreV1Api(pool.api.api_client).read_namespaced_config_map(
        f"{NAME}-pool", pool.ns)
    assert cm.data["CHROMASNAP_MAX_LOADED_BYTES"] == str(int((1 << 30) * 0.9))
    pool.api.patch_namespaced_custom_object(GROUP, VERSION, pool.ns, DATABASE_PLURAL, NAME,
                                            {"spec": {"pool": {"cacheSize": "2Gi"}}})
    wait_for("the new cache size applied", lambda: client.CoreV1Api(pool.api.api_client)
             .read_namespaced_config_map(f"{NAME}-pool", pool.ns)
             .data["CHROMASNAP_MAX_LOADED_BYTES"] == str(int(2 * (1 << 30) * 0.9)), timeout=30)
    wait_for("Ready no longer InvalidSpec",
             lambda: (c := pool.ready()) and c["reason"] != "InvalidSpec", timeout=30)
    assert pool.status()["observedGeneration"] == before + 2


def test_scale_subresource_and_children_restored(pool: Pool, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    pool.api.patch_namespaced_custom_object_scale(GROUP, VERSION, pool.ns, DATABASE_PLURAL,
                                                  NAME, {"spec": {"replicas": 3}})
    wait_for("the Deployment scaled", lambda: apps.read_namespaced_deployment(
        f"{NAME}-pool", pool.ns).spec.replicas == 3, timeout=30)
    core = client.CoreV1Api(kube_api)
    core.delete_namespaced_service(NAME, pool.ns)
    core.delete_namespaced_config_map(f"{NAME}-pool", pool.ns)
    wait_for("the Service and ConfigMap re-created", lambda: maybe(
        lambda: core.read_namespaced_service(NAME, pool.ns)) and maybe(
        lambda: core.read_namespaced_config_map(f"{NAME}-pool", pool.ns)), timeout=30)


def test_deleting_the_database_collects_its_children_and_keeps_the_data(
        pool: Pool, kube_api: Any, minio: MinioServer) -> None:
    for p in pool.pods:
        p.stop()
    # a declared collection that outlives its database: no pod is left to let go of it
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, _member(
        "outlives", pool.ns, NAME, deletionPolicy="Delete",
        collection={"name": "outlives", "dimension": 2}))

    def outlives() -> dict[str, Any]:
        return dict(api.get_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL,
                                                     "outlives"))

    wait_for("the pool's finalizer on it", lambda: POOL_DELETE_FINALIZER in (
        outlives()["metadata"].get("finalizers") or []), timeout=30)
    bucket = pool.get()["spec"]["storage"]["bucket"]
    pool.api.delete_namespaced_custom_object(GROUP, VERSION, pool.ns, DATABASE_PLURAL, NAME)
    apps = client.AppsV1Api(kube_api)
    wait_for("the Deployment garbage-collected", lambda: maybe(
        lambda: apps.read_namespaced_deployment(f"{NAME}-pool", pool.ns)) is None, timeout=60)
    listed = minio.client().list_objects_v2(Bucket=bucket, Prefix="pools/team-a/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any("catalog" in k for k in keys), keys[:10]
    wait_for("the ChromaDatabase gone", lambda: maybe(pool.get) is None, timeout=30)
    api.delete_namespaced_custom_object(GROUP, VERSION, pool.ns, PLURAL, "outlives")
    wait_for("the operator letting go of it", lambda: maybe(outlives) is None, timeout=30)


# --- deletionPolicy: Delete ------------------------------------------------------------


def _database(name: str, ns: str, bucket: str, prefix: str, endpoint: str,
              **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaDatabase",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"storage": {"bucket": bucket, "prefix": prefix, "endpoint": endpoint,
                                 "credentialsSecretRef": {"name": "minio",
                                                          "accessKeyIdKey": "accessKey",
                                                          "secretAccessKeyKey": "secretKey"}},
                     "pool": {"replicas": 1}, "compactor": {"intervalSeconds": 1},
                     **spec}}


def _keys(minio: MinioServer, bucket: str, prefix: str) -> list[str]:
    listed = minio.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def _finalized(pool: Pool, name: str) -> bool:
    db = pool.api.get_namespaced_custom_object(GROUP, VERSION, pool.ns, DATABASE_PLURAL, name)
    return "chromasnap.dev/purge" in (db["metadata"].get("finalizers") or [])


def test_deletion_policy_delete_stops_the_pool_and_purges_its_root(
        pool: Pool, kube_api: Any, minio: MinioServer) -> None:
    ns, api = pool.ns, pool.api
    api.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, _database(
        "scratch", ns, pool.bucket, "pools/scratch", minio.endpoint, deletionPolicy="Delete"))
    wait_for("the purge finalizer", lambda: _finalized(pool, "scratch"), timeout=20)
    wait_for("the pool's Deployment", lambda: maybe(lambda: client.AppsV1Api(kube_api)
             .read_namespaced_deployment("scratch-pool", ns)), timeout=30)
    # a pool pod writes two collections; its passes fold them into the bucket
    pod = pool.runner.start(pod_template(kube_api, "Deployment", ns, "scratch-pool"),
                            "scratch-pool-a", serve=True)
    pod.wait_http("/readyz")
    c = chromadb.HttpClient(host="127.0.0.1", port=pod.port,
                            settings=Settings(anonymized_telemetry=False))
    for name in ("one", "two"):
        c.create_collection(name, embedding_function=None).add(
            ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    wait_for("both collections folded", lambda: sum(
        k.endswith("/pointer.json") for k in _keys(minio, pool.bucket, "pools/scratch/")) == 2,
        timeout=60)
    pod.stop()
    kept = _keys(minio, pool.bucket, "pools/team-a/")
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, "scratch")
    # the pool's pods stop first: its Deployment goes before any purge
    wait_for("the pool's Deployment deleted", lambda: maybe(lambda: client.AppsV1Api(kube_api)
             .read_namespaced_deployment("scratch-pool", ns)) is None, timeout=30)
    batch = client.BatchV1Api(kube_api)
    wait_for("the purge Job", lambda: maybe(
        lambda: batch.read_namespaced_job("scratch-pool-purge", ns)), timeout=60)
    job = pod_template(kube_api, "Job", ns, "scratch-pool-purge")
    assert job["spec"]["serviceAccountName"] == "scratch-pool"
    # the Job's pod, run as the pool's ServiceAccount with the Secret's keys
    purge = pool.runner.run(job, f"scratch-pool-purge-{uuid.uuid4().hex[:5]}")
    assert purge.proc.returncode == 0, purge.log_text()[-4000:]
    assert "deleted" in purge.log_text()
    assert _keys(minio, pool.bucket, "pools/scratch/") == []
    # its report lets the finalizer go: the database, its Job and its children are gone
    wait_for("the database gone", lambda: maybe(lambda: api.get_namespaced_custom_object(
        GROUP, VERSION, ns, DATABASE_PLURAL, "scratch")) is None, timeout=30)
    wait_for("the purge Job deleted", lambda: maybe(
        lambda: batch.read_namespaced_job("scratch-pool-purge", ns)) is None, timeout=30)
    wait_for("the ServiceAccount collected", lambda: maybe(
        lambda: client.CoreV1Api(kube_api).read_namespaced_service_account(
            "scratch-pool", ns)) is None, timeout=60)
    assert _keys(minio, pool.bucket, "pools/team-a/") == kept, "another pool's data is kept"
    reasons = {ev.reason for ev in client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector="involvedObject.name=scratch").items}
    assert {"PurgeStarted", "DataPurged"} <= reasons


def test_a_database_purge_never_deletes_storage_a_collection_uses(
        pool: Pool, kube_api: Any, minio: MinioServer) -> None:
    ns, api = pool.ns, pool.api
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaCollection",
        "metadata": {"name": "keeper", "namespace": ns},
        "spec": {"collection": {"name": "keeper", "dimension": 2},
                 "storage": {"bucket": pool.bucket, "prefix": "pools/shared/keeper",
                             "endpoint": minio.endpoint},
                 "compactor": {"schedule": "0 3 1 1 *"}}})
    api.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, _database(
        "twin", ns, pool.bucket, "pools/shared", minio.endpoint, deletionPolicy="Delete"))
    wait_for("the purge finalizer", lambda: _finalized(pool, "twin"), timeout=20)
    api.delete_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, "twin")
    wait_for("the database gone", lambda: maybe(lambda: api.get_namespaced_custom_object(
        GROUP, VERSION, ns, DATABASE_PLURAL, "twin")) is None, timeout=30)
    assert maybe(lambda: client.BatchV1Api(kube_api).read_namespaced_job(
        "twin-pool-purge", ns)) is None
    events = {ev.reason: ev.message for ev in client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector="involvedObject.name=twin").items}
    assert "PurgeSkipped" in events
    assert f"ChromaCollection {ns}/keeper" in events["PurgeSkipped"]
