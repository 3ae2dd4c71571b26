"""Soak: hours of churn through real processes, beside ``chroma run`` under the same load.

``make soak`` (``python -m benchmarks.soak --minutes N [--faults]``) starts, on
loopback only: MinIO, 2 ``chromasnap writer`` and 2 ``chromasnap reader``
processes (read level ``fresh``, writers pushing deltas to readers) as the CLI
starts them (``chromasnap.cli.localstack``), a ``chromasnap compactor`` process
every minute like the CronJob (a fresh cache each run, as a new pod has), and
``chroma run`` as the peer. Four client processes use ``chromadb.HttpClient``:
two send ~10 writes/s each (upserts, metadata updates and deletes over a fixed
id space, see ``soakmodel``) to our writers *and* to ``chroma run``; two send
~10 reads/s each (``query`` with and without ``where``, ``get``, ``count``) to
our readers and to ``chroma run``, alternating which goes first.

Every minute it samples the RSS and open fds of each process, each reader's
cache bytes (the index it serves), the readers' tail and pending segments, and
the bucket's bytes; every compaction's kind and time; every request's latency.
With ``--faults``: MinIO stopped for 15 s, one writer and one reader SIGKILLed
and restarted. At the end the load stops, the compactor folds everything, and
every reader and an export (``chromasnap export``) are checked against the
reference model of the acknowledged history: the records it rules out must be 0.
The ``soak_*`` figures go to docs/benchmarks.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.dataplane import DIM, SETTINGS, log
from benchmarks.report import Result
from benchmarks.soakmodel import (
    ID_SPACE,
    UPDATE,
    UPSERT,
    Model,
    State,
    Windows,
    Write,
    embedding,
    next_write,
    observed_state,
    percentile,
    ratio,
    slope_per_hour,
)
from chromasnap.cli.localstack import free_port
from chromasnap.storage.s3 import S3Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the process and MinIO harnesses live there

from minio_server import MinioServer, minio_binary, s3_env  # noqa: E402
from servers import Proc, Stack, stack_env  # noqa: E402

WRITE_CLIENTS = 2
QUERY_CLIENTS = 2
WRITES_PER_S = 10.0  # per write client: ~20/s in all
QUERIES_PER_S = 10.0  # per query client, to each side
COMPACT_EVERY_S = 60.0
COMPACT_TIMEOUT_S = 600.0
RETAIN = 3
GRACE_S = 600
MINIO_DOWN_S = 15.0
SOAK_START = "<!-- soak:start -->"
SOAK_END = "<!-- soak:end -->"


# ---------------------------------------------------------------- client processes


def _collection(port: int) -> Any:
    from benchmarks.servers import collection

    return collection(port)


def _paced(rate: float, deadline: float) -> Iterator[int]:
    """Yield 0, 1, 2, … at ``rate`` per second until ``deadline`` (monotonic); never bursts."""
    start, n = time.monotonic(), 0
    while True:
        due = start + n / rate
        now = time.monotonic()
        if now >= deadline:
            return
        if due > now:
            time.sleep(min(due - now, deadline - now))
        elif now - due > 1.0:  # fell behind (a stalled server): skip, do not burst
            start, n = now, 0
        yield n
        n += 1


class Side:
    """One server as a client process sees it: a collection, re-opened after a failure."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._cols: dict[int, Any] = {}

    def call(self, i: int, fn: Callable[[Any], Any]) -> float:
        """Run ``fn`` on the collection of port ``i % len(ports)``; milliseconds. Raises."""
        port = self.ports[i % len(self.ports)]
        try:
            if port not in self._cols:
                self._cols[port] = _collection(port)
            col = self._cols[port]
            t0 = time.perf_counter()
            fn(col)
            return (time.perf_counter() - t0) * 1000
        except Exception:
            self._cols.pop(port, None)  # a restarted server: connect again next time
            raise


def _each_side(fh: Any, row: dict[str, Any], sides: list[tuple[str, Side]], i: int,
               fn: Callable[[Any], Any]) -> None:
    """Run ``fn`` on each side in turn; log milliseconds (or the error) as one JSON line."""
    for name, side in sides:
        try:
            row[name] = round(side.call(i, fn), 3)
        except Exception as e:
            row[name] = None
            row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:200]
    fh.write(json.dumps(row) + "\n")
    fh.flush()


