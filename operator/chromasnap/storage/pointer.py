"""The snapshot pointer: ``pointer.json`` names the current version.

It is only ever changed by a conditional write: ``If-Match`` on the ETag the
writer read, or ``If-None-Match: *`` for the first version. That write is the
compactor's fence: whoever read an older pointer cannot replace a newer one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from chromasnap.storage.manifest import CorruptSnapshot, now
from chromasnap.storage.store import NotFound, ObjectStore, PreconditionFailed

POINTER_KEY = "pointer.json"


class Fenced(Exception):
    """The pointer changed since it was read: this compactor's work is stale."""


class Pointer(BaseModel):
    """What ``pointer.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    version: str
    manifest: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class PointerRead:
    """A pointer together with the ETag it was read at (``None`` values: no pointer yet)."""

    pointer: Pointer | None
    etag: str | None


def _parse(data: bytes) -> Pointer:
    try:
        return Pointer.model_validate(json.loads(data))
    except (ValueError, ValidationError) as e:
        raise CorruptSnapshot(f"{POINTER_KEY} is not valid: {e}") from e


def read(store: ObjectStore) -> PointerRead:
    """Read the pointer and its ETag; both ``None`` when the collection has no snapshot yet."""
    try:
        blob = store.get(POINTER_KEY)
    except NotFound:
        return PointerRead(None, None)
    return PointerRead(_parse(blob.data), blob.etag)


def poll(store: ObjectStore, etag: str | None) -> PointerRead | None:
    """Cheap conditional GET: ``None`` when unchanged since ``etag``."""
    try:
        blob = store.get_if_changed(POINTER_KEY, etag)
    except NotFound:
        return PointerRead(None, None)
    if blob is None:
        return None
    return PointerRead(_parse(blob.data), blob.etag)


def swap(store: ObjectStore, version: str, manifest_key: str, expected_etag: str | None,
         by: str) -> str:
    """Point at ``version`` only if the pointer is still at ``expected_etag``; return new ETag.

    Raises Fenced when another writer changed the pointer first.
    """
    body = Pointer(version=version, manifest=manifest_key, updated_at=now(), updated_by=by)
    data = body.model_dump_json(indent=2).encode()
    try:
        if expected_etag is None:
            return store.put_if_absent(POINTER_KEY, data)
        return store.put_if_match(POINTER_KEY, data, expected_etag)
    except PreconditionFailed as e:
        raise Fenced(
            f"pointer changed since it was read (expected ETag {expected_etag}); "
            "another compactor published first"
        ) from e
