"""Serving benchmarks: real ``chromasnap reader``/``writer`` processes against ``chroma run``.

Everything goes through the plain ``chromadb.HttpClient`` over loopback:

- ``reader_query_p50`` / ``reader_query_p99``: one client, ``query(n_results=10)``
  with the same query vectors against a chromasnap reader and against
  ``chroma run`` serving a byte-for-byte copy of the reader's snapshot
  directory; measured in alternating blocks (ABBA) so machine noise hits both.
- ``reader_query_throughput``: 4 concurrent clients (threads, each its own
  ``HttpClient``), queries per second, alternating rounds.
- ``writer_ingest``: several concurrent clients upserting 100-record batches
  to one chromasnap writer (acknowledged = the delta is in S3) against the
  same payloads upserted into ``chroma run`` (the better of 1 and N clients).
- ``freshness_p99``: write acknowledged by the writer -> visible on every one
  of 3 readers (read level ``fresh``, the writer pushes deltas to them).

The reader is profiled with py-spy during a separate pass of the latency
queries (so sampling never slows the timed blocks); the hottest frames go to
``docs/benchmarks.md`` between the ``profile`` markers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings

from benchmarks import report
from benchmarks.dataplane import DIM, SETTINGS, log, make_records, new_compactor, upload_deltas
from benchmarks.report import Result
from chromasnap.cli.localstack import free_port
from chromasnap.storage import manifest as mf
from chromasnap.storage import pointer
from chromasnap.storage.s3 import S3Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the process harness lives with the tests

from servers import ChromaRun, Proc, Stack, stack_env  # noqa: E402

VENV_BIN = Path(sys.executable).parent
READERS = 3
READER_POLL_S = 5  # the CRD default (reader.pollIntervalSeconds); pushes do the work
LAT_WARMUP = 50
LAT_BLOCK = 50
LAT_BLOCKS = 20  # per side: 20 x 50 = 1000 timed queries
TP_CLIENTS = 4
TP_PER_CLIENT = 100
TP_ROUNDS = 2  # per side, ABBA order
INGEST_CLIENTS = 8
INGEST_BATCH = 100
INGEST_BATCHES_PER_CLIENT = 8
INGEST_ROUNDS = 2
FRESH_WRITES = 300
FRESH_TIMEOUT_S = 10.0
PROFILE_SECONDS = 8
PROFILE_START = "<!-- profile:start -->"
PROFILE_END = "<!-- profile:end -->"

# (function, file) pairs whose inclusive share of the reader's on-CPU samples is reported.
PROFILE_FRAMES: list[tuple[str, str, str]] = [
    (
        "Runner.run",
        "asyncio/runners.py",
        "event-loop thread: uvloop + httptools (native) and the app's coroutines",
    ),
    ("ChromaAPI._http", "chromasnap/api/app.py", "the ASGI app's own Python, on the event loop"),
    ("parse_query", "chromasnap/api/parsing.py", "request parse + embedding decode"),
    ("json_response", "chromasnap/api/responses.py", "response serialisation (orjson)"),
    ("_worker", "concurrent/futures/thread.py", "thread-pool workers (asyncio.to_thread)"),
    (
        "query_raw",
        "chromasnap/engine/reads.py",
        "chromadb's Rust bindings: HNSW search + SQLite record fetch",
    ),
    ("ReaderBackend._overlay", "chromasnap/reader/backend.py", "fresh-read tail overlay"),
    ("Poller._loop", "chromasnap/reader/poller.py", "background pointer / tail polling"),
    ("Freshness._loop", "chromasnap/reader/freshness.py",
     "fresh-read guarantee: writer registrations LIST and lease renewals"),
]


# --- processes ------------------------------------------------------------------------


def client(port: int) -> Any:
    """A fresh ``chromadb.HttpClient`` (its own connection pool; the client mutates its
    settings, so each gets new ones)."""
    settings = Settings(anonymized_telemetry=False)
    return chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings)


def collection(port: int, name: str = SETTINGS.name) -> Any:
    """The named collection through a fresh client (never embeds: embeddings are given)."""
    return client(port).get_collection(name, embedding_function=None)


def server_seconds(p: Proc, route: str) -> tuple[float, float]:
    """(sum of seconds, count) of the server's own request-duration histogram for ``route``."""
    with urllib.request.urlopen(p.url + "/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if f'route="{route}"' not in line:
            continue
        if line.startswith("chromasnap_http_request_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("chromasnap_http_request_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


# --- reader latency and throughput ------------------------------------------------------


def query_latency(cols: dict[str, Any], queries: np.ndarray[Any, Any]) -> dict[str, list[float]]:
    """Milliseconds per single-vector query, per side, in alternating (ABBA) blocks."""
    names = list(cols)
    for name in names:  # warm-up: connections, caches, lazy imports
        for q in queries[:LAT_WARMUP]:
            cols[name].query(query_embeddings=[q], n_results=10)
    lat: dict[str, list[float]] = {n: [] for n in names}
    for b in range(LAT_BLOCKS):
        block = queries[LAT_WARMUP + b * LAT_BLOCK : LAT_WARMUP + (b + 1) * LAT_BLOCK]
        for name in names if b % 2 == 0 else names[::-1]:
            col, out = cols[name], lat[name]
            for q in block:
                t0 = time.perf_counter()
                col.query(query_embeddings=[q], n_results=10)
                out.append((time.perf_counter() - t0) * 1000)
    return lat


def run_together(n: int, work: Callable[[int], None]) -> float:
    """Seconds for ``n`` threads running ``work(i)`` released at once; re-raises a failure."""
    start = threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return secs


def query_throughput(port: int, queries: np.ndarray[Any, Any]) -> tuple[int, float]:
    """(queries, seconds) for TP_CLIENTS threads, each with its own client, all at once."""
    cols = [collection(port) for _ in range(TP_CLIENTS)]
    for c in cols:
        c.query(query_embeddings=[queries[0]], n_results=10)
    def work(i: int) -> None:
        for q in queries[i * TP_PER_CLIENT : (i + 1) * TP_PER_CLIENT]:
            cols[i].query(query_embeddings=[q], n_results=10)

    return TP_CLIENTS * TP_PER_CLIENT, run_together(TP_CLIENTS, work)


def same_answers(ours: Any, peer: Any, queries: np.ndarray[Any, Any]) -> bool:
    """Whether both servers return the same ids (and distances) for the first queries."""
    a = ours.query(query_embeddings=queries[:5], n_results=10)
    b = peer.query(query_embeddings=queries[:5], n_results=10)
    return bool(
        a["ids"] == b["ids"]
        and np.allclose(np.asarray(a["distances"]), np.asarray(b["distances"]), atol=1e-5)
    )


@contextlib.contextmanager
def py_spy(pid: int, out: Path, seconds: int) -> Iterator[subprocess.Popen[bytes]]:
    """Sample ``pid`` with py-spy (non-blocking, all threads, idle excluded) for ``seconds``."""
    spy = subprocess.Popen(
        [
            str(VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attach before the load starts
    try:
        yield spy
    finally:
        try:
            spy.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def py_spy_version() -> str | None:
    """``py-spy --version`` or None when it is not installed."""
    exe = VENV_BIN / "py-spy"
    if not exe.exists():
        return None
    return subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()


def _is_frame(frame: str, func: str, file: str) -> bool:
    """Whether a py-spy frame (``Class.func (pkg/file.py:123)``) is ``func`` in ``file``."""
    name, _, where = frame.partition(" (")
    return where.startswith(file + ":") and (
        name == func or name.endswith("." + func) or name.endswith(">." + func)
    )


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Inclusive shares of known frames and the top self-time frames of py-spy raw output."""
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks)
    if not total:
        return {"samples": 0}
    inclusive = []
    for func, file, meaning in PROFILE_FRAMES:
        n = sum(c for frames, c in stacks if any(_is_frame(f, func, file) for f in frames))
        inclusive.append(
            {"frame": f"{func} ({file})", "meaning": meaning, "share": round(n / total, 3)}
        )
    leaf: Counter[str] = Counter()
    for frames, c in stacks:
        leaf[frames[-1]] += c
    top = [{"frame": f, "share": round(c / total, 3)} for f, c in leaf.most_common(12)]
    return {"samples": total, "inclusive": inclusive, "self_top": top}


def profile_reader(
    reader: Proc, col: Any, queries: np.ndarray[Any, Any], work: Path
) -> dict[str, Any]:
    """py-spy the reader process while one client runs the latency queries against it."""
    version = py_spy_version()
    if version is None:
        log("py-spy not installed (pip install py-spy); no profile")
        return {"tool": None}
    out = work / "reader-profile.txt"
    n = 0
    with py_spy(reader.proc.pid, out, PROFILE_SECONDS) as spy:
        while spy.poll() is None:
            col.query(query_embeddings=[queries[n % len(queries)]], n_results=10)
            n += 1
    if not out.exists():
        err = spy.stderr.read().decode() if spy.stderr else ""
        log(f"py-spy wrote nothing: {err[-500:]}")
        return {"tool": version, "error": err[-500:]}
    summary = summarize_profile(out)
    summary.update({"tool": version, "queries": n, "seconds": PROFILE_SECONDS, "rate_hz": 200})
    return summary


def reader_benchmarks(
    reader: Proc, peer: ChromaRun, n_records: int, work: Path
) -> tuple[list[Result], dict[str, Any]]:
    """Latency p50/p99 and 4-client throughput, reader vs chroma run on the same snapshot."""
    rng = np.random.default_rng(42)
    queries = rng.standard_normal((LAT_WARMUP + LAT_BLOCKS * LAT_BLOCK, DIM)).astype(np.float32)
    cols = {"chromasnap": collection(reader.port), "chroma run": collection(peer.port)}
    same = same_answers(cols["chromasnap"], cols["chroma run"], queries)
    log(f"reader_query latency: {LAT_BLOCKS} blocks of {LAT_BLOCK} per side (same answers: {same})")
    s0 = server_seconds(reader, "query")
    lat = query_latency(cols, queries)
    s1 = server_seconds(reader, "query")
    in_app_ms = (s1[0] - s0[0]) / max(1.0, s1[1] - s0[1]) * 1000
    ours, theirs = np.asarray(lat["chromasnap"]), np.asarray(lat["chroma run"])
    p = {
        k: (float(np.percentile(v, 50)), float(np.percentile(v, 99)))
        for k, v in (("ours", ours), ("peer", theirs))
    }
    log(
        f"  ours p50 {p['ours'][0]:.2f} ms p99 {p['ours'][1]:.2f} ms "
        f"(in-app mean {in_app_ms:.2f} ms); peer p50 {p['peer'][0]:.2f} p99 {p['peer'][1]:.2f}"
    )

    tp: dict[str, list[tuple[int, float]]] = {"ours": [], "peer": []}
    tq = rng.standard_normal((TP_CLIENTS * TP_PER_CLIENT, DIM)).astype(np.float32)
    for rnd in range(TP_ROUNDS):
        order = [("ours", reader.port), ("peer", peer.port)]
        for side, port in order if rnd % 2 == 0 else order[::-1]:
            tp[side].append(query_throughput(port, tq))
    qps = {k: sum(n for n, _ in v) / sum(s for _, s in v) for k, v in tp.items()}
    log(
        f"  throughput ({TP_CLIENTS} clients): ours {qps['ours']:.0f} q/s, "
        f"peer {qps['peer']:.0f} q/s"
    )

    log(f"profiling the reader with py-spy for {PROFILE_SECONDS} s")
    prof = profile_reader(reader, cols["chromasnap"], queries, work)
    common = (
        f"{n_records:,} records x {DIM} dims (cosine); chromadb.HttpClient, "
        f"query(n_results=10), default include; same query vectors"
    )
    extra = {
        "ours_ms": {"p50": p["ours"][0], "p99": p["ours"][1], "mean": float(ours.mean())},
        "peer_ms": {"p50": p["peer"][0], "p99": p["peer"][1], "mean": float(theirs.mean())},
        "reader_in_app_mean_ms": round(in_app_ms, 3),
        "same_answers": same,
        "records": n_records,
    }
    results = [
        Result(
            "reader_query_p50",
            p["ours"][0],
            p["peer"][0],
            "ms",
            "≤ 1.1×",
            len(ours),
            higher_is_better=False,
            notes=f"{common}; 1 client, {LAT_BLOCKS} alternating blocks of {LAT_BLOCK} "
            f"after {LAT_WARMUP} warm-up queries per side",
            extra={**extra, "profile": prof},
        ),
        Result(
            "reader_query_p99",
            p["ours"][1],
            p["peer"][1],
            "ms",
            "≤ 1.1×",
            len(ours),
            higher_is_better=False,
            notes=f"{common}; same run as reader_query_p50",
            extra=extra,
        ),
        Result(
            "reader_query_throughput",
            qps["ours"],
            qps["peer"],
            "queries/s",
            "≥ 0.9×",
            sum(n for n, _ in tp["ours"]),
            notes=f"{common}; {TP_CLIENTS} concurrent clients (threads, each its own "
            f"HttpClient), {TP_ROUNDS} alternating rounds of {TP_CLIENTS}x{TP_PER_CLIENT}",
            extra={"rounds": {k: [round(n / s, 1) for n, s in v] for k, v in tp.items()}},
        ),
    ]
    return results, prof


# --- writer ingest ------------------------------------------------------------------------


def ingest(
    col_for_client: Callable[[], Any], batches: list[tuple[Any, ...]], clients: int
) -> float:
    """Seconds for ``clients`` threads (each its own HttpClient) to upsert ``batches``."""
    cols = [col_for_client() for _ in range(clients)]
    def work(i: int) -> None:
        for ids, emb, docs, metas in batches[i::clients]:
            cols[i].upsert(ids=ids, embeddings=emb, documents=docs, metadatas=metas)

    return run_together(clients, work)


def make_batches(start: int, seed: int) -> list[tuple[Any, ...]]:
    """INGEST_CLIENTS x INGEST_BATCHES_PER_CLIENT batches of INGEST_BATCH records."""
    n = INGEST_CLIENTS * INGEST_BATCHES_PER_CLIENT * INGEST_BATCH
    ids, emb, docs, metas = make_records(start, n, seed)
    return [
        (
            ids[o : o + INGEST_BATCH],
            emb[o : o + INGEST_BATCH],
            docs[o : o + INGEST_BATCH],
            metas[o : o + INGEST_BATCH],
        )
        for o in range(0, n, INGEST_BATCH)
    ]


def peer_collection(peer: ChromaRun, name: str) -> Callable[[], Any]:
    """Create an empty collection on chroma run (same space); return a per-client opener."""
    client(peer.port).create_collection(
        name, configuration={"hnsw": {"space": SETTINGS.space.value}}, embedding_function=None
    )
    return lambda: collection(peer.port, name)


def writer_ingest(
    stack: Stack, new_bucket_url: Any, endpoint: str, peer: ChromaRun, work: Path
) -> list[Result]:
    """Durable records/s through one writer vs the same upserts into chroma run.

    chroma run is measured with 1 client and with INGEST_CLIENTS clients (its
    throughput falls with concurrent writers); the ratio is against its better figure.
    Every peer measurement starts from a new, empty collection, like ours.
    """
    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    new_compactor(store, work / "ingest-compactor").run()  # the empty collection, version 1
    writer = stack.start("writer", CHROMASNAP_BUCKET_URL=store.url)  # no readers to notify
    stack.wait(writer, "/readyz")  # registered and past its start-up gate (writer/fanout.py)
    n = INGEST_CLIENTS * INGEST_BATCHES_PER_CLIENT * INGEST_BATCH
    secs: dict[str, list[float]] = {"ours": [], "peer_1_client": [], "peer_n_clients": []}
    for rnd in range(INGEST_ROUNDS):
        batches = make_batches(50_000_000 + rnd * n, 100 + rnd)
        sides: list[tuple[str, int]] = [
            ("ours", INGEST_CLIENTS),
            ("peer_n_clients", INGEST_CLIENTS),
            ("peer_1_client", 1),
        ]
        for side, clients in sides if rnd % 2 == 0 else sides[::-1]:
            if side == "ours":
                opener: Callable[[], Any] = lambda: collection(writer.port)  # noqa: E731
            else:
                opener = peer_collection(peer, f"ingest-{rnd}-{clients}")
            secs[side].append(ingest(opener, batches, clients))
    rate = {k: n * len(v) / sum(v) for k, v in secs.items()}
    best_peer = max(rate["peer_1_client"], rate["peer_n_clients"])
    log(
        f"writer_ingest: ours {rate['ours']:.0f} records/s; chroma run "
        f"{rate['peer_1_client']:.0f} (1 client), {rate['peer_n_clients']:.0f} "
        f"({INGEST_CLIENTS} clients)"
    )
    return [
        Result(
            "writer_ingest",
            rate["ours"],
            best_peer,
            "records/s",
            "≥ 3×",
            n * INGEST_ROUNDS,
            notes=f"upserts of {INGEST_BATCH} x {DIM}-dim records (+document, metadata); ours = "
            f"{INGEST_CLIENTS} concurrent HttpClients to 1 writer, acknowledged once the delta "
            "is in MinIO (50 ms group-commit window); peer = the same upserts into a new "
            f"collection on chroma run, the better of 1 client "
            f"({rate['peer_1_client']:.0f} records/s) and {INGEST_CLIENTS} concurrent clients "
            f"({rate['peer_n_clients']:.0f} records/s); {INGEST_ROUNDS} alternating rounds "
            f"of {n} records",
            extra={
                "seconds": secs,
                "records_per_s": {k: round(v, 1) for k, v in rate.items()},
            },
        )
    ]


# --- freshness ---------------------------------------------------------------------------


def freshness(writer: Proc, readers: list[Proc]) -> list[Result]:
    """Write acknowledged -> visible on every reader (get by id), FRESH_WRITES times."""
    wcol = collection(writer.port)
    rcols = [collection(r.port) for r in readers]
    rng = np.random.default_rng(7)
    lags: list[float] = []
    per_reader: list[list[float]] = [[] for _ in readers]
    timeouts = 0
    for i in range(FRESH_WRITES):
        rid = f"fresh-{i}"
        wcol.upsert(
            ids=[rid],
            embeddings=rng.standard_normal((1, DIM)).astype(np.float32),
            documents=[f"fresh {i}"],
            metadatas=[{"i": i}],
        )
        acked = time.perf_counter()
        pending = set(range(len(readers)))
        while pending:
            for r in sorted(pending):
                if rcols[r].get(ids=[rid], include=[])["ids"]:
                    per_reader[r].append(time.perf_counter() - acked)
                    pending.discard(r)
            if time.perf_counter() - acked > FRESH_TIMEOUT_S:
                timeouts += 1
                break
        lags.append(time.perf_counter() - acked)
        time.sleep(float(rng.uniform(0, 0.02)))  # do not stay in lockstep with anything
    arr = np.asarray(lags)
    p99 = float(np.percentile(arr, 99))
    log(
        f"freshness: p50 {np.percentile(arr, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {arr.max() * 1000:.0f} ms, timeouts {timeouts}"
    )
    return [
        Result(
            "freshness_p99",
            p99,
            None,
            "s",
            "p99 ≤ 1 s",
            len(lags),
            higher_is_better=False,
            notes=f"{len(lags)} single-record upserts to 1 writer, each then polled by id "
            f"(get) on all {len(readers)} readers (read level fresh, writer pushes deltas; "
            f"pointer/tail poll every {READER_POLL_S} s as a fallback) until visible on every one",
            extra={
                "p50_s": float(np.percentile(arr, 50)),
                "max_s": float(arr.max()),
                "timeouts": timeouts,
                "per_reader_p99_s": [float(np.percentile(x, 99)) for x in per_reader if x],
            },
        )
    ]


# --- the whole benchmark -------------------------------------------------------------------


def load_note() -> str:
    """A note on the machine's load when the run started (other work shares it)."""
    one, five, _ = os.getloadavg()
    return f"load average at start {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def run(minio_endpoint: str, new_bucket_url: Any, records: int) -> list[Result]:
    """All serving benchmarks on a snapshot of ``records`` records; returns their results."""
    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-servers-"))
    load = load_note()
    log(f"servers: {load}")
    try:
        store = S3Store(new_bucket_url(), endpoint_url=minio_endpoint)
        t0 = time.perf_counter()
        assert new_compactor(store, work / "compactor").run().result == "succeeded"
        upload_deltas(store, 0, records, 1)
        res = new_compactor(store, work / "compactor").run()
        assert res.result == "succeeded", res.message
        shutil.rmtree(work / "compactor", ignore_errors=True)
        log(f"servers: snapshot of {records} records in {time.perf_counter() - t0:.0f} s")

        env = stack_env(store.url, minio_endpoint, SETTINGS.name, DIM, SETTINGS.space.value)
        stack = Stack(env, work)
        try:
            ports = [free_port() for _ in range(READERS)]
            notify = ",".join(f"http://127.0.0.1:{p}" for p in ports)
            writer = stack.start("writer", CHROMASNAP_NOTIFY_URLS=notify)
            readers = [
                stack.start(
                    "reader",
                    p,
                    CHROMASNAP_WRITER_URL=writer.url,
                    CHROMASNAP_READ_LEVEL="fresh",
                    CHROMASNAP_POLL_INTERVAL_SECONDS=str(READER_POLL_S),
                )
                for p in ports
            ]
            for reader in readers:
                stack.wait(reader, "/readyz", timeout=300)
            cur = pointer.read(store).pointer
            assert cur is not None
            src = work / f"reader-{readers[0].port}" / "snapshots" / cur.version / mf.DB_DIR
            shutil.copytree(src, work / "peer-db")
            with ChromaRun(work / "peer-db", work) as peer:
                results, _ = reader_benchmarks(readers[0], peer, records, work)
                # Before fresh_writes fills the readers' tail (nothing compacts here).
                results += freshness(writer, readers)
                ingested = writer_ingest(stack, new_bucket_url, minio_endpoint, peer, work)
                results += ingested
                from benchmarks.freshwrites import fresh_writes  # it imports this module

                assert ingested[0].peer is not None
                results += fresh_writes(stack, writer, READERS, new_bucket_url, minio_endpoint,
                                        peer, ingested[0].peer, work)
        finally:
            stack.stop()
        for result in results:
            result.notes = f"{result.notes}; {load}" if result.notes else load
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_profile(results: list[Result]) -> None:
    """Put the reader profile's table between the profile markers in docs/benchmarks.md."""
    prof = next((r.extra.get("profile") for r in results if r.name == "reader_query_p50"), None)
    if not prof or not prof.get("samples"):
        return
    rows = [
        f"py-spy {prof['tool'].split()[-1]} on the reader process, {prof['rate_hz']} Hz for "
        f"{prof['seconds']} s while one client sent {prof['queries']} latency queries; "
        f"{prof['samples']} on-CPU samples (all threads, idle excluded).",
        "",
        "| frame (inclusive) | what it is | share of samples |",
        "| --- | --- | ---: |",
        *(f"| `{i['frame']}` | {i['meaning']} | {i['share']:.0%} |" for i in prof["inclusive"]),
        "",
        "| hottest frames (self time) | share |",
        "| --- | ---: |",
        *(f"| `{t['frame']}` | {t['share']:.0%} |" for t in prof["self_top"]),
    ]
    block = "\n".join([PROFILE_START, *rows, PROFILE_END])
    text = report.MD_PATH.read_text()
    if PROFILE_START not in text:
        text = text.rstrip("\n") + f"\n\n## Where the time goes\n\n{PROFILE_START}\n{PROFILE_END}\n"
    start, end = text.index(PROFILE_START), text.index(PROFILE_END) + len(PROFILE_END)
    report.MD_PATH.write_text(text[:start] + block + text[end:])
