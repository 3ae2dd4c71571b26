"""Rebuilding a collection directory from its live records, which chromadb never does itself.

chromadb 1.5.9 keeps what a collection ever held, not what it holds:

* its HNSW index only *marks* a deleted element: the vector, its links and its
  label stay in memory and on disk, and every search still walks through them;
  a record deleted and added again, or whose vector ``replay`` replaces (delete
  + add, to dodge a chromadb bug), takes a new element and leaves the old one;
* SQLite keeps the pages of deleted rows as free pages, and the full-text
  index keeps deleted entries until it merges.

A base that every full compaction carries forward and updates in place
therefore grows with the *history* of writes: under churn over a fixed id
space (15 minutes, 18,010 writes, 2,863 live records) its index held every
vector ever written, and the memory and query time of every reader that
loaded it, and the time of every full run that carried it, grew with it.

:func:`rebuild` writes what a fresh chromadb collection of the live records
would hold — the same collection (id, name, configuration, metadata), the
same records in the same ``get`` order — and :func:`index_state` tells how
much of an index is dead, so the compactor rebuilds only when it pays
(``compactor.policy.rebuild_base``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from chromasnap.config import CollectionSettings
from chromasnap.engine import chromadir, persistence, reads, replay
from chromasnap.engine.merge import Record, fold_tracked
from chromasnap.engine.ops import Op, OpKey, OpKind

#: The index header chromadb's hnswlib writes (``header.bin``): a 4-byte format version,
#: then ``size_t`` fields — the level-0 offset, the capacity and, at byte 20, the element
#: count (``cur_element_count``: every label ever allocated, live or deleted). Read so,
#: not unpickled: ``tests/unit/engine/test_rebuild.py`` pins the layout.
_HEADER = "header.bin"
_COUNT_AT = 20
_PAGE = 5000  # records per add while building: bounds memory


@dataclass(frozen=True)
class IndexState:
    """How many HNSW elements a collection's saved index holds, and how many records."""

    elements: int
    live: int

    @property
    def dead(self) -> int:
        """Elements no record uses any more (deleted, or replaced by a newer vector)."""
        return max(0, self.elements - self.live)


def hnsw_elements(segment_dir: Path) -> int | None:
    """Elements (live or deleted) in the saved HNSW index at ``segment_dir``; None: no index."""
    try:
        with (segment_dir / _HEADER).open("rb") as fh:
            head = fh.read(_COUNT_AT + 8)
    except FileNotFoundError:
        return None
    if len(head) < _COUNT_AT + 8:
        return None
    return int.from_bytes(head[_COUNT_AT:], "little")


def index_state(path: Path, collection_id: str) -> IndexState | None:
    """The index state of ``collection_id`` in the closed directory ``path``.

    None when the collection has no saved index (never a vector written) or
    its header cannot be read.
    """
    state = next((s for s in persistence.log_states(path) if s.collection_id == collection_id),
                 None)
    if state is None or not state.vector_segment_id:
        return None
    elements = hnsw_elements(path / state.vector_segment_id)
    if elements is None:
        return None
    con = persistence.connect_ro(path)
    try:
        segment = persistence.metadata_segment(con, collection_id)
        (live,) = con.execute("SELECT COUNT(*) FROM embeddings WHERE segment_id = ?",
                              (segment,)).fetchone()
    finally:
        con.close()
    return IndexState(elements, int(live))


@dataclass(frozen=True)
class Rebuilt:
    """What :func:`rebuild` wrote: the record count and the collection's JSON."""

    records: int
    model: dict[str, Any]