def run_write_client(client: int, ours: list[int], peer: int, seconds: float, out: Path) -> None:
    """Send paced writes to our writers (alternating) and to chroma run; log each result."""
    rng = np.random.default_rng(1000 + client)
    sides = [("ours", Side(ours)), ("peer", Side([peer]))]
    deadline = time.monotonic() + seconds
    t_start = time.time()
    with out.open("w") as fh:
        for seq in _paced(WRITES_PER_S, deadline):
            w = next_write(rng, client, WRITE_CLIENTS, seq)
            vec = embedding(client, seq, DIM)

            def send(col: Any, w: Any = w, vec: Any = vec) -> None:
                if w.kind == UPSERT:
                    col.upsert(ids=[w.rid], embeddings=[vec], documents=[w.document],
                               metadatas=[w.metadata])
                elif w.kind == UPDATE:
                    col.update(ids=[w.rid], metadatas=[w.metadata])
                else:
                    col.delete(ids=[w.rid])

            row = {"t": round(time.time() - t_start, 3), "seq": seq, "kind": w.kind,
                   "rid": w.rid, "g": w.group}
            _each_side(fh, row, sides, seq, send)


def run_query_client(client: int, ours: list[int], peer: int, seconds: float, out: Path) -> None:
    """Send paced reads to our readers (alternating) and to chroma run; log latencies."""
    rng = np.random.default_rng(2000 + client)
    sides = [("ours", Side(ours)), ("peer", Side([peer]))]
    deadline = time.monotonic() + seconds
    t_start = time.time()
    kinds = ("query", "query_where", "get", "count")
    with out.open("w") as fh:
        for n in _paced(QUERIES_PER_S, deadline):
            kind = kinds[int(rng.choice(4, p=[0.35, 0.3, 0.25, 0.1]))]
            q = rng.standard_normal(DIM).astype(np.float32)
            g = int(rng.integers(10))

            def read(col: Any, kind: str = kind, q: Any = q, g: int = g) -> None:
                if kind == "query":
                    col.query(query_embeddings=[q], n_results=10)
                elif kind == "query_where":
                    col.query(query_embeddings=[q], n_results=10, where={"g": g})
                elif kind == "get":
                    col.get(where={"g": g}, limit=10)
                else:
                    col.count()

            row = {"t": round(time.time() - t_start, 3), "kind": kind}
            _each_side(fh, row, sides if n % 2 == 0 else sides[::-1], n, read)


# ---------------------------------------------------------------- sampling


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid``."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def dir_mb(path: Path) -> float:
    """MB of the regular files under ``path`` (files vanishing meanwhile are skipped)."""
    total = 0
    for p in path.rglob("*"):
        with suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total / 1e6


