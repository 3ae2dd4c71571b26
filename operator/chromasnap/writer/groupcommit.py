"""The writer core: group commit of client writes into deltas.

Requests are validated (all or nothing), their ops queued, and the queue is
cut into one delta when it reaches the flush window's record or byte limit or
its oldest write reaches the maximum delay. Each delta is one PUT; every
request in it is acknowledged, with the delta's name as its read-your-writes
token, only after that PUT succeeded. A failed upload fails all its requests:
nothing unacknowledged is ever reported durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chromasnap.engine.errors import InvalidWrite, Unavailable
from chromasnap.engine.ops import Op, OpKind
from chromasnap.engine.validation import Limits, WriterClock, build_ops
from chromasnap.logs import fields
from chromasnap.storage import deltas
from chromasnap.storage.store import ObjectStore, PreconditionFailed, StoreError
from chromasnap.writer import metrics

log = logging.getLogger("chromasnap.writer")


@dataclass(frozen=True)
class FlushWindow:
    """When a delta is cut: whichever limit is reached first."""

    max_records: int = 10_000
    max_bytes: int = 32 << 20
    max_delay_s: float = 0.05


@dataclass
class _Batch:
    ops: list[Op] = field(default_factory=list)
    waiters: list[asyncio.Future[str]] = field(default_factory=list)
    nbytes: int = 0
    started: float = field(default_factory=time.monotonic)


def _op_bytes(op: Op, dimension: int) -> int:
    return 64 + len(op.id) + dimension * 4 + len(op.document or "") + 16 * len(op.metadata or {})


def process_writer_id(base: str) -> str:
    """A writer id unique to this process (pods restart under the same name)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in base)[:100] or "writer"
    return f"{safe}-{secrets.token_hex(3)}"


