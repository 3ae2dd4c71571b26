"""Segmented snapshots: what a compaction and a reader move, and what merges cost (issue #8).

One run, on real MinIO and real chromadb, side by side with each figure's peer:

1. **Ingest** ``--segment-records`` (default 300k) new records in 30 equal
   rounds, one cold-cache compaction per round (a CronJob pod each time):
   bytes every compaction uploads and downloads, what the merge policy did,
   segment counts. ``write_amplification`` = all bytes uploaded by those
   compactions / the final version's bytes.
2. A **warm reader** loads the result (``reader_cold_start_segmented``
   against a raw download of the same bytes and an open), then folds the
   segments into its copy: that copy is exactly a full snapshot of the
   collection, the peer size for the byte ratios below.
3. A **3% delta** (new records) is folded: ``compaction_bytes`` (uploaded)
   and ``reader_refresh_bytes`` (what the warm reader downloads).
4. A **fixed 10k delta** is folded onto the 300k base with a cold cache and
   onto an empty base: ``compaction_scaling``; the same run against
   in-process chromadb ``add`` of those records into an open copy of the
   300k collection: ``incremental_compaction_throughput``.
5. A **reader process** serves the layout once settled, against ``chroma
   run`` on a copy of the reader's folded directory: ``reader_query_p50/p99
   _segmented``; then 3% of the base is updated or deleted and the reader
   measured again: ``reader_query_p50_shadowed`` (peer: the same reader
   before).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import chromadb
import numpy as np

from benchmarks.dataplane import DIM, SETTINGS, log, make_records, upload_deltas
from benchmarks.report import Result
from benchmarks.servers import ChromaRun, collection, query_latency
from chromasnap.cli.localstack import free_port
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.result import CompactionResult
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.reader.snapshot import SnapshotReader
from chromasnap.storage import deltas, pointer, snapshots
from chromasnap.storage import manifest as mf
from chromasnap.storage.s3 import S3Store
from servers import Stack, stack_env

ROUNDS = 30


class Counting:
    """An object store that counts the bytes it moves each way."""

    def __init__(self, inner: S3Store) -> None:
        self.inner = inner
        self.up = 0
        self.down = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> Any:
        blob = self.inner.get(key)
        self.down += len(blob.data)
        return blob

    def get_if_changed(self, key: str, etag: str | None) -> Any:
        blob = self.inner.get_if_changed(key, etag)
        if blob is not None:
            self.down += len(blob.data)
        return blob

    def download_file(self, key: str, path: Path, size: int, sha256: str, **kw: Any) -> None:
        self.inner.download_file(key, path, size, sha256, **kw)
        self.down += size

    def upload_file(self, key: str, path: Path, **kw: Any) -> str:
        sha = self.inner.upload_file(key, path, **kw)
        self.up += path.stat().st_size
        return sha

    def put(self, key: str, data: bytes) -> str:
        self.up += len(data)
        return self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        self.up += len(data)
        return self.inner.put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        self.up += len(data)
        return self.inner.put_if_match(key, data, etag)


def compact_cold(store: S3Store, cache: Path) -> tuple[CompactionResult, Counting, float]:
    """One run with an empty cache (a CronJob pod), counting its bytes; seconds end to end."""
    shutil.rmtree(cache, ignore_errors=True)
    counting = Counting(store)
    c = Compactor(counting, SETTINGS, NoLock(),  # type: ignore[arg-type]
                  CompactorOptions(identity="bench", cache_dir=cache, delta_grace_seconds=0))
    t0 = time.perf_counter()
    res = c.run()
    secs = time.perf_counter() - t0
    assert res.result == "succeeded", res.message
    return res, counting, secs


def current(store: S3Store) -> mf.Manifest:
    """The manifest the pointer names."""
    cur = pointer.read(store).pointer
    assert cur is not None
    return snapshots.load_manifest(store, cur.manifest)


def ingest(store: S3Store, total: int, work: Path) -> tuple[list[dict[str, Any]], Result]:
    """``total`` new records in ROUNDS rounds, one cold compaction each."""
    per = total // ROUNDS
    assert compact_cold(store, work / "compactor")[0].result == "succeeded"  # empty v1
    rows: list[dict[str, Any]] = []
    for r in range(ROUNDS):
        upload_deltas(store, r * per, per, 1000 + r)
        res, counted, secs = compact_cold(store, work / "compactor")
        man = current(store)
        rows.append({"round": r + 1, "records": man.record_count, "kind": res.kind,
                     "segments_merged": res.segments_merged, "segments": len(man.segments),
                     "uploaded_bytes": counted.up, "downloaded_bytes": counted.down,
                     "seconds": round(secs, 2), "version_bytes": man.byte_size})
        log(f"ingest round {r + 1}/{ROUNDS}: {rows[-1]}")
    uploaded = sum(row["uploaded_bytes"] for row in rows)
    final = current(store)
    wa = Result(
        "write_amplification", uploaded, final.byte_size, "bytes", "≤ 3×", total,
        higher_is_better=False,
        notes=f"{total:,} records ingested in {ROUNDS} rounds of {per:,}, one cold-cache "
        f"compaction per round; value: bytes uploaded by all of them, peer: the final "
        f"version's bytes ({len(final.segments)} segments on a base of "
        f"{final.base_record_count:,} records)",
        extra={"rounds": rows, "full_runs": sum(1 for row in rows if row["kind"] == "full")},
    )
    return rows, wa


def cold_start(store: S3Store, endpoint: str, man: mf.Manifest, work: Path,
               reader: SnapshotReader) -> tuple[Result, float]:
    """Pointer seen -> version ready (base and every segment) vs raw download + open."""
    query = [np.ones(DIM, dtype=np.float32).tolist()]
    t0 = time.perf_counter()
    assert reader.refresh()
    with reader.use() as snap:
        snap.collection.query(query_embeddings=query, n_results=10)
    ours = time.perf_counter() - t0
    s3 = boto3.client("s3", endpoint_url=endpoint)
    root = store.url.split("/", 3)[3].strip("/") if store.url.count("/") >= 3 else ""
    keys = [(man.base_prefix + f.path, f.path) for f in man.files]
    keys += [(s.prefix + f.path, f"{s.name}/{f.path}") for s in man.segments for f in s.files]
    dest = work / "raw"
    t0 = time.perf_counter()

    def get(pair: tuple[str, str]) -> None:
        target = dest / pair[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(store.bucket, f"{root}/{pair[0]}".lstrip("/"), str(target))

    with ThreadPoolExecutor(snapshots.PARALLEL_FILES) as pool:
        list(pool.map(get, keys))
    client = chromadb.PersistentClient(path=str(dest / mf.DB_DIR))
    client.get_collection(SETTINGS.name).query(query_embeddings=query, n_results=10)
    peer = time.perf_counter() - t0
    client.close()  # type: ignore[attr-defined]
    shutil.rmtree(dest, ignore_errors=True)
    log(f"reader_cold_start_segmented: ours {ours:.2f} s, peer {peer:.2f} s")
    return Result(
        "reader_cold_start_segmented", ours, peer, "s", "≤ 1.2×", man.record_count,
        higher_is_better=False,
        notes=f"the layout the ingest left ({len(man.segments)} segments, "
        f"{man.byte_size / 1e6:.0f} MB): pointer seen -> base and segments downloaded and "
        "verified, segments overlaid, one query answered; peer: raw parallel download of the "
        "same objects + PersistentClient open of the base + one query (no segments applied)",
    ), ours


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peer_add_into(src: Path, start: int, n: int, seed: int, work: Path) -> float:
    """chromadb ``add`` of those records into an open copy of ``src``; seconds of the adds."""
    path = work / "peer-add"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(src, path)
    ids, emb, docs, metas = make_records(start, n, seed)
    client = chromadb.PersistentClient(path=str(path))
    col = client.get_collection(SETTINGS.name)
    step = client.get_max_batch_size()
    t0 = time.perf_counter()
    for off in range(0, n, step):
        col.add(ids=ids[off:off + step], embeddings=emb[off:off + step].tolist(),  # type: ignore[arg-type]
                documents=docs[off:off + step], metadatas=metas[off:off + step])  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    client.close()  # type: ignore[attr-defined]
    shutil.rmtree(path, ignore_errors=True)
    return secs


def shadow(store: S3Store, base_records: int, fraction: float, seed: int) -> int:
    """Update (new vectors) or delete ``fraction`` of the first ``base_records`` ids."""
    rng = np.random.default_rng(seed)
    n = int(base_records * fraction)
    picks = rng.choice(base_records, n, replace=False)
    ts = time.time_ns() // 1000
    ops = []
    for i, rid in enumerate(picks):
        if i % 3 == 0:
            ops.append(Op(OpKind.DELETE, f"r{rid}", OpKey(ts, "shadow", i)))
        else:
            e = rng.standard_normal(DIM).astype(np.float32)
            ops.append(Op(OpKind.UPDATE, f"r{rid}", OpKey(ts, "shadow", i), e, None,
                          {"shadowed": True}))
    store.put(deltas.DeltaName(ts, "shadow").key, deltas.encode(ops, DIM, "shadow"))
    return n


def serving(store: S3Store, endpoint: str, reader_copy: Path, work: Path,
            base_records: int) -> list[Result]:
    """Query latency of a settled reader process on the segment layout, before/after shadowing."""
    stack = Stack(stack_env(store.url, endpoint, SETTINGS.name, DIM, SETTINGS.space.value), work)
    try:
        reader = stack.start("reader", free_port(), CHROMASNAP_POLL_INTERVAL_SECONDS="1")
        stack.wait(reader, "/readyz", timeout=1800)
        _settle(reader, current(store))
        shutil.copytree(reader_copy, work / "peer-db")
        rng = np.random.default_rng(43)
        queries = rng.standard_normal((1050, DIM)).astype(np.float32)
        with ChromaRun(work / "peer-db", work) as peer:
            lat = query_latency({"ours": collection(reader.port),
                                 "peer": collection(peer.port)}, queries)
        p = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in lat.items()}
        log(f"segmented layout: ours p50/p99 {p['ours']}, chroma run {p['peer']}")
        n = shadow(store, base_records, 0.03, 44)
        res, _, _ = compact_cold(store, work / "compactor")
        _settle(reader, current(store))
        after = query_latency({"ours": collection(reader.port)}, queries)["ours"]
        p50_after = float(np.percentile(after, 50))
        log(f"after shadowing {n} base records ({res.kind}): p50 {p50_after:.2f} ms")
    finally:
        stack.stop()
    common = "chromadb.HttpClient, query(n_results=10); 1,000 timed queries per side"
    return [
        Result("reader_query_p50_segmented", p["ours"][0], p["peer"][0], "ms", "≤ 1.1×", 1000,
               higher_is_better=False,
               notes=f"the ingest's segment layout, reader settled; peer: chroma run on a copy "
               f"of the reader's folded directory; {common}"),
        Result("reader_query_p99_segmented", p["ours"][1], p["peer"][1], "ms", "≤ 1.1×", 1000,
               higher_is_better=False, notes="same run as reader_query_p50_segmented"),
        Result("reader_query_p50_shadowed", p50_after, p["ours"][0], "ms", "≤ 1.2×", 1000,
               higher_is_better=False,
               notes=f"{n:,} base records (3%) updated or deleted since the last full version "
               f"(a {res.kind} run); peer: the same reader before; {common}"),
    ]


def _settle(reader: Any, man: mf.Manifest, timeout: float = 1800) -> None:
    """Wait until the reader process serves ``man`` with every segment folded in."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{reader.url}/metrics").text
        vals = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith(("chromasnap_reader_snapshot_seq ",
                                    "chromasnap_reader_segments_pending "))}
        if (vals.get("chromasnap_reader_snapshot_seq") == man.seq
                and vals.get("chromasnap_reader_segments_pending") == 0):
            return
        time.sleep(0.5)
    raise TimeoutError(f"reader did not settle on {man.version}")


