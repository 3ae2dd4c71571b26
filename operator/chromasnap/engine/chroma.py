"""The one module that touches chromadb's local persistence.

A chromasnap snapshot is a plain ``chromadb.PersistentClient`` directory holding
one collection. Everything else (compactor, reader, tests) goes through these
functions, so the facts below, measured on chromadb 1.5.9, live in one place.

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

A snapshot must be complete — every reader opens it without replaying the
log or rewriting the index — so :func:`open_collection` ends with
:func:`flush`, which makes Chroma save the index, and :func:`finalize` checks
the result once the client is closed. See :func:`flush` for how.

Opening any PersistentClient still writes to ``chroma.sqlite3`` (chromadb
inserts a row into its ``acquire_write`` table each time), so a snapshot's
checksums can only be verified *before* it is opened, never after.

Two more facts callers must know: chromadb 1.5.9 can lose a vector update
when the index is saved (worked around in :func:`apply_ops`, see
``_replace_vectors``), and its write calls hold the GIL for their whole
duration while ``query``/``get`` release it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import chromadb
import numpy as np
from chromadb.api import ClientAPI, ServerAPI
from chromadb.api.client import Client
from chromadb.api.models.Collection import Collection
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.api.types import (
    validate_documents,
    validate_embeddings,
    validate_ids,
    validate_metadatas,
)
from chromadb.config import Settings

from chromasnap.config import CollectionSettings
from chromasnap.engine.merge import merge_metadata
from chromasnap.engine.ops import Embedding, Op, OpKind

log = logging.getLogger(__name__)

SQLITE_FILE = "chroma.sqlite3"
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
_PAGE = 5000  # records per page in read_all: bounds memory, not semantics
_RELEASE_TIMEOUT_S = 5.0


class IncompleteSnapshotError(RuntimeError):
    """The directory's HNSW index lags its write log, or files are missing."""


class Record(NamedTuple):
    """One stored record, as ``collection.get`` returns it (embedding always float32)."""

    embedding: Embedding
    document: str | None
    metadata: dict[str, Any] | None
    uri: str | None


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

    @property
    def pending(self) -> int:
        """Log records a reader would have to replay into HNSW on open."""
        return max(0, self.log_max_seq_id - self.vector_seq_id)


@dataclass(frozen=True)
class FinalizeResult:
    """What :func:`finalize` did and the files that make up the snapshot."""

    files: tuple[str, ...]  # POSIX paths relative to the directory, sorted
    total_bytes: int
    vacuumed: bool


def _settings() -> Settings:
    # Telemetry off: pods have no internet and must not try. Every client in
    # this process uses identical settings, which chromadb requires for two
    # clients on one path.
    return Settings(anonymized_telemetry=False, allow_reset=False)


def _key(path: Path) -> str:
    # chromadb caches one System per persist_directory *string*; resolve so
    # that two spellings of one directory are the same key.
    return str(path.resolve())


def is_open(path: Path) -> bool:
    """Whether a chromadb client in this process still holds ``path``."""
    return _key(path) in SharedSystemClient._identifier_to_system


def _open_client(path: Path) -> ClientAPI:
    if is_open(path):
        # A second client would share the first one's System: closing ours
        # would not close the files, and the other could write behind us.
        raise RuntimeError(f"{path} is already open by a chromadb client in this process")
    return chromadb.PersistentClient(path=_key(path), settings=_settings())


def _wait_released(path: Path) -> None:
    """Wait until this process holds no file descriptor under ``path``.

    ``client.close()`` drops the Rust bindings, but the SQLite pool shuts its
    last connection down in the background (measured: gone within ~1 s).
    Callers copy, hash or delete the directory next, so wait for it. Linux
    only (``/proc/self/fd``); elsewhere this returns at once.
    """
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return
    prefix = _key(path) + os.sep
    deadline = time.monotonic() + _RELEASE_TIMEOUT_S
    while True:
        held = []
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith(prefix):
                held.append(target)
        if not held:
            return
        if time.monotonic() > deadline:
            log.warning("chromadb still holds %d file(s) under %s after close", len(held), path)
            return
        time.sleep(0.01)


def _close(client: ClientAPI, path: Path) -> None:
    # PersistentClient returns a chromadb.api.client.Client; close() drops our
    # reference to the shared System and stops it (closing the files) when it
    # was the last one, which _open_client guarantees.
    cast(Client, client).close()
    _wait_released(path)


