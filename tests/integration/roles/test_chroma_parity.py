"""Answers that must equal chromadb's own, before and after a compaction (issue #9).

A real writer and a fresh-read reader on MinIO, driven by ``chromadb.HttpClient``,
next to a ``chromadb.PersistentClient`` that gets the same writes. Every write
goes through the reader (which forwards it to the writer), so the client's
read-your-writes cookie makes the reader's next read see it: no polling for
visibility. Each check runs twice: while the writes are only in the reader's
fresh tail, and after a compaction folded them into the snapshot it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from chromadb.errors import InternalError

from chromasnap.config import Space
from minio_server import MinioServer
from parity_pair import DIM, SETTINGS, Pair

pytestmark = pytest.mark.minio
@pytest.fixture
def space() -> Space:
    """The pair's distance function: ``SETTINGS``'s, unless a test parametrizes ``space``."""
    return SETTINGS.space


@pytest.fixture(params=["folded", "indexed"])
def pair(minio: MinioServer, tmp_path: Path, request: pytest.FixtureRequest,
         space: Space) -> Iterator[Pair]:
    """A pair whose reader folds segments into its copy, or serves them as an overlay
    searched through the indexes the compactor built."""
    p = Pair(minio, tmp_path, fold=request.param == "folded",
             settings=SETTINGS.model_copy(update={"space": space}),
             indexed=request.param == "indexed")
    yield p
    p.close()


def e(i: float) -> list[float]:
    return [float(i), 1.0, 0.0, 0.5]


def test_get_order_matches_chroma_before_and_after_compaction(pair: Pair) -> None:
    """Issue #9, 10: tail writes to existing ids moved them to the end of get/peek order."""
    ids = [f"r{i}" for i in range(10)]
    pair.write("add", ids=ids, embeddings=[e(i) for i in range(10)],
               metadatas=[{"n": i} for i in range(10)], documents=[f"d{i}" for i in range(10)])
    pair.compact_and_wait()  # the records are in the snapshot now
    pair.write("update", ids=["r2"], metadatas=[{"n": 20}])  # metadata only
    pair.write("add", ids=["r4"], embeddings=[e(99)])  # ignored: r4 exists
    pair.write("update", ids=["r1"], embeddings=[e(11)])  # vector update
    pair.write("upsert", ids=["new1", "r3"], embeddings=[e(12), e(13)],
               metadatas=[{"n": 1}, {"n": 30}])  # a new id and a vector upsert
    pair.write("delete", ids=["r5"])
    pair.write("add", ids=["r5"], embeddings=[e(15)], metadatas=[{"n": 5}])  # back, at the end
    pair.write("upsert", ids=["new0"], embeddings=[e(16)])
    pair.write("update", ids=["new1"], metadatas=[{"n": 2}])  # does not move new1

    def check() -> None:
        expected = pair.ref.get(include=[])["ids"]
        assert expected == ["r0", "r1", "r2", "r3", "r4", "r6", "r7", "r8", "r9",
                            "new1", "r5", "new0"]
        assert pair.col.get(include=[])["ids"] == expected
        for offset in range(0, 12, 5):
            page = pair.col.get(limit=5, offset=offset, include=["metadatas"])
            ref = pair.ref.get(limit=5, offset=offset, include=["metadatas"])
            assert (page["ids"], page["metadatas"]) == (ref["ids"], ref["metadatas"])
        assert pair.col.peek(3)["ids"] == pair.ref.peek(3)["ids"]
        where = {"n": {"$gte": 2}}
        assert pair.col.get(where=where)["ids"] == pair.ref.get(where=where)["ids"]
        asked = ["new0", "r5", "r2", "new1", "r0"]
        assert pair.col.get(ids=asked)["ids"] == pair.ref.get(ids=asked)["ids"]

    pair.in_both_states(check)
    # The compacted snapshot keeps that order for good, also after more writes.
    pair.write("update", ids=["r1", "r6"], embeddings=[e(21), e(26)])
    pair.in_both_states(check)


