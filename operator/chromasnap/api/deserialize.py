"""Bodies that do not deserialize into Chroma 1.5.9's request types: its 422, word for word.

Chroma's frontend reads each body with axum's ``Json`` extractor into a serde
type. A body that is not JSON is a 400 (``load_json`` says so); JSON that does
not fit the type is a 422, a plain ``ChromaError``, "Failed to deserialize the
JSON body into the target type: <path>: <what> at line L column C". This
module gives the same answer, without serde's " at line L column C" (chromasnap
does not track positions in the body). Measured against ``chroma run`` 1.5.9
(tests/integration/api/test_record_parity.py sends every case to both):

* keys are checked in the order the body has them, so the first bad one is
  named; a missing required field only after all present ones passed; unknown
  keys are ignored;
* ``null`` is "unset" for optional fields, a type error for required ones and
  for ``include``;
* an untagged enum (embeddings, metadata values) that fits no variant names
  only the field, not the element;
* ``where`` and ``where_document`` take any JSON here: refusing them is the
  filter compiler's 400, after this;
* an element of ``include`` that is not a string is a 400 "Failed to parse the
  request body as JSON" (Chroma's include parser fails before serde's check).

Duplicate keys (serde: "duplicate field") cannot be seen once orjson has
parsed the body: the last one wins here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from chromasnap.engine.errors import InvalidArgument, Unprocessable

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
INCLUDE_VARIANTS = ("distances", "documents", "embeddings", "metadatas", "uris")
_U32_MAX = (1 << 32) - 1
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1


def float_text(v: float) -> str:
    """``v`` as serde_json prints a float in an error: shortest digits, plain notation
    for 1e-5 <= |v| < 1e16 (with ".0" when whole), else ``1.5e+300`` / ``1e-7``."""
    sign = "-" if str(v).startswith("-") else ""
    if v == 0:
        return f"{sign}0.0"
    _, digit_tuple, exp = Decimal(repr(abs(v))).as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exp += len(digit_tuple) - len(digits)
    point = len(digits) + exp  # where the decimal point falls in ``digits``
    if exp >= 0 and point <= 16:
        return f"{sign}{digits}{'0' * exp}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if point > 1 else '-'}{abs(point - 1)}"


def _debug_str(s: str) -> str:
    """``s`` as Rust's ``{:?}`` prints a string (quotes, backslashes, control characters)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def kind(v: Any) -> str:
    """A JSON value as serde names it in "invalid type" errors."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{str(v).lower()}`"
    if isinstance(v, int):
        # serde_json holds integers in i64 or u64; larger ones are floats (as orjson's are).
        if not _I64_MIN <= v <= _U64_MAX:
            return f"floating point `{float_text(float(v))}`"
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{float_text(v)}`"
    if isinstance(v, str):
        return f"string {_debug_str(v)}"
    return "sequence" if isinstance(v, list) else "map"


def serde_error(path: str, what: str) -> Unprocessable:
    """Chroma's 422 for ``what`` at ``path`` (empty: the body itself)."""
    return Unprocessable(f"{DESERIALIZE}{path}: {what}" if path else f"{DESERIALIZE}{what}")


def _invalid_type(path: str, v: Any, expected: str) -> Unprocessable:
    return serde_error(path, f"invalid type: {kind(v)}, expected {expected}")


# --- field checkers: ``check(path, value)`` raises for a value that does not fit ---

Check = Callable[[str, Any], None]


