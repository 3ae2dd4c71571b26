"""The reader's answers: snapshot reads, fresh reads over the delta tail, read-your-writes.

``ReaderBackend`` implements ``httpapi.ReadBackend``. Every read borrows the
current snapshot for its whole duration (``SnapshotReader.use``), so a swap
never pulls a snapshot out from under a running query. The version's
segments not yet folded into the local copy are merged in as an overlay
(``freshview``); with read level ``fresh`` the tail's writes go on top of
them; with ``snapshot`` the version answers alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chromasnap.api.models import GetRequest, QueryRequest
from chromasnap.api.responses import collection_model_json
from chromasnap.engine import reads
from chromasnap.engine.errors import InvalidArgument, ReadTimeout, Unavailable
from chromasnap.logs import fields
from chromasnap.reader import freshview
from chromasnap.reader.freshness import Freshness
from chromasnap.reader.snapshot import LoadedSnapshot, SnapshotReader
from chromasnap.reader.tail import DeltaTail
from chromasnap.storage import deltas
from chromasnap.storage.store import NotFound, StoreError

log = logging.getLogger("chromasnap.reader")


class ReaderBackend:
    """Reads from the loaded snapshot, merged with the delta tail when ``tail`` is given."""

    def __init__(self, reader: SnapshotReader, tail: DeltaTail | None,
                 read_after_timeout_s: float = 10.0) -> None:
        self.reader = reader
        self.tail = tail
        #: The fresh-read guarantee (set by the reader process when it runs one): a fresh
        #: read first makes sure the tail holds every write acknowledged before it started.
        self.freshness: Freshness | None = None
        self.read_after_timeout_s = read_after_timeout_s
        self._model: tuple[str, dict[str, Any]] | None = None
        #: Newest read-after token whose earlier writes a LIST has made visible.
        self._caught_up_to = ""

    # -- collection ------------------------------------------------------------------

    def collection_model(self) -> Mapping[str, Any]:
        """The collection's JSON (same on every reader and writer of the collection)."""
        snap = self.reader.current
        if snap is None:
            raise Unavailable("no snapshot loaded yet; the reader becomes ready once the "
                              "first compaction has published one")
        if snap.manifest.collection.model is not None:
            # Written by the compactor: byte-for-byte what writers serve too.
            return snap.manifest.collection.model
        if self._model is None or self._model[0] != snap.manifest.version:
            with self.reader.use() as s:
                self._model = (s.manifest.version, collection_model_json(s.collection))
        return self._model[1]

    def _overlay(self, snap: LoadedSnapshot) -> freshview.Overlay:
        if self.tail is None:
            return snap.pending
        return self.tail.overlay(snap.lineage, snap.versions, snap.local.records,
                                 under=snap.pending,
                                 base_matching=reads.state_matching(snap.collection),
                                 retained=snap.manifest.retained_filters,
                                 space=snap.manifest.collection.settings.space.value)

    # -- read-your-writes --------------------------------------------------------------

    def _visible(self, token: str) -> bool:
        snap = self.reader.current
        if snap is None:
            return self.tail is not None and token in self.tail.names()
        if token in snap.lineage.contained:
            return True
        return self.tail is not None and self.tail.holds(token, snap.lineage)

    async def wait_visible(self, token: str | None) -> None:
        """Return once the write named by ``token`` is visible here, or raise ReadTimeout;
        and, with the fresh-read guarantee on, every write acknowledged before this call.

        A token names a delta that was durable before the token was issued, so
        a delta that no longer exists was compacted and cleaned up: the
        current pointer's snapshot contains it.
        """
        if self.freshness is not None and not self.freshness.fast():
            await asyncio.to_thread(self.freshness.barrier)
        if token is None:
            return
        if not self._visible(token):
            await self._wait_for(token)
        if self.tail is not None and token > self._caught_up_to:
            await asyncio.to_thread(self._catch_up, token)

    def _catch_up(self, token: str) -> None:
        """Make every write acknowledged before ``token``'s visible too (session order).

        A token names one delta; the same client's earlier writes may sit in
        other deltas (other writers, or pushes still in flight). They were
        durable before this write was acknowledged, so one LIST now sees them.
        Done once per new token, not per read.
        """
        assert self.tail is not None
        try:
            self.tail.poll()
        except StoreError as e:
            log.warning("read-after catch-up LIST failed", extra=fields(error=str(e)))
            return
        self._caught_up_to = max(self._caught_up_to, token)

    async def _wait_for(self, token: str) -> None:
        try:
            deltas.parse_name(token)
        except ValueError as e:
            raise InvalidArgument(f"read-after token {token!r} is not a chromasnap token") from e
        deadline = time.monotonic() + self.read_after_timeout_s
        pause = 0.005
        while True:
            if self.tail is not None:
                if await asyncio.to_thread(self.tail.fetch, token):
                    return
                gone = True
            else:
                gone = not await asyncio.to_thread(self._delta_exists, token)
            swapped = await asyncio.to_thread(self.reader.refresh)
            if self._visible(token) or (gone and self.reader.current is not None):
                return
            if time.monotonic() >= deadline:
                raise ReadTimeout(
                    f"write {token} is not visible on this reader after "
                    f"{self.read_after_timeout_s:g} s (read level "
                    f"{'fresh' if self.tail else 'snapshot'}); retry, or read without the token"
                )
            if not swapped:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.2)

    def _delta_exists(self, token: str) -> bool:
        try:
            self.reader.store.head(deltas.DELTA_PREFIX + token)
            return True
        except NotFound:
            return False

    # -- reads ---------------------------------------------------------------------------

    async def count(self, read_after: str | None) -> int:
        """Visible records."""
        await self.wait_visible(read_after)
        return await asyncio.to_thread(self._count)

    def _count(self) -> int:
        with self._use() as snap:
            return freshview.count(reads.count_raw(snap.collection), self._overlay(snap))

    def _use(self) -> Any:
        try:
            return self.reader.use()
        except LookupError as e:
            raise Unavailable("no snapshot loaded yet") from e

    async def query(self, req: QueryRequest) -> Mapping[str, Any]:
        """Nearest neighbours from snapshot and tail."""
        await self.wait_visible(req.read_after)
        return await asyncio.to_thread(self._query, req)

    def _query(self, req: QueryRequest) -> Mapping[str, Any]:
        with self._use() as snap:
            ov = self._overlay(snap)
            space = snap.manifest.collection.settings.space.value
            include = list(req.include)
            if ov.empty:
                return reads.query_raw(snap.collection, req.query_embeddings, req.n_results,
                                       where=req.where, where_document=req.where_document,
                                       ids=req.ids, include=include)
            if ov.live and ov.matrix.shape[1] != req.query_embeddings.shape[1]:
                # Before the first compaction the API knows no dimension to check against;
                # the tail's vectors have one, and Chroma words the mismatch like this.
                raise InvalidArgument(
                    f"Collection expecting embedding with dimension of {ov.matrix.shape[1]}, "
                    f"got {req.query_embeddings.shape[1]}")
            freshview.check_query_ids(
                ov, req.ids, req.where, req.where_document,
                lambda ids: reads.get_raw(snap.collection, ids=ids)["ids"],
                lambda: reads.has_index(snap.collection), reads.id_not_found())
            wanted = list(dict.fromkeys([*include, "distances"]))
            snap_ids = None if req.ids is None else [i for i in req.ids if i not in ov.records]
            if snap_ids == []:
                res: Mapping[str, Any] = {"ids": [[] for _ in range(len(req.query_embeddings))]}
            else:
                # Candidates without columns: the overlay's over-fetch (one per record it
                # overrides) would otherwise fetch documents and metadata for all of them.
                def candidates(k: int) -> Mapping[str, Any]:
                    return reads.query_raw(
                        snap.collection, req.query_embeddings, k, where=req.where,
                        where_document=req.where_document, ids=snap_ids,
                        include=["distances"])

                res = self._survivors(snap, self._candidates(candidates, ov, req.n_results),
                                      ov, req.n_results, wanted)
            return freshview.merge_query(res, ov, np.asarray(req.query_embeddings),
                                         req.n_results, space, include, req.where,
                                         req.where_document, req.ids)

    @staticmethod
    def _candidates(query: Callable[[int], Mapping[str, Any]], ov: freshview.Overlay,
                    n_results: int) -> Mapping[str, Any]:
        """The snapshot's candidates: enough that ``n_results`` survive the overlay.

        Asking for ``n + |overlay ∩ snapshot|`` always suffices but makes every
        query fetch (and walk in Python) one candidate per record the tail
        updates or deletes, so it grew with the tail. Candidates come sorted
        by distance, so when a smaller ask already leaves ``n_results`` per row
        (or the snapshot ran out), its survivors are the same top ``n``; only
        otherwise is the full ask made.
        """
        full = freshview.snapshot_k(n_results, ov)
        first = min(full, 2 * n_results + 16)
        res = query(first)
        if first == full:
            return res
        kept = freshview.snapshot_survivors(res["ids"], ov, n_results)
        if all(len(k) == n_results or len(row) < first
               for k, row in zip(kept, res["ids"], strict=True)):
            return res
        return query(full)

    @staticmethod
    def _survivors(snap: LoadedSnapshot, res: Mapping[str, Any], ov: freshview.Overlay,
                   n_results: int, include: list[str]) -> dict[str, Any]:
        """``res`` cut to the candidates that can reach the top ``n_results``, with the
        columns ``include`` asks for (one get for all rows)."""
        kept = freshview.snapshot_survivors(res["ids"], ov, n_results)
        rows = [[res["ids"][q][j] for j in js] for q, js in enumerate(kept)]
        out: dict[str, Any] = {
            "ids": rows,
            "distances": [[res["distances"][q][j] for j in js] for q, js in enumerate(kept)]}
        cols = [c for c in ("documents", "metadatas", "embeddings", "uris") if c in include]
        ids = list(dict.fromkeys(rid for row in rows for rid in row))
        if cols and ids:
            got = reads.get_raw(snap.collection, ids=ids, include=cols)
            at = {rid: i for i, rid in enumerate(got["ids"])}
            for c in cols:
                out[c] = [[got[c][at[rid]] for rid in row] for row in rows]
        else:
            for c in cols:
                out[c] = [[] for _ in rows]
        return out

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """Records by id and/or filter, with limit and offset."""
        await self.wait_visible(req.read_after)
        return await asyncio.to_thread(self._get, req)

    def _get(self, req: GetRequest) -> Mapping[str, Any]:
        if req.limit is not None and req.limit < 0:
            raise InvalidArgument("limit must not be negative")
        with self._use() as snap:
            ov = self._overlay(snap)
            include = list(req.include)
            if ov.empty:
                return reads.get_raw(snap.collection, ids=req.ids, where=req.where,
                                     where_document=req.where_document, limit=req.limit,
                                     offset=req.offset, include=include)
            snap_ids = reads.get_raw(snap.collection, ids=req.ids, where=req.where,
                                     where_document=req.where_document)["ids"]
            with reads.row_positions(snap.collection) as positions:
                chosen = freshview.get_plan(snap_ids, ov, req.where, req.where_document,
                                            req.ids, req.offset, req.limit, positions)
            return self._columns(snap, ov, chosen, include)

    @staticmethod
    def _columns(snap: LoadedSnapshot, ov: freshview.Overlay,
                 chosen: Sequence[tuple[str, bool]], include: list[str]) -> dict[str, Any]:
        from_snap = [rid for rid, tail in chosen if not tail]
        snap_cols = (reads.get_raw(snap.collection, ids=from_snap, include=include)
                     if from_snap and include else {"ids": from_snap})
        pos = {rid: i for i, rid in enumerate(snap_cols["ids"])}
        tail_ids = [rid for rid, tail in chosen if tail]
        tail_cols = freshview.tail_columns(ov, tail_ids, include)
        tpos = {rid: i for i, rid in enumerate(tail_ids)}
        out: dict[str, Any] = {"ids": [rid for rid, _ in chosen]}
        for c in include:
            if c not in ("documents", "metadatas", "embeddings", "uris"):
                continue
            out[c] = [snap_cols[c][pos[rid]] if not tail else tail_cols[c][tpos[rid]]
                      for rid, tail in chosen]
        return out
