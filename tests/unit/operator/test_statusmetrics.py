"""Unit tests of the operator's per-collection metrics: what each series says about a
collection's status (:mod:`chromasnap.operator.statusmetrics`), how reported compaction
runs are counted and exported (:mod:`chromasnap.operator.controller.metrics`).

The statuses are made by the compactor's own status patch (``compaction_patch``), so
the series follow what a run really reports.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from opsupport import NS, UID, body
from prometheus_client.parser import text_string_to_metric_families

from chromasnap.compactor.result import CompactionResult
from chromasnap.compactor.statusreport import compaction_patch
from chromasnap.operator.controller.metrics import (
    CollectionCollector,
    MetricsServer,
    MetricsSettings,
    RunCounters,
    registry_for,
)
from chromasnap.operator.statusmetrics import (
    GAUGES,
    collection_samples,
    last_success,
    parse_time,
    run_of,
    schedule_interval_seconds,
    version_seq,
)

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC).timestamp()


def reported(status: dict[str, Any], now: float, **result: Any) -> dict[str, Any]:
    """``status`` after a compaction run reported ``result`` at ``now``."""
    res = CompactionResult(**result)
    out = copy.deepcopy(status)
    for k, v in compaction_patch(res, status, identity=f"pod-{now:.0f}", now=now)[
            "status"].items():
        out[k] = v
    return out


def collection(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    b = body(**spec)
    b["status"] = status
    return b


PUBLISHED = reported({}, T0, result="succeeded", reason="Compacted", version="0000000007-1a2b3c4d",
                     record_count=40, snapshot_bytes=123456, deltas_folded=3, records_folded=40,
                     pending_deltas=2, duration_seconds=12.5,
                     steps={"list_deltas": 0.1})
READY = {
    "observedGeneration": 3,
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "AllComponentsReady"},
        {"type": "WritersReady", "status": "True", "reason": "AllReplicasReady"},
        {"type": "ReadersReady", "status": "False", "reason": "ReplicasNotReady"},
        {"type": "CompactorHealthy", "status": "True", "reason": "Compacted"},
        {"type": "SnapshotAvailable", "status": "True", "reason": "SnapshotPublished"},
    ],
    "readers": {"replicas": 3, "ready": 1, "selector": "x"},
    "writers": {"replicas": 2, "ready": 2},
}


def values(samples: dict[str, list[tuple[dict[str, str], float]]], name: str
           ) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels.items())): v
            for labels, v in samples[f"chromasnap_collection_{name}"]}


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    got = values(samples, name)
    assert list(got) == [()], (name, got)
    return got[()]


# --- gauges from the status ---------------------------------------------------------------


def test_a_compacted_ready_collection() -> None:
    b = collection(READY | PUBLISHED, reader={"replicas": 3, "readLevel": "snapshot"},
                   writer={"replicas": 2}, compactor={"schedule": "*/5 * * * *"})
    s = collection_samples(b, now=T0 + 100)
    assert values(s, "info") == {(("chroma_collection", "docs"), ("read_level", "snapshot"),
                                  ("uid", UID)): 1.0}
    assert one(s, "metadata_generation") == 3 and one(s, "status_observed_generation") == 3
    assert one(s, "ready") == 1
    cond = values(s, "status_condition")
    assert cond[(("condition", "ReadersReady"), ("status", "false"))] == 1
    assert cond[(("condition", "ReadersReady"), ("status", "true"))] == 0
    assert cond[(("condition", "ReadersReady"), ("status", "unknown"))] == 0
    assert len(cond) == 15  # five conditions, three statuses each
    assert values(s, "status_condition_reason")[
        (("condition", "CompactorHealthy"), ("reason", "Compacted"))] == 1
    # the four the design names: delta queue depth, snapshot size, compaction duration
    # (and lock acquisition failures, a counter: see below)
    assert one(s, "pending_deltas") == 2
    assert one(s, "snapshot_bytes") == 123456
    assert one(s, "last_compaction_duration_seconds") == 12.5
    assert one(s, "snapshot_records") == 40
    assert one(s, "snapshot_seq") == 7
    assert values(s, "snapshot_info") == {(("version", "0000000007-1a2b3c4d"),): 1}
    assert one(s, "snapshot_created_timestamp_seconds") == T0
    assert one(s, "snapshot_age_seconds") == 100
    assert one(s, "last_compaction_timestamp_seconds") == T0
    assert values(s, "last_compaction_result") == {
        (("result", "Succeeded"),): 1, (("result", "Skipped"),): 0, (("result", "Failed"),): 0}
    assert values(s, "last_compaction_reason") == {(("reason", "Compacted"),): 1}
    assert one(s, "last_compaction_deltas_folded") == 3
    assert one(s, "last_compaction_records_folded") == 40
    assert one(s, "last_successful_compaction_timestamp_seconds") == T0
    assert (one(s, "readers_desired"), one(s, "readers_replicas"), one(s, "readers_ready")) == (
        3, 3, 1)
    assert (one(s, "writers_desired"), one(s, "writers_replicas"), one(s, "writers_ready")) == (
        2, 2, 2)
    assert one(s, "compactor_suspended") == 0
    assert one(s, "compactor_schedule_interval_seconds") == 300


def test_a_new_collection_exports_only_what_it_knows() -> None:
    s = collection_samples(collection({}, compactor={"suspend": True}), now=T0)
    assert one(s, "ready") == 0
    assert one(s, "compactor_suspended") == 1
    for name in ("pending_deltas", "snapshot_seq", "snapshot_bytes", "snapshot_age_seconds",
                 "last_compaction_timestamp_seconds", "last_compaction_result",
                 "last_successful_compaction_timestamp_seconds", "status_condition",
                 "readers_ready", "compactor_schedule_interval_seconds"):
        assert values(s, name) == {}, name
    assert set(s) == {f.name for f in GAUGES}


def test_failed_and_skipped_runs() -> None:
    failed = reported(PUBLISHED, T0 + 600, result="failed", reason="StorageError",
                      message="S3 said 503", duration_seconds=2.0)
    s = collection_samples(collection(failed), now=T0 + 700)
    assert values(s, "last_compaction_result")[(("result", "Failed"),)] == 1
    assert values(s, "last_compaction_reason") == {(("reason", "StorageError"),): 1}
    # the last success is the snapshot's publication, as the status still says
    assert one(s, "last_successful_compaction_timestamp_seconds") == T0
    assert one(s, "last_successful_compaction_timestamp_seconds") == last_success(failed, None)
    # ... or a later one the operator saw (a NothingToDo run publishes nothing)
    s = collection_samples(collection(failed), now=T0 + 700, remembered_success=T0 + 300)
    assert one(s, "last_successful_compaction_timestamp_seconds") == T0 + 300
    idle = reported(PUBLISHED, T0 + 900, result="skipped", reason="NothingToDo",
                    version="0000000007-1a2b3c4d", record_count=40, snapshot_bytes=123456,
                    steps={"list_deltas": 0.1})
    run = run_of(idle)
    assert run is not None and run.succeeded and run.time == T0 + 900
    held = reported(PUBLISHED, T0 + 900, result="skipped", reason="LockHeld")
    run = run_of(held)
    assert run is not None and not run.succeeded


def test_parsers() -> None:
    assert version_seq("0000000007-1a2b3c4d") == 7
    assert version_seq("garbage") is None and version_seq(None) is None
    assert parse_time("2026-01-02T03:00:00Z") == T0
    assert parse_time("2026-01-02T03:00:00") == T0  # no zone: UTC
    assert parse_time("yesterday") is None and parse_time(None) is None


@pytest.mark.parametrize(("schedule", "seconds"), [
    ("*/5 * * * *", 300),
    ("* * * * *", 60),
    ("@hourly", 3600),
    ("@daily", 86400),
    ("30 */6 * * *", 6 * 3600),
    ("0 9,17 * * 1-5", 64 * 3600),  # Friday 17:00 to Monday 09:00
    ("0 9 * * MON-FRI", 3 * 86400),
    ("0 0 1,15 * mon", 7 * 86400),  # day of month OR day of week when both are set
    ("0 0 1 * *", 31 * 86400),
    ("0 3 1 1 *", 366 * 86400),  # 2024 is a leap year
    ("0 0 29 2 *", None),  # once in the two years looked at
    ("61 * * * *", None),
    ("not a schedule", None),
])
def test_schedule_interval(schedule: str, seconds: float | None) -> None:
    assert schedule_interval_seconds(schedule) == seconds


# --- counters of reported runs -------------------------------------------------------------


def test_runs_are_counted_once_from_the_second_version_seen() -> None:
    c = RunCounters()
    c.observe(collection(PUBLISHED))  # already there when the operator started: baseline
    h = c.by_uid[UID]
    assert h.results == {"Succeeded": 0, "Skipped": 0, "Failed": 0}
    assert h.last_success == T0
    status = PUBLISHED
    for i, (result, reason) in enumerate([("skipped", "LockHeld"), ("skipped", "LockHeld"),
                                          ("skipped", "Fenced"), ("failed", "LockLost"),
                                          ("succeeded", "Compacted")], start=1):
        status = reported(status, T0 + 60 * i, result=result, reason=reason,
                          duration_seconds=30.0 * i)
        c.observe(collection(status))
        c.observe(collection(status | {"observedGeneration": 4}))  # the operator's own patch
    assert h.results == {"Succeeded": 1, "Skipped": 3, "Failed": 1}
    assert (h.lock_failures, h.fenced) == (2, 1)
    assert h.duration_sum == 30 + 60 + 90 + 120 + 150
    assert h.last_success == T0 + 300
    c.retain([UID])
    assert UID in c.by_uid
    c.retain([])
    assert c.by_uid == {}
    c.observe(collection({}))
    c.forget(UID)
    assert c.by_uid == {}


def exposition(collections: list[dict[str, Any]], counters: RunCounters, now: float) -> str:
    from prometheus_client import generate_latest

    reg = registry_for(CollectionCollector(lambda: collections, counters, clock=lambda: now))
    return generate_latest(reg).decode()


def test_exposition_in_kube_state_metrics_style() -> None:
    counters = RunCounters()
    first = collection(READY | PUBLISHED, compactor={"schedule": "@hourly"})
    exposition([first], counters, T0)
    later = copy.deepcopy(first)
    later["status"] = reported(first["status"], T0 + 60, result="skipped", reason="LockHeld",
                               duration_seconds=0.5)
    other = collection({})
    other["metadata"] |= {"name": "logs", "uid": "other-uid"}
    text = exposition([later, other], counters, T0 + 120)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    key = {"namespace": NS, "collection": "docs"}

    def sample(name: str, **labels: str) -> float:
        fam_name = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
        hits = [s.value for s in fams[fam_name].samples
                if s.name == name and s.labels == key | labels]
        assert len(hits) == 1, (name, labels, fams[fam_name].samples)
        return float(hits[0])

    assert fams["chromasnap_collection_lock_acquisition_failures"].type == "counter"
    assert sample("chromasnap_collection_lock_acquisition_failures_total") == 1
    assert sample("chromasnap_collection_fenced_runs_total") == 0
    assert sample("chromasnap_collection_compactions_total", result="Skipped") == 1
    assert sample("chromasnap_collection_compactions_total", result="Failed") == 0
    assert sample("chromasnap_collection_compaction_duration_seconds_bucket", le="1.0") == 1
    assert sample("chromasnap_collection_compaction_duration_seconds_count") == 1
    assert sample("chromasnap_collection_pending_deltas") == 2
    assert sample("chromasnap_collection_snapshot_age_seconds") == 120
    assert sample("chromasnap_collection_last_compaction_result", result="Skipped") == 1
    assert sample("chromasnap_collection_compactor_schedule_interval_seconds") == 3600
    # the new collection: counters from zero, so increase() sees its first run
    assert [s.value for s in fams["chromasnap_collection_lock_acquisition_failures"].samples
            if s.labels["collection"] == "logs"] == [0]
    assert [s.value for s in fams["chromasnap_operator_collections"].samples] == [2]
    assert "process_resident_memory_bytes" in text
    # every per-collection series carries namespace and collection
    for fam in fams.values():
        if fam.name.startswith("chromasnap_collection_"):
            assert all({"namespace", "collection"} <= set(s.labels) for s in fam.samples)
    # a deleted collection's series go with it
    text = exposition([other], counters, T0 + 180)
    assert ',collection="docs"' not in text and '{collection="docs"' not in text


# --- the server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_serves_metrics_and_survives_a_taken_port(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    port = _free_port()
    reg = registry_for(CollectionCollector(lambda: [collection(PUBLISHED)], RunCounters()))

    async def scenario() -> tuple[str, bool, bool]:
        server = MetricsServer(reg, MetricsSettings(host="127.0.0.1", port=port))
        assert await server.start()
        try:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
            clash = MetricsServer(reg, MetricsSettings(host="127.0.0.1", port=port))
            second = await clash.start()
            off = await MetricsServer(reg, MetricsSettings(port=0)).start()
        finally:
            await server.stop()
        return text, second, off

    text, second, off = asyncio.run(scenario())
    assert 'chromasnap_collection_snapshot_bytes{collection="docs",namespace="team-a"}' in text
    assert not second and not off
    assert "cannot serve operator metrics" in caplog.text


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMASNAP_OPERATOR_METRICS_PORT", "9100")
    monkeypatch.setenv("CHROMASNAP_OPERATOR_METRICS_HOST", "127.0.0.1")
    assert MetricsSettings().port == 9100 and MetricsSettings().host == "127.0.0.1"
    assert MetricsSettings.model_fields["port"].default == 8081