def test_query_by_missing_id_fails_like_chroma_in_every_state(pair: Pair) -> None:
    """Issue #9, 11: query(ids=[…, "missing"]) answered until the snapshot was queried."""
    pair.write("add", ids=["a", "b", "c"], embeddings=[e(1), e(2), e(3)])
    pair.write("delete", ids=["c"])

    def raises(target: Any, ids: list[str]) -> str:
        with pytest.raises(InternalError) as exc:
            target.query(query_embeddings=[e(1)], ids=ids, n_results=2)
        return str(exc.value)

    def check() -> None:
        for ids in (["a", "missing"], ["c"], ["missing", "b"]):
            assert raises(pair.col, ids) == raises(pair.ref, ids)
        assert "Error finding id" in raises(pair.col, ["missing"])
        # Known ids, or a filter that narrows the ids first: an answer.
        live = pair.ref.get(include=[])["ids"]
        for kw in ({"ids": live}, {"ids": ["a", "missing"], "where": {"k": {"$ne": 1}}}):
            got = pair.col.query(query_embeddings=[e(1)], n_results=2, **kw)
            assert got["ids"] == pair.ref.query(query_embeddings=[e(1)], n_results=2, **kw)["ids"]

    # The first snapshot was empty (no index): only the tail knows of a, b and c.
    pair.in_both_states(check)
    pair.write("delete", ids=["b"])  # now b is deleted in the tail of a snapshot that has it
    pair.in_both_states(check)


def test_uri_without_metadata_reads_back_as_chroma_does(pair: Pair) -> None:
    """Issue #9, 12: a record with a URI and no metadata read None until compacted."""
    pair.write("add", ids=["none"], embeddings=[e(0)])
    pair.write("add", ids=["doc"], embeddings=[e(1)], documents=["only a document"])
    pair.write("add", ids=["u1", "u2"], embeddings=[e(5), e(6)], uris=["s3://b/1", "s3://b/2"])
    pair.write("add", ids=["ud"], embeddings=[e(7)], uris=["s3://b/3"], documents=["text"])
    pair.write("add", ids=["um"], embeddings=[e(8)], uris=["s3://b/4"], metadatas=[{"k": 1}])
    pair.write("update", ids=["um"], metadatas=[{"k": None}])  # every key removed
    pair.write("update", ids=["none"], uris=["s3://b/late"])  # a URI added later

    def check() -> None:
        inc: Any = ["metadatas", "uris", "documents"]
        got, ref = pair.col.get(include=inc), pair.ref.get(include=inc)
        assert got["metadatas"] == ref["metadatas"]
        assert dict(zip(got["ids"], got["metadatas"], strict=True))["u1"] == {}
        assert (got["ids"], got["uris"], got["documents"]) == (
            ref["ids"], ref["uris"], ref["documents"]
        )
        q = {"query_embeddings": [e(5)], "n_results": 3, "include": ["metadatas"]}
        assert pair.col.query(**q)["metadatas"] == pair.ref.query(**q)["metadatas"]

    pair.in_both_states(check)


def test_list_valued_metadata_reads_and_filters_as_chroma_does(pair: Pair) -> None:
    """Issue 17, 2: array metadata is stored, merged and filtered exactly like chromadb."""
    pair.write("add", ids=["t1", "t2", "t3", "t4"], embeddings=[e(1), e(2), e(3), e(4)],
               metadatas=[{"tags": ["red", "blue"], "k": 1}, {"tags": ["green"]},
                          {"n": [1, 2, 3]}, {"f": [2.0, 0.5], "b": [True]}])
    pair.write("update", ids=["t2"], metadatas=[{"tags": ["green", "red"]}])  # list replaced
    pair.write("update", ids=["t1"], metadatas=[{"tags": None}])  # key removed
    pair.write("upsert", ids=["t3"], embeddings=[e(3)], metadatas=[{"n": [4]}])  # merged
    wheres: list[Any] = [
        {"tags": {"$contains": "red"}}, {"tags": {"$not_contains": "red"}},
        {"n": {"$contains": 4}}, {"f": {"$contains": 2}}, {"f": {"$contains": 2.0}},
        {"b": {"$contains": True}}, {"tags": {"$ne": "red"}}, {"tags": {"$in": ["red"]}},
        {"$and": [{"tags": {"$contains": "green"}}, {"tags": {"$contains": "red"}}]},
    ]

    def check() -> None:
        got, ref = pair.col.get(include=["metadatas"]), pair.ref.get(include=["metadatas"])
        assert (got["ids"], got["metadatas"]) == (ref["ids"], ref["metadatas"])
        for where in wheres:
            assert pair.col.get(where=where)["ids"] == pair.ref.get(where=where)["ids"], where
            q = {"query_embeddings": [e(2)], "n_results": 4, "where": where,
                 "include": ["metadatas", "distances"]}
            ours, theirs = pair.col.query(**q), pair.ref.query(**q)
            assert (ours["ids"], ours["metadatas"]) == (theirs["ids"], theirs["metadatas"]), where

    pair.in_both_states(check)


