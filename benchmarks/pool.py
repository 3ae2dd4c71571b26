"""A pool (issue 18) through ``chromadb.HttpClient``: a real ``chromasnap pool`` process on
MinIO beside ``chroma run`` holding the same collections, in one run.

- ``create_collection_p99`` / ``list_collections_p99``: creating N collections one
  after another (p99 of the last 500), then ``list_collections(limit=100)`` at
  random offsets, on both servers.
- ``pool_warm_query_p50``: ``query(n_results=10)`` on a loaded 10,000 x 384
  collection while N others exist, alternating blocks (ABBA) with ``chroma run``.
- ``pool_cold_query_p50`` / ``_p99``: the first query on that collection after
  it was evicted (the pool keeps 8 loaded; 8 other collections are queried in
  between), against the baseline the issue names: a raw download of the same
  bytes (its version's files) + ``chromadb.PersistentClient`` open + one query.
- ``pool_reader_ready``: a restarted pool process, start to ``/readyz``, at N
  collections, against the same at 10 collections.
- ``pool_writer_puts``: W collections each written once a second for 10 s:
  write-batch PUTs per second (``chromasnap_pool_batches_total``), against one
  per flush window (50 ms).
- ``pool_compaction_dirty_1000``: the pool, restarted with compaction off, takes
  10 new records in each of those 1,000 collections, then is restarted with a
  new (cold) cache and compaction on: its first pass's seconds, from its log.
- ``pool_collections`` and ``pool_reader_rss``: 1,000 collections (``FULL``) get
  1,000 x 384 records each, on both servers; each is then queried once, in a
  random order, with the pool's memory budget at 1 GiB: the pool's RSS over
  that budget, with ``chroma run``'s RSS for the same collections beside it.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings

from benchmarks.dataplane import log
from benchmarks.report import Result
from chromasnap.cli.localstack import LocalStack, Proc
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer, snapshots
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.s3 import S3Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the process harness lives with the tests

from servers import ChromaRun  # noqa: E402

DIM = 384
BIG = 10_000
MAX_LOADED = 8
FLUSH_S = 0.05
WRITE_THREADS = 50
COLD_SAMPLES = 15
FULL = 1000  # collections of RECORDS records (the pool_collections asks 10,000)
RECORDS = 1000
DIRTY_RECORDS = 10
BUDGET_MB = 1024


def _client(port: int) -> chromadb.ClientAPI:
    return chromadb.HttpClient(host="127.0.0.1", port=port,
                               settings=Settings(anonymized_telemetry=False))


def _pct(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2)


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$",
                                                        text, re.M))


class PoolProcess:
    """``chromasnap pool`` on one bucket root (restartable)."""

    def __init__(self, url: str, endpoint: str, workdir: Path) -> None:
        self.stack = LocalStack({
            **os.environ, "CHROMASNAP_BUCKET_URL": url, "CHROMASNAP_S3_ENDPOINT_URL": endpoint,
            "CHROMASNAP_LOG_FORMAT": "text", "CHROMASNAP_MAX_LOADED": str(MAX_LOADED),
            "CHROMASNAP_COMPACT_EVERY_SECONDS": "3"}, workdir)
        self.proc = self.start()[0]

    def start(self) -> tuple[Proc, float]:
        """Start; return the process and the seconds from start to ``/readyz``."""
        t0 = time.perf_counter()
        p = self.stack.start("pool", wait=False)
        self.stack.wait(p, "/readyz", timeout=300)
        return p, time.perf_counter() - t0

    def restart(self) -> float:
        """Stop and start again; the seconds to ready."""
        self.stack.stop()
        self.proc, ready_s = self.start()
        return ready_s

    def stop(self) -> None:
        self.stack.stop()


def _create_many(client: chromadb.ClientAPI, n: int, what: str) -> list[float]:
    ms = []
    for i in range(n):
        ms.append(_timed(lambda i=i: client.create_collection(f"tenant-{i:05d}",
                                                               embedding_function=None)))
        if (i + 1) % 1000 == 0:
            log(f"pool: {what}: {i + 1:,} collections")
    return ms


def _lists(client: chromadb.ClientAPI, total: int, rng: np.random.Generator) -> list[float]:
    return [_timed(lambda: client.list_collections(limit=100,
                                                   offset=int(rng.integers(0, total))))
            for _ in range(200)]


def _fill(col: Any, vectors: np.ndarray) -> None:
    for i in range(0, len(vectors), 1000):
        col.add(ids=[f"r{j}" for j in range(i, min(i + 1000, len(vectors)))],
                embeddings=vectors[i:i + 1000], documents=[f"doc {j}" for j in
                                                           range(i, min(i + 1000, len(vectors)))])


def _wait_folded(store: S3Store, cid: str, records: int, timeout: float = 300) -> mf.Manifest:
    """The collection's manifest once a compaction has folded ``records`` records."""
    sub = PrefixedStore(store, collection_root(cid))
    deadline = time.monotonic() + timeout
    while True:
        cur = pointer.read(sub).pointer
        if cur is not None:
            man = snapshots.load_manifest(sub, cur.manifest)
            if man.record_count >= records:
                return man
        if time.monotonic() > deadline:
            raise TimeoutError(f"collection {cid} not compacted to {records} records")
        time.sleep(0.5)


