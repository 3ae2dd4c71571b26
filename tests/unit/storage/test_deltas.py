"""Delta format: round trip, checksums, names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind
from chromasnap.storage import deltas


def sample_ops() -> list[Op]:
    e = np.arange(8, dtype=np.float32) / 7
    return [
        Op(
            OpKind.ADD,
            "a",
            OpKey(10, "w-1", 1),
            e,
            "doc a",
            {"s": "x", "i": 3, "f": 1.5, "b": True, "tags": ["a", "b"], "ns": [1, 2],
             "fs": [2.0, 0.5], "bs": [False]},
        ),
        Op(OpKind.UPDATE, "b", OpKey(10, "w-1", 2), None, None, {"gone": None}),
        Op(OpKind.UPSERT, "c", OpKey(11, "w-1", 3), -e, None, None, "s3://x/y"),
        Op(OpKind.DELETE, "d", OpKey(12, "w-1", 4)),
    ]


def test_round_trip_preserves_every_field_and_type() -> None:
    ops = sample_ops()
    back = deltas.decode(deltas.encode(ops, 8, "w-1"), dimension=8)
    assert len(back) == len(ops)
    for a, b in zip(ops, back, strict=True):
        assert (a.kind, a.id, a.key, a.document, a.metadata, a.uri) == (
            b.kind,
            b.id,
            b.key,
            b.document,
            b.metadata,
            b.uri,
        )
        if a.embedding is None:
            assert b.embedding is None
        else:
            assert b.embedding is not None and b.embedding.dtype == np.float32
            assert np.array_equal(a.embedding, b.embedding)
    meta = back[0].metadata
    assert meta is not None and isinstance(meta["i"], int) and isinstance(meta["b"], bool)
    # list elements keep their type too: 2.0 stays a float ($contains 2 must not find it)
    assert isinstance(meta["fs"], list) and type(meta["fs"][0]) is float
    assert isinstance(meta["ns"], list) and type(meta["ns"][0]) is int


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damage_is_detected(damage: str) -> None:
    data = bytearray(deltas.encode(sample_ops(), 8, "w-1"))
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 5]
    elif damage == "garbage":
        data = bytearray(b"PK\x03\x04 not a delta at all" * 4)
    else:
        data = bytearray()
    with pytest.raises(deltas.CorruptDelta):
        deltas.decode(bytes(data), dimension=8)


def test_dimension_mismatch_is_detected() -> None:
    with pytest.raises(deltas.CorruptDelta, match="dimension 8"):
        deltas.decode(deltas.encode(sample_ops(), 8, "w-1"), dimension=16)


def test_names_sort_by_time_and_parse_back() -> None:
    a = deltas.DeltaName(99, "writer-0-ab12cd")
    b = deltas.DeltaName(1_000, "writer-0-ab12cd")
    assert a.key < b.key
    assert deltas.parse_name(a.key) == a
    assert deltas.is_delta_key(a.key)
    assert not deltas.is_delta_key("deltas/.tmp-123")
    with pytest.raises(ValueError, match="not a delta name"):
        deltas.parse_name("deltas/whatever.json")


def test_filtered_deletes_round_trip_in_format_2() -> None:
    where = DeleteFilter({"$and": [{"k": {"$gte": 2}}, {"t": "x"}]}, {"$contains": "a"}, None)
    limited = DeleteFilter(None, {"$regex": "^d"}, ("a", "b"))
    ops = [*sample_ops(), Op(OpKind.DELETE_WHERE, "", OpKey(13, "w-1", 5), filter=where),
           Op(OpKind.DELETE_WHERE, "", OpKey(13, "w-1", 6), filter=limited)]
    data = deltas.encode(ops, 8, "w-1")
    back = deltas.decode(data, dimension=8)
    assert [(o.kind, o.key, o.filter) for o in back] == [(o.kind, o.key, o.filter) for o in ops]
    assert _format_of(data) == 2


def test_a_limited_filtered_delete_is_format_3_so_older_components_refuse_it() -> None:
    """A component that reads only formats 1 and 2 must not delete every match."""
    f = DeleteFilter({"k": 1}, None, ("a", "b"), 2)
    ops = [*sample_ops(), Op(OpKind.DELETE_WHERE, "", OpKey(13, "w-1", 5), filter=f),
           Op(OpKind.DELETE_WHERE, "", OpKey(13, "w-1", 6), filter=DeleteFilter({"k": 2}))]
    data = deltas.encode(ops, 8, "w-1")
    assert _format_of(data) == 3
    back = deltas.decode(data, dimension=8)
    assert [o.filter for o in back] == [o.filter for o in ops]
    zero = Op(OpKind.DELETE_WHERE, "", OpKey(13, "w-1", 7), filter=DeleteFilter({"k": 1}, limit=0))
    assert deltas.decode(deltas.encode([zero], 8, "w-1"), dimension=8)[0].filter == zero.filter
    # A limit where the format has none, or a bad one, is refused, never ignored.
    with pytest.raises(deltas.CorruptDelta, match="limit"):
        deltas._filter_of('{"where": {"k": 1}, "where_document": null, "ids": null, '
                          '"limit": 1}', 2)
    bad = Op(OpKind.DELETE_WHERE, "", OpKey(1, "w-1", 1), filter=DeleteFilter({"k": 1}, limit=-1))
    with pytest.raises(deltas.CorruptDelta, match="limit"):
        deltas.decode(deltas.encode([bad], 8, "w-1"), dimension=8)


def test_deltas_without_filtered_deletes_stay_format_1() -> None:
    """Components that predate filtered deletes read every delta that has none."""
    data = deltas.encode(sample_ops(), 8, "w-1")
    assert _format_of(data) == 1
    assert all(op.filter is None for op in deltas.decode(data, dimension=8))


def test_a_filter_on_a_record_op_or_an_unknown_kind_is_refused() -> None:
    bad = Op(OpKind.DELETE, "d", OpKey(1, "w-1", 1), filter=DeleteFilter({"k": 1}))
    with pytest.raises(deltas.CorruptDelta, match="filter"):
        deltas.decode(deltas.encode([bad], 8, "w-1"), dimension=8)


@pytest.mark.parametrize("bad", [DeleteFilter({"k": {"$bad": 1}}), DeleteFilter(None, None),
                                 DeleteFilter(None, {"$nope": "x"})])
def test_a_filter_no_writer_would_accept_is_refused(bad: DeleteFilter) -> None:
    """Else every compaction and every fresh read would fail on it, forever."""
    op = Op(OpKind.DELETE_WHERE, "", OpKey(1, "w-1", 1), filter=bad)
    with pytest.raises(deltas.CorruptDelta, match="bad filter"):
        deltas.decode(deltas.encode([op], 8, "w-1"), dimension=8)


def _format_of(data: bytes) -> int:
    body = data[len(deltas.MAGIC):-32]
    schema = pa.ipc.open_stream(pa.py_buffer(body)).schema
    return int(schema.metadata[b"chromasnap.format"])
