"""Reading records from an open chromadb collection: whole, by id, and as Chroma serves them.

Two kinds of readers use this: the compactor, tests and import/export read
:class:`Record` values (:func:`get_records`, :func:`read_all`); a reader's
HTTP answers come from the ``*_raw`` functions, which call chromadb's Rust
bindings directly — what ``chroma run`` calls — so the columns are exactly
what Chroma would send, in Chroma's order (see
:mod:`chromasnap.engine.persistence` for what that order is, and
:func:`row_positions` to compare positions).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
from chromadb.api.models.Collection import Collection
from chromadb.errors import InternalError

from chromasnap.engine import merge, persistence
from chromasnap.engine.chromadir import directory_of, server_api
from chromasnap.engine.errors import Internal
from chromasnap.engine.ops import DeleteFilter, Embedding

_PAGE = 5000  # records per page in read_all: bounds memory, not semantics
# What chromadb (and ``chroma run``, as a 500 InternalError) answers to a query whose
# ``ids`` name a record that does not exist, when no where/where_document filter is given.
ID_NOT_FOUND = "Error executing plan: Internal error: Error finding id"


class Record(NamedTuple):
    """One stored record, as ``collection.get`` returns it (embedding always float32)."""

    embedding: Embedding
    document: str | None
    metadata: dict[str, Any] | None
    uri: str | None


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
    # chromadb's get costs per id asked, found or not, and callers ask for every id a
    # batch of writes touches, mostly new ones: one SQLite pass says which exist.
    present = persistence.row_ids(directory_of(collection), str(collection.id), ids)
    ids = [rid for rid in ids if rid in present]
    out: dict[str, Record] = {}
    step = server_api(collection).get_max_batch_size()
    for i in range(0, len(ids), step):
        out.update(_records(collection.get(ids=list(ids[i : i + step]), include=_INCLUDE_ALL)))
    return out


def read_pages(collection: Collection, page: int = _PAGE) -> Iterator[dict[str, Record]]:
    """Every record in the collection, ``page`` at a time, in ``get`` order."""
    offset = 0
    while True:
        got = _records(collection.get(limit=page, offset=offset, include=_INCLUDE_ALL))
        if got:
            yield got
        if len(got) < page:
            return
        offset += page


def read_all(collection: Collection) -> dict[str, Record]:
    """Every record in the collection, by id, in ``get`` order."""
    out: dict[str, Record] = {}
    for page in read_pages(collection):
        out.update(page)
    return out


def count(collection: Collection) -> int:
    """Number of records."""
    return collection.count()


def collection_info(collection: Collection) -> dict[str, Any]:
    """The collection as Chroma's HTTP API returns it (``GET .../collections/{name}``).

    Same keys, in the same order, as ``chroma run`` 1.5.9 sends, so a reader
    can serve it verbatim to ``chromadb.HttpClient``. Fetched fresh because
    ``dimension`` is only set by the first write.
    """
    model = server_api(collection).get_collection(
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


# ---------------------------------------------------------------- serving reads


def _bindings(collection: Collection) -> Any:
    # The Rust bindings' own query/get/count: what chromadb's server calls, without the
    # Python Collection's per-call validation and conversion (the HTTP layer validated).
    return collection._client.bindings  # type: ignore[attr-defined]


def _json_or_none(value: Any) -> str | None:
    return json.dumps(value) if value else None


@contextmanager
def _as_chroma_answers() -> Iterator[None]:
    # chroma run answers an InternalError of its executor with 500 and chromadb's own
    # message; without this the HTTP layer would prefix the exception's class name.
    try:
        yield
    except InternalError as e:
        raise Internal(str(e)) from e


def id_not_found() -> Internal:
    """The error Chroma raises for a query whose ``ids`` name a record it does not have."""
    return Internal(ID_NOT_FOUND)


def query_raw(collection: Collection, embeddings: Any, n_results: int, *,
              where: Any = None, where_document: Any = None, ids: Sequence[str] | None = None,
              include: Sequence[str] = ("distances",)) -> dict[str, Any]:
    """A query through the bindings; columns are lists of lists, one per query row.

    Without a ``where``/``where_document`` filter, ``ids`` naming a record
    that is not there raises :func:`id_not_found`'s error, as in Chroma
    (unless the collection was never written: no index, no error).
    """
    with _as_chroma_answers():
        r = _bindings(collection).query(
            str(collection.id), list(ids) if ids is not None else None, list(embeddings),
            n_results, _json_or_none(where), _json_or_none(where_document), list(include),
            collection.tenant, collection.database,
        )
    return {"ids": r.ids, "embeddings": r.embeddings, "documents": r.documents,
            "uris": r.uris, "metadatas": r.metadatas, "distances": r.distances}


def get_raw(collection: Collection, *, ids: Sequence[str] | None = None, where: Any = None,
            where_document: Any = None, limit: int | None = None, offset: int = 0,
            include: Sequence[str] = ()) -> dict[str, Any]:
    """A get through the bindings; columns are flat lists in Chroma's storage order."""
    with _as_chroma_answers():
        r = _bindings(collection).get(
            str(collection.id), list(ids) if ids is not None else None, _json_or_none(where),
            limit, offset, _json_or_none(where_document), list(include),
            collection.tenant, collection.database,
        )
    return {"ids": r.ids, "embeddings": r.embeddings, "documents": r.documents,
            "uris": r.uris, "metadatas": r.metadatas}


def matching_ids(collection: Collection, f: DeleteFilter) -> list[str]:
    """Ids of ``collection``'s records a filtered delete's filter matches (chromadb's rules)."""
    if f.ids is not None and not f.ids:
        return []  # ids=[] limits the delete to nothing (a get with ids=[] would mean all)
    got = get_raw(collection, ids=f.ids, where=f.where, where_document=f.where_document)
    return list(got["ids"])


def state_lookup(collection: Collection) -> merge.Lookup:
    """``collection`` as the state ops fold onto: its records by id, as the merge rules see them."""

    def lookup(ids: list[str]) -> Mapping[str, merge.Record]:
        return {rid: merge.Record(rid, r.embedding, r.document, r.metadata or None, r.uri)
                for rid, r in get_records(collection, ids).items()}

    return lookup


def state_matching(collection: Collection) -> merge.Matching:
    """``collection`` as the state filtered deletes are decided on (see ``merge``)."""
    return lambda f: matching_ids(collection, f)


def count_raw(collection: Collection) -> int:
    """Record count through the bindings."""
    with _as_chroma_answers():
        return int(_bindings(collection).count(str(collection.id), collection.tenant,
                                               collection.database))


def has_index(collection: Collection) -> bool:
    """Whether a vector was ever written (Chroma sets the dimension then and keeps it)."""
    return collection_info(collection)["dimension"] is not None


@contextmanager
def row_positions(collection: Collection) -> Iterator[persistence.RowLookup]:
    """A function giving existing ids' position keys in ``get``/``peek`` order (smaller first)."""
    with persistence.row_lookup(directory_of(collection), str(collection.id)) as lookup:
        yield lookup
