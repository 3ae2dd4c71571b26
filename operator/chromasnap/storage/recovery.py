"""Point-in-time recovery: the collection as it was at a time ``T``, from versions and deltas.

Every manifest records ``newest_write_us``, the newest write time it (or an
ancestor) folded, and ``deltas``, the deltas it (or an ancestor) folded that
still existed. So the state at ``T`` is:

1. an **anchor**: the newest version of the live lineage whose writes are all
   at or before ``T`` (or the empty collection, when the lineage reaches its
   first version), materialized (base + segments);
2. then, version by version after the anchor, the deltas each one folded,
   and last the deltas still pending, each batch keeping only the writes at or
   before ``T`` and planned by the same conflict rules (``merge.plan``)
   against the versions so far: exactly what those compactions did, minus
   the writes after ``T``.

That needs every delta folded after the anchor to still exist. The
compactor keeps them for ``recovery_window`` (see
``compactor/collect.py``); a ``T`` they do not cover raises
:class:`OutsideRecoveryWindow` with the earliest time that can be restored.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chromasnap.config import CollectionSettings
from chromasnap.engine import chromadir, persistence, reads, replay
from chromasnap.engine.merge import expand_filtered_deletes, needs_records, plan, settle
from chromasnap.engine.ops import Op
from chromasnap.storage import deltas, pointer, segments, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import NotFound, ObjectStore

Progress = Callable[[int], None]


class OutsideRecoveryWindow(Exception):
    """The versions and deltas in the bucket do not reach back to the time asked for."""


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_at` wrote."""

    anchor: mf.Manifest | None  # None: replayed from the empty collection
    settings: CollectionSettings
    collection_id: str
    record_count: int
    writes: int  # writes replayed on top of the anchor
    newest_write_us: int


