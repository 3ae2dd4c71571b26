"""Wiring: turn validated settings into running workloads (the effectful shell of the CLI)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from chromasnap.compactor import CompactionResult, Compactor, CompactorOptions
from chromasnap.config import CompactorSettings, LockKind
from chromasnap.lock import LocalLock, Lock, NoLock
from chromasnap.logs import fields
from chromasnap.store import open_store

log = logging.getLogger("chromasnap.runtime")


def make_lock(s: CompactorSettings) -> Lock:
    """The lock the settings ask for."""
    if s.lock == LockKind.NONE:
        return NoLock()
    if s.lock == LockKind.KUBERNETES:
        from chromasnap.kubelease import LeaseLock

        if not s.lease_name or not s.lease_namespace:
            raise SystemExit(
                "chromasnap compactor: lock=kubernetes needs CHROMASNAP_LEASE_NAME and "
                "CHROMASNAP_LEASE_NAMESPACE"
            )
        return LeaseLock(s.lease_namespace, s.lease_name, s.identity, s.lease_duration_seconds)
    if s.bucket_url.startswith("file://"):
        # Every local process sharing the bucket directory shares this lock.
        path = Path(s.bucket_url[len("file://"):]) / ".locks" / "compactor.lock"
    else:
        path = Path(s.cache_dir) / "compactor.lock"
    return LocalLock(path, s.identity)


def make_compactor(s: CompactorSettings) -> Compactor:
    """A compactor for the settings' collection root."""
    return Compactor(
        open_store(s.bucket_url, s.s3_endpoint_url),
        s.collection_settings(),
        make_lock(s),
        CompactorOptions(
            identity=s.identity,
            cache_dir=Path(s.cache_dir),
            retain_snapshots=s.retain_snapshots,
            delta_grace_seconds=s.delta_grace_seconds,
            max_deltas_per_run=s.max_deltas_per_run,
        ),
    )


def report(s: CompactorSettings, res: CompactionResult) -> None:
    """Send the result where the settings say: result file, Pushgateway, resource status."""
    doc = json.dumps(res.to_dict())
    if s.result_file:
        try:
            Path(s.result_file).write_text(doc)
        except OSError as e:
            log.warning("could not write result file", extra=fields(path=s.result_file,
                                                                    error=str(e)))
    if s.pushgateway_url:
        reg = CollectorRegistry()
        for name, value, help_ in (
            ("chromasnap_compaction_success", 1.0 if res.result != "failed" else 0.0,
             "1 if the last compaction did not fail"),
            ("chromasnap_compaction_duration_seconds", res.duration_seconds, "run duration"),
            ("chromasnap_compaction_deltas_folded", res.deltas_folded, "deltas folded"),
            ("chromasnap_compaction_records_folded", res.records_folded, "writes folded"),
            ("chromasnap_compaction_pending_deltas", res.pending_deltas, "deltas left"),
            ("chromasnap_compaction_last_run_timestamp_seconds", res.started_at, "start time"),
        ):
            Gauge(name, help_, registry=reg).set(value)
        try:
            push_to_gateway(s.pushgateway_url, job=f"chromasnap-{s.collection}", registry=reg)
        except OSError as e:
            log.warning("pushgateway push failed", extra=fields(error=str(e)))
    if s.status_resource:
        from chromasnap.statusreport import patch_compaction_status

        patch_compaction_status(s.status_resource, res)


def run_compactor(s: CompactorSettings, loop_interval: float | None = None) -> int:
    """Run once (CronJob) or every ``loop_interval`` seconds; exit 1 if the last run failed."""
    compactor = make_compactor(s)
    stop = threading.Event()
    while True:
        res = compactor.run()
        report(s, res)
        if loop_interval is None:
            return 1 if res.result == "failed" else 0
        if stop.wait(loop_interval):
            return 0
