"""A pool's compactions, in a child process: a pass must not slow the requests the pool serves.

A compaction run is mostly Python (botocore, Arrow, chromadb's writes), holding
the GIL. Run in threads of the serving process, a pass over 200 collections
halved the writes it could take and made their p50 4.6× longer (measured: 2,000
writes in 10 s at p50 105 ms with no pass, 1,044 at p50 477 ms with passes
every 3 s). So a pass hands its runs to one child process
(``ProcessPoolExecutor`` of one worker, started on the first pass and kept), which
runs ``compaction_concurrency`` of them at a time in threads of its own. The
serving process keeps what only it knows (the catalog, which batch holds which
collection's deltas, its loaded readers) and sends each run the names of the
batched deltas it folds; the child reads the batches, each once, so their bytes
never pass through (or stay in) the serving process.

A run that does not fold all of its batched deltas (it failed, was fenced, or
left deltas pending) gets them stored as its collection's own deltas, so their
batches can go; a collection whose deltas could not be stored either is
*unsafe*, and the batches holding them stay. With a recovery window
(``PoolOptions.recovery_window_seconds``) every run stores them first: a
point-in-time restore replays them from the collection's prefix, and its
compactor keeps them there for the window, as a ChromaCollection's does.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from chromasnap import logs
from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings
from chromasnap.logs import fields
from chromasnap.pool.member import PoolOptions, compactor_for
from chromasnap.storage import batches, deltas
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.store import NotFound, ObjectStore, open_store
from chromasnap.writer.groupcommit import put_once

log = logging.getLogger("chromasnap.pool")


@dataclass(frozen=True)
class Job:
    """One collection's run: its settings and its batched deltas (name -> batch key)."""

    cid: str
    settings: CollectionSettings
    parts: dict[str, str]


def complete(res: CompactionResult) -> bool:
    """Whether a run folded every delta it was given and found."""
    return res.result != "failed" and not res.pending_deltas and res.reason not in (
        "LockHeld", "Fenced")


@dataclass(frozen=True)
class _Where:
    """What the child needs to reach the bucket and log as its parent does."""

    bucket_url: str
    endpoint_url: str | None
    log_level: str
    log_format: str


@functools.cache
def _child_store(where: _Where) -> ObjectStore:
    """The child's one store (one boto3 client), made on its first job."""
    logs.setup(where.log_level, where.log_format)
    return open_store(where.bucket_url, where.endpoint_url)


def _run(where: _Where, opts: PoolOptions, jobs: list[Job]
         ) -> tuple[dict[str, CompactionResult], set[str]]:
    """In the child: every job, ``compaction_concurrency`` at a time; the results, and
    the collections whose batched deltas are neither folded nor stored."""
    store = _child_store(where)
    with ThreadPoolExecutor(opts.compaction_concurrency,
                            thread_name_prefix="pool-compact") as pool:
        keys = sorted({k for j in jobs for k in j.parts.values()})
        read = dict(zip(keys, pool.map(lambda k: _read_batch(store, k), keys), strict=True))

        def one(job: Job) -> tuple[CompactionResult, bool]:
            supplied: dict[str, bytes] = {}
            for name, key in job.parts.items():
                got = read[key]
                if got is None:
                    return CompactionResult(result="failed", reason="CorruptBatch", message=(
                        "a write batch holding its deltas is damaged (see the log)")), False
                if (data := got.get((job.cid, name))) is not None:
                    supplied[name] = data
            # Point-in-time recovery replays the deltas each version folded from the
            # collection's own prefix; a batch goes once folded, so with a recovery window
            # they are stored there first: no version names a delta the bucket lacks.
            kept = bool(supplied) and opts.recovery_window_seconds > 0
            if kept and not _store_parts(store, job.cid, supplied):
                return CompactionResult(result="failed", reason="StorageError", message=(
                    "storing its deltas for the recovery window failed (see the log)")), False
            try:
                res = compactor_for(store, job.settings, opts).run(supplied)
            except Exception as e:  # one collection's trouble must not stop the others
                log.exception("compaction of a pool collection failed",
                              extra=fields(collection_id=job.cid))
                res = CompactionResult(result="failed", reason="InternalError",
                                       message=f"{type(e).__name__}: {e}")
            return res, complete(res) or kept or _store_parts(store, job.cid, supplied)

        done = dict(zip((j.cid for j in jobs), pool.map(one, jobs), strict=True))
    return ({cid: res for cid, (res, _) in done.items()},
            {cid for cid, (_, safe) in done.items() if not safe})


def _read_batch(store: ObjectStore, key: str) -> dict[tuple[str, str], bytes] | None:
    """A batch's deltas by (collection, name); empty if it is gone (a pass deleted it:
    its deltas are folded), None if it is damaged (its collections' runs fail)."""
    try:
        return {(p.collection, p.name): p.data
                for p in batches.decode(store.get(key).data)}
    except NotFound:
        return {}
    except batches.CorruptBatch as e:
        log.error("a held write batch is damaged", extra=fields(batch=key, error=str(e)))
        return None


def _store_parts(store: ObjectStore, cid: str, parts: dict[str, bytes]) -> bool:
    """Store a collection's batched deltas as its own deltas (its run did not fold them),
    so their batches can go; False if that failed too."""
    sub = PrefixedStore(store, collection_root(cid))
    try:
        for name, data in parts.items():
            put_once(sub, deltas.DELTA_PREFIX + name, data)
    except Exception:
        log.exception("storing a collection's batched deltas failed",
                      extra=fields(collection_id=cid))
        return False
    return True


class CompactionWorker:
    """The child process a pool's passes run in."""

    def __init__(self, bucket_url: str, endpoint_url: str | None, opts: PoolOptions) -> None:
        root = logging.getLogger()
        json_logs = any(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers)
        self._where = _Where(bucket_url, endpoint_url, logging.getLevelName(root.level),
                             "json" if json_logs else "text")
        self._opts = opts
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: list[Job]) -> tuple[dict[str, CompactionResult], set[str]]:
        """Run ``jobs`` in the child (started on first use); blocks until all are done.
        Returns the results and the collections whose batched deltas are neither folded
        nor stored. A child that died is started again by the next call."""
        if not jobs:
            return {}, set()
        if self._pool is None:
            # Spawned, not forked: the serving process has threads and an event loop.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(_run, self._where, self._opts, jobs).result()
        except Exception:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        """Stop the child (after the run in progress, if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
