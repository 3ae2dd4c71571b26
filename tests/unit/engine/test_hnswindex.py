"""Segment indexes: which writes they hold, and that a loaded one answers like brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chromasnap.engine import distances, hnswindex
from chromasnap.engine.ops import Op, OpKey, OpKind


def _op(kind: OpKind, rid: str, n: int, vec: np.ndarray | None) -> Op:
    return Op(kind, rid, OpKey(n, "w", n), vec)


def test_rows_are_each_ids_last_write_with_a_vector() -> None:
    v = np.ones(3, dtype=np.float32)
    ops = [_op(OpKind.ADD, "a", 1, v), _op(OpKind.UPSERT, "b", 2, v),
           _op(OpKind.UPSERT, "a", 3, v), _op(OpKind.UPDATE, "a", 4, None),
           _op(OpKind.DELETE, "b", 5, None), _op(OpKind.UPDATE, "c", 6, v)]
    assert hnswindex.rows(ops) == [1, 2, 5]


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_a_loaded_index_finds_the_exact_neighbours_of_a_small_segment(
        tmp_path: Path, space: str) -> None:
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    ops = [_op(OpKind.UPSERT, f"id{i}", i + 1, vecs[i]) for i in range(300)]
    positions = hnswindex.rows(ops)
    hnswindex.build(ops, positions, space, 16, 200, tmp_path / "i.hnsw", tmp_path / "i.arrow")
    idx = hnswindex.load(tmp_path / "i.hnsw", tmp_path / "i.arrow", space, 16, ef_search=400)
    assert idx.ids == [f"id{i}" for i in range(300)]
    assert idx.op_positions.tolist() == positions
    allowed = np.zeros(300, dtype=np.bool_)
    allowed[::3] = True
    for q in rng.standard_normal((5, 16)).astype(np.float32):
        exact = distances.distances(distances.as_matrix(q), vecs, space)[0]
        labels, dist = idx.nearest(q, 10, None)
        assert labels.tolist() == np.argsort(exact, kind="stable")[:10].tolist()
        np.testing.assert_allclose(dist, np.sort(exact)[:10], rtol=1e-5, atol=1e-5)
        labels, _ = idx.nearest(q, 10, allowed)
        masked = np.where(allowed, exact, np.inf)
        assert labels.tolist() == np.argsort(masked, kind="stable")[:10].tolist()
    assert idx.nearest(vecs[0], 5, np.zeros(300, dtype=np.bool_))[0].size == 0


@pytest.mark.parametrize("excluded", ["few", "the whole over-fetch", "most"])
def test_excluded_labels_never_come_back_and_the_rest_rank_exactly(
        tmp_path: Path, excluded: str) -> None:
    """Over-fetching and dropping (few excluded), its fallback to a filtered walk (the
    over-fetch held fewer than k allowed) and the filtered walk (most excluded) all
    give brute force's answer over the allowed labels."""
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((400, 16)).astype(np.float32)
    ops = [_op(OpKind.UPSERT, f"id{i}", i + 1, vecs[i]) for i in range(400)]
    hnswindex.build(ops, hnswindex.rows(ops), "l2", 16, 200, tmp_path / "i.hnsw",
                    tmp_path / "i.arrow")
    idx = hnswindex.load(tmp_path / "i.hnsw", tmp_path / "i.arrow", "l2", 16, ef_search=400)
    for q in rng.standard_normal((5, 16)).astype(np.float32):
        exact = distances.distances(distances.as_matrix(q), vecs, "l2")[0]
        order = np.argsort(exact, kind="stable")
        allowed = np.ones(400, dtype=np.bool_)
        if excluded == "few":
            allowed[order[:3]] = False
            allowed[rng.choice(400, 40, replace=False)] = False
        elif excluded == "the whole over-fetch":
            # k / share allowed + margin = 10 * 400 / 370 + 8 = 18 asked: all excluded.
            allowed[order[:30]] = False
        else:
            allowed[rng.choice(400, 300, replace=False)] = False
        labels, dist = idx.nearest(q, 10, allowed)
        masked = np.where(allowed, exact, np.inf)
        assert labels.tolist() == np.argsort(masked, kind="stable")[:10].tolist()
        assert allowed[labels].all()
        np.testing.assert_allclose(dist, np.sort(masked)[:10], rtol=1e-5, atol=1e-5)


def test_a_label_table_that_does_not_match_the_index_is_refused(tmp_path: Path) -> None:
    vecs = np.eye(4, dtype=np.float32)
    ops = [_op(OpKind.ADD, f"id{i}", i + 1, vecs[i]) for i in range(4)]
    hnswindex.build(ops, [0, 1, 2, 3], "l2", 16, 100, tmp_path / "a.hnsw", tmp_path / "a.arrow")
    hnswindex.build(ops, [0, 1], "l2", 16, 100, tmp_path / "b.hnsw", tmp_path / "b.arrow")
    with pytest.raises(ValueError, match="label table"):
        hnswindex.load(tmp_path / "a.hnsw", tmp_path / "b.arrow", "l2", 4, 10)
