"""The frameworks' own Chroma integrations against a reader, beside chromadb (issue 17).

LangChain's ``langchain_chroma.Chroma`` and LlamaIndex's ``ChromaVectorStore``
(pinned in the dev dependencies) run their add / search / filter / update /
delete flows (LlamaIndex's ``delete(ref_doc_id)`` is a filtered delete) through
``chromadb.HttpClient`` on a real writer and reader on MinIO, and the same flows
on a ``chromadb.PersistentClient`` (the ``Pair`` of the parity tests). Every
answer must be the same, while the writes are in the reader's fresh tail and
again after a compaction folded them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.types import VectorStoreQueryMode
from llama_index.vector_stores.chroma import ChromaVectorStore

from minio_server import MinioServer
from parity_pair import DIM, SETTINGS, Pair

pytestmark = pytest.mark.minio
# Distances come from two code paths (the tail's exhaustive search, the snapshot's
# HNSW index) and from chromadb's; both are float32, so ranks and ids must match
# exactly and scores to float32 precision.
SCORE = {"rel": 1e-5, "abs": 1e-6}


@pytest.fixture
def pair(minio: MinioServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(minio, tmp_path)
    yield p
    p.close()


def same(ours: Any, ref: Any, what: str) -> None:
    """``ours == ref``, with float scores compared to float32 precision."""
    if isinstance(ref, float):
        assert ours == pytest.approx(ref, **SCORE), what
    elif isinstance(ref, list | tuple):
        assert len(ours) == len(ref), f"{what}: {ours!r} != {ref!r}"
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            same(a, b, f"{what}[{i}]")
    else:
        assert ours == ref, f"{what}: {ours!r} != {ref!r}"


# --- LangChain ----------------------------------------------------------------------------


def lc_docs(docs: list[Document]) -> list[tuple[str | None, str, dict[str, Any]]]:
    return [(d.id, d.page_content, d.metadata) for d in docs]


def lc_scored(hits: list[tuple[Document, float]]) -> list[Any]:
    return [(d.id, d.page_content, d.metadata, score) for d, score in hits]


def test_langchain_flows_match_chroma(pair: Pair) -> None:
    emb = DeterministicFakeEmbedding(size=DIM)

    def store(client: Any) -> Chroma:
        # What applications write: a client and a collection name; LangChain calls
        # get_or_create_collection itself.
        return Chroma(client=client, collection_name=SETTINGS.name, embedding_function=emb)

    ours = store(chromadb.HttpClient(host="127.0.0.1", port=pair.reader.port))
    ref = store(pair.ref_client)
    texts = [f"note {i} about {'cats' if i % 2 else 'dogs'}" for i in range(12)]
    metas = [{"topic": "cats" if i % 2 else "dogs", "n": i, "tags": [f"t{i % 3}"]}
             for i in range(12)]
    ids = [f"lc{i}" for i in range(12)]
    for s in (ours, ref):
        assert s.add_texts(texts, metadatas=metas, ids=ids) == ids
        s.add_documents([Document(page_content="a late dog note", metadata={"topic": "dogs",
                                                                             "n": 99})],
                        ids=["lc-late"])
        s.update_document("lc3", Document(page_content="note 3, revised", metadata={
            "topic": "cats", "n": 30}))
        s.update_documents(["lc4", "lc5"], [
            Document(page_content="note 4 now about cats", metadata={"topic": "cats", "n": 4}),
            Document(page_content="note 5 unchanged topic", metadata={"topic": "cats", "n": 5}),
        ])
        s.delete(ids=["lc0", "lc7"])

    def check() -> None:
        for q, kw in (
            ("cats", {}),
            ("dogs", {"filter": {"topic": "dogs"}}),
            ("note", {"filter": {"$and": [{"topic": "cats"}, {"n": {"$gte": 4}}]}}),
            ("note", {"filter": {"tags": {"$contains": "t1"}}}),
            ("note", {"where_document": {"$contains": "revised"}}),
        ):
            want = lc_scored(ref.similarity_search_with_score(q, k=4, **kw))
            assert want, f"{q} {kw} finds nothing: the check would prove nothing"
            same(lc_scored(ours.similarity_search_with_score(q, k=4, **kw)), want, f"{q} {kw}")
        vec = emb.embed_query("dogs")
        same(lc_docs(ours.similarity_search_by_vector(vec, k=5)),
             lc_docs(ref.similarity_search_by_vector(vec, k=5)), "by vector")
        same(lc_docs(ours.max_marginal_relevance_search("cats", k=3, fetch_k=8)),
             lc_docs(ref.max_marginal_relevance_search("cats", k=3, fetch_k=8)), "mmr")
        got, want = ours.get(where={"topic": "cats"}), ref.get(where={"topic": "cats"})
        same((got["ids"], got["documents"], got["metadatas"]),
             (want["ids"], want["documents"], want["metadatas"]), "get where")
        same(lc_docs(ours.get_by_ids(["lc3", "lc0", "lc-late"])),
             lc_docs(ref.get_by_ids(["lc3", "lc0", "lc-late"])), "get_by_ids")

    pair.in_both_states(check)


# --- LlamaIndex ---------------------------------------------------------------------------


def nodes() -> list[TextNode]:
    """Nodes of three source documents, with embeddings, as an ingestion pipeline makes."""
    out = []
    for i in range(9):
        doc = f"doc{i % 3}"
        out.append(TextNode(
            id_=f"node{i}", text=f"chunk {i} of {doc}", embedding=[float(i), 1.0, 0.5, i % 3],
            metadata={"source": doc, "page": i, "lang": "en" if i % 2 else "de"},
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)},
        ))
    return out


def li_result(r: Any) -> list[Any]:
    return [(n.node_id, n.get_content(), n.metadata.get("source"), n.metadata.get("page"))
            for n in r.nodes] + [r.ids] + [list(r.similarities or [])]


def test_llamaindex_flows_match_chroma(pair: Pair) -> None:
    ours, ref = (ChromaVectorStore(chroma_collection=c) for c in (pair.col, pair.ref))
    for s in (ours, ref):
        assert s.add(nodes()) == [f"node{i}" for i in range(9)]
        s.delete_nodes(node_ids=["node4"])
    queries = [
        VectorStoreQuery(query_embedding=[2.0, 1.0, 0.5, 1.0], similarity_top_k=4),
        VectorStoreQuery(query_embedding=[5.0, 1.0, 0.5, 2.0], similarity_top_k=3,
                         filters=MetadataFilters(filters=[
                             MetadataFilter(key="source", value="doc2")])),
        VectorStoreQuery(query_embedding=[1.0, 1.0, 0.5, 0.0], similarity_top_k=5,
                         filters=MetadataFilters(filters=[
                             MetadataFilter(key="page", value=3, operator=FilterOperator.GTE),
                             MetadataFilter(key="lang", value=["en"],
                                            operator=FilterOperator.IN)])),
        VectorStoreQuery(query_embedding=[3.0, 1.0, 0.5, 0.0], similarity_top_k=3,
                         mode=VectorStoreQueryMode.MMR),
        VectorStoreQuery(similarity_top_k=20,  # no embedding: a filtered get
                         filters=MetadataFilters(filters=[
                             MetadataFilter(key="lang", value="de")])),
    ]

    def check() -> None:
        for i, q in enumerate(queries):
            want = li_result(ref.query(q))
            assert want[0], f"query {i} finds nothing: the check would prove nothing"
            same(li_result(ours.query(q)), want, f"query {i}")
        got = ours.get_nodes(node_ids=["node1", "node4", "node8"])
        want = ref.get_nodes(node_ids=["node1", "node4", "node8"])
        same([n.node_id for n in got], [n.node_id for n in want], "get_nodes")
        # typed List[MetadataFilters], used as one MetadataFilters (as LlamaIndex calls it)
        f: Any = MetadataFilters(filters=[MetadataFilter(key="source", value="doc0")])
        same([n.node_id for n in ours.get_nodes(None, filters=f)],
             [n.node_id for n in ref.get_nodes(None, filters=f)], "get_nodes filtered")

    pair.in_both_states(check)
    # A re-ingested or removed source document: LlamaIndex deletes by filter only.
    for s in (ours, ref):
        s.delete("doc1")
    pair.in_both_states(check)
    assert pair.col.count() == pair.ref.count() == 6  # 9 nodes, node4, then node1 and node7
    for s in (ours, ref):
        s.clear()
    assert pair.col.count() == pair.ref.count() == 0
