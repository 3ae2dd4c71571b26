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
from collections.abc import Mapping
from typing import Any

from chromasnap.api.models import GetRequest, QueryRequest
from chromasnap.api.responses import collection_model_json
from chromasnap.engine.errors import InvalidArgument, ReadTimeout, Unavailable
from chromasnap.logs import fields
from chromasnap.reader import layers
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

    def _source(self, snap: LoadedSnapshot) -> layers.Source:
        """What reads answer from: the version's layers, with the tail's overlay on top."""
        lower = snap.source
        if self.tail is None:
            return lower
        ov = self.tail.overlay(snap.lineage, snap.versions, lower.lookup,
                               base_matching=lower.matching,
                               retained=snap.manifest.retained_filters,
                               space=snap.space)
        return layers.on(lower, ov, snap.space)

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
            return self._source(snap).count()

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
            return self._source(snap).query(
                req.query_embeddings, req.n_results, where=req.where,
                where_document=req.where_document, ids=req.ids, include=list(req.include))

    async def get(self, req: GetRequest) -> Mapping[str, Any]:
        """Records by id and/or filter, with limit and offset."""
        await self.wait_visible(req.read_after)
        return await asyncio.to_thread(self._get, req)

    def _get(self, req: GetRequest) -> Mapping[str, Any]:
        if req.limit is not None and req.limit < 0:
            raise InvalidArgument("limit must not be negative")
        with self._use() as snap:
            return self._source(snap).get(ids=req.ids, where=req.where,
                                          where_document=req.where_document, limit=req.limit,
                                          offset=req.offset, include=list(req.include))
