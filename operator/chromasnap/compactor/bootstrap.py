"""Bootstrap: a new collection's first version is another collection's state, read only.

``spec.bootstrap.from`` names the source's storage and, optionally, a
retained version or a time; with no version of its own yet, the first run
materializes that state (``segments.materialize`` or ``recovery.restore_at``)
instead of creating an empty collection, and publishes it as version 1 with
any deltas already written on top. The source is only ever read. A
collection that already has a version never bootstraps again, so a live
collection is never rolled back. The source may be a pool's collection
(``kubectl chromasnap restore DB --collection X``): stored under its id, it
takes the new collection's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from chromasnap.config import IDENTITY_FIELDS, CollectionSettings, differences
from chromasnap.engine import chromadir
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer, recovery, segments, snapshots
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.store import ByteCallback, ObjectStore


class BootstrapFailed(Exception):
    """The source cannot give the state asked for; the message says why and what to do."""


@dataclass(frozen=True)
class Bootstrap:
    """Where version 1 comes from."""

    source: ObjectStore
    version: str | None = None
    at: datetime | None = None

    @property
    def origin(self) -> str:
        """What the first manifest records as its origin."""
        point = (f"@{self.version}" if self.version else
                 f"@{self.at.isoformat()}" if self.at else "@latest")
        return f"bootstrap:{self.source.url}{point}"


@dataclass(frozen=True)
class Started:
    """The state written to the work directory."""

    collection_id: str
    newest_write_us: int


def start_from(bs: Bootstrap, work: Path, settings: CollectionSettings,
               on_bytes: ByteCallback | None = None) -> Started:
    """Write the source's state into ``work`` (``db/`` and ``versions.arrow``)."""
    src = bs.source
    try:
        if bs.at is not None:
            restored = recovery.restore_at(src, work, recovery.us_of(bs.at), on_bytes)
            _check(restored.settings, settings, src.url)
            _take_name(work, restored.settings, settings, src.url)
            return Started(restored.collection_id, restored.newest_write_us)
        if bs.version is not None:
            key = mf.snapshot_prefix(bs.version) + mf.MANIFEST_FILE
        else:
            cur = pointer.read(src).pointer
            if cur is None:
                raise BootstrapFailed(f"bootstrap source {src.url} holds no version yet")
            key = cur.manifest
        man = snapshots.load_manifest(src, key)
        _check(man.collection.settings, settings, src.url)
        segments.materialize(src, man, work, on_bytes)
        _take_name(work, man.collection.settings, settings, src.url)
        return Started(man.collection.id, man.newest_write_us or 0)
    except recovery.OutsideRecoveryWindow as e:
        raise BootstrapFailed(f"bootstrap source {src.url}: {e}") from e
    except mf.CorruptSnapshot as e:
        raise BootstrapFailed(
            f"bootstrap source {src.url}: {e} (is the version retained? `chromasnap status "
            f"{src.url}` lists them)") from e


def in_a_pool(source: CollectionSettings, url: str) -> bool:
    """Whether ``url`` is a pool's collection (``<pool root>/collections/<id>``): one
    records its id as its name, the name applications use being the pool catalog's."""
    try:
        root = collection_root(source.name)
    except ValueError:  # not an id
        return False
    return url.rstrip("/").endswith("/" + root.rstrip("/"))


def _take_name(work: Path, source: CollectionSettings, target: CollectionSettings,
               url: str) -> None:
    """A pool's collection, stored under its id, takes the new collection's name (the
    compactor opens it by that name)."""
    if in_a_pool(source, url) and source.name != target.name:
        chromadir.rename_only(work / mf.DB_DIR, target.name)


def _check(source: CollectionSettings, target: CollectionSettings, url: str) -> None:
    # A pool's collection restored into a ChromaCollection takes its catalog name there.
    fields = tuple(f for f in (*IDENTITY_FIELDS, "space")
                   if f != "name" or not in_a_pool(source, url))
    wrong = differences(target, source, fields)
    if wrong:
        raise BootstrapFailed(
            f"bootstrap source {url} has collection {', '.join(wrong)}: spec.collection must "
            "match the source's")
