"""The object store contract that every other module uses.

Two backends implement it: ``s3store.S3Store`` (boto3; AWS S3, MinIO) and
``localstore.LocalStore`` (a directory; the embedded demo and ``file://``
URLs). Keys are relative to the collection's root (``s3://bucket/prefix``),
always use ``/`` and never start with it.

Conditional writes are the safety mechanism of the whole design (the pointer
swap is the compactor's fence), so both backends must make them atomic.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ByteCallback = Callable[[int], None]
"""Transfer progress: called with each increment of bytes moved, from worker threads.

An increment can be negative when a part is retried and its bytes are rewound.
"""


class StoreError(Exception):
    """An object store call failed for a reason the caller cannot fix by retrying now."""


class NotFound(StoreError):
    """The key does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (If-Match) or exists (If-None-Match)."""


class ChecksumMismatch(StoreError):
    """Downloaded bytes do not have the expected size or SHA-256."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object."""

    key: str
    size: int
    etag: str
    last_modified: float  # unix seconds


@dataclass(frozen=True)
class Blob:
    """An object's bytes with the ETag they were read at."""

    data: bytes
    etag: str


class ObjectStore(Protocol):
    """Operations chromasnap needs from S3-like storage."""

    url: str

    def put(self, key: str, data: bytes) -> str:
        """Atomically write ``data``; return the new ETag."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the current ETag is ``etag``; raise PreconditionFailed otherwise."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if ``key`` does not exist; raise PreconditionFailed otherwise."""
        ...

    def get(self, key: str) -> Blob:
        """Read a whole object; raise NotFound."""
        ...

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """Conditional GET: ``None`` when the ETag still matches (304), else the new blob."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag without the body; raise NotFound."""
        ...

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """All objects under ``prefix`` in key order (paginated under the hood); with
        ``start_after``, only keys after it (S3's ``StartAfter``: one request, however
        many keys come before)."""
        ...

    def delete_many(self, keys: builtins.list[str]) -> None:
        """Delete keys in batches; missing keys are not an error."""
        ...

    def upload_file(self, key: str, path: Path, *, on_bytes: ByteCallback | None = None) -> str:
        """Upload a local file (multipart and parallel when large); return its SHA-256 hex."""
        ...

    def download_file(
        self,
        key: str,
        path: Path,
        size: int,
        sha256: str,
        *,
        on_bytes: ByteCallback | None = None,
    ) -> None:
        """Download to ``path`` (parallel ranges when large), verifying size and SHA-256.

        Raises ChecksumMismatch (and leaves no file at ``path``) when they differ.
        """
        ...


def open_store(url: str, endpoint_url: str | None = None, *, region: str | None = None,
               credentials: tuple[str, str] | None = None) -> ObjectStore:
    """Open ``s3://bucket/prefix`` or ``file:///path``.

    Credentials and region come from the standard AWS settings (env, profile,
    workload identity) unless given; ``endpoint_url`` points boto3 at MinIO or
    another S3.
    """
    if url.startswith("file://"):
        from chromasnap.storage.local import LocalStore

        return LocalStore(url)
    if url.startswith("s3://"):
        from chromasnap.storage.s3 import S3Store

        return S3Store(url, endpoint_url=endpoint_url, region=region, credentials=credentials)
    raise StoreError(
        f"unsupported bucket URL {url!r}: use s3://bucket/prefix or file:///absolute/path"
    )
