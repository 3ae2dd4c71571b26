"""Reclaiming a pool's deleted collections: their bytes go, then the catalog forgets them.

A collection deleted through the API leaves the catalog at once (its name is free
for a new collection, with a new id and prefix), but its bytes under
``collections/<id>/`` stay until a compactor run removes them. A writer that
acknowledged a write just before the delete may still be flushing it into that
prefix, so a deleted collection is reclaimed only once it has been deleted for
``grace_seconds`` (the delta grace: a flush ends, or fails, well within it). Its
id is then listed as ``reclaimed`` in the catalog, after its objects are gone: a
run that crashes in between deletes what is left the next time.
"""

from __future__ import annotations

import logging
from datetime import datetime

from chromasnap.logs import fields
from chromasnap.storage.catalog import PoolCatalog, Reclaimed, collection_root
from chromasnap.storage.cataloglog import CatalogLog
from chromasnap.storage.store import ObjectStore

log = logging.getLogger("chromasnap.compactor")


def due(state: PoolCatalog, now: datetime, grace_seconds: float) -> list[str]:
    """Ids of deleted collections whose grace has passed."""
    return sorted(d.id for d in state.deleted.values()
                  if (now - d.deleted_at).total_seconds() >= grace_seconds)


def reclaim(store: ObjectStore, catalog: CatalogLog, *, now: datetime,
            grace_seconds: float) -> list[str]:
    """Delete the bytes of every deleted collection past its grace; return their ids."""
    ids = catalog.view(lambda s: due(s, now, grace_seconds), refresh=True)
    for cid in ids:
        keys = [info.key for info in store.list(collection_root(cid))]
        store.delete_many(keys)
        log.info("reclaimed deleted collection %s (%d objects)", cid, len(keys),
                 extra=fields(collection_id=cid, objects=len(keys)))

    def forget(state: PoolCatalog) -> tuple[Reclaimed | None, None]:
        still = tuple(cid for cid in ids if cid in state.deleted)
        return (Reclaimed(ids=still) if still else None), None

    if ids:
        catalog.change(forget)
    return ids
