"""Write validation: clear messages, all-or-nothing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from chromasnap.engine.errors import InvalidArgument, InvalidWrite
from chromasnap.engine.ops import DeleteFilter, OpKind
from chromasnap.engine.validation import Limits, WriterClock, build_ops

LIM = Limits(dimension=3, max_records=4, max_bytes=10_000)


def ops(kind: OpKind = OpKind.ADD, **kw: Any) -> list:
    base: dict[str, Any] = {"ids": ["a", "b"], "embeddings": [[1, 2, 3], [4, 5, 6]]}
    base.update(kw)
    return build_ops(kind, base.pop("ids"), limits=LIM, clock=WriterClock("w"), **base)


def test_valid_request_gets_increasing_keys() -> None:
    out = ops(documents=["x", None], metadatas=[{"k": 1}, None])
    assert [o.id for o in out] == ["a", "b"]
    assert out[0].key < out[1].key
    assert out[0].embedding is not None and out[0].embedding.dtype == np.float32


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"embeddings": [[1, 2], [3, 4]]},
            "dimension 2 does not match the collection's dimension 3",
        ),
        ({"embeddings": [[1, 2, math.nan], [1, 2, 3]]}, r"embeddings\[0\] contains NaN"),
        ({"embeddings": [[1, 2, math.inf], [1, 2, 3]]}, "NaN or infinity"),
        ({"embeddings": [[1, 2, 3]]}, "got 1 embeddings for 2 ids"),
        ({"ids": ["a", ""]}, r"ids\[1\] must be a non-empty string"),
        ({"ids": ["a", "a"]}, "duplicate id 'a'"),
        ({"ids": ["a", "x" * 2000]}, "longer than 1024 bytes"),
        ({"ids": []}, "non-empty list"),
        ({"ids": ["a", 3]}, r"ids\[1\] must be a non-empty string"),
        ({"ids": list("abcde"), "embeddings": [[1, 2, 3]] * 5}, "over the limit of 4"),
        ({"metadatas": [{"k": []}, None]}, "list value for key 'k' to be non-empty"),
        ({"metadatas": [{"k": ["a", 1]}, None]}, "all elements must be the same type"),
        ({"metadatas": [{"k": [1, 2.5]}, None]}, "all elements must be the same type"),
        ({"metadatas": [{"k": [True, 1]}, None]}, "all elements must be the same type"),
        ({"metadatas": [{"k": [None]}, None]}, "all elements must be the same type"),
        ({"metadatas": [{"k": [["a"]]}, None]}, "all elements must be the same type"),
        ({"metadatas": [{"k": [1.0, math.inf]}, None]}, "contains NaN or infinity"),
        ({"metadatas": [{"k": {"x": 1}}, None]}, "unsupported type dict"),
        ({"metadatas": [{"k": math.nan}, None]}, "NaN or infinity"),
        ({"metadatas": [{"k": None}, None]}, "only allowed in update and upsert"),
        ({"metadatas": [{"chroma:document": "x"}, None]}, "reserved prefix"),
        ({"metadatas": [{"": 1}, None]}, "empty or non-string key"),
        ({"metadatas": [{"k": 1}]}, "one entry per id"),
        ({"documents": ["x", 5]}, r"documents\[1\] must be a string"),
        ({"embeddings": None}, "add needs embeddings"),
        ({"embeddings": [["a", "b", "c"], [1, 2, 3]]}, "lists of numbers"),
    ],
)
def test_bad_requests_are_rejected_with_a_clear_message(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidWrite, match=message):
        ops(**kw)


def test_oversized_request_in_bytes() -> None:
    with pytest.raises(InvalidWrite, match="over the limit of 10000"):
        ops(documents=["x" * 6000, "y" * 6000])


def test_update_allows_none_metadata_values_and_missing_embeddings() -> None:
    out = ops(OpKind.UPDATE, embeddings=None, metadatas=[{"k": None}, {"j": 1}])
    assert out[0].embedding is None and out[0].metadata == {"k": None}


def test_list_valued_metadata_is_accepted_as_chromadb_accepts_it() -> None:
    """Non-empty lists of one scalar type, as chromadb 1.5.9 stores them."""
    metas = [{"tags": ["a", "b"], "n": [1, 2]}, {"f": [0.5, 1.5], "b": [True, False]}]
    out = ops(metadatas=metas)
    assert [o.metadata for o in out] == metas


def test_delete_takes_only_ids() -> None:
    assert [o.kind for o in ops(OpKind.DELETE, embeddings=None)] == [OpKind.DELETE] * 2
    with pytest.raises(InvalidWrite, match="only ids"):
        ops(OpKind.DELETE)


def test_a_filtered_delete_is_one_op_carrying_its_filter() -> None:
    (op,) = ops(OpKind.DELETE, ids=None, embeddings=None, where={"k": 1})
    assert (op.kind, op.id, op.filter) == (OpKind.DELETE_WHERE, "", DeleteFilter({"k": 1}))
    (op,) = ops(OpKind.DELETE, embeddings=None, where_document={"$contains": "x"})
    assert op.filter == DeleteFilter(None, {"$contains": "x"}, ("a", "b"))
    (op,) = ops(OpKind.DELETE, ids=[], embeddings=None, where={"k": 1})
    assert op.filter is not None and op.filter.ids == ()  # Chroma's server deletes nothing
    (op,) = ops(OpKind.DELETE, ids=None, embeddings=None, where={"k": 1}, limit=2)
    assert op.filter == DeleteFilter({"k": 1}, limit=2)  # decided where the state is


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"where": {"k": 1}, "limit": -1}, "limit must be a non-negative integer"),
        ({"where": {}}, "Expected where to have exactly one operator"),
        ({"where": {"k": {"$bad": 1}}}, r"\$bad"),
        ({"where_document": {"$nope": "x"}}, "nope"),
        ({"where": {"k": 1}, "ids": ["a", "a"]}, "duplicate id"),
        ({"where": {"k": 1}, "ids": list("abcde")}, "over the limit"),
    ],
)
def test_bad_filtered_deletes_are_refused(kw: dict[str, Any], message: str) -> None:
    kw = {"ids": None, "embeddings": None, **kw}
    with pytest.raises(InvalidArgument, match=message):
        ops(OpKind.DELETE, **kw)


def test_clock_never_goes_backwards() -> None:
    c = WriterClock("w")
    keys = [k for _ in range(1000) for k in c.next_keys(3)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert c.flush_time_us() > keys[-1].ts_us
