"""Write validation: every check happens before anything is written.

A request is turned into ``Op`` records only when all of it is valid; the
first problem found is reported with the record index and what to do, and
the whole request is rejected (nothing partial reaches a delta).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chromasnap.config import CHROMA_MAX_PAYLOAD_BYTES
from chromasnap.engine.errors import InvalidWrite
from chromasnap.engine.filters import validate_where, validate_where_document
from chromasnap.engine.ops import DeleteFilter, Embedding, Metadata, Op, OpKey, OpKind

MAX_ID_BYTES = 1024
MAX_METADATA_KEY_BYTES = 512
MAX_METADATA_KEYS = 256
# Chroma keeps documents in SQLite; very large ones are a sign of a client bug.
MAX_DOCUMENT_BYTES = 8 << 20


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (the writer's settings)."""

    dimension: int
    max_records: int = 100_000
    max_bytes: int = CHROMA_MAX_PAYLOAD_BYTES


class WriterClock:
    """Assigns each accepted op its key: strictly increasing time, then sequence.

    Timestamps never go backwards within one writer even if the wall clock
    does, so a writer's own writes keep their order under last-writer-wins.
    """

    def __init__(self, writer_id: str) -> None:
        self.writer_id = writer_id
        self._last_us = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next_keys(self, n: int) -> list[OpKey]:
        """Reserve ``n`` consecutive keys sharing one timestamp."""
        with self._lock:
            now = time.time_ns() // 1000
            ts = max(now, self._last_us + 1)
            self._last_us = ts
            first = self._seq + 1
            self._seq += n
        return [OpKey(ts, self.writer_id, first + i) for i in range(n)]

    def flush_time_us(self) -> int:
        """A strictly increasing timestamp for naming the next delta."""
        with self._lock:
            ts = max(time.time_ns() // 1000, self._last_us + 1)
            self._last_us = ts
            return ts


def _check_ids(ids: Any) -> list[str]:
    if not isinstance(ids, list) or not ids:
        raise InvalidWrite("ids must be a non-empty list of strings")
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if not isinstance(rid, str) or not rid:
            raise InvalidWrite(f"ids[{i}] must be a non-empty string, got {rid!r}")
        if len(rid.encode()) > MAX_ID_BYTES:
            raise InvalidWrite(f"ids[{i}] is longer than {MAX_ID_BYTES} bytes; use a shorter id")
        if rid in seen:
            raise InvalidWrite(
                f"duplicate id {rid!r} in one request (ids[{i}]); send each id at most once "
                "per request"
            )
        seen.add(rid)
    return ids


def _check_embeddings(emb: Any, n: int, dimension: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    try:
        arr = np.asarray(emb, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidWrite(f"embeddings must be lists of numbers: {e}") from e
    if arr.ndim != 2 or arr.shape[0] != n:
        got = arr.shape[0] if arr.ndim >= 1 else 0
        raise InvalidWrite(
            f"got {got} embeddings for {n} ids (or ragged rows); send exactly one embedding "
            f"of {dimension} numbers per id"
        )
    if arr.shape[1] != dimension:
        raise InvalidWrite(
            f"embedding dimension {arr.shape[1]} does not match the collection's dimension "
            f"{dimension}"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise InvalidWrite(f"embeddings[{bad}] contains NaN or infinity; send finite numbers")
    return arr


def _check_metadata(m: Any, i: int, allow_none_values: bool) -> Metadata | None:
    if m is None:
        return None
    if not isinstance(m, dict):
        raise InvalidWrite(f"metadatas[{i}] must be an object mapping strings to values")
    if len(m) > MAX_METADATA_KEYS:
        raise InvalidWrite(f"metadatas[{i}] has {len(m)} keys; at most {MAX_METADATA_KEYS}")
    for k, v in m.items():
        if not isinstance(k, str) or not k:
            raise InvalidWrite(f"metadatas[{i}] has an empty or non-string key")
        if len(k.encode()) > MAX_METADATA_KEY_BYTES:
            raise InvalidWrite(f"metadatas[{i}] key {k[:40]!r}… is too long")
        if k.startswith("chroma:"):
            raise InvalidWrite(f"metadatas[{i}] key {k!r} uses the reserved prefix 'chroma:'")
        if v is None:
            if not allow_none_values:
                raise InvalidWrite(
                    f"metadatas[{i}][{k!r}] is null; null removes a key and is only allowed "
                    "in update and upsert"
                )
            continue
        if isinstance(v, list):
            _check_metadata_list(v, i, k)
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidWrite(f"metadatas[{i}][{k!r}] is NaN or infinity")
        if not isinstance(v, str | int | float | bool):
            raise InvalidWrite(
                f"metadatas[{i}][{k!r}] has unsupported type {type(v).__name__}; use a string, "
                "integer, float, boolean or a non-empty list of one of those"
            )
    return m


def _check_metadata_list(v: list[Any], i: int, k: str) -> None:
    """chromadb 1.5.9's rule for array metadata: non-empty, every element a str, int,
    float or bool, all of the same type (bool is not int, int is not float); floats
    finite (chromadb itself accepts NaN and then fails every later write)."""
    if not v:
        raise InvalidWrite(
            f"metadatas[{i}]: expected metadata list value for key {k!r} to be non-empty"
        )
    first = type(v[0])
    if first not in (str, int, float, bool) or any(type(x) is not first for x in v):
        raise InvalidWrite(
            f"metadatas[{i}]: expected metadata list value for key {k!r} to contain only "
            f"str, int, float, or bool and all elements must be the same type, got {v!r:.200}"
        )
    if first is float and not all(math.isfinite(x) for x in v):
        raise InvalidWrite(f"metadatas[{i}][{k!r}] contains NaN or infinity")


def _column(name: str, values: Any, n: int) -> list[Any] | None:
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != n:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise InvalidWrite(f"{name} must be a list with one entry per id ({n}), got {got}")
    return values


def _filtered_delete(ids: Any, where: Any, where_document: Any, limit: int | None,
                     limits: Limits, clock: WriterClock) -> Op:
    """``delete(where=..., where_document=..., ids=...)`` as one op: a writer holds no
    records, so the filter travels in the delta and is decided where the state is."""
    # ``limit``: only the first n matching records, decided where the state is.
    if limit is not None and (type(limit) is not int or not 0 <= limit < 1 << 32):
        raise InvalidWrite("limit must be a non-negative integer in delete")
    if where is not None:
        validate_where(where)
    if where_document is not None:
        validate_where_document(where_document)
    # ids=[] limits the delete to no record: Chroma's server deletes nothing then.
    rids = None if ids is None else [] if ids == [] else _check_ids(ids)
    if rids is not None and len(rids) > limits.max_records:
        raise InvalidWrite(f"batch of {len(rids)} records is over the limit of "
                           f"{limits.max_records}; split it into smaller requests")
    (key,) = clock.next_keys(1)
    return Op(OpKind.DELETE_WHERE, "", key,
              filter=DeleteFilter(where, where_document, None if rids is None else tuple(rids),
                                  limit))


def build_ops(
    kind: OpKind,
    ids: Any,
    *,
    embeddings: Any = None,
    documents: Any = None,
    metadatas: Any = None,
    uris: Any = None,
    limits: Limits,
    clock: WriterClock,
    where: Any = None,
    where_document: Any = None,
    limit: int | None = None,
) -> list[Op]:
    """Validate one client request and turn it into ops with fresh keys.

    Raises InvalidWrite with a message saying what was wrong and what to send.
    """
    if kind == OpKind.DELETE and (where is not None or where_document is not None):
        return [_filtered_delete(ids, where, where_document, limit, limits, clock)]
    rids = _check_ids(ids)
    n = len(rids)
    if n > limits.max_records:
        raise InvalidWrite(
            f"batch of {n} records is over the limit of {limits.max_records}; split it into "
            "smaller requests"
        )
    if kind == OpKind.DELETE:
        if any(v is not None for v in (embeddings, documents, metadatas, uris)):
            raise InvalidWrite("delete takes only ids")
        keys = clock.next_keys(n)
        return [Op(OpKind.DELETE, rid, key) for rid, key in zip(rids, keys, strict=True)]
    emb: Sequence[Embedding | None]
    if embeddings is None:
        if kind in (OpKind.ADD, OpKind.UPSERT):
            raise needs_embeddings(kind)
        emb = [None] * n
    else:
        arr = _check_embeddings(embeddings, n, limits.dimension)
        emb = list(arr)
    docs = _column("documents", documents, n)
    metas = _column("metadatas", metadatas, n)
    uri_list = _column("uris", uris, n)
    size = n * limits.dimension * 4
    if docs is not None:
        for i, d in enumerate(docs):
            if d is not None and not isinstance(d, str):
                raise InvalidWrite(f"documents[{i}] must be a string or null")
            if d is not None:
                size += len(d)
                if len(d) > MAX_DOCUMENT_BYTES:
                    raise InvalidWrite(f"documents[{i}] is over {MAX_DOCUMENT_BYTES} bytes")
    allow_none = kind in (OpKind.UPDATE, OpKind.UPSERT)
    checked_metas = (
        [_check_metadata(m, i, allow_none) for i, m in enumerate(metas)] if metas else None
    )
    if size > limits.max_bytes:
        raise InvalidWrite(
            f"request is about {size} bytes, over the limit of {limits.max_bytes}; split it "
            "into smaller requests"
        )
    keys = clock.next_keys(n)
    return [
        Op(
            kind=kind,
            id=rids[i],
            key=keys[i],
            embedding=emb[i],
            document=None if docs is None else docs[i],
            metadata=None if checked_metas is None else checked_metas[i],
            uri=None if uri_list is None else uri_list[i],
        )
        for i in range(n)
    ]


def needs_embeddings(kind: OpKind) -> InvalidWrite:
    """The error for an add or upsert without embeddings."""
    return InvalidWrite(
        f"{kind.name.lower()} needs embeddings: chromasnap stores vectors, it does not "
        "compute them; pass embeddings= or give the client an embedding function"
    )
