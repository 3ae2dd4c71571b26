"""End to end: the chart's operator turns a ChromaCollection into workloads that work.

On the real control plane (kube-apiserver with RBAC, kube-controller-manager for
Deployments, Jobs and garbage collection, kwok for pods) with the operator
running as the chart's ServiceAccount, and the pods' containers run as local
processes with the env the operator rendered (see tests/kubeops.py for the
exact substitutions: cluster DNS and ports -> loopback, volumes -> temp dirs,
the mounted token -> a kubeconfig with the pod ServiceAccount's token; and
:class:`Runner` below for the readers' second port, the internal push port).

The tests of this module run in order on one collection: children, the
compaction that publishes the first snapshot, writes and reads through the
real ``chromadb.HttpClient``, an on-demand compaction, scaling, a spec change,
drift, then deletion.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from kubernetes import client

from chromasnap.operator import schedule
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.drift import drift
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import naming
from chromasnap.operator.specs.children import desired_children
from chromasnap.resource import COMPACT_NOW_ANNOTATION
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import open_store
from kubeops import (
    GROUP,
    PLURAL,
    VERSION,
    Collections,
    OperatorProcess,
    PodProcess,
    Runner,
    chart_release,  # noqa: F401 - fixture
    collection_body,
    create_secret,
    get_manifest,
    maybe,
    operator,  # noqa: F401 - fixture
    pod_template,
    wait_for,
)
from minio_server import MinioServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
DIM = 8
N = 40
NAME = "docs"


@dataclass
class E2E:
    """One collection and what the tests share about it."""

    ns: str
    bucket: str
    prefix: str
    uid: str
    created: float
    colls: Collections
    runner: Runner
    minio: MinioServer
    settings: OperatorSettings
    procs: dict[str, PodProcess]

    def body(self) -> dict[str, Any]:
        return self.colls.get(self.ns, NAME)

    def status(self) -> dict[str, Any]:
        return dict(self.body().get("status") or {})

    def desired(self) -> list[dict[str, Any]]:
        return desired_children(ChromaCollection.from_body(self.body()), self.settings)


@pytest.fixture(scope="module")
def e2e(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
        minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    core = client.CoreV1Api(kube_api)
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    bucket = minio.create_bucket()
    # Custom key names, as in examples/minio-collection.yaml.
    create_secret(kube_api, ns, "minio-credentials",
                  {"accessKey": minio.access_key, "secretKey": minio.secret_key})
    colls = Collections(kube_api)
    body = collection_body(
        NAME, ns,
        collection={"name": "docs", "dimension": DIM, "space": "l2"},
        storage={"bucket": bucket, "prefix": "collections/docs", "endpoint": minio.endpoint,
                 "credentialsSecretRef": {"name": "minio-credentials",
                                          "accessKeyIdKey": "accessKey",
                                          "secretAccessKeyKey": "secretKey"}},
        # a schedule that does not fire during the test: compactions are run on demand
        compactor={"schedule": "0 3 1 1 *", "leaseDurationSeconds": 10},
        reader={"replicas": 2, "pollIntervalSeconds": 1, "cacheSize": "2Gi"},
        retention={"deltaGracePeriodSeconds": 5},
    )
    t0 = time.monotonic()
    created = colls.create(body)
    runner = Runner(control_plane, kube_api, ns, tmp_path_factory.mktemp("pods"))
    env = E2E(ns, bucket, "collections/docs", created["metadata"]["uid"], t0, colls, runner,
              minio, OperatorSettings(
                  default_image=operator.env["CHROMASNAP_DEFAULT_IMAGE"]), {})
    try:
        yield env
    finally:
        runner.stop_all()
        core.delete_namespace(ns)


def run_job(e2e: E2E, kube_api: Any, job_name: str) -> tuple[PodProcess, dict[str, Any]]:
    """Run the Job's pod as a process; returns it and its JSON result (termination message)."""
    wait_for(f"Job {job_name}", lambda: maybe(
        lambda: client.BatchV1Api(kube_api).read_namespaced_job(job_name, e2e.ns)), timeout=30)
    pod = f"{job_name}-{uuid.uuid4().hex[:5]}"
    p = e2e.runner.run(pod_template(kube_api, "Job", e2e.ns, job_name), pod)
    assert p.proc.returncode == 0, p.log_text()[-4000:]
    return p, json.loads(p.files["termination-log"].read_text())


