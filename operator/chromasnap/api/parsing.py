"""Request bodies decoded into ``models``: JSON, embeddings, filters and the other fields.

A body that does not fit the route's Chroma request type is refused first, as
Chroma refuses it (``deserialize.check_payload``: 422, or 400 where Chroma says
400), so the checks here see the types Chroma's do. What is left is Chroma's
400s: shapes (inconsistent lengths, base64, non-finite numbers), filters
(compiled once here so a malformed or over-deep one is refused before any
backend sees it). Whether a write fits the collection (dimension, metadata
rules) is the write backend's call.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import orjson

from chromasnap.api.deserialize import check_payload
from chromasnap.api.models import (
    GET_DEFAULT_INCLUDE,
    QUERY_DEFAULT_INCLUDE,
    GetRequest,
    QueryRequest,
    WriteRequest,
)
from chromasnap.engine.distances import Float32Array
from chromasnap.engine.errors import InvalidArgument
from chromasnap.engine.filters import compile_where, compile_where_document
from chromasnap.engine.ops import OpKind

N_RESULTS_CAP = (1 << 31) - 1
"""Where a valid ``n_results`` is clamped: far above any collection's size, so answers are
unchanged, with room for a backend to ask its snapshot for ``n_results`` plus the ids its
tail overrides without leaving chromadb's u32."""
INLINE_DECODE_BYTES = 64 << 10
"""Bodies up to this size are decoded on the event loop (a query's typical body, where a
thread hop would cost more than the work); larger ones — big batches, filters with
thousands of clauses — and any with a regex (compiling one can take a good fraction of a
second) in a worker thread, so the loop keeps answering other requests (and probes)."""

T = TypeVar("T")


