"""chromadb's local persistence, and how chromasnap makes a directory a complete snapshot.

A chromasnap snapshot is a plain ``chromadb.PersistentClient`` directory holding
one collection. The engine's chromadb modules (this one, ``chromadir``,
``replay`` and ``reads``) are the only code that touches one, so the facts
below, measured on chromadb 1.5.9, live in one place.

How a PersistentClient directory works (chromadb 1.5.9, Rust bindings):

* ``chroma.sqlite3`` (journal mode ``delete``, so no ``-wal`` file) holds the
  collection, its records and metadata (the "metadata segment"), and a write
  log, ``embeddings_queue``. Every add/upsert/update/delete appends one log row
  per id and is applied to the metadata segment at once.
* ``<vector-segment-uuid>/`` holds the HNSW index: ``header.bin``,
  ``data_level0.bin``, ``length.bin``, ``link_lists.bin`` and
  ``index_metadata.pickle`` (the id<->label map, written and read by Rust's
  ``serde_pickle``, a data-only decoder: no Python ``pickle`` is involved).
* The HNSW files are only rewritten when a write call brings the number of
  log records applied since the last save to ``hnsw.sync_threshold`` (default
  1000). **Closing the client does not save.** The unsaved tail stays in
  ``embeddings_queue`` and is replayed into memory by whoever opens the
  directory next, and is written to *their* copy once their own counter
  crosses the threshold. ``max_seq_id`` records how far each segment got.
* **Record order.** ``get`` and ``peek`` return records (filtered or not,
  and ``get(ids=…)`` too, whatever order the ids were asked in) in the order
  of their row in the metadata segment's ``embeddings`` table, whose ``id``
  is an ``INTEGER PRIMARY KEY``: a new record takes the next row id, an
  update or upsert keeps the row, a delete frees it. So the order is
  insertion order, and a record deleted and added again goes to the end.
  ``VACUUM`` keeps these row ids. The same row id keys the record's rows in
  ``embedding_metadata`` (documents and URIs are the keys ``chroma:document``
  and ``chroma:uri`` there), ``embedding_metadata_array`` and the full-text
  index ``embedding_fulltext_search`` (its ``rowid``); the HNSW index knows
  records by their string id only.

A snapshot must be complete — every reader opens it without replaying the
log or rewriting the index — so :func:`open_collection` ends with
:func:`flush`, which makes Chroma save the index, and :func:`finalize` checks
the result once the client is closed. See :func:`flush` for how.

Opening any PersistentClient still writes to ``chroma.sqlite3`` (chromadb
inserts a row into its ``acquire_write`` table each time), so a snapshot's
checksums can only be verified *before* it is opened, never after.

Two more facts callers must know: chromadb 1.5.9 can lose a vector update
when the index is saved (worked around in ``replay.apply_ops``, which
replaces such vectors by delete + add and then gives the record its row id
back with :func:`move_rows`, so the record keeps its place), and its write
calls hold the GIL for their whole duration while ``query``/``get`` release
it.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from chromasnap.engine.chromadir import (
    SQLITE_FILE,
    close_client,
    is_open,
    open_client,
    server_api,
)

HNSW_FILES = (
    "header.bin",
    "data_level0.bin",
    "length.bin",
    "link_lists.bin",
    "index_metadata.pickle",
)
VECTOR_SEGMENT_TYPE = "urn:chroma:segment/vector/hnsw-local-persisted"
_SQLITE_SIDECARS = ("-journal", "-wal", "-shm")
_FLUSH_ID_PREFIX = "__chromasnap_flush__"
_SQL_CHUNK = 500  # ids per "IN (...)": well under SQLite's variable limit
# Every table whose rows belong to one record through the embeddings row id.
_ROW_TABLES = (
    ("embeddings", "id"),
    ("embedding_metadata", "id"),
    ("embedding_metadata_array", "id"),
    ("embedding_fulltext_search", "rowid"),
)


class IncompleteSnapshotError(RuntimeError):
    """The directory's HNSW index lags its write log, or files are missing."""


class Opened(NamedTuple):
    """What :func:`open_collection` yields; unpacks as ``client, collection``."""

    client: ClientAPI
    collection: Collection


