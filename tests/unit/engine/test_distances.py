"""distances.py against chromadb's HNSW index: on small collections searched with an
exhaustive ``ef``, Chroma's query is exact, so ids and distances must agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import numpy as np
import pytest

from chromasnap.engine import distances

SEED = 7
N = 300
DIM = 24
N_QUERIES = 25


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = chromadb.EphemeralClient()
    yield c


def _collection(client: Any, space: str, vectors: np.ndarray) -> Any:
    col = client.create_collection(
        f"dist-{space}-{uuid.uuid4().hex[:8]}",
        embedding_function=None,
        configuration={"hnsw": {"space": space, "ef_search": 2 * N, "ef_construction": 2 * N,
                                "max_neighbors": 64}},
    )
    col.add(ids=[f"v{i}" for i in range(len(vectors))], embeddings=vectors)
    return col


def _data(scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    vectors = (rng.standard_normal((N, DIM)) * scale).astype(np.float32)
    queries = (rng.standard_normal((N_QUERIES, DIM)) * scale).astype(np.float32)
    # A query equal to a stored vector: distance ~0, the rounding-sensitive case.
    queries[0] = vectors[17]
    return vectors, queries


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_knn_matches_chroma(client: Any, space: str, scale: float) -> None:
    vectors, queries = _data(scale)
    col = _collection(client, space, vectors)
    k = 40
    res = col.query(query_embeddings=queries, n_results=k, include=["distances"])
    idx, dist = distances.knn(queries, vectors, space, k)
    for q in range(N_QUERIES):
        want_ids = res["ids"][q]
        want_d = np.asarray(res["distances"][q], dtype=np.float64)
        got_ids = [f"v{i}" for i in idx[q]]
        tol = 2e-5 * max(1.0, float(np.abs(want_d).max()))
        np.testing.assert_allclose(dist[q], want_d, rtol=0, atol=tol)
        # Order may differ only between (numerically) tied neighbours.
        if got_ids != want_ids:
            for a, b, da in zip(got_ids, want_ids, want_d, strict=True):
                if a != b:
                    dd = float(dist[q][got_ids.index(a)])
                    assert abs(dd - da) <= tol, (space, q, a, b)
    client.delete_collection(col.name)


def test_cosine_zero_vector_and_full_scan(client: Any) -> None:
    vectors, queries = _data(1.0)
    vectors = vectors[:50].copy()
    vectors[3] = 0.0
    col = _collection(client, "cosine", vectors)
    res = col.query(query_embeddings=queries[:3], n_results=50, include=["distances"])
    d = distances.distances(queries[:3], vectors, "cosine")
    for q in range(3):
        ours = {f"v{i}": float(d[q, i]) for i in range(50)}
        for rid, dist in zip(res["ids"][q], res["distances"][q], strict=True):
            assert abs(ours[rid] - dist) < 2e-5, (rid, ours[rid], dist)
    assert abs(float(d[0, 3]) - 1.0) < 1e-6
    client.delete_collection(col.name)


def test_top_k_stable_and_bounded() -> None:
    d = np.array([[3.0, 1.0, 2.0, 1.0, 0.5]], dtype=np.float32)
    idx, dist = distances.top_k(d, 3)
    assert idx.tolist() == [[4, 1, 3]]
    assert dist.tolist() == [[0.5, 1.0, 1.0]]
    idx, dist = distances.top_k(d, 10)
    assert idx.tolist() == [[4, 1, 3, 2, 0]]
    idx, dist = distances.top_k(d, 0)
    assert idx.shape == (1, 0)


def test_knn_mask_and_empty() -> None:
    vectors, queries = _data(1.0)
    mask = np.zeros(N, dtype=bool)
    mask[[5, 9, 200]] = True
    idx, dist = distances.knn(queries[:2], vectors, "l2", 10, mask=mask)
    assert idx.shape == (2, 3)
    assert set(idx[0].tolist()) == {5, 9, 200}
    full = distances.distances(queries[:2], vectors, "l2")
    np.testing.assert_allclose(dist, np.take_along_axis(full, idx, axis=1))
    idx, dist = distances.knn(queries[:2], np.zeros((0, DIM), dtype=np.float32), "ip", 5)
    assert idx.shape == (2, 0)


def test_l2_is_squared_and_ip_is_one_minus_dot() -> None:
    a = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    b = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(distances.distances(a, b, "l2"), [[13.0, 14.0]], rtol=1e-6)
    np.testing.assert_allclose(distances.distances(a, b, "ip"), [[0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="unknown space"):
        distances.distances(a, b, "hamming")
