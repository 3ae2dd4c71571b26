"""Per-collection metrics, derived from a ChromaCollection's status: pure functions.

The operator exports, for every collection it watches, gauges in the style of
kube-state-metrics (one series per fact, labelled ``namespace`` and
``collection``, computed at scrape time from the object the watch keeps in
memory), and counters of the compaction runs it has seen reported. Compactions
run as short-lived Jobs: their figures reach Prometheus this way without a
Pushgateway, because every run writes its result into the collection's status.

This module holds what those series are (names, help, labels) and how each is
computed from a collection (:func:`collection_samples`) and from one reported
run (:func:`run_of`); :mod:`chromasnap.operator.controller.metrics` keeps the
counters and serves them. docs/observability.md lists every series.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from chromasnap.operator.crd import CONDITION_READY, CONDITION_TYPES
from chromasnap.operator.schedule import validate_schedule
from chromasnap.resource import COMPACTION_RESULTS

#: Labels every per-collection series carries.
KEY_LABELS = ("namespace", "collection")
#: ``lastCompaction.reason`` of a run that found another compactor's Lease (the
#: design's "lock acquisition failure"), and of a run stopped by the conditional
#: pointer write (a fenced run).
REASON_LOCK_HELD = "LockHeld"
REASON_FENCED = "Fenced"
#: A skipped run with this reason still succeeded: there was nothing to fold.
REASON_NOTHING_TO_DO = "NothingToDo"
#: Bucket bounds (seconds) of the compaction duration histogram.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class Family:
    """One exported metric family."""

    name: str
    kind: str  # gauge | counter | histogram
    help: str
    labels: tuple[str, ...] = ()


def _g(name: str, help_: str, *labels: str) -> Family:
    return Family(f"chromasnap_collection_{name}", "gauge", help_, labels)


#: Gauges computed from each collection at scrape time, in exposition order.
GAUGES: tuple[Family, ...] = (
    _g("info", "Always 1: the collection's Chroma name and read level",
       "chroma_collection", "read_level", "uid"),
    _g("metadata_generation", "metadata.generation of the ChromaCollection"),
    _g("status_observed_generation", "status.observedGeneration: the generation the "
       "status describes"),
    _g("ready", "1 if the Ready condition is True"),
    _g("status_condition", "1 for the current status of each condition (true, false, "
       "unknown), else 0", "condition", "status"),
    _g("status_condition_reason", "Always 1: the current reason of each condition",
       "condition", "reason"),
    _g("pending_deltas", "Delta queue depth: deltas written but not yet folded into a "
       "snapshot, as the last compaction run counted them (status.pendingDeltas)"),
    _g("snapshot_info", "Always 1: the snapshot version the pointer names", "version"),
    _g("snapshot_seq", "Lineage depth (sequence) of the current snapshot version; compare "
       "with chromasnap_reader_snapshot_seq"),
    _g("snapshot_created_timestamp_seconds", "When the current snapshot was published"),
    _g("snapshot_age_seconds", "Seconds since the current snapshot was published"),
    _g("snapshot_records", "Records in the current snapshot"),
    _g("snapshot_bytes", "Snapshot size: bytes of the current snapshot version"),
    _g("snapshot_segments", "Segments on top of the current version's base"),
    _g("last_compaction_timestamp_seconds", "When the last reported compaction run ended"),
    _g("last_compaction_duration_seconds", "Compaction duration: how long the last "
       "reported run took"),
    _g("last_compaction_result", "1 for the result of the last reported run (Succeeded, "
       "Skipped, Failed), else 0", "result"),
    _g("last_compaction_reason", "Always 1: the reason of the last reported run "
       "(Compacted, NothingToDo, LockHeld, Fenced, StorageError, ...)", "reason"),
    _g("last_compaction_deltas_folded", "Deltas the last reported run folded"),
    _g("last_compaction_records_folded", "Writes the last reported run folded"),
    _g("last_successful_compaction_timestamp_seconds", "When a compaction last succeeded "
       "(published a snapshot, or found nothing to fold)"),
    _g("readers_desired", "spec.reader.replicas"),
    _g("readers_replicas", "status.readers.replicas: reader pods that exist"),
    _g("readers_ready", "status.readers.ready: readers with a verified snapshot loaded"),
    _g("writers_desired", "spec.writer.replicas"),
    _g("writers_replicas", "status.writers.replicas: writer pods that exist"),
    _g("writers_ready", "status.writers.ready: writer pods that are ready"),
    _g("compactor_suspended", "1 if scheduled compactions are suspended (spec.compactor.suspend)"),
    _g("compactor_schedule_interval_seconds", "Longest gap between two scheduled compactions "
       "of spec.compactor.schedule (one schedule period)"),
)

#: Counters and the histogram kept from the runs the operator saw reported.
COMPACTIONS = Family("chromasnap_collection_compactions", "counter",
                     "Compaction runs reported in the status since the operator started, "
                     "by result", ("result",))
LOCK_FAILURES = Family("chromasnap_collection_lock_acquisition_failures", "counter",
                       "Lock acquisition failures (Lease contention): runs that found the "
                       "Lease held by another compactor and skipped (reason LockHeld)")
FENCED = Family("chromasnap_collection_fenced_runs", "counter",
                "Fenced runs: runs whose pointer swap lost to a newer pointer and that "
                "discarded their work (reason Fenced)")
DURATION = Family("chromasnap_collection_compaction_duration_seconds", "histogram",
                  "Compaction duration of every run reported in the status since the "
                  "operator started")
COUNTERS = (COMPACTIONS, LOCK_FAILURES, FENCED, DURATION)

_TRUE_FALSE_UNKNOWN = (("true", "True"), ("false", "False"), ("unknown", "Unknown"))
_SEQ_RE = re.compile(r"^([0-9]+)-")


def parse_time(text: Any) -> float | None:
    """An RFC 3339 time from the status as a Unix timestamp (``None`` if absent or bad)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def version_seq(version: Any) -> int | None:
    """The sequence a snapshot version name starts with (``0000000007-1a2b3c4d`` -> 7)."""
    m = _SEQ_RE.match(version) if isinstance(version, str) else None
    return int(m.group(1)) if m else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Run:
    """One compaction run as it reported itself in ``status.lastCompaction``."""

    key: tuple[str, str, str, str]  # (time, identity, result, reason): tells runs apart
    time: float | None
    result: str
    reason: str
    duration: float | None

    @property
    def succeeded(self) -> bool:
        """A run that published a snapshot, or found nothing to fold."""
        return self.result == "Succeeded" or (
            self.result == "Skipped" and self.reason == REASON_NOTHING_TO_DO)


