"""Fresh reads: merge the delta tail into snapshot answers. Pure functions, no I/O.

A reader's *overlay* is the final state of every id the tail touches,
computed with the same rules a compaction will use (``merge.plan`` against
the snapshot's versions, then ``merge.fold`` over the snapshot's records).
Answers then combine two sources:

- the snapshot, asked through chromadb's index with the same filters, for
  enough candidates that dropping the ids the overlay overrides still
  leaves ``n`` (``n + |overlay ∩ snapshot|`` at most, see
  ``ReaderBackend._candidates``);
- the overlay's live records, searched exhaustively with the index's own
  distance function (``distances.py``) and filtered by ``filters.py``.

Embeddings come back as chromadb's index returns them: an overlay's
records hold the vectors of ops as the index will hold them once compacted
(``distances.as_indexed``; in cosine space not quite the vectors sent), and
the snapshot's records as chromadb returned them. So a record reads the same
before and after compaction.

Records come back in Chroma's order (storage order, see
``engine.persistence``): a record the tail updates keeps its place in the
snapshot, and records the tail creates — new ids, or ids deleted and added
again — follow every snapshot record, in the order they were created. That
is where the next compaction puts them too.

So a fresh read equals what one Chroma server holding every acknowledged
write returns, up to HNSW approximation on the snapshot part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from chromasnap.engine import distances, filters
from chromasnap.engine.errors import ChromasnapError
from chromasnap.engine.merge import (
    Lookup,
    Matching,
    Record,
    Version,
    expand_filtered_deletes,
    fold_tracked,
    matching_records,
    needs_records,
    plan,
)
from chromasnap.engine.ops import DeleteFilter, Op, OpKind
from chromasnap.reader import indexsearch
from chromasnap.reader.indexsearch import Placed, Served, remapped, served
from chromasnap.reader.tailsearch import BoolArray, MaskCache

Columns = dict[str, Any]
Positions = Callable[[Sequence[str]], Mapping[str, int]]


@dataclass(frozen=True)
class Overlay:
    """The tail's effect on top of one snapshot."""

    records: dict[str, Record | None]  # final state of every touched id (None: deleted)
    in_base: frozenset[str]  # touched ids that exist in the snapshot
    # Touched ids with a live record: first those that keep their snapshot place
    # (``stays``), then those the tail created, in the order it created them.
    live: list[str]
    matrix: np.ndarray[Any, np.dtype[np.float32]] = field(repr=False)
    superseded: int = 0
    ops: int = 0
    stays: frozenset[str] = frozenset()  # live ids that existed in the snapshot throughout
    inserts: bool = False  # the tail adds or upserts vectors (Chroma then has an index)
    created: tuple[str, ...] = ()  # live ids the ops created, in creation order
    # Built on first use and kept as long as the overlay (which never changes): the
    # prepared search matrix and the masks of the filters queries used.
    cache: MaskCache = field(default_factory=MaskCache, compare=False, repr=False)
    # The live records segment indexes hold (``indexsearch``); None: all searched exhaustively.
    served: Served | None = field(default=None, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        """True when the tail changes nothing."""
        return not self.records

    @cached_property
    def positions(self) -> dict[str, int]:
        """Index in ``live`` (and row of ``matrix``) of every live id."""
        return {rid: i for i, rid in enumerate(self.live)}


EMPTY = Overlay({}, frozenset(), [], np.zeros((0, 0), dtype=np.float32))


def build_overlay(ops: Iterable[Op], versions: Mapping[str, Version], dimension: int,
                  base_lookup: Lookup, under: Overlay = EMPTY,
                  base_matching: Matching | None = None,
                  retained: Sequence[Op] = (), *, space: str) -> Overlay:
    """Fold tail ops over what they touch: ``under``'s records, else the snapshot's.

    ``space`` is the collection's: it decides how an op's vector reads back.
    ``base_lookup`` reads snapshot records. ``under`` is an overlay the tail
    sits on (a version's segments the reader has not folded into its copy
    yet); ``versions`` must then include its versions. ``base_matching``
    finds the snapshot's records a filter matches (chromadb's ``get(where=...)``
    on the reader's copy); filtered deletes in ``ops`` need it, and are
    expanded over the snapshot, then ``under``, then the tail's earlier ops,
    exactly as the compactor will (``merge.expand_filtered_deletes``);
    ``retained`` are the filtered deletes the version keeps for late writes.
    """
    if not isinstance(ops, list):
        ops = list(ops)
    if needs_records(ops, retained):
        if base_matching is None:
            raise ValueError("filtered deletes need the snapshot's matching records")
        ops = expand_filtered_deletes(ops, versions, lookup_over(base_lookup, under),
                                      matching_over(base_matching, under), retained)
    p = plan(ops, versions)
    if not p.ops:
        if under.empty:
            return Overlay({}, frozenset(), [], np.zeros((0, dimension), dtype=np.float32),
                           p.superseded, 0)
        return replace(under, superseded=under.superseded + p.superseded)
    return _fold(p.ops, p.superseded, dimension, space, base_lookup, under)


def extend_overlay(ops: list[Op], versions: Mapping[str, Version], dimension: int,
                   base_lookup: Lookup, prev: Overlay, *,
                   space: str) -> tuple[Overlay, dict[str, Version]]:
    """Fold ``ops`` on top of ``prev``; also return the versions the ops give their ids.

    The same as one :func:`build_overlay` over ``prev``'s ops and ``ops``
    when ``ops`` hold no filtered delete, none needs the snapshot's records
    (``merge.needs_records``), and every op of ``ops`` is newer than every op
    ``prev`` folded: planning sorts ops by key, so the combined plan is
    ``prev``'s followed by these, and a fold is sequential. ``versions`` must
    include the versions ``prev``'s ops gave. So a tail that grows by one
    delta costs that delta, not the whole tail again.
    """
    p = plan(ops, versions)
    if not p.ops:
        if prev.empty:
            return (Overlay({}, frozenset(), [], np.zeros((0, dimension), dtype=np.float32),
                            prev.superseded + p.superseded, prev.ops), p.versions)
        return replace(prev, superseded=prev.superseded + p.superseded), p.versions
    return _fold(p.ops, p.superseded, dimension, space, base_lookup, prev), p.versions


def lookup_over(base_lookup: Lookup, under: Overlay) -> Lookup:
    """Records of the snapshot with ``under`` on top."""

    def lookup(ids: list[str]) -> Mapping[str, Record]:
        found = dict(base_lookup([rid for rid in ids if rid not in under.records]))
        found.update({rid: rec for rid in ids
                      if (rec := under.records.get(rid)) is not None})
        return found

    return lookup


def matching_over(base_matching: Matching, under: Overlay) -> Matching:
    """Matching records of the snapshot with ``under`` on top."""

    def matching(f: DeleteFilter) -> list[str]:
        hits = [rid for rid in base_matching(f) if rid not in under.records]
        if f.limit is None:  # order does not matter
            return hits + matching_records(under.records, f)
        # Chroma's order: ``under``'s records that stay in the snapshot go in its
        # order, the ones ``under`` created follow in creation order.
        mine = matching_records({rid: under.records[rid] for rid in under.live}, f)
        stays = [rid for rid in mine if rid in under.stays]
        if stays:
            hits = list(base_matching(DeleteFilter(ids=(*hits, *stays), limit=f.limit)))
        return [*hits, *(rid for rid in mine if rid not in under.stays)]

    return matching


def build_planned(ops: Sequence[Op], dimension: int,
                  base_lookup: Callable[[list[str]], Mapping[str, Record]], *,
                  space: str, under: Overlay = EMPTY,
                  placed: Sequence[Placed] = ()) -> Overlay:
    """The overlay of ops already planned and ordered, as segments store them, on
    ``under`` (the overlay of the segments before them); ``placed`` are the
    indexes of the segments whose ops these are (``indexsearch``)."""
    if not ops:
        return under if not under.empty else Overlay(
            {}, frozenset(), [], np.zeros((0, dimension), dtype=np.float32))
    return _fold(list(ops), 0, dimension, space, base_lookup, under, placed, views=True)


def indexed_ops(ops: list[Op], space: str) -> list[Op]:
    """``ops`` with every vector as chromadb's index will return it (``distances.as_indexed``).

    Only ops carry vectors as sent: the snapshot's records (``base_lookup``)
    and an ``under`` overlay's already hold them as the index returns them,
    and the transform must not run twice (it is not idempotent). One matrix
    for all ops: the sequential sum it needs is slow row by row.
    """
    if space not in distances.NORMALIZED_SPACES:
        return ops
    carrying = [(i, op.embedding) for i, op in enumerate(ops) if op.embedding is not None]
    if not carrying:
        return ops
    indexed = distances.as_indexed(np.stack([vector for _, vector in carrying]), space)
    out = list(ops)
    for (i, _), vector in zip(carrying, indexed, strict=True):
        out[i] = replace(ops[i], embedding=vector)
    return out


def _fold(ops: list[Op], superseded: int, dimension: int, space: str,
          base_lookup: Callable[[list[str]], Mapping[str, Record]], under: Overlay,
          placed: Sequence[Placed] = (), views: bool = False) -> Overlay:
    """Fold ``ops`` over ``under``. With ``views``, every live record's vector becomes a
    view of its row of the overlay's matrix: a segments' overlay, which lives as long as
    its version, then holds each vector once, not twice (the tail's, rebuilt per delta,
    is not worth the pass)."""
    ops = indexed_ops(ops, space)
    touched = list(dict.fromkeys(op.id for op in ops))
    found = base_lookup([rid for rid in touched if rid not in under.records])
    base: dict[str, Record] = dict(found)
    for rid in touched:
        rec = under.records.get(rid)
        if rec is not None:
            base[rid] = rec
    folded = fold_tracked(base, ops)
    finals = {**under.records, **folded.records}
    new = folded.created

    def live(rid: str) -> bool:
        return finals[rid] is not None and rid not in new

    stays = ([rid for rid in under.live if rid in under.stays and live(rid)]
             + [rid for rid in touched if rid in found and live(rid)])
    created = ([rid for rid in under.created if live(rid)]
               + sorted(new, key=lambda r: new[r]))
    order = stays + created
    prev = under.positions
    touched_set = set(touched)
    # The row of ``under`` each new row keeps (-1: the ops touched the id).
    src = np.fromiter((-1 if rid in touched_set else prev.get(rid, -1) for rid in order),
                      dtype=np.intp, count=len(order))
    matrix = _matrix(order, src, finals, under, dimension)
    inserts = under.inserts or any(op.kind in (OpKind.ADD, OpKind.UPSERT) for op in ops)
    sv = served(order, finals, ops, placed, remapped(under.served, src, len(under.live)))
    if views:
        for i, rid in enumerate(order):
            finals[rid] = replace(finals[rid], embedding=matrix[i])  # type: ignore[type-var]
    return Overlay(finals, under.in_base | frozenset(found), order, matrix,
                   under.superseded + superseded, under.ops + len(ops), frozenset(stays),
                   inserts, tuple(created), served=sv)


def _matrix(order: list[str], src: np.ndarray[Any, np.dtype[np.intp]],
            finals: Mapping[str, Record | None],
            under: Overlay, dimension: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The rows of ``order``: ``under``'s rows for the ids these ops left alone (one
    copy in numpy), the folded records' vectors for the others. A tail that grows by
    one delta then costs that delta's rows, not a Python object per tail record."""
    if not order:
        return np.zeros((0, dimension), dtype=np.float32)
    kept = src >= 0
    if kept.any():
        # One gather (rows of new ids are overwritten below).
        out = under.matrix.take(np.where(kept, src, 0), axis=0)
    else:
        out = np.empty((len(order), dimension), dtype=np.float32)
    for i in np.flatnonzero(~kept).tolist():
        out[i] = finals[order[i]].embedding  # type: ignore[union-attr]
    return out


def count(base_count: int, ov: Overlay) -> int:
    """Records visible: the snapshot's, minus those the tail touched, plus the tail's live ones."""
    return base_count - len(ov.in_base) + len(ov.live)


def _filter_mask(ov: Overlay, where: Any, where_document: Any) -> BoolArray | None:
    """Live records a filter matches (None: no filter), evaluated once per overlay."""
    pred = filters.compile_filter(where, where_document)
    if pred is None:
        return None

    def build() -> BoolArray:
        recs = ov.records
        return np.fromiter(
            (pred(rec.metadata, rec.document)  # type: ignore[union-attr]
             for rec in (recs[rid] for rid in ov.live)), dtype=np.bool_, count=len(ov.live))

    return ov.cache.mask(where, where_document, build)


def matching_rows(ov: Overlay, where: Any, where_document: Any,
                  ids: Sequence[str] | None) -> np.ndarray[Any, np.dtype[np.intp]] | None:
    """Rows of ``ov.live`` a query's filters and ``ids`` select, ascending (None: all).

    The filter's mask is computed once per overlay and filter (an overlay
    never changes); ``ids`` are looked up, never scanned for.
    """
    mask = _filter_mask(ov, where, where_document)
    if ids is not None:
        pos = ov.positions
        picked = np.zeros(len(ov.live), dtype=np.bool_)
        picked[[p for rid in ids if (p := pos.get(rid)) is not None]] = True
        mask = picked if mask is None else picked & mask
    return None if mask is None else np.flatnonzero(mask).astype(np.intp)


def chroma_metadata(rec: Record) -> Any:
    """A record's metadata as Chroma returns it: ``{}``, not ``None``, when it has a URI.

    (Chroma stores the URI as the metadata key ``chroma:uri`` and removes that
    key on the way out, leaving an empty dict; a document, stored the same
    way, leaves ``None``.)
    """
    if rec.metadata:
        return rec.metadata
    return {} if rec.uri is not None else None


def _field(rec: Record, name: str) -> Any:
    if name == "documents":
        return rec.document
    if name == "metadatas":
        return chroma_metadata(rec)
    if name == "embeddings":
        return rec.embedding
    return rec.uri


def snapshot_k(n_results: int, ov: Overlay) -> int:
    """How many candidates to ask the snapshot for so ``n_results`` survive the overlay."""
    return n_results + len(ov.in_base)


def snapshot_survivors(ids: Sequence[Sequence[str]], ov: Overlay,
                       n_results: int) -> list[list[int]]:
    """Per query row, the positions of the first ``n_results`` snapshot candidates the
    overlay does not override: the only ones that can reach the merged top ``n_results``
    (candidates come sorted by distance), so only their columns need fetching."""
    return [[j for j, rid in enumerate(row) if rid not in ov.records][:n_results]
            for row in ids]


#: Per query row, the overlay's nearest live rows and their distances.
Neighbours = list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]]


