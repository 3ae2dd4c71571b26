"""distances.py against chromadb's HNSW index: on small collections searched with an
exhaustive ``ef``, Chroma's query is exact, so ids and distances must agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import chromadir, distances, persistence

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


# -- embeddings read back: as_indexed ---------------------------------------------------

#: Dimensions around the 4- and 8-wide SIMD widths a vectorised sum would use, and a real one.
PROBE_DIMS = (1, 3, 4, 7, 8, 13, 16, 37, 384)


def _probe_vectors(dim: int, n: int, seed: int = SEED) -> np.ndarray:
    """Random float32 rows of mixed scales, then the edges of hnswlib's float32 arithmetic."""
    rng = np.random.default_rng([seed, dim])
    v = rng.standard_normal((n, dim)) * rng.choice([1e-3, 1.0, 7.0, 1e3], size=(n, 1))
    edges = np.zeros((4, dim))  # row 0 stays the zero vector
    edges[1] = 1e-25  # the squared length underflows to 0: read back as zeros
    edges[2, 0] = 3e19  # the squared length overflows: read back as NaN
    edges[3, 0], edges[3, -1] = 1e-40, 1.0  # a subnormal component
    return np.concatenate([v, edges]).astype(np.float32)


def _assert_same_floats(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal bit for bit, but any NaN equals any NaN (chromadb hands back float64 copies)."""
    got = np.asarray(got, dtype=np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), what
    zero = np.float32(0)
    bits = [np.where(nan, zero, x).astype(np.float32).view(np.uint32) for x in (got, want)]
    bad = np.flatnonzero(np.any(bits[0] != bits[1], axis=-1))
    assert bad.size == 0, (f"{what}: rows {bad[:5].tolist()} differ, "
                           f"e.g. {got[bad[0]]} != {want[bad[0]]}")


def _check_reads(col: Any, latest: Mapping[str, np.ndarray], space: str, what: str) -> None:
    ids = list(latest)
    sent = np.stack([latest[i] for i in ids])
    want = distances.as_indexed(sent, space)
    got = col.get(ids=ids, include=["embeddings"])
    pos = {rid: i for i, rid in enumerate(got["ids"])}
    _assert_same_floats(np.asarray(got["embeddings"])[[pos[i] for i in ids]], want,
                        f"{space} get {what}")
    expected = dict(zip(ids, want, strict=True))
    res = col.query(query_embeddings=sent[:5], n_results=10, include=["embeddings"])
    for q in range(5):
        _assert_same_floats(np.asarray(res["embeddings"][q]),
                            np.stack([expected[rid] for rid in res["ids"][q]]),
                            f"{space} query {what}")


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_as_indexed_is_what_chroma_returns(tmp_path: Path, space: str) -> None:
    """Issue 17, 5: the embeddings chromadb's get and query return, for vectors as sent.

    Exact in float32 after add, update and upsert, in the open index and
    after it was saved and opened again; in cosine space most differ from
    what was sent, so a reader returning sent vectors would not match.
    """
    changed = 0
    for dim in PROBE_DIMS:
        path = tmp_path / f"dim{dim}"
        chromadir.create_collection(path, CollectionSettings(name="probe", dimension=dim,
                                                             space=Space(space)))
        sent = _probe_vectors(dim, 160)
        later = _probe_vectors(dim, 40, seed=SEED + 1)
        ids = [f"v{i}" for i in range(len(sent))]
        latest = dict(zip(ids, sent, strict=True))
        with persistence.open_collection(path, "probe") as (_, col):
            col.add(ids=ids, embeddings=sent)
            col.update(ids=ids[:20], embeddings=later[:20])
            col.upsert(ids=[*ids[20:30], *[f"new{i}" for i in range(10)]], embeddings=later[20:40])
            latest |= dict(zip([*ids[:30], *[f"new{i}" for i in range(10)]], later[:40],
                               strict=True))
            _check_reads(col, latest, space, f"(dim {dim}, open)")
        with persistence.open_collection(path, "probe", flush_on_exit=False) as (_, col):
            _check_reads(col, latest, space, f"(dim {dim}, reopened)")
        sent_rows = np.stack(list(latest.values()))
        changed += int(np.sum(np.any(distances.as_indexed(sent_rows, space) != sent_rows, axis=1)))
    assert (changed > 1000) if space in distances.NORMALIZED_SPACES else changed == 0


def test_as_indexed_is_not_idempotent() -> None:
    """Why readers apply it to vectors as sent only, never to vectors read from chromadb."""
    v = _probe_vectors(37, 200)[:200]
    once = distances.as_indexed(v, "cosine")
    assert np.any(distances.as_indexed(once, "cosine") != once)
    assert np.array_equal(distances.as_indexed(v, "l2"), v)
    assert np.array_equal(distances.as_indexed(v, "ip"), v)
