"""Fresh-tail query cost by tail size (issue #16): real chromadb, a reader's own read path.

A full version of ``--base`` records (384 dims, cosine) is compacted into a
local-directory bucket; then tails of 1k / 5k / 10k writes (80% new ids, 10%
updates, 10% deletes, in 1k-write deltas, as a writer's group commit makes
them; ``--new-share 1`` for new ids only) are put on top, and the reader's
``_query`` (the code an HTTP query runs, without the HTTP layer) is timed:
p50 of single queries with ``n_results=10``, without a filter and with a
``where`` filter, and the first query after one more delta arrives (what
rebuilding the overlay costs a read). Run:
``PYTHONPATH=operator:tests python -m benchmarks.freshtail``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from chromasnap.api.models import QueryRequest
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.reader.replica import open_replica
from chromasnap.storage import deltas
from chromasnap.storage.store import ObjectStore, open_store

DIM = 384
SETTINGS = CollectionSettings(name="fresh", dimension=DIM, space=Space.COSINE)
DELTA = 1_000


def _ops(rng: np.random.Generator, start: int, n: int, base: int, t0: int,
         writer: str, new_share: float = 0.8) -> list[Op]:
    """``n`` writes: ``new_share`` new ids, the rest half updates, half deletes of base
    records (which the snapshot must over-fetch for)."""
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    out = []
    for i in range(n):
        key = OpKey(t0 + start + i, writer, start + i)
        r = rng.random()
        if r < new_share:
            rid = f"t{start + i}"
            out.append(Op(OpKind.UPSERT, rid, key, emb[i], f"doc {rid}",
                          {"group": (start + i) % 10}))
        elif r < (1 + new_share) / 2:
            rid = f"b{int(rng.integers(base))}"
            out.append(Op(OpKind.UPDATE, rid, key, emb[i], None, {"group": i % 10}))
        else:
            out.append(Op(OpKind.DELETE, f"b{int(rng.integers(base))}", key))
    return out


def _put(store: ObjectStore, ops: list[Op], ts: int, writer: str) -> None:
    store.put(deltas.DeltaName(ts, writer).key, deltas.encode(ops, DIM, writer))


def _p50(f: object, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    """Print one line per tail size: query p50 (ms) without and with a filter."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=30_000)
    ap.add_argument("--tails", default="0,1000,5000,10000")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--new-share", type=float, default=0.8,
                    help="share of tail writes that create new ids (1.0: no over-fetch)")
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    work = Path(tempfile.mkdtemp(prefix="freshtail-"))
    store = open_store(f"file://{work / 'bucket'}")
    t0 = time.time_ns() // 1000 - 10_000_000
    emb = rng.standard_normal((a.base, DIM)).astype(np.float32)
    for off in range(0, a.base, 10_000):
        ops = [Op(OpKind.UPSERT, f"b{i}", OpKey(t0 + i, "base", i), emb[i], f"doc b{i}",
                  {"group": i % 10}) for i in range(off, min(a.base, off + 10_000))]
        _put(store, ops, t0 + off, "base")
    Compactor(store, SETTINGS, NoLock(), CompactorOptions(
        identity="bench", cache_dir=work / "cc", delta_grace_seconds=0)).run()
    replica = open_replica(store, work / "reader", DIM, fresh=True)
    replica.reader.refresh()
    assert replica.tail is not None
    queries = rng.standard_normal((a.queries, DIM)).astype(np.float32)
    t1 = t0 + 1_000_000
    written = 0
    it = iter(range(10**9))  # cycles through the queries across every measurement
    for size in (int(s) for s in a.tails.split(",")):
        while written < size:
            n = min(DELTA, size - written)
            _put(store, _ops(rng, written, n, a.base, t1, "w", a.new_share), t1 + written, "w")
            written += n
        replica.tail.poll()

        def plain() -> None:
            q = queries[next(it) % len(queries)][None, :]
            replica.backend._query(QueryRequest(q))

        def filtered() -> None:
            q = queries[next(it) % len(queries)][None, :]
            replica.backend._query(QueryRequest(q, where={"group": {"$in": [1, 2, 3]}}))

        plain()  # builds the overlay once
        p_plain = _p50(plain, a.queries)
        p_filtered = _p50(filtered, a.queries)
        # One more small delta: the first query after it pays for the overlay's rebuild.
        _put(store, _ops(rng, written, 10, a.base, t1, "w", a.new_share), t1 + written, "w")
        written += 10
        replica.tail.poll()
        t = time.perf_counter()
        plain()
        first = (time.perf_counter() - t) * 1000
        print(f"tail={size:>6}  query p50 {p_plain:8.2f} ms  filtered p50 {p_filtered:8.2f} ms"
              f"  first query after a new delta {first:8.2f} ms", flush=True)


if __name__ == "__main__":
    main()
