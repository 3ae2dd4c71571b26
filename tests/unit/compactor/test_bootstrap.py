"""Unit tests of :mod:`chromasnap.compactor.bootstrap`: which sources are a pool's collections."""

from __future__ import annotations

import uuid

from chromasnap.compactor.bootstrap import in_a_pool
from chromasnap.config import CollectionSettings


def test_a_pool_s_collection_is_recognised_by_its_id_and_place() -> None:
    cid = str(uuid.uuid4())
    pooled = CollectionSettings(name=cid, dimension=2)
    assert in_a_pool(pooled, f"s3://b/pools/team-a/collections/{cid}/")
    assert in_a_pool(pooled, f"file:///data/collections/{cid}")
    # an id elsewhere, or a collection named like its prefix, keeps the name check
    assert not in_a_pool(pooled, f"s3://b/pools/team-a/collections/{uuid.uuid4()}")
    assert not in_a_pool(CollectionSettings(name="docs", dimension=2), "s3://b/collections/docs")
