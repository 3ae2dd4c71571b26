"""Creating a collection that exists answers as ``chroma run`` 1.5.9 answers (issue #17).

A real ``chroma run`` holds a cosine collection; chromasnap's API serves that
same collection (its JSON, as a snapshot's manifest records it). Every body
below goes to both, and the answers must agree: Chroma checks the whole body
even for an existing collection, refuses what does not parse, and ignores
every valid setting (space, HNSW parameters, SPANN, metadata, embedding
function). chromasnap also logs a warning naming the settings it ignored.
"""

from __future__ import annotations

import logging
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
from chromasnap.api.server import BackgroundServer
from servers import ChromaRun

NAME = "docs"
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"
COSINE = {"hnsw": {"space": "cosine", "ef_construction": 100, "ef_search": 100,
                   "max_neighbors": 16}}

# Bodies of create requests for the existing collection (``name`` and ``get_or_create``
# are added unless the case sets them), grouped by how Chroma answers them.
IGNORED = {
    "metadata hnsw:space": {"metadata": {"hnsw:space": "l2"}},
    "metadata hnsw:M": {"metadata": {"hnsw:M": 32, "hnsw:construction_ef": 5}},
    "metadata hnsw:M 0, resize_factor": {"metadata": {"hnsw:M": 0, "hnsw:resize_factor": -1}},
    "metadata, not settings": {"metadata": {"owner": "b", "tags": [1, 2.5], "none": []}},
    "configuration space": {"configuration": {"hnsw": {"space": "l2"}}},
    "configuration everything": {"configuration": {"hnsw": {
        "space": "ip", "ef_search": 7, "ef_construction": 0, "max_neighbors": 1 << 40,
        "num_threads": 3, "resize_factor": 2, "sync_threshold": 0, "batch_size": 0}}},
    "configuration null fields": {"configuration": {"hnsw": {"space": None, "ef_search": None}}},
    "configuration spann": {"configuration": {"spann": {"space": "l2", "search_nprobe": 1}}},
    "configuration and metadata disagree": {"configuration": {"hnsw": {"space": "l2"}},
                                            "metadata": {"hnsw:space": "ip"}},
    "unknown configuration key": {"configuration": {"bogus": {}}},
    "embedding function": {"configuration": {"embedding_function": {
        "type": "known", "name": "nope", "config": {}}}},
    "null parts": {"configuration": None, "metadata": None, "schema": None},
    "unknown top-level key": {"bogus": 1},
    "same settings": {"configuration": COSINE, "metadata": {"hnsw:space": "cosine"}},
}
REFUSED = {
    "metadata hnsw:space unknown": {"metadata": {"hnsw:space": "dot"}},
    "metadata hnsw:space case": {"metadata": {"hnsw:space": "L2"}},
    "metadata hnsw:M float": {"metadata": {"hnsw:M": 16.0}},
    "metadata hnsw:M negative": {"metadata": {"hnsw:M": -1}},
    "metadata hnsw:M bool": {"metadata": {"hnsw:M": True}},
    "metadata hnsw:search_ef string": {"metadata": {"hnsw:search_ef": "x"}},
    "metadata hnsw:batch_size 1": {"metadata": {"hnsw:batch_size": 1}},
    "metadata hnsw:sync_threshold 0": {"metadata": {"hnsw:sync_threshold": 0}},
    "metadata unknown hnsw key": {"metadata": {"hnsw:m": 16}},
    "metadata u64": {"metadata": {"hnsw:construction_ef": (1 << 64) - 1}},
    "metadata empty": {"metadata": {}},
    "metadata empty key": {"metadata": {"": 1}},
    "metadata null value": {"metadata": {"x": None}},
    "metadata nested": {"metadata": {"x": {"y": 1}}},
    "metadata mixed list": {"metadata": {"x": [1, "a"]}},
    "metadata not a map": {"metadata": [1]},
    "configuration unknown hnsw key": {"configuration": {"hnsw": {"bogus": 1}}},
    "configuration space unknown": {"configuration": {"hnsw": {"space": "dot"}}},
    "configuration space not a string": {"configuration": {"hnsw": {"space": 1}}},
    "configuration negative": {"configuration": {"hnsw": {"max_neighbors": -1}}},
    "configuration float": {"configuration": {"hnsw": {"ef_search": 1.5}}},
    "configuration bool": {"configuration": {"hnsw": {"ef_construction": True}}},
    "configuration resize_factor string": {"configuration": {"hnsw": {"resize_factor": "x"}}},
    "configuration hnsw not an object": {"configuration": {"hnsw": 5}},
    "configuration not an object": {"configuration": 5},
    "configuration unknown spann key": {"configuration": {"spann": {"bogus": 1}}},
    "configuration spann negative": {"configuration": {"spann": {"search_nprobe": -1}}},
    "configuration hnsw and spann": {"configuration": {"hnsw": {"space": "l2"},
                                                       "spann": {"space": "l2"}}},
    "both refusals: multiple first": {"configuration": {"hnsw": {}, "spann": {}},
                                      "metadata": {"hnsw:space": "dot"}},
    "embedding function untyped": {"configuration": {"embedding_function": {}}},
    "embedding function unknown type": {"configuration": {"embedding_function": {"type": "x"}}},
    "embedding function known, no config": {"configuration": {"embedding_function": {
        "type": "known", "name": "x"}}},
    "get_or_create null": {"get_or_create": None},
    "get_or_create string": {"get_or_create": "yes"},
    "name missing": {"name": None},
    "name not a string": {"name": 5},
    "name too short": {"name": "ab"},
}


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaRun]:
    """``chroma run`` holding NAME, created with cosine and some metadata."""
    work: Path = tmp_path_factory.mktemp("chroma-run")
    with ChromaRun(work / "db", work) as run:
        client = chromadb.HttpClient(host="127.0.0.1", port=run.port,
                                     settings=Settings(anonymized_telemetry=False))
        client.create_collection(NAME, configuration=COSINE, metadata={"owner": "a"},
                                 embedding_function=None)
        yield run


