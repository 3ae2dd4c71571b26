"""Manifests keep the filtered deletes late writes must still meet, readable by old readers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chromasnap.config import CollectionSettings
from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind
from chromasnap.storage import manifest as mf


def _manifest(**kw: object) -> mf.Manifest:
    return mf.Manifest(
        version=mf.new_version(1), seq=1, parent=None, chromadb_version="1.5.9",
        collection=mf.CollectionInfo(id="c", settings=CollectionSettings(name="docs", dimension=4)),
        record_count=0, byte_size=0, files=[], deltas=[],
        created_at=datetime(2026, 1, 1, tzinfo=UTC), compactor="t", **kw)


def test_retained_filters_round_trip_as_ops() -> None:
    op = Op(OpKind.DELETE_WHERE, "", OpKey(5, "w", 2),
            filter=DeleteFilter({"k": {"$in": [1, 2]}}, {"$contains": "x"}, ("a", "b")))
    man = _manifest(filtered_deletes=[mf.RetainedFilter.of(op)])
    back = mf.parse(man.to_json())
    assert back.retained_filters == [op]


def test_a_manifest_without_them_has_no_such_field() -> None:
    """Older chromasnap versions refuse unknown manifest fields: write it only when needed."""
    assert "filtered_deletes" not in json.loads(_manifest().to_json())
    assert mf.parse(_manifest().to_json()).retained_filters == []