def overlay_nearest(ov: Overlay, queries: np.ndarray[Any, Any], n_results: int, space: str,
                    where: Any = None, where_document: Any = None,
                    ids: Sequence[str] | None = None) -> Neighbours:
    """The overlay's side of a query: per row, its ``n_results`` nearest matching records.

    Searched in numpy (``tailsearch``: one float32 product, then exact
    distances for the few rows that can rank) and in the segment indexes
    that hold the overlay's vectors (``indexsearch``). Touches no Python row
    per record, so it can run beside the snapshot's search.
    """
    rows = matching_rows(ov, where, where_document, ids)
    sv = ov.served
    tm = ov.cache.matrix(
        lambda: ov.matrix if sv is None else ov.matrix[sv.exhaustive], space)
    if sv is None:
        return [tm.nearest(queries[q], n_results, rows) for q in range(len(queries))]
    return [indexsearch.nearest(sv, ov.matrix, tm, space, queries[q], n_results, rows)
            for q in range(len(queries))]


def merge_query(snap: Mapping[str, Any], ov: Overlay, queries: np.ndarray[Any, Any],
                n_results: int, space: str, include: Sequence[str], where: Any = None,
                where_document: Any = None, ids: Sequence[str] | None = None,
                near: Neighbours | None = None) -> Columns:
    """Combine the snapshot's query answer (with distances) and the overlay's search
    (``near``, from :func:`overlay_nearest`; searched here when not given).

    Python rows are built only for the ``n_results`` that are returned.
    """
    if near is None:
        near = overlay_nearest(ov, queries, n_results, space, where, where_document, ids)
    cols = [c for c in ("documents", "metadatas", "embeddings", "uris") if c in include]
    out: Columns = {"ids": []}
    for c in [*cols, "distances"] if "distances" in include else cols:
        out[c] = []
    for q in range(len(queries)):
        # (distance, source, order, id, where): snapshot before tail on exact ties, then
        # each source's own order (deterministic, as a stable sort of both lists).
        cands: list[tuple[float, int, int, str, int]] = []
        snap_ids = snap["ids"][q] if snap.get("ids") else []
        for j, rid in enumerate(snap_ids):
            if rid in ov.records:
                continue  # overridden or deleted by the tail
            cands.append((float(snap["distances"][q][j]), 0, j, rid, j))
        idx, dist = near[q]
        for k, (i, d) in enumerate(zip(idx.tolist(), dist.tolist(), strict=True)):
            cands.append((d, 1, k, ov.live[i], i))
        cands.sort(key=lambda t: (t[0], t[1], t[2]))
        top = cands[:n_results]
        out["ids"].append([t[3] for t in top])
        for c in cols:
            out[c].append([snap[c][q][t[4]] if t[1] == 0
                           else _field(ov.records[t[3]], c)  # type: ignore[arg-type]
                           for t in top])
        if "distances" in include:
            out["distances"].append([t[0] for t in top])
    return out


