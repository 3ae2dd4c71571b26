"""A ChromaCollection brought to Ready on the real control plane, for the plugin and
GitOps tests: the chart's operator (``kubeops.operator``), its children, and its
compaction Jobs' pods run as local processes on real MinIO (``kubeops.Runner``).

Readiness needs what the operator needs: kwok reports the Deployments' pods ready, and
the bootstrap compaction (``NAME-compactor-init``), run here as a process, publishes the
first snapshot and reports it into the status with the collection's ServiceAccount.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from chromasnap.operator.schedule import compaction_run_id
from chromasnap.resource import COMPACT_NOW_ANNOTATION
from kubeops import (
    GROUP,
    PLURAL,
    VERSION,
    Collections,
    PodProcess,
    Runner,
    as_dict,
    create_secret,
    maybe,
    raw,
    wait_for,
)
from minio_server import MinioServer, free_port

CREDENTIALS_SECRET = "minio-credentials"  # noqa: S105 - a Secret's name
#: A value in the credentials Secret that nothing may ever print.
DECOY_KEY, DECOY_VALUE = "note", "decoy-5ecret-7f3a9c1e-never-print-me"


@dataclass
class Live:
    """One namespace with a credentials Secret, and the collections made in it."""

    kube_api: Any
    ns: str
    bucket: str
    minio: MinioServer
    runner: Runner
    colls: Collections
    jobs_run: list[PodProcess] = field(default_factory=list)
    writers: dict[str, PodProcess] = field(default_factory=dict)

    def manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        """A ChromaCollection on this namespace's bucket; ``spec`` merged on top."""
        base: dict[str, Any] = {
            "collection": {"name": "docs", "dimension": 8, "space": "l2"},
            "storage": {"bucket": self.bucket, "prefix": f"collections/{name}",
                        "endpoint": self.minio.endpoint,
                        "credentialsSecretRef": {"name": CREDENTIALS_SECRET,
                                                 "accessKeyIdKey": "accessKey",
                                                 "secretAccessKeyKey": "secretKey"}},
            # a schedule that does not fire during the tests: compactions run on demand
            "compactor": {"schedule": "0 3 1 1 *", "leaseDurationSeconds": 10},
            "reader": {"replicas": 1, "pollIntervalSeconds": 1, "cacheSize": "1Gi"},
            "retention": {"deltaGracePeriodSeconds": 5},
        }
        for k, v in spec.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(
                base.get(k), dict) else v
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChromaCollection",
                "metadata": {"name": name, "namespace": self.ns}, "spec": base}

    def get(self, name: str) -> dict[str, Any]:
        return self.colls.get(self.ns, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def run_job(self, job_name: str, timeout: float = 240) -> tuple[PodProcess, dict[str, Any]]:
        """Run a Job's pod as a process (once the operator created the Job); its result."""
        batch = client.BatchV1Api(self.kube_api)
        wait_for(f"Job {job_name}", lambda: maybe(
            lambda: batch.read_namespaced_job(job_name, self.ns)), timeout=60)
        template = as_dict(self.kube_api, batch.read_namespaced_job(job_name, self.ns))[
            "spec"]["template"]
        p = self.runner.run(template, f"{job_name}-{uuid.uuid4().hex[:5]}", timeout=timeout)
        assert p.proc.returncode == 0, p.log_text()[-4000:]
        self.jobs_run.append(p)
        return p, json.loads(p.files["termination-log"].read_text())

    def wait_reported(self, name: str, pod: PodProcess) -> dict[str, Any]:
        """The status once ``pod``'s compaction result is in it."""
        return wait_for(f"{pod.name}'s report in {name}'s status", lambda: (
            (s := self.status(name)).get("lastCompaction", {}).get("identity") == pod.name
            and s), timeout=60)

    def make_ready(self, name: str) -> dict[str, Any]:
        """Run the bootstrap compaction and wait for ``Ready=True``; the status."""
        p, result = self.run_job(f"{name}-compactor-init")
        assert result["result"] == "succeeded", result
        self.wait_reported(name, p)
        self.colls.wait_condition(self.ns, name, "Ready", "True", "AllComponentsReady",
                                  timeout=90)
        return self.status(name)

    def write(self, name: str, n: int, seed: int = 1) -> None:
        """``n`` records written through a writer process (its Deployment's pod template),
        acknowledged once durable in the bucket."""
        import chromadb
        import numpy as np

        key = f"writer:{name}"
        if key not in self.writers:
            dep = client.AppsV1Api(self.kube_api).read_namespaced_deployment(
                f"{name}-writer", self.ns)
            template = as_dict(self.kube_api, dep)["spec"]["template"]
            # no reader plays the headless Service: pushes fail, and only pushes (a hint)
            w = self.runner.start_pod(
                template, f"{name}-writer-{uuid.uuid4().hex[:5]}", services={},
                port=free_port(),
                internal={f"{name}-readers-headless": f"127.0.0.1:{free_port()}"})
            w.wait_http("/healthz")
            self.writers[key] = w
        w = self.writers[key]
        dim = int(self.get(name)["spec"]["collection"]["dimension"])
        vecs = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
        col = chromadb.HttpClient(host="127.0.0.1", port=w.port).get_collection(
            self.get(name)["spec"]["collection"]["name"])
        col.add(ids=[f"r{seed}-{i}" for i in range(n)], embeddings=vecs.tolist())

    def compact(self, name: str, request: str, manager: str = "kubectl-annotate",
                ) -> dict[str, Any]:
        """A compaction on demand (the annotation, set by ``manager``), run to its report."""
        custom = client.CustomObjectsApi(self.kube_api)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name,
            {"metadata": {"annotations": {COMPACT_NOW_ANNOTATION: request}}},
            field_manager=manager, _content_type="application/merge-patch+json")
        uid = self.get(name)["metadata"]["uid"]
        p, result = self.run_job(f"{name}-compactor-{compaction_run_id(uid, request)}")
        assert result["result"] == "succeeded", result
        return self.wait_reported(name, p)


def new_live(kube_api: Any, control_plane: Any, minio: MinioServer, workdir: Path,
             prefix: str) -> Live:
    """A fresh namespace with a bucket and the MinIO credentials Secret (plus a decoy)."""
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    create_secret(kube_api, ns, CREDENTIALS_SECRET,
                  {"accessKey": minio.access_key, "secretKey": minio.secret_key,
                   DECOY_KEY: DECOY_VALUE})
    return Live(kube_api, ns, minio.create_bucket(), minio,
                Runner(control_plane, kube_api, ns, workdir), Collections(kube_api))


def server_side_apply(kube_api: Any, manifest: Mapping[str, Any], manager: str, *,
                      dry_run: bool = False, force: bool = False) -> dict[str, Any]:
    """``kubectl apply --server-side`` of one manifest (as a GitOps tool does)."""
    meta = manifest["metadata"]
    query = f"fieldManager={manager}" + ("&dryRun=All" if dry_run else "") + (
        "&force=true" if force else "")
    out = raw(kube_api, "PATCH",
              f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/"
              f"{meta['name']}?{query}",
              body=yaml.safe_dump(dict(manifest)), content_type="application/apply-patch+yaml")
    assert out is not None
    return out
