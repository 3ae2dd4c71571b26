"""Segments: the writes one minor compaction folded, stored once and shared by later versions.

A segment is two files under ``segments/<name>/``:

- ``ops.arrow``: the surviving writes (superseded ones already dropped), in
  the order they apply, in the delta format (checksummed Arrow, see
  :mod:`chromasnap.storage.deltas`);
- ``versions.arrow``: the new version of every id those writes touch, with
  ``deleted`` meaning *no record after them* (see :func:`merge.liveness`).

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

from chromasnap.engine import persistence, replay
from chromasnap.engine.merge import Version
from chromasnap.engine.ops import Op
from chromasnap.storage import deltas, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import NotFound, ObjectStore

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
) -> mf.Segment:
    """Write and upload segment ``name``; return its manifest entry.

    Nothing refers to the segment until a manifest lists it, so a crash here
    leaves only an orphan that garbage collection removes.
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / mf.OPS_FILE).write_bytes(deltas.encode(ops, dimension, f"segment-{name}"))
    snapshots.write_versions(work / mf.VERSIONS_FILE, versions)
    files = []
    for path in (mf.OPS_FILE, mf.VERSIONS_FILE):
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
