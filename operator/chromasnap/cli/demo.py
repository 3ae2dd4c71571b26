"""``chromasnap demo``: the whole system on one machine, driven by ``chromadb.HttpClient``.

Two writer processes and two reader processes run exactly as pods would,
over a local-directory bucket; ingest clients write a text corpus through
plain ``chromadb.HttpClient`` code in rounds, the compactor folds each round
into a new snapshot version, readers swap every version in (and serve the
not-yet-compacted writes as fresh reads meanwhile), and text queries show
the neighbours. Then a pool (``demo_pool``): one process serving Chroma's whole
API, where the client creates, renames and deletes its own collections. No
cluster and no cloud account.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import chromadb

from chromasnap import logs
from chromasnap.cli.demo_corpus import QUERIES, corpus
from chromasnap.cli.demo_pool import run_pool_part
from chromasnap.cli.embedding import HashingEmbedding
from chromasnap.cli.localstack import LocalStack, Proc, collection_env, free_port
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import LocalLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.config import CollectionSettings, Space
from chromasnap.storage.store import open_store

DIMENSION = 384
ROUNDS = 3
CLIENTS = 3
BATCH = 10
SETTINGS = CollectionSettings(name="demo-docs", dimension=DIMENSION, space=Space.COSINE)


def _reader_seq(p: Proc) -> int:
    """The snapshot sequence a reader serves, from its Prometheus metrics."""
    with urllib.request.urlopen(p.url + "/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    m = re.search(r"^chromasnap_reader_snapshot_seq (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def _wait(cond: Any, timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.perf_counter() - t0


def _client(p: Proc) -> Any:
    return chromadb.HttpClient(host="127.0.0.1", port=p.port)


def run_demo(work: Path | None = None) -> int:
    """Run the demo; return the process exit code."""
    logs.setup("WARNING", "text")
    root = work or Path(".demo/run")
    # Each run starts from an empty bucket; the result stays for `chromasnap status`.
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    bucket = (root / "bucket").resolve()
    url = bucket.as_uri()
    store = open_store(url)
    embed = HashingEmbedding(DIMENSION)
    t_start = time.perf_counter()
    print("chromasnap demo: HttpClient -> writers -> deltas -> compactor -> snapshots -> readers")
    print(f"  bucket     {url}  (a local directory standing in for S3)")
    print(f"  embedding  {embed.name}, {DIMENSION} dimensions")
    compactor = Compactor(store, SETTINGS, LocalLock(bucket / ".locks" / "compactor.lock", "demo"),
                          CompactorOptions(identity="demo-compactor", cache_dir=root / "compactor",
                                           delta_grace_seconds=0, retain_snapshots=2))
    first = compactor.run()
    print(f"  version {first.version}: collection {SETTINGS.name!r} created by the first "
          "compaction")

    stack = LocalStack(collection_env(url, None, SETTINGS.name, DIMENSION, "cosine"),
                       root / "procs")
    reader_ports = [free_port(), free_port()]
    notify = ",".join(f"http://127.0.0.1:{p}" for p in reader_ports)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            writers = list(pool.map(lambda _: stack.start(
                "writer", CHROMASNAP_NOTIFY_URLS=notify), range(2)))
            readers = list(pool.map(lambda port: stack.start(
                "reader", port, CHROMASNAP_WRITER_URL=writers[0].url), reader_ports))
        for r in readers:
            stack.wait(r, "/readyz")
        print(f"  started 2 writer and 2 reader processes in {time.perf_counter() - t0:.1f} s: "
              f"writers {', '.join(w.url for w in writers)}; readers "
              f"{', '.join(r.url for r in readers)}")
        code = _rounds(compactor, store, embed, writers, readers, t_start)
    finally:
        stack.stop()
    pool_ok = run_pool_part(root, embed)
    print(f"finished in {time.perf_counter() - t_start:.1f} s")
    return code if pool_ok else 1


def _rounds(compactor: Compactor, store: Any, embed: HashingEmbedding, writers: list[Proc],
            readers: list[Proc], t_start: float) -> int:
    rows = corpus(n_per_topic=60)
    per_round = len(rows) // ROUNDS
    reader_cols = [_client(r).get_collection(SETTINGS.name) for r in readers]
    total = 0
    for rnd in range(ROUNDS):
        chunk = rows[rnd * per_round:(rnd + 1) * per_round]
        batches = [chunk[i:i + BATCH] for i in range(0, len(chunk), BATCH)]

        def send(i_batch: tuple[int, list[tuple[str, str, str]]]) -> None:
            i, batch = i_batch
            # Plain chromadb client code; half the clients write through a reader (forwarded).
            target = writers[i % 2] if i % 3 else readers[i % 2]
            col = _client(target).get_collection(SETTINGS.name)
            col.upsert(ids=[r[0] for r in batch], embeddings=embed([r[2] for r in batch]),
                       documents=[r[2] for r in batch], metadatas=[{"topic": r[1]} for r in batch])

        before = {o.key for o in store.list("deltas/")}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(send, enumerate(batches)))
        ingest = time.perf_counter() - t0
        total += len(chunk)
        n_deltas = len({o.key for o in store.list("deltas/")} - before)
        print(f"\nround {rnd + 1}: {CLIENTS} HttpClient threads upserted {len(chunk)} records in "
              f"{len(batches)} requests -> {n_deltas} durable deltas, {ingest:.2f} s")
        fresh = _wait(lambda n=total: all(c.count() == n for c in reader_cols), 30,
                      "fresh reads")
        print(f"  fresh reads: both readers count {total} records {fresh * 1000:.0f} ms later, "
              "before any compaction")
        res = compactor.run()
        if res.result != "succeeded":
            print(f"  compaction {res.result}: {res.reason} {res.message}")
            return 1
        print(f"  compactor: {res.version} folded {res.deltas_folded} deltas "
              f"({res.records_folded} writes) -> {res.record_count} records, "
              f"{(res.snapshot_bytes or 0) / 1e6:.1f} MB, {res.duration_seconds:.2f} s")
        seq = int(str(res.version).split("-", 1)[0])
        swap = _wait(lambda seq=seq: all(_reader_seq(r) >= seq for r in readers), 30, "swap")
        print(f"  readers:   both swapped to {res.version} within {swap:.2f} s")

    print("\nqueries through chromadb.HttpClient on a reader (top 3 by cosine distance):")
    on_topic = 0
    col = reader_cols[0]
    for topic, text in QUERIES:
        res_q = col.query(query_embeddings=embed([text]), n_results=3,
                          include=["documents", "metadatas", "distances"])
        print(f"  {text!r}")
        topics: Counter[str] = Counter()
        for doc, meta, dist in zip(res_q["documents"][0], res_q["metadatas"][0],
                                   res_q["distances"][0], strict=True):
            topics[str(meta["topic"])] += 1
            print(f"     {dist:.3f}  [{meta['topic']}] {doc}")
        on_topic += topics[topic]
    # Read-your-writes: a write through the reader is visible to the next read at once.
    col.upsert(ids=["ryw-check"], embeddings=embed(["read your writes"]),
               documents=["read your writes"])
    ryw = col.get(ids=["ryw-check"])["ids"] == ["ryw-check"]
    print(f"\nread-your-writes through a reader: {'ok' if ryw else 'FAILED'}")
    print(f"{on_topic}/{3 * len(QUERIES)} neighbours are on the query's topic")
    print(f"next: `.venv/bin/chromasnap status {store.url}` shows the retained versions")
    return 0 if ryw and on_topic >= 2 * len(QUERIES) else 1