def metrics_of(p: Proc) -> dict[str, float]:
    """The reader gauges the soak follows, from its /metrics."""
    wanted = ("chromasnap_reader_tail_records", "chromasnap_reader_tail_deltas",
              "chromasnap_reader_segments_pending", "chromasnap_reader_snapshot_seq")
    try:
        with urllib.request.urlopen(p.url + "/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name.removeprefix("chromasnap_reader_")] = float(value)
    return out


def bucket_bytes(store: Any) -> dict[str, int]:
    """Bytes under each top-level prefix of the collection root, in all, and the object count."""
    out: dict[str, int] = {"total": 0, "objects": 0}
    for o in store.list(""):
        top = o.key.split("/", 1)[0] if "/" in o.key else o.key
        out[top] = out.get(top, 0) + o.size
        out["total"] += o.size
        out["objects"] += 1
    return out


def hnsw_elements(cache: Path) -> int | None:
    """Elements of the largest HNSW index under a reader's cache: what it serves from."""
    from chromasnap.engine.rebuild import hnsw_elements as elements

    counts = [elements(h.parent) for h in cache.rglob("header.bin")]
    return max((c for c in counts if c is not None), default=None)


# ---------------------------------------------------------------- the run


@dataclass
class Soak:
    """Everything one soak run starts, samples and checks."""

    minutes: float
    warmup_minutes: float
    faults: bool
    work: Path
    minio: MinioServer
    store: Any = None
    stack: Stack | None = None
    writers: list[Proc] = field(default_factory=list)
    readers: list[Proc] = field(default_factory=list)
    peer: Any = None
    t0: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    compactions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        """Seconds since the load started."""
        return time.time() - self.t0

    def env(self) -> dict[str, str]:
        """The environment every chromasnap process of the collection gets."""
        return stack_env(self.store.url, self.minio.endpoint, SETTINGS.name, DIM,
                         SETTINGS.space.value, CHROMASNAP_POLL_INTERVAL_SECONDS="5",
                         CHROMASNAP_LOG_FORMAT="json", CHROMASNAP_LOG_LEVEL="WARNING")

    # -- processes --------------------------------------------------------------------

    def compact(self, note: str = "") -> dict[str, Any]:
        """One ``chromasnap compactor`` process with an empty cache, like a CronJob pod."""
        cache = self.work / "compactor-cache"
        shutil.rmtree(cache, ignore_errors=True)
        result = self.work / "compaction-result.json"
        result.unlink(missing_ok=True)
        env = {**self.env(), "CHROMASNAP_CACHE_DIR": str(cache),
               "CHROMASNAP_RESULT_FILE": str(result), "CHROMASNAP_IDENTITY": "soak-compactor",
               "CHROMASNAP_RETAIN_SNAPSHOTS": str(RETAIN),
               "CHROMASNAP_DELTA_GRACE_SECONDS": str(GRACE_S)}
        t0 = time.perf_counter()
        with (self.work / "compactor.log").open("ab") as fh:
            try:
                code = subprocess.run([sys.executable, "-m", "chromasnap", "compactor"], env=env,
                                      stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=COMPACT_TIMEOUT_S, check=False).returncode
            except subprocess.TimeoutExpired:
                code = -1
        row: dict[str, Any] = {"t": round(self.now(), 1), "exit": code, "note": note,
                               "wall_s": round(time.perf_counter() - t0, 2)}
        with suppress(OSError, ValueError):
            res = json.loads(result.read_text())
            row.update({k: res.get(k) for k in (
                "result", "reason", "kind", "duration_seconds", "record_count", "snapshot_bytes",
                "records_folded", "deltas_folded", "segments", "pending_deltas", "steps",
                "base_rebuilt")})
        self.compactions.append(row)
        return row

    def start_servers(self) -> None:
        """Writers pushing to readers, readers forwarding to a writer; wait until ready."""
        self.stack = Stack(self.env(), self.work / "procs")
        reader_ports = [free_port() for _ in range(2)]
        notify = ",".join(f"http://127.0.0.1:{p}" for p in reader_ports)
        self.writers = [self.stack.start("writer", CHROMASNAP_NOTIFY_URLS=notify)
                        for _ in range(2)]
        self.readers = [self.stack.start("reader", p, CHROMASNAP_WRITER_URL=self.writers[0].url,
                                         CHROMASNAP_READ_LEVEL="fresh") for p in reader_ports]
        for r in self.readers:
            self.stack.wait(r, "/readyz", timeout=300)

    def restart(self, p: Proc) -> Proc:
        """SIGKILL ``p`` and start the same role again on the same port."""
        assert self.stack is not None
        p.proc.kill()
        p.proc.wait(30)
        self.stack.procs.remove(p)
        extra = ({"CHROMASNAP_NOTIFY_URLS": ",".join(r.url for r in self.readers)}
                 if p.role == "writer" else
                 {"CHROMASNAP_WRITER_URL": self.writers[0].url, "CHROMASNAP_READ_LEVEL": "fresh"})
        new = self.stack.start(p.role, p.port, **extra)
        if p.role == "reader":
            self.stack.wait(new, "/readyz", timeout=300)
        return new

    def pause_minio(self) -> None:
        """Stop MinIO for MINIO_DOWN_S seconds, then start it again on the same port."""
        self.minio.stop_process()
        self.stop.wait(MINIO_DOWN_S)
        self.minio.start(port=self.minio.port)

    # -- background loops -------------------------------------------------------------

    def sample(self) -> None:
        """One row of per-process and bucket figures."""
        procs = {f"{p.role}{i}": p.proc.pid
                 for group in (self.writers, self.readers) for i, p in enumerate(group)}
        procs["chroma"] = self.peer.proc.pid
        row: dict[str, Any] = {"t": round(self.now(), 1)}
        for name, pid in procs.items():
            row[f"{name}_rss_mb"] = rss_mb(pid)
            row[f"{name}_fds"] = open_fds(pid)
        for i, r in enumerate(self.readers):
            cache = self.work / "procs" / f"reader-{r.port}"
            row[f"reader{i}_cache_mb"] = round(dir_mb(cache), 2)
            row[f"reader{i}_hnsw"] = hnsw_elements(cache)
            row.update({f"reader{i}_{k}": v for k, v in metrics_of(r).items()})
        row["chroma_dir_mb"] = round(dir_mb(self.work / "peer-db"), 2)
        row["chroma_hnsw"] = hnsw_elements(self.work / "peer-db")
        with suppress(Exception):
            row["bucket"] = bucket_bytes(self.store)
        self.samples.append(row)
        log(f"{row['t'] / 60:5.1f} min: " + ", ".join(
            f"{k} {v:.0f}" for k, v in row.items()
            if isinstance(v, float | int) and k.endswith(("rss_mb", "hnsw", "tail_records"))))

    def _every(self, seconds: float, fn: Callable[[], Any], name: str) -> threading.Thread:
        def loop() -> None:
            while not self.stop.wait(seconds):
                try:
                    fn()
                except Exception as e:
                    self.events.append({"t": round(self.now(), 1), "error": f"{name}: {e}"})

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def inject(self) -> None:
        """The fault schedule: MinIO down at 40%, a writer at 55%, a reader at 70%."""
        steps: list[tuple[float, str, Callable[[], None]]] = [
            (0.40, "minio stopped 15 s", self.pause_minio),
            (0.55, "writer0 SIGKILL + restart",
             lambda: self._replace(self.writers, 0)),
            (0.70, "reader1 SIGKILL + restart",
             lambda: self._replace(self.readers, 1)),
        ]
        for frac, what, act in steps:
            if self.stop.wait(max(0.0, frac * self.minutes * 60 - self.now())):
                return
            t = self.now()
            try:
                act()
                self.events.append({"t": round(t, 1), "fault": what,
                                    "seconds": round(self.now() - t, 1)})
            except Exception as e:
                self.events.append({"t": round(t, 1), "fault": what, "error": str(e)})
            log(f"fault at {t / 60:.1f} min: {what}")

    def _replace(self, procs: list[Proc], i: int) -> None:
        procs[i] = self.restart(procs[i])

    # -- the whole run ----------------------------------------------------------------

    def clients(self, seconds: float) -> list[subprocess.Popen[bytes]]:
        """The four client processes (this module, ``--client``)."""
        out = []
        specs = [("write", i, [w.port for w in self.writers]) for i in range(WRITE_CLIENTS)]
        specs += [("query", i, [r.port for r in self.readers]) for i in range(QUERY_CLIENTS)]
        for kind, i, ports in specs:
            cmd = [sys.executable, "-m", "benchmarks.soak", "--client", kind, "--index", str(i),
                   "--ports", ",".join(map(str, ports)), "--peer-port", str(self.peer.port),
                   "--seconds", str(seconds), "--out", str(self.work / f"{kind}-{i}.jsonl")]
            with (self.work / f"{kind}-{i}.log").open("wb") as fh:
                out.append(subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                                [str(ROOT), os.environ.get("PYTHONPATH", "")])}))
        return out

    def run(self) -> dict[str, Any]:
        """Start everything, run the load, stop it, fold, verify; return the raw figures."""
        from benchmarks.servers import ChromaRun, client

        self.store = S3Store(self.minio.new_bucket_url(), endpoint_url=self.minio.endpoint)
        self.t0 = time.time()
        first = self.compact("version 1")
        assert first.get("result") == "succeeded", first
        (self.work / "peer-db").mkdir()
        try:
            self.start_servers()
            with ChromaRun(self.work / "peer-db", self.work) as peer:
                self.peer = peer
                client(peer.port).create_collection(
                    SETTINGS.name, configuration={"hnsw": {"space": SETTINGS.space.value}},
                    embedding_function=None)
                self.load()
                return self.finish()
        finally:
            self.stop.set()
            if self.stack is not None:
                self.stack.stop()

    def load(self) -> None:
        """The client processes for ``minutes``, with sampling, compactions and faults."""
        seconds = self.minutes * 60
        self.t0 = time.time()
        procs = self.clients(seconds)
        self.sample()
        threads = [self._every(60.0, self.sample, "sample"),
                   self._every(COMPACT_EVERY_S, self.compact, "compact")]
        if self.faults:
            threads.append(threading.Thread(target=self.inject, daemon=True))
            threads[-1].start()
        try:
            for p in procs:
                p.wait(timeout=seconds + 120)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.stop.set()
            for t in threads:
                t.join(COMPACT_TIMEOUT_S)
        self.sample()

    def finish(self) -> dict[str, Any]:
        """Check fresh reads, fold everything, check every reader and an export."""
        # A write is pushed to the readers right after it is durable and listed by their
        # poll at the latest: give that a poll interval (and the push retry) before
        # checking that every acknowledged write is visible everywhere.
        time.sleep(2 * 5.0)
        log("load stopped; checking fresh reads, then folding everything")
        fresh = {f"reader{i}": self.verify_reader(r) for i, r in enumerate(self.readers)}
        for _ in range(5):
            if self.compact("final").get("reason") == "NothingToDo":
                break
        self.settle()
        final = {f"reader{i}": self.verify_reader(r) for i, r in enumerate(self.readers)}
        final["export"] = self.verify_export()
        return {"fresh": fresh, "final": final, "peer_rss_end_mb": rss_mb(self.peer.proc.pid)}

    # -- verification -----------------------------------------------------------------

    def model(self) -> Model:
        """The reference model of every write the clients sent, acknowledged or not."""
        m = Model.empty()
        for i in range(WRITE_CLIENTS):
            for line in (self.work / f"write-{i}.jsonl").read_text().splitlines():
                row = json.loads(line)
                w = Write(i, row["seq"], row["kind"], row["rid"], row["g"])
                m.record(w, acknowledged=row.get("ours") is not None)
        return m

    def settle(self, timeout: float = 300.0) -> None:
        """Wait until every reader serves the pointer's version with every segment folded."""
        from chromasnap.storage import pointer, snapshots

        cur = pointer.read(self.store).pointer
        assert cur is not None
        seq = snapshots.load_manifest(self.store, cur.manifest).seq
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ms = [metrics_of(r) for r in self.readers]
            if all(m.get("snapshot_seq") == seq and m.get("segments_pending") == 0 for m in ms):
                return
            time.sleep(0.5)
        raise TimeoutError(f"readers did not settle on version seq {seq}")

    def verify_reader(self, p: Proc) -> dict[str, Any]:
        """Every id's record on one reader against the model."""
        col = _collection(p.port)
        ids = [f"id{i}" for i in range(ID_SPACE)]
        observed: dict[str, Any] = {}
        for off in range(0, len(ids), 500):
            got = col.get(ids=ids[off:off + 500],
                          include=["embeddings", "documents", "metadatas"])
            for j, rid in enumerate(got["ids"]):
                observed[rid] = (got["documents"][j], got["metadatas"][j], got["embeddings"][j])
        return self.check(observed, int(col.count()))

    def verify_export(self) -> dict[str, Any]:
        """``chromasnap export`` of the current version, opened with chromadb, against the model."""
        from chromasnap.engine import persistence, reads

        dest = self.work / "export"
        subprocess.run([sys.executable, "-m", "chromasnap", "export", self.store.url, str(dest),
                        "--s3-endpoint-url", self.minio.endpoint], env=self.env(), check=True,
                       capture_output=True, timeout=600)
        with persistence.open_collection(dest, SETTINGS.name, flush_on_exit=False) as (_, col):
            recs = reads.read_all(col)
            count = int(col.count())
        observed = {rid: (r.document, r.metadata, r.embedding) for rid, r in recs.items()}
        return self.check(observed, count)

    def check(self, observed: dict[str, Any], count: int) -> dict[str, Any]:
        """Records the history rules out, and other mismatches."""
        m = self.model()
        states: dict[str, State] = {}
        unreadable = []
        for rid, (doc, md, vec) in observed.items():
            s = observed_state(rid, doc, md, vec, DIM)
            if isinstance(s, str):
                unreadable.append(s)
            else:
                states[rid] = s
        bad = m.ruled_out(states)
        return {"records": len(observed), "count": count, "ruled_out": len(bad) + len(unreadable),
                "examples": (unreadable + bad)[:10], "acknowledged": m.acknowledged,
                "uncertain": m.uncertain, "unchecked": len(m.unchecked or ())}


