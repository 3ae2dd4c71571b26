"""Chroma's ``where`` and ``where_document`` filters, evaluated on one record in Python.

Fresh reads filter the delta tail here and the snapshot inside chromadb, so
both halves must agree exactly. The rules below are those of chromadb 1.5.9's
local (SQLite) metadata segment, confirmed by differential tests against it:

* Numbers: an int operand ``i`` matches stored ints compared with ``i`` and
  stored floats compared with ``float(i)``; a float operand ``f`` matches
  stored floats compared with ``f`` and stored ints compared with ``int(f)``
  truncated toward zero (Chroma's Rust ``f as i64``), so ``{"x": {"$eq": 2.5}}``
  matches ``x=2``. Booleans never compare equal to numbers.
* ``$ne``, ``$nin`` and ``$not_contains`` are negations of their positive
  form, so a record without the key matches them.
* Array metadata (``{"tags": ["a", "b"]}``) is matched only by ``$contains`` /
  ``$not_contains``, with the element's type strictly equal to the operand's
  (``2`` does not find ``2.0``); scalar operators never match an array.
* Documents: ``$contains`` is a case-sensitive literal substring test;
  ``$regex`` uses Rust ``regex`` syntax and search semantics, evaluated by RE2
  (linear time, like Rust's engine; see ``rust_regex``). A record
  without a document matches only the negated operators.
  ``{"#document": {...}}`` inside ``where`` is a document filter.
* ``$and`` of nothing is true, ``$or`` of nothing is false.

Validation accepts what Chroma's server accepts and words errors like the
chromadb client does, raising ``InvalidArgument``. Like Chroma's server, it
refuses filters nested deeper than ``MAX_FILTER_DEPTH`` objects and lists
(checked without recursion before anything recurses) and integers outside i64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from chromasnap.engine.errors import InvalidArgument
from chromasnap.engine.rust_regex import compile_rust_regex

MetadataPredicate = Callable[[Mapping[str, Any] | None, str | None], bool]
"""``(metadata, document) -> bool``: a compiled ``where`` (+ ``where_document``)."""

DocumentPredicate = Callable[[str | None], bool]

DOCUMENT_KEY = "#document"
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1
MAX_FILTER_DEPTH = 126
"""Deepest nesting of objects and lists in one filter. Chroma's server parses request
bodies with serde_json's limit of 127 levels, one of them the body itself, and answers
"Failed to parse the request body as JSON" for deeper filters; the bindings a reader
queries fail the same way. Checking this first also bounds the recursion below."""

_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
_WHERE_OPERATORS = ("$gt", "$gte", "$lt", "$lte", "$ne", "$eq", "$in", "$nin", "$contains",
                    "$not_contains")
_DOC_OPERATORS = ("$contains", "$not_contains", "$regex", "$not_regex", "$and", "$or")


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_float(v: Any) -> bool:
    return type(v) is float


def _is_scalar(v: Any) -> bool:
    return type(v) in (str, int, float, bool)


def _as_chroma_number(v: Any) -> Any:
    """An operand as Chroma's JSON parser (serde_json) reads it.

    Integers outside i64 are floats to it, except 2**63 … 2**64-1, which parse as u64
    and fit none of its metadata types: Chroma refuses those, and so do we.
    """
    if type(v) is not int or _I64_MIN <= v <= _I64_MAX:
        return v
    if 0 < v <= _U64_MAX:
        raise InvalidArgument(
            f"Invalid where clause: integer {v} does not fit in a signed 64-bit integer"
        )
    try:
        return float(v)
    except OverflowError:
        raise InvalidArgument(f"Invalid where clause: number {v} is out of range") from None


def _trunc_i64(f: float) -> int:
    """Rust's saturating ``f as i64``: truncation toward zero, NaN to 0."""
    if math.isnan(f):
        return 0
    if f >= 9.223372036854775807e18:
        return _I64_MAX
    if f <= -9.223372036854775808e18:
        return _I64_MIN
    return int(f)


# --- validation and compilation of ``where`` ------------------------------------------


def check_nesting(name: str, value: Any) -> None:
    """Raise ``InvalidArgument`` if ``value`` nests objects/lists over ``MAX_FILTER_DEPTH`` deep.

    Iterative, so a hostile filter cannot exhaust the interpreter's stack here.
    """
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            raise InvalidArgument(
                f"{name} is nested more than {MAX_FILTER_DEPTH} levels deep (objects and lists), "
                "deeper than Chroma parses; flatten it: one $and or $or takes any number of "
                "conditions"
            )
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def compile_where(where: Any) -> MetadataPredicate:
    """Validate a ``where`` filter and compile it to a predicate on ``(metadata, document)``.

    Raises ``InvalidArgument`` with a Chroma-style message when the filter is malformed.
    """
    check_nesting("where", where)
    return _compile_where(where)


