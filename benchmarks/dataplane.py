"""Data-plane benchmarks: compaction throughput and reader cold start on a full version.

Each figure is measured side by side with its DESIGN.md peer in the same run,
on real MinIO (loopback) and real chromadb.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import chromadb
import numpy as np

from benchmarks.report import Result
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.config import CollectionSettings, Space
from chromasnap.engine import chromadir
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.reader.snapshot import SnapshotReader
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.s3 import S3Store

DIM = 384
SETTINGS = CollectionSettings(name="bench", dimension=DIM, space=Space.COSINE)
DELTA_RECORDS = 10_000


def log(msg: str) -> None:
    """Progress line (benchmarks run for minutes)."""
    print(f"[bench] {msg}", flush=True)


def make_records(
    start: int, n: int, seed: int
) -> tuple[list[str], np.ndarray[Any, Any], list[str], list[dict[str, Any]]]:
    """Deterministic random records: ids, float32 vectors, documents, metadata."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"r{start + i}" for i in range(n)]
    return (
        ids,
        emb,
        [f"document number {start + i}" for i in range(n)],
        [{"i": start + i, "group": (start + i) % 10} for i in range(n)],
    )


def upload_deltas(store: S3Store, start: int, n: int, seed: int, writer: str = "bench") -> int:
    """Store ``n`` upserts as 10k-record deltas, like writers would; return bytes."""
    ids, emb, docs, metas = make_records(start, n, seed)
    total = 0
    ts = time.time_ns() // 1000
    for off in range(0, n, DELTA_RECORDS):
        ops = [
            Op(OpKind.UPSERT, ids[i], OpKey(ts, writer, i), emb[i], docs[i], metas[i])
            for i in range(off, min(n, off + DELTA_RECORDS))
        ]
        data = deltas.encode(ops, DIM, writer)
        store.put(deltas.DeltaName(ts + off, writer).key, data)
        total += len(data)
    return total


def new_compactor(store: S3Store, cache: Path) -> Compactor:
    """A compactor with a fresh cache directory (a CronJob pod starts empty)."""
    shutil.rmtree(cache, ignore_errors=True)
    return Compactor(
        store,
        SETTINGS,
        NoLock(),
        CompactorOptions(identity="bench", cache_dir=cache, delta_grace_seconds=0),
    )


def peer_add(n: int, seed: int, work: Path) -> float:
    """In-process chromadb add of the same records; seconds."""
    ids, emb, docs, metas = make_records(0, n, seed)
    path = work / "peer-add"
    shutil.rmtree(path, ignore_errors=True)
    chromadir.create_collection(path, SETTINGS)
    client = chromadb.PersistentClient(path=str(path))
    col = client.get_collection(SETTINGS.name)
    step = client.get_max_batch_size()
    t0 = time.perf_counter()
    for off in range(0, n, step):
        col.add(
            ids=ids[off : off + step],
            embeddings=emb[off : off + step].tolist(),
            documents=docs[off : off + step],
            metadatas=metas[off : off + step],
        )  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    client.close()  # type: ignore[attr-defined]
    shutil.rmtree(path, ignore_errors=True)
    return secs


def compaction_throughput(store: S3Store, n: int, work: Path) -> tuple[list[Result], float]:
    """Fold n records (in 10k deltas) end to end vs chromadb add of the same records."""
    log(f"compaction_throughput: peer = in-process chromadb add of {n} x {DIM}")
    peer_s = peer_add(n, 1, work)
    log(f"  peer: {peer_s:.1f} s")
    c = new_compactor(store, work / "compactor")
    assert c.run().result == "succeeded"  # version 1: the empty collection
    upload_deltas(store, 0, n, 1)
    c = new_compactor(store, work / "compactor")
    t0 = time.perf_counter()
    res = c.run()
    ours_s = time.perf_counter() - t0
    assert res.result == "succeeded", res.message
    log(f"  chromasnap: {ours_s:.1f} s, steps {res.steps}")
    return [
        Result(
            "compaction_throughput",
            n / ours_s,
            n / peer_s,
            "records/s",
            "≥ 0.85×",
            n,
            notes="end to end: list, download and decode deltas, apply, flush, "
            "upload snapshot and manifest, swap pointer",
            extra={"steps_seconds": res.steps, "snapshot_bytes": res.snapshot_bytes},
        )
    ], ours_s


