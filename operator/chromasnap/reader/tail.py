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
format, dimension) before it is used.

Whether the loaded version already folded a delta is decided by
``lineage.pending_on`` against the lineage the delta was read under, never by
the applied set alone: that set stops naming a folded delta once clean-up
deleted it (see :mod:`chromasnap.reader.lineage`). The tail forgets deltas as
soon as the loaded version contains them, one version later than that for
reads still running on the previous one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import cast

from chromasnap.engine.merge import Matching, Record, Version, needs_records
from chromasnap.engine.ops import Op, OpKey
from chromasnap.logs import fields
from chromasnap.reader import metrics
from chromasnap.reader.freshview import EMPTY, Overlay, build_overlay, extend_overlay
from chromasnap.reader.lineage import Lineage, pending_on
from chromasnap.storage import deltas
from chromasnap.storage.store import NotFound, ObjectStore

log = logging.getLogger("chromasnap.tail")

#: Reads of one delta before giving up when new versions keep arriving meanwhile (the
#: next LIST tries again).
READ_ATTEMPTS = 3


class UnconfirmedDelta(ValueError):
    """A pushed delta that the bucket does not hold as pushed: never merged."""


@dataclass(frozen=True)
class _Built:
    """The last overlay built without filtered deletes, to extend with the next deltas."""

    version: str
    names: tuple[str, ...]  # the deltas it folded, in order
    newest: OpKey  # the newest op among them
    versions: dict[str, Version]  # what their ops made of the ids they touch
    overlay: Overlay


@dataclass(frozen=True)
class _Entry:
    """A decoded delta and the lineage it was read under (None: before any version)."""

    ops: list[Op]
    stamp: Lineage | None


