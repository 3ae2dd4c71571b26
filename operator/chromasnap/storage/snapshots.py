"""Moving snapshots between a local directory and the object store, verified.

``publish`` uploads every file, then the manifest (so a manifest implies its
files exist); ``fetch`` downloads into a temporary directory, checks every
size and SHA-256 against the manifest, and only then renames it into place,
so a snapshot directory in a cache is always complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from chromasnap.engine.merge import Version
from chromasnap.engine.ops import OpKey
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ChecksumMismatch, NotFound, ObjectStore, StoreError

Progress = Callable[[int], None]
PARALLEL_FILES = 8


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def publish(
    store: ObjectStore,
    root: Path,
    prefix: str,
    make_manifest: Callable[[list[mf.FileEntry]], mf.Manifest],
    on_bytes: Progress | None = None,
    after_first_file: Callable[[], None] | None = None,
) -> mf.Manifest:
    """Upload ``root`` (holding ``db/`` and ``versions.arrow``) under ``prefix``, then its manifest.

    ``make_manifest`` receives the uploaded files' entries and returns the
    manifest to write. ``after_first_file`` is a hook for crash tests.
    """
    files = list_files(root)

    def upload(rel: Path) -> mf.FileEntry:
        path = root / rel
        sha = store.upload_file(prefix + rel.as_posix(), path, on_bytes=on_bytes)
        return mf.FileEntry(path=rel.as_posix(), size=path.stat().st_size, sha256=sha)

    entries = [upload(files[0])] if files else []
    if after_first_file is not None:
        after_first_file()
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        entries += list(pool.map(upload, files[1:]))
    manifest = make_manifest(entries)
    if manifest.prefix != prefix:
        raise ValueError(f"manifest {manifest.version} does not live under {prefix}")
    store.put_if_absent(manifest.key, manifest.to_json())
    return manifest


def load_manifest(store: ObjectStore, key: str) -> mf.Manifest:
    """Read and parse a manifest; a missing or invalid one is a CorruptSnapshot."""
    try:
        return mf.parse(store.get(key).data)
    except NotFound as e:
        raise mf.CorruptSnapshot(f"manifest {key} does not exist") from e


def ancestry(store: ObjectStore, live: mf.Manifest) -> Iterator[mf.Manifest]:
    """``live``, then each ancestor, newest first; ends at the first version or at an
    ancestor whose manifest is gone (retention took it)."""
    m = live
    yield m
    while m.parent is not None:
        try:
            m = load_manifest(store, mf.snapshot_prefix(m.parent) + mf.MANIFEST_FILE)
        except mf.CorruptSnapshot:
            return
        yield m


def fetch(
    store: ObjectStore, manifest: mf.Manifest, dest: Path, on_bytes: Progress | None = None
) -> Path:
    """Download and verify a version's base into ``dest`` (replaced atomically); return ``dest``.

    Segments are not included: see :mod:`chromasnap.storage.segments`.

    Raises CorruptSnapshot, leaving nothing at ``dest``, if any file is missing
    or does not match its size and SHA-256.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:

        def download(f: mf.FileEntry) -> None:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(
                manifest.base_prefix + f.path, target, f.size, f.sha256, on_bytes=on_bytes
            )

        with ThreadPoolExecutor(PARALLEL_FILES) as pool:
            list(pool.map(download, manifest.files))
        if not (tmp / mf.DB_DIR).is_dir():
            raise mf.CorruptSnapshot(f"snapshot {manifest.version} has no {mf.DB_DIR}/ files")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        return dest
    except (ChecksumMismatch, NotFound) as e:
        raise mf.CorruptSnapshot(f"snapshot {manifest.version} failed verification: {e}") from e
    except StoreError:
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_VERSIONS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("ts_us", pa.int64(), nullable=False),
        pa.field("writer", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("deleted", pa.bool_(), nullable=False),
    ]
)