@dataclass
class Folded:
    """One measured fold (a segment run) and, if the policy rebuilt first, that run."""

    res: CompactionResult
    counted: Counting
    seconds: float
    refreshed: int
    base_records: int
    rebuild: dict[str, Any] | None

    @property
    def uploaded(self) -> int:
        """Bytes the measured run uploaded."""
        return self.counted.up

    @property
    def rebuild_note(self) -> str:
        """What the rebuild (if any) cost, for the notes."""
        if not self.rebuild:
            return ""
        return (f"The first delta of this size made the policy rebuild the base (a full run, "
                f"as a few of the ingest's rounds did): {self.rebuild['uploaded'] / 1e6:.0f} MB "
                f"uploaded, {self.rebuild['reader_downloaded'] / 1e6:.0f} MB downloaded by "
                f"the warm reader, {self.rebuild['seconds']:.0f} s; the figure is the next "
                "run, a segment run.")


class Folder:
    """Folds deltas onto the benchmark's collection with a cold compactor and a warm reader."""

    def __init__(self, store: S3Store, reader: SnapshotReader, counting: Counting,
                 work: Path) -> None:
        self.store, self.reader, self.counting, self.work = store, reader, counting, work
        self.next_id = current(store).record_count

    def _once(self, n: int, seed: int) -> tuple[CompactionResult, Counting, float, int, int]:
        base_records = current(self.store).record_count
        upload_deltas(self.store, self.next_id, n, seed)
        self.next_id += n
        res, counted, secs = compact_cold(self.store, self.work / "compactor")
        before = self.counting.down
        assert self.reader.refresh()
        refreshed = self.counting.down - before
        self.reader.fold_pending()
        return res, counted, secs, refreshed, base_records

    def measure(self, n: int, start: int, seed: int) -> Folded:
        """Fold ``n`` new records; if that was a rebuild, record it and fold ``n`` more."""
        self.next_id = max(self.next_id, start)
        res, counted, secs, refreshed, base = self._once(n, seed)
        rebuild = None
        if res.kind == "full":
            rebuild = {"uploaded": counted.up, "seconds": secs, "reader_downloaded": refreshed,
                       "base_records": base}
            log(f"  {n} records made a full run: {rebuild}; folding {n} more")
            res, counted, secs, refreshed, base = self._once(n, seed + 1000)
        log(f"  {n} records onto {base}: {res.kind} run, {counted.up / 1e6:.1f} MB up, "
            f"reader {refreshed / 1e6:.1f} MB down, {secs:.2f} s")
        return Folded(res, counted, secs, refreshed, base, rebuild)


