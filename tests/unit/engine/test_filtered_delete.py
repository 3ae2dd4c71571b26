"""``delete(where=...)``: the conflict rule for filtered deletes against chromadb itself.

A filtered delete removes the records that match at its place in the write
order (``merge.expand_filtered_deletes``). The model test runs random
interleavings of two writers, with filtered deletes and compactions at random
points, through the pure functions the compactor and the fresh reader use
(expand, plan, fold for each compaction; ``build_overlay`` for the tail not
yet compacted) and compares the result with a ``chromadb.PersistentClient``
that receives every op in key order, filtered deletes as ``collection.delete``.
"""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from tests.modelgen import (
    PureState,
    apply_in_order,
    chroma_call,
    random_history,
    records_equal,
)

from chromasnap.engine.merge import Record, Version, needs_records, plan, retain, sort_ops
from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind

DIM = 4
E = np.array([1, 0, 0, 0], dtype=np.float32)


def chroma_reference(tmp: Path, ops: list[Op]) -> dict[str, Record]:
    """Every op sent to a PersistentClient one call at a time, in key order."""
    client = chromadb.PersistentClient(path=str(tmp / "reference"))
    col = client.create_collection("ref", embedding_function=None)
    for op in sort_ops(ops):
        chroma_call(col, op)
    got: Any = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    return {rid: Record(rid, np.asarray(got["embeddings"][i], dtype=np.float32),
                        got["documents"][i], got["metadatas"][i] or None, got["uris"][i])
            for i, rid in enumerate(got["ids"])}


def key_windows(rng: random.Random, ops: list[Op], compactions: int) -> list[list[Op]]:
    """``ops`` cut at random points of the key order: what each compaction folds.

    Both writers flush before each compaction, so nothing arrives late; the
    last window is the tail a fresh reader merges.
    """
    ordered = sort_ops(ops)
    cuts = sorted(rng.sample(range(1, len(ordered)), compactions))
    bounds = [0, *cuts, len(ordered)]
    windows = [ordered[a:b] for a, b in pairwise(bounds)]
    for w in windows:
        rng.shuffle(w)  # arrival order inside a batch is not key order
    return windows


@pytest.mark.parametrize(("seed", "limits"), [*((s, False) for s in range(12)),
                                               *((s, True) for s in range(100, 112))])
def test_filtered_deletes_match_chromadb_at_every_compaction_point(
    tmp_path: Path, seed: int, limits: bool
) -> None:
    """With ``limits``, some deletes remove only their first n matches (Chroma's order)."""
    rng = random.Random(seed)
    history = random_history(rng, dimension=DIM, writers=2, n_ops=90, ids=8,
                             filtered_deletes=0.12, limits=limits)
    ops = [op for d in history for op in d.ops]
    assert any(op.kind is OpKind.DELETE_WHERE for op in ops)
    want = chroma_reference(tmp_path, ops)
    # The pure model of sequential application agrees with chromadb (filters.py's rules).
    assert records_equal(apply_in_order(ops), want)
    for _ in range(3):
        windows = key_windows(rng, ops, rng.randint(1, 6))
        state = PureState()
        for batch in windows[:-1]:
            state.compact(batch)
        got = state.fresh(windows[-1])
        assert records_equal(got, want), (seed, sorted(got), sorted(want))
        state.compact(windows[-1])
        assert records_equal(state.records, want)


def _upsert(rid: str, ts: int, meta: dict[str, Any]) -> Op:
    return Op(OpKind.UPSERT, rid, OpKey(ts, "w1", ts), E, f"doc {rid}", dict(meta))


def _where(ts: int, where: dict[str, Any], ids: tuple[str, ...] | None = None,
           limit: int | None = None) -> Op:
    return Op(OpKind.DELETE_WHERE, "", OpKey(ts, "w2", ts),
              filter=DeleteFilter(where, None, ids, limit))


def test_a_record_written_after_the_filtered_delete_survives_one_before_goes() -> None:
    state = PureState()
    state.compact([_upsert("old", 1, {"t": "a"}), _upsert("other", 2, {"t": "b"})])
    state.compact([_where(5, {"t": "a"}), _upsert("new", 7, {"t": "a"}),
                   _upsert("late", 3, {"t": "a"})])
    assert sorted(state.records) == ["new", "other"]
    assert state.versions["old"] == Version(OpKey(5, "w2", 5), deleted=True)
    assert state.versions["late"] == Version(OpKey(5, "w2", 5), deleted=True)


def test_a_late_filtered_delete_never_deletes_what_was_written_after_it() -> None:
    """Superseded rule: the delete arrives after newer writes to matching ids were folded."""
    state = PureState()
    state.compact([_upsert("x", 1, {"t": "a"}), _upsert("y", 2, {"t": "a"})])
    state.compact([_upsert("x", 9, {"t": "a", "n": 1})])  # newer than the delete below
    state.compact([_where(5, {"t": "a"})])  # written at 5, arrives last
    assert sorted(state.records) == ["x"]
    assert state.records["x"].metadata == {"t": "a", "n": 1}
    assert state.versions["y"].deleted and state.versions["x"].key.ts_us == 9