def test_filtered_deletes_match_chroma_before_and_after_compaction(pair: Pair) -> None:
    """Issue 17, 1: delete(where=…) removes what matches at its place in the write order.

    Records in the snapshot and in the tail, records changed into and out of
    the filter before it, records written after it, ``ids`` with a filter,
    and LlamaIndex's own call, ``delete(where={"document_id": …})``.
    """
    ids = [f"r{i}" for i in range(10)]
    pair.write("add", ids=ids, embeddings=[e(i) for i in range(10)],
               metadatas=[{"n": i, "parity": "odd" if i % 2 else "even", "document_id": f"d{i % 3}"}
                          for i in range(10)],
               documents=[f"text {i} " + ("two" if i % 4 == 2 else "one") for i in range(10)])
    pair.compact_and_wait()  # these are in the snapshot now
    pair.write("add", ids=["t0", "t1"], embeddings=[e(20), e(21)],
               metadatas=[{"parity": "odd", "n": 20}, {"parity": "even", "n": 21}],
               documents=["tail two", "tail one"])
    pair.write("update", ids=["r1"], metadatas=[{"parity": "even"}])  # no longer matches
    pair.write("update", ids=["r4"], metadatas=[{"parity": "odd"}])  # now matches
    pair.write("delete", where={"parity": "odd"})
    pair.write("add", ids=["after"], embeddings=[e(30)], metadatas=[{"parity": "odd"}])
    pair.write("delete", where_document={"$contains": "two"})
    pair.write("delete", ids=["r0", "r1", "r8", "gone"], where={"n": {"$lt": 5}})
    pair.write("delete", where={"document_id": "d2"})  # LlamaIndex's ChromaVectorStore.delete
    pair.write("upsert", ids=["r3"], embeddings=[e(33)], metadatas=[{"parity": "odd"}])

    def check() -> None:
        inc: Any = ["metadatas", "documents", "embeddings"]
        got, ref = pair.col.get(include=inc), pair.ref.get(include=inc)
        assert got["ids"] == ref["ids"] == ["t1", "after", "r3"]
        assert (got["metadatas"], got["documents"]) == (ref["metadatas"], ref["documents"])
        assert pair.col.count() == pair.ref.count()
        q = {"query_embeddings": [e(5)], "n_results": 5, "where": {"parity": "odd"}}
        assert pair.col.query(**q)["ids"] == pair.ref.query(**q)["ids"]

    pair.in_both_states(check)


def test_limited_deletes_match_chroma_before_and_after_compaction(pair: Pair) -> None:
    """delete(where=…, limit=n) removes the first n matching records in Chroma's order:
    snapshot records (also updated ones, which keep their place), then records the tail
    created, in creation order; a record deleted and added again moves to the end."""
    ids = [f"r{i}" for i in range(8)]
    pair.write("add", ids=ids, embeddings=[e(i) for i in range(8)],
               metadatas=[{"k": "x" if i % 2 else "y", "n": i} for i in range(8)])
    pair.compact_and_wait()
    pair.write("add", ids=["t0", "t1"], embeddings=[e(20), e(21)],
               metadatas=[{"k": "x", "n": 20}, {"k": "x", "n": 21}])
    pair.write("update", ids=["r1"], metadatas=[{"n": 100}])  # keeps its place
    pair.write("delete", ids=["r3"])
    pair.write("add", ids=["r3"], embeddings=[e(3)], metadatas=[{"k": "x"}])  # to the end
    pair.write("delete", where={"k": "x"}, limit=2)  # r1, r5
    pair.write("delete", where={"k": "x"}, limit=0)  # nothing
    pair.write("delete", ids=["t1", "r7", "t0"], where={"k": "x"}, limit=1)  # r7

    def check() -> None:
        got, ref = pair.col.get(include=["metadatas"]), pair.ref.get(include=["metadatas"])
        assert got["ids"] == ref["ids"]
        assert got["metadatas"] == ref["metadatas"]
        assert pair.col.count() == pair.ref.count()

    pair.in_both_states(check)


