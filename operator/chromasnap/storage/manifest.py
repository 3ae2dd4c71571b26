"""Snapshot manifests: what a snapshot is, which files it has, which deltas it contains.

Layout of one snapshot under ``snapshots/<version>/``:

- ``db/…``            the ``chromadb.PersistentClient`` directory, as closed by the compactor
- ``versions.arrow``  per-id newest applied write (the last-writer-wins memory, see merge.py)
- ``manifest.json``   this model; written last, so a manifest means the files are all there

Versions are ``<seq:010d>-<random>``: they sort by lineage depth, and two
compactors racing from the same base never write to the same keys.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chromasnap.config import CollectionSettings

FORMAT_VERSION = 1
SNAPSHOT_PREFIX = "snapshots/"
DB_DIR = "db"
VERSIONS_FILE = "versions.arrow"
MANIFEST_FILE = "manifest.json"


class CorruptSnapshot(Exception):
    """A snapshot's manifest or files are missing or damaged; it must not be served."""


class FileEntry(BaseModel):
    """One file of a snapshot, relative to the snapshot's root."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class CollectionInfo(BaseModel):
    """The Chroma collection inside the snapshot (id is stable across versions)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    settings: CollectionSettings
    model: dict[str, Any] | None = Field(
        default=None, description="the collection as Chroma's HTTP API returns it"
    )


class Manifest(BaseModel):
    """Everything needed to fetch, verify and describe one snapshot version."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    version: str
    seq: int = Field(ge=1)
    parent: str | None
    chromadb_version: str
    collection: CollectionInfo
    record_count: int = Field(ge=0)
    byte_size: int = Field(ge=0)
    files: list[FileEntry]
    deltas: list[str] = Field(
        description="names of deltas folded into this snapshot or an ancestor that still exist"
    )
    created_at: datetime
    compactor: str

    @property
    def prefix(self) -> str:
        """Key prefix of this snapshot's objects."""
        return snapshot_prefix(self.version)

    @property
    def key(self) -> str:
        """Key of this manifest."""
        return self.prefix + MANIFEST_FILE

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return self.model_dump_json(indent=2).encode()


def snapshot_prefix(version: str) -> str:
    """``snapshots/<version>/``."""
    return f"{SNAPSHOT_PREFIX}{version}/"


def new_version(seq: int) -> str:
    """A fresh, unique version name at lineage depth ``seq``."""
    return f"{seq:010d}-{secrets.token_hex(4)}"


def version_seq(version: str) -> int:
    """The lineage depth encoded in a version name."""
    return int(version.split("-", 1)[0])


def now() -> datetime:
    """Timezone-aware UTC now (manifests never hold naive times)."""
    return datetime.now(UTC)


def parse(data: bytes) -> Manifest:
    """Parse manifest JSON; raise CorruptSnapshot with the reason when it is not valid."""
    try:
        m = Manifest.model_validate(json.loads(data))
    except (ValueError, ValidationError) as e:
        raise CorruptSnapshot(f"manifest is not valid: {e}") from e
    if m.format_version != FORMAT_VERSION:
        raise CorruptSnapshot(
            f"manifest format {m.format_version} is not supported (expected {FORMAT_VERSION}); "
            "upgrade chromasnap"
        )
    return m
