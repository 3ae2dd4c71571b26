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
  ``$regex`` uses Rust ``regex`` syntax and search semantics (translated to
  Python's ``re`` below). A record without a document matches only the negated
  operators. ``{"#document": {...}}`` inside ``where`` is a document filter.
* ``$and`` of nothing is true, ``$or`` of nothing is false.

Validation accepts what Chroma's server accepts and words errors like the
chromadb client does, raising ``InvalidArgument``.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from chromasnap.engine.errors import InvalidArgument

MetadataPredicate = Callable[[Mapping[str, Any] | None, str | None], bool]
"""``(metadata, document) -> bool``: a compiled ``where`` (+ ``where_document``)."""

DocumentPredicate = Callable[[str | None], bool]

DOCUMENT_KEY = "#document"
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

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


def compile_where(where: Any) -> MetadataPredicate:
    """Validate a ``where`` filter and compile it to a predicate on ``(metadata, document)``.

    Raises ``InvalidArgument`` with a Chroma-style message when the filter is malformed.
    """
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
        children = [compile_where(child) for child in value]
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
        children = [compile_where_document(c) for c in operand]
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


# --- Rust regex syntax on Python's re ---------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_UNICODE_CATEGORY_ALIASES = {
    "letter": "L", "uppercase_letter": "Lu", "lowercase_letter": "Ll",
    "titlecase_letter": "Lt", "modifier_letter": "Lm", "other_letter": "Lo",
    "mark": "M", "number": "N", "decimal_number": "Nd", "digit": "Nd",
    "letter_number": "Nl", "other_number": "No", "punctuation": "P", "symbol": "S",
    "separator": "Z", "space_separator": "Zs", "other": "C", "control": "Cc",
}


def _unsupported(pattern: str, what: str) -> InvalidArgument:
    return InvalidArgument(
        f"Regex {pattern!r} uses {what}, which chromasnap cannot evaluate on the unindexed tail "
        "of fresh reads; rewrite the pattern without it"
    )


@functools.lru_cache(maxsize=64)
def _category_ranges(category: str) -> str:
    """A character-class body: every code point whose general category starts with ``category``."""
    parts: list[str] = []
    start = -1
    prev = -2
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(category):
            if cp != prev + 1:
                if start >= 0:
                    parts.append(_range(start, prev))
                start = cp
            prev = cp
    if start >= 0:
        parts.append(_range(start, prev))
    return "".join(parts)


def _range(a: int, b: int) -> str:
    return f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}"


def _unicode_class(pattern: str, name: str) -> str:
    key = name.replace(" ", "").replace("-", "_")
    cat = _UNICODE_CATEGORY_ALIASES.get(key.lower(), key)
    if cat == "Any":
        return "\\x00-\\U0010ffff"
    if not (1 <= len(cat) <= 2 and cat[0] in "LMNPSZC" and (len(cat) == 1 or cat[1].islower())):
        raise _unsupported(pattern, f"the Unicode property \\p{{{name}}}")
    body = _category_ranges(cat)
    if not body:
        raise _unsupported(pattern, f"the Unicode property \\p{{{name}}}")
    return body


