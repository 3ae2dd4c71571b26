"""Which collections a pool process serves right now, and the compaction of those written to.

A collection's writer is made on its first write and kept (it holds no
records). Its reader is loaded on its first read (its first version created if
it has none), kept while it is among the ``max_loaded`` most recently read and
the loaded versions fit ``max_loaded_bytes``, and closed beyond that. Nothing is
held for a collection that is neither written nor read, so a process starts,
and serves its first request, in the same time whatever the number of
collections in the pool.

Every collection that took a write since its last compaction is *dirty*; a
compaction pass folds each once (``compaction_concurrency`` at a time, each
behind its own pointer fence), whether loaded or not, so a pass never lists
the pool. One collection's failure is recorded and retried on the
next pass; it does not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings
from chromasnap.logs import fields
from chromasnap.pool import metrics
from chromasnap.pool.member import CollectionWriter, LoadedReader, PoolOptions, compactor_for
from chromasnap.storage.store import ObjectStore
from chromasnap.writer.groupcommit import process_writer_id

log = logging.getLogger("chromasnap.pool")


class Members:
    """The writers and loaded readers of one pool process, and its dirty set."""

    def __init__(self, store: ObjectStore, opts: PoolOptions) -> None:
        self.store = store
        self.opts = opts
        self.writer_id = process_writer_id(opts.identity)
        self._writers: dict[str, CollectionWriter] = {}
        self._readers: OrderedDict[str, LoadedReader] = OrderedDict()
        #: Readers being loaded: they already take pushed deltas.
        self._loading: dict[str, LoadedReader] = {}
        self._ready: dict[str, asyncio.Future[LoadedReader]] = {}
        self._unloading: set[asyncio.Future[None]] = set()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        #: Collections whose last compaction failed, and why (cleared by a success).
        self.failures: dict[str, str] = {}

    # -- writes ----------------------------------------------------------------------

    async def writer(self, settings: CollectionSettings) -> CollectionWriter:
        """The collection's writer (made and started on first use)."""
        w = self._writers.get(settings.name)
        if w is None:
            w = CollectionWriter(self.store, settings, self.opts, self.writer_id, self._durable)
            self._writers[settings.name] = w
            await w.writer.start()
            self._gauge()
        return w

    async def _durable(self, cid: str, name: str, data: bytes) -> None:
        # Before the write is acknowledged: to the reader loaded or being loaded, if any.
        reader = self._readers.get(cid) or self._loading.get(cid)
        if reader is not None:
            await asyncio.to_thread(reader.take, name, data)
        self._mark(cid)

    def _mark(self, cid: str) -> None:
        with self._dirty_lock:
            self._dirty.add(cid)

    # -- reads -----------------------------------------------------------------------

    async def reader(self, settings: CollectionSettings) -> LoadedReader:
        """The collection's loaded reader, loading it first if needed; concurrent first
        reads share one load."""
        cid = settings.name
        reader = self._readers.get(cid)
        if reader is not None:
            self._readers.move_to_end(cid)
            return reader
        pending = self._ready.get(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[LoadedReader] = asyncio.get_running_loop().create_future()
        self._ready[cid] = fut
        t0 = time.perf_counter()
        try:
            reader = LoadedReader(self.store, settings, self.opts)
            self._loading[cid] = reader  # from now on, new deltas are pushed to it
            await asyncio.to_thread(reader.load)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: a load nobody else awaited is not "never retrieved"
            raise
        finally:
            self._loading.pop(cid, None)
            del self._ready[cid]
        fut.set_result(reader)
        self._readers[cid] = reader
        if reader.pending():
            # Deltas no compaction has folded (written before a restart, or by another
            # process): this pass folds them, as it folds what this process wrote.
            self._mark(cid)
        metrics.POOL_LOADS.inc()
        log.info("collection loaded", extra=fields(
            collection_id=cid, loaded=len(self._readers),
            seconds=round(time.perf_counter() - t0, 3), bytes=reader.size_bytes()))
        for old in self._over_budget():
            del self._readers[old.cid]
            metrics.POOL_UNLOADS.inc()
            # Closed beside this read, not before it: its answer need not wait.
            task = asyncio.ensure_future(asyncio.to_thread(self._unload, old))
            self._unloading.add(task)
            task.add_done_callback(self._unloading.discard)
        self._gauge()
        return reader

    def _over_budget(self) -> list[LoadedReader]:
        """The least recently read readers to close so that the rest fit the budget
        (the one just read always stays)."""
        readers = list(self._readers.values())
        sizes = [r.size_bytes() for r in readers]
        total, out = sum(sizes), list[LoadedReader]()
        for reader, size in zip(readers[:-1], sizes[:-1], strict=True):
            over_bytes = self.opts.max_loaded_bytes and total > self.opts.max_loaded_bytes
            if len(readers) - len(out) <= self.opts.max_loaded and not over_bytes:
                break
            out.append(reader)
            total -= size
        return out

    def _gauge(self) -> None:
        metrics.POOL_LOADED.set(len(self._readers))
        metrics.POOL_LOADED_BYTES.set(sum(r.size_bytes() for r in self._readers.values()))
        metrics.POOL_WRITERS.set(len(self._writers))
        metrics.POOL_COMPACTION_FAILURES.set(len(self.failures))

    @staticmethod
    def _unload(reader: LoadedReader) -> None:
        reader.close()
        log.info("collection unloaded (least recently used)",
                 extra=fields(collection_id=reader.cid))

    def refresh_loaded(self) -> None:
        """Poll every loaded collection once (blocking: run in a thread): what other
        processes wrote or compacted becomes visible, as a reader's poll makes it."""
        for reader in list(self._readers.values()):
            try:
                reader.refresh()
            except Exception:
                log.exception("refreshing a loaded collection failed",
                              extra=fields(collection_id=reader.cid))

    # -- lifecycle -------------------------------------------------------------------

    async def drop(self, cid: str) -> None:
        """Forget a deleted collection: flush its writer, close its reader; it is no
        longer compacted."""
        writer = self._writers.pop(cid, None)
        reader = self._readers.pop(cid, None)
        with self._dirty_lock:
            self._dirty.discard(cid)
        self.failures.pop(cid, None)
        if writer is not None:
            await writer.writer.stop()
        if reader is not None:
            await asyncio.to_thread(reader.close)
        self._gauge()

    async def close(self) -> None:
        """Flush every writer and close every reader (shutdown)."""
        writers, self._writers = list(self._writers.values()), {}
        await asyncio.gather(*(w.writer.stop() for w in writers))
        while self._readers:
            _, reader = self._readers.popitem()
            await asyncio.to_thread(reader.close)
        if self._unloading:
            await asyncio.gather(*self._unloading)

    # -- compaction ------------------------------------------------------------------

    def compact_dirty(self, settings_of: Callable[[str], CollectionSettings | None]
                      ) -> dict[str, CompactionResult]:
        """Fold every dirty collection once (blocking: run in a thread).

        ``settings_of`` gives a collection's settings from the catalog, or ``None``
        once it is deleted (then it is skipped: reclaiming takes its bytes).
        """
        with self._dirty_lock:
            batch, self._dirty = sorted(self._dirty), set()
        todo = [(cid, st) for cid in batch if (st := settings_of(cid)) is not None]
        with ThreadPoolExecutor(self.opts.compaction_concurrency,
                                thread_name_prefix="pool-compact") as pool:
            results = dict(zip((cid for cid, _ in todo),
                               pool.map(lambda t: self._compact(*t), todo), strict=True))
        for cid, res in results.items():
            if res.result == "failed":
                self.failures[cid] = f"{res.reason}: {res.message}"
            else:
                self.failures.pop(cid, None)
            if res.result == "failed" or res.pending_deltas or res.reason in ("LockHeld",
                                                                               "Fenced"):
                self._mark(cid)  # the next pass tries again
        metrics.POOL_COMPACTION_FAILURES.set(len(self.failures))
        return results

    def _compact(self, cid: str, settings: CollectionSettings) -> CompactionResult:
        try:
            res = compactor_for(self.store, settings, self.opts).run()
            reader = self._readers.get(cid)
            if reader is not None:
                reader.refresh()
            return res
        except Exception as e:  # one collection's trouble must not stop the others
            log.exception("compaction of a pool collection failed",
                          extra=fields(collection_id=cid))
            return CompactionResult(result="failed", reason="InternalError",
                                    message=f"{type(e).__name__}: {e}")
