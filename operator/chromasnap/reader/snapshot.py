"""The reader core: keeps the newest verified snapshot open and serves reads from it.

``refresh`` polls the pointer with a conditional GET; on a new version it
downloads into the cache, verifies every file, opens it, and swaps it in.
Queries hold a reference to the snapshot they started on, so the old one is
closed and deleted only after its last in-flight query finishes. A snapshot
that fails verification is discarded and the current one keeps serving.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chromasnap.engine import persistence
from chromasnap.engine.merge import Version
from chromasnap.logs import fields
from chromasnap.reader import metrics
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer, snapshots
from chromasnap.storage.store import ObjectStore, StoreError

log = logging.getLogger("chromasnap.reader")


@dataclass
class LoadedSnapshot:
    """An open snapshot and the number of reads currently using it."""

    manifest: mf.Manifest
    path: Path
    handle: ExitStack
    collection: Any
    versions: Mapping[str, Version]
    applied: frozenset[str]
    refs: int = 0
    retired: bool = False
    loaded_at: float = field(default_factory=time.time)


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
    ) -> None:
        self.store = store
        self.on_swap = on_swap
        self.cache_dir = cache_dir / "snapshots"
        self.on_bytes = on_bytes
        self.cache_max_bytes = cache_max_bytes
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
                    return False
                cur = self._current
                if cur is not None and cur.manifest.version == seen.pointer.version:
                    self._etag = seen.etag
                    return False
                man = snapshots.load_manifest(self.store, seen.pointer.manifest)
                loaded = self._load(man)
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

    def _failed(self, kind: str, what: str, e: Exception) -> bool:
        metrics.READER_ERRORS.labels(kind).inc()
        self.failing, self.last_error = True, f"{type(e).__name__}: {e}"
        log.error(f"{what}; still serving the previous snapshot",
                  extra=fields(error=self.last_error, kind=kind))
        return False

    def _check_room(self, man: mf.Manifest) -> None:
        """Fail before downloading a snapshot that cannot fit, instead of filling the disk."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cur = self._current
        in_use = cur.manifest.byte_size if cur is not None else 0
        if self.cache_max_bytes and in_use + man.byte_size > self.cache_max_bytes:
            raise CacheFull(
                f"snapshot {man.version} needs {man.byte_size} bytes next to the "
                f"{in_use} in use, over the cache budget of {self.cache_max_bytes}: "
                "raise spec.reader.cacheSize"
            )
        free = shutil.disk_usage(self.cache_dir).free
        if man.byte_size > free:
            raise CacheFull(
                f"snapshot {man.version} needs {man.byte_size} bytes; the cache volume has "
                f"{free} free: raise spec.reader.cacheSize or free the volume"
            )

    def _load(self, man: mf.Manifest) -> LoadedSnapshot:
        path = self.cache_dir / man.version
        self._check_room(man)
        try:
            snapshots.fetch(self.store, man, path, self.on_bytes)
        except BaseException:
            # A partial download would hold the space a retry needs.
            shutil.rmtree(path, ignore_errors=True)
            raise
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
        return LoadedSnapshot(man, path, handle, opened.collection, versions,
                              frozenset(man.deltas))

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
        log.info("snapshot loaded", extra=fields(version=new.manifest.version,
                                                 records=new.manifest.record_count))
        if old is not None:
            self._maybe_close(old)

    def _maybe_close(self, snap: LoadedSnapshot) -> None:
        with self._lock:
            if not snap.retired or snap.refs > 0:
                return
            snap.refs = -1  # closed: never lent again
        snap.handle.close()
        shutil.rmtree(snap.path, ignore_errors=True)

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