@functools.lru_cache(maxsize=256)
def compile_rust_regex(pattern: str) -> re.Pattern[str]:
    """Compile a pattern in Rust ``regex`` syntax to an equivalent Python pattern.

    Translated: ``$`` (end of text unless multi-line), ``\\z``, ``\\x{...}``,
    ``(?<name>...)``, POSIX classes, Unicode general categories ``\\p{..}``.
    Rejected like Rust does: look-around and backreferences. Rejected because
    Python cannot express them: ``(?U)``, class set operations, scripts.
    """
    multiline = bool(re.search(r"\(\?[a-zA-Z]*m[a-zA-Z-]*[:)]", pattern))
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    groups = [0]  # per open group: scoped flag groups to close with it
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise InvalidArgument(f"Regex syntax error in {pattern!r}: incomplete escape")
            nxt = pattern[i + 1]
            if nxt.isdigit() and nxt != "0" and not in_class:
                raise InvalidArgument(
                    f"Regex syntax error in {pattern!r}: backreferences are not supported"
                )
            if nxt == "z" and not in_class:
                out.append("\\Z")
                i += 2
                continue
            if nxt in "xu" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                if end < 0:
                    raise InvalidArgument(f"Regex syntax error in {pattern!r}: unclosed \\x{{")
                cp = int(pattern[i + 3 : end], 16)
                out.append(f"\\U{cp:08x}")
                i = end + 1
                continue
            if nxt in "pP":
                if i + 2 < n and pattern[i + 2] == "{":
                    end = pattern.find("}", i + 3)
                    if end < 0:
                        raise InvalidArgument(f"Regex syntax error in {pattern!r}: unclosed \\p{{")
                    name = pattern[i + 3 : end]
                    i = end + 1
                else:
                    if i + 2 >= n:
                        raise InvalidArgument(f"Regex syntax error in {pattern!r}: bad \\p")
                    name = pattern[i + 2]
                    i += 3
                negated = nxt == "P"
                if name.startswith("^"):
                    negated, name = not negated, name[1:]
                body = _unicode_class(pattern, name)
                if in_class:
                    if negated:
                        raise _unsupported(pattern, "a negated Unicode property inside a class")
                    out.append(body)
                else:
                    out.append(f"[{'^' if negated else ''}{body}]")
                continue
            if nxt in "<>" and not in_class:
                out.append("\\b")
                i += 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[":
                m = re.match(r"\[:(\^?)([a-z]+):\]", pattern[i:])
                if m is None or m.group(2) not in _POSIX_CLASSES:
                    raise _unsupported(pattern, "a nested character class")
                if m.group(1):
                    raise _unsupported(pattern, "a negated POSIX class inside a class")
                out.append(_POSIX_CLASSES[m.group(2)])
                i += m.end()
                continue
            if pattern.startswith(("&&", "--", "~~"), i):
                raise _unsupported(pattern, "character class set operations")
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            m = re.match(r"\[\[:(\^?)([a-z]+):\]\]", pattern[i:])
            if m is not None and m.group(2) in _POSIX_CLASSES:
                out.append(f"[{'^' if m.group(1) else ''}{_POSIX_CLASSES[m.group(2)]}]")
                i += m.end()
                continue
            in_class = True
            out.append(c)
            i += 1
            # A leading ']' (after an optional '^') is a literal in both dialects.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if c == "(":
            if pattern.startswith("(?", i):
                rest = pattern[i + 2 :]
                if rest.startswith(("=", "!", "<=", "<!")):
                    raise InvalidArgument(
                        f"Regex syntax error in {pattern!r}: look-around, including look-ahead "
                        "and look-behind, is not supported"
                    )
                if rest.startswith("<"):
                    out.append("(?P<")
                    groups.append(0)
                    i += 3
                    continue
                fm = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", rest)
                if fm is not None:
                    on, off = fm.group(1), fm.group(2) or ""
                    if "U" in on + off:
                        raise _unsupported(pattern, "the swap-greed flag U")
                    if "R" in on + off or "u" in off:
                        raise _unsupported(pattern, f"the flag group (?{fm.group(0)}")
                    # Unicode mode is the default on both sides; Python only takes 'u' globally.
                    on = on.replace("u", "")
                    spec = on + ("-" + off if off else "")
                    if fm.group(3) == ":":
                        out.append(f"(?{spec}:" if spec else "(?:")
                        groups.append(0)
                    elif spec:
                        # Rust applies a bare flag group to the rest of the enclosing group;
                        # Python allows flags mid-pattern only in scoped form, so open one
                        # here and close it where the enclosing group closes.
                        out.append(f"(?{spec}:")
                        groups[-1] += 1
                    i += 2 + fm.end()
                    continue
            out.append("(")
            groups.append(0)
            i += 1
            continue
        if c == ")" and len(groups) > 1:
            out.append(")" * (groups.pop() + 1))
            i += 1
            continue
        if c == "$" and not multiline:
            out.append("\\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    out.append(")" * groups[0])
    try:
        return re.compile("".join(out))
    except re.error as e:
        raise InvalidArgument(f"Regex syntax error in {pattern!r}: {e}") from e