@dataclass(frozen=True)
class LogState:
    """How far the write log and each segment of one collection have got."""

    collection_id: str
    log_max_seq_id: int  # highest seq_id ever written to the log (0: none)
    metadata_seq_id: int
    vector_seq_id: int  # applied to the *saved* HNSW files
    vector_segment_id: str
    has_vectors: bool = True  # a vector was ever written (Chroma then sets the dimension)

    @property
    def pending(self) -> int:
        """Log records a reader would have to replay into HNSW on open.

        None while no vector was ever written: Chroma creates no HNSW index until
        then, so it never saves one, and such log records (deletes, updates of ids
        that do not exist) change no record.
        """
        if not self.has_vectors:
            return 0
        return max(0, self.log_max_seq_id - self.vector_seq_id)


@dataclass(frozen=True)
class FinalizeResult:
    """What :func:`finalize` did and the files that make up the snapshot."""

    files: tuple[str, ...]  # POSIX paths relative to the directory, sorted
    total_bytes: int
    vacuumed: bool


@contextmanager
def open_collection(path: Path, name: str, *, flush_on_exit: bool = True) -> Iterator[Opened]:
    """Open the collection ``name`` in ``path``; on exit save everything and close.

    On a normal exit, :func:`flush` first makes Chroma save the HNSW index so
    the directory is complete; on an exception the client is only closed (the
    directory then holds a partial result and should be discarded). Either
    way, when this returns no file under ``path`` is open any more, so the
    directory can be copied, hashed, deleted, or opened again.
    """
    if not (path / SQLITE_FILE).is_file():
        raise FileNotFoundError(f"{path / SQLITE_FILE} does not exist")
    client = open_client(path)
    try:
        collection = client.get_collection(name)
        yield Opened(client, collection)
        if flush_on_exit:
            flush(collection, path)
    finally:
        close_client(client, path)


# ---------------------------------------------------------------- the write log


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only SQLite connection to the directory's database (safe while chromadb has it)."""
    uri = (path / SQLITE_FILE).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def log_states(path: Path) -> list[LogState]:
    """Per collection in ``path``: write log head and how far each segment got.

    Read with a read-only SQLite connection; safe while a client has the
    directory open (journal mode ``delete``: readers take a shared lock only
    between Chroma's write transactions).
    """
    con = connect_ro(path)
    try:
        states = []
        for cid, dimension in con.execute(
            "SELECT id, dimension FROM collections ORDER BY id"
        ).fetchall():
            seqs: dict[str, int] = {}
            vector_id = ""
            rows = con.execute(
                "SELECT s.id, s.type, COALESCE(m.seq_id, 0) FROM segments s "
                "LEFT JOIN max_seq_id m ON m.segment_id = s.id WHERE s.collection = ?",
                (cid,),
            ).fetchall()
            for seg_id, seg_type, seq in rows:
                if seg_type == VECTOR_SEGMENT_TYPE:
                    vector_id = seg_id
                    seqs["vector"] = int(seq)
                else:
                    seqs["metadata"] = int(seq)
            # The log topic ends with the collection id
            # ("persistent://<tenant>/<database>/<collection id>").
            (head,) = con.execute(
                "SELECT COALESCE(MAX(seq_id), 0) FROM embeddings_queue WHERE topic LIKE ?",
                ("%/" + cid,),
            ).fetchone()
            states.append(
                LogState(
                    collection_id=cid,
                    log_max_seq_id=int(head),
                    metadata_seq_id=seqs.get("metadata", 0),
                    vector_seq_id=seqs.get("vector", 0),
                    vector_segment_id=vector_id,
                    has_vectors=dimension is not None,
                )
            )
        return states
    finally:
        con.close()


def _state_of(path: Path, collection: Collection) -> LogState:
    for state in log_states(path):
        if state.collection_id == str(collection.id):
            return state
    raise IncompleteSnapshotError(f"collection {collection.id} not found in {path}")


def _sync_threshold(collection: Collection) -> int:
    hnsw = (collection.configuration_json or {}).get("hnsw") or {}
    return int(hnsw.get("sync_threshold") or 1000)


