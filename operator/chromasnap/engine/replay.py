"""Replaying writes into a chromadb collection with Chroma's own semantics, fast.

The compactor folds deltas by applying their ops, in key order, to a copy of
the base snapshot. :func:`apply_ops` gives the same result as sending every op
to Chroma's HTTP server one by one (``add`` of an existing id ignored,
``update`` of a missing id ignored, metadata keys merged, ...), and the same
record order (see :mod:`chromasnap.engine.persistence`), but groups
consecutive compatible ops into one call (:func:`plan_batches`).

Vector changes of existing records go through ``_replace_vectors``: delete +
add, to dodge a chromadb 1.5.9 bug that loses them, followed by
:func:`~chromasnap.engine.persistence.move_rows` so that the record keeps its
place in ``get``/``peek`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.api.types import (
    validate_documents,
    validate_embeddings,
    validate_ids,
    validate_metadatas,
)

from chromasnap.engine import persistence
from chromasnap.engine.chromadir import directory_of, server_api
from chromasnap.engine.merge import merge_metadata
from chromasnap.engine.ops import Op, OpKind

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
    server = server_api(collection)
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
    the merged fields does the same from outside.

    The add puts the record in a new row at the end of ``get``/``peek``
    order, where Chroma's own update would have kept it in place. chromadb
    has no way to add a record at a chosen position, nor to change a vector
    other than by update (buggy) or delete + add, and the HNSW save cannot be
    made to include an element it did not mark dirty. The order, though, is
    nothing but the SQLite row id of the record (see
    :mod:`~chromasnap.engine.persistence`), which the HNSW index never sees:
    so the rewritten records are given their old row ids back
    (:func:`~chromasnap.engine.persistence.move_rows`) before anything else
    is written.
    """
    server = server_api(collection)
    tenant, database = collection.tenant, collection.database
    current = collection.get(ids=ids, include=["documents", "metadatas", "uris"])
    found: dict[str, tuple[str | None, dict[str, Any] | None, str | None]] = {}
    cur_docs, cur_mds, cur_uris = current["documents"], current["metadatas"], current["uris"]
    assert cur_docs is not None and cur_mds is not None and cur_uris is not None
    for rid, cur_doc, cur_md, cur_uri in zip(
        current["ids"], cur_docs, cur_mds, cur_uris, strict=True
    ):
        # A record with a URI and no metadata reads back as {}: that is no metadata.
        found[rid] = (cur_doc, dict(cur_md) if cur_md else None, cur_uri)

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
    rewritten = [r[0] for rows in rewrites.values() for r in rows]
    path, collection_id = directory_of(collection), str(collection.id)
    rows_before = persistence.row_ids(path, collection_id, rewritten)
    server._delete(
        collection_id=collection.id,
        ids=rewritten,
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
    persistence.move_rows(path, collection_id, rows_before)


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
    limit = server_api(collection).get_max_batch_size()
    if max_batch_size is not None:
        limit = max(1, min(limit, max_batch_size))
    batches = plan_batches(ops, limit)
    for batch in batches:
        _apply_batch(collection, batch, dimension)
    return len(batches)
