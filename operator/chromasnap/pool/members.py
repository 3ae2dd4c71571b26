"""Which collections a pool process serves right now, and the compaction of those written to.

A collection's writer is made on its first write and kept (it holds no
records). Its reader is loaded on its first read (its first version created if
it has none), kept while it is among the ``max_loaded`` most recently read and
the loaded versions fit ``max_loaded_bytes``, and closed beyond that. Nothing is
held for a collection that is neither written nor read, so a process starts,
and serves its first request, in the same time whatever the number of
collections in the pool.

Writes reach the bucket in the pool's write batches (``batcher.py``, one PUT per
flush window). A compaction pass LISTs the batches (never the pool's
collections), reads them, and folds each collection they name once, with its
parts supplied to its compactor (``compaction_concurrency`` at a time, in a
child process: ``compactproc.py``; each behind its own pointer fence, whether
loaded or not). A batch is deleted once every part of it is folded; a part
whose collection's compaction failed is stored as that collection's own delta
first, so one collection's failure never holds the others' batches, and is
retried on the next pass. A collection whose load found deltas no compaction
folded (a batch's part stored that way, or a single-collection deployment's)
is *dirty* and folded by the next pass too.

Several processes may serve one pool root (replicas of one Deployment). Each
poll (``follow_batches``, every poll interval) LISTs the batches once and reads
the ones another process wrote: their parts go to this process's loaded
readers as its own writes do, so another process's write is visible here
within about one poll interval, not only once a pass folded it. Every pass of
every process folds every batch it LISTs, so two may fold the same one: each
run is fenced by its collection's pointer and skips deltas the version names
as applied, and a write applied twice is superseded by itself (last writer
wins per record), so that costs only work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from chromasnap.compactor.compaction import QUARANTINE_PREFIX
from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings
from chromasnap.engine.chromadir import release_memory
from chromasnap.logs import fields
from chromasnap.pool import metrics
from chromasnap.pool.batcher import WriteBatcher, gone_batches
from chromasnap.pool.compactproc import CompactionWorker, Job, complete
from chromasnap.pool.member import CollectionWriter, LoadedReader, PoolOptions
from chromasnap.storage import batches
from chromasnap.storage.store import NotFound, ObjectStore
from chromasnap.writer.groupcommit import process_writer_id

log = logging.getLogger("chromasnap.pool")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: Bytes of batches one compaction pass reads (and holds) at most; the rest wait a pass.
PASS_MAX_BATCH_BYTES = 256 << 20


class Members:
    """The writers and loaded readers of one pool process, and its dirty set."""

    def __init__(self, store: ObjectStore, opts: PoolOptions, worker: CompactionWorker) -> None:
        self.store = store
        self.opts = opts
        self.worker = worker
        self.writer_id = process_writer_id(opts.identity)
        self.batcher = WriteBatcher(store, self.writer_id, opts.flush)
        #: Set once the batches a previous process left are held (``adopt_left``): loads
        #: wait for it, so they see those writes, and passes fold nothing before it.
        self.adopted = threading.Event()
        self._writers: dict[str, CollectionWriter] = {}
        self._readers: OrderedDict[str, LoadedReader] = OrderedDict()
        #: Readers being loaded: they already take pushed deltas.
        self._loading: dict[str, LoadedReader] = {}
        self._ready: dict[str, asyncio.Future[LoadedReader]] = {}
        #: Closes of evicted readers, and the adoption of left batches: awaited on close.
        self._background: set[asyncio.Future[None]] = set()
        self._closing_bytes = 0  # of the readers being closed
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        #: Collections whose last compaction failed, and why (cleared by a success).
        self.failures: dict[str, str] = {}

    # -- writes ----------------------------------------------------------------------

    async def writer(self, settings: CollectionSettings) -> CollectionWriter:
        """The collection's writer (made and started on first use)."""
        w = self._writers.get(settings.name)
        if w is None:
            w = CollectionWriter(self.store, settings, self.opts, self.writer_id, self.batcher,
                                 self._durable)
            self._writers[settings.name] = w
            await w.writer.start()
            self._gauge()
        return w

    async def _durable(self, cid: str, name: str, data: bytes) -> None:
        # Before the write is acknowledged: to the reader loaded or being loaded, if any.
        reader = self._readers.get(cid) or self._loading.get(cid)
        if reader is not None:
            await asyncio.to_thread(reader.take, name, data)

    async def start(self) -> None:
        """Start storing write batches, and hold the ones a previous process left."""
        await self.batcher.start()
        task = asyncio.ensure_future(asyncio.to_thread(self.adopt_left))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def adopt_left(self) -> None:
        """Hold the batches in the bucket (left by a previous process): until a pass folds
        them, a collection loaded takes their parts too (blocking)."""
        try:
            for key in self._list_batches():
                self._adopt(key)
        finally:
            self.adopted.set()

    def _list_batches(self) -> list[str]:
        return sorted(o.key for o in self.store.list(batches.BATCH_PREFIX)
                      if batches.is_batch_key(o.key))

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
            if not self.adopted.is_set():
                await asyncio.to_thread(self.adopted.wait)
            reader = LoadedReader(self.store, settings, self.opts)
            self._loading[cid] = reader  # from now on, new deltas are pushed to it
            await asyncio.to_thread(self._load, reader)
        except BaseException as e:
            self._loading.pop(cid, None)
            del self._ready[cid]
            fut.set_exception(e)
            fut.exception()  # retrieved: a load nobody else awaited is not "never retrieved"
            raise
        # In ``_readers`` before it leaves ``_loading``: the poll thread pushing another
        # process's delta (``_push``) then always finds it in one of them.
        self._readers[cid] = reader
        del self._loading[cid]
        del self._ready[cid]
        fut.set_result(reader)
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
            size = old.size_bytes()
            self._closing_bytes += size  # (both on the event loop: no lock)
            task = asyncio.ensure_future(asyncio.to_thread(self._unload, old))
            task.add_done_callback(functools.partial(self._closed, size))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._gauge()
        return reader

    def _load(self, reader: LoadedReader) -> None:
        """Load a reader, with its collection's deltas still in write batches (blocking)."""
        reader.load()
        by_batch: dict[str, set[str]] = {}
        for name, key in self.batcher.held(reader.cid).items():
            by_batch.setdefault(key, set()).add(name)
        for key, names in sorted(by_batch.items()):
            try:
                parts = batches.decode(self.store.get(key).data)
            except NotFound:
                reader.refresh()  # folded meanwhile: the newest version holds them
                continue
            for part in parts:
                if part.collection == reader.cid and part.name in names:
                    reader.take(part.name, part.data)

    def _over_budget(self) -> list[LoadedReader]:
        """The least recently read readers to close so that the rest fit the budgets
        (the one just read always stays)."""
        readers = list(self._readers.values())
        sizes = [r.size_bytes() for r in readers]
        total, out = sum(sizes), list[LoadedReader]()
        limit = self.opts.max_loaded_bytes or float("inf")
        if self.opts.memory_budget_bytes:
            # What the process holds besides its loaded versions (catalog, libraries,
            # copies still closing, and whatever a version takes beyond its file size)
            # comes off the budget: measured, so an estimate that is low corrects itself.
            other = _rss_bytes() - total - self._closing_bytes
            limit = min(limit, self.opts.memory_budget_bytes - max(other, 0))
        for reader, size in zip(readers[:-1], sizes[:-1], strict=True):
            if len(readers) - len(out) <= self.opts.max_loaded and total <= limit:
                break
            out.append(reader)
            total -= size
        return out

    def _gauge(self) -> None:
        metrics.POOL_LOADED.set(len(self._readers))
        metrics.POOL_LOADED_BYTES.set(sum(r.size_bytes() for r in self._readers.values()))
        metrics.POOL_WRITERS.set(len(self._writers))
        metrics.POOL_COMPACTION_FAILURES.set(len(self.failures))

    def _closed(self, size: int, _: object) -> None:
        self._closing_bytes -= size

    @staticmethod
    def _unload(reader: LoadedReader) -> None:
        reader.close()
        release_memory()  # so the memory budget sees what the close freed
        log.info("collection unloaded (least recently used)",
                 extra=fields(collection_id=reader.cid))

    def follow_batches(self) -> int:
        """Read the batches other processes of the pool stored since the last poll, and
        forget the held ones that are gone (blocking: run in a thread). One LIST of the
        batches, and one GET per batch this process does not hold yet. Returns the
        number of batches adopted.

        A part of a collection loaded (or being loaded) here goes to its reader, as
        this process's own writes do (``_durable``), so another process's write is
        visible here within about one poll interval. The collection is not marked
        dirty: the batch stays in the bucket until a pass folds it, and every pass
        (this process's too) folds every batch it LISTs; once a pass deleted it, the
        version that pass published holds its parts, and the reader's poll loads it.
        """
        if not self.adopted.is_set():
            return 0  # ``adopt_left`` is still reading them; the next poll follows on
        # Taken before the LIST: a batch PUT while it runs may be missing from it.
        held_before = self.batcher.held_keys()
        listed = self._list_batches()
        adopted = 0
        for key in listed:
            if self.batcher.holds(key):
                continue
            # Held before it is pushed: a load that starts meanwhile either finds it
            # held (``_load``) or is registered in ``_loading`` by the time it is pushed.
            parts = self._adopt(key)
            if parts is None:
                continue
            adopted += 1
            for part in parts:
                self._push(part)
        # Another process folded and deleted them: without this, the held index grows
        # with every batch other processes write.
        self.batcher.forget(gone_batches(held_before, set(listed)))
        return adopted

    def _push(self, part: batches.Part) -> None:
        """Give another process's delta to the collection's reader, if it is loaded or
        being loaded here (blocking)."""
        # ``_readers`` first: a finished load enters it before it leaves ``_loading``.
        reader = self._readers.get(part.collection) or self._loading.get(part.collection)
        if reader is None:
            return  # its load reads the held batches
        try:
            reader.take(part.name, part.data)
        except Exception:
            # A damaged part is quarantined by the pass that folds it; the reader's poll
            # loads the version once it is folded.
            log.exception("taking another process's delta failed", extra=fields(
                collection_id=part.collection, delta=part.name))

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
        await self.batcher.stop()
        await asyncio.to_thread(self.worker.close)
        while self._readers:
            _, reader = self._readers.popitem()
            await asyncio.to_thread(reader.close)
        if self._background:
            await asyncio.gather(*self._background)

    # -- compaction ------------------------------------------------------------------

    def compact_dirty(self, settings_of: Callable[[str], CollectionSettings | None],
                      catch_up: Callable[[], object]) -> dict[str, CompactionResult]:
        """Fold the stored write batches, and every dirty collection, once (blocking: run
        in a thread).

        ``settings_of`` gives a collection's settings from the catalog, or ``None``
        once it is deleted (then it is skipped and its parts dropped: reclaiming
        takes its bytes). ``catch_up`` brings the catalog up to date; it runs after
        the LIST of the batches, so the catalog holds every create and first-write
        dimension logged before any listed batch was stored. Without it, a batch
        another process stored for a collection it had just created (or first written
        to) looked like one of a deleted collection here, and its acknowledged writes
        were dropped.
        """
        if not self.adopted.is_set():
            return {}
        keys = self._pass_batches()
        catch_up()
        held = self.batcher.held_in(keys)  # collection id -> delta name -> batch key
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        jobs = [Job(cid, st, held.get(cid, {})) for cid in sorted(dirty | held.keys())
                if (st := settings_of(cid)) is not None]
        try:
            results, unsafe = self.worker.run(jobs)
        except Exception:
            for job in jobs:
                self._mark(job.cid)  # the batches stay; the next pass tries again
            raise
        for cid in results:
            reader = self._readers.get(cid)
            if reader is not None:
                reader.refresh()  # the version just published, before the next poll
        for cid, res in results.items():
            if res.result == "failed":
                self.failures[cid] = f"{res.reason}: {res.message}"
            else:
                self.failures.pop(cid, None)
            if not complete(res):
                self._mark(cid)  # the next pass tries again
        # A batch goes once each of its parts is folded, stored as its collection's own
        # delta, or of a deleted collection.
        keep = {key for cid in unsafe for key in held.get(cid, {}).values()}
        done = [key for key in keys if key not in keep]
        if done:
            self.store.delete_many(done)
            self.batcher.forget(done)
        metrics.POOL_COMPACTION_FAILURES.set(len(self.failures))
        return results

    def _pass_batches(self) -> list[str]:
        """The stored batches a pass folds, oldest first, up to ``PASS_MAX_BATCH_BYTES``;
        each is held (read here first if another process wrote it)."""
        keys, total = [], 0
        for info in self.store.list(batches.BATCH_PREFIX):
            if not batches.is_batch_key(info.key):
                continue
            if not self.batcher.holds(info.key) and self._adopt(info.key) is None:
                continue
            keys.append(info.key)
            total += info.size
            if total >= PASS_MAX_BATCH_BYTES:
                break
        return keys

    def _adopt(self, key: str) -> list[batches.Part] | None:
        """Hold a batch this process did not write, and return its parts; None if it is
        gone or corrupt (then quarantined: never applied, kept for an operator, as its
        writes were acknowledged)."""
        try:
            data = self.store.get(key).data
        except NotFound:
            return None
        try:
            parts = batches.decode(data)
        except batches.CorruptBatch as e:
            log.error("corrupt write batch quarantined", extra=fields(batch=key, error=str(e)))
            self.store.put(QUARANTINE_PREFIX + key, data)
            self.store.delete_many([key])
            return None
        self.batcher.adopt(key, parts)
        return parts


def _rss_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere, so no memory budget applies)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0