class GroupCommitWriter:
    """Accepts writes, batches them into deltas, acknowledges after durable upload."""

    def __init__(
        self,
        store: ObjectStore,
        limits: Limits,
        writer_id: str,
        window: FlushWindow = FlushWindow(),
        max_inflight: int = 4,
        on_durable: Callable[[str, bytes], Awaitable[None]] | None = None,
        admit: Callable[[], Awaitable[None]] | None = None,
        store_delta: Callable[[deltas.DeltaName, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.writer_id = writer_id
        self.window = window
        self.clock = WriterClock(writer_id)
        #: Called once a delta is durable, before its writes are acknowledged (the fresh-read
        #: guarantee's pushes, ``writer/fanout.py``); raising means "not acknowledged".
        self.on_durable = on_durable
        #: Called before a delta is written; raising refuses its writes (nothing written).
        self.admit = admit
        #: Makes a delta durable; by default one PUT of its own (a pool batches the deltas
        #: of all its collections instead, ``pool/batcher.py``).
        self.store_delta = store_delta or self._put_delta
        self._batch = _Batch()
        self._kick = asyncio.Event()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the flush loop (call from the event loop that will serve requests)."""
        self._loop_task = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        """Flush what is queued, wait for uploads, and stop."""
        self._closing = True
        self._kick.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(
        self,
        kind: OpKind,
        ids: Any,
        *,
        embeddings: Any = None,
        documents: Any = None,
        metadatas: Any = None,
        uris: Any = None,
        where: Any = None,
        where_document: Any = None,
        limit: int | None = None,
    ) -> str:
        """Validate and queue one request; return its token once its delta is durable.

        Raises InvalidWrite (nothing written) or Unavailable (upload failed).
        """
        if self._closing:
            raise Unavailable("writer is shutting down; retry on another writer")
        try:
            ops = build_ops(
                kind, ids, embeddings=embeddings, documents=documents, metadatas=metadatas,
                uris=uris, limits=self.limits, clock=self.clock, where=where,
                where_document=where_document, limit=limit,
            )
        except InvalidWrite:
            metrics.WRITER_REJECTED.inc()
            raise
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        b = self._batch
        if not b.ops:
            b.started = time.monotonic()
        b.ops.extend(ops)
        b.waiters.append(fut)
        b.nbytes += sum(_op_bytes(o, self.limits.dimension) for o in ops)
        self._kick.set()
        token = await fut
        metrics.WRITER_RECORDS.labels(kind.name.lower()).inc(len(ops))
        return token

    def _due(self) -> float:
        """Seconds until the current batch must be cut (0 = now)."""
        b = self._batch
        if self._closing or len(b.ops) >= self.window.max_records:
            return 0.0
        if b.nbytes >= self.window.max_bytes:
            return 0.0
        return max(0.0, b.started + self.window.max_delay_s - time.monotonic())

    async def _flush_loop(self) -> None:
        await flush_loop(lambda: bool(self._batch.ops), self._due, lambda: self._closing,
                         self._kick, self._cut)

    async def _cut(self) -> None:
        batch, self._batch = self._batch, _Batch()
        await self._inflight.acquire()
        task = asyncio.create_task(self._upload(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(self, batch: _Batch) -> None:
        try:
            if self.admit is not None:
                await self.admit()
            name = deltas.DeltaName(self.clock.flush_time_us(), self.writer_id)
            data = await asyncio.to_thread(
                deltas.encode, batch.ops, self.limits.dimension, self.writer_id
            )
            await self.store_delta(name, data)
        except Exception as e:
            metrics.WRITER_FLUSH_ERRORS.inc()
            log.error("delta upload failed; writes not acknowledged",
                      extra=fields(records=len(batch.ops), error=str(e)))
            err = Unavailable(
                f"could not store the write durably ({type(e).__name__}: {e}); nothing was "
                "acknowledged, retry the request"
            )
            for w in batch.waiters:
                if not w.done():
                    w.set_exception(err)
            return
        finally:
            self._inflight.release()
        metrics.WRITER_DELTAS.inc()
        metrics.WRITER_DELTA_BYTES.inc(len(data))
        if self.on_durable is not None:
            try:
                await self.on_durable(name.name, data)
            except Exception as e:
                # Durable, so the next compaction applies it: the client hears "retry", and a
                # retried add/upsert/update/delete has the same effect again.
                log.error("delta durable but not acknowledged", extra=fields(
                    delta=name.name, records=len(batch.ops), error=str(e)))
                err = e if isinstance(e, Unavailable) else Unavailable(
                    f"the write is stored but could not be confirmed ({e}); retry the request")
                for w in batch.waiters:
                    if not w.done():
                        w.set_exception(err)
                return
        metrics.WRITER_FLUSH_SECONDS.observe(time.monotonic() - batch.started)
        for w in batch.waiters:
            if not w.done():
                w.set_result(name.name)

    async def _put_delta(self, name: deltas.DeltaName, data: bytes) -> None:
        await asyncio.to_thread(put_once, self.store, name.key, data)


async def flush_loop(pending: Callable[[], bool], due: Callable[[], float],
                     closing: Callable[[], bool], kick: asyncio.Event,
                     cut: Callable[[], Awaitable[None]]) -> None:
    """Group commit's loop: wait for something ``pending`` (``kick`` is set on every
    arrival), wait until it is ``due`` (seconds; 0 = now), then ``cut`` it; return once
    ``closing`` with nothing pending.

    ``cut`` takes the batch off its owner and starts its upload: the batch lives in
    ``cut``'s frame, not in this one, which may wait for ever for the next write (a
    pool has thousands of idle writers, and each would keep its last batch's vectors).
    """
    while True:
        if not pending():
            if closing():
                return
            kick.clear()
            await kick.wait()
            continue
        wait = due()
        if wait > 0:
            kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), timeout=wait)
            continue
        await cut()


def put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """PUT an object exactly once; a retried PUT that already landed counts as success."""
    try:
        store.put_if_absent(key, data)
    except PreconditionFailed:
        try:
            same = store.get(key).data == data
        except StoreError:
            same = False
        if not same:
            raise
