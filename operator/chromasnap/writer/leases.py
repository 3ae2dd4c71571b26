"""The freshness leases one writer has granted to readers. Pure: the clock is an argument.

A reader may answer fresh reads without asking the bucket only while it
holds a lease from every registered writer (``reader/freshness.py``). A
writer's promise for each lease it granted: every delta it acknowledges
before the lease ends was confirmed by that reader first. So before an
acknowledgement the writer pushes the delta to every holder and waits for
its confirmation; a holder that does not confirm is *draining*: it gets no
renewal, and the writer waits until its lease has ended before
acknowledging. Its next request starts a new *epoch*, which tells the
reader that it may have missed deltas and must LIST before it answers
fresh reads again.

Times are the writer's ``time.monotonic``. A lease ends ``lease_s`` after
the writer granted it; the reader counts from the moment it *sent* its
request (earlier), so the reader's lease always ends first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lease:
    """A lease granted to one reader (by its id), pushed to at ``url``."""

    reader_id: str
    url: str
    epoch: int
    until: float
    draining: bool = False


class LeaseTable:
    """Leases granted by one writer, by reader id."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._leases: dict[str, Lease] = {}
        self._epochs = 0

    def grant(self, reader_id: str, url: str, now: float) -> Lease | None:
        """Grant or renew ``reader_id``'s lease; None while it drains (refused).

        A lease that ended, or moved to another URL, is not renewed: the
        reader gets a new epoch, because deltas acknowledged meanwhile were
        not pushed to it.
        """
        cur = self._leases.get(reader_id)
        if cur is not None and cur.draining:
            return None
        if cur is not None and cur.until > now and cur.url == url:
            cur.until = now + self.lease_s
            return cur
        self._epochs += 1
        lease = Lease(reader_id, url, self._epochs, now + self.lease_s)
        self._leases[reader_id] = lease
        return lease

    def holders(self, now: float) -> list[Lease]:
        """Leases a delta acknowledged now must reach: running or draining (ended ones go)."""
        for rid in [r for r, le in self._leases.items() if le.until <= now and not le.draining]:
            del self._leases[rid]
        return list(self._leases.values())

    def failed(self, lease: Lease) -> float:
        """``lease``'s reader did not confirm a push: no more renewals; returns when it ends."""
        lease.draining = True
        return lease.until

    def release(self, reader_id: str) -> None:
        """The reader gave its lease back: it answers no fresh read from memory any more."""
        self._leases.pop(reader_id, None)

    def ended(self, lease: Lease) -> None:
        """A draining lease is over: forget it (the reader's next request is a new epoch)."""
        if self._leases.get(lease.reader_id) is lease:
            del self._leases[lease.reader_id]
