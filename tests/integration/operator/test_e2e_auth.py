"""End to end with ``spec.auth``: the pods the operator renders enforce the tokens.

The chart's operator on the real control plane renders a collection with
``spec.auth``; its writer and reader pods run as processes with exactly the
rendered command, env and Secret volume (see ``tests/kubeops.py``), on real
MinIO, driven by the real ``chromadb.HttpClient``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
from chromadb.errors import ChromaError
from kubernetes import client

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
    wait_for,
)
from minio_server import MinioServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.minio]
DIM = 4
TOKENS = {"read": "r-" + uuid.uuid4().hex, "write": "w-" + uuid.uuid4().hex,
          "push": "p-" + uuid.uuid4().hex}


def _client(p: PodProcess, token: str | None) -> Any:
    settings = chromadb.Settings(
        chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
        chroma_client_auth_credentials=token,
    ) if token else None
    return chromadb.HttpClient(host="127.0.0.1", port=p.port, settings=settings)


@pytest.fixture(scope="module")
def pods(control_plane: Any, kube_api: Any, operator: OperatorProcess,  # noqa: F811
         minio: MinioServer, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[tuple[PodProcess, PodProcess]]:
    core = client.CoreV1Api(kube_api)
    ns = f"auth-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    bucket = minio.create_bucket()
    create_secret(kube_api, ns, "minio", {"accessKey": minio.access_key,
                                          "secretKey": minio.secret_key})
    create_secret(kube_api, ns, "docs-tokens", TOKENS)
    Collections(kube_api).create(collection_body(
        "docs", ns,
        collection={"name": "docs", "dimension": DIM, "space": "l2"},
        storage={"bucket": bucket, "prefix": "docs", "endpoint": minio.endpoint,
                 "credentialsSecretRef": {"name": "minio", "accessKeyIdKey": "accessKey",
                                          "secretAccessKeyKey": "secretKey"}},
        compactor={"schedule": "0 3 1 1 *"},
        # Only a push can make a write visible before the next poll.
        reader={"pollIntervalSeconds": 300},
        auth={"secretRef": {"name": "docs-tokens"}},
    ))
    runner = Runner(control_plane, kube_api, ns, tmp_path_factory.mktemp("auth-pods"))
    try:
        wait_for("the bootstrap Job", lambda: maybe(
            lambda: client.BatchV1Api(kube_api).read_namespaced_job("docs-compactor-init", ns)),
            timeout=30)
        job = runner.run(pod_template(kube_api, "Job", ns, "docs-compactor-init"), "init-abcde")
        assert job.proc.returncode == 0, job.log_text()[-3000:]
        wport, rport, iport = free_port(), free_port(), free_port()
        writer = runner.start_pod(
            pod_template(kube_api, "Deployment", ns, "docs-writer"), "docs-writer-1", services={},
            port=wport, internal={"docs-readers-headless": f"127.0.0.1:{iport}"})
        reader = runner.start_pod(
            pod_template(kube_api, "Deployment", ns, "docs-reader"), "docs-reader-1",
            services={"docs-writer": f"127.0.0.1:{wport}"}, port=rport, internal_port=iport)
        writer.wait_http("/healthz")
        reader.wait_http("/readyz")
        yield writer, reader
    finally:
        runner.stop_all()
        core.delete_namespace(ns)


def test_token_files_come_from_the_secret_volume(pods: tuple[PodProcess, PodProcess]) -> None:
    writer, reader = pods
    for p in pods:
        assert all(t not in v for v in p.env.values() for t in TOKENS.values()), p.name
    w_files = writer.env["CHROMASNAP_AUTH_TOKEN_FILE"].split(",")
    r_files = reader.env["CHROMASNAP_AUTH_TOKEN_FILE"].split(",")
    assert [Path(f).read_text().strip() for f in w_files] == [TOKENS["write"]]
    assert sorted(Path(f).read_text().strip() for f in r_files) == sorted(
        [TOKENS["read"], TOKENS["write"]])
    assert Path(reader.env["CHROMASNAP_PUSH_TOKEN_FILE"]).read_text().strip() == TOKENS["push"]
    assert Path(w_files[0]).stat().st_mode & 0o777 == 0o440


def test_tokens_are_enforced_end_to_end(pods: tuple[PodProcess, PodProcess]) -> None:
    writer, reader = pods
    with pytest.raises(ChromaError):
        _client(reader, None).get_collection("docs")
    with pytest.raises(ChromaError):
        _client(writer, TOKENS["read"]).get_collection("docs").add(
            ids=["x"], embeddings=[[0.0] * DIM])
    reading = _client(reader, TOKENS["read"]).get_collection("docs")
    assert reading.count() == 0
    # A read token cannot write through the reader's forwarding; a write token can.
    with pytest.raises(ChromaError):
        reading.add(ids=["nope"], embeddings=[[0.0] * DIM])
    _client(reader, TOKENS["write"]).get_collection("docs").add(
        ids=["via-reader"], embeddings=[[0.1] * DIM])
    _client(writer, TOKENS["write"]).get_collection("docs").add(
        ids=["via-writer"], embeddings=[[0.2] * DIM])
    # Pushed with the push token to the reader's internal port: visible long before a poll.
    deadline = time.monotonic() + 20
    while sorted(reading.get()["ids"]) != ["via-reader", "via-writer"]:
        assert time.monotonic() < deadline, reader.log_text()[-3000:]
        time.sleep(0.05)
    # Client tokens do not push.
    r = httpx.post(f"http://127.0.0.1:{reader.env['CHROMASNAP_INTERNAL_PORT']}"
                   "/internal/v1/deltas/00000000000000001-x.arrow", content=b"x",
                   headers={"Authorization": f"Bearer {TOKENS['write']}"})
    assert r.status_code == 401, r.text
