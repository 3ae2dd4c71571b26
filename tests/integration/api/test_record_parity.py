"""Record routes refuse a body as ``chroma run`` 1.5.9 refuses it (issue #17).

Every body below goes to a real ``chroma run`` and to chromasnap's API, and the
answers must agree on status, error name and message (up to serde's " at line
L column C", which chromasnap leaves out). A body that does not deserialize
into Chroma's request type is a 422 ``ChromaError``; the rest of what Chroma
refuses (not JSON, filters, lengths, a 0-dimension embedding) stays a 400
``InvalidArgumentError``. chromasnap's write backend here is the writer's own
validation (``build_ops``), without storage; its read backend answers empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
from chromadb.config import Settings
from prometheus_client import CollectorRegistry

from chromasnap.api.app import ChromaAPI
from chromasnap.api.models import GetRequest, QueryRequest, WriteRequest
from chromasnap.api.server import BackgroundServer
from chromasnap.engine.ops import OpKind
from chromasnap.engine.validation import Limits, WriterClock, build_ops
from servers import ChromaRun

NAME = "docs"
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"
E = [[1.0, 2.0]]
ADD = {"ids": ["a"], "embeddings": E}

# (route, body): a dict or list is sent as JSON, bytes as they are.
REFUSED: dict[str, tuple[str, Any]] = {
    # add / upsert / update: the record columns
    "add ids a string": ("add", {"ids": "a", "embeddings": E}),
    "add ids int": ("add", {"ids": [1], "embeddings": E}),
    "add ids null": ("add", {"ids": None, "embeddings": E}),
    "add ids float": ("add", b'{"ids": [1e20]}'),
    "add ids small float": ("add", b'{"ids": [1.5e-5]}'),
    "add ids u64": ("add", b'{"ids": [18446744073709551615]}'),
    "add ids map": ("add", {"ids": [{}], "embeddings": E}),
    "add ids bool": ("add", {"ids": [False]}),
    "add ids escaped string": ("add", {"ids": 'a"b\\c\n'}),
    "add ids missing": ("add", {"embeddings": E}),
    "add embeddings missing": ("add", {"ids": ["a"]}),
    "add embeddings missing, no ids": ("add", {"ids": []}),
    "add nothing": ("add", {}),
    "add embeddings first": ("add", {"embeddings": "x", "ids": [1]}),
    "add ids first": ("add", {"ids": [1], "embeddings": "x"}),
    "add embeddings string": ("add", {"ids": ["a"], "embeddings": "x"}),
    "add embeddings null": ("add", {"ids": ["a"], "embeddings": None}),
    "add embeddings string element": ("add", {"ids": ["a"], "embeddings": [["x", 1.0]]}),
    "add embeddings null element": ("add", {"ids": ["a"], "embeddings": [[None, 1.0]]}),
    "add embeddings null row": ("add", {"ids": ["a"], "embeddings": [None]}),
    "add embeddings bool": ("add", {"ids": ["a"], "embeddings": [[True, 1.0]]}),
    "add embeddings mixed rows": ("add", {"ids": ["a"], "embeddings": ["AAAAAAAAAAA=", [1, 2]]}),
    "add documents int": ("add", {**ADD, "documents": [1]}),
    "add documents string": ("add", {**ADD, "documents": "x"}),
    "add uris int": ("add", {**ADD, "uris": [1]}),
    "add uris string": ("add", {**ADD, "uris": "x"}),
    "add metadatas map": ("add", {**ADD, "metadatas": {"a": 1}}),
    "add metadatas list element": ("add", {**ADD, "metadatas": [[1]]}),
    "add metadatas int element": ("add", {**ADD, "metadatas": [5]}),
    "add metadata nested": ("add", {**ADD, "metadatas": [{"a": {"b": 1}}]}),
    "add metadata null": ("add", {**ADD, "metadatas": [{"a": None}]}),
    "add metadata mixed list": ("add", {**ADD, "metadatas": [{"a": [1, "x"]}]}),
    "add metadata bool and int": ("add", {**ADD, "metadatas": [{"a": [True, 1]}]}),
    "add metadata null in list": ("add", {**ADD, "metadatas": [{"a": [None]}]}),
    "add metadata third record": ("add", {**ADD, "metadatas": [{"a": 1}, {"b": 2}, {"c": {}}]}),
    "add metadata second key": ("add", {**ADD, "metadatas": [{"a": 1, "b": {}}]}),
    "add body null": ("add", b"null"),
    "add body string": ("add", b'"x"'),
    "add body int": ("add", b"5"),
    "add body array of ints": ("add", [1, 2]),
    "add body empty array": ("add", []),
    "add body short array": ("add", [["a"], E]),
    "add lengths differ": ("add", {"ids": ["a", "b"], "embeddings": E}),
    "add no embeddings for an id": ("add", {"ids": ["a"], "embeddings": []}),
    "upsert embeddings missing": ("upsert", {"ids": ["a"]}),
    "upsert embeddings null row": ("upsert", {"ids": ["a"], "embeddings": [None]}),
    "upsert body null": ("upsert", b"null"),
    "upsert body array": ("upsert", [1]),
    "update ids missing": ("update", {"embeddings": E}),
    "update ids a string": ("update", {"ids": "a"}),
    "update embeddings string": ("update", {"ids": ["a"], "embeddings": "x"}),
    "update embeddings null element": ("update", {"ids": ["a"], "embeddings": [[None]]}),
    "update embeddings mixed rows": ("update", {"ids": ["a"],
                                                "embeddings": ["AAAAAAAAAAA=", [1, 2]]}),
    "update metadata nested": ("update", {"ids": ["a"], "metadatas": [{"a": {"b": 1}}]}),
    "update metadata null in list": ("update", {"ids": ["a"], "metadatas": [{"a": [1, None]}]}),
    "update documents int": ("update", {"ids": ["a"], "documents": [1]}),
    "update body null": ("update", b"null"),
    "update body short array": ("update", [["a"]]),
    # delete
    "delete ids int": ("delete", {"ids": [1]}),
    "delete ids null element": ("delete", {"ids": [None]}),
    "delete ids a string": ("delete", {"ids": "a"}),
    "delete limit string": ("delete", {"ids": ["a"], "limit": "x"}),
    "delete limit negative": ("delete", {"ids": ["a"], "limit": -1}),
    "delete where empty": ("delete", {"where": {}}),
    "delete body array": ("delete", [1]),
    "delete body null": ("delete", b"null"),
    # get
    "get limit string": ("get", {"limit": "x"}),
    "get limit bool": ("get", {"limit": True}),
    "get limit float": ("get", {"limit": 1.5}),
    "get limit whole float": ("get", {"limit": 1.0}),
    "get limit 1e15": ("get", b'{"limit": 1e15}'),
    "get limit 1e16": ("get", b'{"limit": 1e16}'),
    "get limit 1e-5": ("get", b'{"limit": 0.00001}'),
    "get limit 1.5e-5": ("get", b'{"limit": 1.5e-5}'),
    "get limit 1e-7": ("get", b'{"limit": 1e-7}'),
    "get limit 1.5e300": ("get", b'{"limit": 1.5e300}'),
    "get limit -0.0": ("get", b'{"limit": -0.0}'),
    "get limit 12345.678": ("get", b'{"limit": 12345.678}'),
    "get limit over u32": ("get", {"limit": 1 << 32}),
    "get limit over u64": ("get", {"limit": 1 << 64}),
    "get limit under i64": ("get", b'{"limit": -99999999999999999999}'),
    "get offset negative": ("get", {"offset": -1}),
    "get offset before limit": ("get", {"offset": "x", "limit": "y"}),
    "get limit before offset": ("get", {"limit": "y", "offset": "x"}),
    "get ids a string": ("get", {"ids": "a"}),
    "get ids null element": ("get", {"ids": [None]}),
    "get include null": ("get", {"include": None}),
    "get include string": ("get", {"include": "documents"}),
    "get include int": ("get", {"include": [1]}),
    "get include unknown": ("get", {"include": ["bogus"]}),
    "get body array": ("get", [1, 2]),
    "get body null": ("get", b"null"),
    # query
    "query n_results string": ("query", {"query_embeddings": E, "n_results": "x"}),
    "query n_results negative": ("query", {"query_embeddings": E, "n_results": -1}),
    "query n_results bool": ("query", {"query_embeddings": E, "n_results": True}),
    "query n_results float": ("query", {"query_embeddings": E, "n_results": 2.0}),
    "query n_results over u32": ("query", {"query_embeddings": E, "n_results": 1 << 32}),
    "query n_results u64 max": ("query", {"query_embeddings": E, "n_results": (1 << 64) - 1}),
    "query n_results i64 min": ("query", {"query_embeddings": E, "n_results": -(1 << 63)}),
    "query n_results under i64": ("query", {"query_embeddings": E, "n_results": -(1 << 63) - 1}),
    "query embeddings missing": ("query", {"n_results": 1}),
    "query embeddings null": ("query", {"query_embeddings": None}),
    "query embeddings string": ("query", {"query_embeddings": "x"}),
    "query embeddings base64": ("query", {"query_embeddings": ["AAAAAAAAAAA="]}),
    "query embeddings null element": ("query", {"query_embeddings": [[None, 1.0]]}),
    "query embeddings string element": ("query", {"query_embeddings": [["x", 1.0]]}),
    "query embeddings bool element": ("query", {"query_embeddings": [[True, 1.0]]}),
    "query embeddings null row": ("query", {"query_embeddings": [None]}),
    "query embeddings flat": ("query", {"query_embeddings": [1.0, 2.0]}),
    "query include unknown": ("query", {"query_embeddings": E, "include": ["bogus"]}),
    "query include data": ("query", {"query_embeddings": E, "include": ["data"]}),
    "query include before n_results": ("query", {"include": ["bogus"], "n_results": "x"}),
    "query n_results before where": ("query", {"where": 5, "n_results": "x",
                                               "query_embeddings": E}),
    "query ids a string": ("query", {"query_embeddings": E, "ids": "a"}),
    "query ids int": ("query", {"query_embeddings": E, "ids": [1]}),
    "query body null": ("query", b"null"),
    "query body array": ("query", [1]),
}
# Refused by both with the same status and error name, in other words (not compared):
# a JSON syntax error as orjson words it, a filter as chromasnap's compiler words it.
WORDED_OTHERWISE: dict[str, tuple[str, Any]] = {
    "add not json": ("add", b"{not json"),
    "delete where int": ("delete", {"where": 5}),
    "delete where_document int": ("delete", {"where_document": 5}),
    "delete ids empty": ("delete", {"ids": []}),
    "get limit out of range": ("get", b'{"limit": 1E400}'),
    "get where bad operator": ("get", {"where": {"a": {"$bogus": 1}}}),
    "get where_document int": ("get", {"where_document": 5}),
    "get where_document string": ("get", {"where_document": "x"}),
    "get not json": ("get", b"{not json"),
    "query where int": ("query", {"query_embeddings": E, "where": 5}),
    "query where and where_document": ("query", {"query_embeddings": E, "where": 5,
                                                 "where_document": 5}),
    "query where_document int": ("query", {"query_embeddings": E, "where_document": 5}),
}
# Known differences (issue #17, left open): chromasnap takes an empty or falsy filter in a
# get as none, and its writer refuses an empty batch and mixed int/float list metadata.
DIFFERENT = {
    "get where list": ("get", {"where": []}),
    "get where empty": ("get", {"where": {}}),
    "add metadata list of numbers": ("add", {**ADD, "metadatas": [{"a": [1, 2.5]}]}),
    "add nothing at all": ("add", {"ids": [], "embeddings": []}),
}
# Bodies both accept (what each then answers is not compared, only the status).
ACCEPTED: dict[str, tuple[str, Any]] = {
    "add unknown key": ("add", {**ADD, "bogus": 1}),
    "add nulls in columns": ("add", {**ADD, "documents": [None], "metadatas": [None],
                                     "uris": None}),
    "add int embeddings": ("add", {"ids": ["b"], "embeddings": [[1, 2]]}),
    "update metadata null": ("update", {"ids": ["a"], "metadatas": [{"a": None}]}),
    "delete limit null": ("delete", {"ids": ["a"], "limit": None}),
    "get nulls": ("get", {"ids": None, "limit": None, "offset": None, "where": None}),
    "get include distances": ("get", {"include": ["distances"]}),
    "get unknown key": ("get", {"bogus": 1}),
    "query n_results u32 max": ("query", {"query_embeddings": E, "n_results": (1 << 32) - 1}),
    "query n_results null": ("query", {"query_embeddings": E, "n_results": None}),
    "query no queries": ("query", {"query_embeddings": []}),
}


class EmptyRead:
    """A read backend over an empty collection."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model

    def collection_model(self) -> dict[str, Any]:
        return self.model

    async def get(self, req: GetRequest) -> dict[str, Any]:
        return {"ids": []}

    async def query(self, req: QueryRequest) -> dict[str, Any]:
        return {"ids": [[] for _ in req.query_embeddings]}

    async def count(self, read_after: str | None) -> int:
        return 0


