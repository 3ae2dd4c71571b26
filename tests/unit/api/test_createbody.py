"""What a create-collection body asks for, against the collection that exists (issue #17).

The statuses and wording are compared with ``chroma run`` itself in
tests/integration/api/test_create_parity.py; these are the pure parts.
"""

from __future__ import annotations

from typing import Any

import pytest

from chromasnap.api.createbody import ignored_settings, parse_create
from chromasnap.engine.errors import InvalidArgument, Unprocessable

MODEL: dict[str, Any] = {"configuration_json": {"hnsw": {
    "space": "l2", "ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
    "resize_factor": 1.2, "sync_threshold": 1000}}}


def test_configuration_wins_over_metadata_and_both_are_named() -> None:
    req = parse_create({"name": "docs", "get_or_create": True,
                        "metadata": {"hnsw:space": "ip", "hnsw:M": 32, "team": "a"},
                        "configuration": {"hnsw": {"space": "cosine", "ef_search": None}}})
    assert req.get_or_create
    assert req.hnsw == {"space": ("configuration.hnsw.space", "cosine"),
                        "max_neighbors": ("metadata hnsw:M", 32)}
    assert ignored_settings(req, MODEL) == [
        "configuration.hnsw.space 'cosine' (the collection: 'l2')",
        "metadata hnsw:M 32 (the collection: 16)",
    ]


def test_nothing_to_say_when_the_request_asks_for_what_is_there() -> None:
    assert ignored_settings(parse_create({"name": "docs"}), MODEL) == []
    same = parse_create({"name": "docs", "metadata": {"hnsw:space": "l2"},
                         "configuration": {"hnsw": {"ef_search": 100}}})
    assert ignored_settings(same, MODEL) == []


def test_spann_and_settings_the_collection_does_not_report() -> None:
    req = parse_create({"name": "docs", "configuration": {"spann": {"space": "l2"}},
                        "metadata": {"hnsw:num_threads": 4}})
    assert ignored_settings(req, MODEL) == [
        "configuration.spann, a SPANN index (the collection: an HNSW index)",
        "metadata hnsw:num_threads 4 (the collection: unset)",
    ]


@pytest.mark.parametrize(("body", "error", "message"), [
    ({}, Unprocessable, "missing field `name`"),
    ({"name": "docs", "configuration": {"hnsw": {"M": 16}}}, Unprocessable,
     "configuration.hnsw.M: unknown field `M`"),
    ({"name": "docs", "configuration": {"hnsw": {"max_neighbors": -1}}}, Unprocessable,
     "invalid value: integer `-1`, expected usize"),
    ({"name": "docs", "metadata": {"hnsw:batch_size": 1}}, InvalidArgument,
     "Failed to parse hnsw parameters"),
    ({"name": "docs", "configuration": {"hnsw": {}, "spann": {}}}, InvalidArgument,
     "Multiple vector index configurations provided"),
])
def test_refusals(body: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_create(body)
