"""Configuration every chromasnap process reads: pydantic models filled from env and flags.

The operator renders these same variables into the pods (see ``specs.py``), so
the names here are a contract between the control plane and the data plane.
All variables start with ``CHROMASNAP_``; S3 credentials use the standard AWS
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` …)
so that profiles and workload identity work unchanged.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CHROMASNAP_"

COLLECTION_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


class Space(StrEnum):
    """Distance functions, exactly as Chroma names them."""

    COSINE = "cosine"
    L2 = "l2"
    IP = "ip"


class ReadLevel(StrEnum):
    """``snapshot``: answer from the loaded snapshot only; ``fresh``: merge the delta tail too."""

    SNAPSHOT = "snapshot"
    FRESH = "fresh"


class LockKind(StrEnum):
    """Which mutex the compactor takes; safety never depends on it (the pointer is the fence)."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"
    NONE = "none"


#: Chroma's default space: what ``create_collection`` without a space builds.
DEFAULT_SPACE = Space.L2
#: The largest request body Chroma's server takes (its frontend's ``max_payload_size_bytes``,
#: measured on ``chroma run`` 1.5.9: 40 MiB is accepted, one byte more is a 413 on every
#: route). With the default, a client that works against chromasnap works against Chroma.
CHROMA_MAX_PAYLOAD_BYTES = 40 << 20


class CollectionSettings(BaseModel):
    """What a collection is: fixed at creation (name, dimension, space are immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dimension: Annotated[int, Field(ge=1, le=65536)]
    space: Space = DEFAULT_SPACE
    hnsw_m: Annotated[int, Field(ge=2, le=512)] = 16
    hnsw_construction_ef: Annotated[int, Field(ge=1, le=4096)] = 100
    hnsw_search_ef: Annotated[int, Field(ge=1, le=4096)] = 100
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _chroma_name(cls, v: str) -> str:
        if not COLLECTION_NAME_RE.match(v) or ".." in v:
            raise ValueError(
                f"collection name {v!r} is not a valid Chroma name: use 3-512 characters "
                "from [a-zA-Z0-9._-], starting and ending with a letter or digit, no '..'"
            )
        return v


#: Settings the first version's index is built with; a collection keeps them for life.
INDEX_FIELDS = ("space", "hnsw_m", "hnsw_construction_ef")
#: Settings every write and delta is checked against; they must match what is recorded.
IDENTITY_FIELDS = ("name", "dimension")


class SettingsMismatch(ValueError):
    """The configured collection is not the one recorded in the bucket; the message says how."""


def differences(configured: CollectionSettings, recorded: CollectionSettings,
                names: tuple[str, ...]) -> list[str]:
    """``"<field> <recorded> (configured <configured>)"`` per field of ``names`` that differs."""
    def shown(settings: CollectionSettings, name: str) -> str:
        v = getattr(settings, name)
        return repr(v.value if isinstance(v, StrEnum) else v)

    return [f"{n} {shown(recorded, n)} (configured {shown(configured, n)})"
            for n in names if getattr(configured, n) != getattr(recorded, n)]


def keep_recorded(configured: CollectionSettings,
                  recorded: CollectionSettings) -> tuple[CollectionSettings, list[str]]:
    """The settings a new version of an existing collection carries, and what differed.

    An existing collection's index settings are the recorded ones: its index
    was built with them, and a configuration that changed since (a default
    that moved, a resource recreated without its old ``space``) must not
    silently relabel it. The rest (``hnsw_search_ef``, a query-time knob) is
    the configured. A different name or dimension is not the same collection
    at all: ``SettingsMismatch``.
    """
    wrong = differences(configured, recorded, IDENTITY_FIELDS)
    if wrong:
        raise SettingsMismatch(
            "the bucket holds another collection: recorded " + ", ".join(wrong) +
            "; point this collection at its own storage prefix, or configure the recorded values"
        )
    kept = differences(configured, recorded, INDEX_FIELDS)
    return configured.model_copy(update={n: getattr(recorded, n) for n in INDEX_FIELDS}), kept


@dataclass(frozen=True)
class FreshnessTiming:
    """How the fresh-read guarantee's leases and registrations are timed (seconds).

    - ``lease_s``: a reader's freshness lease from one writer; a writer waits
      at most this long for a reader that stopped confirming its pushes;
    - ``members_refresh_s``: how often readers LIST the writer registrations;
    - ``members_window_s``: readers answer fresh reads from memory only while
      their last such LIST started less than this ago, and a new writer waits
      ``gate_s`` (0.5 s longer) after registering before it acknowledges
      anything, so every reader knows it by then. So a reader rides out an
      S3 outage this long before its fresh reads need a LIST, and a new
      writer is ready this long after it starts;
    - ``writer_stale_s``: a registration not renewed for this long is a dead
      writer's; writers renew every third of it and stop acknowledging once
      ``stop_acks_s`` passed since their last renewal began.
    """

    lease_s: float = 3.0
    members_refresh_s: float = 1.0
    writer_stale_s: float = 15.0
    members_window_s: float = 10.0

    def __post_init__(self) -> None:
        if self.members_window_s < 2 * self.members_refresh_s:
            raise ValueError("members_window_s must be at least twice members_refresh_s")

    @property
    def gate_s(self) -> float:
        """A new writer's wait after registering before its first acknowledgement."""
        return self.members_window_s + 0.5

    @property
    def renew_s(self) -> float:
        """How often a writer renews its registration."""
        return self.writer_stale_s / 3

    @property
    def stop_acks_s(self) -> float:
        """A writer acknowledges nothing once its last renewal began this long ago."""
        return self.writer_stale_s * 0.8