def flush(collection: Collection, path: Path) -> int:
    """Make Chroma save the HNSW index of ``collection`` now; return padding ops used.

    Chroma 1.5.9 has no "save now" call, and closing does not save; the index
    is saved only at the end of a write call that brings the count of log
    records applied since the last save to ``sync_threshold``. Changing
    ``sync_threshold`` with ``modify`` does not reach an index that is already
    loaded. So flush:

    1. forces the index to load (``count`` makes the local executor apply any
       unapplied log tail, which is exactly the pending count);
    2. sends ``sync_threshold - pending`` deletes of fresh ids that do not
       exist. They change no record; each is one log record, so the count
       reaches the threshold and Chroma saves the index, writes
       ``max_seq_id`` and purges the applied log;
    3. checks, and pads a full ``sync_threshold`` once more if Chroma saved
       earlier than counted (e.g. the load itself crossed the threshold).

    Cost: at most one threshold's worth of no-op deletes (~1000 log rows)
    and one index save.
    """
    collection.count()
    padded = 0
    for attempt in range(2):
        state = _state_of(path, collection)
        if state.pending == 0:
            return padded
        threshold = _sync_threshold(collection)
        need = threshold - state.pending if attempt == 0 else threshold
        padded += _pad_log(collection, max(1, need))
    state = _state_of(path, collection)
    if state.pending:
        raise IncompleteSnapshotError(
            f"HNSW index of {collection.id} still lags the log by {state.pending} records "
            f"after padding {padded}"
        )
    return padded


def _pad_log(collection: Collection, n: int) -> int:
    prefix = f"{_FLUSH_ID_PREFIX}{uuid.uuid4().hex}_"
    ids = [f"{prefix}{i}" for i in range(n)]
    server = server_api(collection)
    step = server.get_max_batch_size()
    for i in range(0, n, step):
        chunk = ids[i : i + step]
        # The ids are random; make sure (cheaply) that none is a real record.
        if collection.get(ids=chunk, include=[])["ids"]:
            raise RuntimeError(f"flush padding id collides with a stored id under {prefix!r}")
        server._delete(
            collection_id=collection.id,
            ids=chunk,
            tenant=collection.tenant,
            database=collection.database,
        )
    return n


def pending_log_records(path: Path) -> int:
    """Log records that opening ``path`` would replay into HNSW (0 for a complete snapshot)."""
    return sum(s.pending for s in log_states(path))


# ---------------------------------------------------------------- record rows (order)


def metadata_segment(con: sqlite3.Connection, collection_id: str) -> str:
    """The id of the collection's metadata segment (the ``segment_id`` of its records' rows)."""
    row = con.execute(
        "SELECT id FROM segments WHERE collection = ? AND scope = 'METADATA'", (collection_id,)
    ).fetchone()
    if row is None:
        raise IncompleteSnapshotError(f"collection {collection_id} has no metadata segment")
    return str(row[0])


def _row_ids(con: sqlite3.Connection, segment: str, ids: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(ids), _SQL_CHUNK):
        chunk = list(ids[i : i + _SQL_CHUNK])
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT embedding_id, id FROM embeddings WHERE segment_id = ? AND embedding_id IN ({marks})"  # noqa: S608, E501
        out.update(con.execute(sql, (segment, *chunk)).fetchall())
    return out


RowLookup = Callable[[Sequence[str]], dict[str, int]]


@contextmanager
def row_lookup(path: Path, collection_id: str) -> Iterator[RowLookup]:
    """A function giving the row id of each of its ids that exists: its place in ``get`` order.

    One read-only connection, opened on the first lookup and closed on exit;
    safe while a client has ``path`` open. Use it from one thread.
    """
    con: sqlite3.Connection | None = None
    segment = ""

    def lookup(ids: Sequence[str]) -> dict[str, int]:
        nonlocal con, segment
        if not ids:
            return {}
        if con is None:
            con = connect_ro(path)
            segment = metadata_segment(con, collection_id)
        return _row_ids(con, segment, ids)

    try:
        yield lookup
    finally:
        if con is not None:
            con.close()


def row_ids(path: Path, collection_id: str, ids: Sequence[str]) -> dict[str, int]:
    """The row id of each of ``ids`` that exists (see :func:`row_lookup`)."""
    with row_lookup(path, collection_id) as lookup:
        return lookup(ids)


