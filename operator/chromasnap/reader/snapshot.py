"""The reader core: keeps the newest verified version open and serves reads from it.

``refresh`` polls the pointer with a conditional GET. On a new version it
downloads only what its local copy lacks: the new segments when the base is
the one it already has, else the base too; every byte is verified. The
version is swapped in at once, its new segments served as an overlay
(``freshview``); ``fold_pending`` then folds them into a fresh local copy in
the background and swaps that in, so queries go back to one chromadb index.
Queries hold a reference to the version they started on, so an old copy is
closed and deleted only after its last in-flight query finishes. A version
that fails verification is discarded and the current one keeps serving.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any, cast

from chromasnap.config import CollectionSettings
from chromasnap.engine import chromadir, persistence, reads
from chromasnap.engine.hnswindex import SegmentIndex
from chromasnap.engine.merge import Record, Version
from chromasnap.engine.ops import Op
from chromasnap.logs import fields
from chromasnap.reader import layers, metrics
from chromasnap.reader.foldproc import fold_in_child
from chromasnap.reader.freshview import EMPTY, Overlay, build_planned
from chromasnap.reader.indexsearch import Placed
from chromasnap.reader.lineage import Lineage, of_chain
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer, segments, snapshots
from chromasnap.storage.store import ObjectStore, StoreError

log = logging.getLogger("chromasnap.reader")

#: Manifests read back to the previously loaded version when several were skipped; a
#: longer gap leaves the tail's older deltas undecided (the next LIST reads them again).
MAX_SKIPPED_VERSIONS = 64
#: Records a copy remembers for the overlays (about 15 MB at 384 dimensions).
KNOWN_RECORDS = 10_000


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def records_of(collection: Any) -> Callable[[list[str]], Mapping[str, Record]]:
    """A lookup of ``collection``'s records by id, as the overlays need them."""
    return reads.state_lookup(collection)


@dataclass
class LocalCopy:
    """A reader's own chromadb copy: a version's base with its first ``segments`` folded in.

    Several loaded versions can share one copy (a new version that only adds
    segments); it is closed and deleted when the last of them is.
    """

    path: Path
    handle: ExitStack
    collection: Any
    versions: Mapping[str, Version]
    base: str
    segments: tuple[str, ...] = ()
    users: int = 1
    #: Records looked up so far, by id (None: not in the copy). A copy never changes
    #: while loaded, and every overlay a fresh read builds asks for the records its
    #: tail touches again: fetching them (vectors included) from chromadb each time
    #: made a read's cost grow with the tail. Bounded by KNOWN_RECORDS.
    known: dict[str, Record | None] = field(default_factory=dict)

    def records(self, ids: list[str]) -> Mapping[str, Record]:
        """The records of ``ids`` this copy holds (remembered; safe from any thread)."""
        missing = [rid for rid in ids if rid not in self.known]
        if missing:
            if len(self.known) + len(missing) > KNOWN_RECORDS:
                self.known = {}
            got = records_of(self.collection)(missing)
            self.known.update({rid: got.get(rid) for rid in missing})
        known = self.known
        return {rid: rec for rid in ids if (rec := known.get(rid)) is not None}


@dataclass
class LoadedSnapshot:
    """An open version and the number of reads currently using it.

    Reads see ``local`` with ``pending`` (the overlay of the version's
    segments the copy does not hold yet) merged on top; ``versions`` are the
    version's, segments included; ``lineage`` says which deltas it folded.
    """

    manifest: mf.Manifest
    local: LocalCopy
    pending: Overlay
    versions: Mapping[str, Version]
    lineage: Lineage
    refs: int = 0
    retired: bool = False
    loaded_at: float = field(default_factory=time.time)

    @property
    def collection(self) -> Any:
        """The local chromadb collection (the base, plus the segments folded so far)."""
        return self.local.collection

    @property
    def space(self) -> str:
        """The collection's distance space."""
        return self.manifest.collection.settings.space.value

    @cached_property
    def source(self) -> layers.Source:
        """The version's layers: the local copy with the pending segments' overlay on it."""
        return layers.on(layers.ChromaSource(self.local.collection, self.local.records),
                         self.pending, self.space)

    @property
    def path(self) -> Path:
        """Where the local copy lives."""
        return self.local.path


class CacheFull(OSError):
    """A snapshot does not fit in the reader's cache budget or volume."""