class CommonSettings(BaseSettings):
    """Settings every subcommand shares: where the bucket is and which collection."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    bucket_url: str = Field(
        description="s3://bucket/prefix or file:///path: the collection's root in the object store"
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="explicit S3 endpoint (MinIO); unset means AWS's default"
    )
    collection: str = Field(description="Chroma collection name")
    dimension: Annotated[int, Field(ge=1, le=65536)]
    space: Space = DEFAULT_SPACE
    hnsw_m: Annotated[int, Field(ge=2, le=512)] = 16
    hnsw_construction_ef: Annotated[int, Field(ge=1, le=4096)] = 100
    hnsw_search_ef: Annotated[int, Field(ge=1, le=4096)] = 100
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    auth_token_file: str | None = Field(
        default=None,
        description="file(s) with accepted bearer tokens, one per line (a mounted Secret; "
        "several files separated by commas, e.g. read and write tokens); "
        "else CHROMASNAP_AUTH_TOKEN; neither: no authentication",
    )
    drain_seconds: Annotated[float, Field(ge=0, le=300)] = Field(
        default=0.0,
        description="on SIGTERM, keep serving this long (not ready, closing each connection "
        "after its response) before shutting down; the operator sets it for pods",
    )
    push_token_file: str | None = Field(
        default=None,
        description="file with the token writers send with delta pushes and readers require "
        "(a mounted Secret only the collection's pods get; never a client token)",
    )

    advertise_host: str | None = Field(
        default_factory=lambda: os.environ.get("POD_IP"),
        description="the address other chromasnap pods reach this one at (the pod IP from the "
        "downward API, POD_IP); unset: the listen host, or 127.0.0.1 when that is a wildcard",
    )
    # The fresh-read guarantee (writer/leases.py, reader/freshness.py): writers and readers
    # of one collection must use the same values (the operator renders them alike).
    fresh_lease_seconds: Annotated[float, Field(gt=0, le=60)] = 3.0
    members_refresh_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    writer_stale_seconds: Annotated[float, Field(gt=0, le=600)] = 15.0
    members_window_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0

    def freshness_timing(self) -> FreshnessTiming:
        """The fresh-read guarantee's timing, as both roles must apply it."""
        return FreshnessTiming(self.fresh_lease_seconds, self.members_refresh_seconds,
                               self.writer_stale_seconds, self.members_window_seconds)

    def advertised(self, host: str, port: int) -> str:
        """This process's base URL for other pods (see ``advertise_host``)."""
        addr = self.advertise_host or (host if host not in ("", "0.0.0.0", "::") else "127.0.0.1")
        return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"

    @field_validator("bucket_url")
    @classmethod
    def _bucket_scheme(cls, v: str) -> str:
        if not (v.startswith("s3://") or v.startswith("file://")):
            raise ValueError(
                f"bucket URL {v!r} must start with s3:// (e.g. s3://my-bucket/collections/docs) "
                "or file:// (e.g. file:///var/lib/chromasnap)"
            )
        return v

    def collection_settings(self) -> CollectionSettings:
        """The immutable collection description these settings name."""
        return CollectionSettings(
            name=self.collection,
            dimension=self.dimension,
            space=self.space,
            hnsw_m=self.hnsw_m,
            hnsw_construction_ef=self.hnsw_construction_ef,
            hnsw_search_ef=self.hnsw_search_ef,
        )