def test_filtered_delete_errors_match_chroma(pair: Pair) -> None:
    """Empty filters and ids=[] with a filter: what chromadb 1.5.9 answers, client and server."""
    pair.write("add", ids=["a", "b"], embeddings=[e(1), e(2)], metadatas=[{"k": 1}, {"k": 2}])
    for kw in ({"where": {}}, {"where_document": {}}, {"ids": [], "where": {"k": 1}},
               {"ids": ["a"], "where": {}}, {}):
        with pytest.raises(Exception) as ours:
            pair.col.delete(**kw)
        with pytest.raises(Exception) as theirs:
            pair.ref.delete(**kw)
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))
    # Raw HTTP, past the client's own checks: the answers of Chroma's server.
    url = (f"{pair.reader.url}/api/v2/tenants/default_tenant/databases/default_database"
           f"/collections/{pair.col.id}/delete")
    for body, message in (({"where": {}}, "Invalid where clause"),
                          ({"where_document": {}}, "Invalid where document clause"),
                          ({"ids": ["a"], "where": {}}, "Invalid where clause")):
        r = httpx.post(url, json=body)
        assert (r.status_code, r.json()["message"]) == (400, message), body
    assert httpx.post(url, json={"ids": [], "where": {"k": 1}}).status_code == 200  # no-op
    pair.compact_and_wait()
    assert pair.col.get(include=[])["ids"] == pair.ref.get(include=[])["ids"] == ["a", "b"]


@pytest.mark.parametrize("space", [Space.COSINE, Space.IP])
def test_embeddings_read_back_as_chroma_returns_them(pair: Pair, space: Space) -> None:
    """Issue 17, 5: a cosine index returns vectors re-derived from its normalised copy.

    So a vector reads back an ulp or so off what was sent; a record read
    from the fresh tail must read the same, in get and query, or its vector
    would change when compacted. A record whose metadata alone the tail
    changes keeps the vector chromadb returns (not transformed twice).
    Inner product stores vectors as sent.
    """
    rng = np.random.default_rng(17)

    def vectors(n: int) -> list[list[float]]:
        v = rng.standard_normal((n, DIM)) * rng.choice([1e-3, 1.0, 7.0], size=(n, 1))
        return v.astype(np.float32).tolist()

    def f32(rows: Any) -> np.ndarray:
        return np.asarray(rows, dtype=np.float32)

    def check() -> None:
        got, want = pair.col.get(include=["embeddings"]), pair.ref.get(include=["embeddings"])
        assert got["ids"] == want["ids"]
        assert np.array_equal(f32(got["embeddings"]), f32(want["embeddings"]))
        q: Any = {"query_embeddings": vectors(3), "n_results": 8, "include": ["embeddings"]}
        got, want = pair.col.query(**q), pair.ref.query(**q)
        assert got["ids"] == want["ids"]
        for ours, theirs in zip(got["embeddings"], want["embeddings"], strict=True):
            assert np.array_equal(f32(ours), f32(theirs))

    ids = [f"r{i}" for i in range(12)]
    sent = vectors(12)
    pair.write("add", ids=ids, embeddings=sent, metadatas=[{"n": i} for i in range(12)])
    read = f32(pair.ref.get(ids=ids, include=["embeddings"])["embeddings"])
    # Not as sent in cosine space (else this test would test nothing); as sent in ip.
    assert np.array_equal(read, f32(sent)) == (space != Space.COSINE)
    pair.in_both_states(check)  # only in the tail, then only in the snapshot
    pair.write("update", ids=["r1"], embeddings=vectors(1))
    pair.write("update", ids=["r2"], metadatas=[{"n": 20}])  # metadata only
    pair.write("upsert", ids=["r3", "n1"], embeddings=vectors(2))
    pair.write("add", ids=["n2", "n3"], embeddings=vectors(2))
    pair.write("delete", ids=["r4"])
    pair.write("add", ids=["r4"], embeddings=vectors(1))
    pair.in_both_states(check)  # snapshot and tail, then all in the snapshot