def _raw_baseline(store: S3Store, cid: str, man: mf.Manifest, query: np.ndarray,
                  tmp: Path) -> float:
    """Download the version's files, open its base with chromadb, one query (ms)."""
    sub = PrefixedStore(store, collection_root(cid))
    dest = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    files = [(man.base_prefix, f) for f in man.files] + [
        (seg.prefix, f) for seg in man.segments for f in seg.files]
    for prefix, f in files:
        path = dest / prefix / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        sub.download_file(prefix + f.path, path, f.size, f.sha256)
    base_db = next(p for p in dest.rglob("chroma.sqlite3")).parent
    client = chromadb.PersistentClient(str(base_db), settings=Settings(anonymized_telemetry=False))
    col = client.list_collections()[0]
    col.query(query_embeddings=query, n_results=10)
    return (time.perf_counter() - t0) * 1000


def run(endpoint: str, new_bucket_url: Callable[..., str], n: int = 1000,
        writers: int = 200) -> list[Result]:
    """Every pool figure at ``n`` collections (``writers`` of them written to at once)."""
    rng = np.random.default_rng(18)
    tmp = Path(tempfile.mkdtemp(prefix="chromasnap-bench-pool-"))
    url = new_bucket_url("pool")
    store = S3Store(url, endpoint_url=endpoint)
    pool = PoolProcess(url, endpoint, tmp / "pool")
    peer = ChromaRun(tmp / "chroma-data", tmp / "chroma")
    peer.__enter__()
    try:
        ours, theirs = _client(pool.proc.port), _client(peer.port)
        create_ours = _create_many(ours, n, "chromasnap")
        create_peer = _create_many(theirs, n, "chroma run")
        # This process's own garbage collection (it holds thousands of handles) paused
        # one list call in 50 by ~80 ms whichever server answered: not the servers' time.
        gc.collect()
        gc.freeze()
        list_ours, list_peer = _lists(ours, n, rng), _lists(theirs, n, rng)
        log(f"pool: create p99 {_pct(create_ours[-500:], 99)} ms (chroma run "
            f"{_pct(create_peer[-500:], 99)}), list p99 {_pct(list_ours, 99)} ms")

        vectors = rng.standard_normal((BIG, DIM)).astype(np.float32)
        # Collections for the cold reads, written now: compacted before they are read.
        others = [ours.get_collection(f"tenant-{i:05d}") for i in range(COLD_SAMPLES * MAX_LOADED)]
        for col in others:
            col.add(ids=["x"], embeddings=vectors[:1])
        queries = rng.standard_normal((200, DIM)).astype(np.float32)
        big = {}
        for name, c in (("ours", ours), ("peer", theirs)):
            big[name] = c.create_collection("big", embedding_function=None)
            _fill(big[name], vectors)
        man = _wait_folded(store, str(big["ours"].id), BIG)
        warm: dict[str, list[float]] = {"ours": [], "peer": []}
        for block in range(8):
            order = ("ours", "peer") if block % 2 == 0 else ("peer", "ours")
            for who in order:
                for q in queries[block * 25:(block + 1) * 25]:
                    warm[who].append(_timed(lambda q=q, who=who: big[who].query(
                        query_embeddings=q[None], n_results=10)))
        log(f"pool: warm query p50 {_pct(warm['ours'], 50)} ms "
            f"(chroma run {_pct(warm['peer'], 50)})")

        cold, raw = [], []
        for i in range(COLD_SAMPLES):
            # Eight collections read for the first time: the big one becomes the least
            # recently read and is closed (fresh ones each time, so that no other read
            # in between misses: an LRU cycled in order would miss on every read).
            for col in others[i * MAX_LOADED:(i + 1) * MAX_LOADED]:
                col.count()
            cold.append(_timed(lambda i=i: big["ours"].query(query_embeddings=queries[i][None],
                                                            n_results=10)))
            raw.append(_raw_baseline(store, str(big["ours"].id), man, queries[i][None], tmp))
        log(f"pool: cold query p50 {_pct(cold, 50)} ms, raw download+open+query "
            f"{_pct(raw, 50)} ms")

        writes = [ours.get_collection(f"tenant-{i:05d}") for i in
                  range(len(others), len(others) + writers)]
        for col in writes:
            col.add(ids=["x"], embeddings=vectors[:1])  # dimension fixed
        before = _metric(pool.proc.url, "chromasnap_pool_batches_total")
        log_start = pool.proc.log.stat().st_size
        t_start = time.monotonic()
        rounds = [0] * WRITE_THREADS

        def write_loop(k: int) -> None:
            # Each thread writes its share of the collections once a second.
            mine = [(j, ours_col) for j, ours_col in enumerate(writes) if j % WRITE_THREADS == k]
            while time.monotonic() < t_start + 10:
                t_round = time.monotonic()
                for j, col in mine:
                    col.upsert(ids=[f"w{rounds[k]}-{j}"], embeddings=vectors[j:j + 1])
                rounds[k] += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t_round)))

        with ThreadPoolExecutor(WRITE_THREADS) as ex:
            list(ex.map(write_loop, range(WRITE_THREADS)))
        elapsed = time.monotonic() - t_start
        sent = min(rounds)
        puts_s = (_metric(pool.proc.url, "chromasnap_pool_batches_total") - before) / elapsed
        log(f"pool: {writers} collections written at least {sent} times each in "
            f"{elapsed:.1f} s: {puts_s:.1f} PUTs/s")
        _compaction_passes_s(pool.proc.log, log_start, writers)
        first = len(others) + writers
        names = [f"tenant-{i:05d}" for i in range(first, first + min(FULL, n - first))]
        full = _full_collections(pool, peer, names, rng)
        pass_s = _dirty_pass(pool, names)
        log(f"pool: one pass folded {len(names)} dirty collections in {pass_s:.1f} s "
            "(cold cache)")
        ready_n = min(pool.restart() for _ in range(3))
        small_url = new_bucket_url("pool-small")
        small = PoolProcess(small_url, endpoint, tmp / "small")
        _create_many(_client(small.proc.port), 10, "small pool")
        ready_10 = min(small.restart() for _ in range(3))
        small.stop()
    finally:
        pool.stop()
        peer.__exit__(None, None, None)
    common = f"chromasnap pool on MinIO vs chroma run, {n:,} collections"
    return [
        Result("create_collection_p99", _pct(create_ours[-500:], 99),
               _pct(create_peer[-500:], 99), "ms", "≤ 50 ms", n, higher_is_better=False,
               notes=f"{common}; p99 of the last 500 creates; p50 {_pct(create_ours, 50)} ms"),
        Result("list_collections_p99", _pct(list_ours, 99), _pct(list_peer, 99), "ms",
               "≤ 50 ms", n, higher_is_better=False,
               notes=f"{common}; limit=100 at random offsets; p50 {_pct(list_ours, 50)} ms"),
        Result("pool_warm_query_p50", _pct(warm["ours"], 50), _pct(warm["peer"], 50), "ms",
               "≤ 1.1× chroma run", BIG, higher_is_better=False,
               notes=f"{common}; a loaded {BIG:,} x {DIM} collection, n_results=10, ABBA; "
               f"p99 {_pct(warm['ours'], 99)} vs {_pct(warm['peer'], 99)} ms"),
        Result("pool_cold_query_p50", _pct(cold, 50), _pct(raw, 50), "ms",
               "≤ 1.3× download + open + query", BIG, higher_is_better=False,
               notes=f"the first query on an evicted {BIG:,} x {DIM} collection (the pool keeps "
               f"{MAX_LOADED} loaded; {MAX_LOADED} others read first) vs downloading its "
               f"version's files, PersistentClient open and one query; {COLD_SAMPLES} each"),
        Result("pool_cold_query_p99", _pct(cold, 99), _pct(raw, 99), "ms",
               "≤ 1.3× download + open + query", BIG, higher_is_better=False,
               notes="as pool_cold_query_p50"),
        Result("pool_reader_ready", round(ready_n, 2), round(ready_10, 2), "s",
               "≤ 10 s and ≤ 1.2× at 10 collections", n, higher_is_better=False,
               notes=f"process start to /readyz at {n:,} collections (peer: the same at 10), "
               "best of 3"),
        Result("pool_writer_puts", round(puts_s * FLUSH_S, 3), None, "PUTs per flush window",
               "≤ 1", writers, higher_is_better=False,
               notes=f"{writers} collections each written once a second for 10 s: "
               f"{puts_s:.1f} write-batch PUTs/s (the deltas of every collection written in a "
               "window share one)"),
        Result("pool_compaction_dirty_1000", round(pass_s, 1), None, "s", "≤ 60 s",
               len(names), higher_is_better=False,
               notes=f"one compaction pass of a restarted pool (cold cache) folding "
               f"{len(names):,} collections of {RECORDS:,} records with {DIRTY_RECORDS} new "
               f"records each (written while compaction was off), four at a time, out of "
               f"{n:,}; their first versions took {full.first_versions_s:.0f} s"),
        Result("pool_collections", len(names), None, "collections", "≥ 10,000", n,
               notes=f"collections of {RECORDS:,} x {DIM} records, each queried (all "
               f"reachable), in a catalog of {n:,}: the largest count this machine's run "
               f"took ({len(names) * RECORDS:,} records; 10,000 would be 10 million records, "
               "~20 GB per server)"),
        Result("pool_reader_rss", round(full.rss_mb / BUDGET_MB, 3), None, "RSS / budget",
               "≤ 1.1", len(names), higher_is_better=False,
               notes=f"RSS of the pool process ({full.rss_mb:.0f} MB, peak "
               f"{full.peak_mb:.0f} MB) after random queries over all {len(names):,} "
               f"collections of {RECORDS:,} records, memory budget {BUDGET_MB} MB; "
               f"chroma run with the same collections: {full.rss_peer_mb:.0f} MB"),
    ]


