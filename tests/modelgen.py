"""Seeded random write histories for model tests (shared by unit and integration tests).

A history is several writers issuing add/upsert/update/delete on a small id
space (so conflicts are frequent), cut into deltas per writer, which then
*arrive* in a shuffled order: some deltas land after later ones were already
compacted, which is exactly the late-arrival case the applied set and the
last-writer-wins rule must handle.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chromasnap.engine.merge import (
    Record,
    Version,
    apply_op,
    expand_filtered_deletes,
    fold_tracked,
    matching_records,
    plan,
    retain,
    settle,
    sort_ops,
)
from chromasnap.engine.ops import RECORD_KINDS, DeleteFilter, Op, OpKey, OpKind
from chromasnap.reader.freshview import build_overlay, indexed_ops


@dataclass
class Delta:
    """A group of one writer's consecutive ops, named like a real delta."""

    name: str
    writer: str
    ops: list[Op]


def random_filter(rng: random.Random, ids: int, limits: bool = False) -> DeleteFilter:
    """A filtered delete over what ``random_history`` writes (``k``, ``f0..2``, documents);
    with ``limits``, some remove only their first 0..3 matches."""
    wheres: list[Any] = [
        None, {"k": rng.randrange(5)}, {"k": {"$gte": rng.randrange(5)}},
        {"k": {"$in": [rng.randrange(5), rng.randrange(5)]}},
        {"f1": {"$ne": "x"}},  # also matches records without the key
        {"$or": [{"k": rng.randrange(5)}, {"f0": {"$ne": "y"}}]},
    ]
    docs: list[Any] = [None, {"$contains": f"id{rng.randrange(ids)} "},
                       {"$not_contains": f"id{rng.randrange(ids)} "}]
    where, where_document = rng.choice(wheres), rng.choice(docs)
    if where is None and where_document is None:
        where = {"k": rng.randrange(5)}
    limited = None
    if rng.random() < 0.3:
        limited = tuple(sorted({f"id{rng.randrange(ids)}" for _ in range(rng.randint(1, 4))}))
    limit = rng.choice([None, None, 0, 1, 2, 3]) if limits else None
    return DeleteFilter(where, where_document, limited, limit)


def random_history(
    rng: random.Random,
    dimension: int = 4,
    writers: int = 3,
    n_ops: int = 120,
    ids: int = 12,
    filtered_deletes: float = 0.0,
    limits: bool = False,
) -> list[Delta]:
    """Ops from several writers with interleaved timestamps, cut into deltas.

    ``filtered_deletes`` is the share of ops that are ``delete(where=...)``;
    at 0 the history is what it always was for a seed.
    """
    out: list[Delta] = []
    clock = 1_000_000
    seq = dict.fromkeys(range(writers), 0)
    pending: dict[int, list[Op]] = {w: [] for w in range(writers)}
    for _ in range(n_ops):
        w = rng.randrange(writers)
        clock += rng.randint(0, 3)  # equal timestamps across writers happen: ties by writer id
        seq[w] += 1
        if filtered_deletes and rng.random() < filtered_deletes:
            pending[w].append(Op(OpKind.DELETE_WHERE, "", OpKey(clock, f"w{w}", seq[w]),
                                 filter=random_filter(rng, ids, limits)))
            continue
        kind = rng.choice(RECORD_KINDS)
        rid = f"id{rng.randrange(ids)}"
        emb = None
        doc = None
        meta: dict[str, str | int | float | bool | None] | None = None
        if kind in (OpKind.ADD, OpKind.UPSERT) or (kind == OpKind.UPDATE and rng.random() < 0.5):
            emb = np.array([rng.uniform(-1, 1) for _ in range(dimension)], dtype=np.float32)
        if kind != OpKind.DELETE:
            if rng.random() < 0.7:
                doc = f"doc {rid} v{clock}"
            if rng.random() < 0.7:
                meta = {"k": rng.randrange(5), f"f{rng.randrange(3)}": f"v{clock}"}
                if kind in (OpKind.UPDATE, OpKind.UPSERT) and rng.random() < 0.3:
                    meta[f"f{rng.randrange(3)}"] = None
        pending[w].append(Op(kind, rid, OpKey(clock, f"w{w}", seq[w]), emb, doc, meta))
        if rng.random() < 0.25:
            _cut(out, w, pending, clock)
    for w in range(writers):
        _cut(out, w, pending, clock + 10 + w)
    return out


def _cut(out: list[Delta], w: int, pending: dict[int, list[Op]], clock: int) -> None:
    if pending[w]:
        # Like a real writer, each delta of one writer gets a strictly later flush time.
        last = max((int(d.name[:17]) for d in out if d.writer == f"w{w}"), default=0)
        ts = max(clock, last + 1)
        out.append(Delta(f"{ts:017d}-w{w}.arrow", f"w{w}", pending[w]))
        pending[w] = []


def arrival_batches(
    rng: random.Random, history: list[Delta], max_batch: int = 4
) -> list[list[Delta]]:
    """Deltas in a shuffled arrival order (some late), grouped into compaction batches."""
    order = sorted(history, key=lambda d: d.name)
    # Swap neighbours at random: a delta lands after newer ones were compacted.
    for i in range(len(order) - 1):
        if rng.random() < 0.3:
            order[i], order[i + 1] = order[i + 1], order[i]
    batches: list[list[Delta]] = []
    i = 0
    while i < len(order):
        n = rng.randint(1, max_batch)
        batches.append(order[i : i + n])
        i += n
    return batches


