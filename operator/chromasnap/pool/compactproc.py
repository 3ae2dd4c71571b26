"""A pool's compactions, in a child process: a pass must not slow the requests the pool serves.

A compaction run is mostly Python (botocore, Arrow, chromadb's writes), holding
the GIL. Run in threads of the serving process, a pass over 200 collections
halved the writes it could take and made their p50 4.6× longer (measured: 2,000
writes in 10 s at p50 105 ms with no pass, 1,044 at p50 477 ms with passes
every 3 s). So a pass hands its runs to one child process
(``ProcessPoolExecutor`` of one worker, started on the first pass and kept), which
runs ``compaction_concurrency`` of them at a time in threads of its own. The
serving process keeps what only it knows (its write batches, its loaded
readers) and sends each run the batched deltas it folds.
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
from chromasnap.storage.store import ObjectStore, open_store

log = logging.getLogger("chromasnap.pool")


@dataclass(frozen=True)
class Job:
    """One collection's run: its settings and the batched deltas it folds."""

    cid: str
    settings: CollectionSettings
    supplied: dict[str, bytes]


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


def _run(where: _Where, opts: PoolOptions, jobs: list[Job]) -> dict[str, CompactionResult]:
    """In the child: every job, ``compaction_concurrency`` at a time."""
    store = _child_store(where)

    def one(job: Job) -> CompactionResult:
        try:
            return compactor_for(store, job.settings, opts).run(job.supplied)
        except Exception as e:  # one collection's trouble must not stop the others
            log.exception("compaction of a pool collection failed",
                          extra=fields(collection_id=job.cid))
            return CompactionResult(result="failed", reason="InternalError",
                                    message=f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(opts.compaction_concurrency,
                            thread_name_prefix="pool-compact") as pool:
        return dict(zip((j.cid for j in jobs), pool.map(one, jobs), strict=True))


class CompactionWorker:
    """The child process a pool's passes run in."""

    def __init__(self, bucket_url: str, endpoint_url: str | None, opts: PoolOptions) -> None:
        root = logging.getLogger()
        json_logs = any(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers)
        self._where = _Where(bucket_url, endpoint_url, logging.getLevelName(root.level),
                             "json" if json_logs else "text")
        self._opts = opts
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: list[Job]) -> dict[str, CompactionResult]:
        """Run ``jobs`` in the child (started on first use); blocks until all are done.
        A child that died is started again by the next call."""
        if not jobs:
            return {}
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