def restore_benchmark(endpoint: str, new_bucket_url: Any, work: Path,
                      total: int = 100_000) -> Result:
    """Point-in-time recovery of ``total`` records at an arbitrary time vs exporting the latest."""
    from datetime import UTC, datetime

    from chromasnap.cli.importexport import export_at, export_snapshot

    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    c = Compactor(store, SETTINGS, NoLock(), CompactorOptions(
        identity="bench", cache_dir=work / "pitr-cache", delta_grace_seconds=0,
        recovery_window_seconds=7 * 86_400))
    assert c.run().result == "succeeded"
    per = total // 10
    marks = []
    for r in range(10):
        upload_deltas(store, r * per, per, 500 + r)
        assert c.run().result == "succeeded"
        marks.append(time.time())
    # An arbitrary time: between the 6th and 7th rounds' writes.
    at = datetime.fromtimestamp((marks[5] + marks[6]) / 2 - (marks[6] - marks[5]) / 4, UTC)
    t0 = time.perf_counter()
    restored = export_at(store, work / "pitr-at", at)
    restore_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    export_snapshot(store, work / "pitr-latest")
    latest_s = time.perf_counter() - t0
    log(f"restore at {at.isoformat()}: {restored.record_count} records in {restore_s:.1f} s "
        f"(anchor {restored.anchor.version if restored.anchor else None}, "
        f"{restored.writes} writes replayed); export latest {latest_s:.1f} s")
    return Result(
        "restore_at_time", restore_s, latest_s, "s", "—", restored.record_count,
        higher_is_better=False,
        notes=f"chromasnap export --at T on a {total:,}-record collection ingested in 10 rounds "
        f"with a 7-day recovery window (T between rounds 6 and 7: {restored.record_count:,} "
        f"records, from version {restored.anchor.version if restored.anchor else 'empty'} + "
        f"{restored.writes:,} writes replayed); peer: exporting the latest version",
    )


