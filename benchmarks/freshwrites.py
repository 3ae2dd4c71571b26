"""What the fresh-read guarantee costs writes: a write is acknowledged only once every
reader holding a freshness lease confirmed its delta (``writer/fanout.py``).

- ``write_p50`` / ``write_p99``: one client, single-record upserts, acknowledged,
  through the writer that the serving benchmarks' fresh readers hold leases
  from; peer: the same upserts into ``chroma run``. The same writes through a
  writer nobody holds a lease from (a bucket without readers) are in ``extra``:
  the difference is the guarantee's own cost; the rest is the group-commit
  window and the PUT to MinIO.
- ``writer_ingest_fresh_readers``: ``writer_ingest``'s workload through that
  leased writer (every delta pushed to and confirmed by each reader before the
  acknowledgement); peer: the better ``chroma run`` figure of ``writer_ingest``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dataplane import DIM, log, new_compactor
from benchmarks.report import Result
from benchmarks.servers import (
    INGEST_BATCH,
    INGEST_BATCHES_PER_CLIENT,
    INGEST_CLIENTS,
    collection,
    ingest,
    make_batches,
    peer_collection,
)
from chromasnap.storage.s3 import S3Store
from servers import ChromaRun, Proc, Stack

WRITES = 300
WARMUP = 20


def _latencies(col: Any, start: int) -> list[float]:
    rng = np.random.default_rng(start)
    out: list[float] = []
    for i in range(WARMUP + WRITES):
        vec = rng.standard_normal((1, DIM)).astype(np.float32)
        t0 = time.perf_counter()
        col.upsert(ids=[f"lat-{start + i}"], embeddings=vec, documents=[f"d{i}"],
                   metadatas=[{"i": i}])
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return out


def _ms(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q) * 1000)


def fresh_writes(stack: Stack, writer: Proc, readers: int, new_bucket_url: Any, endpoint: str,
                 peer: ChromaRun, peer_ingest_rate: float, work: Path) -> list[Result]:
    """The figures above; ``peer_ingest_rate`` is writer_ingest's peer figure."""
    leased = _latencies(collection(writer.port), 70_000_000)
    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    new_compactor(store, work / "lone-compactor").run()
    lone = stack.start("writer", CHROMASNAP_BUCKET_URL=store.url)
    stack.wait(lone, "/readyz")
    unleased = _latencies(collection(lone.port), 71_000_000)
    theirs = _latencies(peer_collection(peer, "write-latency")(), 72_000_000)
    n = INGEST_CLIENTS * INGEST_BATCHES_PER_CLIENT * INGEST_BATCH
    secs = ingest(lambda: collection(writer.port), make_batches(80_000_000, 11), INGEST_CLIENTS)
    rate = n / secs
    log(f"fresh writes: p50/p99 {_ms(leased, 50):.1f}/{_ms(leased, 99):.1f} ms with {readers} "
        f"leased readers, {_ms(unleased, 50):.1f}/{_ms(unleased, 99):.1f} ms without; chroma "
        f"run {_ms(theirs, 50):.1f}/{_ms(theirs, 99):.1f} ms; ingest {rate:.0f} records/s")
    extra = {f"{side}_{q}_ms": round(_ms(xs, q), 2) for side, xs in
             (("leased", leased), ("unleased", unleased), ("peer", theirs)) for q in (50, 99)}
    notes = (f"{WRITES} single-record upserts from one HttpClient to a writer whose {readers} "
             f"fresh readers hold leases (each delta confirmed by all before the ack; 50 ms "
             f"group-commit window); without leases (a writer no reader follows): "
             f"{extra['unleased_50_ms']:.1f}/{extra['unleased_99_ms']:.1f} ms p50/p99; "
             f"peer = the same upserts into chroma run")
    return [
        Result("write_p50", _ms(leased, 50), _ms(theirs, 50), "ms", "—", WRITES,
               higher_is_better=False, notes=notes, extra=extra),
        Result("write_p99", _ms(leased, 99), _ms(theirs, 99), "ms", "—", WRITES,
               higher_is_better=False, notes="same run as write_p50", extra=extra),
        Result("writer_ingest_fresh_readers", rate, peer_ingest_rate, "records/s", "≥ 3×", n,
               notes=f"writer_ingest's {n} records ({INGEST_CLIENTS} clients) through the "
               f"writer {readers} fresh readers hold leases from; peer = writer_ingest's"),
    ]
