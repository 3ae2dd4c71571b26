"""``chromasnap demo``: the whole loop on a local-directory bucket, narrated.

Several writer processes ingest a text corpus in rounds (group commit into
deltas), a compactor folds each round into a new snapshot version, a reader
swaps every version in, and text queries show the neighbours it returns.
No cluster and no cloud account: the bucket is a ``file://`` directory.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import shutil
import time
from collections import Counter
from pathlib import Path

from chromasnap import logs
from chromasnap.compactor import Compactor, CompactorOptions
from chromasnap.config import CollectionSettings, Space
from chromasnap.demo_corpus import QUERIES, corpus
from chromasnap.embedding import HashingEmbedding
from chromasnap.lock import LocalLock
from chromasnap.ops import OpKind
from chromasnap.reader import SnapshotReader
from chromasnap.store import open_store
from chromasnap.validation import Limits
from chromasnap.writer import FlushWindow, GroupCommitWriter, process_writer_id

DIMENSION = 384
WRITERS = 3
ROUNDS = 3
SETTINGS = CollectionSettings(name="demo-docs", dimension=DIMENSION, space=Space.COSINE)


def _writer_process(url: str, name: str, rows: list[tuple[str, str, str]],
                    out: mp.Queue[tuple[str, int, int, float]]) -> None:
    """One writer process: embed its rows and send them as small concurrent requests."""
    embed = HashingEmbedding(DIMENSION)

    async def go() -> tuple[int, float]:
        w = GroupCommitWriter(open_store(url), Limits(DIMENSION), process_writer_id(name),
                              FlushWindow(max_records=64, max_delay_s=0.02))
        await w.start()
        t0 = time.perf_counter()
        try:
            tokens = await asyncio.gather(*(
                w.submit(OpKind.UPSERT, [rid], embeddings=embed([text]).tolist(),
                         documents=[text], metadatas=[{"topic": topic}])
                for rid, topic, text in rows
            ))
        finally:
            await w.stop()
        return len(set(tokens)), time.perf_counter() - t0

    n_deltas, secs = asyncio.run(go())
    out.put((name, len(rows), n_deltas, secs))


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
    print("chromasnap demo: writers -> deltas -> compactor -> snapshots -> reader")
    print(f"  bucket     {url}  (a local directory standing in for S3)")
    print(f"  embedding  {embed.name}, {DIMENSION} dimensions")
    print(f"  collection {SETTINGS.name!r}, space {SETTINGS.space.value}")
    rows = corpus(n_per_topic=60)
    compactor = Compactor(store, SETTINGS, LocalLock(bucket / ".locks" / "compactor.lock", "demo"),
                          CompactorOptions(identity="demo-compactor", cache_dir=root / "compactor",
                                           delta_grace_seconds=0, retain_snapshots=2))
    reader = SnapshotReader(store, root / "reader")
    first = compactor.run()
    reader.refresh()
    print(f"\nversion {first.version}: empty collection created by the first compaction")
    per_round = len(rows) // ROUNDS
    ctx = mp.get_context("spawn")
    try:
        for rnd in range(ROUNDS):
            chunk = rows[rnd * per_round:(rnd + 1) * per_round]
            queue: mp.Queue[tuple[str, int, int, float]] = ctx.Queue()
            procs = [
                ctx.Process(target=_writer_process,
                            args=(url, f"writer-{i}", chunk[i::WRITERS], queue))
                for i in range(WRITERS)
            ]
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            results = [queue.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=30)
            ingest = time.perf_counter() - t0
            recs = sum(r[1] for r in results)
            n_deltas = sum(r[2] for r in results)
            print(f"\nround {rnd + 1}: {WRITERS} writer processes acknowledged {recs} writes "
                  f"as {n_deltas} durable deltas in {ingest:.2f} s")
            res = compactor.run()
            if res.result != "succeeded":
                print(f"  compaction {res.result}: {res.reason} {res.message}")
                return 1
            print(f"  compactor: {res.version}  folded {res.deltas_folded} deltas "
                  f"({res.records_folded} writes) -> {res.record_count} records, "
                  f"{(res.snapshot_bytes or 0) / 1e6:.1f} MB, {res.duration_seconds:.2f} s "
                  f"(apply {res.steps.get('apply', 0):.2f} s, upload "
                  f"{res.steps.get('upload', 0):.2f} s)")
            t0 = time.perf_counter()
            swapped = reader.refresh()
            with reader.use() as snap:
                print(f"  reader:    {'swapped to' if swapped else 'still on'} "
                      f"{snap.manifest.version} ({snap.collection.count()} records) "
                      f"in {time.perf_counter() - t0:.2f} s")
        print("\nqueries against the reader's snapshot (top 3 by cosine distance):")
        hits_on_topic = 0
        with reader.use() as snap:
            for topic, text in QUERIES:
                res_q = snap.collection.query(query_embeddings=embed([text]).tolist(),
                                              n_results=3,
                                              include=["documents", "metadatas", "distances"])
                print(f"  {text!r}")
                topics: Counter[str] = Counter()
                for doc, meta, dist in zip(res_q["documents"][0], res_q["metadatas"][0],
                                           res_q["distances"][0], strict=True):
                    topics[meta["topic"]] += 1
                    print(f"     {dist:.3f}  [{meta['topic']}] {doc}")
                hits_on_topic += topics[topic]
        total = time.perf_counter() - t_start
        print(f"\n{hits_on_topic}/{3 * len(QUERIES)} neighbours are on the query's topic; "
              f"{reader.swaps} snapshot swaps; finished in {total:.1f} s")
        print("next: `chromasnap status " + url + "` shows the retained versions")
        return 0 if hits_on_topic >= 2 * len(QUERIES) else 1
    finally:
        reader.close()