def _compile_where(where: Any) -> MetadataPredicate:
    if not isinstance(where, dict):
        raise InvalidArgument(f"Expected where to be a dict, got {where!r}")
    if len(where) != 1:
        raise InvalidArgument(f"Expected where to have exactly one operator, got {where!r}")
    ((key, value),) = where.items()
    if not isinstance(key, str):
        raise InvalidArgument(f"Expected where key to be a str, got {key!r}")
    if key in ("$and", "$or"):
        if not isinstance(value, list):
            raise InvalidArgument(
                f"Expected where value for {key} to be a list of where expressions, got {value!r}"
            )
        children = [_compile_where(child) for child in value]
        if key == "$and":
            return lambda m, d: all(c(m, d) for c in children)
        return lambda m, d: any(c(m, d) for c in children)
    if key.startswith("$"):
        raise InvalidArgument(
            f"Expected where key to be a metadata field name or a logical operator ($and, $or), "
            f"got {key}"
        )
    if key == DOCUMENT_KEY:
        return _compile_document_in_where(value)
    if _is_scalar(value):
        return _compile_field(key, "$eq", value)
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"Expected where value to be a str, int, float, bool or operator expression, "
            f"got {value!r}"
        )
    if len(value) != 1:
        raise InvalidArgument(
            f"Expected operator expression to have exactly one operator, got {value!r}"
        )
    ((op, operand),) = value.items()
    return _compile_field(key, op, operand)


def _compile_document_in_where(value: Any) -> MetadataPredicate:
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidArgument(
            f"Expected where value for {DOCUMENT_KEY} to be an operator expression with exactly "
            f"one operator, got {value!r}"
        )
    ((op, operand),) = value.items()
    if op not in ("$contains", "$not_contains", "$regex", "$not_regex"):
        raise InvalidArgument(
            f"Cannot filter using metadata key '{DOCUMENT_KEY}' with operator {op}: use "
            "$contains, $not_contains, $regex or $not_regex"
        )
    doc_pred = _compile_document_leaf(op, operand)
    return lambda m, d: doc_pred(d)


def _compile_field(key: str, op: Any, operand: Any) -> MetadataPredicate:
    if op not in _WHERE_OPERATORS:
        raise InvalidArgument(
            "Expected where operator to be one of $gt, $gte, $lt, $lte, $ne, $eq, $in, $nin, "
            f"$contains, $not_contains, got {op}"
        )
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise InvalidArgument(
                f"Expected operand value for operator {op} to be a non-empty list, got {operand!r}"
            )
        operand = [_as_chroma_number(x) for x in operand]
        first = type(operand[0])
        if first not in (str, int, float, bool) or any(type(x) is not first for x in operand):
            raise InvalidArgument(
                f"Expected where operand value to be a non-empty list, and all values to be of "
                f"the same type (str, int, float or bool), got {operand!r}"
            )
        member = _member_test(operand)
        if op == "$in":
            return lambda m, d: m is not None and key in m and member(m[key])
        return lambda m, d: m is None or key not in m or not member(m[key])
    if not _is_scalar(operand):
        raise InvalidArgument(
            f"Expected where operand value to be a str, int, float or bool for operator {op}, "
            f"got {operand!r}"
        )
    operand = _as_chroma_number(operand)
    if op in ("$contains", "$not_contains"):
        contains = _array_contains_test(operand)
        if op == "$contains":
            return lambda m, d: m is not None and key in m and contains(m[key])
        return lambda m, d: m is None or key not in m or not contains(m[key])
    if op in _COMPARISONS and type(operand) not in (int, float):
        raise InvalidArgument(
            f"Expected operand value to be an int or a float for operator {op}, got {operand!r}"
        )
    test = _scalar_test(op if op != "$ne" else "$eq", operand)
    if op == "$ne":
        return lambda m, d: m is None or key not in m or not test(m[key])
    return lambda m, d: m is not None and key in m and test(m[key])


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: bool(a == b),
    "$gt": lambda a, b: bool(a > b),
    "$gte": lambda a, b: bool(a >= b),
    "$lt": lambda a, b: bool(a < b),
    "$lte": lambda a, b: bool(a <= b),
}


