"""The vectorized tail search returns exactly what the exhaustive float64 search returns."""

from __future__ import annotations

import numpy as np
import pytest

from chromasnap.engine import distances
from chromasnap.engine.merge import Record
from chromasnap.reader import freshview
from chromasnap.reader.tailsearch import MASKS_PER_OVERLAY, MaskCache, TailMatrix


def _reference(q: np.ndarray, x: np.ndarray, space: str, k: int,
               rows: np.ndarray | None) -> tuple[list[int], list[float]]:
    sel = np.arange(len(x)) if rows is None else rows
    idx, dist = distances.top_k(distances.distances(q, x[sel], space), k)
    return sel[idx[0]].tolist(), dist[0].tolist()


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_nearest_equals_exhaustive_search(space: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 16)).astype(np.float32)
    x[100:120] = x[5]  # exact ties: the order among them must be row order
    x[200:210] = x[200] * 1.0000001  # near ties, a rounding apart
    x[300] = 0.0  # a zero vector (distance 1 in cosine)
    tm = TailMatrix(x, space)
    for trial in range(40):
        q = x[5] if trial % 5 == 0 else rng.standard_normal(16).astype(np.float32)
        rows = None if trial % 2 else np.sort(rng.choice(700, 300, replace=False))
        for k in (1, 10, 25, 700, 1000):
            got_idx, got_d = tm.nearest(q, k, rows)
            want_idx, want_d = _reference(q, x, space, k, rows)
            assert got_idx.tolist() == want_idx
            assert got_d.tolist() == want_d


def test_nearest_on_nothing() -> None:
    tm = TailMatrix(np.zeros((0, 4), dtype=np.float32), "l2")
    idx, dist = tm.nearest(np.ones(4, dtype=np.float32), 10)
    assert idx.tolist() == [] and dist.tolist() == []
    tm = TailMatrix(np.ones((3, 4), dtype=np.float32), "l2")
    assert tm.nearest(np.ones(4, dtype=np.float32), 5, np.zeros(0, dtype=np.intp))[0].size == 0


def test_masks_are_built_once_per_filter_and_bounded() -> None:
    cache = MaskCache()
    built: list[int] = []

    def build() -> np.ndarray:
        built.append(1)
        return np.array([True, False])

    where = {"$and": [{"a": 1}, {"b": {"$in": [1, 2]}}]}
    m1 = cache.mask(where, None, build)
    m2 = cache.mask({"$and": [{"a": 1}, {"b": {"$in": [1, 2]}}]}, None, build)
    assert m1 is m2 and len(built) == 1
    # 1 and 1.0 and True are different filters in Chroma: never the same entry.
    cache.mask({"a": 1.0}, None, build)
    cache.mask({"a": True}, None, build)
    assert len(built) == 3
    for i in range(MASKS_PER_OVERLAY + 5):
        cache.mask({"i": i}, None, build)
    assert len(cache._masks) == MASKS_PER_OVERLAY


def test_merge_query_filters_through_the_cached_mask() -> None:
    vec = np.eye(4, dtype=np.float32)
    recs = {f"t{i}": Record(f"t{i}", vec[i], f"doc {i}", {"g": i % 2}) for i in range(4)}
    ov = freshview.Overlay(dict(recs), frozenset(), list(recs), vec)
    snap = {"ids": [["s0"]], "distances": [[0.5]], "documents": [["snap"]]}
    res = freshview.merge_query(snap, ov, vec[:1], 3, "l2", ["documents", "distances"],
                                where={"g": 0})
    assert res["ids"] == [["t0", "s0", "t2"]]
    assert res["documents"] == [["doc 0", "snap", "doc 2"]]
    res = freshview.merge_query(snap, ov, vec[1:2], 2, "l2", ["distances"],
                                where={"g": 0}, ids=["t2", "s0"])
    assert res["ids"] == [["s0", "t2"]]


@pytest.mark.parametrize("seed", range(30))
def test_extending_an_overlay_equals_building_it_at_once(seed: int) -> None:
    """A tail that grows by a delta of newer writes is extended, never rebuilt: same result."""
    from chromasnap.engine.ops import Op, OpKey, OpKind

    rng = np.random.default_rng(seed)
    snapshot = [f"s{i}" for i in range(8)]
    base = {r: Record(r, np.full(2, i, dtype=np.float32), f"doc {r}", {"k": i})
            for i, r in enumerate(snapshot)}
    versions = {r: freshview.Version(OpKey(1, "c", i)) for i, r in enumerate(snapshot)}

    def lookup(ids: list[str]) -> dict[str, Record]:
        return {i: base[i] for i in ids if i in base}

    kinds = [OpKind.ADD, OpKind.UPSERT, OpKind.UPDATE, OpKind.DELETE]
    ops = []
    for n in range(int(rng.integers(1, 40))):
        kind = kinds[int(rng.integers(4))]
        rid = f"{'s' if rng.random() < 0.5 else 't'}{int(rng.integers(10))}"
        emb = None if kind is OpKind.DELETE else rng.standard_normal(2).astype(np.float32)
        meta = None if kind is OpKind.DELETE else {"n": n}
        # Two writers a clock tick apart: keys still increase along the list.
        ops.append(Op(kind, rid, OpKey(100 + n, "ab"[n % 2], n), emb, None, meta))
    cut = int(rng.integers(0, len(ops) + 1))
    whole = freshview.build_overlay(ops, versions, 2, lookup, space="cosine")
    first, v1 = freshview.extend_overlay(ops[:cut], versions, 2, lookup, freshview.EMPTY,
                                         space="cosine")
    both, _ = freshview.extend_overlay(ops[cut:], {**versions, **v1}, 2, lookup, first,
                                       space="cosine")
    assert both.records.keys() == whole.records.keys()
    for rid, rec in whole.records.items():
        got = both.records[rid]
        assert (got is None) == (rec is None)
        if rec is not None and got is not None:
            assert (got.document, got.metadata) == (rec.document, rec.metadata)
            assert got.embedding.tolist() == rec.embedding.tolist()
    assert (both.live, both.in_base, both.stays, both.created, both.superseded, both.ops,
            both.inserts) == (whole.live, whole.in_base, whole.stays, whole.created,
                              whole.superseded, whole.ops, whole.inserts)
    assert both.matrix.tolist() == whole.matrix.tolist()
