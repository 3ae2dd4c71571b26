"""Helpers for data-plane integration tests: write deltas, run compactors, read snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import Lock, NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.policy import MergePolicy
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import persistence, reads
from chromasnap.engine.merge import Record
from chromasnap.engine.ops import Op
from chromasnap.storage import deltas, pointer, segments, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import ObjectStore
from modelgen import Delta

SETTINGS = CollectionSettings(name="docs", dimension=4, space=Space.L2)


def put_delta(store: ObjectStore, d: Delta, dimension: int = 4) -> str:
    """Store a delta exactly as a writer would (one conditional PUT)."""
    store.put_if_absent(deltas.DELTA_PREFIX + d.name, deltas.encode(d.ops, dimension, d.writer))
    return d.name


def compactor(
    store: ObjectStore,
    cache: Path,
    lock: Lock | None = None,
    settings: CollectionSettings = SETTINGS,
    grace: float = 3600.0,
    retain: int = 3,
    identity: str = "test-compactor",
    policy: MergePolicy | None = None,
    index_min_rows: int | None = None,
) -> Compactor:
    """An in-process compactor on ``store`` (``FULL``: every run writes a full version)."""
    return Compactor(
        store,
        settings,
        lock or NoLock(),
        CompactorOptions(
            identity=identity, cache_dir=cache, delta_grace_seconds=grace, retain_snapshots=retain,
            policy=policy or MergePolicy(),
            **({} if index_min_rows is None else {"segment_index_min_rows": index_min_rows}),
        ),
    )


FULL = MergePolicy(full_merge_ratio=0.0)
#: Every run writes a segment (merging tiers of 3), never a full version after the first.
SEGMENTS = MergePolicy(segments_per_tier=3, full_merge_ratio=1e9, shadowed_ratio=1e9,
                       floor_ops=1, max_segments=1000)


def current_records(store: ObjectStore, tmp: Path) -> tuple[mf.Manifest, dict[str, Record]]:
    """Download and verify the current version (base and segments); read every record."""
    cur = pointer.read(store).pointer
    assert cur is not None, "no pointer"
    man = snapshots.load_manifest(store, cur.manifest)
    dest = segments.materialize(store, man, tmp / f"check-{man.version}")
    with persistence.open_collection(
        dest / mf.DB_DIR, man.collection.settings.name, flush_on_exit=False
    ) as (_, col):
        raw = reads.read_all(col)
    return man, {
        rid: Record(rid, r.embedding, r.document, r.metadata or None, r.uri)
        for rid, r in raw.items()
    }


def compactor_env(
    store_url: str, endpoint: str | None, cache: Path, **extra: str
) -> dict[str, str]:
    """Environment for a ``chromasnap compactor`` subprocess (what a pod would get)."""
    env = dict(os.environ)
    env.update(
        {
            "CHROMASNAP_BUCKET_URL": store_url,
            "CHROMASNAP_COLLECTION": SETTINGS.name,
            "CHROMASNAP_DIMENSION": str(SETTINGS.dimension),
            "CHROMASNAP_SPACE": SETTINGS.space.value,
            "CHROMASNAP_CACHE_DIR": str(cache),
            "CHROMASNAP_LOCK": "local",
            "CHROMASNAP_DELTA_GRACE_SECONDS": "0",
            "CHROMASNAP_IDENTITY": "subprocess-compactor",
        }
    )
    if endpoint:
        env["CHROMASNAP_S3_ENDPOINT_URL"] = endpoint
    env.update(extra)
    return env


def run_compactor_process(
    env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m chromasnap compactor`` once and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "chromasnap", "compactor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def all_ops(history: list[Delta]) -> list[Op]:
    """Every op of a history."""
    return [op for d in history for op in d.ops]
