"""An overlay searched through segment indexes answers exactly as one searched exhaustively.

Seeded random segments (adds of new and existing ids, upserts, updates with
and without vectors, deletes) over a small base; each segment gets an index
as the compactor builds it; the overlay is built in one go and segment by
segment (as a reader extends it version after version). Every query, with
and without a filter, must give the same ids and distances as the same
overlay without indexes. The segments are small enough that HNSW is exact.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from chromasnap.engine import hnswindex
from chromasnap.engine.merge import Record
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.reader import freshview, indexsearch
from chromasnap.reader.indexsearch import Placed

DIM = 6
IDS = [f"r{i}" for i in range(60)]


def _segments(rng: random.Random, nrng: np.random.Generator) -> list[list[Op]]:
    n = 0
    out = []
    for _ in range(3):
        seg = []
        for _ in range(rng.randrange(20, 80)):
            n += 1
            rid = rng.choice(IDS)
            kind = rng.choice([OpKind.ADD, OpKind.UPSERT, OpKind.UPSERT, OpKind.UPDATE,
                               OpKind.DELETE])
            vec = None if kind is OpKind.DELETE or (kind is OpKind.UPDATE and rng.random() < .5) \
                else nrng.standard_normal(DIM).astype(np.float32)
            meta = None if kind is OpKind.DELETE else {"k": rng.randrange(3)}
            seg.append(Op(kind, rid, OpKey(n, "w", n), vec, metadata=meta))  # type: ignore[arg-type]
        out.append(seg)
    return out


def _index(ops: list[Op], space: str, path: Path) -> hnswindex.SegmentIndex:
    rows = hnswindex.rows(ops)
    hnswindex.build(ops, rows, space, 16, 200, path.with_suffix(".hnsw"),
                    path.with_suffix(".arrow"))
    return hnswindex.load(path.with_suffix(".hnsw"), path.with_suffix(".arrow"), space, DIM,
                          ef_search=500)


def _answers(ov: freshview.Overlay, queries: np.ndarray, space: str,
             where: object) -> tuple[list[list[str]], list[list[float]]]:
    empty = {"ids": [[] for _ in queries], "distances": [[] for _ in queries]}
    got = freshview.merge_query(empty, ov, queries, 7, space, ["distances"], where)
    return got["ids"], got["distances"]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("space", ["l2", "cosine"])
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "exact"])
def test_indexed_overlay_answers_as_the_exhaustive_one(
        tmp_path: Path, seed: int, space: str, graph: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Small indexes are searched exactly unless told otherwise: check both paths.
    monkeypatch.setattr(indexsearch, "EXACT_BELOW", 1 if graph else 10_000)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    base = {rid: Record(rid, nrng.standard_normal(DIM).astype(np.float32), None, {"k": 1})
            for rid in IDS[:30]}

    def lookup(ids: list[str]) -> dict[str, Record]:
        return {i: base[i] for i in ids if i in base}

    segs = _segments(rng, nrng)
    indexes = [_index(s, space, tmp_path / f"s{i}") for i, s in enumerate(segs)]
    every = [op for s in segs for op in s]
    plain = freshview.build_planned(every, DIM, lookup, space=space)
    offsets = np.cumsum([0] + [len(s) for s in segs[:-1]]).tolist()
    at_once = freshview.build_planned(
        every, DIM, lookup, space=space,
        placed=[Placed(o, ix) for o, ix in zip(offsets, indexes, strict=True)])
    stepwise = freshview.EMPTY
    for s, ix in zip(segs, indexes, strict=True):
        stepwise = freshview.build_planned(s, DIM, lookup, space=space, under=stepwise,
                                           placed=[Placed(0, ix)])
    for ov in (at_once, stepwise):
        assert ov.live == plain.live
        assert ov.served is not None
        assert len(ov.served.exhaustive) < len(ov.live)  # the indexes hold most records
    queries = nrng.standard_normal((6, DIM)).astype(np.float32)
    for where in (None, {"k": 0}, {"k": {"$ne": 2}}):
        want_ids, want_d = _answers(plain, queries, space, where)
        for ov in (at_once, stepwise):
            ids, d = _answers(ov, queries, space, where)
            assert ids == want_ids
            np.testing.assert_allclose(np.array(d, dtype=float), np.array(want_d, dtype=float),
                                       rtol=1e-5, atol=1e-5)


def test_a_record_whose_vector_a_later_write_replaced_is_not_served_by_the_old_index(
        tmp_path: Path) -> None:
    v1, v2 = np.ones(DIM, dtype=np.float32), np.full(DIM, 5.0, dtype=np.float32)
    first = [Op(OpKind.ADD, "a", OpKey(1, "w", 1), v1)]
    second = [Op(OpKind.UPSERT, "a", OpKey(2, "w", 2), v2),
              Op(OpKind.ADD, "a", OpKey(3, "w", 3), v1)]  # an add of an existing id: no-op
    ix1, ix2 = _index(first, "l2", tmp_path / "one"), _index(second, "l2", tmp_path / "two")
    ov = freshview.build_planned(first, DIM, lambda ids: {}, space="l2", placed=[Placed(0, ix1)])
    ov = freshview.build_planned(second, DIM, lambda ids: {}, space="l2", under=ov,
                                 placed=[Placed(0, ix2)])
    assert ov.served is not None
    # Index two holds the no-op add's vector for "a"; index one the replaced one.
    assert all((lr < 0).all() for lr in ov.served.label_rows)
    assert ov.served.exhaustive.tolist() == [0]
    ids, d = _answers(ov, v2[None, :], "l2", None)
    assert ids == [["a"]] and d == [[0.0]]
