"""Prometheus metrics of a writer (the HTTP layer adds its request metrics).

Defined in the writer's own package so that only writer processes register
and export them (a reader exporting writer series stuck at 0 would confuse
alerts).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
