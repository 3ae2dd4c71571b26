"""Write batches: one object for the deltas of many collections in one flush window.

A pool serves many collections; a PUT per collection per flush window would
make S3 requests grow with the number of collections written to (1,000
collections each written once a second: 1,000 PUTs a second). A pool writer
therefore stores a window's deltas, whatever their collections, as one
*batch*, one PUT. Each part is a complete delta (its own format and checksum)
of one collection, named as that collection's delta would be; the pool's
compaction pass folds a batch's parts into their collections (supplied to each
collection's compactor, never copied) and then deletes the batch.

Format (``.batch``): the 8-byte magic ``CSNAPB01``, an Apache Arrow IPC
stream of ``(collection, name, data)`` rows, then the SHA-256 of everything
before it (32 bytes). Key: ``batches/<ts_us:017d>-<writer-id>.batch``, sorted
by time as delta keys are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from chromasnap.storage.deltas import CorruptDelta

MAGIC = b"CSNAPB01"
BATCH_PREFIX = "batches/"
_SHA_LEN = 32
_KEY_RE = re.compile(r"^batches/\d{17}-[A-Za-z0-9._-]+\.batch$")
_SCHEMA = pa.schema([pa.field("collection", pa.string(), nullable=False),
                     pa.field("name", pa.string(), nullable=False),
                     pa.field("data", pa.large_binary(), nullable=False)])


class CorruptBatch(CorruptDelta):
    """A batch object is damaged or not a chromasnap batch; none of it is applied."""


@dataclass(frozen=True)
class Part:
    """One collection's delta in a batch."""

    collection: str
    name: str  # the delta's name in its collection (its read-your-writes token)
    data: bytes


def key_for(ts_us: int, writer: str) -> str:
    """The key of a batch written at ``ts_us`` by ``writer``."""
    return f"{BATCH_PREFIX}{ts_us:017d}-{writer}.batch"


def is_batch_key(key: str) -> bool:
    """True for keys that name a batch (temporary or foreign objects are skipped)."""
    return _KEY_RE.match(key) is not None


def encode(parts: Sequence[Part]) -> bytes:
    """One checksummed batch object holding ``parts``."""
    table = pa.Table.from_arrays(
        [pa.array([p.collection for p in parts], pa.string()),
         pa.array([p.name for p in parts], pa.string()),
         pa.array([p.data for p in parts], pa.large_binary())], schema=_SCHEMA)
    sink = pa.BufferOutputStream()
    sink.write(MAGIC)
    with pa.ipc.new_stream(sink, _SCHEMA) as w:
        w.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> list[Part]:
    """The parts of a batch; raises CorruptBatch on any damage (each part's own
    checksum is checked when it is decoded as a delta)."""
    if len(data) < len(MAGIC) + _SHA_LEN or not data.startswith(MAGIC):
        raise CorruptBatch("not a chromasnap batch (bad magic or truncated)")
    body, digest = data[:-_SHA_LEN], data[-_SHA_LEN:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptBatch("checksum mismatch: the batch is damaged")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)[len(MAGIC):]).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptBatch(f"unreadable Arrow stream: {e}") from e
    if not table.schema.equals(_SCHEMA):
        raise CorruptBatch(f"unexpected batch schema: {table.schema}")
    return [Part(c, n, d) for c, n, d in zip(table.column("collection").to_pylist(),
                                             table.column("name").to_pylist(),
                                             table.column("data").to_pylist(), strict=True)]