def rebuild(src: Path, dest: Path, settings: CollectionSettings,
            ops: Sequence[Op] = ()) -> Rebuilt:
    """Write at ``dest`` a fresh directory: ``src``'s collection with ``ops`` applied.

    The result is what :func:`~chromasnap.engine.replay.apply_ops` of ``ops``
    (planned, in order) on ``src`` gives — the same records, in the same
    ``get`` order — without anything that history left behind, and at the
    cost of one add per record instead of one chromadb call per write:

    * the collection keeps its id, configuration and metadata (clients hold
      the id; the configuration may come from an imported directory);
    * records are added in their final order: those ``src`` holds and the ops
      leave in place (updated or not), where ``src`` has them; then those the
      ops created (new, or deleted and added again), in creation order — as
      chromadb orders them (``merge.fold_tracked``, ``engine.persistence``).

    ``src`` must be closed and complete; it is opened (chromadb writes a row
    when it opens a directory), so pass a copy that is thrown away
    afterwards. ``dest`` is complete on return.
    """
    chromadir.create_collection(dest, settings)
    collection_id = _adopt_collection(src, dest, settings.name)
    added = 0

    def add(records: list[Record], col: Any) -> None:
        nonlocal added
        replay.apply_ops(col, [Op(OpKind.ADD, r.id, OpKey(0, "rebuild", added + i), r.embedding,
                                  r.document, r.metadata or None, r.uri)
                               for i, r in enumerate(records)], dimension=settings.dimension)
        added += len(records)

    with (persistence.open_collection(src, settings.name, flush_on_exit=False) as (_, old),
          persistence.open_collection(dest, settings.name) as (_, new)):
        if str(new.id) != collection_id:
            raise RuntimeError(f"rebuilt collection has id {new.id}, not {collection_id}")
        touched = list(dict.fromkeys(op.id for op in ops))
        before = {rid: _record(rid, r) for rid, r in reads.get_records(old, touched).items()}
        folded = fold_tracked(before, ops)
        for page in reads.read_pages(old):
            kept = []
            for rid, r in page.items():
                if rid not in folded.records:
                    kept.append(_record(rid, r))
                    continue
                final = folded.records[rid]
                if final is not None and rid not in folded.created:  # else: gone, or goes last
                    kept.append(final)
            add(kept, new)
        created = sorted(folded.created, key=folded.created.__getitem__)
        for i in range(0, len(created), _PAGE):
            add([cast(Record, folded.records[rid]) for rid in created[i:i + _PAGE]], new)
        model = reads.collection_info(new)
    persistence.finalize(dest)
    return Rebuilt(added, model)


def _record(rid: str, r: reads.Record) -> Record:
    # A record with only a URI reads back with metadata {}: that is no metadata.
    return Record(rid, r.embedding, r.document, r.metadata or None, r.uri)


def _adopt_collection(src: Path, dest: Path, name: str) -> str:
    """Give ``dest``'s new, empty collection the identity of ``name`` in ``src``.

    chromadb has no way to create a collection with a given id, so its rows
    are rewritten in SQLite while no client has ``dest`` open: the
    ``collections`` row and ``collection_metadata`` are copied from ``src``
    (the database id stays ``dest``'s own) and ``dest``'s segments are
    re-pointed at the copied id. Returns that id.
    """
    con = sqlite3.connect(dest / chromadir.SQLITE_FILE, isolation_level=None)
    try:
        src_uri = (src / chromadir.SQLITE_FILE).resolve().as_uri() + "?mode=ro"
        con.execute("ATTACH DATABASE ? AS src", (src_uri,))
        con.execute("BEGIN IMMEDIATE")
        try:
            (old_id,) = _one(con, "SELECT id FROM src.collections WHERE name = ?", name)
            new_id, database = _one(con, "SELECT id, database_id FROM main.collections "
                                         "WHERE name = ?", name)
            con.execute("UPDATE main.segments SET collection = ? WHERE collection = ?",
                        (old_id, new_id))
            _copy_rows(con, "collection_metadata", "collection_id", old_id, new_id, {})
            _copy_rows(con, "collections", "id", old_id, new_id, {"database_id": database})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("DETACH DATABASE src")
        return str(old_id)
    finally:
        con.close()


def _copy_rows(con: sqlite3.Connection, table: str, key: str, old_id: object, new_id: object,
               keep: dict[str, object]) -> None:
    """Replace ``table``'s rows of ``new_id`` by ``src``'s rows of ``old_id``, column by
    column (``keep`` names columns that take a given value instead)."""
    columns = [r[1] for r in con.execute(f"PRAGMA main.table_info({table})")]
    if set(columns) != {r[1] for r in con.execute(f"PRAGMA src.table_info({table})")}:
        raise RuntimeError(f"the {table} tables of the source and the rebuild differ")
    listed = ", ".join(columns)
    picked = ", ".join("?" if c in keep else c for c in columns)
    con.execute(f"DELETE FROM main.{table} WHERE {key} = ?", (new_id,))  # noqa: S608
    con.execute(f"INSERT INTO main.{table} ({listed}) SELECT {picked} "  # noqa: S608
                f"FROM src.{table} WHERE {key} = ?", (*[keep[c] for c in columns if c in keep],
                                                      old_id))


def _one(con: sqlite3.Connection, sql: str, *args: object) -> tuple[object, ...]:
    rows = con.execute(sql, args).fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"expected one row from {sql!r}, found {len(rows)}")
    return tuple(rows[0])