@dataclass(frozen=True)
class _Full:
    first_versions_s: float
    rss_mb: float
    peak_mb: float
    rss_peer_mb: float


def _full_collections(pool: PoolProcess, peer: ChromaRun, names: list[str],
                      rng: np.random.Generator) -> _Full:
    """Fill ``names`` with ``RECORDS`` records each, on both servers; query each collection
    once, in random order, with the pool's memory budget at ``BUDGET_MB``."""
    pool.stack.env.update(CHROMASNAP_MEMORY_BUDGET_BYTES=str(BUDGET_MB << 20),
                          CHROMASNAP_MAX_LOADED="100000")
    pool.restart()
    ours, theirs = _client(pool.proc.port), _client(peer.port)
    log_start = pool.proc.log.stat().st_size
    t0 = time.monotonic()
    for k, name in enumerate(names):
        vectors = rng.standard_normal((RECORDS, DIM)).astype(np.float32)
        ids = [f"r{j}" for j in range(RECORDS)]
        for client in (ours, theirs):
            client.get_collection(name).add(ids=ids, embeddings=vectors)
        if (k + 1) % 100 == 0:
            log(f"pool: {k + 1:,} of {len(names):,} collections filled")
    took, _ = _compaction_passes_s(pool.proc.log, log_start, len(names), timeout=3600)
    log(f"pool: {len(names):,} first versions of {RECORDS:,} records in "
        f"{time.monotonic() - t0:.0f} s (passes {took:.0f} s)")
    peak = 0.0
    query = rng.standard_normal((1, DIM)).astype(np.float32)
    for k, i in enumerate(rng.permutation(len(names))):
        for client in (ours, theirs):
            client.get_collection(names[i]).query(query_embeddings=query, n_results=10)
        peak = max(peak, _rss_mb(pool.proc.proc.pid))
        if (k + 1) % 100 == 0:
            log(f"pool: {k + 1:,} of {len(names):,} collections queried, RSS "
                f"{_rss_mb(pool.proc.proc.pid):.0f} MB (peak {peak:.0f})")
    return _Full(took, _rss_mb(pool.proc.proc.pid), peak,
                 _rss_mb(peer.proc.pid) if peer.proc else 0.0)


