"""What a writer does so that a write it acknowledged is in every fresh read that starts later.

The guarantee and its proof are in ``docs/design.md`` ("A write is visible to
every reader once acknowledged"); in short:

1. the writer registers in the bucket (``storage/members.py``) and waits
   ``gate_s`` before its first acknowledgement, so every reader answering
   fresh reads from memory knows it by then;
2. readers ask it for leases (:meth:`Fanout.grant`); each delta is pushed
   to every lease holder and acknowledged only once each confirmed it or
   its lease ended (``writer/leases.py``);
3. it renews its registration and stops acknowledging once a renewal is
   overdue, so a reader may drop a writer whose registration stopped
   changing without missing anything it acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import httpx

from chromasnap.api.auth import PUSH_TOKEN_HEADER
from chromasnap.config import FreshnessTiming
from chromasnap.engine.errors import Unavailable
from chromasnap.logs import fields
from chromasnap.storage import members
from chromasnap.storage.store import ObjectStore, StoreError
from chromasnap.writer import metrics
from chromasnap.writer.backend import NOTIFY_PATH
from chromasnap.writer.leases import Lease, LeaseTable

log = logging.getLogger("chromasnap.writer.fanout")

#: Pushes to readers that hold no lease (delta name, bytes, URLs to skip): not awaited.
BestEffort = Callable[[str, bytes, Collection[str]], Coroutine[Any, Any, None]]
#: Added to every wait for a lease to end: the two clocks may run at slightly different rates.
CLOCK_MARGIN_S = 0.1


class Fanout:
    """One writer's side of the fresh-read guarantee (see the module docstring)."""

    def __init__(self, store: ObjectStore, writer_id: str, url: str, timing: FreshnessTiming,
                 push_token: str | None = None, push_timeout_s: float = 1.0,
                 best_effort: BestEffort | None = None) -> None:
        self.store = store
        self.writer_id = writer_id
        self.url = url
        self.timing = timing
        self.table = LeaseTable(timing.lease_s)
        self.best_effort = best_effort
        self.headers = {PUSH_TOKEN_HEADER: push_token} if push_token else {}
        self.client = httpx.AsyncClient(timeout=push_timeout_s)
        self._renewals = 0
        self._renew_started: float | None = None
        self._open_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- registration ---------------------------------------------------------------

    async def start(self) -> None:
        """Register (retrying until the bucket answers), then keep renewing."""
        while not await self._renew():
            await asyncio.sleep(1.0)
        self._open_at = time.monotonic() + self.timing.gate_s
        self._task = asyncio.create_task(self._renew_loop())
        log.info("writer registered", extra=fields(writer=self.writer_id, url=self.url,
                                                   gate_s=self.timing.gate_s))

    async def _renew(self) -> bool:
        started = time.monotonic()
        self._renewals += 1
        try:
            await asyncio.to_thread(members.register, self.store, self.writer_id, self.url,
                                    self._renewals)
        except StoreError as e:
            log.warning("writer registration not renewed", extra=fields(error=str(e)))
            return False
        self._renew_started = started
        return True

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_s)
            await self._renew()

    async def stop(self) -> None:
        """Stop renewing and deregister (after the last acknowledgement)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.to_thread(members.deregister, self.store, self.writer_id)
        except StoreError as e:
            log.warning("writer not deregistered; readers drop it once its registration "
                        "goes stale", extra=fields(error=str(e)))
        await self.client.aclose()

    def ready(self) -> bool:
        """Registered, past the gate, and the registration is current."""
        now = time.monotonic()
        return self._open_at is not None and now >= self._open_at and self._current(now)

    def _current(self, now: float) -> bool:
        return (self._renew_started is not None
                and now - self._renew_started < self.timing.stop_acks_s)

    async def admit(self) -> None:
        """Before a delta is written: wait for the gate; Unavailable when not registered."""
        if self._open_at is None:
            raise Unavailable("writer is starting (not registered yet); retry")
        wait = self._open_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._check()

    def _check(self) -> None:
        if not self._current(time.monotonic()):
            metrics.WRITER_FLUSH_ERRORS.inc()
            raise Unavailable("this writer could not renew its registration in the bucket, so "
                              "readers may no longer count it; the write was not acknowledged, "
                              "retry (another writer may take it)")

    # -- leases and pushes --------------------------------------------------------------

    def grant(self, reader_id: str, url: str) -> dict[str, Any] | None:
        """A reader's lease request: the lease's epoch and length, or None (refused)."""
        lease = self.table.grant(reader_id, url, time.monotonic())
        if lease is None:
            return None
        return {"epoch": lease.epoch, "lease_seconds": self.timing.lease_s,
                "writer": self.writer_id}

    def release(self, reader_id: str) -> None:
        """A reader gave its lease back (it stopped answering fresh reads from memory)."""
        self.table.release(reader_id)

    async def __call__(self, name: str, data: bytes) -> None:
        """After ``name`` is durable: return once every lease holder has it, or its lease ended.

        Raises Unavailable when this writer may no longer acknowledge (the
        delta is durable but not acknowledged).
        """
        holders = self.table.holders(time.monotonic())
        results = await asyncio.gather(*(self._push(le, name, data) for le in holders))
        ends = [self.table.failed(le) for le, ok in zip(holders, results, strict=True) if not ok]
        if ends:
            wait = max(ends) + CLOCK_MARGIN_S - time.monotonic()
            log.warning("reader did not confirm a delta; waiting for its lease to end",
                        extra=fields(delta=name, readers=len(ends), wait_s=round(wait, 3)))
            if wait > 0:
                await asyncio.sleep(wait)
            for le, ok in zip(holders, results, strict=True):
                if not ok:
                    self.table.ended(le)
        if self.best_effort is not None:
            # Readers without a lease answer fresh reads by LISTing; a push saves them a GET.
            leased = {le.url for le in holders}
            task = asyncio.create_task(self.best_effort(name, data, leased))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._check()

    async def _push(self, lease: Lease, name: str, data: bytes) -> bool:
        try:
            r = await self.client.post(lease.url + NOTIFY_PATH + name, content=data,
                                       headers=self.headers)
        except httpx.HTTPError as e:
            log.info("push failed", extra=fields(reader=lease.reader_id, error=str(e)))
            return False
        if r.status_code != 200:
            log.info("push refused", extra=fields(reader=lease.reader_id, status=r.status_code))
            return False
        return True