def create_collection(path: Path, settings: CollectionSettings) -> str:
    """Create ``path`` holding one empty collection with ``settings``; return its id.

    The id is chosen by Chroma and is stored in the directory, so it stays the
    same in every copy and every later snapshot built from this one.
    The embedding function recorded in the collection's configuration is
    Chroma's default (as with a plain ``create_collection``), so an
    ``HttpClient`` sees the same configuration as from ``chroma run``;
    chromasnap itself never embeds anything.
    """
    path.mkdir(parents=True, exist_ok=True)
    if (path / SQLITE_FILE).exists():
        raise FileExistsError(f"{path / SQLITE_FILE} already exists: not a fresh directory")
    client = _open_client(path)
    try:
        collection = client.create_collection(
            name=settings.name,
            configuration={
                "hnsw": {
                    "space": settings.space.value,
                    "max_neighbors": settings.hnsw_m,
                    "ef_construction": settings.hnsw_construction_ef,
                    "ef_search": settings.hnsw_search_ef,
                }
            },
            # Chroma rejects an empty metadata dict; None means "no metadata".
            metadata=dict(settings.metadata) or None,
        )
        return str(collection.id)
    finally:
        _close(client, path)


def keep_only(path: Path, name: str) -> list[str]:
    """Delete every collection in ``path`` except ``name``; return the names that were there.

    Nothing is deleted when ``name`` is not among them.
    """
    client = _open_client(path)
    try:
        names = [c.name for c in client.list_collections()]
        if name not in names:
            return names
        for other in names:
            if other != name:
                client.delete_collection(other)
        return names
    finally:
        _close(client, path)


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
    client = _open_client(path)
    try:
        collection = client.get_collection(name)
        yield Opened(client, collection)
        if flush_on_exit:
            flush(collection, path)
    finally:
        _close(client, path)


def _server(collection: Collection) -> ServerAPI:
    # The public Collection.update/upsert/add run the collection's embedding
    # function whenever documents come without embeddings (and the default
    # one downloads a model). Chroma's HTTP server does not: an update that
    # carries only a document changes only the document. The compactor must
    # replay writes with the server's semantics, so it calls the same
    # ServerAPI methods that Collection calls after its client-side steps.
    return collection._client


# ---------------------------------------------------------------- writes


_Shape = tuple[bool, bool, bool, bool]


def _shape(op: Op) -> _Shape:
    return (
        op.embedding is not None,
        op.document is not None,
        op.metadata is not None,
        op.uri is not None,
    )


class Batch(NamedTuple):
    """Ops that one Chroma call applies: same kind, same fields present, distinct ids."""

    kind: OpKind
    ops: tuple[Op, ...]


