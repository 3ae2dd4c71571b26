"""filters.py against the real thing: random records and filters, evaluated by
``chromasnap.filters`` and by an in-process chromadb collection, must select
exactly the same ids. Also: filters Chroma rejects are rejected here too, regexes
run in linear time (RE2), and nesting is bounded where Chroma bounds it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import numpy as np
import pytest

from chromasnap.engine import filters
from chromasnap.engine.errors import InvalidArgument
from chromasnap.engine.rust_regex import MAX_REGEX_CHARS, compile_rust_regex

SEED = 20261121
N_RECORDS = 160
N_FILTERS = 700
KEYS = ("a", "b", "c")
INTS = (-3, -2, 0, 1, 2, 3, 9007199254740993)
FLOATS = (-2.5, -2.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5, 3.75)
STRS = ("", "a", "b", "ab", "B", "é")
DOC_ALPHABET = "aAbB _%\\\nxé1"
# Valid Rust-regex patterns exercising the translation to RE2.
REGEXES = (
    "^a", "a$", "b$", "(?i)ab", "a(?i)b", "(?m)^b", "(?s)a.b", "a.b", "[[:upper:]]", "[[:^alpha:]]",
    "\\d", "\\w\\W", "\\pL\\pL", "\\p{Lu}", "\\x{e9}", "(?<n>a)b", "[^a-z ]", "%", "_", "\\\\",
    "x\\z", "\\Aa", "a{2}", "(a|B)+$", "\\u00e9", "\\U000000E9", "\\xe9", "(?x) a b # c", "[\\W]",
    "[\\Wa]", "[^\\d]", "\\s", "\\S\\s", "[\\s1]", "[^\\S]", "\\D", "\\p{Letter}", "\\P{L}",
    "[\\p{Lu}1]", "(?U)a+b", "(?i:b)a", "a{1,2}$", "(?-i:a)", "\\p{Latin}", "[%-\\\\]",
)


def _scalar(rng: random.Random) -> Any:
    kind = rng.choice("ifbs")
    if kind == "i":
        return rng.choice(INTS)
    if kind == "f":
        return rng.choice(FLOATS)
    if kind == "b":
        return rng.random() < 0.5
    return rng.choice(STRS)


def _value(rng: random.Random) -> Any:
    if rng.random() < 0.25:
        kind = rng.choice("ifbs")
        pool: tuple[Any, ...] = {
            "i": INTS[:-1], "f": FLOATS, "b": (True, False), "s": STRS,
        }[kind]
        return [rng.choice(pool) for _ in range(rng.randint(1, 3))]
    return _scalar(rng)


def _record(rng: random.Random) -> tuple[dict[str, Any] | None, str | None]:
    meta = {k: _value(rng) for k in KEYS if rng.random() < 0.6} or None
    r = rng.random()
    doc: str | None
    if r < 0.15:
        doc = None
    elif r < 0.2:
        doc = ""
    else:
        doc = "".join(rng.choice(DOC_ALPHABET) for _ in range(rng.randint(1, 7)))
    return meta, doc


def _leaf(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(KEYS)
    op = rng.choice(("", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains",
                     "$not_contains"))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        operand: Any = rng.choice(INTS + FLOATS)
    elif op in ("$in", "$nin"):
        kind = rng.choice("ifbs")
        pool: tuple[Any, ...] = {"i": INTS, "f": FLOATS, "b": (True, False), "s": STRS}[kind]
        operand = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
    else:
        operand = _scalar(rng)
    if op == "":
        return {key: operand}
    return {key: {op: operand}}


def _doc_leaf(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(("$contains", "$not_contains", "$regex", "$not_regex"))
    if "regex" in op:
        return {op: rng.choice(REGEXES)}
    pattern = "".join(rng.choice(DOC_ALPHABET) for _ in range(rng.randint(1, 2)))
    return {op: pattern}


def _where(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    r = rng.random()
    if depth < 2 and r < 0.3:
        # Chroma's server accepts $and/$or of any length (the Python client wants >= 2).
        return {rng.choice(("$and", "$or")): [_where(rng, depth + 1)
                                              for _ in range(rng.randint(0, 3))]}
    if r < 0.38:
        return {"#document": _doc_leaf(rng)}
    return _leaf(rng)


def _where_document(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 2 and rng.random() < 0.3:
        return {rng.choice(("$and", "$or")): [_where_document(rng, depth + 1)
                                              for _ in range(rng.randint(0, 3))]}
    return _doc_leaf(rng)


@pytest.fixture(scope="module")
def reference() -> Iterator[tuple[Any, dict[str, tuple[dict[str, Any] | None, str | None]]]]:
    """An in-process chromadb collection holding the random records (and the records)."""
    rng = random.Random(SEED)
    records = {f"r{i:03d}": _record(rng) for i in range(N_RECORDS)}
    client = chromadb.EphemeralClient()
    col = client.create_collection(f"filters-{uuid.uuid4().hex[:8]}", embedding_function=None)
    ids = list(records)
    col.add(
        ids=ids,
        embeddings=np.random.default_rng(SEED).random((len(ids), 4)).tolist(),
        metadatas=[records[i][0] for i in ids],  # type: ignore[misc]
        documents=[records[i][1] for i in ids],  # type: ignore[misc]
    )
    # Chroma is the reference for what is stored too (e.g. the empty document).
    got = col.get(include=["metadatas", "documents"])
    stored = {
        rid: (meta or None, doc)
        for rid, meta, doc in zip(got["ids"], got["metadatas"] or [], got["documents"] or [],
                                  strict=True)
    }
    yield col, stored
    client.delete_collection(col.name)


def _chroma_ids(col: Any, where: Any, where_document: Any) -> list[str]:
    # The server-side API (no client-side validation), like a raw HTTP request.
    res = col._client._get(
        collection_id=col.id, where=where, where_document=where_document, include=[],
        tenant=col.tenant, database=col.database,
    )
    return sorted(res["ids"])


def _ours(
    stored: dict[str, tuple[dict[str, Any] | None, str | None]], where: Any, where_document: Any
) -> list[str]:
    pred = filters.compile_filter(where, where_document)
    return sorted(rid for rid, (m, d) in stored.items() if pred is None or pred(m, d))


def test_random_filters_match_chroma(reference: Any) -> None:
    col, stored = reference
    rng = random.Random(SEED + 1)
    mismatches = []
    for _ in range(N_FILTERS):
        r = rng.random()
        where = _where(rng) if r < 0.8 else None
        where_document = _where_document(rng) if r > 0.55 or where is None else None
        want = _chroma_ids(col, where, where_document)
        got = _ours(stored, where, where_document)
        if want != got:
            mismatches.append((where, where_document, sorted(set(want) ^ set(got))[:5]))
    assert not mismatches, f"{len(mismatches)} filters differ, e.g. {mismatches[:5]}"


@pytest.mark.parametrize(
    ("where", "where_document"),
    [
        ({"a": 2.5}, None),  # float operand matches int 2 (Chroma truncates)
        ({"a": {"$gte": 2.5}}, None),
        ({"a": {"$lt": -2.5}}, None),
        ({"a": {"$ne": 2}}, None),  # missing key matches $ne
        ({"a": {"$nin": [2.0]}}, None),
        ({"a": {"$contains": 2}}, None),  # arrays only, strict element type
        ({"a": {"$contains": 2.0}}, None),
        ({"a": True}, None),
        ({"a": 1}, None),  # never matches True
        ({"$and": []}, None),
        ({"$or": []}, None),
        ({"#document": {"$not_contains": "a"}}, None),
        (None, {"$contains": ""}),  # the empty document contains ""
        (None, {"$contains": "A"}),  # case-sensitive
        (None, {"$contains": "%"}),  # literal, not a LIKE wildcard
        (None, {"$regex": "b$"}),  # end of text, not before a final newline
        (None, {"$not_regex": "(?i)A"}),
    ],
)
def test_edge_cases_match_chroma(reference: Any, where: Any, where_document: Any) -> None:
    col, stored = reference
    assert _ours(stored, where, where_document) == _chroma_ids(col, where, where_document)


@pytest.mark.parametrize(
    ("where", "where_document"),
    [
        ({"a": 1, "b": 2}, None),
        ({"a": None}, None),
        ({"a": {"$bad": 1}}, None),
        ({"a": {"$gt": "x"}}, None),
        ({"a": {"$gt": True}}, None),
        ({"a": {"$eq": [1, 2]}}, None),
        ({"a": {"$in": []}}, None),
        ({"a": {"$in": [1, 2.5]}}, None),
        ({"a": {"$in": [1, True]}}, None),
        ({"a": {"$eq": 1, "$ne": 2}}, None),
        ({"$and": {"a": 1}}, None),
        ({"#document": {"$eq": "x"}}, None),
        (None, {"$foo": "x"}),
        (None, {"$contains": 5}),
        (None, {"$regex": "("}),
        (None, {"$regex": "(?<=a)b"}),
        (None, {"$regex": "(a)\\1"}),
        (None, {"$regex": "\\0"}),
        (None, {"$regex": "\\C"}),
        (None, {"$regex": "\\Qa\\E"}),
        (None, {"$regex": "a{,3}"}),
        (None, {"$regex": "\\p{^Ll}"}),
        (None, {"$regex": "[a"}),
        ({"#document": {"$regex": "(?<!a)b"}}, None),
    ],
)
def test_invalid_filters_rejected_like_chroma(
    reference: Any, where: Any, where_document: Any
) -> None:
    col, _ = reference
    with pytest.raises(Exception) as chroma_err:
        _chroma_ids(col, where, where_document)
    assert type(chroma_err.value).__name__ in ("InvalidArgumentError", "ValueError", "TypeError")
    with pytest.raises(InvalidArgument):
        filters.compile_filter(where, where_document)


def test_empty_filters_rejected() -> None:
    # Chroma's HTTP server answers "Invalid where clause" for {} (in-process chromadb
    # drops a falsy filter before parsing, so this one is not compared above).
    with pytest.raises(InvalidArgument):
        filters.compile_where({})
    with pytest.raises(InvalidArgument):
        filters.compile_where_document({})


def test_matches_and_no_filter() -> None:
    assert filters.compile_filter(None, None) is None
    assert filters.matches(None, None, None, None)
    assert filters.matches({"k": {"$ne": 1}}, None, None, None)
    assert not filters.matches({"k": 1}, None, None, "doc")
    assert filters.matches({"k": 1}, {"$contains": "o"}, {"k": 1.0}, "doc")
    assert not filters.matches({"k": 1}, {"$contains": "x"}, {"k": 1.0}, "doc")


def test_regex_translation() -> None:
    rx = compile_rust_regex
    assert rx("b$").search("ab\n") is None
    assert rx("(?m)b$").search("ab\nc") is not None
    assert rx("a(?i)b").search("aB") is not None
    assert rx("a(?i)b").search("AB") is None
    assert rx("[[:digit:]]+").search("x42") is not None
    assert rx("\\p{Lu}").search("é") is None
    assert rx("\\p{Lu}").search("É") is not None
    assert rx("\\x{e9}").search("café") is not None
    assert rx("(?x) a \\  b # comment").search("a b") is not None
    assert rx("\\w").search("é") is not None  # Unicode, as in Rust (RE2's own \\w is ASCII)
    assert rx("\\d").search("٣") is not None
    assert rx("\\s").search("\u3000") is not None
    assert rx("[^\\W]").search("%") is None
    assert rx("\\p{greek}").search("λ") is not None
    assert rx("\\bfoo\\b").search("a foo.") is not None
    for bad in ("(?=a)", "(?<!a)b", "\\1", "\\0", "[a&&b]", "[a[b]]", "\\C", "\\Qa\\E", "a{,3}",
                "(?R)a", "(?-u)a", "\\p{Alphabetic}", "\\p{^Ll}", "\\x{110000}", "\\", "[a", "(",
                "a{2,1}"):
        with pytest.raises(InvalidArgument):
            rx(bad)


def test_regex_runs_in_linear_time() -> None:
    # Catastrophic for a backtracking engine (2**n steps); linear for Rust and RE2.
    doc = "a" * 200_000 + "!"
    start = time.monotonic()
    for pattern in ("(a+)+$", "(a|a)*b", "(a*)*b", "(?:a|aa)+$", "(\\w+\\s?)+$"):
        pred = filters.compile_where_document({"$regex": pattern})
        assert pred(doc) is False
    assert time.monotonic() - start < 10


def test_regex_errors_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="backreferences"):
        filters.compile_where_document({"$regex": "(a)\\1"})
    with pytest.raises(InvalidArgument, match="characters is over the limit"):
        compile_rust_regex("a" * (MAX_REGEX_CHARS + 1))


def _nested(leaf: dict[str, Any], levels: int, op: str = "$and") -> dict[str, Any]:
    out = leaf
    for _ in range(levels):
        out = {op: [out]}
    return out


def test_nesting_limit_is_chromas(reference: Any) -> None:
    # 62 $and levels around {"a": {"$eq": 1}} nest 126 objects and lists: the deepest
    # filter Chroma's server parses; one level more (127) is refused by Chroma and here.
    col, stored = reference
    deepest = _nested({"a": {"$eq": 1}}, 62)
    assert _ours(stored, deepest, None) == _chroma_ids(col, deepest, None)
    deepest_doc = _nested({"$contains": "a"}, 62)
    assert _ours(stored, None, deepest_doc) == _chroma_ids(col, None, deepest_doc)
    for where, where_document in (
        (_nested({"a": {"$in": [1]}}, 62), None),
        (_nested({"a": 1}, 64), None),
        (None, _nested({"$contains": "a"}, 64, "$or")),
        (_nested({"#document": {"$contains": "a"}}, 63), None),
    ):
        with pytest.raises(InvalidArgument, match="nested more than 126 levels"):
            filters.compile_filter(where, where_document)


def test_nesting_checked_without_recursion() -> None:
    deep: Any = {"a": 1}
    for _ in range(200_000):
        deep = {"$or": [deep]}
    with pytest.raises(InvalidArgument, match="nested"):
        filters.compile_where(deep)
    deep_list: Any = "x"
    for _ in range(200_000):
        deep_list = [deep_list]
    with pytest.raises(InvalidArgument, match="nested"):
        filters.compile_where_document({"$and": deep_list})


def test_integers_beyond_i64_read_like_chroma(reference: Any) -> None:
    # Chroma parses filters with serde_json: 2**63 … 2**64-1 are u64 and refused, integers
    # further out are floats.
    col, stored = reference
    for where in ({"a": 2**63}, {"a": {"$in": [1, 2**63]}}, {"a": {"$contains": 2**64 - 1}}):
        with pytest.raises(Exception):  # noqa: B017 - chromadb's own error types vary
            _chroma_ids(col, where, None)
        with pytest.raises(InvalidArgument, match="64-bit"):
            filters.compile_where(where)
    for where in ({"a": {"$gt": -(2**63) - 1}}, {"a": {"$lt": 2**64}}, {"a": {"$ne": 2**70}}):
        assert _ours(stored, where, None) == _chroma_ids(col, where, None)
    assert filters.matches({"a": 2**63 - 1}, None, {"a": 2**63 - 1}, None)
