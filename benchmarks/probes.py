"""Probe latency while a real ``chromasnap reader`` folds segments (issue #16).

A local-directory bucket holds a ``--base`` record full version (384 dims,
cosine) and ``--segments`` segment runs of ``--writes`` new records each. A
``chromasnap reader`` process starts on it: it serves the version at once,
the segments as an overlay, and folds them into its copy in the background.
From ``/readyz`` first answering 200 until ``chromasnap_reader_segments_pending``
reads 0, one client asks ``/readyz``, ``/healthz`` and ``/metrics`` in turn
(timeout 10 s) and the latencies' p50 / p99 / max are printed.
Run: ``PYTHONPATH=operator:tests python -m benchmarks.probes``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from chromasnap.cli.localstack import free_port
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.policy import MergePolicy
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas
from chromasnap.storage.store import open_store

DIM = 384
SETTINGS = CollectionSettings(name="probes", dimension=DIM, space=Space.COSINE)


def _publish(url: str, work: Path, base: int, segments: int, writes: int) -> None:
    store = open_store(url)
    rng = np.random.default_rng(11)
    t0 = time.time_ns() // 1000 - 100_000_000
    policy = MergePolicy(full_merge_ratio=1e9, shadowed_ratio=1e9, segments_per_tier=100)
    start = 0
    for run, n in enumerate([base] + [writes] * segments):
        for off in range(0, n, 10_000):
            m = min(10_000, n - off)
            emb = rng.standard_normal((m, DIM)).astype(np.float32)
            ops = [Op(OpKind.UPSERT, f"r{start + off + i}", OpKey(t0 + start + off + i, "w", i),
                      emb[i], f"document {start + off + i}", {"group": i % 10})
                   for i in range(m)]
            store.put(deltas.DeltaName(t0 + start + off, "w").key, deltas.encode(ops, DIM, "w"))
        start += n
        Compactor(store, SETTINGS, NoLock(), CompactorOptions(
            identity="bench", cache_dir=work / f"cc{run}", delta_grace_seconds=0,
            policy=policy)).run()


def _get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback)
        body: bytes = r.read()
    return (time.perf_counter() - t) * 1000, body


def main() -> None:
    """Publish the layout, start a reader, print probe latencies during its fold."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=30_000)
    ap.add_argument("--segments", type=int, default=3)
    ap.add_argument("--writes", type=int, default=10_000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="probes-"))
    url = f"file://{work / 'bucket'}"
    t = time.perf_counter()
    _publish(url, work, a.base, a.segments, a.writes)
    print(f"published in {time.perf_counter() - t:.0f} s", flush=True)
    port = free_port()
    env = {**os.environ, "CHROMASNAP_BUCKET_URL": url, "CHROMASNAP_COLLECTION": "probes",
           "CHROMASNAP_DIMENSION": str(DIM), "CHROMASNAP_SPACE": "cosine",
           "CHROMASNAP_PORT": str(port), "CHROMASNAP_HOST": "127.0.0.1",
           "CHROMASNAP_CACHE_DIR": str(work / "cache"), "CHROMASNAP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "chromasnap", "reader"], env=env)
    base = f"http://127.0.0.1:{port}"
    lat: dict[str, list[float]] = {"readyz": [], "healthz": [], "metrics": []}
    try:
        t_start = time.perf_counter()
        while True:
            try:
                if _get(base + "/readyz")[1].startswith(b"ready"):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        t_ready = time.perf_counter()
        pending = True
        while pending:
            for route, times in lat.items():
                ms, body = _get(f"{base}/{route}")
                times.append(ms)
                if route == "metrics":
                    pending = b"chromasnap_reader_segments_pending 0.0" not in body
            time.sleep(0.02)
        t_done = time.perf_counter()
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"ready after {t_ready - t_start:.1f} s; folded {t_done - t_ready:.1f} s later")
    for route, xs in lat.items():
        xs.sort()
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        print(f"/{route:<8} n={len(xs):>4}  p50 {statistics.median(xs):8.1f} ms  "
              f"p99 {p99:8.1f} ms  max {xs[-1]:8.1f} ms", flush=True)


if __name__ == "__main__":
    main()
