"""The fresh view's answers against chromadb's own rules (pure functions, no I/O).

Order, ``query(ids=…)`` failures and metadata of URI-only records are checked
end to end against real chromadb in ``tests/integration/roles/test_servers.py``;
these pin the pure logic down case by case.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from chromasnap.engine import distances, merge
from chromasnap.engine.errors import Internal
from chromasnap.engine.merge import Record, Version
from chromasnap.engine.ops import RECORD_KINDS, Op, OpKey, OpKind
from chromasnap.reader import freshview

DIM = 2
_n = iter(range(1, 1 << 62))


def op(kind: OpKind, rid: str, embedding: bool = True, **kw: object) -> Op:
    n = next(_n)
    e = np.array([n, 1], dtype=np.float32) if embedding else None
    return Op(kind, rid, OpKey(n, "w", n), e, **kw)  # type: ignore[arg-type]


def overlay(snapshot: Sequence[str], ops: list[Op],
            metadata: Mapping[str, dict[str, object]] | None = None) -> freshview.Overlay:
    base = {r: Record(r, np.zeros(DIM, dtype=np.float32), None,
                      dict(metadata[r]) if metadata and r in metadata else None)  # type: ignore[arg-type]
            for r in snapshot}
    return freshview.build_overlay(ops, {}, DIM, lambda ids: {i: base[i] for i in ids if i in base},
                                   space="l2")


def positions_of(snapshot: Sequence[str],
                 calls: list[list[str]] | None = None) -> freshview.Positions:
    def positions(ids: Sequence[str]) -> dict[str, int]:
        if calls is not None:
            calls.append(list(ids))
        return {r: 10 * snapshot.index(r) + 7 for r in ids if r in snapshot}

    return positions


def plan(snapshot: Sequence[str], ov: freshview.Overlay, offset: int = 0,
         limit: int | None = None, where: object = None, ids: Sequence[str] | None = None,
         snap_ids: Sequence[str] | None = None) -> list[str]:
    got = freshview.get_plan(list(snapshot if snap_ids is None else snap_ids), ov, where, None,
                             ids, offset, limit, positions_of(snapshot))
    return [rid for rid, _ in got]


SNAP = ["a", "b", "c", "d", "e"]


def test_tail_updates_keep_the_snapshot_place_and_new_ids_follow_in_creation_order() -> None:
    ov = overlay(SNAP, [
        op(OpKind.ADD, "n1"),
        op(OpKind.UPDATE, "b", embedding=False, metadata={"k": 1}),  # metadata only
        op(OpKind.ADD, "d"),  # ignored duplicate add
        op(OpKind.UPSERT, "n2"),
        op(OpKind.UPSERT, "a"),  # vector upsert of an existing id
        op(OpKind.UPDATE, "n1", metadata={"k": 2}),  # a later write does not move n1
        op(OpKind.DELETE, "c"),
        op(OpKind.DELETE, "e"),
        op(OpKind.ADD, "e"),  # deleted and added again: to the end
    ])
    assert plan(SNAP, ov) == ["a", "b", "d", "n1", "n2", "e"]
    assert [plan(SNAP, ov, off, 2) for off in (0, 2, 4)] == [["a", "b"], ["d", "n1"], ["n2", "e"]]
    got = freshview.get_plan(SNAP, ov, None, None, None, 0, None, positions_of(SNAP))
    assert all(from_tail for _, from_tail in got)  # every one of them was touched


def test_filters_see_the_tail_state_and_keep_the_order() -> None:
    md = {r: {"k": 0} for r in SNAP}
    ov = overlay(SNAP, [
        op(OpKind.UPDATE, "d", embedding=False, metadata={"k": 1}),  # now matches
        op(OpKind.UPDATE, "a", embedding=False, metadata={"k": 1}),
        op(OpKind.UPDATE, "c", embedding=False, metadata={"k": 0}),
        op(OpKind.ADD, "n", metadata={"k": 1}),
    ], md)
    where = {"k": 1}
    # The snapshot's own filter saw the old values: it matched none of them.
    assert plan(SNAP, ov, where=where, snap_ids=[]) == ["a", "d", "n"]
    assert plan(SNAP, ov, where=where, snap_ids=[], ids=["n", "d"]) == ["d", "n"]
    assert plan(SNAP, ov, where={"k": 0}, snap_ids=["b", "e"]) == ["b", "c", "e"]


def test_interleaving_looks_up_few_positions() -> None:
    snapshot = [f"r{i:05d}" for i in range(10_000)]
    ov = overlay(snapshot, [op(OpKind.UPDATE, r, embedding=False, document="x")
                            for r in ("r09000", "r00003", "r05000")])
    calls: list[list[str]] = []
    got = freshview.get_plan(snapshot, ov, None, None, None, 0, None,
                             positions_of(snapshot, calls))
    assert [rid for rid, _ in got] == snapshot
    assert sum(len(c) for c in calls) < 3 * 20


def test_uri_only_records_have_empty_metadata_like_chroma() -> None:
    ov = overlay([], [
        op(OpKind.ADD, "u", uri="s3://x"),
        op(OpKind.ADD, "m", uri="s3://x", metadata={"k": 1}),
        op(OpKind.ADD, "d", document="doc"),
        op(OpKind.ADD, "n"),
        op(OpKind.ADD, "emptied", uri="s3://y", metadata={"k": 1}),
        op(OpKind.UPDATE, "emptied", embedding=False, metadata={"k": None}),
    ])
    cols = freshview.tail_columns(ov, ["u", "m", "d", "n", "emptied"], ["metadatas"])
    assert cols["metadatas"] == [{}, {"k": 1}, None, None, {}]
    q = freshview.merge_query({"ids": [[]], "distances": [[]], "metadatas": [[]]}, ov,
                              np.zeros((1, DIM), dtype=np.float32), 5, "l2",
                              ["metadatas"], ids=["u"])
    assert q["metadatas"] == [[{}]]


def check(ov: freshview.Overlay, ids: list[str] | None, snapshot: Sequence[str] = SNAP,
          has_index: bool = True, where: object = None) -> bool:
    try:
        freshview.check_query_ids(ov, ids, where, None, lambda a: [r for r in a if r in snapshot],
                                  lambda: has_index, Internal("Error finding id"))
    except Internal:
        return False
    return True


def test_query_ids_fail_where_chroma_fails() -> None:
    ov = overlay(SNAP, [op(OpKind.ADD, "n"), op(OpKind.DELETE, "b")])
    assert check(ov, None) and check(ov, ["a", "n"]) and check(ov, ["a", "a"])
    assert not check(ov, ["a", "missing"])
    assert not check(ov, ["b"])  # deleted by the tail
    assert check(ov, ["a", "missing"], where={"k": 1})  # a filter narrows first
    # Nothing ever written anywhere: Chroma has no index and answers empty.
    deletes_only = overlay([], [op(OpKind.DELETE, "x")])
    assert check(deletes_only, ["x"], snapshot=[], has_index=False)
    assert not check(deletes_only, ["x"], snapshot=[], has_index=True)
    # The tail's first add creates the index.
    assert not check(overlay([], [op(OpKind.ADD, "n")]), ["n", "x"], snapshot=[],
                     has_index=False)


@pytest.mark.parametrize("space", ["l2", "cosine"])
@pytest.mark.parametrize("seed", range(80))
def test_tail_on_segment_overlay_equals_one_fold_of_both(seed: int, space: str) -> None:
    """The tail's overlay on top of unfolded segments == one overlay of both, in order.

    Segments hold ops already planned (their order is the applied order, not
    the key order: merged segments and late deltas); the tail is planned on
    top of the segments' versions. Records, order (snapshot places and
    creation order), ``in_base`` and counts must be what folding everything
    at once gives, which is what a full compaction writes; in cosine space
    that includes every vector read back as the index returns it, once.
    """
    rng = random.Random(seed)
    ids = [f"r{i}" for i in range(8)]
    snapshot = rng.sample(ids, 4)
    base = {r: Record(r, np.full(DIM, 9, dtype=np.float32), f"old {r}", {"k": 0})
            for r in snapshot}

    def lookup(want: list[str]) -> dict[str, Record]:
        return {i: base[i] for i in want if i in base}

    def rand_ops(n: int) -> list[Op]:
        out = []
        for _ in range(n):
            kind = rng.choice(RECORD_KINDS)
            t = rng.randrange(1, 10_000)
            e = np.array([t, rng.random()], dtype=np.float32) if rng.random() < 0.8 else None
            md = {"k": t} if rng.random() < 0.5 else None
            out.append(Op(kind, rng.choice(ids), OpKey(t, rng.choice("ab"), t), e,
                          f"d{t}" if rng.random() < 0.5 else None, md))  # type: ignore[arg-type]
        return out

    versions: dict[str, Version] = {}
    seg_ops: list[Op] = []
    for _ in range(rng.randrange(1, 4)):  # segments, each planned on the ones before
        p = merge.plan(rand_ops(rng.randrange(0, 8)), versions)
        versions.update(p.versions)
        seg_ops += p.ops
    tail = rand_ops(rng.randrange(0, 10))
    under = freshview.build_planned(seg_ops, DIM, lookup, space=space)
    got = freshview.build_overlay(tail, versions, DIM, lookup, under, space=space)
    want = freshview.build_planned(seg_ops + merge.plan(tail, versions).ops, DIM, lookup,
                                   space=space)
    assert set(got.records) == set(want.records)
    for r, rec in want.records.items():
        g = got.records[r]
        assert (g is None) == (rec is None)
        if g is not None and rec is not None:
            assert (g.document, g.metadata, g.uri) == (rec.document, rec.metadata, rec.uri)
            assert np.array_equal(g.embedding, rec.embedding)
    assert got.live == want.live
    assert got.stays == want.stays and got.in_base == want.in_base
    assert np.array_equal(got.matrix, want.matrix)
    assert freshview.count(len(base), got) == freshview.count(len(base), want)


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_tail_vectors_read_back_as_the_index_returns_them(space: str) -> None:
    """Issue 17, 5: in cosine space a vector from the tail reads as chromadb will return it.

    Vectors sent in the tail's ops (add, upsert, a vector update) read back
    through ``distances.as_indexed``, in get and in query; a snapshot record
    the tail only changes the metadata of keeps the vector chromadb returned,
    untouched (the transform is not idempotent). Other spaces: as sent.
    """
    sent = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    indexed = distances.as_indexed(sent, space)[0]
    assert np.array_equal(indexed, sent) == (space not in distances.NORMALIZED_SPACES)
    from_chroma = np.array([0.1, 0.5, 0.7], dtype=np.float32)  # as the snapshot returned it
    base = {r: Record(r, from_chroma.copy()) for r in ("kept", "moved")}
    ops = [Op(OpKind.ADD, "new", OpKey(1, "w", 1), sent),
           Op(OpKind.UPSERT, "up", OpKey(2, "w", 2), sent * 3),
           Op(OpKind.UPDATE, "moved", OpKey(3, "w", 3), sent * 5),
           Op(OpKind.UPDATE, "kept", OpKey(4, "w", 4), metadata={"k": 1})]
    ov = freshview.build_overlay(ops, {}, 3, lambda ids: {i: base[i] for i in ids if i in base},
                                 space=space)
    want = {"new": indexed, "up": distances.as_indexed(sent * 3, space)[0],
            "moved": distances.as_indexed(sent * 5, space)[0], "kept": from_chroma}
    got = freshview.tail_columns(ov, list(want), ["embeddings"])["embeddings"]
    for rid, vector in zip(want, got, strict=True):
        assert np.array_equal(vector, want[rid]), (rid, vector, want[rid])
    q = freshview.merge_query({"ids": [[]]}, ov, sent.reshape(1, -1), 4, space, ["embeddings"])
    for rid, vector in zip(q["ids"][0], q["embeddings"][0], strict=True):
        assert np.array_equal(vector, want[rid]), (rid, vector, want[rid])


def test_only_candidates_that_can_reach_the_top_n_keep_their_columns() -> None:
    """A query over-fetches one candidate per snapshot record the tail overrides; columns
    are fetched only for the first n the overlay leaves, per query row."""
    ov = overlay(SNAP, [op(OpKind.DELETE, "b"), op(OpKind.UPSERT, "c"), op(OpKind.UPSERT, "z")])
    rows = [["b", "a", "c", "d", "e"], ["c", "b", "e", "a", "d"], ["b", "c"]]
    assert freshview.snapshot_survivors(rows, ov, 2) == [[1, 3], [2, 3], []]
    assert freshview.snapshot_survivors(rows, ov, 10) == [[1, 3, 4], [2, 3, 4], []]