def test_a_late_write_older_than_a_folded_filtered_delete_still_meets_it() -> None:
    """The version keeps the filtered delete, so a write from before it that arrives
    after it was folded is judged as in Chroma: matching at the delete's place, it goes."""
    for fresh in (False, True):
        state = PureState()
        state.compact([_upsert("x", 1, {"t": "b"}), _upsert("y", 2, {"t": "b"})])
        state.compact([_where(5, {"t": "a"})])  # matches nothing yet
        late = [Op(OpKind.UPDATE, "x", OpKey(3, "w1", 3), metadata={"t": "a"}),
                Op(OpKind.UPDATE, "y", OpKey(6, "w1", 6), metadata={"t": "a"})]  # after it
        want = sorted(apply_in_order([_upsert("x", 1, {"t": "b"}), _upsert("y", 2, {"t": "b"}),
                                      _where(5, {"t": "a"}), *late]))
        if fresh:  # a reader with the late writes in its tail sees what compaction will do
            assert sorted(state.fresh(late)) == want == ["y"]
        state.compact(late)
        assert sorted(state.records) == want
        assert state.versions["x"] == Version(OpKey(5, "w2", 5), deleted=True)


def test_retained_filtered_deletes_expire_with_the_grace_period() -> None:
    kept = [_where(5, {"t": "a"}), _where(9, {"t": "b"})]
    assert retain(kept, [_where(7, {"t": "c"}), _upsert("x", 8, {})], 6) == [
        _where(7, {"t": "c"}), kept[1]]
    assert not needs_records([_upsert("x", 10, {})], kept)  # newer than every one kept
    assert needs_records([_upsert("x", 8, {})], kept)  # older than the one at 9


def test_ids_limit_the_delete_to_matching_ids() -> None:
    """Chroma's delete(ids=..., where=...): the named ids that match, nothing else."""
    state = PureState()
    state.compact([_upsert(r, i + 1, {"t": "a" if r != "b" else "b"})
                   for i, r in enumerate(["a", "b", "c"])])
    state.compact([_where(10, {"t": "a"}, ("a", "b", "zz"))])
    assert sorted(state.records) == ["b", "c"]
    state.compact([_where(11, {"t": "a"}, ())])  # ids=[]: Chroma's server deletes nothing
    assert sorted(state.records) == ["b", "c"]


def test_the_batch_state_before_the_delete_decides_not_the_version() -> None:
    """A record changed earlier in the same batch is judged on its new state."""
    state = PureState()
    state.compact([_upsert("m", 1, {"t": "b"}), _upsert("n", 2, {"t": "a"})])
    update = Op(OpKind.UPDATE, "m", OpKey(3, "w1", 3), metadata={"t": "a"})
    moved_away = Op(OpKind.UPDATE, "n", OpKey(4, "w1", 4), metadata={"t": "c"})
    state.compact([_where(5, {"t": "a"}), moved_away, update])
    assert sorted(state.records) == ["n"]


def test_planning_an_unexpanded_filtered_delete_is_refused() -> None:
    with pytest.raises(ValueError, match="expanded"):
        plan([_where(1, {"t": "a"})], {})


def _five() -> PureState:
    """Records e, d, c, b, a in that storage order, all ``t: a``."""
    state = PureState()
    state.compact([_upsert(r, i + 1, {"t": "a"}) for i, r in enumerate("edcba")])
    return state


def test_a_limit_removes_the_first_matching_records_in_storage_order() -> None:
    for fresh in (False, True):
        state = _five()
        delete = [_where(10, {"t": "a"}, limit=2)]
        if fresh:
            assert sorted(state.fresh(delete)) == ["a", "b", "c"]
        state.compact(delete)
        assert list(state.records) == ["c", "b", "a"]


def test_a_limit_of_zero_or_over_the_matches() -> None:
    state = _five()
    state.compact([_where(10, {"t": "a"}, limit=0)])
    assert list(state.records) == list("edcba")
    state.compact([_upsert("b", 11, {"t": "b"}), _where(12, {"t": "a"}, limit=100)])
    assert list(state.records) == ["b"]


def test_ids_and_limit_take_the_first_named_matches_in_storage_order() -> None:
    state = _five()
    state.compact([_where(10, {"t": "a"}, ("a", "c", "d"), limit=1)])
    assert list(state.records) == ["e", "c", "b", "a"]  # d: first of a, c, d in storage


def test_with_a_limit_changed_records_keep_their_place_created_ones_go_last() -> None:
    """In one batch: e updated (keeps its place), d deleted and added again (goes
    last), x new: the order is e, c, b, a, then d and x in creation order."""
    for fresh in (False, True):
        state = _five()
        tail = [Op(OpKind.UPDATE, "e", OpKey(10, "w1", 10), metadata={"n": 1}),
                Op(OpKind.DELETE, "d", OpKey(11, "w1", 11)),
                _upsert("x", 13, {"t": "a"}), _upsert("d", 12, {"t": "a"})]
        for limit, left in ((1, ["c", "b", "a", "d", "x"]), (4, ["d", "x"]),
                            (5, ["x"]), (6, [])):
            ops = [*tail, _where(20, {"t": "a"}, limit=limit)]
            if fresh:
                assert sorted(state.fresh(ops)) == sorted(left)
            else:
                st = _five()
                st.compact(ops)
                assert list(st.records) == left, limit


def test_a_limited_delete_counts_a_record_a_newer_write_keeps() -> None:
    state = _five()
    state.compact([_upsert("e", 30, {"t": "a", "n": 1})])  # newer than the delete
    state.compact([_where(20, {"t": "a"}, limit=2)])  # arrives late: e counts, d goes
    assert list(state.records) == ["e", "c", "b", "a"]


def test_a_limited_delete_is_decided_once_folded_and_not_retained() -> None:
    state = _five()
    state.compact([_where(20, {"t": "a"}, limit=1)])
    assert state.retained == [] and list(state.records) == list("dcba")
    state.compact([_upsert("late", 15, {"t": "a"}), _upsert("e", 16, {"t": "a"})])
    assert list(state.records) == [*"dcba", "late"]  # e's tombstone turns the late write away
