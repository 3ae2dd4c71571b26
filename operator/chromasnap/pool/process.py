"""What one ``chromasnap pool`` process runs beside its API: its loops.

- **Compaction passes** (a thread), every ``compact_every_s`` or at once when a
  compact-now request arrives: fold the write batches and dirty collections
  (:meth:`Members.compact_dirty`), record what they published
  (:mod:`chromasnap.pool.published`), report the pool's totals, reclaim deleted
  collections' bytes and prune the catalog log now and then.
- **Polls** (a thread), every ``poll_interval_s``: catch up with the catalog, follow
  the batches other processes store, refresh the loaded collections.
- **Declarations** (a task, in a cluster only): keep the collections
  ChromaCollections declare in step (:mod:`chromasnap.pool.declared`) and take the
  ChromaDatabase's compact-now requests.

Each loop logs and survives its own failures: one bad pass or poll never stops
the process from serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chromasnap.compactor.reclaim import reclaim
from chromasnap.compactor.result import CompactionResult
from chromasnap.engine.chromadir import release_memory
from chromasnap.logs import fields
from chromasnap.pool import metrics, passreport, published
from chromasnap.pool.compactproc import CompactionWorker
from chromasnap.pool.member import PoolOptions
from chromasnap.pool.members import Members
from chromasnap.pool.service import PoolService, settle_catalog_memory
from chromasnap.resource import DATABASE_PLURAL, GROUP, VERSION
from chromasnap.storage.cataloglog import CHECKPOINT_EVERY, CatalogLog
from chromasnap.storage.store import ObjectStore

log = logging.getLogger("chromasnap.runtime")


@dataclass(frozen=True)
class Intervals:
    """How often each loop runs, in seconds."""

    compact: float = 5.0
    poll: float = 1.0
    declare: float = 2.0


class PoolProcess:
    """One pool process's service and the loops that keep it current."""

    def __init__(self, store: ObjectStore, bucket_url: str, endpoint_url: str | None,
                 opts: PoolOptions, intervals: Intervals,
                 status_resource: str | None = None) -> None:
        self.store = store
        self.opts = opts
        self.intervals = intervals
        #: ``<namespace>/<name>`` of the ChromaDatabase whose status this process reports
        self.status_resource = status_resource
        self.catalog = CatalogLog(store, identity=opts.identity)
        self.service = PoolService(self.catalog, Members(
            store, opts, CompactionWorker(bucket_url, endpoint_url, opts)))
        self.index = published.PublishedIndex(store)
        self.started = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a pass now: stopping, or a compact-now request
        self._requested: str | None = None  # the compact-now value the next pass answers
        self._pruned_at = 0
        #: (collections, databases, records) last reported, and the pass not reported yet
        self._reported: tuple[int, int, int] | None = None
        self._last_pass: dict[str, Any] | None = None
        self._threads = [
            threading.Thread(target=self._compactions, name="pool-compactions", daemon=True),
            threading.Thread(target=self._polls, name="pool-polls", daemon=True)]
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle (the API's startup and shutdown) ---------------------------------------

    async def start(self) -> None:
        """Load the catalog, adopt left batches, start the loops."""
        await self.service.start()
        await self.service.members.start()
        for t in self._threads:
            t.start()
        if self.status_resource is not None:
            self._tasks.append(asyncio.ensure_future(self._declarations()))
        self.started.set()

    async def shutdown(self) -> None:
        """Stop the loops, store what is queued, close the loaded collections."""
        self._stop.set()
        self._wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.members.close()
        for t in self._threads:
            await asyncio.to_thread(t.join, 60)

    # -- compaction passes ----------------------------------------------------------------

    def _compactions(self) -> None:
        while True:
            self._wake.wait(self.intervals.compact)
            self._wake.clear()
            if self._stop.is_set():
                return
            request, self._requested = self._requested, None
            try:
                results = self._pass(request)
            except Exception:
                log.exception("pool compaction pass failed")
                continue
            try:
                self._report(self._record(results))
            except Exception:
                log.exception("recording the pool's versions failed")
            try:
                self._housekeeping()
            except Exception:
                log.exception("reclaiming or pruning the pool's catalog failed")

    def _pass(self, request: str | None) -> dict[str, CompactionResult]:
        members = self.service.members
        t0 = time.perf_counter()
        results = members.compact_dirty(self.service.settings, self.service.catch_up)
        if not results and request is None:
            return results
        took = time.perf_counter() - t0
        self._last_pass = summary = passreport.summary(
            results, members.failures, took, datetime.now(UTC), request)
        metrics.POOL_PENDING.set(summary["pendingCollections"])
        self.store.put(passreport.STATUS_KEY, passreport.encode(summary))
        failed = {cid: f"{r.reason}: {r.message}" for cid, r in results.items()
                  if r.result == "failed"}
        log.info("pool compaction pass: %d collections in %.2f s, %d failed",
                 len(results), took, len(failed), extra=fields(
                     collections=len(results), seconds=round(took, 3), failed=failed,
                     request=request))
        return results

    def _record(self, results: dict[str, CompactionResult]) -> int:
        """Record what the pass published (and backfill); the pool's records total."""
        live, deleted, written = self.catalog.view(lambda state: (
            set(state.where), set(state.deleted),
            [cid for cid in state.where
             if (e := state.by_id(cid)) is not None and e.dimension is not None]))
        used = self.service.take_used()
        recorded, unrecorded = published.after_pass(
            self.index, results, live=live, deleted=deleted, written=written,
            now=datetime.now(UTC),
            used={cid: published.iso(datetime.fromtimestamp(at, UTC))
                  for cid, at in used.items()})
        # Used before its first version was recorded: kept for a later pass.
        self.service.give_back_used({cid: used[cid] for cid in unrecorded if cid in live})
        return published.total_records(recorded, live)

    def _report(self, records: int) -> None:
        """The pool's totals into its ChromaDatabase's status, when they changed or a
        pass ran since the last report."""
        from chromasnap.compactor.statusreport import patch_status

        if self.status_resource is None:
            return
        collections, databases = self.catalog.view(
            lambda state: (len(state.where), len(state.databases)))
        counts = (collections, databases, records)
        if counts == self._reported and self._last_pass is None:
            return
        patch = passreport.database_status(self._last_pass, *counts,
                                           identity=self.opts.identity)
        if patch_status(self.status_resource, DATABASE_PLURAL, patch):
            self._reported, self._last_pass = counts, None

    def _housekeeping(self) -> None:
        reclaim(self.store, self.catalog, now=datetime.now(UTC),
                grace_seconds=self.opts.delta_grace_seconds)
        # The pass held its batches' bytes (up to 256 MB): give them back to the OS, or
        # glibc keeps them and the memory budget counts them as used.
        release_memory()
        seq = self.catalog.view(lambda state: state.seq)
        if seq - self._pruned_at >= CHECKPOINT_EVERY:
            # Changes a checkpoint covers go (a new process starts from it); not on every
            # pass: pruning writes a checkpoint of the whole catalog.
            self.catalog.prune()
            settle_catalog_memory()  # the new entries join the frozen ones
            self._pruned_at = seq

    # -- polls ------------------------------------------------------------------------------

    def _polls(self) -> None:
        members = self.service.members
        while not self._stop.wait(self.intervals.poll):
            try:
                # Other processes' creates, renames and deletes (one LIST of the log's
                # tail): a name deleted on another replica is gone here within a poll.
                self.service.catch_up()
            except Exception:
                log.exception("catching up with the pool's catalog failed")
            try:
                # Other processes' batches: what they wrote is visible here within a
                # poll, not only once a pass folded it.
                members.follow_batches()
            except Exception:
                log.exception("following the pool's write batches failed")
            members.refresh_loaded()

    # -- declarations (in a cluster) --------------------------------------------------------

    def _published_of(self, cids: list[str]) -> dict[str, published.Published]:
        recorded = self.index.read()
        found = {cid: recorded[cid] for cid in cids if cid in recorded}
        for cid in set(cids) - found.keys():  # no pass recorded it yet
            # (a manifest that cannot be read fails the round, as before: its status
            # must not flip to "no snapshot" meanwhile)
            if (p := published.read_one(self.store, cid)) is not None:
                found[cid] = p
        return found

    async def _declarations(self) -> None:
        from chromasnap.compactor.statusreport import custom_objects_api, parse_resource
        from chromasnap.pool.declared import DeclaredCollections

        assert self.status_resource is not None
        ns, name = parse_resource(self.status_resource)
        held = self.service.members.batcher.held
        declared = DeclaredCollections(ns, name, self.service, self._published_of,
                                       lambda cid: len(held(cid)), custom_objects_api)
        seen: str | None = None
        while not self._stop.is_set():
            try:
                await declared.sync()
                # ``kubectl chromasnap compact DB``: a new compact-now value on the
                # ChromaDatabase asks for a pass now (``status.lastPass.request`` answers).
                db = await asyncio.to_thread(
                    declared.client.get_namespaced_custom_object_status, GROUP, VERSION,
                    ns, DATABASE_PLURAL, name)
                if (value := passreport.pass_requested(db, seen)) is not None:
                    seen = self._requested = value
                    self._wake.set()
            except Exception as e:
                log.warning("syncing the declared collections failed",
                            extra=fields(error=str(e)[:500]))
            await asyncio.to_thread(self._stop.wait, self.intervals.declare)