def _dirty_pass(pool: PoolProcess, names: list[str]) -> float:
    """Seconds of the first compaction pass of a restarted pool (a new, cold cache) that
    folds ``names``, each given ``DIRTY_RECORDS`` new records while compaction was off."""
    pool.stack.env["CHROMASNAP_COMPACT_EVERY_SECONDS"] = "3600"
    pool.restart()
    client = _client(pool.proc.port)
    vectors = np.random.default_rng(5).standard_normal((DIRTY_RECORDS, DIM)).astype(np.float32)

    def write(k: int) -> None:
        col = client.get_collection(names[k])
        col.upsert(ids=[f"d{k}-{j}" for j in range(DIRTY_RECORDS)], embeddings=vectors)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(write, range(len(names))))
    pool.stack.env["CHROMASNAP_COMPACT_EVERY_SECONDS"] = "2"
    pool.restart()  # a new port, so a new cache directory: every compaction starts cold
    took, _ = _compaction_passes_s(pool.proc.log, 0, len(names))
    return took


def _compaction_passes_s(log_path: Path, start: int, writers: int,
                         timeout: float = 600) -> tuple[float, int]:
    """Seconds of the compaction passes logged after byte ``start`` of the pool's log
    until they have covered ``writers`` collections, and how many passes that took."""
    deadline = time.monotonic() + timeout
    pat = re.compile(r"pool compaction pass: (\d+) collections in ([\d.]+) s")
    while time.monotonic() < deadline:
        covered, took, passes = 0, 0.0, 0
        for m in pat.finditer(log_path.read_bytes()[start:].decode(errors="replace")):
            covered, took, passes = covered + int(m.group(1)), took + float(m.group(2)), passes + 1
            if covered >= writers:
                return took, passes
        time.sleep(1)
    raise TimeoutError("the written collections were not compacted")