def vectors(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


# --- 1. children ------------------------------------------------------------------------


def test_children_exist_with_the_specs_the_builders_make(e2e: E2E, kube_api: Any) -> None:
    desired = e2e.desired()
    assert len(desired) == 13

    def all_exist() -> bool:
        return all(get_manifest(kube_api, m) is not None for m in desired)

    wait_for("every child of the collection", all_exist, timeout=30, interval=0.05)
    took = time.monotonic() - e2e.created
    assert took < 10, f"children took {took:.1f}s (the benchmark holds the real target)"
    for m in desired:
        live = get_manifest(kube_api, m)
        assert live is not None
        kind_name = f"{m['kind']} {m['metadata']['name']}"
        assert drift(m, live) == [], kind_name
        owner = live["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "ChromaCollection", e2e.uid, True), kind_name
        assert live["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGED_BY
    # credentials reach the pods by reference only
    writer = get_manifest(kube_api, next(
        m for m in desired if (m["kind"], m["metadata"]["name"]) == ("Deployment", "docs-writer")))
    assert writer is not None
    env = {e["name"]: e for e in writer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-credentials", "key": "secretKey"}
    cm: Any = client.CoreV1Api(kube_api).read_namespaced_config_map("docs-config", e2e.ns)
    assert e2e.minio.secret_key not in json.dumps(cm.data)
    # no snapshot yet: the operator starts the first compaction itself
    assert wait_for("the bootstrap compaction Job", lambda: maybe(
        lambda: client.BatchV1Api(kube_api).read_namespaced_job("docs-compactor-init", e2e.ns)),
        timeout=20)
    status = wait_for("a status", lambda: e2e.status().get("conditions") and e2e.status())
    assert status["observedGeneration"] == 1
    assert status["readers"]["selector"] == naming.reader_selector(NAME)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["SnapshotAvailable"]["status"] == "False"
    assert conds["SnapshotAvailable"]["reason"] == "NoSnapshot"
    assert conds["CompactorHealthy"]["reason"] == "AwaitingFirstRun"
    assert conds["Ready"]["status"] == "False"


# --- 2. the data path -------------------------------------------------------------------


def test_pods_publish_serve_writes_and_a_compaction_on_demand(e2e: E2E, kube_api: Any) -> None:
    # The bootstrap compaction publishes the first (empty) snapshot and reports it with
    # the collection's own ServiceAccount (its Lease and its status).
    p, result = run_job(e2e, kube_api, "docs-compactor-init")
    assert result["result"] == "succeeded", result
    status = wait_for("the compactor's report in the status", lambda: (
        (s := e2e.status()).get("lastCompaction", {}).get("identity") == p.name and s))
    assert status["lastCompaction"]["result"] == "Succeeded"
    assert status["snapshot"]["version"] == result["version"]
    assert status["snapshot"]["records"] == 0
    e2e.colls.wait_condition(e2e.ns, NAME, "SnapshotAvailable", "True", "SnapshotPublished")
    e2e.colls.wait_condition(e2e.ns, NAME, "CompactorHealthy", "True", "Compacted")
    # kwok reports the Deployments' pods ready, so the collection is Ready now
    e2e.colls.wait_condition(e2e.ns, NAME, "Ready", "True", "AllComponentsReady")

    # Writer and reader, as their Deployments run them; each plays its Service for the other
    # (the reader its headless Service's internal port, where writers push new deltas).
    wport, rport, iport = free_port(), free_port(), free_port()
    writer_template = pod_template(kube_api, "Deployment", e2e.ns, "docs-writer")
    writer_env = {e["name"]: e.get("value")
                  for e in writer_template["spec"]["containers"][0]["env"]}
    assert writer_env["CHROMASNAP_NOTIFY_DNS"] == f"docs-readers-headless.{e2e.ns}.svc:8001"
    writer = e2e.runner.start_pod(
        writer_template, "docs-writer-7d9f-abcde", services={}, port=wport,
        internal={"docs-readers-headless": f"127.0.0.1:{iport}"})
    reader = e2e.runner.start_pod(
        pod_template(kube_api, "Deployment", e2e.ns, "docs-reader"), "docs-reader-5c8b-fghij",
        services={"docs-writer": f"127.0.0.1:{wport}"}, port=rport, internal_port=iport)
    e2e.procs.update(writer=writer, reader=reader)
    assert writer.env["CHROMASNAP_BUCKET_URL"] == f"s3://{e2e.bucket}/{e2e.prefix}"
    assert writer.env["CHROMASNAP_NOTIFY_DNS"] == f"127.0.0.1:{iport}"
    assert reader.env["CHROMASNAP_WRITER_URL"] == f"http://127.0.0.1:{wport}"
    assert reader.env["CHROMASNAP_INTERNAL_PORT"] == str(iport)
    writer.wait_http("/healthz")
    reader.wait_http("/readyz")  # a verified snapshot is loaded

    vecs = vectors(N)
    ids = [f"doc-{i:03d}" for i in range(N)]
    chroma = chromadb.HttpClient(host="127.0.0.1", port=rport)
    col = chroma.get_collection("docs")
    # sent to the reader, forwarded to the writer, acknowledged once durable in S3
    col.add(ids=ids, embeddings=vecs.tolist(), documents=[f"text {i}" for i in range(N)],
            metadatas=[{"i": i} for i in range(N)])
    assert col.count() == N  # fresh reads merge the delta tail
    res = col.query(query_embeddings=[vecs[3].tolist()], n_results=1)
    assert res["ids"] == [["doc-003"]]

    # Compaction on demand: a new value of the annotation starts a Job from the template.
    e2e.colls.patch(e2e.ns, NAME, {"metadata": {"annotations": {
        COMPACT_NOW_ANNOTATION: "run-1"}}})
    job = f"docs-compactor-{schedule.compaction_run_id(e2e.uid, 'run-1')}"
    p2, result2 = run_job(e2e, kube_api, job)
    assert result2["result"] == "succeeded", result2
    assert result2["records_folded"] == N
    status = wait_for("the second report", lambda: (
        (s := e2e.status()).get("lastCompaction", {}).get("identity") == p2.name and s))
    last = status["lastCompaction"]
    assert (last["result"], last["reason"]) == ("Succeeded", "Compacted")
    assert last["recordsFolded"] == N and last["deltasFolded"] >= 1
    assert last["snapshotVersion"] == result2["version"] == status["snapshot"]["version"]
    assert status["snapshot"]["records"] == N
    assert status["snapshot"]["bytes"] > 0
    assert status["pendingDeltas"] == 0
    e2e.colls.wait_condition(e2e.ns, NAME, "Ready", "True")

    # The reader swaps the new snapshot in (its metrics say which one it serves).
    seq = mf.version_seq(result2["version"])

    def reader_on_new_snapshot() -> bool:
        import urllib.request

        with urllib.request.urlopen(reader.url + "/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
        return f"chromasnap_reader_snapshot_seq {float(seq)}" in text

    wait_for("the reader to load the new snapshot", reader_on_new_snapshot, timeout=30)
    got = col.get(ids=["doc-010"], include=["documents", "metadatas"])
    assert got["documents"] == ["text 10"] and got["metadatas"] == [{"i": 10}]
    assert col.count() == N
    res = col.query(query_embeddings=[vecs[17].tolist()], n_results=3)
    assert res["ids"][0][0] == "doc-017"

    # The same annotation value again does nothing; events tell what happened.
    events = client.CoreV1Api(kube_api).list_namespaced_event(
        e2e.ns, field_selector=f"involvedObject.name={NAME}").items
    reasons = [ev.reason for ev in events]
    assert "CompactionStarted" in reasons and "CompactionRequested" in reasons
    assert "Ready" in reasons


# --- 3. scaling -------------------------------------------------------------------------


def test_scale_subresource_scales_the_readers(e2e: E2E, kube_api: Any) -> None:
    custom = client.CustomObjectsApi(kube_api)
    apps = client.AppsV1Api(kube_api)
    # what `kubectl scale ccol/docs --replicas=3` sends
    custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, e2e.ns, PLURAL, NAME, {"spec": {"replicas": 3}},
        _content_type="application/merge-patch+json")
    assert e2e.body()["spec"]["reader"]["replicas"] == 3
    wait_for("the reader Deployment to follow", lambda: (
        apps.read_namespaced_deployment("docs-reader", e2e.ns).spec.replicas == 3), timeout=20)
    wait_for("status.readers to report 3 ready readers", lambda: (
        e2e.status().get("readers", {}).get("ready") == 3), timeout=60)
    scale: Any = custom.get_namespaced_custom_object_scale(GROUP, VERSION, e2e.ns, PLURAL, NAME)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == naming.reader_selector(NAME)
    assert apps.read_namespaced_deployment("docs-writer", e2e.ns).spec.replicas == 2


# --- 4. spec changes roll the workloads -------------------------------------------------


def _template_hash(kube_api: Any, ns: str, name: str) -> tuple[str, int]:
    dep: Any = client.AppsV1Api(kube_api).read_namespaced_deployment(name, ns)
    return dep.spec.template.metadata.annotations[naming.CONFIG_HASH_ANNOTATION], \
        dep.metadata.generation


def test_spec_changes_roll_the_workloads_that_read_them(e2e: E2E, kube_api: Any) -> None:
    apps = client.AppsV1Api(kube_api)
    w0, wgen0 = _template_hash(kube_api, e2e.ns, "docs-writer")
    r0, rgen0 = _template_hash(kube_api, e2e.ns, "docs-reader")
    gen0 = e2e.body()["metadata"]["generation"]
    # a shared setting (in the ConfigMap): every workload rolls
    e2e.colls.patch(e2e.ns, NAME, {"spec": {"collection": {"hnsw": {"searchEf": 64}}}})
    wait_for("the writers' pod template to change", lambda: (
        _template_hash(kube_api, e2e.ns, "docs-writer")[0] != w0), timeout=20)
    wait_for("the readers' pod template to change", lambda: (
        _template_hash(kube_api, e2e.ns, "docs-reader")[0] != r0), timeout=20)
    cm: Any = client.CoreV1Api(kube_api).read_namespaced_config_map("docs-config", e2e.ns)
    assert cm.data["CHROMASNAP_HNSW_SEARCH_EF"] == "64"
    cron: Any = client.BatchV1Api(kube_api).read_namespaced_cron_job("docs-compactor", e2e.ns)
    new_hash = _template_hash(kube_api, e2e.ns, "docs-writer")[0]
    assert cron.spec.job_template.spec.template.metadata.annotations[
        naming.CONFIG_HASH_ANNOTATION] == new_hash

    def rolled(name: str) -> bool:
        sets = apps.list_namespaced_replica_set(
            e2e.ns, label_selector=naming.reader_selector(NAME).replace("reader", name)).items
        return len(sets) >= 2  # the Deployment controller made a new ReplicaSet

    wait_for("a new writer ReplicaSet", lambda: rolled("writer"), timeout=30)
    wait_for("status.observedGeneration to follow", lambda: (
        e2e.status().get("observedGeneration") == gen0 + 1), timeout=20)

    # a writer-only setting: only the writers roll (readers keep their warm caches)
    _, rgen1 = _template_hash(kube_api, e2e.ns, "docs-reader")
    e2e.colls.patch(e2e.ns, NAME, {"spec": {"writer": {"flushWindow": {"maxDelayMs": 20}}}})

    def writer_env_changed() -> bool:
        dep: Any = apps.read_namespaced_deployment("docs-writer", e2e.ns)
        env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
        return env.get("CHROMASNAP_FLUSH_MAX_DELAY_MS") == "20"

    wait_for("the writers' env to change", writer_env_changed, timeout=20)
    wait_for("status.observedGeneration to follow", lambda: (
        e2e.status().get("observedGeneration") == gen0 + 2), timeout=20)
    assert _template_hash(kube_api, e2e.ns, "docs-reader")[1] == rgen1
    assert rgen1 > rgen0 and wgen0 < _template_hash(kube_api, e2e.ns, "docs-writer")[1]


# --- 5. drift ---------------------------------------------------------------------------


def test_children_changed_or_deleted_by_hand_are_restored(e2e: E2E, kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    apps = client.AppsV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    desired = {(m["kind"], m["metadata"]["name"]): m for m in e2e.desired()}

    core.delete_namespaced_config_map("docs-config", e2e.ns)
    core.delete_namespaced_service("docs-reader", e2e.ns)
    wait_for("the ConfigMap to be re-created", lambda: maybe(
        lambda: core.read_namespaced_config_map("docs-config", e2e.ns)), timeout=20)
    wait_for("the Service to be re-created", lambda: maybe(
        lambda: core.read_namespaced_service("docs-reader", e2e.ns)), timeout=20)

    apps.patch_namespaced_deployment_scale("docs-writer", e2e.ns, {"spec": {"replicas": 7}})
    wait_for("the writer replicas to be reverted", lambda: (
        apps.read_namespaced_deployment("docs-writer", e2e.ns).spec.replicas == 2), timeout=20)

    # widening the compactor's Role by hand is reverted too
    role: Any = rbac.read_namespaced_role("docs-chromasnap", e2e.ns)
    role.rules.append(client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                                          verbs=["get", "list"]))
    rbac.replace_namespaced_role("docs-chromasnap", e2e.ns, role)

    def role_restored() -> bool:
        live = get_manifest(kube_api, desired[("Role", "docs-chromasnap")])
        return live is not None and drift(desired[("Role", "docs-chromasnap")],
                                                   live) == []

    wait_for("the Role to be reverted", role_restored, timeout=20)
    expected = (
        ("ChildRestored", "re-created ConfigMap docs-config"),
        ("ChildRestored", "re-created Service docs-reader"),
        ("ChildReverted", "reverted changes to Deployment docs-writer made outside the "
                          "operator: spec.replicas"),
        ("ChildReverted", "reverted changes to Role docs-chromasnap made outside the "
                          "operator: rules"),
    )

    def said() -> set[tuple[str, str]]:
        events = client.CoreV1Api(kube_api).list_namespaced_event(
            e2e.ns, field_selector=f"involvedObject.name={NAME}").items
        return {(ev.reason, ev.message) for ev in events}

    def all_said() -> bool:
        got = said()
        return all(any(r == reason and m.startswith(start) for r, m in got)
                   for reason, start in expected)

    # Each Event is posted just after its repair, so the last may trail the revert.
    deadline = time.monotonic() + 10
    while not all_said() and time.monotonic() < deadline:
        time.sleep(0.2)
    got = said()
    for reason, start in expected:
        assert any(r == reason and m.startswith(start) for r, m in got), (reason, start, got)


# --- 6. no credentials anywhere ---------------------------------------------------------


def test_credentials_appear_in_no_status_event_or_log(
    e2e: E2E, kube_api: Any, operator: OperatorProcess  # noqa: F811
) -> None:
    secret = e2e.minio.secret_key
    assert secret not in json.dumps(e2e.body())
    events = client.CoreV1Api(kube_api).list_namespaced_event(e2e.ns).items
    assert events
    for ev in events:
        assert secret not in (ev.message or "")
    assert secret not in operator.log_text()
    for name in ("writer", "reader"):
        if name in e2e.procs:
            assert secret not in e2e.procs[name].log_text()


# --- 7. operator restart ----------------------------------------------------------------


def test_a_restarted_operator_catches_up_with_what_happened_while_it_was_down(
    e2e: E2E, kube_api: Any, operator: OperatorProcess  # noqa: F811
) -> None:
    core = client.CoreV1Api(kube_api)
    apps = client.AppsV1Api(kube_api)
    batch = client.BatchV1Api(kube_api)
    operator.stop()
    try:
        core.delete_namespaced_service("docs-writer", e2e.ns)
        e2e.colls.patch(e2e.ns, NAME, {
            "metadata": {"annotations": {COMPACT_NOW_ANNOTATION: "while-down"}},
            "spec": {"reader": {"replicas": 2}},
        })
        generation = e2e.body()["metadata"]["generation"]
        assert maybe(lambda: core.read_namespaced_service("docs-writer", e2e.ns)) is None
    finally:
        operator.start()
    # resume: every child re-applied, the spec change and the annotation acted upon
    wait_for("the Service to be restored", lambda: maybe(
        lambda: core.read_namespaced_service("docs-writer", e2e.ns)), timeout=30)
    wait_for("the readers to be scaled to 2", lambda: (
        apps.read_namespaced_deployment("docs-reader", e2e.ns).spec.replicas == 2), timeout=30)
    job = f"docs-compactor-{schedule.compaction_run_id(e2e.uid, 'while-down')}"
    wait_for(f"Job {job}", lambda: maybe(lambda: batch.read_namespaced_job(job, e2e.ns)),
             timeout=30)
    wait_for("status.observedGeneration to follow", lambda: (
        e2e.status().get("observedGeneration") == generation), timeout=30)
    # ... and nothing done twice: one bootstrap compaction, one Job per request
    events = core.list_namespaced_event(
        e2e.ns, field_selector=f"involvedObject.name={NAME}").items
    assert sum(1 for ev in events if ev.reason == "CompactionStarted") == 1
    requested = [ev.message for ev in events if ev.reason == "CompactionRequested"]
    assert len(requested) == 2, requested  # run-1 and while-down
    e2e.colls.wait_condition(e2e.ns, NAME, "Ready", "True")


# --- 8. deletion ------------------------------------------------------------------------


def test_deleting_the_collection_collects_its_children_and_keeps_the_data(
    e2e: E2E, kube_api: Any
) -> None:
    desired = e2e.desired()
    for p in e2e.procs.values():
        p.stop()
    e2e.colls.delete(e2e.ns, NAME)

    def children_gone() -> bool:
        return all(get_manifest(kube_api, m) is None for m in desired)

    wait_for("the garbage collector to delete every child", children_gone, timeout=60)
    store = open_store(f"s3://{e2e.bucket}/{e2e.prefix}", e2e.minio.endpoint)
    keys = [o.key for o in store.list("")]
    assert "pointer.json" in keys and any(k.startswith("snapshots/") for k in keys)


def test_deletion_policy_delete_purges_the_prefix(
    e2e: E2E, kube_api: Any, tmp_path: Path
) -> None:
    ns = e2e.ns
    body = collection_body(
        "scratch", ns,
        collection={"name": "scratch", "dimension": DIM},
        storage={"bucket": e2e.bucket, "prefix": "collections/scratch",
                 "endpoint": e2e.minio.endpoint,
                 "credentialsSecretRef": {"name": "minio-credentials",
                                          "accessKeyIdKey": "accessKey",
                                          "secretAccessKeyKey": "secretKey"}},
        compactor={"schedule": "0 3 1 1 *"},
        deletionPolicy="Delete",
    )
    e2e.colls.create(body)
    wait_for("the purge finalizer", lambda: (
        "chromasnap.dev/purge" in (e2e.colls.get(ns, "scratch")["metadata"].get("finalizers")
                                   or [])), timeout=20)
    _, result = run_job(e2e, kube_api, "scratch-compactor-init")
    assert result["result"] == "succeeded"
    store = open_store(f"s3://{e2e.bucket}/collections/scratch", e2e.minio.endpoint)
    assert any(True for _ in store.list(""))
    apps = client.AppsV1Api(kube_api)
    e2e.colls.delete(ns, "scratch")
    # writes stop first: the operator deletes the workloads before purging
    wait_for("the writer Deployment to be deleted", lambda: maybe(
        lambda: apps.read_namespaced_deployment("scratch-writer", ns)) is None, timeout=30)
    p, _ = run_job_plain(e2e, kube_api, "scratch-purge")
    assert "deleted" in p.log_text()
    assert list(store.list("")) == []
    wait_for("the collection to be gone", lambda: maybe(
        lambda: e2e.colls.get(ns, "scratch")) is None, timeout=30)
    wait_for("the purge Job to be cleaned up", lambda: maybe(
        lambda: client.BatchV1Api(kube_api).read_namespaced_job("scratch-purge", ns)) is None,
        timeout=30)
    # the other collection's data is untouched
    kept = open_store(f"s3://{e2e.bucket}/{e2e.prefix}", e2e.minio.endpoint)
    assert any(o.key == "pointer.json" for o in kept.list(""))
    reasons = {ev.reason for ev in client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector="involvedObject.name=scratch").items}
    assert {"PurgeStarted", "DataPurged"} <= reasons


def run_job_plain(e2e: E2E, kube_api: Any, job_name: str) -> tuple[PodProcess, str]:
    """Run a Job's pod that writes no JSON result."""
    wait_for(f"Job {job_name}", lambda: maybe(
        lambda: client.BatchV1Api(kube_api).read_namespaced_job(job_name, e2e.ns)), timeout=30)
    p = e2e.runner.run(pod_template(kube_api, "Job", e2e.ns, job_name),
                       f"{job_name}-{uuid.uuid4().hex[:5]}")
    assert p.proc.returncode == 0, p.log_text()[-4000:]
    return p, p.log_text()


def test_a_purge_never_deletes_storage_another_collection_uses(
    e2e: E2E, kube_api: Any
) -> None:
    ns = e2e.ns
    storage = {"bucket": e2e.bucket, "prefix": "collections/shared",
               "endpoint": e2e.minio.endpoint}
    e2e.colls.create(collection_body("keeper", ns, storage=storage,
                                     compactor={"schedule": "0 3 1 1 *"}))
    e2e.colls.create(collection_body("twin", ns, storage=storage,
                                     compactor={"schedule": "0 3 1 1 *"},
                                     deletionPolicy="Delete"))
    wait_for("the purge finalizer", lambda: (
        "chromasnap.dev/purge" in (e2e.colls.get(ns, "twin")["metadata"].get("finalizers")
                                   or [])), timeout=20)
    e2e.colls.delete(ns, "twin")
    wait_for("the collection to be gone", lambda: maybe(
        lambda: e2e.colls.get(ns, "twin")) is None, timeout=30)
    assert maybe(lambda: client.BatchV1Api(kube_api).read_namespaced_job("twin-purge", ns)) \
        is None
    reasons = {ev.reason: ev.message for ev in client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector="involvedObject.name=twin").items}
    assert "PurgeSkipped" in reasons
    assert f"{ns}/keeper" in reasons["PurgeSkipped"]
