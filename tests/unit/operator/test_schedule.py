"""Unit tests of :mod:`chromasnap.operator.schedule`: cron lines as Kubernetes reads
them, and deterministic run ids for on-demand compactions.
"""

from __future__ import annotations

import re

import pytest
from opsupport import UID

from chromasnap.operator import schedule
from chromasnap.operator.crd import ChromaCollection
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs import jobs

# --- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "*/5 * * * *", "0 3 * * *", "0 3 * * MON-FRI", "0 0 1,15 * *", "5/10 * * * *",
    "0 0 * * ?", "0 12 * JAN,jul sun", "59 23 31 12 6", "@hourly", "@daily", " */1 * * * * ",
])
def test_schedules_kubernetes_accepts(line: str) -> None:
    schedule.validate_schedule(line)


@pytest.mark.parametrize(("line", "message"), [
    ("61 * * * *", "minute field: '61' is out of range 0-59"),
    ("* 24 * * *", "hour field: '24' is out of range 0-23"),
    ("* * 0 * *", "day of month field: '0' is out of range 1-31"),
    ("0 0 1 13 *", "month field: '13' is out of range 1-12"),
    ("0 0 * * 7", "day of week field: '7' is out of range 0-6"),
    ("*/0 * * * *", "step in '*/0' must be a positive number"),
    ("5-1 * * * *", "'5-1' starts after it ends"),
    ("1-2-3 * * * *", "more than one '-'"),
    ("*/2/3 * * * *", "more than one '/'"),
    ("0 0 * * FUNDAY", "'FUNDAY' is not a number or a name"),
    ("1,,2 * * * *", "empty list item"),
    ("* * * *", "has 4 fields"),
    ("@every 5m", "not a supported macro"),
    ("CRON_TZ=UTC 0 * * * *", "time zones"),
])
def test_schedules_kubernetes_refuses(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        schedule.validate_schedule(line)


# --- on-demand runs ---------------------------------------------------------------------


def test_run_ids_are_deterministic_per_request(cc: ChromaCollection,
                                               settings: OperatorSettings) -> None:
    a = schedule.compaction_run_id(UID, "2026-01-01T00:00:00Z")
    assert a == schedule.compaction_run_id(UID, "2026-01-01T00:00:00Z")
    assert a != schedule.compaction_run_id(UID, "2026-01-01T00:00:01Z")
    assert a != schedule.compaction_run_id("another-uid", "2026-01-01T00:00:00Z")
    assert re.fullmatch(r"[a-z0-9]{10}", a)
    job = jobs.compaction_job(cc, settings, a)
    assert job["metadata"]["name"] == f"docs-compactor-{a}"
    assert len(job["metadata"]["name"]) <= 63
