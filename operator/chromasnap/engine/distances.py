"""Brute-force distances exactly as Chroma's HNSW index defines them, and top-k.

Fresh reads search the small delta tail by brute force and merge the hits
with the snapshot index's; the two lists are only comparable if the distance
functions agree. Chroma (hnswlib underneath) defines, on float32 vectors:

* ``l2``: the *squared* Euclidean distance, ``sum((a - b) ** 2)``;
* ``ip``: ``1 - a . b``;
* ``cosine``: ``1 - a' . b'`` where ``x' = x * (1 / (sqrt(sum(x ** 2)) + 1e-30))``
  is normalised in float32 as hnswlib does (so a zero vector stays zero and is
  at distance 1 from everything).

Results are float32 like Chroma's. Sums run in float64 so that brute force is
at least as accurate as the index's SIMD float32 loops; the two agree to
about 1e-6 relative, which is what the differential tests check.

Vectors read back (``include=["embeddings"]``) are not always the vectors
sent: in cosine space the index keeps only the normalised vector and its
length, and returns their product (:func:`as_indexed`), which is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]

SPACES = ("l2", "ip", "cosine")
#: Spaces whose index stores vectors normalised, so that reads return them re-derived.
NORMALIZED_SPACES = frozenset({"cosine"})


def as_matrix(x: Any) -> Float32Array:
    """A C-contiguous float32 2-D view or copy of ``x`` (one vector becomes one row)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got {arr.ndim} dimensions")
    return arr


def normalize(vectors: Any) -> Float32Array:
    """Rows scaled to unit length in float32, with hnswlib's ``+ 1e-30`` guard for zero rows."""
    v = as_matrix(vectors)
    sq: Float32Array = np.einsum("ij,ij->i", v, v, dtype=np.float32)
    inv = (np.float32(1.0) / (np.sqrt(sq) + np.float32(1e-30))).astype(np.float32)
    out: Float32Array = (v * inv[:, None]).astype(np.float32, copy=False)
    return out


def hnsw_lengths(vectors: Any) -> Float32Array:
    """Row lengths exactly as hnswlib's ``normalize_vector`` computes them.

    A float32 sum of the squares in index order, one element at a time (the
    loop is not vectorised in chromadb's build: measured bit for bit against
    chromadb 1.5.9 on x86-64), then a float32 ``sqrt``. ``np.add.accumulate``
    is numpy's sequential sum; ``np.sum`` and ``einsum`` add pairwise, which
    rounds differently. A sum that overflows gives ``inf``, as in hnswlib.
    """
    v = as_matrix(vectors)
    if v.shape[1] == 0:
        return np.zeros(v.shape[0], dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        squares = np.add.accumulate(v * v, axis=1, dtype=np.float32)[:, -1]
    lengths: Float32Array = np.sqrt(squares)
    return lengths


def as_indexed(vectors: Any, space: str) -> Float32Array:
    """``vectors`` as Chroma's index returns them once written in ``space``.

    In cosine space hnswlib stores ``x * (1 / (length + 1e-30))`` and the
    length, and ``get``/``query`` return ``stored * length``, all in float32:
    for most vectors that is an ulp or so off in some components (and a
    zero vector for one whose squared length underflows, NaN for one whose
    squared length overflows, as chromadb returns). Other spaces store
    vectors as sent. Not idempotent: apply it once, to vectors as sent.
    """
    v = as_matrix(vectors)
    if space not in NORMALIZED_SPACES:
        return v
    length = hnsw_lengths(v)[:, None]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        inv = np.float32(1.0) / (length + np.float32(1e-30))
        out: Float32Array = (v * inv) * length
    return out


def distances(queries: Any, vectors: Any, space: str) -> Float32Array:
    """Distances between every query row and every vector row: shape ``(n_queries, n_vectors)``.

    ``space`` is ``"l2"``, ``"ip"`` or ``"cosine"``; for cosine, already-normalised
    ``vectors`` give the same result (normalising twice is idempotent in float32
    up to rounding), so callers may cache ``normalize(vectors)``.
    """
    q = as_matrix(queries)
    x = as_matrix(vectors)
    if q.shape[1] != x.shape[1] and x.shape[0] > 0:
        raise ValueError(f"query dimension {q.shape[1]} != vector dimension {x.shape[1]}")
    if x.shape[0] == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], x.shape[0]), dtype=np.float32)
    if space == "l2":
        q64 = q.astype(np.float64)
        x64 = x.astype(np.float64)
        qn = np.einsum("ij,ij->i", q64, q64)
        xn = np.einsum("ij,ij->i", x64, x64)
        d: npt.NDArray[np.float64] = qn[:, None] + xn[None, :] - 2.0 * (q64 @ x64.T)
        # The expansion can dip below zero by rounding for (near-)identical vectors.
        np.maximum(d, 0.0, out=d)
        return d.astype(np.float32)
    if space == "ip":
        return (1.0 - q.astype(np.float64) @ x.astype(np.float64).T).astype(np.float32)
    if space == "cosine":
        qn32 = normalize(q).astype(np.float64)
        xn32 = normalize(x).astype(np.float64)
        return (1.0 - qn32 @ xn32.T).astype(np.float32)
    raise ValueError(f"unknown space {space!r}: use one of {', '.join(SPACES)}")


def top_k(dist: Any, k: int) -> tuple[IndexArray, Float32Array]:
    """The ``k`` smallest entries of each row of ``dist``, nearest first.

    Returns ``(indices, distances)``, each of shape ``(n_rows, min(k, n_cols))``.
    Ties keep column order (stable), so results are deterministic.
    """
    d = np.asarray(dist, dtype=np.float32)
    if d.ndim == 1:
        d = d.reshape(1, -1)
    rows, cols = d.shape
    kk = max(0, min(k, cols))
    if kk == 0:
        return np.zeros((rows, 0), dtype=np.intp), np.zeros((rows, 0), dtype=np.float32)
    if kk < cols:
        # Partition first (O(n)), then sort only the k candidates; a stable tie order
        # needs the candidate set to include every column tied with the k-th value.
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(d, part, axis=1).max(axis=1)
        idx_rows = []
        for r in range(rows):
            cand = np.flatnonzero(d[r] <= kth[r])
            order = np.argsort(d[r, cand], kind="stable")[:kk]
            idx_rows.append(cand[order])
        idx = np.stack(idx_rows).astype(np.intp)
    else:
        idx = np.argsort(d, axis=1, kind="stable").astype(np.intp)
    return idx, np.take_along_axis(d, idx, axis=1)


def knn(
    queries: Any,
    vectors: Any,
    space: str,
    k: int,
    mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[IndexArray, Float32Array]:
    """Exact k nearest neighbours of each query among ``vectors`` (optionally only where ``mask``).

    Returns ``(indices into vectors, distances)``, nearest first; rows have
    ``min(k, candidates)`` entries.
    """
    x = as_matrix(vectors) if np.asarray(vectors).size else np.zeros((0, 0), dtype=np.float32)
    if mask is not None:
        keep = np.flatnonzero(mask)
        sub = x[keep] if x.shape[0] else x
        idx, dist = top_k(distances(queries, sub, space), k)
        return keep[idx].astype(np.intp), dist
    return top_k(distances(queries, x, space), k)
