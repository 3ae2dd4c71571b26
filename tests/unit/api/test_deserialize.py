"""Record bodies checked as Chroma 1.5.9's serde types check them (measured with chroma run;
tests/integration/api/test_record_parity.py compares every case with it)."""

from __future__ import annotations

from typing import Any

import pytest

from chromasnap.api.deserialize import DESERIALIZE, check_payload, float_text, kind
from chromasnap.api.parsing import parse_get, parse_query, parse_write
from chromasnap.engine.errors import InvalidArgument, Unprocessable
from chromasnap.engine.ops import OpKind


@pytest.mark.parametrize(("value", "text"), [
    (1.5, "1.5"), (1.0, "1.0"), (-0.0, "-0.0"), (0.0, "0.0"), (1e15, "1000000000000000.0"),
    (1e16, "1e+16"), (1e20, "1e+20"), (1.8446744073709552e19, "1.8446744073709552e+19"),
    (1e-5, "0.00001"), (1.5e-5, "0.000015"), (1e-7, "1e-7"), (1.5e300, "1.5e+300"),
    (12345.678, "12345.678"), (1e7, "10000000.0"), (-1e20, "-1e+20"), (0.1, "0.1"),
])
def test_floats_print_as_serde_json_prints_them(value: float, text: str) -> None:
    assert float_text(value) == text


def test_kinds() -> None:
    assert kind((1 << 64) - 1) == "integer `18446744073709551615`"
    assert kind(1 << 64) == "floating point `1.8446744073709552e+19`"
    assert kind(-(1 << 63) - 1) == "floating point `-9.223372036854776e+18`"
    assert kind('a"b\\\n') == 'string "a\\"b\\\\\\n"'
    assert (kind(None), kind(True), kind([]), kind({})) == ("null", "boolean `true`",
                                                           "sequence", "map")


@pytest.mark.parametrize(("route", "body", "message"), [
    ("add", {"ids": "a", "embeddings": []}, 'ids: invalid type: string "a", expected a sequence'),
    ("add", {"ids": [1]}, "ids[0]: invalid type: integer `1`, expected a string"),
    ("add", {"ids": ["a"]}, "missing field `embeddings`"),
    ("add", {"embeddings": "x", "ids": [1]},
     "embeddings: data did not match any variant of untagged enum EmbeddingsPayload"),
    ("add", {"ids": ["a"], "embeddings": [[1]], "metadatas": [{"a": 1}, {"b": None}]},
     "metadatas[1].b: data did not match any variant of untagged enum MetadataValue"),
    ("update", {"ids": ["a"], "metadatas": [{"a": [None]}]},
     "metadatas[0].a: data did not match any variant of untagged enum UpdateMetadataValue"),
    ("add", None, "invalid type: null, expected struct AddCollectionRecordsPayload"),
    ("add", [], "invalid length 0, expected struct AddCollectionRecordsPayload with 5 elements"),
    ("add", [1], "[0]: invalid type: integer `1`, expected a sequence"),
    ("get", [1], "invalid type: sequence, expected struct GetRequestPayload"),
    ("get", {"limit": -1}, "limit: invalid value: integer `-1`, expected u32"),
    ("get", {"include": None}, "include: invalid type: null, expected a sequence"),
    ("query", {"n_results": 1.0}, "n_results: invalid type: floating point `1.0`, expected u32"),
    ("query", {"query_embeddings": [[None]]},
     "query_embeddings[0][0]: invalid type: null, expected f32"),
    ("query", {}, "missing field `query_embeddings`"),
])
def test_422(route: str, body: Any, message: str) -> None:
    with pytest.raises(Unprocessable) as info:
        check_payload(route, body)
    assert info.value.message == DESERIALIZE + message
    assert (info.value.status, info.value.chroma_name) == (422, "ChromaError")


def test_what_deserializes_passes_on_to_the_400s() -> None:
    assert check_payload("update", {"ids": ["a"], "embeddings": [None, "AAAA"], "x": 1})
    assert check_payload("add", [["a"], [[1.0]], None, None, None])["ids"] == ["a"]
    with pytest.raises(InvalidArgument, match=r"include\[0\]: expected value") as info:
        parse_get({"include": [1]})
    assert info.value.status == 400
    with pytest.raises(InvalidArgument, match="Invalid where clause"):
        parse_write(OpKind.DELETE, {"where": {}})
    for body in ({"limit": 1}, {"ids": ["a"], "limit": 1}):  # as chroma run 1.5.9 answers
        with pytest.raises(InvalidArgument, match="limit can only be specified when a where"):
            parse_write(OpKind.DELETE, body)
    with pytest.raises(InvalidArgument, match="cannot be negative, or zero"):
        parse_query({"query_embeddings": [[1.0]], "n_results": 0})
    with pytest.raises(InvalidArgument, match="Inconsistent number"):
        parse_write(OpKind.ADD, {"ids": ["a", "b"], "embeddings": [[1.0]]})
    req = parse_get({"limit": None, "offset": None, "ids": None})
    assert (req.limit, req.offset, req.ids) == (None, 0, None)