@pytest.fixture(scope="module")
def ours(peer: ChromaRun) -> Iterator[BackgroundServer]:
    """chromasnap's API serving the peer's collection JSON (what a manifest records)."""
    model = httpx.get(f"{peer.url}{COLLECTIONS}/{NAME}").json()
    app = ChromaAPI(collection_model=lambda: model, role="test",
                    metrics_registry=CollectorRegistry())
    with BackgroundServer(app) as srv:
        yield srv


def _post(base: str, case: dict[str, Any]) -> tuple[int, Any]:
    body = {"name": NAME, "get_or_create": True, **case}
    if body["name"] is None:
        del body["name"]
    r = httpx.post(base + COLLECTIONS, json=body)
    answer = r.json()
    if r.status_code >= 400:
        # serde's position suffix is the only part chromasnap does not reproduce.
        answer = {**answer, "message": re.sub(r" at line \d+ column \d+$", "", answer["message"])}
    return r.status_code, answer


@pytest.mark.parametrize("case", list(IGNORED.values()), ids=list(IGNORED))
def test_valid_settings_are_ignored_as_chroma_ignores_them(
        peer: ChromaRun, ours: BackgroundServer, case: dict[str, Any]) -> None:
    status, theirs = _post(peer.url, case)
    assert status == 200, theirs
    assert _post(ours.url, case) == (200, theirs)  # the existing collection, unchanged
    assert theirs["configuration_json"]["hnsw"]["space"] == "cosine"


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
def test_invalid_bodies_are_refused_as_chroma_refuses_them(
        peer: ChromaRun, ours: BackgroundServer, case: dict[str, Any]) -> None:
    status, theirs = _post(peer.url, case)
    assert status in (400, 422), theirs
    assert _post(ours.url, case) == (status, theirs)


def test_client_get_or_create_with_another_space_warns(
        peer: ChromaRun, ours: BackgroundServer, caplog: pytest.LogCaptureFixture) -> None:
    """The real client: both return the cosine collection; chromasnap names what it ignored."""
    for srv in (peer, ours):
        client = chromadb.HttpClient(host="127.0.0.1", port=srv.port,
                                     settings=Settings(anonymized_telemetry=False))
        with caplog.at_level(logging.WARNING, logger="chromasnap.httpapi"):
            caplog.clear()
            col = client.get_or_create_collection(
                NAME, metadata={"hnsw:space": "l2"}, embedding_function=None)
            assert col.configuration_json["hnsw"]["space"] == "cosine"
            also = client.create_collection(
                NAME, configuration={"hnsw": {"space": "ip", "ef_search": 7}},
                get_or_create=True, embedding_function=None)
            assert also.id == col.id and also.configuration_json["hnsw"]["ef_search"] == 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "metadata hnsw:space 'l2' (the collection: 'cosine')" in warnings[0]
    assert "configuration.hnsw.space 'ip' (the collection: 'cosine')" in warnings[1]
    assert "configuration.hnsw.ef_search 7 (the collection: 100)" in warnings[1]


def test_same_settings_do_not_warn(ours: BackgroundServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chromasnap.httpapi"):
        assert _post(ours.url, {"configuration": COSINE})[0] == 200
        assert _post(ours.url, {})[0] == 200
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