def check_query_ids(ov: Overlay, ids: Sequence[str] | None, where: Any, where_document: Any,
                    in_snapshot: Callable[[list[str]], Iterable[str]],
                    snapshot_has_index: Callable[[], bool], error: ChromasnapError) -> None:
    """Raise ``error`` where Chroma's query fails: ``ids`` naming a record that is not there.

    Chroma checks every id of a query's ``ids`` against its index when no
    ``where``/``where_document`` filter narrows them first, and fails on one
    it does not find (a deleted record included) — once the collection has
    an index at all, i.e. once a vector was written. ``in_snapshot`` says
    which ids the snapshot holds.
    """
    if ids is None or where or where_document:
        return
    live = ov.positions
    ask = list(dict.fromkeys(rid for rid in ids if rid not in ov.records))
    found = set(in_snapshot(ask)) if ask else set()
    if all(rid in live or rid in found for rid in ids):
        return
    if ov.inserts or snapshot_has_index():
        raise error


def _interleave(base: Sequence[str], stays: Sequence[str],
                positions: Positions) -> list[tuple[str, bool]]:
    """Merge ``stays`` (tail records) into ``base`` (snapshot order) by snapshot position.

    Binary search per staying record, so positions are looked up for
    ``O(len(stays) * log(len(base)))`` snapshot ids, not for all of them.
    """
    if not stays:
        return [(rid, False) for rid in base]
    pos = dict(positions(stays))
    known: dict[str, int] = {}

    def at(i: int) -> int:
        rid = base[i]
        if rid not in known:
            known.update(positions([rid]))
        return known.get(rid, -1)

    out: list[tuple[str, bool]] = []
    lo = 0
    # A record without a position (it cannot have none: it is in the snapshot) goes last.
    for rid in sorted(stays, key=lambda r: pos.get(r, sys.maxsize)):
        p, hi, i = pos.get(rid, sys.maxsize), len(base), lo
        while i < hi:
            mid = (i + hi) // 2
            if at(mid) < p:
                i = mid + 1
            else:
                hi = mid
        out += [(r, False) for r in base[lo:i]]
        out.append((rid, True))
        lo = i
    out += [(r, False) for r in base[lo:]]
    return out


