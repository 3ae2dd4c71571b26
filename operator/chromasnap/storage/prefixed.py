"""One collection of a pool as an ``ObjectStore`` of its own: the pool's store, under a prefix.

Every role reads and writes a collection through the ``ObjectStore`` contract with
keys relative to the collection's root. A pool keeps each collection under
``collections/<id>/`` of one bucket root, so wrapping the pool's store (one boto3
client, one connection pool) in this view lets the unchanged roles serve any of
its collections, with no client per collection.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path

from chromasnap.storage.store import Blob, ByteCallback, ObjectInfo, ObjectStore


class PrefixedStore:
    """``store`` seen from ``prefix`` (which ends with ``/``)."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        if not prefix.endswith("/") or prefix.startswith("/"):
            raise ValueError(f"a store prefix is relative and ends with '/': {prefix!r}")
        self.store = store
        self.prefix = prefix
        self.url = store.url.rstrip("/") + "/" + prefix

    def __repr__(self) -> str:
        return f"PrefixedStore({self.url!r})"

    def put(self, key: str, data: bytes) -> str:
        """See ``ObjectStore.put``."""
        return self.store.put(self.prefix + key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """See ``ObjectStore.put_if_match``."""
        return self.store.put_if_match(self.prefix + key, data, etag)

    def put_if_absent(self, key: str, data: bytes) -> str:
        """See ``ObjectStore.put_if_absent``."""
        return self.store.put_if_absent(self.prefix + key, data)

    def get(self, key: str) -> Blob:
        """See ``ObjectStore.get``."""
        return self.store.get(self.prefix + key)

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """See ``ObjectStore.get_if_changed``."""
        return self.store.get_if_changed(self.prefix + key, etag)

    def head(self, key: str) -> ObjectInfo:
        """See ``ObjectStore.head``; the key comes back relative to the prefix."""
        info = self.store.head(self.prefix + key)
        return ObjectInfo(key, info.size, info.etag, info.last_modified)

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """See ``ObjectStore.list``; keys come back relative to the prefix."""
        cut = len(self.prefix)
        after = self.prefix + start_after if start_after else None
        for info in self.store.list(self.prefix + prefix, start_after=after):
            yield ObjectInfo(info.key[cut:], info.size, info.etag, info.last_modified)

    def delete_many(self, keys: builtins.list[str]) -> None:
        """See ``ObjectStore.delete_many``."""
        self.store.delete_many([self.prefix + k for k in keys])

    def upload_file(self, key: str, path: Path, *, on_bytes: ByteCallback | None = None) -> str:
        """See ``ObjectStore.upload_file``."""
        return self.store.upload_file(self.prefix + key, path, on_bytes=on_bytes)

    def download_file(self, key: str, path: Path, size: int, sha256: str, *,
                      on_bytes: ByteCallback | None = None) -> None:
        """See ``ObjectStore.download_file``."""
        self.store.download_file(self.prefix + key, path, size, sha256, on_bytes=on_bytes)
