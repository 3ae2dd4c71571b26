"""Snapshot manifests: what a version is, which files it has, which deltas it contains.

A version is a *base* plus an ordered list of *segments* (format 2; see
docs/design.md, "Segmented snapshots"):

- the base is a full snapshot under ``snapshots/<base>/``: ``db/…`` (the
  ``chromadb.PersistentClient`` directory, as closed by the compactor) and
  ``versions.arrow`` (per-id newest applied write, the last-writer-wins
  memory of merge.py). A version whose base is itself is a *full* version;
- each segment lives under ``segments/<name>/``: ``ops.arrow`` (the writes a
  minor compaction folded, already planned against everything before them,
  in the order they apply) and ``versions.arrow`` (the touched ids' new
  versions). Segments are immutable and shared by every later version that
  lists them;
- ``snapshots/<version>/manifest.json`` is this model; written last, so a
  manifest means every file it names is there.

Format 1 manifests (no ``base``, no ``segments``) are full versions: buckets
written before segments keep working unchanged.

Versions are ``<seq:010d>-<random>``: they sort by lineage depth, and two
compactors racing from the same base never write to the same keys.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chromasnap.config import CollectionSettings
from chromasnap.engine.ops import DeleteFilter, Op, OpKey, OpKind

FORMAT_VERSION = 2
SUPPORTED_FORMATS = (1, 2)
SNAPSHOT_PREFIX = "snapshots/"
SEGMENT_PREFIX = "segments/"
OPS_FILE = "ops.arrow"
DB_DIR = "db"
VERSIONS_FILE = "versions.arrow"
INDEX_FILE = "index.hnsw"
INDEX_IDS_FILE = "index.arrow"
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


class Segment(BaseModel):
    """One immutable segment: writes folded on top of the base, with their versions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ops: int = Field(ge=0, description="writes in ops.arrow")
    shadowing: int = Field(
        ge=0, default=0, description="ids it touched that held a record before it (upper bound)"
    )
    files: list[FileEntry]

    @property
    def prefix(self) -> str:
        """Key prefix of this segment's objects."""
        return segment_prefix(self.name)

    @property
    def byte_size(self) -> int:
        """Bytes of the segment's files."""
        return sum(f.size for f in self.files)

    @property
    def indexed(self) -> bool:
        """Whether the compactor built a vector index for it (``engine.hnswindex``)."""
        return any(f.path == INDEX_FILE for f in self.files)

    def file(self, path: str) -> FileEntry:
        """The entry of ``path`` (``ops.arrow``, ``versions.arrow``, ``index.*``)."""
        for f in self.files:
            if f.path == path:
                return f
        raise CorruptSnapshot(f"segment {self.name} has no {path}")


class RetainedFilter(BaseModel):
    """A filtered delete a version folded, kept for the delta grace period.

    A write older than it that arrives later must still be tested against
    it (``merge.expand_filtered_deletes``), as a late write meets the
    tombstones a plain delete leaves.
    """

    model_config = ConfigDict(extra="forbid")

    ts_us: int
    writer: str
    seq: int
    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    ids: list[str] | None = None

    def op(self) -> Op:
        """The filtered delete as an op."""
        return Op(OpKind.DELETE_WHERE, "", OpKey(self.ts_us, self.writer, self.seq),
                  filter=DeleteFilter(self.where, self.where_document,
                                      None if self.ids is None else tuple(self.ids)))

    @classmethod
    def of(cls, op: Op) -> RetainedFilter:
        """Keep a filtered delete op."""
        f = op.filter
        assert f is not None
        return cls(ts_us=op.key.ts_us, writer=op.key.writer, seq=op.key.seq, where=f.where,
                   where_document=f.where_document, ids=None if f.ids is None else list(f.ids))


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
    files: list[FileEntry] = Field(description="the base's files, under the base's prefix")
    base: str | None = Field(
        default=None, description="version holding the base files; None: this version itself"
    )
    base_records: int | None = Field(
        default=None, ge=0, description="records in the base alone; None: record_count"
    )
    segments: list[Segment] = Field(default_factory=list)
    origin: str | None = Field(
        default=None,
        description="first versions only: where records not from deltas came from "
        "(import, bootstrap); such a lineage cannot be replayed from empty",
    )
    newest_write_us: int | None = Field(
        default=None, ge=0,
        description="newest write time (µs) this version or an ancestor folded (recovery)",
    )
    deltas: list[str] = Field(
        description="names of deltas folded into this snapshot or an ancestor that still exist"
    )
    created_at: datetime
    compactor: str
    filtered_deletes: list[RetainedFilter] = Field(
        default_factory=list,
        description="filtered deletes this version or an ancestor folded, newer than the "
        "delta grace period (written only when there are any)",
    )

    @property
    def prefix(self) -> str:
        """Key prefix of this snapshot's objects."""
        return snapshot_prefix(self.version)

    @property
    def key(self) -> str:
        """Key of this manifest."""
        return self.prefix + MANIFEST_FILE

    @property
    def base_version(self) -> str:
        """The version whose ``db/`` and ``versions.arrow`` are this version's base."""
        return self.base or self.version

    @property
    def base_prefix(self) -> str:
        """Key prefix of the base's files."""
        return snapshot_prefix(self.base_version)

    @property
    def base_bytes(self) -> int:
        """Bytes of the base's files."""
        return sum(f.size for f in self.files)

    @property
    def base_record_count(self) -> int:
        """Records in the base alone."""
        return self.record_count if self.base_records is None else self.base_records

    @property
    def segment_names(self) -> tuple[str, ...]:
        """The segments' names, in the order they apply."""
        return tuple(s.name for s in self.segments)

    @cached_property
    def retained_filters(self) -> list[Op]:
        """The filtered deletes late writes are still tested against, as ops."""
        return [r.op() for r in self.filtered_deletes]

    def to_json(self) -> bytes:
        """Canonical JSON bytes (without ``filtered_deletes`` when empty: what older
        chromasnap versions, which refuse unknown fields, can read)."""
        exclude = None if self.filtered_deletes else {"filtered_deletes"}
        return self.model_dump_json(indent=2, exclude=exclude).encode()


def snapshot_prefix(version: str) -> str:
    """``snapshots/<version>/``."""
    return f"{SNAPSHOT_PREFIX}{version}/"


def segment_prefix(name: str) -> str:
    """``segments/<name>/``."""
    return f"{SEGMENT_PREFIX}{name}/"


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
    if m.format_version not in SUPPORTED_FORMATS:
        raise CorruptSnapshot(
            f"manifest format {m.format_version} is not supported (this chromasnap reads "
            f"{', '.join(map(str, SUPPORTED_FORMATS))}); upgrade chromasnap"
        )
    return m
