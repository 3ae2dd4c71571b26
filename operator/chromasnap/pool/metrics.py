"""Prometheus metrics of a pool process (its collections' roles add their own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

POOL_LOADED = Gauge("chromasnap_pool_loaded_collections", "Collections with a loaded reader")
POOL_LOADED_BYTES = Gauge("chromasnap_pool_loaded_bytes",
                          "Bytes of the versions the loaded readers hold")
POOL_WRITERS = Gauge("chromasnap_pool_writers", "Collections with a writer in this process")
POOL_LOADS = Counter("chromasnap_pool_loads_total", "Collections loaded on a read")
POOL_UNLOADS = Counter("chromasnap_pool_unloads_total",
                       "Loaded collections closed to stay within the budget")
POOL_COMPACTION_FAILURES = Gauge("chromasnap_pool_compaction_failing_collections",
                                 "Collections whose last compaction failed")
POOL_PENDING = Gauge("chromasnap_pool_pending_collections",
                     "Collections the last compaction pass left with pending deltas")
POOL_BATCHES = Counter("chromasnap_pool_batches_total",
                       "Write batches stored (one PUT each, whatever the collections in it)")
POOL_BATCH_DELTAS = Counter("chromasnap_pool_batch_deltas_total",
                            "Collection deltas stored in write batches")