def move_rows(path: Path, collection_id: str, moves: Mapping[str, int]) -> None:
    """Give the records ``moves`` names (by id) the row ids it maps them to, in one transaction.

    Used right after a record was deleted and added again (the new row is at
    the end) to put it back where it was. The wanted row ids must be free or
    held by records that are themselves moved; the records' metadata,
    document, URI and full-text rows move with them. Safe while chromadb has
    ``path`` open: chromadb holds no SQLite lock between its calls and keeps
    no row ids in memory (the HNSW index knows records by string id).
    """
    if not moves:
        return
    con = sqlite3.connect(path / SQLITE_FILE, timeout=30.0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            current = _row_ids(con, metadata_segment(con, collection_id), list(moves))
            missing = sorted(set(moves) - set(current))
            if missing:
                raise RuntimeError(f"cannot move rows of missing records {missing[:5]}")
            wanted = {moves[rid]: current[rid] for rid in moves}
            if len(wanted) != len(moves):
                raise RuntimeError("two records cannot take one row id")
            moving = set(current.values())
            want = list(wanted)
            taken = []
            for i in range(0, len(want), _SQL_CHUNK):
                chunk = want[i : i + _SQL_CHUNK]
                sql = f"SELECT id FROM embeddings WHERE id IN ({','.join('?' * len(chunk))})"  # noqa: S608
                taken += [int(r) for (r,) in con.execute(sql, chunk) if int(r) not in moving]
            if taken:
                raise RuntimeError(f"row ids {taken[:5]} are held by other records")
            tables = [
                (t, c) for t, c in _ROW_TABLES
                if con.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = ?", (t,)
                ).fetchone() is not None
            ]
            # Two steps through negative ids, so that a record may take a row id
            # another moved record still holds.
            for table, column in tables:
                con.executemany(
                    f"UPDATE {table} SET {column} = ? WHERE {column} = ?",  # noqa: S608
                    [(-row, current[rid]) for rid, row in moves.items()],
                )
                con.execute(
                    f"UPDATE {table} SET {column} = -{column} WHERE {column} < 0"  # noqa: S608
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


# ---------------------------------------------------------------- completeness


def snapshot_files(path: Path) -> list[str]:
    """All files under ``path`` as sorted POSIX relative paths."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def finalize(path: Path, *, vacuum_free_ratio: float = 0.25) -> FinalizeResult:
    """Check that the closed directory ``path`` is a complete snapshot and tidy it.

    Must be called after :func:`open_collection` has returned (nothing open).

    * Opening the database with SQLite rolls back a hot journal left by a
      crash; a database in WAL mode would be checkpointed and switched back to
      ``delete`` so that the snapshot is one self-contained file (Chroma 1.5.9
      uses ``delete``, so normally nothing happens).
    * Every collection's HNSW files must exist and have applied the whole log
      (``pending == 0``), else :class:`IncompleteSnapshotError`.
    * ``VACUUM`` when more than ``vacuum_free_ratio`` of the database pages
      are free (deleted records, purged log rows): snapshots are uploaded
      and downloaded whole, so dead pages cost every reader. It rewrites the
      whole file, hence only above a ratio.
    * Leftover temporary files of an interrupted index save are removed.
    """
    if is_open(path):
        raise RuntimeError(f"{path} is still open by a chromadb client")
    db = path / SQLITE_FILE
    if not db.is_file():
        raise IncompleteSnapshotError(f"{db} does not exist")
    vacuumed = False
    con = sqlite3.connect(db, isolation_level=None)
    try:
        (mode,) = con.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("PRAGMA journal_mode=DELETE")
        (pages,) = con.execute("PRAGMA page_count").fetchone()
        (free,) = con.execute("PRAGMA freelist_count").fetchone()
        if pages and free / pages > vacuum_free_ratio:
            con.execute("VACUUM")
            vacuumed = True
    finally:
        con.close()
    for state in log_states(path):
        if state.pending:
            raise IncompleteSnapshotError(
                f"collection {state.collection_id}: HNSW index lags the log by "
                f"{state.pending} records (open_collection exited without flush?)"
            )
        if state.has_vectors and state.metadata_seq_id < state.log_max_seq_id:
            raise IncompleteSnapshotError(
                f"collection {state.collection_id}: metadata segment lags the log"
            )
        if state.vector_seq_id > 0:
            seg = path / state.vector_segment_id
            missing = [f for f in HNSW_FILES if not (seg / f).is_file()]
            if missing:
                raise IncompleteSnapshotError(f"{seg} lacks {', '.join(missing)}")
            for leftover in seg.iterdir():
                # tempfile names of Rust's NamedTempFile: ".tmpXXXXXX".
                if leftover.is_file() and leftover.name.startswith(".tmp"):
                    leftover.unlink()
    for suffix in _SQLITE_SIDECARS:
        if (path / (SQLITE_FILE + suffix)).exists():
            raise IncompleteSnapshotError(f"{SQLITE_FILE}{suffix} remains in {path}")
    files = snapshot_files(path)
    total = sum((path / f).stat().st_size for f in files)
    return FinalizeResult(files=tuple(files), total_bytes=total, vacuumed=vacuumed)
