"""What one compaction run did: machine-readable, and what the operator puts in status."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CompactionResult:
    """What one run did: machine-readable, and what the operator puts in status."""

    result: str = "failed"  # succeeded | skipped | failed
    reason: str = "Unknown"  # CamelCase, as in Kubernetes conditions
    message: str = ""
    version: str | None = None
    base_version: str | None = None
    deltas_folded: int = 0
    records_folded: int = 0
    superseded_ops: int = 0
    pending_deltas: int = 0
    corrupt_deltas: list[str] = field(default_factory=list)
    record_count: int | None = None
    snapshot_bytes: int | None = None
    snapshot_created_at: str | None = None
    lock_contended: bool = False
    kind: str | None = None  # full | segment: what the run wrote
    segments: int | None = None  # segments of the version it published
    segments_merged: int = 0  # existing segments the new one absorbed
    base_rebuilt: bool = False  # a full run that rebuilt the base from its live records
    deltas_deleted: int = 0
    snapshots_deleted: int = 0
    segments_deleted: int = 0
    steps: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)