def us_of(when: datetime) -> int:
    """Microseconds since the epoch (write times are kept in µs)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def full_lineage(store: ObjectStore, live: mf.Manifest) -> tuple[list[mf.Manifest], bool]:
    """The live version and every retained ancestor, newest first; and whether its first
    version was built from deltas alone, so that it can be replayed from empty (a
    missing ancestor, an import or a bootstrap end that)."""
    chain = list(snapshots.ancestry(store, live))
    return chain, chain[-1].parent is None and chain[-1].origin is None


def newest_write(m: mf.Manifest) -> int:
    """``newest_write_us`` of a manifest; 0 for one written before it was recorded."""
    return m.newest_write_us or 0


def _batches(chain: list[mf.Manifest], anchor_index: int | None) -> list[list[str]]:
    """The deltas each version after the anchor folded, oldest version first."""
    newer = chain[:anchor_index] if anchor_index is not None else chain
    before: set[str] = set(chain[anchor_index].deltas) if anchor_index is not None else set()
    out = []
    for m in reversed(newer):
        now = set(m.deltas)
        out.append(sorted(now - before))
        before = now | before
    return out


def plan_restore(chain: list[mf.Manifest], complete: bool, listed: set[str],
                 at_us: int) -> tuple[int | None, list[list[str]]]:
    """Pick the anchor (index in ``chain``; None: empty) and the delta batches after it. Pure.

    Raises OutsideRecoveryWindow when no anchor at or before ``at_us`` has all
    the deltas folded after it still in the bucket (``listed``).
    """
    candidates: list[int | None] = [i for i, m in enumerate(chain) if newest_write(m) <= at_us]
    if complete:
        candidates.append(None)
    for idx in candidates:
        batches = _batches(chain, idx)
        if all(n in listed for batch in batches for n in batch):
            return idx, batches
    earliest = _earliest(chain, complete, listed)
    raise OutsideRecoveryWindow(
        f"{_iso(at_us)} is outside the recovery window: the deltas written after the newest "
        f"version before it were already deleted. The earliest time that can be restored is "
        f"{_iso(earliest) if earliest is not None else 'none (no version reaches back)'}; "
        "set spec.retention.recoveryWindow (CHROMASNAP_RECOVERY_WINDOW_SECONDS) to keep more, "
        "or export a retained version with --version")


def _earliest(chain: list[mf.Manifest], complete: bool, listed: set[str]) -> int | None:
    usable = [newest_write(chain[i]) for i in range(len(chain))
              if all(n in listed for b in _batches(chain, i) for n in b)]
    if complete and all(n in listed for b in _batches(chain, None) for n in b):
        usable.append(0)
    return min(usable) if usable else None


def restore_at(store: ObjectStore, dest: Path, at_us: int,
               on_bytes: Progress | None = None) -> Restored:
    """Write the collection's state at ``at_us`` to ``dest`` as a full snapshot directory.

    ``dest`` receives ``db/`` (a directory ``chromadb.PersistentClient`` opens)
    and ``versions.arrow``; it is removed again if anything fails.
    """
    cur = pointer.read(store).pointer
    if cur is None:
        raise OutsideRecoveryWindow(f"{store.url} holds no version yet")
    live = snapshots.load_manifest(store, cur.manifest)
    chain, complete = full_lineage(store, live)
    listed = {o.key[len(deltas.DELTA_PREFIX):] for o in store.list(deltas.DELTA_PREFIX)
              if deltas.is_delta_key(o.key)}
    idx, batches = plan_restore(chain, complete, listed, at_us)
    folded = set().union(*(set(b) for b in batches)) | (
        set(chain[idx].deltas) if idx is not None else set())
    pending = sorted(n for n in listed if n not in folded and n not in live.deltas)
    batches.append(pending)
    settings = live.collection.settings
    anchor = chain[idx] if idx is not None else None
    # Each batch met the filtered deletes the version before it kept (the anchor, then
    # the versions that folded the batches, the live one last): replay meets the same.
    folders = list(reversed(chain[:idx] if idx is not None else chain))
    retained = [[f for f in m.retained_filters if f.key.ts_us <= at_us] if m else []
                for m in [anchor, *folders]]
    try:
        # The anchor's segments and the replayed writes go into chromadb in one pass.
        todo: list[Op] = []
        if anchor is not None:
            snapshots.fetch(store, anchor, dest, on_bytes)
            collection_id = anchor.collection.id
            todo, seg_versions = segments.read_all(store, anchor.segments, settings.dimension,
                                                   on_bytes)
        else:
            dest.mkdir(parents=True)
            collection_id = chromadir.create_collection(dest / mf.DB_DIR, settings)
            seg_versions = {}
        versions = snapshots.read_versions(dest / mf.VERSIONS_FILE)
        versions.update(seg_versions)
        writes = 0
        newest = newest_write(anchor) if anchor is not None else 0
        with persistence.open_collection(dest / mf.DB_DIR, settings.name) as (_, col):
            for batch, kept in zip(batches, retained, strict=True):
                ops = [op for name in batch for op in _ops(store, name, settings.dimension)
                       if op.key.ts_us <= at_us]
                if needs_records(ops, kept):
                    # Decided on the records as they are then, as the compactor does.
                    replay.apply_ops(col, todo, dimension=settings.dimension)
                    todo = []
                    ops = expand_filtered_deletes(ops, versions, reads.state_lookup(col),
                                                  reads.state_matching(col), kept)
                p = plan(ops, versions)
                touched, _ = settle(p, versions)
                versions.update(touched)
                todo += p.ops
                writes += len(p.ops)
                newest = max([newest, *(op.key.ts_us for op in ops)])
            replay.apply_ops(col, todo, dimension=settings.dimension)
            count = int(col.count())
        persistence.finalize(dest / mf.DB_DIR)
        snapshots.write_versions(dest / mf.VERSIONS_FILE, versions)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Restored(anchor, settings, collection_id, count, writes, newest)


def _ops(store: ObjectStore, name: str, dimension: int) -> list[Op]:
    try:
        return deltas.decode(store.get(deltas.DELTA_PREFIX + name).data, dimension)
    except NotFound as e:
        raise OutsideRecoveryWindow(f"delta {name} was deleted while restoring; retry") from e
    except deltas.CorruptDelta:
        return []  # never applied by any compaction either (it quarantines such deltas)

