"""LangChain's and LlamaIndex's Chroma integrations against a pool, with their defaults.

As a new user writes them: a client (or host and port) and, for LangChain, no
collection name at all (``"langchain"``), so the framework creates its own
collection through the API; ``reset_collection`` deletes and recreates it. The
same flows run on a ``chromadb.PersistentClient``; every answer must match.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings
from langchain_chroma import Chroma
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters, VectorStoreQuery
from llama_index.vector_stores.chroma import ChromaVectorStore

from minio_server import MinioServer
from pool_server import Pool

pytestmark = pytest.mark.minio


@pytest.fixture
def pool(minio: MinioServer, tmp_path: Path) -> Iterator[Pool]:
    p = Pool(minio, tmp_path)
    yield p
    p.stop()


@pytest.fixture
def reference(tmp_path: Path) -> chromadb.ClientAPI:
    return chromadb.PersistentClient(str(tmp_path / "reference"),
                                     settings=Settings(anonymized_telemetry=False))


def scored(hits: list[Any]) -> list[Any]:
    return [(d.id, d.page_content, d.metadata, pytest.approx(s, rel=1e-5, abs=1e-6))
            for d, s in hits]


def test_langchain_default_collection(pool: Pool, reference: chromadb.ClientAPI) -> None:
    emb = DeterministicFakeEmbedding(size=8)
    ours, ref = (Chroma(client=c, embedding_function=emb) for c in (pool.client(), reference))
    texts = [f"note {i} about {'cats' if i % 2 else 'dogs'}" for i in range(10)]
    metas = [{"topic": "cats" if i % 2 else "dogs", "n": i} for i in range(10)]
    for s in (ours, ref):
        s.add_texts(texts, metadatas=metas, ids=[f"id{i}" for i in range(10)])
        s.delete(ids=["id3"])
    assert [c.name for c in pool.client().list_collections()] == ["langchain"]
    for q, kw in (("cats", {}), ("dogs", {"filter": {"topic": "dogs"}})):
        want = scored(ref.similarity_search_with_score(q, k=4, **kw))
        assert want
        assert scored(ours.similarity_search_with_score(q, k=4, **kw)) == want
    # reset_collection: delete the collection and create it again, empty.
    old_id = ours._collection.id
    for s in (ours, ref):
        s.reset_collection()
        s.add_texts(["fresh start"], ids=["new"])
    assert ours._collection.id != old_id
    assert ours.get()["ids"] == ref.get()["ids"] == ["new"]


def test_llamaindex_from_params(pool: Pool, reference: chromadb.ClientAPI) -> None:
    ours = ChromaVectorStore.from_params(collection_name="quickstart", host="127.0.0.1",
                                         port=pool.proc.port)
    ref = ChromaVectorStore(chroma_collection=reference.get_or_create_collection("quickstart"))
    nodes = [TextNode(id_=f"n{i}", text=f"chunk {i}", embedding=[float(i), 1.0, i % 3],
                      metadata={"source": f"doc{i % 3}"},
                      relationships={NodeRelationship.SOURCE: RelatedNodeInfo(
                          node_id=f"doc{i % 3}")})
             for i in range(9)]
    for s in (ours, ref):
        s.add(nodes)
        s.delete("doc1")  # by filter: LlamaIndex deletes only that way
    q = VectorStoreQuery(query_embedding=[4.0, 1.0, 1.0], similarity_top_k=4,
                         filters=MetadataFilters(filters=[MetadataFilter(key="source",
                                                                         value="doc0")]))
    got, want = ours.query(q), ref.query(q)
    assert want.ids and got.ids == want.ids
    assert got.similarities == pytest.approx(want.similarities, rel=1e-5)
    assert ours._collection.count() == ref._collection.count() == 6
