"""Searching an overlay whose records segment indexes hold: no reader re-indexes a write.

The compactor builds one HNSW index per segment (``engine.hnswindex``). A
reader's overlay of a version's segments knows, for every live record,
which write gave it its vector: when a segment's index holds that very
write under some label, the index answers for the record; every other live
record (vectors from the base, small segments without an index, segments
from before indexes existed) is searched exhaustively, as the fresh tail is
(``tailsearch``). :class:`Served` records that split; :func:`nearest`
searches both parts and merges them by distance.

Which write gave a record its vector is decided by the same fold that
decides the record (``freshview._fold``), by identity of the vector object:
the fold copies an op's vector into the record it writes, and keeps the
record's vector when an op carries none. So a record is served by an index
exactly when its vector is the one the index holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chromasnap.engine import distances
from chromasnap.engine.hnswindex import SegmentIndex
from chromasnap.engine.merge import Record
from chromasnap.engine.ops import Op
from chromasnap.reader.tailsearch import BoolArray, TailMatrix

IntArray = npt.NDArray[np.intp]

#: Below this many allowed labels, an index's records are searched exhaustively: as
#: Chroma does for a selective filter, and exact.
EXACT_BELOW = 512


@dataclass(frozen=True)
class Served:
    """Which live rows of an overlay segment indexes hold."""

    indexes: tuple[SegmentIndex, ...]
    #: Per index, the overlay row each label holds the vector of (-1: none).
    label_rows: tuple[IntArray, ...]
    #: Rows no index holds, ascending: searched exhaustively.
    exhaustive: IntArray


@dataclass(frozen=True)
class Placed:
    """A segment index and where its segment's writes start in the ops being folded."""

    offset: int
    index: SegmentIndex


def remapped(under: Served | None, src: IntArray,
             under_rows: int) -> list[tuple[SegmentIndex, IntArray]]:
    """``under``'s labels moved to the rows of an overlay folded on top of it.

    ``src[r]`` is the row of ``under`` (of ``under_rows``) that new row ``r``
    keeps; -1 where the new ops touched the id, whose vector is decided again.
    """
    if under is None:
        return []
    inv = np.full(under_rows, -1, dtype=np.intp)
    kept = np.flatnonzero(src >= 0)
    inv[src[kept]] = kept
    out = []
    for index, lr in zip(under.indexes, under.label_rows, strict=True):
        out.append((index, np.where(lr >= 0, inv[np.maximum(lr, 0)], -1).astype(np.intp)))
    return out


def served(order: Sequence[str], finals: Mapping[str, Record | None], ops: Sequence[Op],
           placed: Sequence[Placed], carried: list[tuple[SegmentIndex, IntArray]]
           ) -> Served | None:
    """The split of ``order``'s rows after a fold of ``ops`` (see the module docstring).

    ``placed`` are the indexes of segments whose writes ``ops`` hold;
    ``carried`` the indexes (and rows) of the overlay the fold went on top of.
    """
    if not placed and not carried:
        return None
    pairs = list(carried)
    if placed:
        from_op = {id(op.embedding): i for i, op in enumerate(ops) if op.embedding is not None}
        row_of = {rid: r for r, rid in enumerate(order)}
        for p in placed:
            lr = np.full(len(p.index), -1, dtype=np.intp)
            for label, (rid, at) in enumerate(zip(p.index.ids, p.index.op_positions.tolist(),
                                                  strict=True)):
                r = row_of.get(rid)
                rec = finals.get(rid)
                if r is not None and rec is not None \
                        and from_op.get(id(rec.embedding)) == p.offset + at:
                    lr[label] = r
            pairs.append((p.index, lr))
    held = np.zeros(len(order), dtype=np.bool_)
    for _, lr in pairs:
        held[lr[lr >= 0]] = True
    pairs = [(index, lr) for index, lr in pairs if (lr >= 0).any()]
    return Served(tuple(i for i, _ in pairs), tuple(lr for _, lr in pairs),
                  np.flatnonzero(~held).astype(np.intp))


def nearest(sv: Served, matrix: Any, exhaustive: TailMatrix, space: str, query: Any, k: int,
            rows: IntArray | None) -> tuple[IntArray, distances.Float32Array]:
    """The ``k`` nearest of ``rows`` (all when None) to ``query``: overlay rows, distances.

    ``matrix`` is the overlay's (row per live record); ``exhaustive`` the
    prepared matrix of ``sv.exhaustive``'s rows.
    """
    mask: BoolArray | None = None
    if rows is not None:
        mask = np.zeros(len(matrix), dtype=np.bool_)
        mask[rows] = True
    found_rows: list[IntArray] = []
    found_dists: list[distances.Float32Array] = []
    sub = None if mask is None else np.flatnonzero(mask[sv.exhaustive]).astype(np.intp)
    if len(sv.exhaustive) and (sub is None or len(sub)):
        idx, dist = exhaustive.nearest(query, k, sub)
        found_rows.append(sv.exhaustive[idx])
        found_dists.append(dist)
    for index, lr in zip(sv.indexes, sv.label_rows, strict=True):
        allowed = lr >= 0
        if mask is not None:
            allowed &= mask[np.maximum(lr, 0)]
        n = int(allowed.sum())
        if n == 0:
            continue
        if n >= EXACT_BELOW:
            try:
                labels, dist = index.nearest(query, k, None if n == len(lr) else allowed)
                found_rows.append(lr[labels])
                found_dists.append(dist)
                continue
            except RuntimeError:
                pass  # the graph walk found fewer than k: search those records exactly
        picked = lr[allowed]
        d = distances.distances(distances.as_matrix(query), matrix[picked], space)
        idx, dist = distances.top_k(d, k)
        found_rows.append(picked[idx[0]])
        found_dists.append(dist[0])
    if not found_rows:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
    all_rows = np.concatenate(found_rows)
    all_dists = np.concatenate(found_dists).astype(np.float32)
    top = np.lexsort((all_rows, all_dists))[:k]
    return all_rows[top], all_dists[top]
