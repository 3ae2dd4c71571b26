"""A reader serves only what is durable in the bucket, whatever is pushed to it.

Real writer and reader processes on MinIO and the real ``chromadb.HttpClient``.
A delta pushed to a reader's internal route is a hint: the reader reads it back
from the bucket and merges it only if the bucket holds exactly those bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import chromadb
import httpx
import numpy as np
import pytest
from chromadb.errors import ChromaError

from chromasnap.cli.localstack import free_port
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import compactor
from minio_server import MinioServer
from servers import Proc, Stack, stack_env

pytestmark = pytest.mark.minio
DIM = 8
SETTINGS = CollectionSettings(name="docs", dimension=DIM, space=Space.L2)
FAR_FUTURE_US = 4_000_000_000_000_000


def _delta_bytes(rid: str, writer: str = "intruder") -> bytes:
    vec = np.ones(DIM, dtype=np.float32)
    op = Op(OpKind.UPSERT, rid, OpKey(FAR_FUTURE_US, writer, 1), vec, "injected", {"x": 1})
    return deltas.encode([op], DIM, writer)


@pytest.fixture
def reader(minio: MinioServer, tmp_path: Path) -> Iterator[tuple[Proc, ObjectStore, Stack]]:
    url = minio.new_bucket_url()
    store = open_store(url, minio.endpoint)
    assert compactor(store, tmp_path / "c", settings=SETTINGS).run().result == "succeeded"
    stack = Stack(stack_env(url, minio.endpoint, SETTINGS.name, DIM, "l2",
                            CHROMASNAP_READ_LEVEL="fresh"), tmp_path / "procs")
    r = stack.start("reader")
    stack.wait(r, "/readyz")
    yield r, store, stack
    stack.stop()


def test_a_pushed_delta_that_is_not_in_the_bucket_is_refused(
    reader: tuple[Proc, ObjectStore, Stack], tmp_path: Path
) -> None:
    r, store, _ = reader
    name = f"{FAR_FUTURE_US:017d}-intruder.arrow"
    resp = httpx.post(f"{r.url}/internal/v1/deltas/{name}", content=_delta_bytes("ghost"))
    assert resp.status_code == 400, resp.text
    assert "not in the bucket" in resp.text
    col = chromadb.HttpClient(host="127.0.0.1", port=r.port).get_collection(SETTINGS.name)
    assert col.count() == 0
    assert col.get(ids=["ghost"])["ids"] == []
    # Nothing confirms it later either: a compaction changes nothing.
    assert compactor(store, tmp_path / "c", settings=SETTINGS).run().reason == "NothingToDo"
    assert col.get(ids=["ghost"])["ids"] == []


def test_a_pushed_delta_that_differs_from_the_bucket_is_refused(
    reader: tuple[Proc, ObjectStore, Stack],
) -> None:
    r, store, _ = reader
    name = f"{FAR_FUTURE_US:017d}-w1.arrow"
    store.put_if_absent(deltas.DELTA_PREFIX + name, _delta_bytes("real", "w1"))
    resp = httpx.post(f"{r.url}/internal/v1/deltas/{name}",
                      content=_delta_bytes("forged", "w1"))
    assert resp.status_code == 400, resp.text
    assert "differs from the copy in the bucket" in resp.text
    col = chromadb.HttpClient(host="127.0.0.1", port=r.port).get_collection(SETTINGS.name)
    assert col.get(ids=["forged"])["ids"] == []
    # The real object is still picked up (by the LIST fallback) and served.
    deadline = time.monotonic() + 30
    while col.get(ids=["real"])["ids"] != ["real"]:
        assert time.monotonic() < deadline, "the durable delta never became visible"
        time.sleep(0.05)
    # The same bytes as the bucket are accepted (a genuine writer push).
    ok = httpx.post(f"{r.url}/internal/v1/deltas/{name}", content=_delta_bytes("real", "w1"))
    assert ok.status_code == 200, ok.text


def _client(p: Proc, token: str) -> chromadb.ClientAPI:
    return chromadb.HttpClient(
        host="127.0.0.1", port=p.port,
        settings=chromadb.Settings(
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=token,
        ),
    )


def test_with_auth_only_the_push_token_on_the_internal_port_can_push(
    minio: MinioServer, tmp_path: Path
) -> None:
    url = minio.new_bucket_url()
    store = open_store(url, minio.endpoint)
    assert compactor(store, tmp_path / "c", settings=SETTINGS).run().result == "succeeded"
    secrets = tmp_path / "auth"
    secrets.mkdir()
    (secrets / "read").write_text("read-token\n")
    (secrets / "write").write_text("write-token\n")
    (secrets / "push").write_text("push-token\n")
    stack = Stack(stack_env(url, minio.endpoint, SETTINGS.name, DIM, "l2",
                            CHROMASNAP_PUSH_TOKEN_FILE=str(secrets / "push")), tmp_path / "procs")
    try:
        internal = free_port()
        # A long poll interval: only a push can make a write visible quickly.
        reader = stack.start(
            "reader", CHROMASNAP_INTERNAL_PORT=str(internal),
            CHROMASNAP_POLL_INTERVAL_SECONDS="120",
            CHROMASNAP_AUTH_TOKEN_FILE=f"{secrets / 'read'},{secrets / 'write'}",
        )
        stack.wait(reader, "/readyz")
        writer = stack.start("writer", CHROMASNAP_AUTH_TOKEN_FILE=str(secrets / "write"),
                             CHROMASNAP_NOTIFY_URLS=f"http://127.0.0.1:{internal}")
        name = f"{FAR_FUTURE_US:017d}-intruder.arrow"
        body = _delta_bytes("ghost")
        main = f"{reader.url}/internal/v1/deltas/{name}"
        side = f"http://127.0.0.1:{internal}/internal/v1/deltas/{name}"
        # Not on the client port, whatever the credentials.
        r = httpx.post(main, content=body, headers={"X-Chromasnap-Push-Token": "push-token"})
        assert r.status_code == 404, r.text
        # Client tokens never push; a wrong push token is refused.
        for headers, status in (
            ({"Authorization": "Bearer read-token"}, 401),
            ({"Authorization": "Bearer write-token"}, 401),
            ({"X-Chromasnap-Push-Token": "write-token"}, 403),
        ):
            r = httpx.post(side, content=body, headers=headers)
            assert r.status_code == status, (headers, r.text)
        # The right token still cannot add what the bucket does not hold.
        r = httpx.post(side, content=body, headers={"X-Chromasnap-Push-Token": "push-token"})
        assert r.status_code == 400 and "not in the bucket" in r.text, r.text
        # Client routes are not served on the internal port.
        assert httpx.get(f"http://127.0.0.1:{internal}/api/v2/heartbeat").status_code == 404

        reading = _client(reader, "read-token").get_collection(SETTINGS.name)
        assert reading.get(ids=["ghost"])["ids"] == []
        # A read-only token cannot write through the reader's forwarding...
        with pytest.raises(ChromaError):
            reading.add(ids=["nope"], embeddings=[[0.0] * DIM])
        # ...a write token can, and the writer's authenticated push makes it visible
        # long before the reader's next poll.
        _client(writer, "write-token").get_collection(SETTINGS.name).add(
            ids=["real"], embeddings=[[0.5] * DIM])
        deadline = time.monotonic() + 20
        while reading.get(ids=["real"])["ids"] != ["real"]:
            assert time.monotonic() < deadline, "the pushed write never became visible"
            time.sleep(0.05)
        assert reading.get(ids=["nope"])["ids"] == []
    finally:
        stack.stop()
