"""A pool pass's status: totals, and only the collections that need attention."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chromasnap.compactor.result import CompactionResult
from chromasnap.pool import passreport

AT = datetime(2026, 12, 7, tzinfo=UTC)


def test_totals_and_only_what_needs_attention() -> None:
    results = {f"c{i:05d}": CompactionResult(result="succeeded") for i in range(5000)}
    results["c00007"] = CompactionResult(result="failed", reason="StorageError", message="quota")
    results["c00009"] = CompactionResult(result="succeeded", pending_deltas=40)
    failures = {f"f{i:05d}": "InternalError: boom" for i in range(300)}
    failures["c00007"] = "StorageError: quota"
    status = passreport.summary(results, failures, 12.3456, AT)
    assert status["collections"] == 5000
    assert status["outcomes"] == {"failed": 1, "succeeded": 4999}
    assert status["failingCollections"] == 301
    assert len(status["failing"]) == passreport.MAX_LISTED
    assert {"id": "c00007", "reason": "StorageError: quota"} in status["failing"]
    assert status["mostPending"] == [{"id": "c00009", "pendingDeltas": 40}]
    assert len(passreport.encode(status)) < 20_000  # small whatever the pool's size
    assert json.loads(passreport.encode(status))["seconds"] == 12.346


def test_a_compact_now_value_is_asked_for_once() -> None:
    from chromasnap.resource import COMPACT_NOW_ANNOTATION

    def db(value: str | None, answered: str | None) -> dict[str, object]:
        return {"metadata": {"annotations": {COMPACT_NOW_ANNOTATION: value} if value else {}},
                "status": {"lastPass": {"request": answered}} if answered else {}}

    assert passreport.pass_requested(db(None, None), None) is None
    assert passreport.pass_requested(db("r1", None), None) == "r1"
    assert passreport.pass_requested(db("r1", None), "r1") is None  # asked for already here
    assert passreport.pass_requested(db("r1", "r1"), None) is None  # a pass answered it
    assert passreport.pass_requested(db("r2", "r1"), "r1") == "r2"
    summary = passreport.summary({}, {}, 0.1, datetime(2026, 12, 1, tzinfo=UTC), "r2")
    patch = passreport.database_status(summary, 1, 1, 0, identity="pod-1")
    assert patch["status"]["lastPass"]["request"] == "r2"
    assert "request" not in passreport.database_status(
        passreport.summary({}, {}, 0.1, datetime(2026, 12, 1, tzinfo=UTC)), 1, 1, 0,
        identity="pod-1")["status"]["lastPass"]