def run(endpoint: str, new_bucket_url: Any, total: int,
        work: Path) -> tuple[list[Result], dict[str, Any]]:
    """Every segment benchmark; returns results and the scaling rows."""
    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    rows, wa = ingest(store, total, work)
    results = [wa]
    man = current(store)
    counting = Counting(store)
    reader = SnapshotReader(counting, work / "reader")  # type: ignore[arg-type]
    cold, _ = cold_start(store, endpoint, man, work, reader)
    results.append(cold)
    t0 = time.perf_counter()
    reader.fold_pending()
    log(f"reader folded {len(man.segments)} segments in {time.perf_counter() - t0:.0f} s")
    snap = reader.current
    assert snap is not None and snap.pending.empty
    full_bytes = dir_bytes(snap.path)

    per_round = [r["uploaded_bytes"] for r in rows[1:]]
    amortized = sum(per_round) / len(per_round)
    fold = Folder(store, reader, counting, work)
    delta = int(total * 0.03)
    f3 = fold.measure(delta, total, 77)
    results += [
        Result("compaction_bytes", f3.uploaded, full_bytes, "bytes", "≤ 0.05×", delta,
               higher_is_better=False,
               notes=f"a {delta:,}-record delta (3%) folded onto {f3.base_records:,} records by a "
               f"segment run ({f3.seconds:.1f} s); peer: a full snapshot of the same records "
               f"(the reader's folded copy). {f3.rebuild_note} Over the ingest, rounds 2-30 "
               f"uploaded {amortized / 1e6:.1f} MB per 10k-record round on average, base "
               f"rebuilds included ({amortized / full_bytes:.3f}x)",
               extra={"rebuild": f3.rebuild, "amortized_bytes_per_round": amortized}),
        Result("reader_refresh_bytes", f3.refreshed, full_bytes, "bytes", "≤ 0.05×", delta,
               higher_is_better=False,
               notes=f"bytes a warm reader downloaded to serve that version; same peer. "
               f"{f3.rebuild_note}",
               extra={"rebuild": f3.rebuild}),
    ]
    reader.fold_pending()

    fixed = 10_000
    f10 = fold.measure(fixed, fold.next_id, 78)
    res_big, counted_big, secs_big = f10.res, f10.counted, f10.seconds
    empty = S3Store(new_bucket_url(), endpoint_url=endpoint)
    compact_cold(empty, work / "compactor")
    upload_deltas(empty, 0, fixed, 78)
    res_empty, counted_empty, secs_empty = compact_cold(empty, work / "compactor")
    snap = reader.current
    assert snap is not None
    peer_s = peer_add_into(snap.path / mf.DB_DIR, fold.next_id, fixed, 79, work)
    results += [
        Result("compaction_scaling", secs_big, secs_empty, "s", "≤ 1.3×", fixed,
               higher_is_better=False,
               notes=f"a {fixed:,}-record delta, cold compactor cache: onto "
               f"{f10.base_records:,} records ({res_big.kind} run) vs onto an empty base "
               f"({res_empty.kind} run). {f10.rebuild_note}",
               extra={"big": {"steps": res_big.steps, "up": counted_big.up,
                              "down": counted_big.down},
                      "empty": {"steps": res_empty.steps, "up": counted_empty.up,
                                "down": counted_empty.down}}),
        Result("incremental_compaction_throughput", fixed / secs_big, fixed / peer_s,
               "records/s", "≥ 1.5×", fixed,
               notes=f"end to end, cold cache, onto {f10.base_records:,} records; peer: in-process "
               f"chromadb add of {fixed:,} records into an open copy of that collection "
               "(timed for add only)"),
    ]
    scaling = [
        {"base_records": 0, "kind": res_empty.kind, "seconds": round(secs_empty, 2),
         "downloaded_bytes": counted_empty.down, "uploaded_bytes": counted_empty.up,
         "steps_seconds": res_empty.steps},
        *[{"base_records": r["records"] - total // ROUNDS, "kind": r["kind"],
           "seconds": r["seconds"], "downloaded_bytes": r["downloaded_bytes"],
           "uploaded_bytes": r["uploaded_bytes"], "steps_seconds": {}}
          for r in rows if r["round"] == ROUNDS // 3 + 1],
        {"base_records": f10.base_records, "kind": res_big.kind, "seconds": round(secs_big, 2),
         "downloaded_bytes": counted_big.down, "uploaded_bytes": counted_big.up,
         "steps_seconds": res_big.steps},
    ]
    copy = snap.path / mf.DB_DIR
    results += serving(store, endpoint, copy, work / "serving", current(store).base_record_count)
    reader.close()
    results.append(restore_benchmark(endpoint, new_bucket_url, work))
    return results, {"delta_records": fixed, "rows": scaling, "ingest": rows}