# ---------------------------------------------------------------- figures


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a client process wrote."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latency_windows(rows: list[dict[str, Any]], win: Windows) -> dict[str, Any]:
    """p50/p99 per side, in the first and the last window, and per minute."""
    out: dict[str, Any] = {}
    for side in ("ours", "peer"):
        first = [r[side] for r in rows if r.get(side) is not None and win.first(r["t"])]
        last = [r[side] for r in rows if r.get(side) is not None and win.last(r["t"])]
        out[side] = {"first": (percentile(first, 50), percentile(first, 99), len(first)),
                     "last": (percentile(last, 50), percentile(last, 99), len(last)),
                     "errors": sum(1 for r in rows if r.get(f"{side}_error"))}
    per_min: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        slot = per_min.setdefault(int(r["t"] // 60), {"ours": [], "peer": []})
        for side in ("ours", "peer"):
            if r.get(side) is not None:
                slot[side].append(r[side])
    out["minutes"] = {m: {s: (percentile(v[s], 50), percentile(v[s], 99)) for s in v}
                      for m, v in sorted(per_min.items())}
    return out


def figures(soak: Soak, end: dict[str, Any], load: str) -> tuple[list[Result], list[str]]:
    """The soak_* results and the per-minute Markdown table."""
    win = Windows.for_run(soak.minutes, soak.warmup_minutes)
    queries = [r for i in range(QUERY_CLIENTS) for r in load_rows(soak.work / f"query-{i}.jsonl")]
    writes = [r for i in range(WRITE_CLIENTS) for r in load_rows(soak.work / f"write-{i}.jsonl")]
    lat = latency_windows(queries, win)
    measured = [s for s in soak.samples if win.measured(s["t"])]
    readers = [k[:-7] for k in soak.samples[-1] if k.startswith("reader") and k.endswith("_rss_mb")]

    def slope(key: str) -> float | None:
        return slope_per_hour((s["t"], s[key]) for s in measured if s.get(key) is not None)

    reader_slopes = {r: slope(f"{r}_rss_mb") for r in readers}
    worst = max((v for v in reader_slopes.values() if v is not None), default=None)
    peer_slope = slope("chroma_rss_mb")
    last = soak.samples[-1]
    reader_end = max((last.get(f"{r}_rss_mb") or 0.0) for r in readers)
    peer_end = last.get("chroma_rss_mb")
    full = [c for c in soak.compactions if c.get("kind") == "full" and win.measured(c["t"])
            and c.get("note") == "" and c.get("duration_seconds") is not None]
    full_s = ", ".join(_f(c["duration_seconds"], ".1f") for c in full)
    verdict = end["final"]
    ruled_out = sum(v["ruled_out"] for v in [*verdict.values(), *end["fresh"].values()])
    acked = sum(1 for r in writes if r.get("ours") is not None)
    from chromasnap.storage import pointer, snapshots

    cur = pointer.read(soak.store).pointer
    live = snapshots.load_manifest(soak.store, cur.manifest) if cur else None
    bucket_end = bucket_bytes(soak.store)
    recent = sum(o.size for o in soak.store.list("deltas/")
                 if o.last_modified >= time.time() - GRACE_S)
    bound = RETAIN * (live.byte_size if live else 0) + recent
    o, p = lat["ours"], lat["peer"]
    common = (f"{soak.minutes:g}-minute soak{' with faults' if soak.faults else ''}: "
              f"{acked:,} acknowledged writes, {live.record_count if live else 0:,} live records "
              f"at the end; windows of {win.window_s / 60:g} min after a "
              f"{win.warmup_s / 60:g}-minute warm-up; {load}")
    extra = {"latency": {k: lat[k] for k in ("ours", "peer")}, "events": soak.events}
    results = [
        Result("soak_reader_rss_slope", worst or 0.0, peer_slope, "MB/h", "≤ 20 MB/h",
               len(measured), higher_is_better=False,
               notes=f"least-squares slope of the worst reader's RSS after the warm-up; peer: "
               f"chroma run's; {common}", extra={"readers": reader_slopes}),
        Result("soak_reader_rss_end", reader_end, peer_end, "MB", "≤ 1.3×", len(readers),
               higher_is_better=False, notes=f"largest reader RSS at the end vs chroma run's "
               f"(which holds the same records); {common}"),
        Result("soak_query_p50_last", o["last"][0] or 0.0, p["last"][0], "ms", "≤ 1.3×",
               o["last"][2], higher_is_better=False,
               notes=f"all reads (query, query+where, get, count) in the last window; drift vs "
               f"the first window: ours {_x(ratio(o['last'][0], o['first'][0]))} (target ≤ "
               f"1.2×), chroma run {_x(ratio(p['last'][0], p['first'][0]))}; {common}",
               extra=extra),
        Result("soak_query_p99_last", o["last"][1] or 0.0, p["last"][1], "ms", "≤ 1.3×",
               o["last"][2], higher_is_better=False,
               notes=f"same windows; drift vs the first window: ours "
               f"{_x(ratio(o['last'][1], o['first'][1]))} (target ≤ 1.3×), chroma run "
               f"{_x(ratio(p['last'][1], p['first'][1]))}"),
        Result("soak_query_p50_drift", ratio(o["last"][0], o["first"][0]) or 0.0, None, "×",
               "≤ 1.2×", o["first"][2] + o["last"][2], higher_is_better=False,
               notes="ours, last window's p50 / first window's",
               extra={"peer_drift": ratio(p["last"][0], p["first"][0])}),
        Result("soak_query_p99_drift", ratio(o["last"][1], o["first"][1]) or 0.0, None, "×",
               "≤ 1.3×", o["first"][2] + o["last"][2], higher_is_better=False,
               notes="ours, last window's p99 / first window's",
               extra={"peer_drift": ratio(p["last"][1], p["first"][1])}),
        Result("soak_compaction_full_drift",
               ratio(full[-1]["duration_seconds"], full[0]["duration_seconds"]) or 0.0
               if len(full) >= 2 else 0.0, None, "×", "≤ 1.2×", len(full),
               higher_is_better=False,
               notes="last full compaction's seconds / the first's after the warm-up "
               f"({full_s} s); every run a "
               "new compactor process with an empty cache", extra={"runs": soak.compactions}),
        Result("soak_bucket_bytes", bucket_end["total"], bound, "bytes", "≤ 1.2×",
               bucket_end["objects"], higher_is_better=False,
               notes=f"bucket at the end vs {RETAIN} retained versions x the live version "
               f"({(live.byte_size if live else 0) / 1e6:.1f} MB) + the deltas of the last "
               f"{GRACE_S} s ({recent / 1e6:.1f} MB)", extra={"by_prefix": bucket_end}),
        Result("soak_ruled_out_records", ruled_out, None, "records", "0", acked,
               higher_is_better=False,
               notes="records on any reader (fresh reads at the end of the load, then after "
               "the final compaction) or in the export that the acknowledged history rules out",
               extra={"fresh": end["fresh"], "final": verdict}),
    ]
    return results, minute_table(soak, lat)


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _f(v: Any, fmt: str = ".0f") -> str:
    return "—" if v is None else format(v, fmt)


def _cache(s: dict[str, Any], who: str, what: str = "cache") -> str:
    return f"{_f(s.get(f'{who}_{what}_mb'), '.1f')} ({_f(s.get(f'{who}_hnsw'), ',')})"


def _run(c: dict[str, Any]) -> str:
    return f"{c.get('kind') or c.get('reason')} {_f(c.get('duration_seconds'), '.1f')} s"


def minute_table(soak: Soak, lat: dict[str, Any]) -> list[str]:
    """One Markdown row per sample: RSS, fds, latency, index and bucket bytes."""
    rows = [
        "| min | reader RSS MB | writer RSS MB | chroma run RSS MB | reader fds "
        "| reader cache MB (HNSW elements) | chroma run dir MB (HNSW elements) "
        "| p50/p99 ours ms | p50/p99 chroma ms | bucket MB | compactions |",
        "| ---: | --- | --- | ---: | --- | --- | ---: | --- | --- | ---: | --- |",
    ]
    for s in soak.samples:
        m = int(s["t"] // 60)
        l_ = lat["minutes"].get(m - 1 if m else 0, {"ours": (None, None), "peer": (None, None)})
        runs = [c for c in soak.compactions if m - 1 <= c["t"] / 60 < m]
        rows.append(
            f"| {s['t'] / 60:.0f} "
            f"| {' / '.join(_f(s.get(f'reader{i}_rss_mb')) for i in range(2))} "
            f"| {' / '.join(_f(s.get(f'writer{i}_rss_mb')) for i in range(2))} "
            f"| {_f(s.get('chroma_rss_mb'))} "
            f"| {' / '.join(_f(s.get(f'reader{i}_fds')) for i in range(2))} "
            f"| {' / '.join(_cache(s, f'reader{i}') for i in range(2))} "
            f"| {_cache(s, 'chroma', 'dir')} "
            f"| {_f(l_['ours'][0], '.1f')} / {_f(l_['ours'][1], '.1f')} "
            f"| {_f(l_['peer'][0], '.1f')} / {_f(l_['peer'][1], '.1f')} "
            f"| {_f((s.get('bucket') or {}).get('total', 0) / 1e6, '.1f')} "
            f"| {', '.join(_run(c) for c in runs)} |"
        )
    return rows


def write_markdown(lines: list[str], header: str) -> None:
    """The per-minute table between the soak markers of docs/benchmarks.md."""
    text = report.MD_PATH.read_text()
    if SOAK_START not in text:
        text = text.rstrip("\n") + f"\n\n## Soak\n\n{SOAK_START}\n{SOAK_END}\n"
        report.MD_PATH.write_text(text)
    report.replace_block(SOAK_START, SOAK_END, [header, "", *lines])


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    """A scratch directory, kept (and printed) with ``--keep``."""
    path = Path(tempfile.mkdtemp(prefix="chromasnap-soak-"))
    try:
        yield path
    finally:
        if keep:
            log(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    """``make soak``: parse arguments; run a client process or the whole soak."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument("--warmup", type=float, default=None,
                   help="minutes before the first window (default: 10, or a sixth of a short run)")
    p.add_argument("--faults", action="store_true",
                   help="stop MinIO for 15 s, SIGKILL and restart a writer and a reader")
    p.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    p.add_argument("--no-save", action="store_true", help="do not write docs/benchmarks.*")
    p.add_argument("--client", choices=("write", "query"), help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    p.add_argument("--peer-port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run = run_write_client if args.client == "write" else run_query_client
        run(args.index, [int(x) for x in args.ports.split(",")], args.peer_port, args.seconds,
            Path(args.out))
        return 0
    warmup = args.warmup if args.warmup is not None else min(10.0, args.minutes / 6)
    os.environ.update(s3_env())
    os.environ.setdefault("CHROMASNAP_NO_PROGRESS", "1")
    command = "make soak  # python -m benchmarks.soak " + " ".join(sys.argv[1:])
    one, five, _ = os.getloadavg()
    load = f"load average at start {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
    log(f"soak: {args.minutes:g} min{' with faults' if args.faults else ''}; {load}")
    with workdir(args.keep) as work, MinioServer(minio_binary()) as minio:
        soak = Soak(args.minutes, warmup, args.faults, work, minio)
        end = soak.run()
        results, table = figures(soak, end, load)
        (work / "soak.json").write_text(json.dumps(
            {"samples": soak.samples, "compactions": soak.compactions, "events": soak.events,
             "end": end}, indent=1, default=str))
    for r in results:
        log(f"{r.name}: {r.value:,.3f} {r.unit} (peer {r.peer}) target {r.target}")
    if not args.no_save:
        report.save(results, command)
        write_markdown(table, f"`{command}`; {load}. Per sample: both readers' and writers' "
                              "RSS, chroma run's, open fds, each reader's cache (the index "
                              "it serves), chroma run's directory, the previous minute's "
                              "read latency, bucket bytes, compactions that minute.")
    return 0 if all(r.value == 0 for r in results if r.name == "soak_ruled_out_records") else 1


if __name__ == "__main__":
    sys.exit(main())