def reader_cold_start(store: S3Store, endpoint: str, work: Path) -> list[Result]:
    """Pointer seen -> verified snapshot open and answering vs raw download + open."""
    cur = pointer.read(store).pointer
    assert cur is not None
    man = snapshots.load_manifest(store, cur.manifest)
    query = [np.ones(DIM, dtype=np.float32).tolist()]
    ours, peer = [], []
    s3 = boto3.client("s3", endpoint_url=endpoint)
    root = store.url.split("/", 3)[3].strip("/") if store.url.count("/") >= 3 else ""
    keys = {f.path: f"{root}/{man.prefix}{f.path}".lstrip("/") for f in man.files}

    def ours_once(rep: int) -> float:
        reader = SnapshotReader(store, work / f"reader{rep}")
        t0 = time.perf_counter()
        assert reader.refresh()
        with reader.use() as snap:
            snap.collection.query(query_embeddings=query, n_results=10)
        secs = time.perf_counter() - t0
        reader.close()
        return secs

    def peer_download(dest: Path) -> float:
        t0 = time.perf_counter()

        def get(f: mf.FileEntry) -> None:
            target = dest / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(store.bucket, keys[f.path], str(target))

        with ThreadPoolExecutor(snapshots.PARALLEL_FILES) as pool:
            list(pool.map(get, man.files))
        return time.perf_counter() - t0

    def peer_once(rep: int) -> float:
        dest = work / f"peer{rep}"
        t0 = time.perf_counter()
        peer_download(dest)
        client = chromadb.PersistentClient(path=str(dest / mf.DB_DIR))
        client.get_collection(SETTINGS.name).query(query_embeddings=query, n_results=10)
        secs = time.perf_counter() - t0
        client.close()  # type: ignore[attr-defined]
        shutil.rmtree(dest, ignore_errors=True)
        return secs

    breakdown: dict[str, list[float]] = {"fetch_verified_s": [], "raw_download_s": []}
    for rep in range(3):
        # Alternate who goes first so neither always finds MinIO's page cache warm.
        if rep % 2:
            peer.append(peer_once(rep))
            ours.append(ours_once(rep))
        else:
            ours.append(ours_once(rep))
            peer.append(peer_once(rep))
        t0 = time.perf_counter()
        snapshots.fetch(store, man, work / f"fetch{rep}")
        breakdown["fetch_verified_s"].append(time.perf_counter() - t0)
        shutil.rmtree(work / f"fetch{rep}", ignore_errors=True)
        breakdown["raw_download_s"].append(peer_download(work / f"raw{rep}"))
        shutil.rmtree(work / f"raw{rep}", ignore_errors=True)
    log(f"reader_cold_start: ours {ours}, peer {peer}")
    return [
        Result(
            "reader_cold_start",
            float(np.median(ours)),
            float(np.median(peer)),
            "s",
            "≤ 1.2×",
            man.record_count,
            higher_is_better=False,
            notes=f"median of 3; snapshot of {man.record_count} records, "
            f"{man.byte_size / 1e6:.0f} MB; both end with one query answered",
            extra={"ours_s": ours, "peer_s": peer, **breakdown},
        )
    ]


def run(minio_endpoint: str, new_bucket_url: Any, n: int) -> list[Result]:
    """Compaction throughput and reader cold start on one full version of ``n`` records.

    (The scaling curve comes from ``benchmarks.segments``.)
    """
    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-"))
    try:
        big = S3Store(new_bucket_url(), endpoint_url=minio_endpoint)
        results, _ = compaction_throughput(big, n, work)
        results += reader_cold_start(big, minio_endpoint, work)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