def _sequence(path: str, v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _invalid_type(path, v, "a sequence")
    return v


def _strings(path: str, v: Any, nullable: bool = False) -> None:
    for i, x in enumerate(_sequence(path, v)):
        if not (isinstance(x, str) or (nullable and x is None)):
            raise _invalid_type(f"{path}[{i}]", x, "a string")


def _optional_strings(path: str, v: Any) -> None:
    _strings(path, v, nullable=True)


def _u32(path: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not _I64_MIN <= v <= _U64_MAX:
        raise _invalid_type(path, v, "u32")
    if not 0 <= v <= _U32_MAX:
        raise serde_error(path, f"invalid value: integer `{v}`, expected u32")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _embeddings_check(enum: str, nullable_rows: bool) -> Check:
    """An untagged enum of lists of numbers or base64 strings (``Option`` rows in update)."""

    def check(path: str, v: Any) -> None:
        if isinstance(v, list):
            rows = [r for r in v if not (nullable_rows and r is None)]
            if all(isinstance(r, str) for r in rows):
                return
            if all(isinstance(r, list) and all(map(_is_number, r)) for r in rows):
                return
        raise serde_error(path, f"data did not match any variant of untagged enum {enum}")

    return check


def _query_embeddings(path: str, v: Any) -> None:
    for i, row in enumerate(_sequence(path, v)):
        for j, x in enumerate(_sequence(f"{path}[{i}]", row)):
            if not _is_number(x):
                raise _invalid_type(f"{path}[{i}][{j}]", x, "f32")


def metadata_value_ok(v: Any, nullable: bool = False, sparse: bool = True) -> bool:
    """A value Chroma's ``MetadataValue`` accepts: a scalar, or a list of one scalar kind
    (ints and floats mix); ``UpdateMetadataValue`` also takes null (not inside a list)."""
    if v is None:
        return nullable
    if isinstance(v, str | bool | int | float):
        return True
    if isinstance(v, dict):
        # A record's sparse vector deserializes; other objects do not. Whether one is
        # served is the write backend's call (chroma run answers 501 for it).
        return sparse and "indices" in v and "values" in v
    if not isinstance(v, list):
        return False
    kinds = {"str" if isinstance(x, str) else "bool" if isinstance(x, bool)
             else "num" if isinstance(x, int | float) else "other" for x in v}
    return len(kinds) <= 1 and "other" not in kinds


def _metadatas_check(enum: str, nullable: bool) -> Check:
    def check(path: str, v: Any) -> None:
        for i, m in enumerate(_sequence(path, v)):
            if m is None:
                continue
            if not isinstance(m, dict):
                raise _invalid_type(f"{path}[{i}]", m, "a map")
            for k, val in m.items():
                if not metadata_value_ok(val, nullable):
                    raise serde_error(f"{path}[{i}].{k}",
                                      f"data did not match any variant of untagged enum {enum}")

    return check


def _include(path: str, v: Any) -> None:
    for i, x in enumerate(_sequence(path, v)):
        if not isinstance(x, str):
            raise InvalidArgument(
                f"Failed to parse the request body as JSON: {path}[{i}]: expected value")
        if x not in INCLUDE_VARIANTS:
            expected = ", ".join(f"`{n}`" for n in INCLUDE_VARIANTS)
            raise serde_error(f"{path}[{i}]", f"unknown variant `{x}`, expected one of {expected}")


# --- the request types: (name, field, check, required, nullable) ---

Field = tuple[str, Check, bool, bool]
_IDS: Field = ("ids", _strings, True, False)
_OPTIONAL_IDS: Field = ("ids", _strings, False, True)
_RECORDS: tuple[Field, ...] = (
    ("documents", _optional_strings, False, True),
    ("uris", _optional_strings, False, True),
)
_ADD: tuple[Field, ...] = (
    _IDS, ("embeddings", _embeddings_check("EmbeddingsPayload", False), True, False),
    *_RECORDS, ("metadatas", _metadatas_check("MetadataValue", False), False, True),
)
_UPDATE: tuple[Field, ...] = (
    _IDS, ("embeddings", _embeddings_check("UpdateEmbeddingsPayload", True), False, True),
    *_RECORDS, ("metadatas", _metadatas_check("UpdateMetadataValue", True), False, True),
)
_INCLUDE: Field = ("include", _include, False, False)
_U32_FIELDS = {name: (name, _u32, False, True) for name in ("limit", "offset", "n_results")}

#: Each route's request type: its name, whether it flattens the filter fields (a struct
#: with a flattened field does not deserialize from an array), and its fields in order.
PAYLOADS: dict[str, tuple[str, bool, tuple[Field, ...]]] = {
    "add": ("AddCollectionRecordsPayload", False, _ADD),
    "upsert": ("UpsertCollectionRecordsPayload", False, _ADD),
    "update": ("UpdateCollectionRecordsPayload", False, _UPDATE),
    "delete": ("DeleteCollectionRecordsPayload", True, (_OPTIONAL_IDS, _U32_FIELDS["limit"])),
    "get": ("GetRequestPayload", True, (_OPTIONAL_IDS, _U32_FIELDS["limit"],
                                        _U32_FIELDS["offset"], _INCLUDE)),
    "query": ("QueryRequestPayload", True, (
        _OPTIONAL_IDS, ("query_embeddings", _query_embeddings, True, False),
        _U32_FIELDS["n_results"], _INCLUDE)),
}


def _check_field(f: Field, path: str, v: Any) -> None:
    _, check, _, nullable = f
    if v is None and nullable:
        return
    check(path, v)


def _from_array(type_name: str, fields: Sequence[Field], body: list[Any]) -> dict[str, Any]:
    """A struct without flattened fields also deserializes from an array, field by field."""
    for i, (f, v) in enumerate(zip(fields, body, strict=False)):
        _check_field(f, f"[{i}]", v)
    if len(body) < len(fields):
        raise serde_error("", f"invalid length {len(body)}, expected struct {type_name} "
                              f"with {len(fields)} elements")
    if len(body) > len(fields):
        # serde_json: the array goes on where the struct ends (a syntax error: 400).
        raise InvalidArgument("Failed to parse the request body as JSON: trailing characters")
    return {f[0]: v for f, v in zip(fields, body, strict=False)}


def check_payload(route: str, body: Any) -> dict[str, Any]:
    """``body`` as an object, if it deserializes into ``route``'s request type; else
    Chroma's 422 (or 400) for the first thing that does not."""
    type_name, flattened, fields = PAYLOADS[route]
    if isinstance(body, list) and not flattened:
        return _from_array(type_name, fields, body)
    if not isinstance(body, dict):
        raise _invalid_type("", body, f"struct {type_name}")
    by_name = {f[0]: f for f in fields}
    for key, v in body.items():
        f = by_name.get(key)
        if f is not None:
            _check_field(f, key, v)
    for name, _, required, _ in fields:
        if required and name not in body:
            raise serde_error("", f"missing field `{name}`")
    return body