def default_identity() -> str:
    """Pod name on Kubernetes (``POD_NAME`` from the downward API), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class WriterSettings(CommonSettings):
    """``chromasnap writer``: group-commit window and HTTP listener."""

    writer_id: str = Field(default_factory=default_identity)
    flush_max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    flush_max_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 32 << 20
    flush_max_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    max_request_records: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    max_request_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = Field(
        default=CHROMA_MAX_PAYLOAD_BYTES,
        description="largest request body a writer takes, in bytes (default: Chroma's 40 MiB)",
    )
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    notify_urls: str | None = Field(
        default=None, description="comma-separated reader base URLs to push new deltas to"
    )
    notify_dns: str | None = Field(
        default=None,
        description="DNS name whose A records are the ready readers (the operator's headless "
        "reader Service); writers tell them about new deltas so fresh reads need not wait "
        "for a poll",
    )


class CompactorSettings(CommonSettings):
    """``chromasnap compactor``: lock, cache, retention and where to report the result."""

    identity: str = Field(default_factory=default_identity)
    lock: LockKind = LockKind.LOCAL
    lease_name: str | None = None
    lease_namespace: str | None = None
    lease_duration_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    cache_dir: str = "/var/cache/chromasnap"
    retain_snapshots: Annotated[int, Field(ge=1, le=1000)] = 3
    delta_grace_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 600
    max_deltas_per_run: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # The merge policy (compactor/policy.py): when a run writes a full version
    # instead of a segment, and how many segments of one tier merge.
    merge_segments_per_tier: Annotated[int, Field(ge=2, le=100)] = 10
    merge_full_ratio: Annotated[float, Field(ge=0)] = 1.0
    merge_shadowed_ratio: Annotated[float, Field(ge=0)] = 0.2
    merge_max_segments: Annotated[int, Field(ge=1, le=1000)] = 30
    # A full run builds the base afresh from its live records once its HNSW index would
    # hold more dead elements (deleted or replaced vectors, which chromadb never drops)
    # than this times the records.
    merge_dead_ratio: Annotated[float, Field(ge=0)] = 0.1
    # A segment whose writes carry at least this many vectors gets an HNSW index that
    # readers load instead of re-indexing (engine/hnswindex.py); smaller ones are
    # searched exhaustively.
    segment_index_min_rows: Annotated[int, Field(ge=1)] = 1000
    # Point-in-time recovery: keep every version and delta that restoring to any time
    # in this window needs (0: off, applied deltas go after the grace period).
    recovery_window_seconds: Annotated[int, Field(ge=0, le=366 * 86400)] = 0
    # Bootstrap: with no version yet, the first run starts from another collection's
    # state (read only) instead of empty; its own keys, if the source needs others.
    bootstrap_url: str | None = None
    bootstrap_s3_endpoint_url: str | None = None
    bootstrap_region: str | None = None
    bootstrap_version: str | None = None
    bootstrap_at: datetime | None = None
    bootstrap_aws_access_key_id: SecretStr | None = None
    bootstrap_aws_secret_access_key: SecretStr | None = None
    result_file: str | None = Field(
        default=None, description="write the run's JSON result here (e.g. /dev/termination-log)"
    )
    pushgateway_url: str | None = None
    status_resource: str | None = Field(
        default=None,
        description="<namespace>/<name> of the ChromaCollection whose status the run's result "
        "is patched into (needs the pod's service account token)",
    )


class ReaderSettings(CommonSettings):
    """``chromasnap reader``: cache, polling and read level."""

    cache_dir: str = "/var/cache/chromasnap"
    cache_max_bytes: Annotated[int, Field(ge=0)] = 0
    poll_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    read_level: ReadLevel = ReadLevel.FRESH
    read_after_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    fold_segments: bool = Field(
        default=True,
        description="fold a version's segments into the local copy in the background (off: "
        "serve them as an overlay until the next full version; for tests and diagnosis)",
    )
    fold_min_rows: Annotated[int, Field(ge=0)] = Field(
        default=20_000,
        description="fold only once a version's segments hold this many records that no "
        "segment index holds (those are searched exhaustively; indexed ones at full speed)",
    )
    writer_url: str | None = Field(
        default=None,
        description="base URL of the writers' Service; writes sent to a reader are forwarded "
        "there (unset: refused with a clear error)",
    )
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    internal_port: Annotated[int | None, Field(ge=0, le=65535)] = Field(
        default=None,
        description="a second port that alone accepts writers' delta pushes (so a "
        "NetworkPolicy can admit only writers there); unset: pushes use the main port",
    )


def explain(err: ValidationError) -> str:
    """Turn a pydantic error into one line per problem, naming the env var to fix."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        env = ENV_PREFIX + field.upper()
        lines.append(f"{field} ({env}): {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


class PoolSettings(BaseSettings):
    """``chromasnap pool``: one process serving Chroma's whole API over a pool root."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    bucket_url: str = Field(
        description="s3://bucket/prefix or file:///path: the pool's root in the object store")
    s3_endpoint_url: str | None = Field(
        default=None, description="explicit S3 endpoint (MinIO); unset means AWS's default")
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    cache_dir: str = Field(default="/var/cache/chromasnap",
                           description="where loaded collections and compactions keep files")
    identity: str = Field(default_factory=default_identity)
    max_loaded: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=64, description="collections kept loaded; the least recently read is closed "
        "beyond it and loaded from the bucket again on its next read")
    max_loaded_bytes: Annotated[int, Field(ge=0)] = Field(
        default=0, description="bytes of loaded versions kept (the cache volume's budget); "
        "the least recently read collections are closed beyond it; 0: no byte budget")
    memory_budget_bytes: Annotated[int, Field(ge=0)] = Field(
        default=0, description="the process memory (RSS) loaded collections may fill, with "
        "everything else the process holds; the least recently read are closed beyond it "
        "(0: no memory budget). Set it below the container's memory limit")
    compaction_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        default=4, description="collections a compaction pass folds at once")
    compact_every_seconds: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=30.0, description="how often the collections written to are compacted")
    delta_grace_seconds: Annotated[float, Field(ge=0)] = Field(
        default=600.0, description="how long folded deltas, and a deleted collection's bytes, "
        "stay")
    retain_snapshots: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="versions each collection keeps, the current one included")
    recovery_window_seconds: Annotated[int, Field(ge=0, le=366 * 86400)] = Field(
        default=0, description="point-in-time recovery: each collection keeps every version "
        "and delta that restoring it to any time in this window needs (0: off)")
    flush_max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    flush_max_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 32 << 20
    flush_max_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    max_request_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = CHROMA_MAX_PAYLOAD_BYTES
    auth_token_file: str | None = Field(
        default=None, description="file(s) with accepted bearer tokens, one per line")
    status_resource: str | None = Field(
        default=None,
        description="<namespace>/<name> of the ChromaDatabase whose status gets the pool's "
        "totals after each compaction pass (needs the pod's service account token)")
    drain_seconds: Annotated[float, Field(ge=0, le=300)] = 0.0
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