def get_plan(snap_ids: Sequence[str], ov: Overlay, where: Any, where_document: Any,
             ids: Sequence[str] | None, offset: int, limit: int | None,
             positions: Positions) -> list[tuple[str, bool]]:
    """Which ids a get returns, in Chroma's order: ``(id, from_tail)``.

    ``snap_ids`` are the snapshot's matching ids in its order. The tail's
    matching live records that the snapshot held all along go where the
    snapshot has them (``positions`` gives snapshot ids' position keys, in
    the same order); the ones the tail created follow, in creation order.
    """
    base = [rid for rid in snap_ids if rid not in ov.records]
    rows = matching_rows(ov, where, where_document, ids)
    matching = ov.live if rows is None else [ov.live[i] for i in rows.tolist()]
    merged = _interleave(base, [rid for rid in matching if rid in ov.stays], positions)
    merged += [(rid, True) for rid in matching if rid not in ov.stays]
    end = None if limit is None else offset + limit
    return merged[offset:end]


def tail_columns(ov: Overlay, rids: Sequence[str], include: Sequence[str]) -> dict[str, list[Any]]:
    """The requested columns for tail records."""
    out: dict[str, list[Any]] = {}
    for c in ("documents", "metadatas", "embeddings", "uris"):
        if c in include:
            out[c] = [_field(ov.records[r], c) for r in rids]  # type: ignore[arg-type]
    return out
