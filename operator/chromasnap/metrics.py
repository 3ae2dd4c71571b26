"""Prometheus metrics of the data plane (the HTTP layer adds its request metrics).

Defined once here so every process registers each name exactly once.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WRITER_RECORDS = Counter(
    "chromasnap_writer_records_total", "Records acknowledged durable, by operation", ["op"]
)
WRITER_REJECTED = Counter(
    "chromasnap_writer_rejected_requests_total", "Write requests rejected by validation"
)
WRITER_DELTAS = Counter("chromasnap_writer_deltas_total", "Deltas uploaded")
WRITER_DELTA_BYTES = Counter("chromasnap_writer_delta_bytes_total", "Bytes of deltas uploaded")
WRITER_FLUSH_ERRORS = Counter(
    "chromasnap_writer_flush_errors_total", "Delta uploads that failed (writes not acknowledged)"
)
WRITER_FLUSH_SECONDS = Histogram(
    "chromasnap_writer_flush_seconds",
    "Time from a delta's first write to its durable upload",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

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
