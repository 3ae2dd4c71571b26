"""The manifest of a version a run is about to publish: what every kind of run fills in alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import chromadb

from chromasnap.config import CollectionSettings
from chromasnap.engine.ops import Op
from chromasnap.storage import manifest as mf


@dataclass(frozen=True)
class NewVersion:
    """The manifest fields every kind of run fills in the same way."""

    version: str
    parent: mf.Manifest | None
    deltas: list[str]
    identity: str
    settings: CollectionSettings
    newest_write_us: int
    #: Filtered deletes late writes still meet (``merge.retain``).
    filtered_deletes: list[mf.RetainedFilter] = field(default_factory=list)

    def manifest(self, collection_id: str, model: dict[str, Any] | None, record_count: int,
                 **kw: Any) -> mf.Manifest:
        """The manifest, with the kind-specific fields (files, base, segments) in ``kw``."""
        return mf.Manifest(
            version=self.version,
            seq=mf.version_seq(self.version),
            parent=self.parent.version if self.parent else None,
            chromadb_version=chromadb.__version__,
            collection=mf.CollectionInfo(id=collection_id, settings=self.settings, model=model),
            record_count=record_count,
            deltas=self.deltas,
            created_at=mf.now(),
            compactor=self.identity,
            newest_write_us=self.newest_write_us,
            filtered_deletes=self.filtered_deletes,
            **kw,
        )


def model_after(model: dict[str, Any] | None, ops: list[Op]) -> dict[str, Any] | None:
    """The collection's JSON once ``ops`` are applied: Chroma sets ``dimension`` at the
    first write that carries a vector, and nothing else in it changes with records."""
    if model is None or model.get("dimension") is not None:
        return model
    vector = next((op.embedding for op in ops if op.embedding is not None), None)
    return model if vector is None else {**model, "dimension": int(vector.shape[0])}