def write_versions(path: Path, versions: Mapping[str, Version]) -> None:
    """Store the per-id version table (Arrow IPC file) beside the chroma directory."""
    ids = sorted(versions)
    table = pa.Table.from_arrays(
        [
            pa.array(ids, type=pa.string()),
            pa.array([versions[i].key.ts_us for i in ids], type=pa.int64()),
            pa.array([versions[i].key.writer for i in ids], type=pa.string()),
            pa.array([versions[i].key.seq for i in ids], type=pa.int64()),
            pa.array([versions[i].deleted for i in ids], type=pa.bool_()),
        ],
        schema=_VERSIONS_SCHEMA,
    )
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _VERSIONS_SCHEMA) as w:
        w.write_table(table)


class VersionTable(Mapping[str, Version]):
    """The version table as a read-only mapping that decodes rows only when asked.

    Readers load it with every snapshot but only consult it for the few ids a
    delta tail touches, so building 100k ``Version`` objects up front (about
    0.35 s) would only slow every cold start and swap.
    """

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._index: dict[str, int] | None = None
        # Rows decoded so far: a reader asks for the same ids (those its tail touches)
        # on every overlay it builds, and decoding a row costs four Arrow scalars.
        self._decoded: dict[str, Version] = {}

    def _rows(self) -> dict[str, int]:
        if self._index is None:
            ids = self._table.column("id").to_pylist()
            self._index = {rid: i for i, rid in enumerate(ids)}
        return self._index

    def __getitem__(self, rid: str) -> Version:
        got = self._decoded.get(rid)
        if got is not None:
            return got
        i = self._rows()[rid]
        t = self._table
        got = Version(
            OpKey(t.column("ts_us")[i].as_py(), t.column("writer")[i].as_py(),
                  t.column("seq")[i].as_py()),
            bool(t.column("deleted")[i].as_py()),
        )
        self._decoded[rid] = got
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows())

    def __len__(self) -> int:
        return int(self._table.num_rows)


def _read_table(path: Path) -> pa.Table:
    try:
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_file(src).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise mf.CorruptSnapshot(f"{path.name} is unreadable: {e}") from e


def open_versions(path: Path) -> VersionTable:
    """The version table of a snapshot directory, decoded lazily (see VersionTable)."""
    if not path.exists():
        return VersionTable(_VERSIONS_SCHEMA.empty_table())
    return VersionTable(_read_table(path))


def read_versions(path: Path) -> dict[str, Version]:
    """Load the per-id version table written by ``write_versions``."""
    if not path.exists():
        return {}
    return table_versions(_read_table(path))


def lookup_versions(path: Path, ids: Iterable[str]) -> dict[str, Version]:
    """The versions of ``ids`` in a version table file, decoding only those rows.

    A minor compaction asks the base's table (hundreds of thousands of rows)
    for the few thousand ids a delta touches; filtering in Arrow keeps that
    proportional to the table's bytes, not to Python objects per row.
    """
    if not path.exists():
        return {}
    table = _read_table(path)
    wanted = pa.array(sorted(set(ids)), type=pa.string())
    if len(wanted) == 0 or table.num_rows == 0:
        return {}
    return table_versions(table.filter(pc.is_in(table.column("id"), value_set=wanted)))


def table_versions(table: pa.Table) -> dict[str, Version]:
    """A version table (as read from ``versions.arrow``) as a dict."""
    cols = [table.column(n).to_pylist() for n in ("id", "ts_us", "writer", "seq", "deleted")]
    return {
        rid: Version(OpKey(ts, w, s), bool(d)) for rid, ts, w, s, d in zip(*cols, strict=True)
    }


def merge_versions_file(src: Path, updates: Mapping[str, Version], dest: Path) -> None:
    """Write ``src``'s table with ``updates`` applied (their rows replace ``src``'s) to ``dest``."""
    base = _read_table(src) if src.exists() else _VERSIONS_SCHEMA.empty_table()
    if updates:
        keep = pc.invert(pc.is_in(base.column("id"), value_set=pa.array(list(updates))))
        base = base.filter(keep)
    rows = dest.with_name(dest.name + ".rows")
    write_versions(rows, updates)
    merged = pa.concat_tables([base, _read_table(rows)]).combine_chunks()
    # Written aside and renamed: ``src`` may be ``dest``, and it is memory-mapped.
    tmp = dest.with_name(dest.name + ".new")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, _VERSIONS_SCHEMA) as w:
        w.write_table(merged)
    rows.unlink()
    tmp.replace(dest)
