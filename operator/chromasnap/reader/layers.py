"""What a read is answered from: the local chromadb copy with overlays stacked on it.

A reader serves a version as layers: its chromadb copy of the base
(:class:`ChromaSource`), the version's segments on top of it as one
overlay, and the fresh tail's overlay on top of that (each an
:class:`OverlaySource` over the layer below). Every layer answers the same
questions — query, get, count, which records it holds, which a filter
matches, where a record sits in storage order — so an overlay only ever
merges itself into what the layer below answers (``freshview``'s rules).

Keeping the segments a layer of their own is what lets the tail change
without touching them: a new delta rebuilds only the tail's (small)
overlay, and the segments' overlay, its search structures and its cached
filter masks live as long as the version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import numpy as np

from chromasnap.engine import reads
from chromasnap.engine.errors import InvalidArgument
from chromasnap.engine.merge import Lookup, Record
from chromasnap.engine.ops import DeleteFilter
from chromasnap.reader import freshview
from chromasnap.reader.freshview import Overlay, Positions

COLUMNS = ("documents", "metadatas", "embeddings", "uris")
#: Where an overlay's index searches run while the calling thread asks the layer below.
#: Its tasks never wait on it, so a query cannot deadlock it.
_BESIDE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="overlay-search")
#: Storage-order keys of the records an overlay created start here, after every key
#: of the layer below (chromadb's row ids, far smaller), in creation order.
CREATED_KEYS = 1 << 48


class Source(Protocol):
    """One layer of a version, as reads see it (answers in chromadb's raw format)."""

    def query(self, embeddings: Any, n_results: int, *, where: Any, where_document: Any,
              ids: Sequence[str] | None, include: Sequence[str]) -> Mapping[str, Any]:
        """Nearest neighbours, one list per query row."""

    def get(self, *, ids: Sequence[str] | None = None, where: Any = None,
            where_document: Any = None, limit: int | None = None, offset: int = 0,
            include: Sequence[str] = ()) -> Mapping[str, Any]:
        """Records by id and/or filter, in storage order."""

    def count(self) -> int:
        """Records held."""

    def has_index(self) -> bool:
        """Whether a vector was ever written (Chroma's id checks depend on it)."""

    def lookup(self, ids: list[str]) -> Mapping[str, Record]:
        """The records of ``ids`` held, as the merge rules see them."""

    def matching(self, f: DeleteFilter) -> list[str]:
        """Ids of the records a filtered delete matches (in storage order when limited)."""

    def positions(self) -> AbstractContextManager[Positions]:
        """A function giving held ids' storage-order keys (smaller first)."""


class ChromaSource:
    """The local chromadb copy, with a lookup that remembers records (``LocalCopy.records``)."""

    def __init__(self, collection: Any, lookup: Lookup) -> None:
        self.collection = collection
        self.lookup = lookup

    def query(self, embeddings: Any, n_results: int, *, where: Any, where_document: Any,
              ids: Sequence[str] | None, include: Sequence[str]) -> Mapping[str, Any]:
        """See :class:`Source`."""
        return reads.query_raw(self.collection, embeddings, n_results, where=where,
                               where_document=where_document, ids=ids, include=include)

    def get(self, *, ids: Sequence[str] | None = None, where: Any = None,
            where_document: Any = None, limit: int | None = None, offset: int = 0,
            include: Sequence[str] = ()) -> Mapping[str, Any]:
        """See :class:`Source`."""
        return reads.get_raw(self.collection, ids=ids, where=where,
                             where_document=where_document, limit=limit, offset=offset,
                             include=include)

    def count(self) -> int:
        """See :class:`Source`."""
        return reads.count_raw(self.collection)

    def has_index(self) -> bool:
        """See :class:`Source`."""
        return reads.has_index(self.collection)

    def matching(self, f: DeleteFilter) -> list[str]:
        """See :class:`Source`."""
        return list(reads.state_matching(self.collection)(f))

    def positions(self) -> AbstractContextManager[Positions]:
        """See :class:`Source`."""
        return reads.row_positions(self.collection)


class OverlaySource:
    """An overlay merged over the layer below it (``freshview``'s rules)."""

    def __init__(self, lower: Source, ov: Overlay, space: str) -> None:
        self.lower = lower
        self.ov = ov
        self.space = space

    def count(self) -> int:
        """See :class:`Source`."""
        return freshview.count(self.lower.count(), self.ov)

    def has_index(self) -> bool:
        """See :class:`Source`."""
        return self.ov.inserts or self.lower.has_index()

    def lookup(self, ids: list[str]) -> Mapping[str, Record]:
        """See :class:`Source`."""
        return freshview.lookup_over(self.lower.lookup, self.ov)(ids)

    def matching(self, f: DeleteFilter) -> list[str]:
        """See :class:`Source`."""
        return list(freshview.matching_over(self.lower.matching, self.ov)(f))

    @contextmanager
    def positions(self) -> Iterator[Positions]:
        """See :class:`Source`: the layer below's keys; the overlay's created records after."""
        created = {rid: CREATED_KEYS + i for i, rid in enumerate(self.ov.created)}
        with self.lower.positions() as below:
            def at(ids: Sequence[str]) -> Mapping[str, int]:
                mine = {rid: created[rid] for rid in ids if rid in created}
                rest = [rid for rid in ids if rid not in created]
                return {**below(rest), **mine} if rest else mine
            yield at

    def query(self, embeddings: Any, n_results: int, *, where: Any, where_document: Any,
              ids: Sequence[str] | None, include: Sequence[str]) -> Mapping[str, Any]:
        """See :class:`Source`."""
        ov = self.ov
        queries = np.asarray(embeddings)
        if ov.live and ov.matrix.shape[1] != queries.shape[1]:
            # Before the first compaction the API knows no dimension to check against;
            # the tail's vectors have one, and Chroma words the mismatch like this.
            raise InvalidArgument(
                f"Collection expecting embedding with dimension of {ov.matrix.shape[1]}, "
                f"got {queries.shape[1]}")
        freshview.check_query_ids(
            ov, ids, where, where_document,
            lambda asked: self.lower.get(ids=asked)["ids"],
            self.lower.has_index, reads.id_not_found())
        wanted = list(dict.fromkeys([*include, "distances"]))
        lower_ids = None if ids is None else [i for i in ids if i not in ov.records]
        near: Future[freshview.Neighbours] | None = None
        if ov.served is not None:
            # Segment indexes and chromadb's search both release the GIL: searching the
            # overlay beside the layer below takes the longer of the two, not the sum.
            near = _BESIDE.submit(freshview.overlay_nearest, ov, queries, n_results,
                                  self.space, where, where_document, ids)
        if lower_ids == []:
            res: Mapping[str, Any] = {"ids": [[] for _ in range(len(queries))]}
        else:
            # Candidates without columns: the overlay's over-fetch (one per record it
            # overrides) would otherwise fetch documents and metadata for all of them.
            def candidates(k: int) -> Mapping[str, Any]:
                return self.lower.query(embeddings, k, where=where,
                                        where_document=where_document, ids=lower_ids,
                                        include=["distances"])

            res = self._survivors(_candidates(candidates, ov, n_results), n_results, wanted)
        return freshview.merge_query(res, ov, queries, n_results, self.space, include, where,
                                     where_document, ids,
                                     near=None if near is None else near.result())

    def _survivors(self, res: Mapping[str, Any], n_results: int,
                   include: list[str]) -> dict[str, Any]:
        """``res`` cut to the candidates that can reach the top ``n_results``, with the
        columns ``include`` asks for (one get for all rows)."""
        kept = freshview.snapshot_survivors(res["ids"], self.ov, n_results)
        rows = [[res["ids"][q][j] for j in js] for q, js in enumerate(kept)]
        out: dict[str, Any] = {
            "ids": rows,
            "distances": [[res["distances"][q][j] for j in js] for q, js in enumerate(kept)]}
        cols = [c for c in COLUMNS if c in include]
        ids = list(dict.fromkeys(rid for row in rows for rid in row))
        if cols and ids:
            got = self.lower.get(ids=ids, include=cols)
            at = {rid: i for i, rid in enumerate(got["ids"])}
            for c in cols:
                out[c] = [[got[c][at[rid]] for rid in row] for row in rows]
        else:
            for c in cols:
                out[c] = [[] for _ in rows]
        return out

    def get(self, *, ids: Sequence[str] | None = None, where: Any = None,
            where_document: Any = None, limit: int | None = None, offset: int = 0,
            include: Sequence[str] = ()) -> Mapping[str, Any]:
        """See :class:`Source`."""
        if limit is not None and limit < 0:
            raise InvalidArgument("limit must not be negative")
        lower_ids = self.lower.get(ids=ids, where=where, where_document=where_document)["ids"]
        with self.lower.positions() as positions:
            chosen = freshview.get_plan(lower_ids, self.ov, where, where_document, ids,
                                        offset, limit, positions)
        return self._columns(chosen, list(include))

    def _columns(self, chosen: Sequence[tuple[str, bool]], include: list[str]) -> dict[str, Any]:
        from_lower = [rid for rid, mine in chosen if not mine]
        lower_cols = (self.lower.get(ids=from_lower, include=include)
                      if from_lower and include else {"ids": from_lower})
        pos = {rid: i for i, rid in enumerate(lower_cols["ids"])}
        mine_ids = [rid for rid, mine in chosen if mine]
        mine_cols = freshview.tail_columns(self.ov, mine_ids, include)
        mpos = {rid: i for i, rid in enumerate(mine_ids)}
        out: dict[str, Any] = {"ids": [rid for rid, _ in chosen]}
        for c in include:
            if c not in COLUMNS:
                continue
            out[c] = [lower_cols[c][pos[rid]] if not mine else mine_cols[c][mpos[rid]]
                      for rid, mine in chosen]
        return out


def _candidates(query: Any, ov: Overlay, n_results: int) -> Mapping[str, Any]:
    """The lower layer's candidates: enough that ``n_results`` survive the overlay.

    Asking for ``n + |overlay ∩ lower|`` always suffices but makes every
    query fetch (and walk in Python) one candidate per record the overlay
    updates or deletes. Candidates come sorted by distance, so when a
    smaller ask already leaves ``n_results`` per row (or the layer ran out),
    its survivors are the same top ``n``; only otherwise is the full ask made.
    """
    full = freshview.snapshot_k(n_results, ov)
    first = min(full, 2 * n_results + 16)
    res: Mapping[str, Any] = query(first)
    if first == full:
        return res
    kept = freshview.snapshot_survivors(res["ids"], ov, n_results)
    if all(len(k) == n_results or len(row) < first
           for k, row in zip(kept, res["ids"], strict=True)):
        return res
    out: Mapping[str, Any] = query(full)
    return out


def on(lower: Source, ov: Overlay, space: str) -> Source:
    """``ov`` over ``lower``; just ``lower`` when the overlay changes nothing."""
    return lower if ov.empty else OverlaySource(lower, ov, space)