class ValidatingWrite:
    """The writer's validation of each request, without storage."""

    def __init__(self) -> None:
        self.clock = WriterClock("parity")

    async def write(self, kind: OpKind, req: WriteRequest) -> str:
        build_ops(kind, req.ids, embeddings=req.embeddings, documents=req.documents,
                  metadatas=req.metadatas, uris=req.uris, limits=Limits(dimension=2),
                  clock=self.clock, where=req.where, where_document=req.where_document,
                  limit=req.limit)
        return "tok"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaRun]:
    work: Path = tmp_path_factory.mktemp("chroma-run")
    with ChromaRun(work / "db", work) as run:
        httpx.post(run.url + COLLECTIONS, json={"name": NAME}).raise_for_status()
        yield run


@pytest.fixture(scope="module")
def ours(peer: ChromaRun) -> Iterator[BackgroundServer]:
    model = httpx.get(f"{peer.url}{COLLECTIONS}/{NAME}").json()
    app = ChromaAPI(read=EmptyRead(model), write=ValidatingWrite(), role="test",
                    metrics_registry=CollectorRegistry())
    with BackgroundServer(app) as srv:
        yield srv


def _strip(message: str) -> str:
    # serde's position suffix is the only part chromasnap does not reproduce.
    return re.sub(r" at line \d+ column \d+$", "", message)


