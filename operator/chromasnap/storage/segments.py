"""Segments: the writes one minor compaction folded, stored once and shared by later versions.

A segment is two files under ``segments/<name>/``:

- ``ops.arrow``: the surviving writes (superseded ones already dropped), in
  the order they apply, in the delta format (checksummed Arrow, see
  :mod:`chromasnap.storage.deltas`);
- ``versions.arrow``: the new version of every id those writes touch, with
  ``deleted`` meaning *no record after them* (see :func:`merge.liveness`);
- ``index.hnsw`` and ``index.arrow``, when its writes carry enough vectors:
  their HNSW index and its label table (``engine.hnswindex``), built once
  here so that readers load it instead of re-indexing.

Applying a version's segments, in order, to its base gives exactly the
collection a full compaction of the same deltas would have written: the ops
are the ones that compaction would have applied, in the same order. Every
byte read back is checked against the size and SHA-256 the manifest gives.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from chromasnap.config import CollectionSettings
from chromasnap.engine import hnswindex, persistence, replay
from chromasnap.engine.merge import Version
from chromasnap.engine.ops import Op
from chromasnap.storage import deltas, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ChecksumMismatch, NotFound, ObjectStore

Progress = Callable[[int], None]


def write(
    store: ObjectStore,
    name: str,
    ops: Sequence[Op],
    versions: Mapping[str, Version],
    dimension: int,
    shadowing: int,
    work: Path,
    on_bytes: Progress | None = None,
    settings: CollectionSettings | None = None,
    index_min_rows: int = hnswindex.MIN_ROWS,
) -> mf.Segment:
    """Write and upload segment ``name``; return its manifest entry.

    With ``settings``, a segment whose writes carry at least
    ``index_min_rows`` vectors also gets its index. Nothing refers to
    the segment until a manifest lists it, so a crash here leaves only an
    orphan that garbage collection removes.
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / mf.OPS_FILE).write_bytes(deltas.encode(ops, dimension, f"segment-{name}"))
    snapshots.write_versions(work / mf.VERSIONS_FILE, versions)
    paths = [mf.OPS_FILE, mf.VERSIONS_FILE]
    positions = hnswindex.rows(ops)
    if settings is not None and len(positions) >= index_min_rows:
        hnswindex.build(ops, positions, settings.space.value, settings.hnsw_m,
                        settings.hnsw_construction_ef, work / mf.INDEX_FILE,
                        work / mf.INDEX_IDS_FILE)
        paths += [mf.INDEX_FILE, mf.INDEX_IDS_FILE]
    files = []
    for path in paths:
        local = work / path
        sha = store.upload_file(mf.segment_prefix(name) + path, local, on_bytes=on_bytes)
        files.append(mf.FileEntry(path=path, size=local.stat().st_size, sha256=sha))
    return mf.Segment(name=name, ops=len(ops), shadowing=shadowing, files=files)


def _verified(store: ObjectStore, seg: mf.Segment, path: str,
              on_bytes: Progress | None) -> bytes:
    entry = seg.file(path)
    key = seg.prefix + path
    try:
        data = store.get(key).data
    except NotFound as e:
        raise mf.CorruptSnapshot(f"segment file {key} does not exist") from e
    if on_bytes is not None:
        on_bytes(len(data))
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise mf.CorruptSnapshot(f"segment file {key} failed verification (size or SHA-256)")
    return data


def fetch_index(store: ObjectStore, seg: mf.Segment, dest: Path, space: str, dimension: int,
                ef_search: int, on_bytes: Progress | None = None) -> hnswindex.SegmentIndex:
    """Download (verified) and open segment ``seg``'s index into directory ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in (mf.INDEX_FILE, mf.INDEX_IDS_FILE):
        entry = seg.file(path)
        try:
            store.download_file(seg.prefix + path, dest / path, entry.size, entry.sha256,
                                on_bytes=on_bytes)
        except NotFound as e:
            raise mf.CorruptSnapshot(f"segment file {seg.prefix + path} does not exist") from e
        except ChecksumMismatch as e:
            raise mf.CorruptSnapshot(f"segment file {seg.prefix + path} failed verification: "
                                     f"{e}") from e
    try:
        return hnswindex.load(dest / mf.INDEX_FILE, dest / mf.INDEX_IDS_FILE, space,
                              dimension, ef_search)
    except (RuntimeError, ValueError, OSError, pa.ArrowInvalid) as e:
        raise mf.CorruptSnapshot(f"segment {seg.name}: its index does not open: {e}") from e


def read_ops(store: ObjectStore, seg: mf.Segment, dimension: int | None,
             on_bytes: Progress | None = None) -> list[Op]:
    """A segment's writes, in the order they apply; CorruptSnapshot if damaged."""
    data = _verified(store, seg, mf.OPS_FILE, on_bytes)
    try:
        return deltas.decode(data, dimension)
    except deltas.CorruptDelta as e:
        raise mf.CorruptSnapshot(f"segment {seg.name}: {e}") from e


def read_versions(store: ObjectStore, seg: mf.Segment,
                  on_bytes: Progress | None = None) -> dict[str, Version]:
    """The versions a segment sets; CorruptSnapshot if damaged."""
    data = _verified(store, seg, mf.VERSIONS_FILE, on_bytes)
    try:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise mf.CorruptSnapshot(f"segment {seg.name}: versions.arrow is unreadable: {e}") from e
    return snapshots.table_versions(table)


def read_all(store: ObjectStore, segs: Sequence[mf.Segment], dimension: int | None,
             on_bytes: Progress | None = None) -> tuple[list[Op], dict[str, Version]]:
    """The writes of ``segs`` in the order they apply, and the versions they leave."""
    ops: list[Op] = []
    versions: dict[str, Version] = {}
    for seg in segs:
        ops += read_ops(store, seg, dimension, on_bytes)
        versions.update(read_versions(store, seg, on_bytes))
    return ops, versions


def materialize(store: ObjectStore, man: mf.Manifest, dest: Path,
                on_bytes: Progress | None = None) -> Path:
    """Download version ``man`` as one full snapshot directory at ``dest`` (base + segments)."""
    snapshots.fetch(store, man, dest, on_bytes)
    try:
        if man.segments:
            settings = man.collection.settings
            ops, versions = read_all(store, man.segments, settings.dimension, on_bytes)
            with persistence.open_collection(dest / mf.DB_DIR, settings.name) as (_, col):
                replay.apply_ops(col, ops, dimension=settings.dimension)
            persistence.finalize(dest / mf.DB_DIR)
            table = dest / mf.VERSIONS_FILE
            snapshots.merge_versions_file(table, versions, table)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
