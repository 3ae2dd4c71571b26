"""One PUT per flush window for a whole pool: its collections' deltas, batched.

Each collection's group-commit writer cuts its deltas as a single collection's
writer does, but hands them here instead of PUTting them: the deltas that
arrive within one flush window (``FlushWindow.max_delay_s``, or until
``max_bytes``) are stored as one batch object (``storage/batches.py``), and every
write in it is acknowledged only once that PUT succeeded. So a pool's PUTs per
window stay one however many collections are written to.

A batch stays in the bucket until the compaction pass has folded its parts into
their collections (``members.Members.compact_dirty``); until then it is *held*:
this module remembers which collection's deltas each held batch carries, so a
collection loaded meanwhile takes them into its tail. Batches a previous process
left are held the same way once :meth:`WriteBatcher.adopt` has read them, and so
are batches another process of the same pool writes while this one runs
(``members.Members.follow_batches``, every poll). A batch another process folded
and deleted is forgotten by the next poll that no longer LISTs it
(:func:`gone_batches`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from chromasnap.engine.errors import Unavailable
from chromasnap.logs import fields
from chromasnap.pool import metrics
from chromasnap.storage import batches
from chromasnap.storage.store import ObjectStore
from chromasnap.writer.groupcommit import FlushWindow, flush_loop, put_once

log = logging.getLogger("chromasnap.pool")


def gone_batches(held_before: Set[str], listed: Set[str]) -> set[str]:
    """The held batches to forget after a LIST of the batches (pure).

    ``held_before`` must be what was held *before* the LIST began: a batch this
    process PUT (or adopted) after that may be missing from the LIST only because
    it was not there yet, and must stay held. A batch held before the LIST was in
    the bucket before it (it is held only once its PUT succeeded, or once it was
    read from the bucket), so missing from the LIST means deleted: folded by a
    pass, here or in another process, so the newest versions hold its deltas.
    """
    return set(held_before) - set(listed)


@dataclass
class _Window:
    parts: list[batches.Part] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    nbytes: int = 0
    started: float = field(default_factory=time.monotonic)


class WriteBatcher:
    """Collects the pool's deltas into one batch PUT per flush window."""

    def __init__(self, store: ObjectStore, writer_id: str, window: FlushWindow,
                 max_inflight: int = 4) -> None:
        self.store = store
        self.writer_id = writer_id
        self.window = window
        self._current = _Window()
        self._kick = asyncio.Event()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_us = 0
        #: Held batches' parts: collection id -> delta name -> batch key. Read by loads
        #: (event loop) and forgotten by the compaction pass (a thread).
        self._held: dict[str, dict[str, str]] = {}
        self._keys: set[str] = set()
        self._held_lock = threading.Lock()

    async def start(self) -> None:
        """Start the flush loop (call from the serving event loop)."""
        self._loop_task = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        """Store what is queued, wait for the uploads, and stop."""
        self._closing = True
        self._kick.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def put(self, collection: str, name: str, data: bytes) -> None:
        """Return once the delta ``name`` of ``collection`` is durable in a batch; raises
        Unavailable when its batch could not be stored (nothing acknowledged)."""
        if self._closing:
            raise Unavailable("the pool is shutting down; retry the request")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w = self._current
        if not w.parts:
            w.started = time.monotonic()
        w.parts.append(batches.Part(collection, name, data))
        w.waiters.append(fut)
        w.nbytes += len(data)
        self._kick.set()
        await fut

    def held(self, collection: str) -> dict[str, str]:
        """The collection's deltas in batches not folded yet: delta name -> batch key."""
        with self._held_lock:
            return dict(self._held.get(collection, {}))

    def holds(self, key: str) -> bool:
        """Whether the batch ``key`` is held (written or adopted by this process)."""
        with self._held_lock:
            return key in self._keys

    def held_keys(self) -> frozenset[str]:
        """The keys of every held batch, now (a copy)."""
        with self._held_lock:
            return frozenset(self._keys)

    def held_in(self, keys: list[str]) -> dict[str, dict[str, str]]:
        """The held deltas in the batches ``keys``: collection id -> name -> batch key."""
        wanted = set(keys)
        with self._held_lock:
            out = {cid: {n: k for n, k in names.items() if k in wanted}
                   for cid, names in self._held.items()}
        return {cid: names for cid, names in out.items() if names}

    def adopt(self, key: str, parts: list[batches.Part]) -> None:
        """Hold a batch read from the bucket (one a previous process left, or another
        process of the same pool wrote)."""
        self._hold(key, parts)

    def forget(self, keys: Iterable[str]) -> None:
        """These batches are gone: their parts are folded (or stored as their collections'
        own deltas, or of deleted collections)."""
        gone = set(keys)
        with self._held_lock:
            self._keys -= gone
            for cid in list(self._held):
                names = self._held[cid]
                for name in [n for n, k in names.items() if k in gone]:
                    del names[name]
                if not names:
                    del self._held[cid]

    def _hold(self, key: str, parts: list[batches.Part]) -> None:
        with self._held_lock:
            self._keys.add(key)
            for p in parts:
                self._held.setdefault(p.collection, {})[p.name] = key

    def _due(self) -> float:
        w = self._current
        if self._closing or w.nbytes >= self.window.max_bytes:
            return 0.0
        return max(0.0, w.started + self.window.max_delay_s - time.monotonic())

    async def _flush_loop(self) -> None:
        await flush_loop(lambda: bool(self._current.parts), self._due,
                         lambda: self._closing, self._kick, self._cut)

    async def _cut(self) -> None:
        window, self._current = self._current, _Window()
        await self._inflight.acquire()
        task = asyncio.create_task(self._upload(window))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_key(self) -> str:
        # Strictly increasing per process, so two batches never share a key.
        self._last_us = max(self._last_us + 1, time.time_ns() // 1000)
        return batches.key_for(self._last_us, self.writer_id)

    async def _upload(self, window: _Window) -> None:
        key = self._next_key()
        try:
            data = await asyncio.to_thread(batches.encode, window.parts)
            await asyncio.to_thread(put_once, self.store, key, data)
        except Exception as e:
            log.error("batch upload failed; writes not acknowledged", extra=fields(
                batch=key, deltas=len(window.parts), error=str(e)))
            err = Unavailable(f"could not store the write durably ({type(e).__name__}: {e}); "
                              "nothing was acknowledged, retry the request")
            for fut in window.waiters:
                if not fut.done():
                    fut.set_exception(err)
            return
        finally:
            self._inflight.release()
        self._hold(key, window.parts)
        metrics.POOL_BATCHES.inc()
        metrics.POOL_BATCH_DELTAS.inc(len(window.parts))
        for fut in window.waiters:
            if not fut.done():
                fut.set_result(None)
