"""A reader's side of the fresh-read guarantee: answer from memory only when that is safe.

Guarantee (read level ``fresh``): a read that starts after a write was
acknowledged includes it. A reader answers a fresh read from what it holds
only while all of these hold at the read's start (else it first LISTs the
deltas, in a LIST that starts after the read did — S3 LISTs are strongly
consistent, and an acknowledged delta is durable):

1. its last LIST of the writer registrations started less than
   ``members_window_s`` ago (a writer registered earlier than that is in it,
   and writers wait longer than that before their first acknowledgement);
2. it holds a lease from every writer in that list (``writer/leases.py``:
   the writer pushes every delta it acknowledges to lease holders first);
3. a delta LIST (the tail's poll) started after every lease *epoch* began
   and after the last writer left the list: what a writer acknowledged
   before it counted this reader is in the tail.

A writer whose registration did not change for ``writer_stale_s`` is dead
(it stops acknowledging earlier, see ``writer/fanout.py``) and is dropped.
:class:`FreshnessState` is the pure rule (clock as an argument);
:class:`Freshness` runs it: LISTs, lease requests, and the LIST barrier
that fresh reads fall back to.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from chromasnap.api.auth import PUSH_TOKEN_HEADER
from chromasnap.api.routing import LEASE_PREFIX
from chromasnap.config import FreshnessTiming
from chromasnap.engine.errors import Unavailable
from chromasnap.logs import fields
from chromasnap.reader import metrics
from chromasnap.storage import members
from chromasnap.storage.store import ObjectStore, StoreError

log = logging.getLogger("chromasnap.reader.freshness")

@dataclass
class _Writer:
    registration: members.Registration
    unchanged_since: float  # when this ETag was first seen (end of that LIST)


@dataclass
class _Held:
    epoch: int
    until: float


@dataclass
class FreshnessState:
    """What a reader knows of writers and leases; :meth:`fast` is the rule above."""

    timing: FreshnessTiming
    #: A delta LIST must start after this before answering from memory (epochs, departures).
    sync_after: float
    writers: dict[str, _Writer] = field(default_factory=dict)
    leases: dict[str, _Held] = field(default_factory=dict)
    members_listed: float | None = None  # start of the last successful registration LIST
    dead: dict[str, str] = field(default_factory=dict)  # writer -> ETag it went stale at

    def listed(self, regs: dict[str, members.Registration], started: float, now: float) -> None:
        """A registration LIST that started at ``started`` ended at ``now`` with ``regs``."""
        for wid in [w for w in self.writers if w not in regs]:
            self._drop(wid, now)  # deregistered: it acknowledges nothing any more
        for wid, reg in regs.items():
            if self.dead.get(wid) == reg.etag:
                continue
            self.dead.pop(wid, None)
            cur = self.writers.get(wid)
            if cur is None or cur.registration.etag != reg.etag:
                self.writers[wid] = _Writer(reg, now)
            elif now - cur.unchanged_since > self.timing.writer_stale_s:
                self.dead[wid] = reg.etag
                self._drop(wid, now)
                log.warning("writer registration stale; writer dropped",
                            extra=fields(writer=wid))
        self.members_listed = started

    def _drop(self, wid: str, now: float) -> None:
        self.writers.pop(wid, None)
        self.leases.pop(wid, None)
        self.sync_after = max(self.sync_after, now)

    def granted(self, wid: str, epoch: int, sent: float, now: float) -> None:
        """Writer ``wid`` granted a lease (``epoch``) on a request sent at ``sent``."""
        cur = self.leases.get(wid)
        if cur is None or cur.epoch != epoch:
            self.sync_after = max(self.sync_after, now)
        self.leases[wid] = _Held(epoch, sent + self.timing.lease_s)

    def lost(self, wid: str) -> None:
        """The lease from ``wid`` is over (refused, or a push from it failed here)."""
        self.leases.pop(wid, None)

    def fast(self, now: float, deltas_listed: float | None) -> bool:
        """True when a fresh read starting ``now`` may be answered from memory."""
        if self.members_listed is None or now - self.members_listed >= self.timing.members_window_s:
            return False
        if deltas_listed is None or deltas_listed <= self.sync_after:
            return False
        for wid in self.writers:
            held = self.leases.get(wid)
            if held is None or held.until <= now:
                return False
        return True


class Freshness:
    """Keeps a :class:`FreshnessState` current and gives fresh reads their barrier."""

    def __init__(self, store: ObjectStore, push_url: str, timing: FreshnessTiming,
                 list_deltas: Callable[[], object], deltas_listed: Callable[[], float | None],
                 push_token: str | None = None, request_timeout_s: float = 0.5) -> None:
        self.store = store
        self.reader_id = uuid.uuid4().hex[:16]
        self.push_url = push_url
        self.state = FreshnessState(timing, sync_after=time.monotonic())
        self.list_deltas = list_deltas
        self.deltas_listed = deltas_listed
        self.headers = {PUSH_TOKEN_HEADER: push_token} if push_token else {}
        self.client = httpx.Client(timeout=request_timeout_s)
        self._lock = threading.Lock()
        self._list_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    def fast(self) -> bool:
        """Whether a fresh read starting now may be answered from memory."""
        if self._released:
            return False
        with self._lock:
            ok = self.state.fast(time.monotonic(), self.deltas_listed())
        return ok

    def barrier(self) -> None:
        """Return once the tail holds every write acknowledged before this call (blocking).

        From memory when :meth:`fast`; else after a delta LIST that started
        after this call (concurrent callers share one). Unavailable when the
        bucket does not answer: the reader cannot vouch for freshness then.
        """
        t0 = time.monotonic()
        if self.fast():
            return
        metrics.READER_FRESH_SLOW_READS.inc()
        try:
            self._list_after(t0)
        except StoreError as e:
            raise Unavailable(
                "this reader cannot confirm it holds every acknowledged write (the bucket "
                f"does not answer: {e}); retry, or read at level snapshot") from e

    def _list_after(self, t0: float) -> None:
        """LIST the deltas unless a LIST that started at or after ``t0`` completed."""
        with self._list_lock:
            done = self.deltas_listed()
            if done is None or done < t0:
                self.list_deltas()

    def delta_refused(self, writer_id: str) -> None:
        """A delta pushed by ``writer_id`` could not be taken: its lease cannot hold."""
        with self._lock:
            self.state.lost(writer_id)

    # -- the background loop ----------------------------------------------------------

    def start(self) -> None:
        """Start refreshing registrations and leases in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="reader-freshness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and give the leases back, so writers stop waiting for this reader.

        From here on every fresh read LISTs first (a draining reader still answers).
        """
        self._released = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for wid, url in self._writer_urls():
            try:
                self.client.delete(url + LEASE_PREFIX + self.reader_id, headers=self.headers)
            except httpx.HTTPError as e:  # its lease then just runs out
                log.info("lease not released", extra=fields(writer=wid, error=str(e)))
        self.client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as e:  # the loop must survive anything; fast() degrades alone
                log.error("freshness refresh failed", extra=fields(error=str(e)))
            metrics.READER_FRESH_FAST.set(1 if self.fast() else 0)
            self._stop.wait(min(self.state.timing.members_refresh_s,
                                self.state.timing.lease_s / 3))

    def step(self) -> None:
        """One refresh: LIST the registrations, then renew a lease from each writer."""
        started = time.monotonic()
        with self._lock:
            known = {w: v.registration for w, v in self.state.writers.items()}
        try:
            regs = members.listed(self.store, known)
        except StoreError as e:
            log.warning("writer registrations not listed", extra=fields(error=str(e)))
            regs = None
        if regs is not None:
            with self._lock:
                self.state.listed(regs, started, time.monotonic())
        for wid, url in self._writer_urls():
            self._renew(wid, url)
        with self._lock:
            sync_after = self.state.sync_after
        listed = self.deltas_listed()
        if listed is None or listed <= sync_after:
            # A new epoch or a departed writer: LIST now rather than in the next read.
            self._list_after(sync_after + 1e-9)

    def _writer_urls(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(w, v.registration.url) for w, v in self.state.writers.items()]

    def _renew(self, wid: str, url: str) -> None:
        sent = time.monotonic()
        try:
            r = self.client.post(url + LEASE_PREFIX + self.reader_id,
                                 json={"url": self.push_url}, headers=self.headers)
        except httpx.HTTPError as e:
            log.info("lease request failed", extra=fields(writer=wid, error=str(e)))
            return
        with self._lock:
            if r.status_code == 200:
                self.state.granted(wid, int(r.json()["epoch"]), sent, time.monotonic())
            else:
                self.state.lost(wid)
