"""Import an existing chromadb directory as a snapshot; export a snapshot back to one.

Import is the migration path for current Chroma users: their
``chroma_db/`` directory becomes version 1 of a chromasnap collection
without re-embedding anything. Export is restore: any retained version
becomes a plain directory that ``chromadb.PersistentClient`` opens.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import chromadb

from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import chromadir, persistence, reads
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer, recovery, segments, snapshots
from chromasnap.storage.progress import transfer_progress
from chromasnap.storage.store import ObjectStore


class ImportError_(Exception):
    """Import or export cannot proceed; the message says what to change."""


def _hnsw_config(collection: Any) -> dict[str, Any]:
    conf = getattr(collection, "configuration", None) or {}
    hnsw = conf.get("hnsw") if isinstance(conf, dict) else None
    return dict(hnsw or {})


def settings_of(collection: Any, dimension: int) -> CollectionSettings:
    """The CollectionSettings an existing chromadb collection corresponds to."""
    hnsw = _hnsw_config(collection)
    meta = collection.metadata or {}
    space = hnsw.get("space") or meta.get("hnsw:space") or "l2"
    return CollectionSettings(
        name=collection.name,
        dimension=dimension,
        space=Space(space),
        hnsw_m=int(hnsw.get("max_neighbors") or meta.get("hnsw:M") or 16),
        hnsw_construction_ef=int(
            hnsw.get("ef_construction") or meta.get("hnsw:construction_ef") or 100
        ),
        hnsw_search_ef=int(hnsw.get("ef_search") or meta.get("hnsw:search_ef") or 100),
        metadata={k: v for k, v in meta.items() if not k.startswith("hnsw:")},
    )


def import_directory(
    src: Path,
    name: str,
    store: ObjectStore,
    identity: str = "chromasnap-import",
    show_progress: bool = False,
) -> mf.Manifest:
    """Publish collection ``name`` of the PersistentClient directory ``src`` as version 1.

    The source directory is never modified (a copy is opened). Other
    collections in it are left out of the snapshot.
    """
    if not (src / chromadir.SQLITE_FILE).is_file():
        raise ImportError_(f"{src} is not a chromadb directory (no {chromadir.SQLITE_FILE})")
    if pointer.read(store).pointer is not None:
        raise ImportError_(
            f"{store.url} already holds a collection; import into an empty prefix "
            "(export and delete the old one first if you mean to replace it)"
        )
    with tempfile.TemporaryDirectory(prefix="chromasnap-import-") as tmp:
        work = Path(tmp) / "snap"
        db = work / mf.DB_DIR
        shutil.copytree(src, db)
        names = chromadir.keep_only(db, name)
        if name not in names:
            raise ImportError_(
                f"collection {name!r} is not in {src}; it has: {', '.join(names) or 'none'}"
            )
        with persistence.open_collection(db, name) as (_, col):
            count = int(col.count())
            sample = col.get(limit=1, include=["embeddings"])
            embs = sample.get("embeddings")
            if embs is None or len(embs) == 0:
                raise ImportError_(
                    f"collection {name!r} is empty; nothing to import (create the collection "
                    "with a ChromaCollection resource instead)"
                )
            settings = settings_of(col, len(embs[0]))
            collection_id = str(col.id)
            model = reads.collection_info(col)
        persistence.finalize(db)
        snapshots.write_versions(work / mf.VERSIONS_FILE, {})
        version = mf.new_version(1)

        def make(files: list[mf.FileEntry]) -> mf.Manifest:
            return mf.Manifest(
                version=version,
                seq=1,
                parent=None,
                chromadb_version=chromadb.__version__,
                collection=mf.CollectionInfo(id=collection_id, settings=settings, model=model),
                record_count=count,
                byte_size=sum(f.size for f in files),
                files=files,
                deltas=[],
                created_at=mf.now(),
                compactor=identity,
                origin=f"import:{name}",
            )

        total = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
        with transfer_progress(
            "uploading snapshot", total, enabled=_bar(show_progress)
        ) as on_bytes:
            man = snapshots.publish(store, work, mf.snapshot_prefix(version), make, on_bytes)
        pointer.swap(store, version, man.key, None, identity)
        return man


def _bar(show: bool) -> bool | None:
    # None lets the bar decide by itself (only on a terminal); False forbids it.
    return None if show else False


def export_snapshot(
    store: ObjectStore,
    dest: Path,
    version: str | None = None,
    show_progress: bool = False,
) -> mf.Manifest:
    """Write snapshot ``version`` (default: current) to ``dest`` as a chromadb directory."""
    if dest.exists() and any(dest.iterdir()):
        raise ImportError_(f"{dest} is not empty; export into a new or empty directory")
    if version is None:
        cur = pointer.read(store).pointer
        if cur is None:
            raise ImportError_(f"{store.url} has no snapshot yet")
        key = cur.manifest
    else:
        key = mf.snapshot_prefix(version) + mf.MANIFEST_FILE
    man = snapshots.load_manifest(store, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".chromasnap-export-", dir=dest.parent) as tmp:
        with transfer_progress(
            "downloading snapshot", man.byte_size, enabled=_bar(show_progress)
        ) as on_bytes:
            # Base and segments, folded into one plain directory.
            got = segments.materialize(store, man, Path(tmp) / "snap", on_bytes)
        if dest.exists():
            dest.rmdir()
        (got / mf.DB_DIR).rename(dest)
    return man


def export_at(store: ObjectStore, dest: Path, at: datetime) -> recovery.Restored:
    """Write the collection's state at time ``at`` to ``dest`` (point-in-time recovery)."""
    if dest.exists() and any(dest.iterdir()):
        raise ImportError_(f"{dest} is not empty; export into a new or empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".chromasnap-export-", dir=dest.parent) as tmp:
        try:
            restored = recovery.restore_at(store, Path(tmp) / "snap", recovery.us_of(at))
        except recovery.OutsideRecoveryWindow as e:
            raise ImportError_(str(e)) from e
        if dest.exists():
            dest.rmdir()
        (Path(tmp) / "snap" / mf.DB_DIR).rename(dest)
    return restored


def rename_exported(dest: Path, name: str) -> str:
    """Give the one collection of an exported directory the name ``name``; returns the
    name it had (a pool's collection is stored under its id, its name is the catalog's)."""
    try:
        return chromadir.rename_only(dest, name)
    except ValueError as e:
        raise ImportError_(f"{e}: not renamed") from e