class DeltaTail:
    """Decoded deltas newer than the loaded snapshot, and the overlay they produce."""

    def __init__(self, store: ObjectStore, dimension: int) -> None:
        self.store = store
        self.dimension = dimension
        # Pending on the loaded version: what fresh reads on it merge.
        self._pending: dict[str, _Entry] = {}
        # Not pending on the loaded version (folded, or undecided after a gap), kept one
        # version longer for reads still running on the previous one.
        self._retired: dict[str, _Entry] = {}
        self._at: Lineage | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._overlay_key: tuple[str, int] | None = None
        self._overlay: Overlay = EMPTY
        self._built: _Built | None = None
        self.changed = threading.Condition(self._lock)
        #: ``time.monotonic()`` at the start of the last LIST that completed (None: none yet):
        #: every delta acknowledged before then is in the tail or the loaded version.
        self.listed_at: float | None = None

    def names(self) -> frozenset[str]:
        """Deltas currently in the tail: pending on the loaded version."""
        with self._lock:
            return frozenset(self._pending)

    def knows(self, name: str) -> bool:
        """True when ``name`` is in the tail or in the snapshot it sits on."""
        with self._lock:
            return self._known(name)

    def _known(self, name: str) -> bool:
        return name in self._pending or (self._at is not None and name in self._at.contained)

    def holds(self, name: str, on: Lineage) -> bool:
        """True when the tail holds ``name`` as a delta version ``on`` has not folded."""
        with self._lock:
            e = self._pending.get(name) or self._retired.get(name)
            return e is not None and pending_on(name, e.stamp, on)

    def _admit(self, name: str, read: Callable[[], bytes]) -> bool | None:
        """Add the delta ``read`` returns, judged against the lineage it was read under.

        The lineage is taken *before* the read: a delta read after a version
        was loaded is folded by it iff its applied set names it (lineage.py,
        fact 1). A version loaded during the read invalidates that, so the
        delta is read again under it. True: added; False: already known
        (folded, or in the tail); None: versions kept moving, not added.
        Raises what ``read`` raises, and CorruptDelta.
        """
        deltas.parse_name(name)
        for _ in range(READ_ATTEMPTS):
            with self._lock:
                at = self._at
            ops = deltas.decode(read(), self.dimension)
            with self._lock:
                if self._at is not at:
                    continue
                if self._known(name):
                    return False
                self._retired.pop(name, None)  # undecided before: now verified
                self._pending[name] = _Entry(ops, at)
                self._generation += 1
                self._publish_sizes()
                self.changed.notify_all()
            return True
        return None

    def rebase(self, on: Lineage) -> None:
        """A new version is loaded: keep what it has not folded, retire the rest.

        Retired deltas stay one more version, so a read still running on the
        previous version keeps seeing the deltas only the new one contains.
        """
        with self._lock:
            if self._at is not None and self._at.version == on.version:
                self._at = on  # the same version on a folded copy: nothing changes
                return
            pending: dict[str, _Entry] = {}
            retired: dict[str, _Entry] = {}
            for name, e in self._pending.items():
                if pending_on(name, e.stamp, on):
                    pending[name] = _Entry(e.ops, on)  # as good as read under ``on``
                else:
                    retired[name] = e
            self._pending, self._retired, self._at = pending, retired, on
            self._generation += 1
            self._publish_sizes()
            self.changed.notify_all()

    def _publish_sizes(self) -> None:
        """Set the tail gauges to what fresh reads on the loaded version merge.

        Judged with the same rule as :meth:`overlay` (``pending_on`` the loaded
        lineage), so the gauges read 0 as soon as the loaded version folded
        everything, and count nothing before a version is loaded (no read
        merges a delta then; the first version's rebase judges it afresh).
        """
        at = self._at
        merged = [] if at is None else [
            e for name, e in self._pending.items() if pending_on(name, e.stamp, at)]
        metrics.READER_TAIL_DELTAS.set(len(merged))
        metrics.READER_TAIL_RECORDS.set(sum(len(e.ops) for e in merged))

    def confirm(self, name: str, pushed: bytes) -> bool:
        """Add a pushed delta only as the bucket holds it: a push is a hint, not a source.

        The object is read back from the bucket and must be byte-for-byte what
        was pushed (same size, same SHA-256); otherwise nothing is merged, so a
        reader only ever serves writes that are durable in the bucket.
        Raises :class:`UnconfirmedDelta` when the bucket does not confirm it.
        """
        deltas.parse_name(name)
        digest = hashlib.sha256(pushed).digest()

        def read() -> bytes:
            # Checked even for a delta the tail already has (fetched by a LIST first), so
            # a forged push is refused as such whatever the timing.
            try:
                stored = self.store.get(deltas.DELTA_PREFIX + name).data
            except NotFound as e:
                metrics.READER_ERRORS.labels("unconfirmed_push").inc()
                raise UnconfirmedDelta(f"delta {name} is not in the bucket") from e
            if len(stored) != len(pushed) or hashlib.sha256(stored).digest() != digest:
                metrics.READER_ERRORS.labels("unconfirmed_push").inc()
                raise UnconfirmedDelta(f"delta {name} differs from the copy in the bucket")
            return stored

        return bool(self._admit(name, read))

    def accept(self, name: str, data: bytes) -> bool:
        """Add a delta this process itself made durable (a pool's reader, fed by its own
        writer): nothing to confirm, so no GET. Raises CorruptDelta."""
        return bool(self._admit(name, lambda: data))

    def fetch(self, name: str) -> bool:
        """GET one delta by name (a read-your-writes miss); False when it does not exist."""

        def read() -> bytes:
            return self.store.get(deltas.DELTA_PREFIX + name).data

        try:
            return self._admit(name, read) is not None
        except NotFound:
            return False
        except deltas.CorruptDelta as e:
            log.error("corrupt delta ignored", extra=fields(delta=name, error=str(e)))
            return False

    def poll(self) -> int:
        """LIST the deltas and fetch the ones neither in the tail nor the snapshot."""
        started = time.monotonic()
        added, complete = 0, True
        for o in self.store.list(deltas.DELTA_PREFIX):
            if not deltas.is_delta_key(o.key):
                continue
            name = o.key[len(deltas.DELTA_PREFIX):]
            if self.knows(name):
                continue
            if self.fetch(name):
                added += 1
            elif not self.knows(name):
                complete = False  # gone, corrupt (quarantined soon) or versions kept moving
        if complete:
            with self._lock:
                self.listed_at = max(self.listed_at or started, started)
        return added

    def overlay(self, on: Lineage, versions: Mapping[str, Version],
                base_lookup: Callable[[list[str]], Mapping[str, Record]],
                base_matching: Matching | None = None,
                retained: Sequence[Op] = (), *, space: str) -> Overlay:
        """The overlay on the loaded version ``on``, cached per change.

        It merges exactly the deltas ``on`` has not folded (``pending_on``),
        whichever version the tail has moved to since, over the version's
        layers (``base_lookup`` reads their records, ``base_matching`` finds
        the records a filtered delete matches: see ``reader.layers``). The
        layers change when a reader folds segments into its copy, but not
        what they hold, so the cache is kept then; ``retained`` are the
        filtered deletes ``on`` keeps for late writes; ``space`` is the
        collection's (it never changes, so the cache need not know it).
        """
        with self._lock:
            key = (on.version, self._generation)
            if key == self._overlay_key:
                return self._overlay
            entries = {**self._retired, **self._pending}
            names = tuple(name for name in sorted(entries)
                          if pending_on(name, entries[name].stamp, on))
            sizes = [len(entries[name].ops) for name in names]
            ops = [op for name in names for op in entries[name].ops]
            inc = self._built
        built = self._extended(inc, on.version, names, sizes, ops, versions,
                               base_lookup, retained, space) if ops else None
        if built is not None:
            ov = built.overlay
        elif not ops:
            ov = EMPTY
        elif needs_records(ops, retained):
            ov = build_overlay(ops, versions, self.dimension, base_lookup, EMPTY, base_matching,
                               retained, space=space)
        else:
            ov, vers = extend_overlay(ops, versions, self.dimension, base_lookup, EMPTY,
                                      space=space)
            built = _Built(on.version, names, max(op.key for op in ops), vers, ov)
        with self._lock:
            if self._generation == key[1]:
                self._overlay_key, self._overlay = key, ov
                self._built = built
        return ov

    def _extended(self, inc: _Built | None, version: str,
                  names: tuple[str, ...], sizes: list[int], ops: list[Op],
                  versions: Mapping[str, Version],
                  base_lookup: Callable[[list[str]], Mapping[str, Record]],
                  retained: Sequence[Op], space: str) -> _Built | None:
        """The previous overlay extended by the deltas added since, or None when it cannot be.

        It can when the tail only gained deltas, all after the ones it holds,
        whose writes are all newer than every write it folded and need no
        snapshot records (the usual case: deltas arrive in order); then one
        build over all of them gives the same (``freshview.extend_overlay``),
        and a new delta costs its own writes, not the whole tail again.
        """
        if (inc is None or inc.version != version
                or names[:len(inc.names)] != inc.names):
            return None
        fresh = ops[sum(sizes[:len(inc.names)]):]
        if not fresh:
            return inc
        # The overlay extended needed no records: with newer writes only, a retained
        # filtered delete that matters to them matters to it too, so checking the
        # fresh writes suffices.
        if min(op.key for op in fresh) <= inc.newest or needs_records(fresh, retained):
            return None
        # ChainMap only ever writes to its first map; ``versions`` is only read.
        below = cast(MutableMapping[str, Version], versions)
        ov, vers = extend_overlay(fresh, ChainMap(inc.versions, below), self.dimension,
                                  base_lookup, inc.overlay, space=space)
        return _Built(version, names, max(op.key for op in fresh),
                      {**inc.versions, **vers}, ov)
