"""The compactor: folds pending deltas into a new version, fenced.

One run is exactly DESIGN.md's eight steps; each is timed and named so the
result says where time went and crash tests can stop the process at any of
them. The merge policy (``policy.py``) decides what the run writes: usually
a *segment* (the deltas' surviving writes, on top of the same base: nothing
of the base is downloaded but the version tables), sometimes a *full*
version (base and segments folded into a new base, as every run did before
segments). A crash anywhere leaves the pointer on a complete, verified
version: files and manifest are uploaded before the pointer moves, deltas
are removed only after a pointer that lists them as applied is published,
and nothing reachable from a retained version is collected (``collect.py``).

Size: the run's steps and its two kinds of version share one run's state; split,
each half would need the other's.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chromasnap.compactor import collect, policy
from chromasnap.compactor.bootstrap import BootstrapFailed, start_from
from chromasnap.compactor.lock import Lock, LockLost
from chromasnap.compactor.newversion import NewVersion, model_after
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings, SettingsMismatch, keep_recorded
from chromasnap.engine import chromadir, persistence, reads, rebuild, replay
from chromasnap.engine.merge import (
    Version,
    expand_filtered_deletes,
    needs_records,
    plan,
    prune_tombstones,
    retain,
    settle,
)
from chromasnap.engine.ops import Op
from chromasnap.logs import fields
from chromasnap.storage import deltas, pointer, segments, snapshots
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
        self._supplied: dict[str, bytes] = {}

    @contextmanager
    def _step(self, res: CompactionResult, name: str) -> Iterator[None]:
        _failpoint(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            res.steps[name] = round(time.perf_counter() - t0, 4)

    def run(self, supplied: Mapping[str, bytes] | None = None) -> CompactionResult:
        """One run, ``supplied`` deltas (a pool's batches) as if listed; failures in the result."""
        self._supplied = dict(supplied or {})
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
        except BootstrapFailed as e:
            res.result, res.reason, res.message = "failed", "BootstrapFailed", str(e)
        except SettingsMismatch as e:
            res.result, res.reason, res.message = "failed", "SettingsMismatch", str(e)
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
            settings, kept = self._settings_for(base)
        with self._step(res, "list_deltas"):
            listed = {
                o.key[len(deltas.DELTA_PREFIX) :]: o
                for o in self.store.list(deltas.DELTA_PREFIX)
                if deltas.is_delta_key(o.key)
            }
            applied = set(base.deltas) if base else set()
            pending = sorted(n for n in listed.keys() | self._supplied.keys() if n not in applied)
            todo = pending[: self.opt.max_deltas_per_run]
            res.pending_deltas = len(pending)
        self.lock.check()
        if base is not None and not todo:
            res.result, res.reason = "skipped", "NothingToDo"
            res.message = f"no pending deltas; snapshot {base.version} is current{kept}"
            res.version, res.record_count, res.snapshot_bytes = (
                base.version,
                base.record_count,
                base.byte_size,
            )
            res.snapshot_created_at = base.created_at.isoformat()
            res.segments = len(base.segments)
            with self._step(res, "cleanup"):
                self._cleanup(res, listed)
            return

        version = mf.new_version(base.seq + 1 if base else 1)
        work = self.work_dir / version
        shutil.rmtree(self.work_dir, ignore_errors=True)
        work.mkdir(parents=True)
        with self._step(res, "fetch_base"):
            ops, folded = self._load_deltas(todo, res)
            decision = policy.decide(base, len(ops), self.opt.policy)
            retained = base.retained_filters if base else []
            if not decision.full and needs_records(ops, retained):
                # A filtered delete is decided on the version's records (also one already
                # folded, for a late write older than it), which a segment run never
                # reads: this run folds everything into a new base.
                decision = policy.Decision(True, why="a filtered delete needs the records")
            res.kind = "full" if decision.full else "segment"
            res.segments_merged = decision.merge
            prepared = (self._prepare_full(base, work) if decision.full
                        else self._prepare_segment(base, decision.merge, ops))
        self.lock.check()

        still_there = set(base.deltas) & (listed.keys() | self._supplied.keys()) if base else set()
        newest = max([(base.newest_write_us or 0) if base else 0,
                      *(op.key.ts_us for op in ops)])
        horizon = int((time.time() - self.opt.delta_grace_seconds) * 1e6)
        keep = [mf.RetainedFilter.of(f) for f in retain(retained, ops, horizon)]
        fields_ = NewVersion(version, base, sorted(still_there | set(folded)), self.opt.identity,
                              settings, newest, keep)
        if isinstance(prepared, _FullBase):
            new = self._write_full(res, work, prepared, ops, fields_, retained)
        else:
            assert isinstance(prepared, _SegmentBase)
            new = self._write_segment(res, work, prepared, ops, fields_)
        res.deltas_folded = len(folded)
        res.pending_deltas = len(pending) - len(todo)
        self.lock.check()
        with self._step(res, "swap"):
            try:
                pointer.swap(self.store, version, new.key, cur.etag, self.opt.identity)
            except pointer.Fenced:
                # Our version lost the race; delete it so it is not mistaken for a live one.
                collect.delete_prefix(self.store, mf.snapshot_prefix(version))
                for seg in new.segments:
                    if seg.name == version:
                        collect.delete_prefix(self.store, seg.prefix)
                raise
        res.result, res.reason = "succeeded", "Compacted"
        res.version, res.record_count, res.snapshot_bytes = version, new.record_count, new.byte_size
        res.segments = len(new.segments)
        res.snapshot_created_at = new.created_at.isoformat()
        res.message = (
            f"folded {len(folded)} deltas ({res.records_folded} writes) into {version} "
            f"({decision.why})"
            + (f"; {res.pending_deltas} deltas still pending" if res.pending_deltas else "")
            + kept
        )
        if decision.full:
            # The new snapshot is verified and local: keep it as the next full run's base.
            self._adopt_into_cache(work, version)
        if not listed and (base.seq + 1 if base else 1) % self.opt.cleanup_every:
            return  # nothing listed to delete; old versions wait for a later run
        with self._step(res, "cleanup"):
            try:
                self._cleanup(res, listed)
            except (StoreError, mf.CorruptSnapshot) as e:
                # The version is published; leftovers are collected by the next run.
                log.warning("clean-up failed after publishing", extra=fields(error=str(e)))

    def _settings_for(self, base: mf.Manifest | None) -> tuple[CollectionSettings, str]:
        """The settings the new version records, and a note for the result if they are
        not the configured ones (an existing collection keeps its index settings)."""
        if base is None:
            return self.settings, ""
        settings, kept = keep_recorded(self.settings, base.collection.settings)
        if not kept:
            return settings, ""
        log.warning("configured index settings differ from the collection's; keeping the "
                    "collection's", extra=fields(kept=kept))
        return settings, ("; kept the collection's recorded " + ", ".join(kept) +
                          ": index settings are fixed when a collection is created")

    # -- a full version: base and segments folded into a new base ---------------------

    def _prepare_full(self, base: mf.Manifest | None, work: Path) -> _FullBase:
        """Put a writable copy of the base at ``work``; read the version's segments."""
        if base is None and self.opt.bootstrap is not None:
            started = start_from(self.opt.bootstrap, work, self.settings, self.on_bytes)
            return _FullBase(started.collection_id, [], {}, started.newest_write_us,
                             self.opt.bootstrap.origin)
        if base is None:
            return _FullBase(chromadir.create_collection(work / mf.DB_DIR, self.settings), [], {})
        cached = self.snap_cache / base.base_version
        if not cached.is_dir():
            shutil.rmtree(self.snap_cache, ignore_errors=True)
            snapshots.fetch(self.store, base, cached, self.on_bytes)
        # Work on a copy: a failed run must not damage the verified cache.
        shutil.copytree(cached / mf.DB_DIR, work / mf.DB_DIR)
        if (cached / mf.VERSIONS_FILE).exists():
            shutil.copy2(cached / mf.VERSIONS_FILE, work / mf.VERSIONS_FILE)
        ops, versions = segments.read_all(self.store, base.segments, self.settings.dimension,
                                          self.on_bytes)
        return _FullBase(base.collection.id, ops, versions)

    def _write_full(self, res: CompactionResult, work: Path, fb: _FullBase,
                    ops: list[Op], new: NewVersion, retained: list[Op]) -> mf.Manifest:
        with self._step(res, "apply"):
            versions = snapshots.read_versions(work / mf.VERSIONS_FILE)
            versions.update(fb.segment_versions)
            below = fb.segment_ops
            if needs_records(ops, retained):
                # Filtered deletes are decided on the version's records: apply its
                # segments first, then find what each one removes.
                with persistence.open_collection(work / mf.DB_DIR, self.settings.name) as (_, col):
                    replay.apply_ops(col, below, dimension=self.settings.dimension)
                    ops = expand_filtered_deletes(ops, versions, reads.state_lookup(col),
                                                  reads.state_matching(col), retained)
                persistence.finalize(work / mf.DB_DIR)
                below = []
            fold = plan(ops, versions)
            touched, change = settle(fold, versions)
            versions.update(touched)
            horizon = int((time.time() - self.opt.delta_grace_seconds) * 1e6)
            versions = prune_tombstones(versions, horizon)
            # The base's segments first (unless applied above), in their order, then the deltas.
            todo = [*below, *fold.ops]
            live = (new.parent.record_count if new.parent else 0) + change
            record_count, model, res.base_rebuilt = self._apply_full(work, fb, todo, live,
                                                                     new.settings)
            snapshots.write_versions(work / mf.VERSIONS_FILE, versions)
            res.records_folded = len(fold.ops)
            res.superseded_ops = fold.superseded
        self.lock.check()

        def make_manifest(files: list[mf.FileEntry]) -> mf.Manifest:
            first = replace(new, newest_write_us=max(new.newest_write_us, fb.newest_write_us))
            return first.manifest(fb.collection_id, model, record_count, origin=fb.origin,
                                  files=files, byte_size=sum(f.size for f in files))

        with self._step(res, "upload"):
            return snapshots.publish(
                self.store,
                work,
                mf.snapshot_prefix(new.version),
                make_manifest,
                self.on_bytes,
                after_first_file=lambda: _failpoint("upload", "mid"),
            )

    def _apply_full(self, work: Path, fb: _FullBase, ops: list[Op], live: int,
                    settings: CollectionSettings) -> tuple[int, dict[str, Any], bool]:
        """Apply ``ops`` to the base at ``work``: in place, or by building the base afresh
        when its index would hold more history than the policy allows (chromadb never
        drops deleted or replaced vectors). Returns records, the collection's JSON and
        whether it was built afresh."""
        db = work / mf.DB_DIR
        state = rebuild.index_state(db, fb.collection_id)
        # An upper bound: every write carrying a vector may take a new index element.
        elements = (state.elements if state else 0) + sum(op.embedding is not None for op in ops)
        if policy.rebuild_base(elements, live, self.opt.policy):
            fresh = work / "rebuilt"
            built = rebuild.rebuild(db, fresh, settings, ops)  # the recorded index settings
            shutil.rmtree(db)
            fresh.rename(db)
            log.info("base built afresh from its live records",
                     extra=fields(elements_before=state.elements if state else 0,
                                  records=built.records))
            return built.records, built.model, True
        with persistence.open_collection(db, self.settings.name) as (_, col):
            replay.apply_ops(col, ops, dimension=self.settings.dimension)
            record_count = int(col.count())
            model = reads.collection_info(col)
        persistence.finalize(db)
        return record_count, model, False

    # -- a segment: the deltas (and the newest segments) on top of the same base ------

    def _prepare_segment(self, base: mf.Manifest | None, merge: int,
                         ops: list[Op]) -> _SegmentBase:
        """Read what the conflict rules need, never the base's records.

        That is the version of every id the deltas touch (from the base's
        version table and every segment's, newest last), plus the ops and
        versions of the segments this one absorbs.
        """
        assert base is not None
        touched = {op.id for op in ops}
        prior = self._base_versions(base, touched)
        kept = len(base.segments) - merge
        old_ops: list[Op] = []
        old_versions: dict[str, Version] = {}
        for i, seg in enumerate(base.segments):
            seg_versions = segments.read_versions(self.store, seg, self.on_bytes)
            prior.update({rid: v for rid, v in seg_versions.items() if rid in touched})
            if i >= kept:  # absorbed: its writes and versions move into the new segment
                old_ops += segments.read_ops(self.store, seg, self.settings.dimension,
                                             self.on_bytes)
                old_versions.update(seg_versions)
        return _SegmentBase(base, prior, base.segments[kept:], old_ops, old_versions)

    def _base_versions(self, base: mf.Manifest, ids: set[str]) -> dict[str, Version]:
        entry = next((f for f in base.files if f.path == mf.VERSIONS_FILE), None)
        if entry is None:
            return {}
        cached = self.opt.cache_dir / "versions" / f"{base.base_version}.arrow"
        if not cached.exists():
            shutil.rmtree(cached.parent, ignore_errors=True)
            cached.parent.mkdir(parents=True)
            self.store.download_file(base.base_prefix + entry.path, cached, entry.size,
                                     entry.sha256, on_bytes=self.on_bytes)
        return snapshots.lookup_versions(cached, ids)

    def _write_segment(self, res: CompactionResult, work: Path, sb: _SegmentBase,
                       ops: list[Op], new: NewVersion) -> mf.Manifest:
        with self._step(res, "apply"):
            fold = plan(ops, sb.prior)
            touched, change = settle(fold, sb.prior)
            shadowing = sum(1 for rid in touched if rid in sb.prior and not sb.prior[rid].deleted)
            res.records_folded = len(fold.ops)
            res.superseded_ops = fold.superseded
        self.lock.check()
        with self._step(res, "upload"):
            seg = segments.write(
                self.store, new.version, [*sb.old_ops, *fold.ops], {**sb.old_versions, **touched},
                self.settings.dimension, shadowing + sum(s.shadowing for s in sb.absorbed),
                work, self.on_bytes, settings=self.settings,
                index_min_rows=self.opt.segment_index_min_rows,
            )
            _failpoint("upload", "mid")
            kept = sb.base.segments[: len(sb.base.segments) - len(sb.absorbed)]
            man = new.manifest(
                sb.base.collection.id, model_after(sb.base.collection.model, fold.ops),
                sb.base.record_count + change,
                files=sb.base.files, byte_size=0, base=sb.base.base_version,
                base_records=sb.base.base_record_count, segments=[*kept, seg],
            )
            man.byte_size = man.base_bytes + sum(s.byte_size for s in man.segments)
            self.store.put_if_absent(man.key, man.to_json())
            return man

    def _load_deltas(self, names: list[str], res: CompactionResult) -> tuple[list[Op], list[str]]:
        """Download and decode deltas; corrupt ones are quarantined, never applied."""
        ops: list[Op] = []
        folded: list[str] = []
        for name in names:
            key = deltas.DELTA_PREFIX + name
            try:
                data = self._supplied[name] if name in self._supplied else self.store.get(key).data
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

    def _cleanup(self, res: CompactionResult, listed: dict[str, ObjectInfo]) -> None:
        """Remove applied deltas and unreachable versions and segments (see collect.py)."""
        _failpoint("cleanup", "start")
        cur = pointer.read(self.store).pointer
        if cur is None:
            return
        live = snapshots.load_manifest(self.store, cur.manifest)
        cutoff = time.time() - self.opt.delta_grace_seconds
        keep_versions = collect.lineage(self.store, live, self.opt.retain_snapshots)
        deletable: mf.Manifest | None = live
        if self.opt.recovery_window_seconds > 0:
            horizon = int((time.time() - self.opt.recovery_window_seconds) * 1e6)
            chain, anchor = collect.window(self.store, live, horizon)
            # Everything from the live version back to the window's anchor stays; only
            # deltas the anchor already folded may go.
            keep_versions = chain if len(chain) > len(keep_versions) else keep_versions
            deletable = anchor
        old_applied = collect.applied_deltas(deletable, listed, cutoff) if deletable else []
        if old_applied:
            half = len(old_applied) // 2
            self.store.delete_many(old_applied[:half])
            _failpoint("cleanup", "mid")
            self.store.delete_many(old_applied[half:])
        res.deltas_deleted = len(old_applied)
        keep = collect.reachable(keep_versions)
        res.snapshots_deleted, res.segments_deleted = collect.collect_unreachable(
            self.store, live, keep, cutoff)


@dataclass(frozen=True)
class _FullBase:
    """What a full run starts from: the base's copy at ``work`` and its segments' writes."""

    collection_id: str
    segment_ops: list[Op]
    segment_versions: dict[str, Version]
    newest_write_us: int = 0  # of a bootstrap source's state
    origin: str | None = None


@dataclass(frozen=True)
class _SegmentBase:
    """What a segment run starts from: the live version and the conflict rules' inputs."""

    base: mf.Manifest
    prior: dict[str, Version]  # versions of the ids the deltas touch, before them
    absorbed: list[mf.Segment]  # the newest segments the new one replaces
    old_ops: list[Op]
    old_versions: dict[str, Version]
