"""The compactor: folds pending deltas into a new full snapshot, fenced.

One run is exactly DESIGN.md's eight steps; each is timed and named so the
result says where time went and crash tests can stop the process at any of
them. A crash anywhere leaves the pointer on a complete, verified snapshot:
files and manifest are uploaded before the pointer moves, and deltas are
removed only after a pointer that lists them as applied is published.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import chromadb

from chromasnap.compactor.lock import Lock, LockLost
from chromasnap.config import CollectionSettings
from chromasnap.engine import chromadir, persistence, reads, replay
from chromasnap.engine.merge import plan, prune_tombstones
from chromasnap.engine.ops import Op
from chromasnap.logs import fields
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import NotFound, ObjectInfo, ObjectStore, StoreError

log = logging.getLogger("chromasnap.compactor")

STEPS = (
    "lock",
    "read_pointer",
    "list_deltas",
    "fetch_base",
    "apply",
    "upload",
    "swap",
    "cleanup",
)
# Crash tests set this to a step name (optionally "<step>:mid") to SIGKILL the process there.
FAILPOINT_ENV = "CHROMASNAP_TEST_KILL_AT"
QUARANTINE_PREFIX = "quarantine/"


@dataclass
class CompactionResult:
    """What one run did: machine-readable, and what the operator puts in status."""

    result: str = "failed"  # succeeded | skipped | failed
    reason: str = "Unknown"  # CamelCase, as in Kubernetes conditions
    message: str = ""
    version: str | None = None
    base_version: str | None = None
    deltas_folded: int = 0
    records_folded: int = 0
    superseded_ops: int = 0
    pending_deltas: int = 0
    corrupt_deltas: list[str] = field(default_factory=list)
    record_count: int | None = None
    snapshot_bytes: int | None = None
    snapshot_created_at: str | None = None
    lock_contended: bool = False
    deltas_deleted: int = 0
    snapshots_deleted: int = 0
    steps: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


@dataclass(frozen=True)
class CompactorOptions:
    """Knobs of one run (mirrors CompactorSettings, without env parsing)."""

    identity: str
    cache_dir: Path
    retain_snapshots: int = 3
    delta_grace_seconds: float = 600.0
    max_deltas_per_run: int = 10_000


def _failpoint(step: str, where: str = "") -> None:
    target = os.environ.get(FAILPOINT_ENV)
    if target and target == (f"{step}:{where}" if where else step):
        log.warning("failpoint hit; killing self", extra=fields(step=step, where=where))
        os.kill(os.getpid(), signal.SIGKILL)


class Compactor:
    """Runs compactions for one collection root in an object store."""

    def __init__(
        self,
        store: ObjectStore,
        settings: CollectionSettings,
        lock: Lock,
        options: CompactorOptions,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.lock = lock
        self.opt = options
        self.on_bytes = on_bytes
        self.snap_cache = options.cache_dir / "snapshots"
        self.work_dir = options.cache_dir / "work"

    @contextmanager
    def _step(self, res: CompactionResult, name: str) -> Iterator[None]:
        _failpoint(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            res.steps[name] = round(time.perf_counter() - t0, 4)

    def run(self) -> CompactionResult:
        """One compaction run; never raises for expected failures (they are in the result)."""
        res = CompactionResult()
        t0 = time.perf_counter()
        locked = False
        try:
            with self._step(res, "lock"):
                locked = self.lock.acquire()
            if not locked:
                res.result, res.reason = "skipped", "LockHeld"
                res.lock_contended = True
                res.message = f"another compactor holds the lock: {self.lock.describe_holder()}"
                return res
            self._run_locked(res)
        except LockLost as e:
            res.result, res.reason, res.message = "failed", "LockLost", str(e)
        except pointer.Fenced as e:
            res.result, res.reason, res.message = "skipped", "Fenced", str(e)
        except mf.CorruptSnapshot as e:
            res.result, res.reason, res.message = "failed", "CorruptSnapshot", str(e)
        except StoreError as e:
            res.result, res.reason, res.message = "failed", "StorageError", str(e)
        except Exception as e:
            log.exception("compaction failed")
            res.result, res.reason = "failed", "InternalError"
            res.message = f"{type(e).__name__}: {e}"
        finally:
            if locked:
                self.lock.release()
            res.duration_seconds = round(time.perf_counter() - t0, 4)
            level = logging.WARNING if res.result == "failed" else logging.INFO
            log.log(
                level, "compaction %s: %s", res.result, res.reason, extra=fields(**res.to_dict())
            )
        return res

    def _run_locked(self, res: CompactionResult) -> None:
        # Once another compactor publishes, retention may delete the version this
        # run started from, and reading it fails: report that as what it is.
        seen: list[str | None] = []
        try:
            self._fold(res, seen)
        except (mf.CorruptSnapshot, StoreError) as e:
            if seen and pointer.read(self.store).etag != seen[0]:
                raise pointer.Fenced(f"the pointer moved while this run read its base: {e}") from e
            raise

    def _fold(self, res: CompactionResult, seen: list[str | None]) -> None:
        """Steps 2–8 of a run; ``seen`` receives the ETag of the pointer it read."""
        with self._step(res, "read_pointer"):
            cur = pointer.read(self.store)
            seen.append(cur.etag)
            base = (
                snapshots.load_manifest(self.store, cur.pointer.manifest) if cur.pointer else None
            )
            res.base_version = base.version if base else None
        with self._step(res, "list_deltas"):
            listed = {
                o.key[len(deltas.DELTA_PREFIX) :]: o
                for o in self.store.list(deltas.DELTA_PREFIX)
                if deltas.is_delta_key(o.key)
            }
            applied = set(base.deltas) if base else set()
            pending = sorted(n for n in listed if n not in applied)
            todo = pending[: self.opt.max_deltas_per_run]
            res.pending_deltas = len(pending)
        self.lock.check()
        if base is not None and not todo:
            res.result, res.reason = "skipped", "NothingToDo"
            res.message = f"no pending deltas; snapshot {base.version} is current"
            res.version, res.record_count, res.snapshot_bytes = (
                base.version,
                base.record_count,
                base.byte_size,
            )
            res.snapshot_created_at = base.created_at.isoformat()
            with self._step(res, "cleanup"):
                self._cleanup(res, listed)
            return

        version = mf.new_version(base.seq + 1 if base else 1)
        work = self.work_dir / version
        shutil.rmtree(self.work_dir, ignore_errors=True)
        with self._step(res, "fetch_base"):
            collection_id = self._prepare_base(base, work)
        self.lock.check()

        with self._step(res, "apply"):
            ops, folded = self._load_deltas(todo, res)
            versions = snapshots.read_versions(work / mf.VERSIONS_FILE)
            fold = plan(ops, versions)
            versions.update(fold.versions)
            horizon = int((time.time() - self.opt.delta_grace_seconds) * 1e6)
            versions = prune_tombstones(versions, horizon)
            with persistence.open_collection(work / mf.DB_DIR, self.settings.name) as (_, col):
                replay.apply_ops(col, fold.ops, dimension=self.settings.dimension)
                record_count = int(col.count())
                model = reads.collection_info(col)
            persistence.finalize(work / mf.DB_DIR)
            snapshots.write_versions(work / mf.VERSIONS_FILE, versions)
            res.deltas_folded = len(folded)
            res.records_folded = len(fold.ops)
            res.superseded_ops = fold.superseded
            res.pending_deltas = len(pending) - len(todo)
        self.lock.check()

        still_there = (set(base.deltas) & listed.keys()) if base else set()
        applied_now = sorted(still_there | set(folded))

        def make_manifest(files: list[mf.FileEntry]) -> mf.Manifest:
            return mf.Manifest(
                version=version,
                seq=mf.version_seq(version),
                parent=base.version if base else None,
                chromadb_version=chromadb.__version__,
                collection=mf.CollectionInfo(
                    id=collection_id, settings=self.settings, model=model
                ),
                record_count=record_count,
                byte_size=sum(f.size for f in files),
                files=files,
                deltas=applied_now,
                created_at=mf.now(),
                compactor=self.opt.identity,
            )

        with self._step(res, "upload"):
            new = snapshots.publish(
                self.store,
                work,
                mf.snapshot_prefix(version),
                make_manifest,
                self.on_bytes,
                after_first_file=lambda: _failpoint("upload", "mid"),
            )
        self.lock.check()
        with self._step(res, "swap"):
            try:
                pointer.swap(self.store, version, new.key, cur.etag, self.opt.identity)
            except pointer.Fenced:
                # Our snapshot lost the race; delete it so it is not mistaken for a live one.
                self._delete_snapshot(version)
                raise
        res.result, res.reason = "succeeded", "Compacted"
        res.version, res.record_count, res.snapshot_bytes = version, record_count, new.byte_size
        res.snapshot_created_at = new.created_at.isoformat()
        res.message = f"folded {len(folded)} deltas ({len(fold.ops)} writes) into {version}" + (
            f"; {len(pending) - len(todo)} deltas still pending" if len(pending) > len(todo) else ""
        )
        # The new snapshot is verified and local: keep it as the next run's base.
        self._adopt_into_cache(work, version)
        with self._step(res, "cleanup"):
            try:
                self._cleanup(res, listed)
            except (StoreError, mf.CorruptSnapshot) as e:
                # The version is published; leftovers are collected by the next run.
                log.warning("clean-up failed after publishing", extra=fields(error=str(e)))

    def _prepare_base(self, base: mf.Manifest | None, work: Path) -> str:
        """Put a writable copy of the base (or a new empty collection) at ``work``."""
        work.mkdir(parents=True)
        if base is None:
            return chromadir.create_collection(work / mf.DB_DIR, self.settings)
        cached = self.snap_cache / base.version
        if not cached.is_dir():
            shutil.rmtree(self.snap_cache, ignore_errors=True)
            snapshots.fetch(self.store, base, cached, self.on_bytes)
        # Work on a copy: a failed run must not damage the verified cache.
        shutil.copytree(cached / mf.DB_DIR, work / mf.DB_DIR)
        if (cached / mf.VERSIONS_FILE).exists():
            shutil.copy2(cached / mf.VERSIONS_FILE, work / mf.VERSIONS_FILE)
        return base.collection.id

    def _load_deltas(self, names: list[str], res: CompactionResult) -> tuple[list[Op], list[str]]:
        """Download and decode deltas; corrupt ones are quarantined, never applied."""
        ops: list[Op] = []
        folded: list[str] = []
        for name in names:
            key = deltas.DELTA_PREFIX + name
            try:
                data = self.store.get(key).data
                ops.extend(deltas.decode(data, self.settings.dimension))
                folded.append(name)
            except NotFound:
                # Deleted between list and get: only possible for an applied delta
                # cleaned up by a racing compactor, so there is nothing to fold.
                continue
            except deltas.CorruptDelta as e:
                log.error("corrupt delta quarantined", extra=fields(delta=name, error=str(e)))
                self.store.put(QUARANTINE_PREFIX + name, data)
                self.store.delete_many([key])
                res.corrupt_deltas.append(name)
        return ops, folded

    def _adopt_into_cache(self, work: Path, version: str) -> None:
        shutil.rmtree(self.snap_cache, ignore_errors=True)
        self.snap_cache.mkdir(parents=True, exist_ok=True)
        work.rename(self.snap_cache / version)

    def _delete_snapshot(self, version: str) -> int:
        keys = [o.key for o in self.store.list(mf.snapshot_prefix(version))]
        # Manifest first: a snapshot without a manifest is never used by anyone.
        keys.sort(key=lambda k: not k.endswith(mf.MANIFEST_FILE))
        self.store.delete_many(keys)
        return len(keys)

    def _cleanup(self, res: CompactionResult, listed: dict[str, ObjectInfo]) -> None:
        """Remove applied deltas and unreachable snapshots, judged by the pointer *now*.

        Safety never rests on the lock or the grace period: the pointer is
        re-read here, after any stall, and only what it can no longer reach is
        deleted. A delta goes only once the live snapshot lists it as applied
        (every later version descends from that one, so none needs it again); a
        snapshot goes only if it is outside the live lineage's retention *and*
        can never become live: its lineage depth is not above the pointer's, so
        any compaction that built it read an older pointer and its swap is
        fenced. Versions above the pointer may be a compaction in flight and
        are left for a later run. The grace period only spares objects a reader
        may still be downloading.
        """
        _failpoint("cleanup", "start")
        live = self._live_manifest()
        if live is None:
            return
        cutoff = time.time() - self.opt.delta_grace_seconds
        old_applied = [
            deltas.DELTA_PREFIX + n
            for n in live.deltas
            if n in listed and listed[n].last_modified < cutoff
        ]
        if old_applied:
            half = len(old_applied) // 2
            self.store.delete_many(old_applied[:half])
            _failpoint("cleanup", "mid")
            self.store.delete_many(old_applied[half:])
        res.deltas_deleted = len(old_applied)
        res.snapshots_deleted = self._apply_retention(live, cutoff)

    def _live_manifest(self) -> mf.Manifest | None:
        """The manifest the pointer names at this moment (``None`` if there is none)."""
        cur = pointer.read(self.store).pointer
        return snapshots.load_manifest(self.store, cur.manifest) if cur else None

    def _lineage(self, current: mf.Manifest) -> list[str]:
        """The current version and its ancestors, newest first, up to the retention count."""
        chain = [current.version]
        parent = current.parent
        while parent is not None and len(chain) < self.opt.retain_snapshots:
            chain.append(parent)
            try:
                parent = snapshots.load_manifest(
                    self.store, mf.snapshot_prefix(parent) + mf.MANIFEST_FILE
                ).parent
            except mf.CorruptSnapshot:
                break
        return chain

    def _apply_retention(self, live: mf.Manifest, cutoff: float) -> int:
        """Drop snapshots outside the live lineage that can never become live, once old enough."""
        newest: dict[str, float] = {}
        for o in self.store.list(mf.SNAPSHOT_PREFIX):
            v = o.key[len(mf.SNAPSHOT_PREFIX) :].split("/", 1)[0]
            newest[v] = max(newest.get(v, 0.0), o.last_modified)
        keep = set(self._lineage(live))
        deleted = 0
        for v, modified in newest.items():
            # Recent objects may be a reader's download source or a racing upload.
            if v in keep or modified >= cutoff or not _below_pointer(v, live):
                continue
            deleted += 1
            self._delete_snapshot(v)
        return deleted


def _below_pointer(version: str, live: mf.Manifest) -> bool:
    """Whether ``version`` can never become live: its depth is at most the pointer's.

    A compaction names its version ``base.seq + 1`` and swaps with ``If-Match``
    on the pointer it read, so a version at depth ``<= live.seq`` that is not
    live was built on an older pointer and its swap fails. Unparseable names
    are not ours to judge and are kept.
    """
    try:
        return mf.version_seq(version) <= live.seq
    except ValueError:
        return False

