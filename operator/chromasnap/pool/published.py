"""Each pool collection's newest version, as the compaction passes published it.

A ChromaDatabase's status shows the records of all its collections, and a declared
collection's status its version, records and last compaction, as a
ChromaCollection's does. Reading every collection's pointer and manifest for that
would be two GETs per collection per report; instead each pass records what it
published in a few small objects of the pool's root::

    status/collections/<first hex digit of the id>.json   {id: Published, ...}

Sixteen shards, so that a pass rewrites only the shards of the collections it
folded (about 100 KB each at 10,000 collections), and a reader's conditional GETs
of the others come back empty. A shard is changed with a conditional PUT and
merged again when another process of the pool changed it first; an entry is
replaced only by a newer version of the same collection, so two passes folding
the same collection agree whichever lands last.

Collections no pass has recorded (published before this file existed, or by a
restore) are read from their pointer, a few per pass (:func:`missing`), so the
totals become exact without a scan of the pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chromasnap.compactor.result import CompactionResult
from chromasnap.logs import fields
from chromasnap.storage import manifest, pointer
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.store import NotFound, ObjectStore, PreconditionFailed

log = logging.getLogger("chromasnap.pool")

PREFIX = "status/collections/"
SHARDS = "0123456789abcdef"
#: Conditional PUTs lost in a row before a pass leaves a shard to the next one.
MAX_ATTEMPTS = 8
#: Collections a pass reads from their pointers when no pass recorded them yet.
BACKFILL_PER_PASS = 64
#: An entry of a collection the catalog does not know is kept this long: it may be one
#: another process created after this one's catalog caught up.
UNKNOWN_KEPT = timedelta(hours=1)

#: ``keep(cid, entry)``: whether a shard keeps an entry (its collection not deleted).
Keep = Callable[[str, "Published"], bool]


def iso(at: datetime) -> str:
    """A timestamp as Kubernetes writes one (``2026-12-07T23:44:45Z``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Published:
    """One collection's newest version and its last compaction run."""

    version: str
    records: int
    bytes: int
    created_at: str
    #: The last run that reported on the collection: when, its result and reason.
    compacted_at: str | None = None
    result: str | None = None
    reason: str | None = None
    #: When a pool process last served a read or write of it, as of its last pass.
    used_at: str | None = None

    def newer_than(self, other: Published) -> bool:
        """Whether this entry should replace ``other``: a later version, or the same one
        with a later run (version names start with a zero-padded sequence number)."""
        if self.version != other.version:
            return self.version > other.version
        return (self.compacted_at or "") >= (other.compacted_at or "")


def shard_key(cid: str) -> str:
    """The object holding collection ``cid``'s entry."""
    return f"{PREFIX}{cid[:1].lower()}.json"


def from_result(res: CompactionResult, at: datetime) -> Published | None:
    """The entry a run's result gives (``None``: the run names no version)."""
    if res.version is None or res.record_count is None:
        return None
    created = (iso(datetime.fromisoformat(res.snapshot_created_at))
               if res.snapshot_created_at else iso(at))
    return Published(version=res.version, records=res.record_count,
                     bytes=res.snapshot_bytes or 0, created_at=created,
                     compacted_at=iso(at), result=res.result, reason=res.reason)


def read_one(store: ObjectStore, cid: str) -> Published | None:
    """A collection's current version from its pointer and manifest (two GETs;
    ``None``: no version yet)."""
    root = PrefixedStore(store, collection_root(cid))
    ptr = pointer.read(root).pointer
    if ptr is None:
        return None
    m = manifest.parse(root.get(ptr.manifest).data)
    return Published(version=m.version, records=m.record_count, bytes=m.byte_size,
                     created_at=iso(ptr.updated_at))


def read_missing(store: ObjectStore, cids: Iterable[str]) -> dict[str, Published]:
    """:func:`read_one` of each of ``cids`` that has a version (a collection being
    published or deleted right now, its manifest not readable, is left out)."""
    found = {}
    for cid in cids:
        try:
            p = read_one(store, cid)
        except NotFound:
            continue  # a pass is publishing it right now, or it was just deleted
        if p is not None:
            found[cid] = p
    return found


def merge(current: Mapping[str, Published], updates: Mapping[str, Published],
          keep: Keep, used: Mapping[str, str] | None = None) -> dict[str, Published]:
    """A shard after ``updates`` (pure): newer entries win, entries ``keep`` refuses (of
    deleted collections) go, and each entry's ``used_at`` is the latest any process
    recorded, ``used`` (collection id -> time) included."""
    out = {cid: p for cid, p in current.items() if keep(cid, p)}
    for cid, p in updates.items():
        old = out.get(cid)
        if keep(cid, p) and (old is None or p.newer_than(old)):
            out[cid] = replace(p, used_at=_latest(p.used_at, old.used_at if old else None))
    for cid, at in (used or {}).items():
        if (old := out.get(cid)) is not None:
            out[cid] = replace(old, used_at=_latest(old.used_at, at))
    return out


def _latest(a: str | None, b: str | None) -> str | None:
    return max(a or "", b or "") or None


def keeper(live: Set[str], deleted: Set[str], now: datetime) -> Keep:
    """``keep`` for a catalog state: live collections stay, deleted ones go, and ones the
    catalog does not know stay for :data:`UNKNOWN_KEPT` after their last run."""
    oldest = iso(now - UNKNOWN_KEPT)

    def keep(cid: str, p: Published) -> bool:
        if cid in live:
            return True
        return cid not in deleted and (p.compacted_at or p.created_at) >= oldest

    return keep


def missing(recorded: Mapping[str, Published], written: Iterable[str],
            limit: int = BACKFILL_PER_PASS) -> list[str]:
    """Up to ``limit`` written collections no pass has recorded yet (pure)."""
    out = []
    for cid in written:
        if cid not in recorded:
            out.append(cid)
            if len(out) >= limit:
                break
    return out


def total_records(recorded: Mapping[str, Published], live: Set[str]) -> int:
    """The records of the live collections recorded (pure)."""
    return sum(p.records for cid, p in recorded.items() if cid in live)


def as_snapshot(p: Published) -> dict[str, Any]:
    """A declared collection's ``status.snapshot`` from its entry."""
    return {"version": p.version, "records": p.records, "bytes": p.bytes,
            "createdAt": p.created_at}


def as_last_compaction(p: Published) -> dict[str, Any] | None:
    """A declared collection's ``status.lastCompaction`` from its entry (``None``: no
    pass recorded a run)."""
    if p.compacted_at is None or p.result is None:
        return None
    return {"time": p.compacted_at, "result": p.result.capitalize(),
            "reason": p.reason or "", "snapshotVersion": p.version}


def after_pass(index: PublishedIndex, results: Mapping[str, CompactionResult], *,
               live: Set[str], deleted: Set[str], written: Iterable[str], now: datetime,
               used: Mapping[str, str] | None = None,
               ) -> tuple[dict[str, Published], dict[str, str]]:
    """Record what a pass published and the collections used since the last pass
    (``used``: id -> time), and up to :data:`BACKFILL_PER_PASS` written collections
    no pass recorded yet (read from their pointers).

    Returns every recorded collection, and the uses of collections that have no entry
    yet (no version): the caller keeps them for a later pass, as a use can only be
    recorded on an entry.
    """
    keep = keeper(live, deleted, now)
    used = dict(used or {})
    recorded = index.read()
    updates = {cid: p for cid, res in results.items() if (p := from_result(res, now))}
    touch = {cid: at for cid, at in used.items() if cid in recorded or cid in updates}
    if updates or touch:
        index.record(updates, keep, touch)
        recorded = index.cached()
    backfill = read_missing(index.store, missing(recorded, written))
    if backfill:
        index.record(backfill, keep, {cid: used[cid] for cid in backfill if cid in used})
        recorded = index.cached()
    return recorded, {cid: at for cid, at in used.items() if cid not in recorded}


def _decode(data: bytes) -> dict[str, Published]:
    return {cid: Published(**entry) for cid, entry in json.loads(data).items()}


def _encode(shard: Mapping[str, Published]) -> bytes:
    return json.dumps({cid: asdict(p) for cid, p in sorted(shard.items())},
                      separators=(",", ":")).encode()


class PublishedIndex:
    """The shards as this process last read them, and the only way it changes them."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._shards: dict[str, tuple[str, dict[str, Published]]] = {}  # key -> etag, entries

    def read(self) -> dict[str, Published]:
        """Every recorded collection: one conditional GET per shard, so shards no pass
        changed since the last read cost no bytes."""
        for s in SHARDS:
            key = f"{PREFIX}{s}.json"
            cached = self._shards.get(key)
            try:
                blob = self.store.get_if_changed(key, cached[0] if cached else None)
            except NotFound:
                self._shards.pop(key, None)
                continue
            if blob is not None:
                self._shards[key] = (blob.etag, _decode(blob.data))
        return self.cached()

    def cached(self) -> dict[str, Published]:
        """Every recorded collection as this process last read or wrote the shards (no
        I/O)."""
        out: dict[str, Published] = {}
        for _, entries in self._shards.values():
            out.update(entries)
        return out

    def record(self, updates: Mapping[str, Published], keep: Keep,
               used: Mapping[str, str] | None = None) -> None:
        """Merge ``updates`` and ``used`` into their shards (a GET and a conditional PUT
        per shard)."""
        by_shard: dict[str, tuple[dict[str, Published], dict[str, str]]] = {}
        for cid, p in updates.items():
            by_shard.setdefault(shard_key(cid), ({}, {}))[0][cid] = p
        for cid, at in (used or {}).items():
            by_shard.setdefault(shard_key(cid), ({}, {}))[1][cid] = at
        for key, (part, touched) in sorted(by_shard.items()):
            self._record_shard(key, part, keep, touched)

    def _record_shard(self, key: str, part: Mapping[str, Published], keep: Keep,
                      used: Mapping[str, str]) -> None:
        # From the copy last read or written here (a pass reads every shard first); a
        # conditional PUT refused means another process changed it: read it, merge again.
        etag, current = self._shards.get(key) or (None, {})
        for _ in range(MAX_ATTEMPTS):
            shard = merge(current, part, keep, used)
            data = _encode(shard)
            try:
                if etag is None:
                    new = self.store.put_if_absent(key, data)
                else:
                    new = self.store.put_if_match(key, data, etag)
            except PreconditionFailed:
                try:
                    blob = self.store.get(key)
                    etag, current = blob.etag, _decode(blob.data)
                except NotFound:
                    etag, current = None, {}
                continue
            self._shards[key] = (new, shard)
            return
        # Nothing is lost: the pointers hold the versions, and the next pass that folds
        # these collections (or the backfill) records them.
        log.warning("pool status shard busy; left to the next pass", extra=fields(shard=key))
