"""``kubectl chromasnap`` on a ChromaDatabase: ``collections``, ``status``, ``export``,
``restore --dry-run``, ``logs`` and ``report``, against the real API server and a real
``chromasnap pool``.

The pool runs as a process on MinIO (tests/pool_server.py); its collections are created
and written through ``chromadb.HttpClient``. The ChromaDatabase pointing at its root and
the credentials Secret are created through the API (the chart installs the CRDs; no
operator runs); the test plays the pool's pods for the status, patching the totals the
pods would patch (``passreport.database_status`` of the pass summary the pool wrote),
and the operator for ``logs`` and ``report``, creating the database's children (whose
Deployment's pods kwok runs).
Every command runs as the installed ``kubectl-chromasnap`` executable with no AWS
credentials in its environment, so the bucket is read with the Secret's keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
import yaml
from chromadb.config import Settings
from kubernetes import client

from chromasnap.cli import poolcollections as pc
from chromasnap.operator.database import ChromaDatabase
from chromasnap.operator.kubeapi import path
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.database import database_children
from chromasnap.pool.passreport import database_status
from chromasnap.resource import DATABASE_PLURAL, GROUP, VERSION
from kubeops import (
    chart_release,  # noqa: F401 - fixture
    create_secret,
    get_manifest,
    raw,
    wait_for,
)
from live_collection import DECOY_KEY, DECOY_VALUE
from minio_server import MinioServer
from pool_server import Pool

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
PLUGIN = Path(sys.executable).parent / "kubectl-chromasnap"
DB = "team-a"
SECRET = "pool-s3"  # noqa: S105 - a Secret's name
DIM = 4
#: (database, collection name, records); "alpha" is in both databases.
WRITTEN = [("default_database", "alpha", 5), ("default_database", "bravo", 40),
           ("default_database", "charlie", 12), ("other", "alpha", 3)]


@dataclass
class Env:
    ns: str
    kubeconfig: Path
    pool: Pool
    minio: MinioServer
    workdir: Path
    custom: Any
    ids: dict[tuple[str, str], str]
    kube_api: Any

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(KUBECONFIG=str(self.kubeconfig), AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        out = subprocess.run([str(PLUGIN), *args, "-n", self.ns], env=env, capture_output=True,
                             text=True, timeout=timeout, check=False, cwd=self.workdir)
        print(f"$ kubectl chromasnap {' '.join(args)}  -> {out.returncode}\n{out.stdout}"
              f"{out.stderr}")
        assert DECOY_VALUE not in out.stdout + out.stderr
        assert self.minio.secret_key not in out.stdout + out.stderr
        return out

    def ok(self, *args: str) -> str:
        out = self.run(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout


def _http(pool: Pool, database: str) -> chromadb.ClientAPI:
    return chromadb.HttpClient(host="127.0.0.1", port=pool.proc.port, database=database,
                               settings=Settings(anonymized_telemetry=False))


@pytest.fixture(scope="module")
def env(control_plane: Any, kube_api: Any, chart_release: Any,  # noqa: F811
        minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is not installed: reinstall the package (make venv)")
    pool = Pool(minio, tmp_path_factory.mktemp("pool"))
    ns = f"pool-plugin-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        admin = chromadb.AdminClient(Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
            chroma_server_http_port=pool.proc.port, anonymized_telemetry=False))
        admin.create_database("other")
        rng = np.random.default_rng(5)
        for database, name, n in WRITTEN:
            col = _http(pool, database).create_collection(name)
            col.add(ids=[f"{name}-{i}" for i in range(n)],
                    embeddings=rng.standard_normal((n, DIM)).astype(np.float32).tolist(),
                    documents=[f"{name} text {i}" for i in range(n)])
        _http(pool, "default_database").create_collection("empty")

        def compacted() -> bool:
            rows = pc.listing(pool.store, limit=0)["collections"]
            return sorted((r["database"], r["name"], r["records"]) for r in rows) == sorted(
                [*WRITTEN, ("default_database", "empty", 0)])

        wait_for("the pool to compact every collection", compacted, timeout=60)
        ids = {(r["database"], r["name"]): r["id"]
               for r in pc.listing(pool.store, limit=0, sizes=False)["collections"]}

        bucket, prefix = pool.url.removeprefix("s3://").split("/", 1)
        create_secret(kube_api, ns, SECRET, {"accessKey": minio.access_key,
                                             "secretKey": minio.secret_key,
                                             DECOY_KEY: DECOY_VALUE})
        custom = client.CustomObjectsApi(kube_api)
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, DATABASE_PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaDatabase",
            "metadata": {"name": DB},
            "spec": {"storage": {"bucket": bucket, "prefix": prefix, "endpoint": minio.endpoint,
                                 "credentialsSecretRef": {"name": SECRET,
                                                          "accessKeyIdKey": "accessKey",
                                                          "secretAccessKeyKey": "secretKey"}},
                     "pool": {"replicas": 1}}})
        yield Env(ns, control_plane.kubeconfig_path, pool, minio,
                  tmp_path_factory.mktemp("plugin"), custom, ids, kube_api)
    finally:
        pool.stop()
        core.delete_namespace(ns)


def test_collections_lists_pages_and_sorts(env: Env) -> None:
    text = env.ok("collections", DB)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["NAME", "TENANT/DATABASE"]
    assert [ln.split()[0] for ln in lines[1:6]] == ["alpha", "alpha", "bravo", "charlie",
                                                    "empty"]
    assert "1-5 of 5 collections, sorted by name" in text
    bravo = next(ln for ln in lines if ln.startswith("bravo"))
    assert bravo.split()[1:3] == ["default_tenant/default_database", "40"]
    assert env.ids[("default_database", "bravo")] in bravo

    page = json.loads(env.ok("collections", DB, "--json", "--limit", "2", "--offset", "2"))
    assert page["total"] == 5 and page["offset"] == 2
    assert [r["name"] for r in page["collections"]] == ["bravo", "charlie"]
    assert page["lastPass"] is not None  # the pool's pass summary was read

    page = json.loads(env.ok("collections", DB, "--json", "--sort", "records", "--desc"))
    assert [(r["name"], r["records"]) for r in page["collections"]] == [
        ("bravo", 40), ("charlie", 12), ("alpha", 5), ("alpha", 3), ("empty", 0)]
    assert all(r["bytes"] > 0 for r in page["collections"] if r["records"])
    # the pass that folded a collection's writes recorded their use too
    used = json.loads(env.ok("collections", DB, "--json", "--sort", "used", "--desc"))
    assert all(r["usedAt"] for r in used["collections"] if r["records"])
    assert used["collections"][-1]["name"] == "empty"  # never read or written
    assert "next page: --offset 2" in env.ok("collections", DB, "--limit", "2",
                                             "--sort", "bytes")

    only = json.loads(env.ok("collections", DB, "--json", "--database", "other"))
    assert [(r["database"], r["name"]) for r in only["collections"]] == [("other", "alpha")]
    assert "TENANT/DATABASE" not in env.ok("collections", DB, "--database", "other")


def test_status_of_a_database(env: Env) -> None:
    # Play the pool's pods and the operator: what they patch into the status.
    summary = json.loads(env.pool.store.get("status/compaction.json").data)
    bravo = env.ids[("default_database", "bravo")]
    patch = database_status(summary, collections=5, databases=2, records=7,
                            identity="team-a-pod-1")
    patch["status"] |= {
        "endpoint": f"http://{DB}.{env.ns}.svc:8000", "pool": {"replicas": 1, "ready": 1},
        "pendingCollections": 1, "mostPending": [{"id": bravo, "pendingDeltas": 6}],
        "failingCollections": 1, "failing": [{"id": bravo, "reason": "StorageError: boom"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "PoolReady",
                        "message": "1 pool pod ready",
                        "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
    env.custom.patch_namespaced_custom_object_status(GROUP, VERSION, env.ns, DATABASE_PLURAL,
                                                     DB, patch)
    text = env.ok("status", DB)
    assert f"ChromaDatabase {env.ns}/{DB}  {env.pool.url}" in text
    assert "  Ready              True     PoolReady" in text
    assert f"Endpoint:        http://{DB}.{env.ns}.svc:8000" in text
    assert "Pool pods:       1/1 ready" in text
    assert "Collections:     5 in 2 databases" in text
    assert f"                 {bravo}: 6 deltas" in text
    assert f"{bravo}: StorageError: boom" in text
    assert "Last pass:" in text and "by team-a-pod-1" in text

    page = json.loads(env.ok("status", DB, "--json", "--bucket"))
    assert page["kind"] == "ChromaDatabase" and page["collections"] == 5
    assert page["mostPending"] == [{"id": bravo, "pendingDeltas": 6, "name": "bravo"}]
    assert page["failing"][0]["name"] == "bravo"
    assert f"bravo ({bravo}): StorageError: boom" in env.ok("status", DB, "--bucket")

    missing = env.run("status", "nope")
    assert missing.returncode == 1
    assert f"ChromaCollection 'nope' not found in namespace '{env.ns}', nor a ChromaDatabase " \
        "of that name" in missing.stderr


def test_export_a_pool_collection(env: Env) -> None:
    out = env.workdir / "bravo-export"
    res = env.run("export", DB, "--collection", "bravo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"is {env.ids[('default_database', 'bravo')]}" in res.stderr
    assert "using the credentials of Secret 'pool-s3'" in res.stderr
    pc_client = chromadb.PersistentClient(path=str(out),
                                          settings=Settings(anonymized_telemetry=False))
    col = pc_client.get_collection("bravo")
    assert col.count() == 40
    got = col.get(ids=["bravo-7"], include=["documents"])
    assert got["documents"] == ["bravo text 7"]

    # "alpha" is in two databases: the plugin asks which one
    amb = env.run("export", DB, "--collection", "alpha", "--out", str(env.workdir / "a"))
    assert amb.returncode == 2 and "pass --tenant and --database" in amb.stderr
    other = env.workdir / "alpha-other"
    env.ok("export", DB, str(other), "--collection", "alpha", "--database", "other")
    cl = chromadb.PersistentClient(path=str(other), settings=Settings(anonymized_telemetry=False))
    assert cl.get_collection("alpha").count() == 3

    nope = env.run("export", DB, "--collection", "zulu", "--out", str(env.workdir / "z"))
    assert nope.returncode == 2 and "has no collection 'zulu'" in nope.stderr
    bare = env.run("export", DB, str(env.workdir / "b"))
    assert bare.returncode == 2 and "is a ChromaDatabase" in bare.stderr


def test_restore_a_pool_collection_prints_a_standalone_manifest(env: Env) -> None:
    text = env.ok("restore", DB, "--collection", "charlie", "--into", "charlie-copy",
                  "--dry-run")
    m = yaml.safe_load(text)
    cid = env.ids[("default_database", "charlie")]
    prefix = env.pool.url.removeprefix("s3://").split("/", 1)[1]
    assert m["kind"] == "ChromaCollection" and m["metadata"]["name"] == "charlie-copy"
    # chromadb's client stores its HNSW defaults in the configuration: carried over
    assert m["spec"]["collection"] == {"name": "charlie", "dimension": DIM, "space": "l2",
                                       "hnsw": {"m": 16, "constructionEf": 100,
                                                "searchEf": 100}}
    assert m["spec"]["bootstrap"]["from"]["prefix"] == f"{prefix}/collections/{cid}"
    assert m["spec"]["storage"]["prefix"] == "charlie-copy"
    assert m["spec"]["storage"]["credentialsSecretRef"]["name"] == SECRET
    inside = env.run("restore", DB, "--collection", "charlie", "--into", "x",
                     "--prefix", f"{prefix}/x", "--dry-run")
    assert inside.returncode == 2 and "inside the pool's root" in inside.stderr


def test_collections_of_a_missing_database(env: Env) -> None:
    out = env.run("collections", "nope")
    assert out.returncode == 1
    assert "ChromaDatabase 'nope' not found" in out.stderr


def _pool_children(env: Env) -> list[dict[str, Any]]:
    """Create the database's children as the operator would (none runs here): the
    Deployment's pods then run on kwok's fake node."""
    body = env.custom.get_namespaced_custom_object(GROUP, VERSION, env.ns, DATABASE_PLURAL, DB)
    children = database_children(ChromaDatabase.from_body(body),
                                 OperatorSettings(default_image="chromasnap:test"))
    for child in children:
        if get_manifest(env.kube_api, child) is None:
            raw(env.kube_api, "POST", path(child["apiVersion"], child["kind"], env.ns), child)
    return children


def _pool_pods(env: Env) -> list[Any]:
    pods: list[Any] = client.CoreV1Api(env.kube_api).list_namespaced_pod(
        env.ns, label_selector=f"app.kubernetes.io/instance={DB},"
        "app.kubernetes.io/component=pool").items
    return pods


def test_logs_of_a_database_are_its_pool_pods(env: Env) -> None:
    _pool_children(env)
    pods = wait_for("the pool Deployment's pod", lambda: _pool_pods(env) or None, timeout=60)
    out = env.run("logs", DB, "--tail", "20")
    for pod in pods:
        # kwok's fake node serves no logs; each pod is named with its log or the reason
        assert f"[{pod.metadata.name}/pool]" in out.stdout + out.stderr
    if out.returncode != 0:
        assert "logs unavailable:" in out.stderr and "could not read the logs" in out.stderr
    same = env.run("logs", DB, "--role", "pool", "--tail", "20")
    assert same.returncode == out.returncode
    wrong = env.run("logs", DB, "--role", "reader")
    assert wrong.returncode == 2
    assert f"'{DB}' is a ChromaDatabase: all its pods are pool pods" in wrong.stderr


def test_report_of_a_database_has_everything_but_secrets(env: Env) -> None:
    children = _pool_children(env)
    wait_for("the pool Deployment's pod", lambda: _pool_pods(env) or None, timeout=60)

    def deployment_events() -> bool:
        return any(e.involved_object.name == f"{DB}-pool" for e in client.CoreV1Api(
            env.kube_api).list_namespaced_event(env.ns).items)

    wait_for("an Event of the pool's Deployment", deployment_events, timeout=60)
    root = env.workdir / "db-bundle"
    out = env.run("report", DB, "-o", str(root))
    assert out.returncode == 0, out.stderr
    names = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {"README.txt", "database.yaml", "status.txt", "status.json", "events.yaml",
            "children.yaml", "pods.yaml", "bucket.json"} <= names, (names, out.stderr)
    assert "collection.yaml" not in names
    assert any(n.startswith("logs/") and n.endswith("_pool.log") for n in names)
    assert yaml.safe_load((root / "database.yaml").read_text())["kind"] == "ChromaDatabase"
    assert f"ChromaDatabase {env.ns}/{DB}" in (root / "status.txt").read_text()
    listed = {(c["kind"], c["metadata"]["name"])
              for c in yaml.safe_load((root / "children.yaml").read_text())}
    assert {(c["kind"], c["metadata"]["name"]) for c in children} <= listed
    assert "Secret" not in {kind for kind, _ in listed}
    events = yaml.safe_load((root / "events.yaml").read_text())
    assert any(e["involvedObject"]["name"] == f"{DB}-pool" for e in events)
    # the bucket's side, read with the Secret's keys: the last pass and what it names
    summary = json.loads((root / "bucket.json").read_text())
    assert summary["url"] == env.pool.url and summary["collections"] == 5
    assert summary["lastPass"] is not None
    assert all(r["failing"] or r["pendingDeltas"] for r in summary["named"])
    assert "not collected" not in (root / "README.txt").read_text()
    text = "\n".join(f.read_text(errors="replace") for f in root.rglob("*") if f.is_file())
    assert env.minio.secret_key not in text and DECOY_VALUE not in text
    assert "managedFields" not in text

    tarball = env.workdir / "db-bundle.tar.gz"
    out = env.run("report", DB, "-o", str(tarball), "--no-bucket")
    assert out.returncode == 0, out.stderr
    with tarfile.open(tarball) as tar:
        members = tar.getnames()
    assert any(m.endswith("/database.yaml") for m in members)
    assert not any(m.endswith("bucket.json") for m in members)