def _scalar_test(op: str, operand: Any) -> Callable[[Any], bool]:
    """Test one stored value (any type) against a scalar operand, Chroma's way."""
    cmp = _CMP[op]
    if _is_int(operand) or _is_float(operand):
        # Chroma checks the int column and the float column, converting the operand to each.
        as_int = operand if _is_int(operand) else _trunc_i64(operand)
        as_float = float(operand)

        def numeric(v: Any) -> bool:
            t = type(v)
            if t is int:
                return cmp(v, as_int)
            if t is float:
                return cmp(v, as_float)
            return False

        return numeric
    kind = type(operand)
    return lambda v: type(v) is kind and cmp(v, operand)


def _member_test(values: list[Any]) -> Callable[[Any], bool]:
    first = type(values[0])
    if first is int:
        ints = frozenset(values)
        floats = frozenset(float(x) for x in values)
    elif first is float:
        floats = frozenset(values)
        ints = frozenset(_trunc_i64(x) for x in values)
    else:
        same = frozenset(values)
        return lambda v: type(v) is first and v in same

    def numeric(v: Any) -> bool:
        t = type(v)
        if t is int:
            return v in ints
        if t is float:
            return v in floats
        return False

    return numeric


def _array_contains_test(operand: Any) -> Callable[[Any], bool]:
    kind = type(operand)
    return lambda v: isinstance(v, list) and any(
        type(x) is kind and x == operand for x in v
    )


# --- where_document ---------------------------------------------------------------------


def compile_where_document(where_document: Any) -> DocumentPredicate:
    """Validate a ``where_document`` filter and compile it to a predicate on the document."""
    check_nesting("where_document", where_document)
    return _compile_where_document(where_document)


def _compile_where_document(where_document: Any) -> DocumentPredicate:
    if not isinstance(where_document, dict):
        raise InvalidArgument(
            f"Expected where document to be a dictionary, got {where_document!r}"
        )
    if len(where_document) != 1:
        raise InvalidArgument(
            f"Expected where document to have exactly one operator, got {where_document!r}"
        )
    ((op, operand),) = where_document.items()
    if op not in _DOC_OPERATORS:
        raise InvalidArgument(
            "Expected where document operator to be one of $contains, $not_contains, $regex, "
            f"$not_regex, $and, $or, got {op}"
        )
    if op in ("$and", "$or"):
        if not isinstance(operand, list):
            raise InvalidArgument(
                f"Expected document value for {op} to be a list of where document expressions, "
                f"got {operand!r}"
            )
        children = [_compile_where_document(c) for c in operand]
        if op == "$and":
            return lambda d: all(c(d) for c in children)
        return lambda d: any(c(d) for c in children)
    return _compile_document_leaf(op, operand)


def _compile_document_leaf(op: str, operand: Any) -> DocumentPredicate:
    if not isinstance(operand, str):
        raise InvalidArgument(
            f"Expected where document operand value for operator {op} to be a str, got "
            f"{operand!r}"
        )
    if op == "$contains":
        return lambda d: d is not None and operand in d
    if op == "$not_contains":
        return lambda d: d is None or operand not in d
    rx = compile_rust_regex(operand)
    if op == "$regex":
        return lambda d: d is not None and rx.search(d) is not None
    return lambda d: d is None or rx.search(d) is None


def compile_filter(where: Any, where_document: Any) -> MetadataPredicate | None:
    """Compile both filters into one predicate; ``None`` when neither is given (match all)."""
    w = compile_where(where) if where is not None else None
    wd = compile_where_document(where_document) if where_document is not None else None
    if w is None and wd is None:
        return None
    if w is None:
        assert wd is not None
        doc_only = wd
        return lambda m, d: doc_only(d)
    if wd is None:
        return w
    meta, doc = w, wd
    return lambda m, d: doc(d) and meta(m, d)


def validate_where(where: Any) -> None:
    """Raise ``InvalidArgument`` unless ``where`` is a filter Chroma accepts."""
    compile_where(where)


def validate_where_document(where_document: Any) -> None:
    """Raise ``InvalidArgument`` unless ``where_document`` is a filter Chroma accepts."""
    compile_where_document(where_document)


def matches(
    where: Any,
    where_document: Any,
    metadata: Mapping[str, Any] | None,
    document: str | None,
) -> bool:
    """One-off evaluation (compile once with ``compile_filter`` when filtering many records)."""
    pred = compile_filter(where, where_document)
    return True if pred is None else pred(metadata, document)
