"""The knobs of one compaction run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chromasnap.compactor import policy
from chromasnap.compactor.bootstrap import Bootstrap
from chromasnap.engine import hnswindex


@dataclass(frozen=True)
class CompactorOptions:
    """Knobs of one run (mirrors CompactorSettings, without env parsing)."""

    identity: str
    cache_dir: Path
    retain_snapshots: int = 3
    delta_grace_seconds: float = 600.0
    max_deltas_per_run: int = 10_000
    policy: policy.MergePolicy = field(default_factory=policy.MergePolicy)
    recovery_window_seconds: float = 0.0  # keep what restoring to any time in it needs
    bootstrap: Bootstrap | None = None  # where version 1 comes from (else: empty)
    # A segment whose writes carry this many vectors gets an HNSW index (engine.hnswindex).
    segment_index_min_rows: int = hnswindex.MIN_ROWS
    #: Clean up after every n-th version when the run listed no delta (a pool's runs,
    #: fed by its write batches, list none): old versions then stay a few runs longer,
    #: and most runs save the clean-up's requests. A run that listed deltas always does.
    cleanup_every: int = 1