def run_of(status: Mapping[str, Any]) -> Run | None:
    """The last reported run, if the status has one."""
    last = status.get("lastCompaction")
    if not isinstance(last, Mapping) or not last.get("time"):
        return None
    result, reason = str(last.get("result") or ""), str(last.get("reason") or "")
    return Run(
        key=(str(last.get("time")), str(last.get("identity") or ""), result, reason),
        time=parse_time(last.get("time")),
        result=result,
        reason=reason,
        duration=_num(last.get("durationSeconds")),
    )


def last_success(status: Mapping[str, Any], remembered: float | None) -> float | None:
    """When a compaction last succeeded: the newest of what the operator remembers, the
    last run if it succeeded, and the current snapshot's publication (which a successful
    run did). After an operator restart following a failed run, the snapshot's time is
    the best the status knows."""
    run = run_of(status)
    snap = status.get("snapshot") if isinstance(status.get("snapshot"), Mapping) else {}
    times = [remembered, run.time if run and run.succeeded else None,
             parse_time((snap or {}).get("createdAt"))]
    known = [t for t in times if t is not None]
    return max(known) if known else None


Labels = dict[str, str]
Sample = tuple[Labels, float]


def collection_samples(body: Mapping[str, Any], now: float,
                       remembered_success: float | None = None) -> dict[str, list[Sample]]:
    """Every gauge of one collection: family name -> [(extra labels, value)].

    Only what the object says is exported: a field the status does not have yet (no
    snapshot, no run) gives no series rather than a made-up zero.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    out: dict[str, list[Sample]] = {f.name: [] for f in GAUGES}

    def put(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            out[f"chromasnap_collection_{name}"].append((labels, float(value)))

    coll = spec.get("collection") or {}
    reader, writer = spec.get("reader") or {}, spec.get("writer") or {}
    compactor = spec.get("compactor") or {}
    put("info", 1, chroma_collection=str(coll.get("name") or ""),
        read_level=str(reader.get("readLevel") or "fresh"), uid=str(meta.get("uid") or ""))
    put("metadata_generation", _num(meta.get("generation")))
    put("status_observed_generation", _num(status.get("observedGeneration")))

    conds = {str(c.get("type")): c for c in status.get("conditions") or []
             if isinstance(c, Mapping) and c.get("type")}
    ready = conds.get(CONDITION_READY)
    put("ready", 1 if ready and ready.get("status") == "True" else 0)
    for ctype in (*CONDITION_TYPES, *sorted(set(conds) - set(CONDITION_TYPES))):
        c = conds.get(ctype)
        if c is None:
            continue
        for label, value in _TRUE_FALSE_UNKNOWN:
            put("status_condition", 1 if c.get("status") == value else 0,
                condition=ctype, status=label)
        put("status_condition_reason", 1, condition=ctype, reason=str(c.get("reason") or ""))

    put("pending_deltas", _num(status.get("pendingDeltas")))
    snap = status.get("snapshot") if isinstance(status.get("snapshot"), Mapping) else {}
    if snap and snap.get("version"):
        put("snapshot_info", 1, version=str(snap["version"]))
        seq = version_seq(snap["version"])
        put("snapshot_seq", float(seq) if seq is not None else None)
        created = parse_time(snap.get("createdAt"))
        put("snapshot_created_timestamp_seconds", created)
        put("snapshot_age_seconds", max(0.0, now - created) if created is not None else None)
        put("snapshot_records", _num(snap.get("records")))
        put("snapshot_bytes", _num(snap.get("bytes")))
        put("snapshot_segments", _num(snap.get("segments")))

    run = run_of(status)
    if run is not None:
        last = status["lastCompaction"]
        put("last_compaction_timestamp_seconds", run.time)
        put("last_compaction_duration_seconds", run.duration)
        for result in COMPACTION_RESULTS:
            put("last_compaction_result", 1 if run.result == result else 0, result=result)
        put("last_compaction_reason", 1, reason=run.reason or "Unknown")
        put("last_compaction_deltas_folded", _num(last.get("deltasFolded")))
        put("last_compaction_records_folded", _num(last.get("recordsFolded")))
    put("last_successful_compaction_timestamp_seconds", last_success(status,
                                                                     remembered_success))

    readers, writers = status.get("readers") or {}, status.get("writers") or {}
    put("readers_desired", _num(reader.get("replicas")))
    put("readers_replicas", _num(readers.get("replicas")))
    put("readers_ready", _num(readers.get("ready")))
    put("writers_desired", _num(writer.get("replicas")))
    put("writers_replicas", _num(writers.get("replicas")))
    put("writers_ready", _num(writers.get("ready")))
    put("compactor_suspended", 1 if compactor.get("suspend") else 0)
    schedule = compactor.get("schedule")
    put("compactor_schedule_interval_seconds",
        schedule_interval_seconds(schedule) if isinstance(schedule, str) else None)
    return out


# --- the schedule's period ----------------------------------------------------------------

_MACROS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_NAMES = {**{m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                              "aug", "sep", "oct", "nov", "dec"))},
          **{d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
#: Two years from a leap year's start: every month length and weekday combination.
_WINDOW_START, _WINDOW_DAYS = date(2024, 1, 1), 731


def _cron_value(text: str) -> int:
    return int(text) if text.isdigit() else _NAMES[text.lower()]


def _expand(field: str, lo: int, hi: int) -> tuple[set[int], bool]:
    """The values a cron field matches, and whether it is a plain ``*`` (robfig/cron's
    star bit, which decides how day-of-month and day-of-week combine)."""
    values: set[int] = set()
    star = False
    for expr in field.split(","):
        rng, _, step_s = expr.partition("/")
        step = int(step_s) if step_s else 1
        if rng in ("*", "?"):
            start, end = lo, hi
            star = star or step == 1
        else:
            a, _, b = rng.partition("-")
            start = _cron_value(a)
            end = _cron_value(b) if b else (hi if step_s else start)
        values.update(range(start, end + 1, step))
    return values, star


@lru_cache(maxsize=256)
def schedule_interval_seconds(schedule: str) -> float | None:
    """The longest gap between two consecutive runs of a CronJob schedule (its period; for
    an irregular line like ``0 9,17 * * 1-5``, the longest gap, over the weekend).

    ``None`` for a line the CronJob controller would reject.
    """
    text = _MACROS.get(schedule.strip(), schedule.strip())
    try:
        validate_schedule(text)
    except ValueError:
        return None
    parts = text.split()
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = (
        _expand(f, lo, hi) for f, (lo, hi) in zip(parts, _BOUNDS, strict=True))
    times = sorted(h * 60 + m for h in hours for m in minutes)
    if not times:
        return None
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0)
    previous: int | None = None
    for day in _matching_days(doms, dom_star, months, dows, dow_star):
        if previous is not None:
            gap = max(gap, (day - previous) * 1440 + times[0] - times[-1])
        previous = day
    if previous is None:
        return None
    if gap == 0:  # one run a year: the window holds two
        return None
    return float(gap * 60)


def _matching_days(doms: set[int], dom_star: bool, months: set[int], dows: set[int],
                   dow_star: bool) -> Iterator[int]:
    for i in range(_WINDOW_DAYS):
        d = _WINDOW_START + timedelta(days=i)
        if d.month not in months:
            continue
        dom_ok, dow_ok = d.day in doms, (d.isoweekday() % 7) in dows
        if (dom_ok and dow_ok) if (dom_star or dow_star) else (dom_ok or dow_ok):
            yield i
