"""Delta format: round trip, checksums, names."""

from __future__ import annotations

import numpy as np
import pytest

from chromasnap.engine.ops import Op, OpKey, OpKind
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
