"""Seeded random write histories for model tests (shared by unit and integration tests).

A history is several writers issuing add/upsert/update/delete on a small id
space (so conflicts are frequent), cut into deltas per writer, which then
*arrive* in a shuffled order: some deltas land after later ones were already
compacted, which is exactly the late-arrival case the applied set and the
last-writer-wins rule must handle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from chromasnap.engine.merge import Record, apply_op, sort_ops
from chromasnap.engine.ops import Op, OpKey, OpKind


@dataclass
class Delta:
    """A group of one writer's consecutive ops, named like a real delta."""

    name: str
    writer: str
    ops: list[Op]


def random_history(
    rng: random.Random,
    dimension: int = 4,
    writers: int = 3,
    n_ops: int = 120,
    ids: int = 12,
) -> list[Delta]:
    """Ops from several writers with interleaved timestamps, cut into deltas."""
    out: list[Delta] = []
    clock = 1_000_000
    seq = dict.fromkeys(range(writers), 0)
    pending: dict[int, list[Op]] = {w: [] for w in range(writers)}
    for _ in range(n_ops):
        w = rng.randrange(writers)
        clock += rng.randint(0, 3)  # equal timestamps across writers happen: ties by writer id
        seq[w] += 1
        kind = rng.choice(list(OpKind))
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
    state: dict[str, Record | None] = {}
    for op in sort_ops(op for d in history for op in d.ops):
        state[op.id] = apply_op(state.get(op.id), op)
    return {k: v for k, v in state.items() if v is not None}


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
