"""The real ``chromadb.HttpClient`` against ``chromasnap.api`` served by uvicorn.

The read backend here is a real chromadb ``PersistentClient`` collection (a loaded
snapshot is exactly that), so every answer is compared with chromadb's own answer
to the same call. The write backend only records what reached it: it stands in
for the writer core, whose own tests cover durability.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import numpy as np
import pytest
from chromadb.config import Settings
from chromadb.errors import (
    AuthorizationError,
    BatchSizeExceededError,
    ChromaAuthError,
    ChromaError,
    InvalidArgumentError,
    NotFoundError,
)

from chromasnap.api.app import ChromaAPI
from chromasnap.api.models import GetRequest, QueryRequest, WriteAck, WriteRequest
from chromasnap.api.responses import collection_model_json
from chromasnap.api.server import BackgroundServer
from chromasnap.api.tokens import TOKEN_COOKIE
from chromasnap.engine.errors import InvalidWrite, ReadTimeout
from chromasnap.engine.ops import OpKind

NAME = "docs"
DIM = 16
N = 200
SEED = 11
TOKEN = "s3cret-Token_1"  # noqa: S105 - a test credential


class ChromaReadBackend:
    """ReadBackend over one collection of a real PersistentClient (what the reader serves)."""

    def __init__(self, client: Any, name: str) -> None:
        self.col = client.get_collection(name, embedding_function=None)
        self.model = collection_model_json(self.col)
        self.bindings = client._server.bindings  # the calls chromadb's server makes
        self.cid = str(self.col.id)
        self.tenant = self.col.tenant
        self.database = self.col.database
        self.read_afters: list[str | None] = []
        self.block_token: str | None = None

    def collection_model(self) -> dict[str, Any]:
        return self.model

    def _seen(self, token: str | None) -> None:
        self.read_afters.append(token)
        if token is not None and token == self.block_token:
            raise ReadTimeout(f"write {token} not visible after 0.1s")

    async def query(self, req: QueryRequest) -> dict[str, Any]:
        self._seen(req.read_after)
        r = self.bindings.query(
            self.cid,
            req.ids,
            list(req.query_embeddings),
            req.n_results,
            json.dumps(req.where) if req.where else None,
            json.dumps(req.where_document) if req.where_document else None,
            list(req.include),
            self.tenant,
            self.database,
        )
        return {
            "ids": r.ids,
            "embeddings": r.embeddings and [np.asarray(e, dtype=np.float32) for e in r.embeddings],
            "documents": r.documents,
            "uris": r.uris,
            "metadatas": r.metadatas,
            "distances": r.distances and [np.asarray(d, dtype=np.float32) for d in r.distances],
        }

    async def get(self, req: GetRequest) -> dict[str, Any]:
        self._seen(req.read_after)
        r = self.bindings.get(
            self.cid,
            req.ids,
            json.dumps(req.where) if req.where else None,
            req.limit,
            req.offset,
            json.dumps(req.where_document) if req.where_document else None,
            list(req.include),
            self.tenant,
            self.database,
        )
        return {
            "ids": r.ids,
            "embeddings": r.embeddings and np.asarray(r.embeddings, dtype=np.float32),
            "documents": r.documents,
            "uris": r.uris,
            "metadatas": r.metadatas,
        }

    async def count(self, read_after: str | None) -> int:
        self._seen(read_after)
        return int(self.bindings.count(self.cid, self.tenant, self.database))


class RecordingWriteBackend:
    """WriteBackend that records requests and hands out tokens (test-only)."""

    def __init__(self) -> None:
        self.calls: list[tuple[OpKind, WriteRequest]] = []

    async def write(self, kind: OpKind, req: WriteRequest) -> str | WriteAck:
        if any(i.startswith("bad") for i in req.ids):
            raise InvalidWrite("ids starting with 'bad' are refused by this test backend")
        self.calls.append((kind, req))
        token = f"tok-{len(self.calls)}"
        if kind == OpKind.DELETE:
            return WriteAck(token, deleted=len(req.ids))
        return token


def _records() -> tuple[list[str], np.ndarray, list[dict[str, Any]], list[str | None]]:
    rng = np.random.default_rng(SEED)
    ids = [f"id{i:03d}" for i in range(N)]
    emb = rng.standard_normal((N, DIM)).astype(np.float32)
    metas: list[dict[str, Any]] = [
        {"i": i, "parity": ["even", "odd"][i % 2], "score": float(i) / 7, "flag": i % 3 == 0}
        for i in range(N)
    ]
    docs: list[str | None] = [None if i % 10 == 0 else f"document number {i}" for i in range(N)]
    return ids, emb, metas, docs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path: Path = tmp_path_factory.mktemp("snapshot")
    client = chromadb.PersistentClient(str(path), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(
        NAME, embedding_function=None, configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
    )
    ids, emb, metas, docs = _records()
    col.add(
        ids=ids,
        embeddings=emb,
        metadatas=metas,
        documents=docs,  # type: ignore[arg-type]
        uris=[f"s3://b/{i}" for i in ids],
    )
    yield client


@pytest.fixture(scope="module")
def backend(store: Any) -> ChromaReadBackend:
    return ChromaReadBackend(store, NAME)


@pytest.fixture(scope="module")
def writes() -> RecordingWriteBackend:
    return RecordingWriteBackend()


@pytest.fixture(scope="module")
def server(backend: ChromaReadBackend, writes: RecordingWriteBackend) -> Iterator[BackgroundServer]:
    ready = {"ok": True}
    app = ChromaAPI(
        read=backend, write=writes, ready=lambda: ready["ok"], role="test", max_body_bytes=512 << 10
    )
    with BackgroundServer(app) as srv:
        srv.ready_flag = ready  # type: ignore[attr-defined]
        yield srv


def _client(srv: BackgroundServer, **settings: Any) -> Any:
    return chromadb.HttpClient(
        host=srv.host, port=srv.port, settings=Settings(anonymized_telemetry=False, **settings)
    )


@pytest.fixture(scope="module")
def http(server: BackgroundServer) -> Any:
    return _client(server)


@pytest.fixture(scope="module")
def col(http: Any) -> Any:
    return http.get_collection(NAME, embedding_function=None)


def _api(srv: BackgroundServer, cid: str = "", op: str = "") -> str:
    base = f"{srv.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    return f"{base}/{cid}/{op}" if op else base


# --- identity and collection routes ---


def test_client_construction_and_basics(http: Any, server: BackgroundServer) -> None:
    assert http.heartbeat() > 0
    assert http.get_version() == "1.0.0"
    assert http.get_user_identity().tenant == "default_tenant"
    assert http.count_collections() == 1
    assert [c.name for c in http.list_collections()] == [NAME]
    with httpx.Client() as raw:
        pre = raw.get(f"{server.url}/api/v2/pre-flight-checks").json()
    assert pre == {"max_batch_size": 5461, "supports_base64_encoding": True}


def test_get_collection_same_as_chroma(http: Any, store: Any) -> None:
    direct = store.get_collection(NAME, embedding_function=None)
    remote = http.get_collection(NAME, embedding_function=None)
    assert remote.id == direct.id
    assert remote.metadata == direct.metadata
    assert remote.configuration_json == direct.configuration_json
    assert remote._model.serialized_schema == direct._model.serialized_schema
    assert http.get_collection_by_id(direct.id, embedding_function=None).name == NAME
    same = http.get_or_create_collection(NAME, embedding_function=None)
    assert same.id == direct.id


def test_collection_errors(http: Any) -> None:
    with pytest.raises(NotFoundError, match=r"Collection \[nope\] does not exist"):
        http.get_collection("nope")
    with pytest.raises(NotFoundError):
        http.get_collection_by_id(uuid.uuid4())
    with pytest.raises(ChromaError, match="already exists"):
        http.create_collection(NAME, embedding_function=None)
    with pytest.raises(ChromaError, match="ChromaCollection resource"):
        http.create_collection("another", embedding_function=None)
    with pytest.raises(ChromaError, match="ChromaCollection resource"):
        http.delete_collection(NAME)
    with pytest.raises(NotFoundError):
        http.delete_collection("nope")
    with pytest.raises(ChromaError, match="not supported"):
        http.get_collection(NAME, embedding_function=None).modify(metadata={"x": 1})


def test_unknown_tenant_and_database(server: BackgroundServer) -> None:
    with pytest.raises(NotFoundError):
        chromadb.HttpClient(
            host=server.host,
            port=server.port,
            tenant="other",
            settings=Settings(anonymized_telemetry=False),
        )
    with pytest.raises(NotFoundError):
        chromadb.HttpClient(
            host=server.host,
            port=server.port,
            database="other",
            settings=Settings(anonymized_telemetry=False),
        )


# --- reads equal chromadb's own answers ---


def _same_get(a: Any, b: Any) -> None:
    assert a["ids"] == b["ids"]
    for k in ("documents", "metadatas", "uris"):
        assert a[k] == b[k], k
    if b["embeddings"] is None:
        assert a["embeddings"] is None
    else:
        np.testing.assert_array_equal(
            np.asarray(a["embeddings"], dtype=np.float32),
            np.asarray(b["embeddings"], dtype=np.float32),
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"ids": ["id005", "id017", "missing"]},
        {"where": {"parity": "odd"}, "limit": 7, "offset": 3},
        {"where": {"$and": [{"i": {"$gte": 20}}, {"flag": True}]}},
        {"where": {"score": {"$lt": 2.5}}, "where_document": {"$contains": "number 1"}},
        {"where_document": {"$regex": "r [0-9]5$"}, "include": ["embeddings", "uris"]},
        {"limit": 0},
    ],
)
def test_get_matches_chroma(col: Any, store: Any, kwargs: dict[str, Any]) -> None:
    direct = store.get_collection(NAME, embedding_function=None)
    if "include" not in kwargs:
        kwargs = {**kwargs, "include": ["metadatas", "documents", "embeddings", "uris"]}
    _same_get(col.get(**kwargs), direct.get(**kwargs))


def test_count_and_peek(col: Any, store: Any) -> None:
    direct = store.get_collection(NAME, embedding_function=None)
    assert col.count() == direct.count() == N
    _same_get(col.peek(5), direct.peek(5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_results": 10},
        {"n_results": 3, "where": {"parity": "even"}},
        {
            "n_results": 5,
            "where_document": {"$not_contains": "7"},
            "include": ["distances", "embeddings", "metadatas", "documents", "uris"],
        },
        {"n_results": 4, "ids": ["id001", "id002", "id003", "id050", "id099"]},
        {"n_results": 500, "where": {"i": {"$in": [1, 2, 3]}}},
        {"n_results": 2, "include": []},
    ],
)
def test_query_matches_chroma(col: Any, store: Any, kwargs: dict[str, Any]) -> None:
    direct = store.get_collection(NAME, embedding_function=None)
    q = np.random.default_rng(SEED + 1).standard_normal((3, DIM)).astype(np.float32)
    got = col.query(query_embeddings=q, **kwargs)
    want = direct.query(query_embeddings=q, **kwargs)
    assert got["ids"] == want["ids"]
    for k in ("documents", "metadatas", "uris"):
        assert got[k] == want[k], k
    if want["distances"] is None:
        assert got["distances"] is None
    else:
        np.testing.assert_allclose(got["distances"], want["distances"], rtol=1e-6, atol=1e-7)
    if want["embeddings"] is not None:
        for g, w in zip(got["embeddings"], want["embeddings"], strict=True):
            np.testing.assert_array_equal(np.asarray(g, dtype=np.float32), w)


# --- writes reach the write backend ---


def test_writes_reach_backend_with_token(
    col: Any, writes: RecordingWriteBackend, backend: ChromaReadBackend
) -> None:
    writes.calls.clear()
    emb = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)
    col.add(
        ids=["n1", "n2", "n3"],
        embeddings=emb,
        documents=["a", None, "c"],
        metadatas=[{"k": 1}, {"k": [1, 2]}, None],
        uris=["u1", None, "u3"],
    )
    col.upsert(ids=["n1"], embeddings=emb[:1], metadatas=[{"k": 2.5}])
    col.update(ids=["n2"], metadatas=[{"k": None, "new": "v"}])
    col.delete(ids=["n3"])
    kinds = [k for k, _ in writes.calls]
    assert kinds == [OpKind.ADD, OpKind.UPSERT, OpKind.UPDATE, OpKind.DELETE]
    add = writes.calls[0][1]
    assert add.ids == ["n1", "n2", "n3"]
    assert add.embeddings is not None and add.embeddings.dtype == np.float32
    np.testing.assert_array_equal(add.embeddings, emb)
    assert add.documents == ["a", None, "c"]
    assert add.metadatas == [{"k": 1}, {"k": [1, 2]}, None]
    assert add.uris == ["u1", None, "u3"]
    update = writes.calls[2][1]
    assert update.embeddings is None and update.metadatas == [{"k": None, "new": "v"}]
    assert writes.calls[3][1].ids == ["n3"]
    # Each write carried the previous write's token (the client's cookie), and reads
    # after them carry the last one: read-your-writes without any client change.
    assert [r.read_after for _, r in writes.calls] == [None, "tok-1", "tok-2", "tok-3"]
    backend.read_afters.clear()
    col.count()
    assert backend.read_afters == ["tok-4"]


def test_write_response_carries_token(
    server: BackgroundServer, col: Any, writes: RecordingWriteBackend
) -> None:
    with httpx.Client() as raw:
        r = raw.post(
            _api(server, str(col.id), "upsert"), json={"ids": ["x"], "embeddings": [[0.5] * DIM]}
        )
        assert r.status_code == 200
        assert r.headers["x-chromasnap-token"] == f"tok-{len(writes.calls)}"
        assert r.cookies[TOKEN_COOKIE] == r.headers["x-chromasnap-token"]
        r = raw.post(_api(server, str(col.id), "delete"), json={"ids": ["x", "y"]})
        assert r.json() == {"deleted": 2}
        r = raw.post(
            _api(server, str(col.id), "add"), json={"ids": ["z"], "embeddings": [[1.0] * DIM]}
        )
        assert r.status_code == 201


def test_read_after_header_and_timeout(
    server: BackgroundServer, col: Any, backend: ChromaReadBackend
) -> None:
    backend.read_afters.clear()
    backend.block_token = "never"  # noqa: S105 - a read-your-writes token, not a secret
    with httpx.Client() as raw:
        r = raw.get(_api(server, str(col.id), "count"), headers={"X-Chromasnap-Read-After": "t9"})
        assert r.status_code == 200
        r = raw.get(
            _api(server, str(col.id), "count"), headers={"X-Chromasnap-Read-After": "never"}
        )
        assert r.status_code == 504
        assert r.json()["error"] == "ChromaError"
        assert "not visible" in r.json()["message"]
    assert backend.read_afters == ["t9", "never"]
    backend.block_token = None


def test_invalid_write_is_400(col: Any, writes: RecordingWriteBackend) -> None:
    before = len(writes.calls)
    with pytest.raises(InvalidArgumentError, match="refused by this test backend"):
        col.add(ids=["bad1"], embeddings=[[0.0] * DIM])
    assert len(writes.calls) == before


# --- bad requests ---


def test_wrong_dimension_query(col: Any) -> None:
    with pytest.raises(
        InvalidArgumentError, match="expecting embedding with dimension of 16, got 3"
    ):
        col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=1)


def test_bad_requests_raw(server: BackgroundServer, col: Any) -> None:
    cid = str(col.id)
    with httpx.Client() as raw:

        def post(op: str, **kw: Any) -> httpx.Response:
            return raw.post(_api(server, cid, op), **kw)

        r = post("get", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"] == "InvalidArgumentError"
        assert "JSON" in r.json()["message"]
        # A body that does not fit Chroma's request type: 422, as chroma run answers
        # (tests/integration/api/test_record_parity.py compares every case with it).
        r = post("get", json=[1, 2])
        assert (r.status_code, r.json()["error"]) == (422, "ChromaError")
        r = post("get", json={"where": {"i": {"$bad": 1}}})
        assert r.status_code == 400 and "$bad" in r.json()["message"]
        r = post("get", json={"where_document": {"$regex": "(?<=a)b"}})
        assert r.status_code == 400 and "look-around" in r.json()["message"]
        r = post("get", json={"include": ["bogus"]})
        assert r.status_code == 422 and "unknown variant `bogus`" in r.json()["message"]
        r = post("query", json={"query_embeddings": [[1.0] * DIM], "n_results": 0})
        assert r.status_code == 400
        # orjson (the chromadb client's encoder) sends NaN as null: not an f32 to Chroma.
        r = post("query", json={"query_embeddings": [[None] + [1.0] * (DIM - 1)]})
        assert r.status_code == 422 and "expected f32" in r.json()["message"]
        r = post("add", json={"ids": ["a", "b"], "embeddings": [[1.0] * DIM, [1.0]]})
        assert r.json()["message"] == "Inconsistent dimensions in provided embeddings"
        r = post("add", json={"ids": ["a"], "embeddings": ["AADAfwAAAEAAAEBA"]})
        assert r.status_code == 400 and "NaN" in r.json()["message"]
        r = post("add", json={"ids": ["a"], "embeddings": ["!!"]})
        assert r.status_code == 400 and "base64" in r.json()["message"]
        r = post("add", json={"ids": ["a", "b"], "embeddings": [[1.0] * DIM]})
        assert "Inconsistent number" in r.json()["message"]
        r = raw.get(_api(server, "not-a-uuid", "count"))
        assert (r.status_code, r.json()["message"]) == (400, "Collection ID is not a valid UUIDv4")
        r = raw.get(_api(server, str(uuid.uuid4()), "count"))
        assert (r.status_code, r.json()["error"]) == (404, "NotFoundError")
        r = raw.get(_api(server, cid, "count"), params={"read_level": "bogus"})
        assert r.status_code == 400
        r = raw.get(f"{server.url}/api/v2/nope")
        assert r.status_code == 404
        r = raw.delete(f"{server.url}/api/v2/heartbeat")
        assert r.status_code == 405
        r = raw.post(_api(server, cid, "search"), json={})
        assert r.status_code == 501


def test_oversized_body_is_413(server: BackgroundServer, col: Any) -> None:
    big = np.ones((3000, DIM), dtype=np.float32)  # ~260 KB as base64, over the 512 KiB limit?
    ids = [f"big{i}" for i in range(3000)]
    docs = ["x" * 200] * 3000  # push the body over the limit
    with pytest.raises(BatchSizeExceededError, match="over this server's limit"):
        col.add(ids=ids, embeddings=big, documents=docs)
    with httpx.Client() as raw:
        r = raw.post(_api(server, str(col.id), "get"), content=b" " * (600 << 10))
        assert r.status_code == 413
        assert r.json()["error"] == "BatchSizeExceededError"


# --- operational routes ---


def test_health_ready_metrics(server: BackgroundServer) -> None:
    with httpx.Client() as raw:
        assert raw.get(f"{server.url}/api/v2/heartbeat").status_code == 200
        assert raw.get(f"{server.url}/api/v2/tenants/nope").status_code == 404
        assert raw.get(f"{server.url}/healthz").status_code == 200
        assert raw.get(f"{server.url}/readyz").status_code == 200
        server.ready_flag["ok"] = False  # type: ignore[attr-defined]
        try:
            assert raw.get(f"{server.url}/readyz").status_code == 503
            assert raw.get(f"{server.url}/api/v2/healthcheck").status_code == 503
        finally:
            server.ready_flag["ok"] = True  # type: ignore[attr-defined]
        text = raw.get(f"{server.url}/metrics").text
    assert 'chromasnap_http_requests_total{method="GET",role="test",route="heartbeat"' in text
    assert "chromasnap_http_request_duration_seconds_bucket" in text
    assert 'chromasnap_http_errors_total{error="NotFoundError"' in text


# --- auth ---


@pytest.fixture(scope="module")
def auth_server(backend: ChromaReadBackend) -> Iterator[BackgroundServer]:
    app = ChromaAPI(read=backend, write=RecordingWriteBackend(), auth_tokens=[TOKEN], role="auth")
    with BackgroundServer(app) as srv:
        yield srv


def test_auth_right_token(auth_server: BackgroundServer) -> None:
    provider = "chromadb.auth.token_authn.TokenAuthClientProvider"
    for header in ("Authorization", "X-Chroma-Token"):
        c = _client(
            auth_server,
            chroma_client_auth_provider=provider,
            chroma_client_auth_credentials=TOKEN,
            chroma_auth_token_transport_header=header,
        )
        assert c.get_collection(NAME, embedding_function=None).count() == N


def test_auth_wrong_or_missing_token(auth_server: BackgroundServer) -> None:
    provider = "chromadb.auth.token_authn.TokenAuthClientProvider"
    with pytest.raises(ChromaAuthError):
        _client(
            auth_server,
            chroma_client_auth_provider=provider,
            chroma_client_auth_credentials="wrong-token",
        )
    with pytest.raises(AuthorizationError):
        _client(auth_server)
    with httpx.Client() as raw:
        # Liveness routes stay open, as on Chroma.
        assert raw.get(f"{auth_server.url}/api/v2/heartbeat").status_code == 200
        r = raw.get(f"{auth_server.url}/api/v2/auth/identity")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = raw.get(
            f"{auth_server.url}/api/v2/auth/identity", headers={"Authorization": "Basic abc"}
        )
        assert (r.status_code, r.json()["error"]) == (403, "AuthError")


# --- forwarding: one endpoint for clients ---


def test_reader_forwards_writes_to_writer(backend: ChromaReadBackend) -> None:
    writer_backend = RecordingWriteBackend()
    writer = ChromaAPI(
        write=writer_backend,
        collection_model=backend.collection_model,
        role="writer",
        auth_tokens=[TOKEN],
    )
    with BackgroundServer(writer) as w:
        reader = ChromaAPI(
            read=backend, forward_writes_to=w.url, role="reader", auth_tokens=[TOKEN]
        )
        with BackgroundServer(reader) as r:
            c = _client(
                r,
                chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                chroma_client_auth_credentials=TOKEN,
            )
            col = c.get_collection(NAME, embedding_function=None)
            col.upsert(
                ids=["f1", "f2"],
                embeddings=np.zeros((2, DIM), dtype=np.float32),
                metadatas=[{"via": "reader"}, {"via": "reader"}],
            )
            with pytest.raises(InvalidArgumentError, match="refused by this test backend"):
                col.add(ids=["bad"], embeddings=[[0.0] * DIM])
            assert [(k, q.ids) for k, q in writer_backend.calls] == [(OpKind.UPSERT, ["f1", "f2"])]
            # The writer's token came back through the reader and is used by reads there.
            backend.read_afters.clear()
            assert col.count() == N
            assert backend.read_afters == ["tok-1"]
        # A read-only app without a writer refuses writes clearly.
        lonely = ChromaAPI(read=backend, role="reader")
        with BackgroundServer(lonely) as r2:
            col2 = _client(r2).get_collection(NAME, embedding_function=None)
            with pytest.raises(ChromaError, match="does not accept writes"):
                col2.add(ids=["q"], embeddings=[[0.0] * DIM])
        # The writer sends reads on when told where the readers are; else it says so.
        with BackgroundServer(ChromaAPI(read=backend, role="reader2")) as r3:
            writer2 = ChromaAPI(
                write=RecordingWriteBackend(),
                forward_reads_to=r3.url,
                collection_model=backend.collection_model,
                role="writer2",
            )
            with BackgroundServer(writer2) as w2:
                assert _client(w2).get_collection(NAME, embedding_function=None).count() == N
        c_w = _client(
            w,
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=TOKEN,
        )
        with pytest.raises(ChromaError, match="does not answer reads"):
            c_w.get_collection(NAME, embedding_function=None).count()


def test_forward_target_down(backend: ChromaReadBackend) -> None:
    reader = ChromaAPI(read=backend, forward_writes_to="http://127.0.0.1:9", role="reader3")
    with BackgroundServer(reader) as r:
        col = _client(r).get_collection(NAME, embedding_function=None)
        with pytest.raises(ChromaError, match="cannot reach"):
            col.add(ids=["q"], embeddings=[[0.0] * DIM])


def test_load_auth_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chromasnap.api.auth import load_auth_tokens

    secret = tmp_path / "token"
    secret.write_text("# rotated 2026-11\nfirst\n\n second \n")
    assert load_auth_tokens(secret) == ["first", "second"]
    monkeypatch.setenv("CHROMASNAP_AUTH_TOKEN", "a,b")
    assert load_auth_tokens() == ["a", "b"]
    monkeypatch.delenv("CHROMASNAP_AUTH_TOKEN")
    assert load_auth_tokens() == []
    secret.write_text("tok\u00e9n\n")
    with pytest.raises(ValueError, match="printable ASCII"):
        load_auth_tokens(secret)
    # "<token> <tenant>/<database>" scopes a token, which only a pool can honour.
    secret.write_text("token acme/main\n")
    with pytest.raises(ValueError, match="are for pools"):
        load_auth_tokens(secret)