def reference_state(batches: list[list[Delta]]) -> tuple[dict[str, Record], int]:
    """The documented semantics, computed declaratively from the arrival history.

    An op survives unless a newer op on the same id arrived in an *earlier*
    batch; survivors are applied in total key order with Chroma's rules.
    Returns the final records and how many ops were superseded.
    """
    newest_before: dict[str, OpKey] = {}
    survivors: list[Op] = []
    superseded = 0
    for batch in batches:
        batch_ops = [op for d in batch for op in d.ops]
        for op in batch_ops:
            prev = newest_before.get(op.id)
            if prev is not None and prev > op.key:
                superseded += 1
            else:
                survivors.append(op)
        for op in batch_ops:
            prev = newest_before.get(op.id)
            newest_before[op.id] = op.key if prev is None or op.key > prev else prev
    state: dict[str, Record | None] = {}
    for op in sort_ops(survivors):
        state[op.id] = apply_op(state.get(op.id), op)
    return {k: v for k, v in state.items() if v is not None}, superseded


def ideal_state(history: list[Delta]) -> dict[str, Record]:
    """Every op applied in total order, as one Chroma server receiving them in order would."""
    return apply_in_order(op for d in history for op in d.ops)


def apply_in_order(ops: Iterable[Op]) -> dict[str, Record]:
    """``ops`` applied one by one in key order: a filtered delete removes what matches then."""
    state: dict[str, Record] = {}
    for op in sort_ops(ops):
        if op.kind is OpKind.DELETE_WHERE:
            assert op.filter is not None
            hits = matching_records(dict(state), op.filter)
            for rid in hits if op.filter.limit is None else hits[:op.filter.limit]:
                del state[rid]
            continue
        rec = apply_op(state.get(op.id), op)
        if rec is None:
            state.pop(op.id, None)
        else:
            state[op.id] = rec
    return state


def chroma_call(col: Any, op: Op) -> None:
    """One op as one plain chromadb call on ``col``: the reference chromasnap must equal."""
    server, where = col._client, {"tenant": col.tenant, "database": col.database}
    if op.kind is OpKind.DELETE_WHERE:
        assert op.filter is not None
        f = op.filter
        col.delete(ids=None if f.ids is None else list(f.ids), where=f.where,
                   where_document=f.where_document, limit=f.limit)
        return
    if op.kind is OpKind.DELETE:
        server._delete(collection_id=col.id, ids=[op.id], **where)
        return
    fields = {
        "embeddings": [op.embedding.tolist()] if op.embedding is not None else None,
        "documents": [op.document] if op.document is not None else None,
        "metadatas": [op.metadata] if op.metadata is not None else None,
        "uris": [op.uri] if op.uri is not None else None,
    }
    call = {OpKind.ADD: server._add, OpKind.UPSERT: server._upsert, OpKind.UPDATE: server._update}
    call[op.kind](collection_id=col.id, ids=[op.id], **fields, **where)


def records_equal(a: dict[str, Record], b: dict[str, Record]) -> bool:
    """Equal ids, documents, metadata and (float32-exact) embeddings."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x.document != y.document or (x.metadata or None) != (y.metadata or None):
            return False
        if x.uri != y.uri or not np.array_equal(x.embedding, y.embedding):
            return False
    return True


class PureState:
    """A version as the pure functions see it: records (dict order = storage order),
    versions and the filtered deletes it keeps (never pruned: tests run in the grace).
    Its vectors are as the index of a collection in ``space`` returns them."""

    def __init__(self, dimension: int = 4, space: str = "l2") -> None:
        self.dimension = dimension
        self.space = space
        self.records: dict[str, Record] = {}
        self.versions: dict[str, Version] = {}
        self.retained: list[Op] = []

    def lookup(self, ids: list[str]) -> Mapping[str, Record]:
        return {rid: self.records[rid] for rid in ids if rid in self.records}

    def matching(self, f: DeleteFilter) -> list[str]:
        return matching_records(dict(self.records), f)

    def compact(self, ops: list[Op]) -> None:
        """What a compaction does with the pure functions: expand, plan, settle, fold."""
        p = plan(expand_filtered_deletes(ops, self.versions, self.lookup, self.matching,
                                         self.retained), self.versions)
        touched, _ = settle(p, self.versions)
        self.versions.update(touched)
        self.retained = retain(self.retained, ops, 0)
        folded = fold_tracked(self.records, indexed_ops(p.ops, self.space))
        for rid, rec in folded.records.items():
            if rec is None:
                self.records.pop(rid, None)
            elif rid not in folded.created:  # keeps its place
                self.records[rid] = rec
        for rid in sorted(folded.created, key=folded.created.__getitem__):  # go last
            self.records.pop(rid, None)
            self.records[rid] = folded.records[rid]  # type: ignore[assignment]

    def fresh(self, tail: list[Op]) -> dict[str, Record]:
        """What a fresh read sees: the version with the tail's overlay on top."""
        ov = build_overlay(tail, self.versions, self.dimension, self.lookup,
                           base_matching=self.matching, retained=self.retained, space=self.space)
        out = {rid: rec for rid, rec in self.records.items() if rid not in ov.records}
        out.update({rid: rec for rid, rec in ov.records.items() if rec is not None})
        return out
