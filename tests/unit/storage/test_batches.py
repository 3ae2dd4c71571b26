"""Write batch format: round trip with real deltas inside, damage refused, keys."""

from __future__ import annotations

import numpy as np
import pytest

from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import batches, deltas


def _delta(writer: str, n: int) -> bytes:
    ops = [Op(OpKind.UPSERT, f"id{i}", OpKey(10 + i, writer, i), np.full(3, i, np.float32))
           for i in range(n)]
    return deltas.encode(ops, 3, writer)


def test_parts_come_back_as_stored_and_each_is_a_valid_delta() -> None:
    parts = [batches.Part("c1", "00000000000000010-w.arrow", _delta("w", 2)),
             batches.Part("c2", "00000000000000011-w.arrow", _delta("w", 3)),
             batches.Part("c1", "00000000000000012-w.arrow", _delta("w", 1))]
    back = batches.decode(batches.encode(parts))
    assert back == parts
    assert [len(deltas.decode(p.data, 3)) for p in back] == [2, 3, 1]


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_a_damaged_batch_is_refused_whole(damage: str) -> None:
    data = bytearray(batches.encode([batches.Part("c", "n", _delta("w", 2))]))
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        del data[-10:]
    else:
        data[:8] = deltas.MAGIC  # a delta is not a batch
    with pytest.raises(batches.CorruptBatch):
        batches.decode(bytes(data))


def test_keys_sort_by_time_and_foreign_objects_are_not_batches() -> None:
    a, b = batches.key_for(5, "pool-ab12"), batches.key_for(40, "pool-ab12")
    assert a < b and batches.is_batch_key(a) and batches.is_batch_key(b)
    assert not batches.is_batch_key("batches/tmp-upload")
    assert not batches.is_batch_key("deltas/00000000000000005-pool.arrow")
