"""Prometheus metrics of a reader (the HTTP layer adds its request metrics).

Defined in the reader's own package so that only reader processes register
and export them (a writer exporting ``chromasnap_reader_snapshot_seq 0`` would
look like a reader far behind the pointer).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READER_SNAPSHOT_VERSION_SEQ = Gauge(
    "chromasnap_reader_snapshot_seq", "Lineage depth (sequence) of the loaded snapshot"
)
READER_SNAPSHOT_CREATED = Gauge(
    "chromasnap_reader_snapshot_created_timestamp_seconds", "Creation time of the loaded snapshot"
)
READER_SWAPS = Counter("chromasnap_reader_swaps_total", "Snapshots swapped in")
READER_SWAP_SECONDS = Histogram(
    "chromasnap_reader_swap_seconds",
    "Time from seeing a new pointer to serving its snapshot",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
READER_REJECTED_SNAPSHOTS = Counter(
    "chromasnap_reader_rejected_snapshots_total", "Snapshots that failed verification"
)
READER_TAIL_DELTAS = Gauge("chromasnap_reader_tail_deltas", "Deltas merged on top of the snapshot")
READER_TAIL_RECORDS = Gauge(
    "chromasnap_reader_tail_records", "Writes merged on top of the snapshot"
)
READER_ERRORS = Counter("chromasnap_reader_errors_total", "Reader background errors", ["kind"])
READER_REFRESH_FAILING = Gauge(
    "chromasnap_reader_refresh_failing",
    "1 while the reader's pointer/tail polls keep failing (it serves an older snapshot)",
)
READER_LAST_REFRESH = Gauge(
    "chromasnap_reader_last_refresh_timestamp_seconds",
    "When the reader last checked the pointer (and tail) successfully",
)
READER_SEGMENTS_PENDING = Gauge(
    "chromasnap_reader_segments_pending",
    "Segments of the served version waiting to be folded into the local copy (0 once folded, "
    "or when their overlay needs no fold: segment indexes hold its records, or it is small)",
)
READER_FOLD_SECONDS = Histogram(
    "chromasnap_reader_fold_seconds",
    "Folding a version's segments into a new local copy",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
READER_FRESH_FAST = Gauge(
    "chromasnap_reader_fresh_from_memory",
    "1 while fresh reads are answered from memory (leases from every registered writer); "
    "0: each fresh read waits for a LIST of the deltas first",
)
READER_FRESH_SLOW_READS = Counter(
    "chromasnap_reader_fresh_listed_reads_total",
    "Fresh reads that waited for a LIST of the deltas (no lease from some writer)",
)