def plan_batches(ops: Sequence[Op], max_batch_size: int) -> list[Batch]:
    """Split ``ops`` into consecutive batches, keeping their order.

    A batch is a run of consecutive ops of one kind whose ids are all distinct
    and that carry the same fields. Applying the batches in order gives what
    applying each op alone, in order, gives:

    * ops of one call are applied in log order, and with distinct ids they do
      not interact, so one call equals that many single-op calls;
    * an id that repeats starts a new batch, so two ops on one id are never in
      one call (Chroma rejects duplicate ids in a call) nor reordered;
    * the same fields: within a call ``None`` in a list is not always the same
      as leaving the list out (``add`` with ``metadatas=[{...}, None]`` stores
      ``{}`` for the second record, leaving ``metadatas`` out stores ``None``),
      so a call only ever carries what a client's call would.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    batches: list[Batch] = []
    current: list[Op] = []
    ids: set[str] = set()
    key: tuple[OpKind, _Shape | None] | None = None
    for op in ops:
        op_key = (op.kind, None if op.kind is OpKind.DELETE else _shape(op))
        if current and (op_key != key or op.id in ids or len(current) >= max_batch_size):
            batches.append(Batch(current[0].kind, tuple(current)))
            current, ids = [], set()
        current.append(op)
        ids.add(op.id)
        key = op_key
    if current:
        batches.append(Batch(current[0].kind, tuple(current)))
    return batches


def _embeddings(batch: Batch, dimension: int | None) -> list[list[float]]:
    vectors = []
    for op in batch.ops:
        e = op.embedding
        assert e is not None  # guaranteed by the batch's shape
        vec = np.asarray(e, dtype=np.float32)
        if vec.ndim != 1 or (dimension is not None and vec.shape[0] != dimension):
            raise ValueError(
                f"{batch.kind.name.lower()} of id {op.id!r}: embedding has shape {vec.shape}, "
                f"expected ({dimension if dimension is not None else 'd'},)"
            )
        vectors.append(vec)
    # Python lists of floats: the Rust binding extracts these ~2x faster than
    # numpy rows (measured, 5461 x 384), and rust.py's _update cannot take a
    # 2-D array at all (it tests the array's truth value). float32 -> float ->
    # f32 is exact.
    matrix = np.stack(vectors)
    validate_embeddings(list(matrix))
    return cast(list[list[float]], matrix.tolist())


def _apply_batch(collection: Collection, batch: Batch, dimension: int | None) -> None:
    server = _server(collection)
    ops = batch.ops
    ids = validate_ids([op.id for op in ops])
    if batch.kind is OpKind.DELETE:
        server._delete(
            collection_id=collection.id,
            ids=ids,
            tenant=collection.tenant,
            database=collection.database,
        )
        return
    has_embedding, has_document, has_metadata, has_uri = _shape(ops[0])
    if batch.kind in (OpKind.ADD, OpKind.UPSERT) and not has_embedding:
        # Chroma would compute it with an embedding function; chromasnap
        # never embeds, so writers must store the vector the client sent.
        raise ValueError(f"{batch.kind.name.lower()} of id {ops[0].id!r} carries no embedding")
    embeddings = _embeddings(batch, dimension) if has_embedding else None
    documents = [cast(str, op.document) for op in ops] if has_document else None
    if documents is not None:
        validate_documents(documents)
    metadatas = [dict(cast(dict[str, Any], op.metadata)) for op in ops] if has_metadata else None
    if metadatas is not None:
        # Same check Collection.add/update/upsert run (the binding does not,
        # e.g. it would store the reserved key "chroma:document").
        validate_metadatas(metadatas)  # type: ignore[arg-type]
    uris = [cast(str, op.uri) for op in ops] if has_uri else None
    common: dict[str, Any] = {
        "collection_id": collection.id,
        "ids": ids,
        "metadatas": metadatas,
        "documents": documents,
        "uris": uris,
        "tenant": collection.tenant,
        "database": collection.database,
    }
    vectors: Any = embeddings  # ServerAPI's annotation says numpy rows; see _embeddings
    if batch.kind is OpKind.ADD:
        server._add(embeddings=vectors, **common)
    elif embeddings is not None:
        _replace_vectors(
            collection,
            kind=batch.kind,
            ids=ids,
            vectors=embeddings,
            documents=documents,
            metadatas=metadatas,
            uris=uris,
        )
    elif batch.kind is OpKind.UPSERT:
        server._upsert(embeddings=vectors, **common)
    else:
        server._update(embeddings=vectors, **common)


def _replace_vectors(
    collection: Collection,
    *,
    kind: OpKind,
    ids: list[str],
    vectors: list[list[float]],
    documents: list[str] | None,
    metadatas: list[dict[str, Any]] | None,
    uris: list[str] | None,
) -> None:
    """Update/upsert that sets vectors, done as delete + add for existing ids.

    chromadb 1.5.9 bug: replacing the vector of an HNSW element that has no
    live neighbour (the only record of a collection, or one whose neighbours
    were all deleted) changes it in memory but does not mark it dirty, so the
    index save skips it and the old vector comes back on the next open
    (``test_chromadb_loses_isolated_vector_updates`` reproduces it with plain
    chromadb). Upstream fixed it after 1.5.9 by giving every replacement
    vector a fresh HNSW label; deleting the record and adding it back with
    the merged fields does the same from outside. Visible difference: the
    record moves to the end of unfiltered ``get``/``peek`` order.
    """
    server = _server(collection)
    tenant, database = collection.tenant, collection.database
    current = collection.get(ids=ids, include=["documents", "metadatas", "uris"])
    found: dict[str, tuple[str | None, dict[str, Any] | None, str | None]] = {}
    cur_docs, cur_mds, cur_uris = current["documents"], current["metadatas"], current["uris"]
    assert cur_docs is not None and cur_mds is not None and cur_uris is not None
    for rid, cur_doc, cur_md, cur_uri in zip(
        current["ids"], cur_docs, cur_mds, cur_uris, strict=True
    ):
        found[rid] = (cur_doc, dict(cur_md) if cur_md is not None else None, cur_uri)

    fresh: list[int] = []  # upserts of ids that do not exist: plain upserts
    rewrites: dict[_Shape, list[tuple[str, list[float], str | None, Any, str | None]]] = {}
    for i, rid in enumerate(ids):
        if rid not in found:
            if kind is OpKind.UPSERT:
                fresh.append(i)
            continue  # update of a missing id: Chroma ignores it
        old_doc, old_md, old_uri = found[rid]
        doc = documents[i] if documents is not None else old_doc
        md = merge_metadata(old_md, metadatas[i] if metadatas is not None else None)
        uri = uris[i] if uris is not None else old_uri
        shape = (True, doc is not None, md is not None, uri is not None)
        rewrites.setdefault(shape, []).append((rid, vectors[i], doc, md, uri))

    if fresh:
        fresh_metas = (
            [{k: v for k, v in (metadatas[i] or {}).items() if v is not None} for i in fresh]
            if metadatas is not None else None
        )
        # For ids that do not exist, upsert is add (after dropping None-valued keys, which
        # upsert ignores and add refuses), and add is markedly cheaper in chromadb. An
        # emptied metadata dict cannot be sent to add, so that rare batch stays an upsert.
        as_add = fresh_metas is None or all(fresh_metas)
        (server._add if as_add else server._upsert)(
            collection_id=collection.id,
            ids=[ids[i] for i in fresh],
            embeddings=cast(Any, [vectors[i] for i in fresh]),
            metadatas=cast(Any, fresh_metas if as_add else [metadatas[i] for i in fresh]
                           if metadatas is not None else None),
            documents=[documents[i] for i in fresh] if documents is not None else None,
            uris=[uris[i] for i in fresh] if uris is not None else None,
            tenant=tenant,
            database=database,
        )
    if not rewrites:
        return
    server._delete(
        collection_id=collection.id,
        ids=[r[0] for rows in rewrites.values() for r in rows],
        tenant=tenant,
        database=database,
    )
    # One add per combination of present fields, as in plan_batches: a None
    # inside a column is not the same as leaving the column out.
    for (_, has_doc, has_md, has_uri), rows in rewrites.items():
        server._add(
            ids=[r[0] for r in rows],
            collection_id=collection.id,
            embeddings=cast(Any, [r[1] for r in rows]),
            documents=[cast(str, r[2]) for r in rows] if has_doc else None,
            metadatas=[r[3] for r in rows] if has_md else None,
            uris=[cast(str, r[4]) for r in rows] if has_uri else None,
            tenant=tenant,
            database=database,
        )


def apply_ops(
    collection: Collection,
    ops: Sequence[Op],
    *,
    dimension: int | None = None,
    max_batch_size: int | None = None,
) -> int:
    """Apply ``ops`` in order with Chroma's own sequential semantics; return the call count.

    The result equals calling add/upsert/update/delete once per op, in order,
    on Chroma's server: ``add`` of an existing id is ignored, ``update`` of a
    missing id is ignored, ``update``/``upsert`` merge metadata keys and a
    ``None`` value removes a key, fields an op does not carry are left as
    they were. It is fast because consecutive compatible ops go in one call
    (see :func:`plan_batches`), up to Chroma's max batch size.

    ``dimension``, if given, is checked for every embedding of a call before
    the call. An error in a call raises after the earlier calls have been
    applied: the caller must then throw the directory away.

    ``max_batch_size`` caps records per call below Chroma's own limit. Write
    calls hold the GIL for their whole duration (measured: a 4000 x 384 add
    starves other Python threads for ~2.6 s), so a caller that must keep a
    thread responsive (lease renewal, metrics) can bound the stall.
    """
    limit = _server(collection).get_max_batch_size()
    if max_batch_size is not None:
        limit = max(1, min(limit, max_batch_size))
    batches = plan_batches(ops, limit)
    for batch in batches:
        _apply_batch(collection, batch, dimension)
    return len(batches)


# ---------------------------------------------------------------- reads


def _records(result: Any) -> dict[str, Record]:
    embeddings = result["embeddings"]
    out: dict[str, Record] = {}
    for i, rid in enumerate(result["ids"]):
        metadata = result["metadatas"][i]
        out[rid] = Record(
            embedding=np.asarray(embeddings[i], dtype=np.float32),
            document=result["documents"][i],
            metadata=dict(metadata) if metadata is not None else None,
            uri=result["uris"][i],
        )
    return out


_INCLUDE_ALL: Any = ["embeddings", "documents", "metadatas", "uris"]


def get_records(collection: Collection, ids: Sequence[str]) -> dict[str, Record]:
    """The records among ``ids`` that exist, by id (missing ids are absent)."""
    out: dict[str, Record] = {}
    step = _server(collection).get_max_batch_size()
    for i in range(0, len(ids), step):
        out.update(_records(collection.get(ids=list(ids[i : i + step]), include=_INCLUDE_ALL)))
    return out


def read_all(collection: Collection) -> dict[str, Record]:
    """Every record in the collection, by id (pages through ``get``)."""
    out: dict[str, Record] = {}
    offset = 0
    while True:
        page = _records(collection.get(limit=_PAGE, offset=offset, include=_INCLUDE_ALL))
        out.update(page)
        if len(page) < _PAGE:
            return out
        offset += _PAGE


def count(collection: Collection) -> int:
    """Number of records."""
    return collection.count()


def collection_info(collection: Collection) -> dict[str, Any]:
    """The collection as Chroma's HTTP API returns it (``GET .../collections/{name}``).

    Same keys, in the same order, as ``chroma run`` 1.5.9 sends, so a reader
    can serve it verbatim to ``chromadb.HttpClient``. Fetched fresh because
    ``dimension`` is only set by the first write.
    """
    model = _server(collection).get_collection(
        collection.name, tenant=collection.tenant, database=collection.database
    )
    return {
        "id": str(model.id),
        "name": model.name,
        "configuration_json": model.configuration_json,
        "schema": model.serialized_schema,
        "metadata": model.metadata,
        "dimension": model.dimension,
        "tenant": model.tenant,
        "database": model.database,
        "log_position": model.log_position,
        "version": model.version,
    }


# ---------------------------------------------------------------- persistence


def _connect_ro(path: Path) -> sqlite3.Connection:
    uri = (path / SQLITE_FILE).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def log_states(path: Path) -> list[LogState]:
    """Per collection in ``path``: write log head and how far each segment got.

    Read with a read-only SQLite connection; safe while a client has the
    directory open (journal mode ``delete``: readers take a shared lock only
    between Chroma's write transactions).
    """
    con = _connect_ro(path)
    try:
        states = []
        for (cid,) in con.execute("SELECT id FROM collections ORDER BY id").fetchall():
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
    server = _server(collection)
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
        if state.metadata_seq_id < state.log_max_seq_id:
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


# ---------------------------------------------------------------- serving reads


def _bindings(collection: Collection) -> Any:
    # The Rust bindings' own query/get/count: what chromadb's server calls, without the
    # Python Collection's per-call validation and conversion (the HTTP layer validated).
    return collection._client.bindings  # type: ignore[attr-defined]


def _json_or_none(value: Any) -> str | None:
    import json

    return json.dumps(value) if value else None


def query_raw(collection: Collection, embeddings: Any, n_results: int, *,
              where: Any = None, where_document: Any = None, ids: Sequence[str] | None = None,
              include: Sequence[str] = ("distances",)) -> dict[str, Any]:
    """A query through the bindings; columns are lists of lists, one per query row."""
    r = _bindings(collection).query(
        str(collection.id), list(ids) if ids is not None else None, list(embeddings), n_results,
        _json_or_none(where), _json_or_none(where_document), list(include),
        collection.tenant, collection.database,
    )
    return {"ids": r.ids, "embeddings": r.embeddings, "documents": r.documents,
            "uris": r.uris, "metadatas": r.metadatas, "distances": r.distances}


def get_raw(collection: Collection, *, ids: Sequence[str] | None = None, where: Any = None,
            where_document: Any = None, limit: int | None = None, offset: int = 0,
            include: Sequence[str] = ()) -> dict[str, Any]:
    """A get through the bindings; columns are flat lists in Chroma's storage order."""
    r = _bindings(collection).get(
        str(collection.id), list(ids) if ids is not None else None, _json_or_none(where),
        limit, offset, _json_or_none(where_document), list(include),
        collection.tenant, collection.database,
    )
    return {"ids": r.ids, "embeddings": r.embeddings, "documents": r.documents,
            "uris": r.uris, "metadatas": r.metadatas}


def count_raw(collection: Collection) -> int:
    """Record count through the bindings."""
    return int(_bindings(collection).count(str(collection.id), collection.tenant,
                                           collection.database))