def load_json(raw: bytes) -> Any:
    """Parse a request body; ``InvalidArgument`` when it is empty or not JSON.

    orjson refuses nesting over 1024 levels itself, so parsing never recurses unboundedly.
    """
    if not raw.strip():
        raise InvalidArgument("request body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(f"Failed to parse the request body as JSON: {e}") from e


async def decode_body(raw: bytes, parse: Callable[[Any], T]) -> T:
    """``parse(load_json(raw))``, in a worker thread when that may take a while."""
    # A substring test costs microseconds; "regex" catches $regex and $not_regex.
    if len(raw) <= INLINE_DECODE_BYTES and b"regex" not in raw:
        return parse(load_json(raw))
    return await asyncio.to_thread(lambda: parse(load_json(raw)))


def decode_embeddings(value: Any, name: str = "embeddings") -> Float32Array | None:
    """Embeddings as the client sends them — lists of numbers, or base64 of little-endian
    float32 (chromadb >= 1.0 when the server advertises it) — as a float32 ``(n, dim)`` array.

    Raises ``InvalidArgument`` for ragged, non-numeric, undecodable or non-finite input.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(f"{name} must be a list of embeddings, got {type(value).__name__}")
    if not value:
        return np.zeros((0, 0), dtype=np.float32)
    first = value[0]
    if isinstance(first, str):
        rows: list[bytes] = []
        for i, s in enumerate(value):
            if not isinstance(s, str):
                raise InvalidArgument(f"{name}[{i}] must be a base64 string like the others")
            try:
                rows.append(binascii.a2b_base64(s, strict_mode=True))
            except (binascii.Error, ValueError) as e:
                raise InvalidArgument(f"Invalid base64 string in {name}[{i}]: {e}") from e
        width = len(rows[0])
        if width % 4 or any(len(r) != width for r in rows):
            raise InvalidArgument("Inconsistent dimensions in provided embeddings")
        arr = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), width // 4)
        arr = arr.astype(np.float32, copy=False)
    else:
        for i, row in enumerate(value):
            if not isinstance(row, list):
                raise InvalidArgument(
                    f"{name}[{i}] must be a list of numbers (or every row a base64 string), "
                    f"got {type(row).__name__}"
                )
        try:
            arr = np.array(value, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as e:
            if len({len(r) for r in value}) > 1:
                raise InvalidArgument("Inconsistent dimensions in provided embeddings") from e
            raise InvalidArgument(f"{name} must contain only numbers: {e}") from e
        if arr.ndim != 2:
            raise InvalidArgument(f"{name} must be a list of lists of numbers")
    if not np.isfinite(arr).all():
        bad = int(np.argmin(np.isfinite(arr).all(axis=1)))
        raise InvalidArgument(f"{name}[{bad}] contains NaN or infinity; send finite numbers")
    return arr


def body_object(body: Any) -> dict[str, Any]:
    """``body`` if it is a JSON object, else ``InvalidArgument``."""
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"request body must be a JSON object, got {type(body).__name__}"
        )
    return body


def _column(body: Mapping[str, Any], name: str) -> Any:
    """An optional field, its type already checked by ``check_payload``."""
    return body.get(name)


def _filters(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    # Old clients send {} for "no filter"; chromadb treats a falsy filter as none.
    where = body.get("where") or None
    where_document = body.get("where_document") or None
    if where is not None:
        compile_where(where)
    if where_document is not None:
        compile_where_document(where_document)
    return where, where_document


def _include(body: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    v = body.get("include", default)
    return tuple(v)


def parse_write(kind: OpKind, body: Any, read_after: str | None = None) -> WriteRequest:
    """Decode an add/upsert/update/delete body (shapes only: the backend validates content)."""
    b = check_payload(kind.name.lower(), body)
    if kind == OpKind.DELETE:
        ids = _column(b, "ids")
        # Chroma's server refuses an empty filter in a delete (a get or query ignores it).
        if b.get("where") == {}:
            raise InvalidArgument("Invalid where clause")
        if b.get("where_document") == {}:
            raise InvalidArgument("Invalid where document clause")
        where, where_document = _filters(b)
        if ids is not None and not ids and where is None and where_document is None:
            raise InvalidArgument("Either ids or where must be specified")
        if b.get("limit") is not None and where is None and where_document is None:
            raise InvalidArgument("Validation error: limit, where: limit can only be "
                                  "specified when a where clause is provided")
        if ids is None and where is None and where_document is None:
            raise InvalidArgument("Either ids, where or where_document must be specified")
        filtered = where is not None or where_document is not None
        return WriteRequest(
            # With a filter, no ids means every id and [] means none (Chroma deletes nothing).
            ids=ids if filtered else ids or [], where=where, where_document=where_document,
            limit=_column(b, "limit"), read_after=read_after,
        )
    ids = b["ids"]
    raw = b.get("embeddings")
    if isinstance(raw, list) and any(r is None for r in raw):
        # Only an update's body gets here with one (Chroma's update takes them).
        raise InvalidArgument(
            "embeddings must have a vector for every record (or be omitted in update)"
        )
    emb = decode_embeddings(raw)
    req = WriteRequest(
        ids=ids,
        embeddings=emb,
        documents=_column(b, "documents"),
        metadatas=_column(b, "metadatas"),
        uris=_column(b, "uris"),
        read_after=read_after,
    )
    n = len(ids)
    for col in (emb, req.documents, req.metadatas, req.uris):
        if col is not None and len(col) != n:
            raise InvalidArgument(
                "Inconsistent number of IDs, embeddings, documents, URIs and metadatas"
            )
    return req


def parse_get(body: Any, read_after: str | None = None) -> GetRequest:
    """Decode and validate a get body."""
    b = check_payload("get", body)
    where, where_document = _filters(b)
    return GetRequest(
        ids=_column(b, "ids"),
        where=where,
        where_document=where_document,
        limit=_column(b, "limit"),
        offset=_column(b, "offset") or 0,
        include=_include(b, GET_DEFAULT_INCLUDE),
        read_after=read_after,
    )


def parse_query(body: Any, read_after: str | None = None) -> QueryRequest:
    """Decode and validate a query body."""
    b = check_payload("query", body)
    q = decode_embeddings(b["query_embeddings"], "query_embeddings")
    assert q is not None
    n_results = b.get("n_results")
    if n_results is None:
        n_results = 10
    elif n_results == 0:
        # chroma run 1.5.9 drops the connection for this one; chromadb's client says this.
        raise InvalidArgument(
            f"Number of requested results {n_results!r}, cannot be negative, or zero."
        )
    where, where_document = _filters(b)
    return QueryRequest(
        query_embeddings=q,
        n_results=min(n_results, N_RESULTS_CAP),
        where=where,
        where_document=where_document,
        include=_include(b, QUERY_DEFAULT_INCLUDE),
        ids=_column(b, "ids"),
        read_after=read_after,
    )
