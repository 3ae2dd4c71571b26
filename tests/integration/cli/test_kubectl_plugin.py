"""``kubectl chromasnap`` against the real API server, on a collection the chart's operator
runs (see tests/live_collection.py and tests/kubeops.py).

Every command runs as the installed ``kubectl-chromasnap`` executable in a subprocess,
with a KUBECONFIG for the test cluster and no AWS credentials in its environment, so
bucket work must go through the collection's credentials Secret. One test also runs it
through the real ``kubectl`` binary, which finds plugins on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import cluster  # hack/cluster.py
import numpy as np
import pytest
import yaml
from kubernetes import client

from chromasnap.cli.plugin.bucket import NOT_APPLIED, export_supports_at
from chromasnap.cli.plugin.status import parse_reader_metrics
from chromasnap.operator.schedule import compaction_run_id
from chromasnap.storage import manifest as mf
from kubeops import (
    OperatorProcess,
    PodProcess,
    as_dict,
    chart_release,  # noqa: F401 - fixture
    operator,  # noqa: F401 - fixture
    raw,
    sa_token,
    token_kubeconfig,
    wait_for,
)
from live_collection import DECOY_VALUE, Live, new_live
from minio_server import MinioServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
VENV_BIN = Path(sys.executable).parent
PLUGIN = VENV_BIN / "kubectl-chromasnap"
NAME, DIM, N = "docs", 8, 30


@dataclass
class Env:
    live: Live
    kubeconfig: Path
    reader: PodProcess
    workdir: Path

    def run(self, *args: str, kubeconfig: Path | None = None, timeout: float = 180,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(PLUGIN), *args], env=self.env(kubeconfig),
                             capture_output=True, text=True, timeout=timeout, check=False,
                             cwd=cwd or self.workdir)
        # shown with the test's output on failure (or with pytest -rP)
        print(f"$ kubectl chromasnap {' '.join(args)}  -> {out.returncode}\n{out.stdout}"
              f"{out.stderr}")
        return out

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        # No AWS credentials: the plugin must read the collection's Secret.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(KUBECONFIG=str(kubeconfig or self.kubeconfig),
                   AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        return env


def _template(kube_api: Any, ns: str, deployment: str) -> dict[str, Any]:
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment(deployment, ns)
    template: dict[str, Any] = as_dict(kube_api, dep)["spec"]["template"]
    return template


@pytest.fixture(scope="module")
def env(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
        minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is not installed: reinstall the package (make venv)")
    live = new_live(kube_api, control_plane, minio, tmp_path_factory.mktemp("pods"), "plugin")
    live.colls.create(live.manifest(NAME))
    try:
        live.make_ready(NAME)
        # a writer and a reader as their Deployments run them, and records written through
        wport, rport, iport = free_port(), free_port(), free_port()
        live.runner.start_pod(_template(kube_api, live.ns, f"{NAME}-writer"), "docs-writer-1",
                              services={}, port=wport,
                              internal={f"{NAME}-readers-headless": f"127.0.0.1:{iport}"})
        reader = live.runner.start_pod(
            _template(kube_api, live.ns, f"{NAME}-reader"), "docs-reader-1",
            services={f"{NAME}-writer": f"127.0.0.1:{wport}"}, port=rport, internal_port=iport)
        reader.wait_http("/readyz")
        col = chromadb.HttpClient(host="127.0.0.1", port=rport).get_collection("docs")
        vecs = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
        col.add(ids=[f"d{i}" for i in range(N)], embeddings=vecs.tolist(),
                documents=[f"text {i}" for i in range(N)])
        assert col.count() == N
        yield Env(live, control_plane.kubeconfig_path, reader,
                  tmp_path_factory.mktemp("plugin"))
    finally:
        live.runner.stop_all()
        client.CoreV1Api(kube_api).delete_namespace(live.ns)


def test_status_shows_conditions_snapshot_and_runs(env: Env) -> None:
    st = env.live.status(NAME)
    out = env.run("status", NAME, "-n", env.live.ns)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"ChromaCollection {env.live.ns}/{NAME}" in text
    assert re.search(r"^  Ready +True +AllComponentsReady", text, re.M), text
    assert f"Snapshot:        {st['snapshot']['version']}" in text
    assert "Last compaction: Succeeded (Compacted)" in text
    assert "docs-compactor-init" in text  # the recent Jobs
    # the reader pods (kwok's) are listed; their /metrics are not reachable through the
    # API server's proxy on a fake node, and the page says so instead of failing
    readers = client.CoreV1Api(env.live.kube_api).list_namespaced_pod(
        env.live.ns, label_selector=f"app.kubernetes.io/instance={NAME},"
        "app.kubernetes.io/component=reader").items
    assert readers
    for pod in readers:
        assert f"  {pod.metadata.name}  " in text
    assert "Reader pods (loaded snapshot from each pod's /metrics):" in text


def test_status_json_and_the_reader_metrics_it_reads(env: Env) -> None:
    import json

    out = env.run("status", NAME, "-n", env.live.ns, "--json", "--bucket")
    assert out.returncode == 0, out.stderr
    page = json.loads(out.stdout)
    st = env.live.status(NAME)
    assert page["snapshot"]["version"] == st["snapshot"]["version"]
    assert page["snapshot"]["seq"] == mf.version_seq(st["snapshot"]["version"])
    assert page["observedGeneration"] == page["generation"]
    assert {c["type"] for c in page["conditions"]} >= {"Ready", "WritersReady",
                                                       "ReadersReady", "CompactorHealthy",
                                                       "SnapshotAvailable"}
    assert len(page["readerPods"]) == 1
    reader = page["readerPods"][0]
    assert "snapshotSeq" in reader or "metricsError" in reader
    # the bucket part went through the collection's Secret (no AWS env in the plugin)
    bucket = page["bucket"]
    assert bucket["current_version"] == st["snapshot"]["version"], bucket
    assert bucket["pending_deltas"] >= 1  # the records written since
    # what the plugin reads from each reader's /metrics, here from the real reader process
    with urllib.request.urlopen(env.reader.url + "/metrics", timeout=5) as r:  # noqa: S310
        metrics = parse_reader_metrics(r.read().decode())
    assert metrics["snapshotSeq"] == page["snapshot"]["seq"]


def test_compact_requests_a_run_and_follows_it(env: Env) -> None:
    live = env.live
    before = live.status(NAME)["lastCompaction"]
    proc = subprocess.Popen([str(PLUGIN), "compact", NAME, "-n", live.ns, "--request",
                             "plugin-1", "--timeout", "240"], env=env.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = f"{NAME}-compactor-{compaction_run_id(live.get(NAME)['metadata']['uid'], 'plugin-1')}"
        p, result = live.run_job(job)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    assert result["records_folded"] == N
    assert f"requested a compaction of {live.ns}/{NAME}" in out
    assert f"the operator starts Job {job}" in out
    assert "compaction Succeeded (Compacted)" in out and f"{N} records folded" in out
    after = live.status(NAME)["lastCompaction"]
    assert after != before and after["identity"] == p.name
    # the annotation is the plugin's field, not the manifest's
    managers = {m["manager"]: m for m in live.get(NAME)["metadata"]["managedFields"]}
    assert "f:chromasnap.dev/compact-now" in str(managers["kubectl-chromasnap"]["fieldsV1"])


def test_export_through_the_collections_secret(env: Env) -> None:
    dest = env.workdir / "exported"
    out = env.run("export", NAME, str(dest), "-n", env.live.ns)
    assert out.returncode == 0, out.stderr
    assert "using the credentials of Secret 'minio-credentials'" in out.stderr
    assert env.live.minio.secret_key not in out.stdout + out.stderr
    count = chromadb.PersistentClient(path=str(dest)).get_collection("docs").count()
    assert count == env.live.status(NAME)["snapshot"]["records"] == N
    # an older retained version, by name (the bucket listing names them)
    import json

    page = json.loads(env.run("status", NAME, "-n", env.live.ns, "--json", "--bucket").stdout)
    older = [s for s in page["bucket"]["snapshots"] if not s["current"] and s["complete"]]
    assert older, page["bucket"]
    dest2 = env.workdir / "exported-older"
    out = env.run("export", NAME, str(dest2), "-n", env.live.ns, "--version",
                  older[0]["version"])
    assert out.returncode == 0, out.stderr
    count = chromadb.PersistentClient(path=str(dest2)).get_collection("docs").count()
    assert count == older[0]["records"]


def test_export_at_a_time(env: Env) -> None:
    assert export_supports_at()
    late = env.workdir / "at-2100"
    out = env.run("export", NAME, str(late), "-n", env.live.ns, "--at", "2100-01-01T00:00:00Z")
    assert out.returncode == 0, out.stderr
    # Every write so far is before 2100: the state is the current one.
    page = json.loads(env.run("status", NAME, "-n", env.live.ns, "--json", "--bucket").stdout)
    current = next(s for s in page["bucket"]["snapshots"] if s["current"])
    if not page["bucket"]["pending_deltas"]:
        assert chromadb.PersistentClient(path=str(late)).get_collection("docs").count() == \
            current["records"]
    early = env.workdir / "at-2026"
    out = env.run("export", NAME, str(early), "-n", env.live.ns, "--at", "2026-01-01T00:00:00Z")
    if out.returncode == 0:  # every delta is still there: replayed from empty, nothing yet
        assert chromadb.PersistentClient(path=str(early)).get_collection("docs").count() == 0
    else:
        assert out.returncode == 1 and "outside the recovery window" in out.stderr, out.stderr
        assert not early.exists()


def test_restore_writes_the_bootstrap_manifest(env: Env) -> None:
    live = env.live
    version = live.status(NAME)["snapshot"]["version"]
    dry = env.run("restore", NAME, "--into", "docs-restored", "--version", version, "-n",
                  live.ns, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    manifest = yaml.safe_load(dry.stdout)
    assert manifest["metadata"]["name"] == "docs-restored"
    assert manifest["spec"]["storage"]["prefix"] == "collections/docs-restored"
    boot = manifest["spec"]["bootstrap"]["from"]
    src = boot.get("storage", boot)
    assert (src["bucket"], src["prefix"]) == (live.bucket, f"collections/{NAME}")
    assert boot["version"] == version

    out = env.run("restore", NAME, "--into", "docs-restored", "--version", version, "-n",
                  live.ns)
    crd = raw(live.kube_api, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
              "chromacollections.chromasnap.dev")
    assert crd is not None
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]
    if "bootstrap" in props:
        assert out.returncode == 0, out.stderr
        assert live.get("docs-restored")["spec"]["bootstrap"]
    else:
        # This CRD cannot hold spec.bootstrap: the manifest is printed, nothing is created.
        assert out.returncode == NOT_APPLIED, out.stderr
        assert yaml.safe_load(out.stdout)["spec"]["bootstrap"]["from"]
        assert "NOTE: not applied" in out.stderr and "bootstrap support" in out.stderr
        names = [c["metadata"]["name"] for c in live.colls.api.list_namespaced_custom_object(
            "chromasnap.dev", "v1alpha1", live.ns, "chromacollections")["items"]]
        assert names == [NAME]


def test_logs_finds_the_pods_by_the_operators_labels(env: Env) -> None:
    live = env.live
    pods = client.CoreV1Api(live.kube_api).list_namespaced_pod(
        live.ns, label_selector=f"app.kubernetes.io/instance={NAME},"
        "app.kubernetes.io/component=reader").items
    assert pods, "kwok runs the reader Deployment's pods"
    out = env.run("logs", NAME, "--role", "reader", "-n", live.ns, "--tail", "20")
    for pod in pods:
        # kwok's fake node serves no logs; each pod is named with its log or the reason
        assert f"[{pod.metadata.name}/" in out.stdout + out.stderr
    if out.returncode != 0:
        assert "logs unavailable:" in out.stderr and "could not read the logs" in out.stderr
    none = env.run("logs", NAME, "--role", "purge", "-n", live.ns)
    assert none.returncode == 0 and "no purge pods of ChromaCollection" in none.stderr


def _all_text(root: Path) -> str:
    return "\n".join(f.read_text(errors="replace") for f in root.rglob("*") if f.is_file())


def test_report_bundle_has_everything_but_secrets(env: Env) -> None:
    live = env.live
    out = env.run("report", NAME, "-n", live.ns, "-o", str(env.workdir / "bundle"))
    assert out.returncode == 0, out.stderr
    root = env.workdir / "bundle"
    names = {p.name for p in root.rglob("*") if p.is_file()}
    assert {"README.txt", "collection.yaml", "status.txt", "status.json", "events.yaml",
            "children.yaml", "pods.yaml", "bucket.json"} <= names, (names, out.stderr)
    assert any(n.endswith(".log") for n in names)
    assert yaml.safe_load((root / "collection.yaml").read_text())["metadata"]["name"] == NAME
    kinds = {c["kind"] for c in yaml.safe_load((root / "children.yaml").read_text())}
    assert {"Deployment", "CronJob", "Service", "ConfigMap", "Job"} <= kinds
    reasons = {e["reason"] for e in yaml.safe_load((root / "events.yaml").read_text())}
    assert {"Ready", "CompactionStarted"} <= reasons
    assert '"current_version"' in (root / "bucket.json").read_text()
    text = _all_text(root)
    # the credentials the plugin read for the bucket summary, and a key it never uses
    assert live.minio.secret_key not in text
    assert DECOY_VALUE not in text
    assert "managedFields" not in text

    tarball = env.workdir / "bundle.tar.gz"
    out = env.run("report", NAME, "-n", live.ns, "-o", str(tarball), "--no-bucket")
    assert out.returncode == 0, out.stderr
    with tarfile.open(tarball) as tar:
        members = tar.getnames()
        blob = b"".join(f.read() for m in tar.getmembers() if (f := tar.extractfile(m)))
    assert any(m.endswith("/collection.yaml") for m in members)
    assert not any(m.endswith("bucket.json") for m in members)
    assert live.minio.secret_key.encode() not in blob and DECOY_VALUE.encode() not in blob


def test_errors_say_what_to_do(env: Env, control_plane: Any) -> None:
    live = env.live
    missing = env.run("status", "nope", "-n", live.ns)
    assert missing.returncode == 1
    assert f"ChromaCollection 'nope' not found in namespace '{live.ns}'" in missing.stderr
    assert "kubectl get ccol" in missing.stderr
    # an identity with no rights at all
    client.CoreV1Api(live.kube_api).create_namespaced_service_account(
        live.ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody")))
    kc = token_kubeconfig(control_plane, sa_token(live.kube_api, live.ns, "nobody"),
                          env.workdir / "nobody.kubeconfig", "nobody")
    denied = env.run("status", NAME, "-n", live.ns, kubeconfig=kc)
    assert denied.returncode == 1
    assert "forbidden:" in denied.stderr
    assert f"kubectl auth can-i get chromacollections.chromasnap.dev -n {live.ns}" in \
        denied.stderr
    nokube = env.run("status", NAME, kubeconfig=env.workdir / "missing.kubeconfig")
    assert nokube.returncode == 1 and "cannot load a kubeconfig" in nokube.stderr


def test_kubectl_finds_the_plugin(env: Env) -> None:
    kubectl = cluster.tool("kubectl")
    e = env.env()
    e["PATH"] = f"{VENV_BIN}:{e.get('PATH', '')}"
    listed = subprocess.run([str(kubectl), "plugin", "list"], env=e, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "kubectl-chromasnap" in listed.stdout, listed.stdout + listed.stderr
    out = subprocess.run([str(kubectl), "chromasnap", "status", NAME, "-n", env.live.ns],
                         env=e, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "AllComponentsReady" in out.stdout


def test_reader_snapshot_metric_follows_compactions(env: Env) -> None:
    # the reader swaps in the compaction's snapshot: the figure status compares with
    seq = mf.version_seq(env.live.status(NAME)["snapshot"]["version"])

    def on_it() -> bool:
        with urllib.request.urlopen(env.reader.url + "/metrics", timeout=5) as r:  # noqa: S310
            return parse_reader_metrics(r.read().decode()).get("snapshotSeq") == seq

    wait_for("the reader to load the current snapshot", on_it, timeout=60)


def test_compact_gives_up_after_its_timeout(env: Env) -> None:
    t0 = time.monotonic()
    out = env.run("compact", NAME, "-n", env.live.ns, "--request", "nobody-runs-it",
                  "--timeout", "4")
    assert out.returncode == 1
    assert "no result after 4s" in out.stderr and "logs docs --role compactor" in out.stderr
    assert time.monotonic() - t0 < 60
