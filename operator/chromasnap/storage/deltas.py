"""Deltas: immutable batches of writes, one S3 object each.

Format (``.arrow``): the 8-byte magic ``CSNAPD01``, an Apache Arrow IPC
stream, then the SHA-256 of everything before it (32 bytes). The Arrow
schema carries the format version, writer id and dimension as schema
metadata; embeddings are a ``fixed_size_list<float32>[dimension]`` column, so
decoding is a zero-copy view, and metadata maps are JSON text (typed values
survive: JSON keeps str/int/float/bool/null apart). Nothing is pickled.

Format 2 adds one column, ``filter`` (JSON text: ``where``, ``where_document``,
``ids``), for filtered deletes (``OpKind.DELETE_WHERE``). A writer writes
format 2 only for a delta that holds one, so every other delta stays format 1
and readable by components that predate filtered deletes; those refuse a
format-2 delta as unsupported (quarantined by an old compactor, never applied
wrongly). Format 3 is format 2 whose filters may carry ``limit`` (a
``delete(where=..., limit=n)``); a writer writes it only for a delta holding
such a delete, so components that predate limits refuse it rather than delete
every match. All three formats are read.

Key: ``deltas/<ts_us:017d>-<writer-id>.arrow``: the flush time in
microseconds sorts keys roughly by time; the writer id makes them unique
(each writer's flush times strictly increase). The key name (without the
``deltas/`` prefix) is also the read-your-writes token.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from chromasnap.engine import filters
from chromasnap.engine.errors import InvalidArgument
from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind

FORMAT_VERSION = 3  # newest format read; written only when a delta needs it
_FORMATS = (1, 2, 3)
MAGIC = b"CSNAPD01"
DELTA_PREFIX = "deltas/"
DELTA_EXT = ".arrow"
_SHA_LEN = 32
_KEY_RE = re.compile(r"^(?P<ts>\d{17})-(?P<writer>[A-Za-z0-9._-]+)\.arrow$")


class CorruptDelta(ValueError):
    """A delta object is damaged or not a chromasnap delta; it is never applied."""


@dataclass(frozen=True)
class DeltaName:
    """A parsed delta object name."""

    ts_us: int
    writer: str

    @property
    def name(self) -> str:
        """The object name without prefix; also the read-your-writes token."""
        return f"{self.ts_us:017d}-{self.writer}{DELTA_EXT}"

    @property
    def key(self) -> str:
        """The object key relative to the collection root."""
        return DELTA_PREFIX + self.name


def parse_name(name: str) -> DeltaName:
    """Parse ``<ts>-<writer>.arrow`` (with or without the ``deltas/`` prefix)."""
    base = name.removeprefix(DELTA_PREFIX)
    m = _KEY_RE.match(base)
    if not m:
        raise ValueError(f"{name!r} is not a delta name (<17-digit-µs>-<writer-id>.arrow)")
    return DeltaName(int(m["ts"]), m["writer"])


def is_delta_key(key: str) -> bool:
    """True for keys under ``deltas/`` that look like delta names (temp files are skipped)."""
    return key.startswith(DELTA_PREFIX) and _KEY_RE.match(key[len(DELTA_PREFIX) :]) is not None


def _schema(dimension: int, writer: str, fmt: int) -> pa.Schema:
    filter_field = [pa.field("filter", pa.string())] if fmt >= 2 else []
    return pa.schema(
        [
            pa.field("kind", pa.int8(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("ts_us", pa.int64(), nullable=False),
            pa.field("writer", pa.string(), nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimension)),
            pa.field("document", pa.string()),
            pa.field("metadata", pa.string()),
            pa.field("uri", pa.string()),
            *filter_field,
        ],
        metadata={
            "chromasnap.format": str(fmt),
            "chromasnap.writer": writer,
            "chromasnap.dimension": str(dimension),
        },
    )


def encode(ops: Sequence[Op], dimension: int, writer: str) -> bytes:
    """Serialize ops (already validated) into one checksummed delta object."""
    n = len(ops)
    emb = np.zeros((n, dimension), dtype=np.float32)
    emb_valid = np.zeros(n, dtype=bool)
    for i, op in enumerate(ops):
        if op.embedding is not None:
            emb[i] = op.embedding
            emb_valid[i] = True
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    emb_arr = pa.FixedSizeListArray.from_arrays(flat, dimension, mask=pa.array(~emb_valid))
    fmt = (3 if any(op.filter is not None and op.filter.limit is not None for op in ops)
           else 2 if any(op.filter is not None for op in ops) else 1)
    filters = ([pa.array([_filter_json(op.filter) for op in ops], type=pa.string())]
               if fmt >= 2 else [])
    table = pa.Table.from_arrays(
        [
            pa.array([int(op.kind) for op in ops], type=pa.int8()),
            pa.array([op.id for op in ops], type=pa.string()),
            pa.array([op.key.ts_us for op in ops], type=pa.int64()),
            pa.array([op.key.writer for op in ops], type=pa.string()),
            pa.array([op.key.seq for op in ops], type=pa.int64()),
            emb_arr,
            pa.array([op.document for op in ops], type=pa.string()),
            pa.array(
                [None if op.metadata is None else json.dumps(op.metadata) for op in ops],
                type=pa.string(),
            ),
            pa.array([op.uri for op in ops], type=pa.string()),
            *filters,
        ],
        schema=_schema(dimension, writer, fmt),
    )
    sink = pa.BufferOutputStream()
    sink.write(MAGIC)
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, dimension: int | None = None) -> list[Op]:
    """Parse and verify a delta; raise CorruptDelta on any damage or mismatch."""
    if len(data) < len(MAGIC) + _SHA_LEN or not data.startswith(MAGIC):
        raise CorruptDelta("not a chromasnap delta (bad magic or truncated)")
    body, digest = data[:-_SHA_LEN], data[-_SHA_LEN:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptDelta("checksum mismatch: the object is damaged")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(body)[len(MAGIC) :])
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptDelta(f"unreadable Arrow stream: {e}") from e
    meta = table.schema.metadata or {}
    fmt = int(meta.get(b"chromasnap.format", b"0"))
    if fmt not in _FORMATS:
        raise CorruptDelta(f"delta format {fmt} is not supported (expected one of "
                           f"{', '.join(map(str, _FORMATS))})")
    dim = int(meta.get(b"chromasnap.dimension", b"0"))
    if dimension is not None and dim != dimension:
        raise CorruptDelta(f"delta has dimension {dim}, the collection has {dimension}")
    return _ops_from_table(table, dim, fmt)


def _ops_from_table(table: pa.Table, dim: int, fmt: int) -> list[Op]:
    kinds = table.column("kind").to_pylist()
    ids = table.column("id").to_pylist()
    ts = table.column("ts_us").to_pylist()
    writers = table.column("writer").to_pylist()
    seqs = table.column("seq").to_pylist()
    docs = table.column("document").to_pylist()
    metas = table.column("metadata").to_pylist()
    uris = table.column("uri").to_pylist()
    filters: list[Any] = (table.column("filter").to_pylist() if "filter" in table.column_names
               else [None] * len(ids))
    emb_col = table.column("embedding").combine_chunks()
    valid = emb_col.is_valid().to_numpy(zero_copy_only=False)
    # .values keeps the (zero-filled) slots of null rows, so row i is matrix[i].
    start = emb_col.offset * dim
    values = emb_col.values.slice(start, len(emb_col) * dim)
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = matrix.reshape(len(emb_col), dim)
    out: list[Op] = []
    for i in range(len(ids)):
        kind = _kind(kinds[i])
        if (kind is OpKind.DELETE_WHERE) != (filters[i] is not None):
            raise CorruptDelta(f"row {i}: a filter belongs to filtered deletes, and only to them")
        out.append(
            Op(
                kind=kind,
                id=ids[i],
                key=OpKey(ts[i], writers[i], seqs[i]),
                embedding=matrix[i] if valid[i] else None,
                document=docs[i],
                metadata=None if metas[i] is None else orjson.loads(metas[i]),
                uri=uris[i],
                filter=None if filters[i] is None else _filter_of(filters[i], fmt),
            )
        )
    return out


def _kind(value: int) -> OpKind:
    try:
        return OpKind(value)
    except ValueError as e:
        raise CorruptDelta(f"unknown op kind {value}") from e


def _filter_json(f: DeleteFilter | None) -> str | None:
    if f is None:
        return None
    raw: dict[str, Any] = {"where": f.where, "where_document": f.where_document,
                           "ids": None if f.ids is None else list(f.ids)}
    if f.limit is not None:
        raw["limit"] = f.limit  # only in format 3 (see the module docstring)
    return json.dumps(raw)


def _filter_of(text: str, fmt: int) -> DeleteFilter:
    """The filter, checked as a writer checks it: a bad one would fail every fold and read."""
    try:
        raw = orjson.loads(text)
        where, where_document, ids = raw["where"], raw["where_document"], raw["ids"]
        limit = raw.get("limit")
        if limit is not None and (fmt < 3 or type(limit) is not int or limit < 0):
            raise ValueError("limit must be a non-negative integer, in format 3 only")
        if where is None and where_document is None:
            raise ValueError("a filtered delete without a filter")
        if where is not None:
            filters.validate_where(where)
        if where_document is not None:
            filters.validate_where_document(where_document)
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ValueError("ids must be a list of strings")
        return DeleteFilter(where, where_document, None if ids is None else tuple(ids), limit)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidArgument) as e:
        raise CorruptDelta(f"bad filter in a filtered delete: {e}") from e
