"""Garbage collection by reachability: what a bucket may lose, judged by the pointer *now*.

Safety never rests on the lock or on the grace period. The pointer is read
at the moment of deleting, after any stall, and an object goes only if

- no *retained* version (the live one and its ancestors, up to the
  retention count) refers to it: a delta only once the live version lists
  it as applied (every later version descends from that one); a base or a
  segment only if no retained version's manifest names it; and
- no compaction in flight can still publish a version that needs it:
  versions and segments are named after the lineage depth of the version
  that created them, and a compaction swaps the pointer with ``If-Match``
  on the pointer it read, so anything at depth ``<= live.seq`` that the
  live lineage does not use was built on an older pointer and its swap is
  fenced. Deeper objects may be a run in flight and are left alone. A run
  in flight that reads a retained version's objects only ever *reads*
  objects reachable from the pointer it read; if those are collected
  because the pointer moved on, its reads fail and it ends ``Fenced``.

The grace period only spares objects a reader may still be downloading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from chromasnap.storage import deltas, recovery, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class Reachable:
    """What the retained versions use."""

    versions: frozenset[str]  # snapshots/<v>/ prefixes (manifests and bases)
    segments: frozenset[str]


def reachable(manifests: Iterable[mf.Manifest]) -> Reachable:
    """Every snapshot prefix and segment the given versions need. Pure."""
    versions: set[str] = set()
    segs: set[str] = set()
    for m in manifests:
        versions.update((m.version, m.base_version))
        segs.update(m.segment_names)
    return Reachable(frozenset(versions), frozenset(segs))


def lineage(store: ObjectStore, live: mf.Manifest, retain: int) -> list[mf.Manifest]:
    """The live version and its ancestors, newest first, up to ``retain`` of them."""
    return list(islice(snapshots.ancestry(store, live), retain))


def window(store: ObjectStore, live: mf.Manifest,
           horizon_us: int) -> tuple[list[mf.Manifest], mf.Manifest | None]:
    """The lineage a recovery window needs, newest first, and its anchor.

    The anchor is the newest version whose writes are all older than the
    window (``newest_write_us <= horizon_us``): restoring to any time in the
    window starts from it or a later version, and replays the deltas folded
    after it, so those deltas and every version down to it stay. ``None``:
    no version is that old yet (or the lineage breaks first), and nothing may go.
    """
    chain = []
    for m in snapshots.ancestry(store, live):
        chain.append(m)
        if recovery.newest_write(m) <= horizon_us:
            return chain, m
    return chain, None


def below_pointer(name: str, live: mf.Manifest) -> bool:
    """Whether a version or segment named ``name`` can never become live (see module doc).

    Unparseable names are not ours to judge and are kept.
    """
    try:
        return mf.version_seq(name) <= live.seq
    except ValueError:
        return False


def _newest_by_name(store: ObjectStore, prefix: str) -> dict[str, float]:
    newest: dict[str, float] = {}
    for o in store.list(prefix):
        name = o.key[len(prefix):].split("/", 1)[0]
        newest[name] = max(newest.get(name, 0.0), o.last_modified)
    return newest


def delete_prefix(store: ObjectStore, prefix: str) -> int:
    """Delete everything under ``prefix``, manifest first (a version without one is unused)."""
    keys = [o.key for o in store.list(prefix)]
    keys.sort(key=lambda k: not k.endswith(mf.MANIFEST_FILE))
    store.delete_many(keys)
    return len(keys)


def collect_unreachable(store: ObjectStore, live: mf.Manifest, keep: Reachable,
                        cutoff: float) -> tuple[int, int]:
    """Delete snapshots and segments outside ``keep`` that can never become live.

    Returns (versions deleted, segments deleted).
    """
    counts = []
    for prefix, kept, prefix_of in (
        (mf.SNAPSHOT_PREFIX, keep.versions, mf.snapshot_prefix),
        (mf.SEGMENT_PREFIX, keep.segments, mf.segment_prefix),
    ):
        deleted = 0
        for name, modified in _newest_by_name(store, prefix).items():
            # Recent objects may be a reader's download source or a racing upload.
            if name in kept or modified >= cutoff or not below_pointer(name, live):
                continue
            delete_prefix(store, prefix_of(name))
            deleted += 1
        counts.append(deleted)
    return counts[0], counts[1]


def applied_deltas(live: mf.Manifest, listed: dict[str, ObjectInfo], cutoff: float) -> list[str]:
    """Keys of deltas the live version lists as applied, old enough to delete. Pure."""
    return [deltas.DELTA_PREFIX + n for n in live.deltas
            if n in listed and listed[n].last_modified < cutoff]