class SnapshotReader:
    """Loads snapshots of one collection root and lends them to reads."""

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: Path,
        on_bytes: Callable[[int], None] | None = None,
        on_swap: Callable[[LoadedSnapshot], None] | None = None,
        cache_max_bytes: int = 0,
        fold_min_rows: int = 0,
    ) -> None:
        self.store = store
        self.on_swap = on_swap
        self.cache_dir = cache_dir / "snapshots"
        self.on_bytes = on_bytes
        self.cache_max_bytes = cache_max_bytes
        #: Fold a version's segments into a new local copy only once its overlay has this
        #: many records to search exhaustively (0: always). Records segment indexes hold
        #: are searched at full speed without a fold (``indexsearch``).
        self.fold_min_rows = fold_min_rows
        #: The last segments' overlay built, to extend when the next version only adds
        #: segments: (copy, segment names, overlay, versions the segments set).
        self._built: tuple[LocalCopy, tuple[str, ...], Overlay, dict[str, Version]] | None = None
        #: True while refreshes fail to reach the bucket or to load into the cache.
        self.failing = False
        self._etag: str | None = None
        self._current: LoadedSnapshot | None = None
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.last_error: str | None = None
        self.swaps = 0
        # Start clean: a cache from a previous process is not trusted.
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    @property
    def current(self) -> LoadedSnapshot | None:
        """The snapshot new reads will use."""
        return self._current

    def ready(self) -> bool:
        """Readiness: a verified snapshot is loaded."""
        return self._current is not None

    def refresh(self) -> bool:
        """Poll the pointer; load and swap in a new snapshot. True when a swap happened.

        Errors (storage down, corrupt snapshot) are logged and counted; the
        current snapshot keeps serving.
        """
        with self._refresh_lock:
            t0 = time.perf_counter()
            try:
                seen = pointer.poll(self.store, self._etag)
                if seen is None or seen.pointer is None:
                    self._reached()
                    return False
                cur = self._current
                if cur is not None and cur.manifest.version == seen.pointer.version:
                    self._etag = seen.etag
                    self._reached()
                    return False
                man = snapshots.load_manifest(self.store, seen.pointer.manifest)
                loaded = self._load(man, self._lineage_of(man, cur))
            except mf.CorruptSnapshot as e:
                metrics.READER_REJECTED_SNAPSHOTS.inc()
                self.last_error = str(e)
                log.error("snapshot rejected; still serving the previous one",
                          extra=fields(error=str(e)))
                # Remember the ETag so a broken version is not re-downloaded every poll.
                self._etag = seen.etag if seen is not None else self._etag
                return False
            except StoreError as e:
                return self._failed("storage", "pointer poll failed", e)
            except OSError as e:
                # Cache full or not writable: the pointer is not marked as seen, so
                # the next poll tries again once space or the mount comes back.
                return self._failed("cache", "snapshot could not be cached", e)
            except Exception as e:
                return self._failed("internal", "snapshot refresh failed", e)
            self.failing, self.last_error = False, None
            self._etag = seen.etag
            self._swap(loaded)
            metrics.READER_SWAP_SECONDS.observe(time.perf_counter() - t0)
            return True

    def _reached(self) -> None:
        """The bucket answered and the served version is current: no longer failing.

        Without this a reader that lived through an outage stayed "failing"
        until the next version arrived, and its poll loop kept backing off.
        """
        if self.failing:
            self.failing, self.last_error = False, None

    def _failed(self, kind: str, what: str, e: Exception) -> bool:
        metrics.READER_ERRORS.labels(kind).inc()
        self.failing, self.last_error = True, f"{type(e).__name__}: {e}"
        log.error(f"{what}; still serving the previous snapshot",
                  extra=fields(error=self.last_error, kind=kind))
        return False

    def _check_room(self, what: str, needed: int) -> None:
        """Fail before writing what cannot fit, instead of filling the disk."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cur = self._current
        in_use = _dir_bytes(cur.local.path) if cur is not None else 0
        if self.cache_max_bytes and in_use + needed > self.cache_max_bytes:
            raise CacheFull(
                f"{what} needs {needed} bytes next to the "
                f"{in_use} in use, over the cache budget of {self.cache_max_bytes}: "
                "raise spec.reader.cacheSize"
            )
        free = shutil.disk_usage(self.cache_dir).free
        if needed > free:
            raise CacheFull(
                f"{what} needs {needed} bytes; the cache volume has "
                f"{free} free: raise spec.reader.cacheSize or free the volume"
            )

    def _shareable(self, man: mf.Manifest) -> LocalCopy | None:
        """The current copy, if ``man`` is its base plus more segments (taken for ``man``)."""
        with self._lock:
            cur = self._current
            if cur is None or cur.local.users <= 0:
                return None
            local = cur.local
            if (local.base != man.base_version
                    or man.segment_names[: len(local.segments)] != local.segments):
                return None
            local.users += 1
            return local

    def _lineage_of(self, man: mf.Manifest, cur: LoadedSnapshot | None) -> Lineage:
        """Which deltas ``man`` folded since ``cur``: its applied set misses deleted ones.

        Reads the manifests of the versions skipped since ``cur`` (none when
        ``man`` is ``cur``'s child), so the tail can tell the deltas they folded.
        """
        chain = islice(snapshots.ancestry(self.store, man), MAX_SKIPPED_VERSIONS + 1)
        return of_chain(chain, cur.manifest.version if cur is not None else None)

    def _load(self, man: mf.Manifest, lineage: Lineage) -> LoadedSnapshot:
        local = self._shareable(man)
        if local is None:
            local = self._load_base(man)
        try:
            return self._with_segments(man, local, lineage)
        except BaseException:
            self._release(local)
            raise

    def _load_base(self, man: mf.Manifest) -> LocalCopy:
        path = self.cache_dir / man.version
        self._check_room(f"snapshot {man.version}", man.base_bytes)
        try:
            snapshots.fetch(self.store, man, path, self.on_bytes)
        except BaseException:
            # A partial download would hold the space a retry needs.
            shutil.rmtree(path, ignore_errors=True)
            raise
        return self._open(man, path, ())

    def _open(self, man: mf.Manifest, path: Path, folded: tuple[str, ...]) -> LocalCopy:
        handle = ExitStack()
        try:
            versions = snapshots.open_versions(path / mf.VERSIONS_FILE)
            # Readers never write, so there is nothing to flush on close.
            opened = handle.enter_context(
                persistence.open_collection(path / mf.DB_DIR, man.collection.settings.name,
                                            flush_on_exit=False)
            )
        except Exception as e:
            handle.close()
            shutil.rmtree(path, ignore_errors=True)
            raise mf.CorruptSnapshot(f"snapshot {man.version} does not open: {e}") from e
        return LocalCopy(path, handle, opened.collection, versions, man.base_version, folded)

    def _with_segments(self, man: mf.Manifest, local: LocalCopy,
                       lineage: Lineage) -> LoadedSnapshot:
        """The version ``man`` on ``local``: download the segments it lacks, overlay them.

        When the previous version had the same copy and a prefix of these
        segments, its overlay is extended by the new ones only.
        """
        names = man.segment_names[len(local.segments):]
        under, seg_versions = EMPTY, dict[str, Version]()
        built = self._built
        if built is not None and built[0] is local and names[:len(built[1])] == built[1]:
            _, done, under, seg_versions = built
            seg_versions = dict(seg_versions)
        else:
            done = ()
        settings = man.collection.settings
        ops: list[Op] = []
        placed: list[Placed] = []
        for seg in man.segments[len(local.segments) + len(done):]:
            if seg.indexed:
                placed.append(Placed(len(ops), self._index_of(seg, settings)))
            ops += segments.read_ops(self.store, seg, settings.dimension, self.on_bytes)
            seg_versions.update(segments.read_versions(self.store, seg, self.on_bytes))
        pending = build_planned(ops, settings.dimension, local.records,
                                space=settings.space.value, under=under, placed=placed)
        self._built = (local, names, pending, seg_versions)
        # ChainMap only ever writes to its first map; the copy's table is read-only.
        below = cast(MutableMapping[str, Version], local.versions)
        return LoadedSnapshot(man, local, pending, ChainMap(seg_versions, below), lineage)

    def _index_of(self, seg: mf.Segment, settings: CollectionSettings) -> SegmentIndex:
        """Segment ``seg``'s index, downloaded and loaded into memory (its files deleted)."""
        dest = self.cache_dir / "indexes" / seg.name
        self._check_room(f"the index of segment {seg.name}",
                         sum(seg.file(p).size for p in (mf.INDEX_FILE, mf.INDEX_IDS_FILE)))
        try:
            return segments.fetch_index(self.store, seg, dest, settings.space.value,
                                        settings.dimension, settings.hnsw_search_ef,
                                        self.on_bytes)
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    def wants_fold(self, snap: LoadedSnapshot) -> bool:
        """Whether ``snap``'s segments should be folded into a new local copy.

        Only when its overlay has at least ``fold_min_rows`` records that no
        segment index holds: the rest are searched at full speed as they are.
        """
        if len(snap.manifest.segments) == len(snap.local.segments):
            return False
        sv = snap.pending.served
        exhaustive = len(snap.pending.live) if sv is None else len(sv.exhaustive)
        return exhaustive >= self.fold_min_rows

    def _release(self, local: LocalCopy) -> None:
        with self._lock:
            local.users -= 1
            if local.users > 0:
                return
        local.handle.close()
        shutil.rmtree(local.path, ignore_errors=True)
        # What this copy's index and caches held is free now, but glibc would keep it.
        chromadir.release_memory()

    # -- folding segments into the local copy -------------------------------------------

    def fold_pending(self) -> bool:
        """Fold the current version's pending segments into a new local copy, then swap.

        Reads keep using the current copy and overlay meanwhile; the result
        is the same version without an overlay (what a full compaction would
        have written), so queries go back to one chromadb index. True when a
        fold was swapped in; StoreError when the segments cannot be read
        (the caller retries later).
        """
        with self._lock:
            cur = self._current
            if cur is None or not self.wants_fold(cur):
                return False
            cur.refs += 1  # keeps the copy being read from alive
        try:
            return self._fold(cur)
        finally:
            with self._lock:
                cur.refs -= 1
            self._maybe_close(cur)

    def _fold(self, cur: LoadedSnapshot) -> bool:
        man = cur.manifest
        path = self.cache_dir / f"{man.version}-folded-{len(man.segments)}"
        self._check_room(f"folding version {man.version}", _dir_bytes(cur.local.path))
        t0 = time.perf_counter()
        try:
            shutil.rmtree(path, ignore_errors=True)
            settings = man.collection.settings
            # Read again: a reader keeps only the overlay of the segments it serves, and
            # folds are rare (see ``wants_fold``).
            ops, _ = segments.read_all(self.store, man.segments[len(cur.local.segments):],
                                       settings.dimension, self.on_bytes)
            # In a child process: chromadb's write calls hold the GIL for their whole
            # duration, and probes and queries in this process would wait for them.
            fold_in_child(cur.local.path / mf.DB_DIR, path / mf.DB_DIR, settings.name,
                          settings.dimension, ops)
            updates = {rid: cur.versions[rid] for rid in cur.pending.records}
            snapshots.merge_versions_file(cur.local.path / mf.VERSIONS_FILE, updates,
                                          path / mf.VERSIONS_FILE)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        local = self._open(man, path, man.segment_names)
        folded = LoadedSnapshot(man, local, EMPTY, local.versions, cur.lineage)
        with self._refresh_lock:
            if self._current is not cur:
                self._release(local)  # a newer version arrived meanwhile: fold that one
                return False
            self._swap(folded)
        metrics.READER_FOLD_SECONDS.observe(time.perf_counter() - t0)
        return True

    def run_folds(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Fold pending segments in the background until ``stop`` is set (a thread's target)."""
        while not stop.is_set():
            try:
                self.fold_pending()
            except Exception as e:
                metrics.READER_ERRORS.labels("fold").inc()
                log.error("folding segments failed; serving them as an overlay",
                          extra=fields(error=f"{type(e).__name__}: {e}"))
            stop.wait(interval_s)

    def _swap(self, new: LoadedSnapshot) -> None:
        with self._lock:
            old, self._current = self._current, new
            if old is not None:
                old.retired = True
        self.swaps += 1
        if self.on_swap is not None:
            self.on_swap(new)
        metrics.READER_SWAPS.inc()
        metrics.READER_SNAPSHOT_VERSION_SEQ.set(new.manifest.seq)
        metrics.READER_SNAPSHOT_CREATED.set(new.manifest.created_at.timestamp())
        metrics.READER_SEGMENTS_PENDING.set(
            len(new.manifest.segments) - len(new.local.segments) if self.wants_fold(new) else 0)
        log.info("snapshot loaded", extra=fields(
            version=new.manifest.version, records=new.manifest.record_count,
            segments=len(new.manifest.segments), folded=len(new.local.segments)))
        if old is not None:
            self._maybe_close(old)

    def _maybe_close(self, snap: LoadedSnapshot) -> None:
        with self._lock:
            if not snap.retired or snap.refs != 0:  # -1: already closed
                return
            snap.refs = -1  # closed: never lent again
        self._release(snap.local)

    @contextmanager
    def use(self) -> Iterator[LoadedSnapshot]:
        """Lend the current snapshot to one read; it stays open until the read ends."""
        with self._lock:
            snap = self._current
            if snap is None:
                raise LookupError("no snapshot loaded yet")
            snap.refs += 1
        try:
            yield snap
        finally:
            with self._lock:
                snap.refs -= 1
            self._maybe_close(snap)

    def close(self) -> None:
        """Close the current snapshot (process shutdown)."""
        with self._lock:
            snap, self._current = self._current, None
        if snap is not None:
            snap.retired = True
            self._maybe_close(snap)
