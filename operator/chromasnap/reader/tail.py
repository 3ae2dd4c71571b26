"""The delta tail a reader merges into fresh reads: deltas not yet in its snapshot.

Deltas reach the tail three ways, cheapest first:

1. **pushed** by writers right after a delta is durable (``POST
   /internal/v1/deltas/<name>`` with the delta's bytes, to every ready
   reader behind the headless Service): no S3 request at all;
2. **fetched** by name when a read-your-writes token names a delta the
   reader has not seen (one GET);
3. **polled**: one LIST per poll interval catches anything a push missed.

With many readers S3 cost therefore stays at one LIST per reader per poll
interval plus one GET per missed delta. Every delta is verified (checksum,
format, dimension) before it is used; the tail forgets deltas as soon as the
loaded snapshot contains them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping

from chromasnap.engine.merge import Record, Version
from chromasnap.engine.ops import Op
from chromasnap.logs import fields
from chromasnap.reader import metrics
from chromasnap.reader.freshview import EMPTY, Overlay, build_overlay
from chromasnap.storage import deltas
from chromasnap.storage.store import NotFound, ObjectStore

log = logging.getLogger("chromasnap.tail")


class UnconfirmedDelta(ValueError):
    """A pushed delta that the bucket does not hold as pushed: never merged."""


class DeltaTail:
    """Decoded deltas newer than the loaded snapshot, and the overlay they produce."""

    def __init__(self, store: ObjectStore, dimension: int) -> None:
        self.store = store
        self.dimension = dimension
        self._ops: dict[str, list[Op]] = {}
        self._applied: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._generation = 0
        self._overlay_key: tuple[str, int] | None = None
        self._overlay_under: Overlay = EMPTY
        self._overlay: Overlay = EMPTY
        self.changed = threading.Condition(self._lock)

    def names(self) -> frozenset[str]:
        """Deltas currently in the tail."""
        with self._lock:
            return frozenset(self._ops)

    def knows(self, name: str) -> bool:
        """True when ``name`` is in the tail or in the snapshot it sits on."""
        with self._lock:
            return name in self._ops or name in self._applied

    def add(self, name: str, data: bytes) -> bool:
        """Verify and add one delta; False if already known. Raises CorruptDelta/ValueError."""
        deltas.parse_name(name)
        with self._lock:
            if name in self._ops or name in self._applied:
                return False
        ops = deltas.decode(data, self.dimension)
        with self._lock:
            if name in self._ops or name in self._applied:
                return False
            self._ops[name] = ops
            self._generation += 1
            self._publish_sizes()
            self.changed.notify_all()
        return True

    def rebase(self, applied: frozenset[str]) -> None:
        """A new snapshot is loaded: forget deltas that it *and* the previous one contain.

        Deltas only the new snapshot contains stay one more generation, so a
        read still running on the previous snapshot keeps seeing them.
        """
        with self._lock:
            previous, self._applied = self._applied, applied
            for name in [n for n in self._ops if n in applied and n in previous]:
                del self._ops[name]
            self._generation += 1
            self._publish_sizes()
            self.changed.notify_all()

    def _publish_sizes(self) -> None:
        metrics.READER_TAIL_DELTAS.set(len(self._ops))
        metrics.READER_TAIL_RECORDS.set(sum(len(v) for v in self._ops.values()))

    def confirm(self, name: str, pushed: bytes) -> bool:
        """Add a pushed delta only as the bucket holds it: a push is a hint, not a source.

        The object is read back from the bucket and must be byte-for-byte what
        was pushed (same size, same SHA-256); otherwise nothing is merged, so a
        reader only ever serves writes that are durable in the bucket.
        Raises :class:`UnconfirmedDelta` when the bucket does not confirm it.
        """
        deltas.parse_name(name)
        # Checked even for a delta the tail already has (fetched by a LIST first), so a
        # forged push is refused as such whatever the timing.
        try:
            stored = self.store.get(deltas.DELTA_PREFIX + name).data
        except NotFound as e:
            metrics.READER_ERRORS.labels("unconfirmed_push").inc()
            raise UnconfirmedDelta(f"delta {name} is not in the bucket") from e
        if len(stored) != len(pushed) or (
            hashlib.sha256(stored).digest() != hashlib.sha256(pushed).digest()
        ):
            metrics.READER_ERRORS.labels("unconfirmed_push").inc()
            raise UnconfirmedDelta(f"delta {name} differs from the copy in the bucket")
        return self.add(name, stored)

    def fetch(self, name: str) -> bool:
        """GET one delta by name (a read-your-writes miss); False when it does not exist."""
        try:
            data = self.store.get(deltas.DELTA_PREFIX + name).data
        except NotFound:
            return False
        try:
            self.add(name, data)
        except deltas.CorruptDelta as e:
            log.error("corrupt delta ignored", extra=fields(delta=name, error=str(e)))
            return False
        return True

    def poll(self) -> int:
        """LIST the deltas and fetch the ones neither in the tail nor the snapshot."""
        added = 0
        for o in self.store.list(deltas.DELTA_PREFIX):
            if not deltas.is_delta_key(o.key):
                continue
            name = o.key[len(deltas.DELTA_PREFIX):]
            if not self.knows(name) and self.fetch(name):
                added += 1
        return added

    def overlay(self, version: str, applied: frozenset[str], versions: Mapping[str, Version],
                base_lookup: Callable[[list[str]], Mapping[str, Record]],
                under: Overlay = EMPTY) -> Overlay:
        """The overlay on snapshot ``version`` (which contains ``applied``), cached per change.

        ``under`` is the overlay of the version's segments that the reader's
        copy does not hold yet; the tail's writes go on top of it.
        """
        with self._lock:
            key = (version, self._generation)
            if key == self._overlay_key and under is self._overlay_under:
                return self._overlay
            ops = [op for name in sorted(self._ops) if name not in applied
                   for op in self._ops[name]]
        ov = build_overlay(ops, versions, self.dimension, base_lookup, under) if ops else under
        with self._lock:
            if self._generation == key[1]:
                self._overlay_key, self._overlay, self._overlay_under = key, ov, under
        return ov
