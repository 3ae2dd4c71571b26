"""Which collections a pool process has loaded, and the compaction of those written to.

A collection is loaded on its first use (its first version created if it has
none), kept while it is among the ``max_loaded`` most recently used, and closed
beyond that: its writer flushes, its reader lets go of its chromadb files. Nothing
is held for a collection that is not loaded, so a process starts, and serves its
first request, in the same time whatever the number of collections in the pool.

Every collection that took a write since its last compaction is *dirty*; a
compaction pass folds each, one at a time, whether still loaded or not, so a
pass never lists the pool. One collection's failure is recorded and retried on
the next pass; it does not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings
from chromasnap.logs import fields
from chromasnap.pool.member import Member, PoolOptions, compactor_for
from chromasnap.storage.store import ObjectStore
from chromasnap.writer.groupcommit import process_writer_id

log = logging.getLogger("chromasnap.pool")


class Members:
    """The loaded collections of one pool process (an LRU), and its dirty set."""

    def __init__(self, store: ObjectStore, opts: PoolOptions) -> None:
        self.store = store
        self.opts = opts
        self.writer_id = process_writer_id(opts.identity)
        self._loaded: OrderedDict[str, Member] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Member]] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        #: Collections whose last compaction failed, and why (cleared by a success).
        self.failures: dict[str, str] = {}

    def loaded(self) -> list[str]:
        """Ids of the loaded collections, least recently used first."""
        return list(self._loaded)

    async def get(self, settings: CollectionSettings) -> Member:
        """The loaded member for ``settings`` (its id is ``settings.name``), loading it first
        if needed; concurrent first uses share one load."""
        cid = settings.name
        member = self._loaded.get(cid)
        if member is not None:
            self._loaded.move_to_end(cid)
            return member
        pending = self._loading.get(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Member] = asyncio.get_running_loop().create_future()
        self._loading[cid] = fut
        try:
            member = Member(self.store, settings, self.opts, self.writer_id, self._mark)
            await asyncio.to_thread(member.load)
            await member.start()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a load nobody else awaited is not "never retrieved"
            raise
        finally:
            del self._loading[cid]
        fut.set_result(member)
        self._loaded[cid] = member
        log.info("collection loaded", extra=fields(collection_id=cid,
                                                   loaded=len(self._loaded)))
        while len(self._loaded) > self.opts.max_loaded:
            old_id, old = self._loaded.popitem(last=False)
            await old.close()
            log.info("collection unloaded (least recently used)",
                     extra=fields(collection_id=old_id))
        return member

    async def drop(self, cid: str) -> None:
        """Forget a deleted collection: close it if loaded; it is no longer compacted."""
        member = self._loaded.pop(cid, None)
        with self._dirty_lock:
            self._dirty.discard(cid)
        self.failures.pop(cid, None)
        if member is not None:
            await member.close()

    async def close(self) -> None:
        """Close every loaded member (shutdown)."""
        while self._loaded:
            _, member = self._loaded.popitem()
            await member.close()

    def refresh_loaded(self) -> None:
        """Poll every loaded collection once (blocking: run in a thread): what other
        processes wrote or compacted becomes visible, as a reader's poll makes it."""
        for member in list(self._loaded.values()):
            try:
                member.refresh()
            except Exception:
                log.exception("refreshing a loaded collection failed",
                              extra=fields(collection_id=member.cid))

    def _mark(self, cid: str) -> None:
        with self._dirty_lock:
            self._dirty.add(cid)

    def compact_dirty(self, settings_of: Callable[[str], CollectionSettings | None]
                      ) -> dict[str, CompactionResult]:
        """Fold every dirty collection once (blocking: run in a thread).

        ``settings_of`` gives a collection's settings from the catalog, or ``None``
        once it is deleted (then it is skipped: reclaiming takes its bytes).
        """
        with self._dirty_lock:
            batch, self._dirty = sorted(self._dirty), set()
        results: dict[str, CompactionResult] = {}
        for cid in batch:
            settings = settings_of(cid)
            if settings is None:
                continue
            member = self._loaded.get(cid)
            try:
                res = (member.compact() if member is not None
                       else compactor_for(self.store, settings, self.opts).run())
            except Exception as e:  # one collection's trouble must not stop the others
                log.exception("compaction of a pool collection failed",
                              extra=fields(collection_id=cid))
                res = CompactionResult(result="failed", reason="InternalError",
                                       message=f"{type(e).__name__}: {e}")
            results[cid] = res
            if res.result == "failed":
                self.failures[cid] = f"{res.reason}: {res.message}"
            else:
                self.failures.pop(cid, None)
            if res.result == "failed" or res.pending_deltas or res.reason in ("LockHeld",
                                                                               "Fenced"):
                self._mark(cid)  # the next pass tries again
        return results