def _post(base: str, route: str, body: Any) -> tuple[int, Any]:
    cid = httpx.get(f"{base}{COLLECTIONS}/{NAME}").json()["id"]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{base}{COLLECTIONS}/{cid}/{route}", content=raw,
                   headers={"content-type": "application/json"})
    if r.status_code < 400:
        return r.status_code, None
    answer = r.json()
    return r.status_code, {**answer, "message": _strip(answer["message"])}


@pytest.mark.parametrize(("route", "body"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_as_chroma_refuses(peer: ChromaRun, ours: BackgroundServer,
                                   route: str, body: Any) -> None:
    status, theirs = _post(peer.url, route, body)
    assert status in (400, 422), theirs
    assert _post(ours.url, route, body) == (status, theirs)


@pytest.mark.parametrize(("route", "body"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_as_chroma_accepts(peer: ChromaRun, ours: BackgroundServer,
                                    route: str, body: Any) -> None:
    status, theirs = _post(peer.url, route, body)
    assert status < 300, theirs
    assert _post(ours.url, route, body) == (status, None)


@pytest.mark.parametrize(("route", "body"), list(WORDED_OTHERWISE.values()),
                         ids=list(WORDED_OTHERWISE))
def test_refused_with_the_same_status_and_name(peer: ChromaRun, ours: BackgroundServer,
                                               route: str, body: Any) -> None:
    status, theirs = _post(peer.url, route, body)
    assert status == 400, theirs
    status_ours, answer = _post(ours.url, route, body)
    assert (status_ours, answer["error"]) == (status, theirs["error"]), answer


@pytest.mark.parametrize("route, body", [
    pytest.param(*case, id=name, marks=pytest.mark.xfail(strict=True, reason="issue #17"))
    for name, case in DIFFERENT.items()])
def test_known_differences(peer: ChromaRun, ours: BackgroundServer,
                           route: str, body: Any) -> None:
    assert _post(ours.url, route, body)[0] == _post(peer.url, route, body)[0]


def test_client_raises_the_same_exception(peer: ChromaRun, ours: BackgroundServer) -> None:
    """chromadb.HttpClient turns both servers' 422 into the same exception and message."""
    seen = []
    for srv in (peer, ours):
        client = chromadb.HttpClient(host="127.0.0.1", port=srv.port,
                                     settings=Settings(anonymized_telemetry=False))
        col = client.get_collection(NAME, embedding_function=None)
        path = f"/tenants/{col.tenant}/databases/{col.database}/collections/{col.id}"
        for body in ({"ids": [1], "embeddings": E}, {"limit": "x"}):
            route = "add" if "ids" in body else "get"
            with pytest.raises(Exception) as info:
                client._server._make_request("post", f"{path}/{route}", json=body)  # type: ignore[attr-defined]
            seen.append((type(info.value), _strip(str(info.value))))
    assert seen[:2] == seen[2:]
    assert seen[0][0].__name__ == "ChromaError", seen
