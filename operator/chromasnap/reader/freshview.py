"""Fresh reads: merge the delta tail into snapshot answers. Pure functions, no I/O.

A reader's *overlay* is the final state of every id the tail touches,
computed with the same rules a compaction will use (``merge.plan`` against
the snapshot's versions, then ``merge.fold`` over the snapshot's records).
Answers then combine two sources:

- the snapshot, asked through chromadb's index with the same filters, for
  ``n + |overlay ∩ snapshot|`` candidates so that dropping the ids the
  overlay overrides still leaves ``n``;
- the overlay's live records, searched exhaustively with the index's own
  distance function (``distances.py``) and filtered by ``filters.py``.

So a fresh read equals what one Chroma server holding every acknowledged
write returns, up to HNSW approximation on the snapshot part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chromasnap.engine import distances, filters
from chromasnap.engine.merge import Record, Version, fold, plan
from chromasnap.engine.ops import Op

Columns = dict[str, Any]


@dataclass(frozen=True)
class Overlay:
    """The tail's effect on top of one snapshot."""

    records: dict[str, Record | None]  # final state of every touched id (None: deleted)
    in_base: frozenset[str]  # touched ids that exist in the snapshot
    live: list[str]  # touched ids with a live record, in the order of their last write
    matrix: np.ndarray[Any, np.dtype[np.float32]] = field(repr=False)
    superseded: int = 0
    ops: int = 0

    @property
    def empty(self) -> bool:
        """True when the tail changes nothing."""
        return not self.records


EMPTY = Overlay({}, frozenset(), [], np.zeros((0, 0), dtype=np.float32))


def build_overlay(ops: Iterable[Op], versions: Mapping[str, Version], dimension: int,
                  base_lookup: Callable[[list[str]], Mapping[str, Record]]) -> Overlay:
    """Fold tail ops over the snapshot records they touch (``base_lookup`` reads those)."""
    p = plan(ops, versions)
    if not p.ops:
        return Overlay({}, frozenset(), [], np.zeros((0, dimension), dtype=np.float32),
                       p.superseded, 0)
    touched = list(dict.fromkeys(op.id for op in p.ops))
    base = base_lookup(touched)
    finals = fold(base, p.ops)
    last_key = {op.id: op.key for op in p.ops}
    live = sorted((rid for rid, r in finals.items() if r is not None), key=lambda r: last_key[r])
    matrix = (np.stack([finals[r].embedding for r in live]).astype(np.float32)  # type: ignore[union-attr]
              if live else np.zeros((0, dimension), dtype=np.float32))
    return Overlay(finals, frozenset(base), live, matrix, p.superseded, len(p.ops))


def count(base_count: int, ov: Overlay) -> int:
    """Records visible: the snapshot's, minus those the tail touched, plus the tail's live ones."""
    return base_count - len(ov.in_base) + len(ov.live)


def _matching_live(ov: Overlay, where: Any, where_document: Any,
                   ids: Sequence[str] | None) -> list[int]:
    pred = filters.compile_filter(where, where_document)
    allowed = set(ids) if ids is not None else None
    out = []
    for i, rid in enumerate(ov.live):
        if allowed is not None and rid not in allowed:
            continue
        rec = ov.records[rid]
        assert rec is not None
        if pred is None or pred(rec.metadata, rec.document):
            out.append(i)
    return out


def _field(rec: Record, name: str) -> Any:
    if name == "documents":
        return rec.document
    if name == "metadatas":
        return rec.metadata
    if name == "embeddings":
        return rec.embedding
    return rec.uri


def snapshot_k(n_results: int, ov: Overlay) -> int:
    """How many candidates to ask the snapshot for so ``n_results`` survive the overlay."""
    return n_results + len(ov.in_base)


def merge_query(snap: Mapping[str, Any], ov: Overlay, queries: np.ndarray[Any, Any],
                n_results: int, space: str, include: Sequence[str], where: Any = None,
                where_document: Any = None, ids: Sequence[str] | None = None) -> Columns:
    """Combine the snapshot's query answer (with distances) and the overlay's exact search."""
    cols = [c for c in ("documents", "metadatas", "embeddings", "uris") if c in include]
    live_idx = _matching_live(ov, where, where_document, ids)
    tail_d = (distances.distances(queries, ov.matrix[live_idx], space)
              if live_idx else np.zeros((len(queries), 0), dtype=np.float32))
    out: Columns = {"ids": []}
    for c in [*cols, "distances"] if "distances" in include else cols:
        out[c] = []
    for q in range(len(queries)):
        cands: list[tuple[float, int, str, dict[str, Any]]] = []
        snap_ids = snap["ids"][q] if snap.get("ids") else []
        for j, rid in enumerate(snap_ids):
            if rid in ov.records:
                continue  # overridden or deleted by the tail
            row = {c: snap[c][q][j] for c in cols}
            cands.append((float(snap["distances"][q][j]), 0, rid, row))
        for k, i in enumerate(live_idx):
            rid = ov.live[i]
            rec = ov.records[rid]
            assert rec is not None
            cands.append((float(tail_d[q, k]), 1, rid, {c: _field(rec, c) for c in cols}))
        # Stable by distance; snapshot before tail on exact ties (deterministic).
        cands.sort(key=lambda t: (t[0], t[1]))
        top = cands[:n_results]
        out["ids"].append([t[2] for t in top])
        for c in cols:
            out[c].append([t[3][c] for t in top])
        if "distances" in include:
            out["distances"].append([t[0] for t in top])
    return out


def get_plan(snap_ids: Sequence[str], ov: Overlay, where: Any, where_document: Any,
             ids: Sequence[str] | None, offset: int, limit: int | None) -> list[tuple[str, bool]]:
    """Which ids a get returns, in order: ``(id, from_tail)``.

    ``snap_ids`` are the snapshot's matching ids in its order; the tail's live
    matching ids follow, in the order of their last write (where a
    compaction would place new records).
    """
    merged = [(rid, False) for rid in snap_ids if rid not in ov.records]
    merged += [(ov.live[i], True) for i in _matching_live(ov, where, where_document, ids)]
    end = None if limit is None else offset + limit
    return merged[offset:end]


def tail_columns(ov: Overlay, rids: Sequence[str], include: Sequence[str]) -> dict[str, list[Any]]:
    """The requested columns for tail records."""
    out: dict[str, list[Any]] = {}
    for c in ("documents", "metadatas", "embeddings", "uris"):
        if c in include:
            out[c] = [_field(ov.records[r], c) for r in rids]  # type: ignore[arg-type]
    return out
