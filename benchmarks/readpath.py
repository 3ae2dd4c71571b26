"""The read path as a user sees it (issue #16): a real reader process, cold and while data arrives.

One run, side by side with ``chroma run`` on the same records, everything
through ``chromadb.HttpClient`` over loopback (384 dims, seeded random vectors):

1. **Layout**: a ``--base`` (60k) record base and ``--segments`` (6) segment
   runs of 10k writes each (80% new ids, 10% updates, 10% deletes of live
   ids), built by the compactor from deltas as ``benchmarks/segments.py``
   does. The peer's directory is ``export_snapshot`` of that version (the
   code behind ``chromasnap export``).
2. ``reader_first_query_segmented``: ``chromasnap reader`` with an empty
   cache, from process start to the first answered query; peer: ``cp -r`` of
   the exported directory + ``chroma run`` start + first query.
3. ``reader_query_p50/p99_during_refresh``: a settled reader; a new 10k-write
   segment version is published; one client per side queries the reader and
   ``chroma run`` at the same time (which takes the same 10k writes through
   ``HttpClient`` from that moment) for ``--refresh-seconds`` (60).
4. ``reader_query_p50/p99_during_ingest``: 10k writes over 30 s through a
   real ``chromasnap writer`` (pushing to the reader, read level ``fresh``)
   and, paced alike, to ``chroma run``; then a ``chromasnap compactor``
   process folds them; queries until the reader serves that version with
   its segments folded.
5. ``reader_slow_query_share``: one compaction cycle of ``--cycle-seconds``
   (120; the issue names 5 minutes) with writes spread over it (33/s), the
   compaction at its end; share of query time spent in queries over 10x each
   side's steady p50, until the reader has taken the compaction in.
6. Throughout: ``/readyz`` and ``/metrics`` polled every 50 ms from a separate
   process (``reader_probe_p99``); RSS peaks of both servers over 2-3
   (``reader_rss_segmented``); reader CPU from ``/proc`` to take in the
   refresh's segment (``reader_cpu_per_write``, peer: in-process chromadb
   ``add`` CPU per record).

Writes to ``chroma run`` and to the writer, and the probes, run in spawned
processes, so the client's query timings never wait on their Python.

Alone: ``python -m benchmarks.readpath [--cycle-seconds N ...]``; in
``make bench`` as ``python -m benchmarks.run --only readpath``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.dataplane import DIM, SETTINGS, log, make_records
from benchmarks.report import Result
from chromasnap.compactor.compaction import Compactor
from chromasnap.compactor.lock import NoLock
from chromasnap.compactor.options import CompactorOptions
from chromasnap.compactor.policy import MergePolicy
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.storage import deltas, pointer
from chromasnap.storage.s3 import S3Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the process harnesses live with the tests

from servers import Proc, Stack, stack_env  # noqa: E402

VENV_BIN = Path(sys.executable).parent
READPATH_START = "<!-- readpath:start -->"
READPATH_END = "<!-- readpath:end -->"
#: Every compaction of this module writes a segment (the layout the figures name): the
#: default policy would fold 6 segments of 10k writes on a 60k base into a new base
#: at the next run (segments holding more writes than 1.0x the base).
POLICY = MergePolicy(full_merge_ratio=3.0, shadowed_ratio=0.5)
SLOW_FACTOR = 10.0
CALL = 100  # writes per client call (per kind) in the generated order
SENDER_THREADS = 4
PROBE_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Params:
    """Sizes and durations (the issue's by default, but the cycle: 5 minutes there)."""

    base: int = 60_000
    segments: int = 6
    segment_writes: int = 10_000
    refresh_seconds: float = 60.0
    ingest_writes: int = 10_000
    ingest_seconds: float = 30.0
    cycle_seconds: float = 120.0
    cycle_rate: float = 33.0
    poll_seconds: float = 5.0  # the CRD default (reader.pollIntervalSeconds)
    probe_every: float = 0.05
    settle_timeout: float = 1200.0


# ------------------------------------------------------------------------------- writes


@dataclass
class Writes:
    """A batch of writes in order: kinds ``add``/``update``/``delete``."""

    kinds: list[str]
    ids: list[str]
    emb: np.ndarray[Any, Any]
    docs: list[str]
    metas: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    def ops(self, writer: str, ts: int) -> list[Op]:
        """The same writes as a writer records them."""
        out = []
        for i, (kind, rid) in enumerate(zip(self.kinds, self.ids, strict=True)):
            key = OpKey(ts, writer, i)
            if kind == "delete":
                out.append(Op(OpKind.DELETE, rid, key))
            else:
                out.append(Op(OpKind.ADD if kind == "add" else OpKind.UPDATE, rid, key,
                              self.emb[i], self.docs[i], self.metas[i]))
        return out

    def chunks(self, n: int) -> list[list[tuple[str, list[int]]]]:
        """``n`` consecutive slices, each as (kind, row indexes) calls: adds, updates, deletes."""
        out = []
        for part in np.array_split(np.arange(len(self)), max(1, n)):
            calls = []
            for kind in ("add", "update", "delete"):
                rows = [int(i) for i in part if self.kinds[i] == kind]
                if rows:
                    calls.append((kind, rows))
            out.append(calls)
        return out


class Live:
    """The live ids (what updates and deletes pick from) and the next new id."""

    def __init__(self, n: int) -> None:
        self.ids = [f"r{i}" for i in range(n)]
        self.next = n

    def writes(self, n: int, seed: int, new: float = 0.8, update: float = 0.1) -> Writes:
        """``n`` writes: ``new`` of them adds of new ids, ``update`` updates, the rest deletes."""
        rng = np.random.default_rng(seed)
        n_new, n_upd = int(n * new), int(n * update)
        n_del = n - n_new - n_upd
        ids, emb, docs, metas = make_records(self.next, n, seed)
        picks = rng.choice(len(self.ids), n_upd + n_del, replace=False)
        upd = [self.ids[i] for i in picks[:n_upd]]
        dele = [self.ids[i] for i in picks[n_upd:]]
        new_ids = ids[:n_new]
        self.next += n
        gone = set(dele)
        self.ids = [i for i in self.ids if i not in gone] + new_ids
        kinds = ["add"] * n_new + ["update"] * n_upd + ["delete"] * n_del
        all_ids = new_ids + upd + dele
        # Client calls: every CALL writes in a random order, grouped by kind (an add, an
        # update and a delete call), as clients send batches (one op per call, or kinds
        # interleaved one by one, would make every replay a chromadb call per write).
        rank = {"add": 0, "update": 1, "delete": 2}
        perm = rng.permutation(n)
        order = np.concatenate([sorted(perm[o:o + CALL], key=lambda i: rank[kinds[i]])
                                for o in range(0, n, CALL)]).astype(int)
        for i in range(n_new, n_new + n_upd):  # an update changes all three fields
            docs[i] = f"updated {all_ids[i]}"
            metas[i] = {"i": -1, "group": int(rng.integers(10)), "updated": True}
        return Writes([kinds[i] for i in order], [all_ids[i] for i in order], emb[order],
                      [docs[i] for i in order], [metas[i] for i in order])


def upload(store: S3Store, w: Writes, writer: str = "bench") -> None:
    """Store the writes as one delta, as a writer would."""
    ts = time.time_ns() // 1000
    store.put(deltas.DeltaName(ts, writer).key, deltas.encode(w.ops(writer, ts), DIM, writer))


def compact(store: S3Store, cache: Path) -> Any:
    """One in-process run with an empty cache (a CronJob pod), this module's policy."""
    shutil.rmtree(cache, ignore_errors=True)
    res = Compactor(store, SETTINGS, NoLock(), CompactorOptions(
        identity="bench", cache_dir=cache, delta_grace_seconds=0, policy=POLICY)).run()
    assert res.result == "succeeded", res.message
    return res


def current_seq(store: S3Store) -> int:
    """Lineage depth of the version the pointer names (versions are ``<seq>-<random>``)."""
    cur = pointer.read(store).pointer
    assert cur is not None
    return int(cur.version.split("-", 1)[0])


# ------------------------------------------------------------- spawned helper processes


def _send(port: int, path: str, seconds: float, ticks: int, ready: Any, go: Any,
          out: str) -> None:
    """Send the pickled writes to ``port`` in ``ticks`` paced slices once ``go`` is set.

    Each slice's calls go to a pool of SENDER_THREADS clients at the slice's due time, so a
    slow acknowledgement does not stretch the schedule (a batch names every id once, so
    the order of its calls does not matter).
    """
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.servers import collection

    w: Writes = pickle.loads(Path(path).read_bytes())  # noqa: S301 (our own file)
    local = threading.local()
    plan = w.chunks(ticks)
    rows: list[tuple[float, str, int, float]] = []

    def call(kind: str, idx: list[int], t0: float) -> None:
        if not hasattr(local, "col"):
            local.col = collection(port)
        ids = [w.ids[i] for i in idx]
        s = time.monotonic()
        if kind == "delete":
            local.col.delete(ids=ids)
        else:
            fn = local.col.add if kind == "add" else local.col.update
            fn(ids=ids, embeddings=w.emb[idx], documents=[w.docs[i] for i in idx],
               metadatas=[w.metas[i] for i in idx])
        rows.append((round(s - t0, 4), kind, len(idx), round(time.monotonic() - s, 4)))

    with ThreadPoolExecutor(SENDER_THREADS) as pool:
        list(pool.map(lambda _: collection(port), range(SENDER_THREADS)))  # warm imports
        ready.set()
        go.wait()
        t0 = time.monotonic()
        futures = []
        for k, calls in enumerate(plan):
            due = t0 + k * seconds / len(plan)
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            futures += [pool.submit(call, kind, idx, t0) for kind, idx in calls]
        for f in futures:
            f.result()
    Path(out).write_text(json.dumps({"calls": rows, "seconds": time.monotonic() - t0}))


def _probe(targets: list[tuple[str, str]], every: float, started: Any, stop: Any,
           out: str) -> None:
    """GET each target every ``every`` s; one JSON line per answer (refused: not yet up)."""
    with Path(out).open("w") as fh:
        started.set()
        nxt = time.monotonic()
        while not stop.is_set():
            for name, url in targets:
                t = time.time()
                s = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as r:  # noqa: S310
                        r.read()
                        status = r.status
                except urllib.error.HTTPError as e:
                    status = e.code
                except (urllib.error.URLError, ConnectionError) as e:
                    reason = getattr(e, "reason", e)
                    if isinstance(reason, ConnectionRefusedError | ConnectionResetError):
                        continue  # not listening yet (or restarting): no latency to count
                    status = -1  # a timeout: counted at what it took
                except TimeoutError:
                    status = -1
                except Exception:
                    status = -2  # a broken answer: counted at what it took
                ms = (time.perf_counter() - s) * 1000
                fh.write(json.dumps({"t": t, "p": name, "ms": round(ms, 3), "s": status}) + "\n")
            fh.flush()
            nxt += every
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt = max(nxt, time.monotonic() - every)


class Spawned:
    """Spawned helper processes (a fresh interpreter each: no forked threads)."""

    def __init__(self, work: Path) -> None:
        self.ctx = mp.get_context("spawn")
        self.work = work
        self.procs: list[Any] = []
        self.ready: list[Any] = []

    def sender(self, port: int, w: Writes, seconds: float, name: str) -> tuple[Any, Any, Path]:
        """A process that sends ``w`` to ``port`` over ``seconds`` once its event is set."""
        path = self.work / f"{name}.pickle"
        path.write_bytes(pickle.dumps(w))
        out = self.work / f"{name}.json"
        ready, go = self.ctx.Event(), self.ctx.Event()
        ticks = max(1, round(seconds * 10)) if seconds > 0 else max(1, len(w) // 500)
        p = self.ctx.Process(target=_send, args=(port, str(path), seconds, ticks, ready, go,
                                                 str(out)), daemon=True)
        p.start()
        self.procs.append(p)
        self.ready.append(ready)
        return p, go, out

    def wait_ready(self) -> None:
        """Block until every sender started so far has connected and waits for its go."""
        for ready in self.ready:
            assert ready.wait(300), "a sender process did not start"
        self.ready.clear()

    def probe(self, targets: list[tuple[str, str]], every: float) -> tuple[Any, Path]:
        """The probe process; returns its stop event and output file once it runs."""
        out = self.work / "probes.jsonl"
        started, stop = self.ctx.Event(), self.ctx.Event()
        p = self.ctx.Process(target=_probe, args=(targets, every, started, stop, str(out)),
                             daemon=True)
        p.start()
        self.procs.append(p)
        assert started.wait(120), "probe process did not start"
        return stop, out

    def stop(self) -> None:
        """End every helper still running."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
            p.join(15)


# ---------------------------------------------------------------- process figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK


def status_mb(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` figure in MB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics_state(url: str) -> dict[str, float]:
    """The reader gauges this module follows."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:  # noqa: S310
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("chromasnap_reader_snapshot_seq", "chromasnap_reader_segments_pending",
                    "chromasnap_reader_tail_records"):
            out[name.removeprefix("chromasnap_reader_")] = float(value)
    return out


class Watcher:
    """A thread sampling the reader's gauges and both servers' RSS every 0.25 s."""

    def __init__(self, reader: Proc, peer_pid: int) -> None:
        self.reader, self.peer_pid = reader, peer_pid
        self.state: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watcher")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            row: dict[str, Any] = {"t": time.time()}
            try:
                row["reader_rss_mb"] = status_mb(self.reader.proc.pid, "VmRSS")
                row["peer_rss_mb"] = status_mb(self.peer_pid, "VmRSS")
                self.state = metrics_state(self.reader.url)
                row.update(self.state)
            except (OSError, ValueError):
                pass
            self.rows.append(row)

    def settled(self, seq: int) -> bool:
        """The reader serves version ``seq`` (or later) with no segment left to fold."""
        s = self.state
        return s.get("snapshot_seq", 0) >= seq and s.get("segments_pending", 0) == 0

    def wait_settled(self, seq: int, timeout: float) -> float:
        """Block until ``settled(seq)``; the time it happened."""
        deadline = time.monotonic() + timeout
        while not self.settled(seq):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reader did not settle on seq {seq}: {self.state}")
            time.sleep(0.1)
        return time.time()

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        self._thread.join(5)


class PeerRun:
    """``chroma run`` on a directory, started without waiting (the caller times it)."""

    def __init__(self, path: Path, work: Path) -> None:
        from chromasnap.cli.localstack import free_port

        self.path, self.port = path, free_port()
        self.log = work / "chroma-run.log"
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "chroma"), "run", "--path", str(path), "--host", "127.0.0.1",
                 "--port", str(self.port)], stdout=fh, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def first_query(port: int, q: np.ndarray[Any, Any], proc: subprocess.Popen[bytes],
                timeout: float = 900.0) -> Any:
    """Retry (every 50 ms) opening the collection and querying until it answers."""
    from benchmarks.servers import collection

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            col = collection(port)
            col.query(query_embeddings=[q], n_results=10)
            return col
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ------------------------------------------------------------------------ queries


@dataclass
class Window:
    """Query latencies of both sides over one timeline (t relative to its start)."""

    t0: float
    rows: list[tuple[float, str, float, bool]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def side(self, side: str, lo: float = 0.0, hi: float = float("inf")) -> np.ndarray[Any, Any]:
        """Milliseconds of ``side``'s queries that started in [lo, hi)."""
        return np.asarray([ms for t, s, ms, _ in self.rows if s == side and lo <= t < hi])

    def errors(self, side: str) -> int:
        """Failed queries of ``side``."""
        return sum(1 for _, s, _, ok in self.rows if s == side and not ok)

    def pct(self, side: str, lo: float = 0.0, hi: float = float("inf")) -> dict[str, Any]:
        """p50/p99/max/n of ``side`` in [lo, hi)."""
        v = self.side(side, lo, hi)
        if not len(v):
            return {"n": 0}
        return {"p50": round(float(np.percentile(v, 50)), 3),
                "p99": round(float(np.percentile(v, 99)), 3),
                "max": round(float(v.max()), 3), "n": len(v)}


def query_loop(cols: dict[str, Any], queries: np.ndarray[Any, Any], t0: float,
               done: Callable[[float], bool]) -> Window:
    """One client per side (a thread each, all at once) sending single-vector queries back
    to back until ``done(t)`` (checked every 0.1 s) says stop."""
    win = Window(t0)
    stop = threading.Event()

    def client(k: int, name: str) -> None:
        col, i = cols[name], k * 1000
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += 1
            start = time.time()
            s = time.perf_counter()
            ok = True
            try:
                col.query(query_embeddings=[q], n_results=10)
            except Exception:
                ok = False
            win.rows.append((start - t0, name, (time.perf_counter() - s) * 1000, ok))

    threads = [threading.Thread(target=client, args=(k, n), daemon=True)
               for k, n in enumerate(cols)]
    for t in threads:
        t.start()
    try:
        while not done(time.time() - t0):
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    return win


def slow_share(v: np.ndarray[Any, Any], threshold: float) -> float:
    """Share of query time spent in queries slower than ``threshold`` (time-weighted)."""
    return float(v[v > threshold].sum() / v.sum()) if len(v) and v.sum() > 0 else 0.0


# --------------------------------------------------------------------------- the run


@dataclass
class ReadPath:
    """Everything one run starts and measures."""

    endpoint: str
    store: S3Store
    params: Params
    work: Path
    live: Live = field(init=False)
    stack: Stack | None = None
    writer: Proc | None = None
    reader: Proc | None = None
    peer: PeerRun | None = None
    watcher: Watcher | None = None
    spawned: Spawned | None = None
    probe_stop: Any = None
    probe_out: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1616))

    def __post_init__(self) -> None:
        self.live = Live(self.params.base)
        self.queries = self.rng.standard_normal((4000, DIM)).astype(np.float32)
        self.spawned = Spawned(self.work)

    def env(self, **extra: str) -> dict[str, str]:
        """What the operator gives every pod of the collection."""
        return stack_env(self.store.url, self.endpoint, SETTINGS.name, DIM,
                         SETTINGS.space.value,
                         CHROMASNAP_POLL_INTERVAL_SECONDS=f"{self.params.poll_seconds:g}",
                         **extra)

    # -- 1. the layout ----------------------------------------------------------------

    def build(self) -> None:
        """Base + segments in the bucket; the peer's exported directory; chroma add CPU."""
        p = self.params
        t = time.perf_counter()
        compact(self.store, self.work / "compactor")  # version 1, empty
        from benchmarks.dataplane import upload_deltas

        upload_deltas(self.store, 0, p.base, 1)
        res = compact(self.store, self.work / "compactor")
        log(f"readpath: base of {p.base:,} records ({res.kind}) in {time.perf_counter() - t:.0f} s")
        for k in range(p.segments):
            upload(self.store, self.live.writes(p.segment_writes, 100 + k))
            res = compact(self.store, self.work / "compactor")
            assert res.kind == "segment", res.kind
        log(f"readpath: layout built in {time.perf_counter() - t:.0f} s "
            f"({len(self.live.ids):,} live records)")
        from chromasnap.cli.importexport import export_snapshot

        t = time.perf_counter()
        man = export_snapshot(self.store, self.work / "export")
        self.info["export_s"] = round(time.perf_counter() - t, 1)
        self.info["version_bytes"] = man.byte_size
        self.info["segments"] = len(man.segments)
        self.info["records"] = man.record_count
        log(f"readpath: exported {man.record_count:,} records in {self.info['export_s']} s")
        self.info["chroma_add_cpu_per_record_s"] = self.add_cpu()

    def add_cpu(self) -> float:
        """In-process chromadb ``add`` CPU seconds per record, into a copy of the export."""
        import chromadb

        path = self.work / "add-cpu"
        shutil.copytree(self.work / "export", path)
        ids, emb, docs, metas = make_records(10_000_000, self.params.segment_writes, 7)
        client = chromadb.PersistentClient(path=str(path))
        col = client.get_collection(SETTINGS.name)
        step = min(client.get_max_batch_size(), 1000)
        c0 = time.process_time()
        for off in range(0, len(ids), step):
            col.add(ids=ids[off:off + step], embeddings=emb[off:off + step],
                    documents=docs[off:off + step], metadatas=metas[off:off + step])  # type: ignore[arg-type]
        cpu = time.process_time() - c0
        client.close()  # type: ignore[attr-defined]
        shutil.rmtree(path, ignore_errors=True)
        log(f"readpath: chromadb add CPU {cpu:.1f} s for {len(ids):,} records")
        return cpu / len(ids)

    # -- 2. cold start ----------------------------------------------------------------

    def cold_start(self) -> Result:
        """Peer: cp + chroma run + first query; ours: reader start -> first query."""
        from chromasnap.cli.localstack import free_port

        q = self.queries[0]
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(self.work / "export"), str(self.work / "peer-db")],
                       check=True)
        cp_s = time.perf_counter() - t0
        self.peer = PeerRun(self.work / "peer-db", self.work)
        first_query(self.peer.port, q, self.peer.proc)
        peer_s = time.perf_counter() - t0
        log(f"readpath: peer cp {cp_s:.2f} s, first query at {peer_s:.2f} s")

        reader_port = free_port()
        self.stack = Stack(self.env(), self.work / "procs")
        self.writer = self.stack.start(
            "writer", CHROMASNAP_NOTIFY_URLS=f"http://127.0.0.1:{reader_port}")
        assert self.spawned is not None
        base = f"http://127.0.0.1:{reader_port}"
        self.probe_stop, self.probe_out = self.spawned.probe(
            [("readyz", base + "/readyz"), ("metrics", base + "/metrics"),
             ("peer_heartbeat", self.peer.url + "/api/v2/heartbeat")], self.params.probe_every)
        self.info["probe_start"] = time.time()
        t0 = time.perf_counter()
        self.reader = self.stack.start(
            "reader", reader_port, wait=False, CHROMASNAP_WRITER_URL=self.writer.url,
            CHROMASNAP_READ_LEVEL="fresh")
        ready_s = None
        from benchmarks.servers import collection

        while True:  # /readyz first (for the notes), then the first query
            if self.reader.proc.poll() is not None:
                raise RuntimeError(f"reader exited:\n{self.reader.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        ready_s = time.perf_counter() - t0
            except OSError:
                pass
            try:
                collection(reader_port).query(query_embeddings=[q], n_results=10)
                break
            except Exception:
                time.sleep(0.05)
        ours_s = time.perf_counter() - t0
        ready_s = ours_s if ready_s is None else ready_s
        self.watcher = Watcher(self.reader, self.peer.proc.pid)
        log(f"readpath: reader first query at {ours_s:.2f} s (ready at {ready_s:.2f} s)")
        cpu0 = cpu_seconds(self.reader.proc.pid)
        seq = current_seq(self.store)
        t_settled = self.watcher.wait_settled(seq, self.params.settle_timeout)
        settle_s = t_settled - self.info["probe_start"]
        self.info["cold"] = {"first_query_s": ours_s, "readyz_s": ready_s,
                             "settled_after_start_s": round(settle_s, 1),
                             "cpu_start_to_first_query_s": cpu0,
                             "cpu_to_settled_s": cpu_seconds(self.reader.proc.pid),
                             "peer_cp_s": cp_s, "peer_first_query_s": peer_s}
        log(f"readpath: reader settled {settle_s:.0f} s after start "
            f"(CPU {self.info['cold']['cpu_to_settled_s']:.0f} s)")
        n = self.info["records"]
        return Result(
            "reader_first_query_segmented", ours_s, peer_s, "s", "≤ 1.5×", n,
            higher_is_better=False,
            notes=f"`chromasnap reader` process, empty cache, on a {self.params.base:,}-record "
            f"base + {self.params.segments} segments of {self.params.segment_writes:,} writes "
            f"(80% new ids, 10% updates, 10% deletes; {n:,} records, "
            f"{self.info['version_bytes'] / 1e6:.0f} MB): process start -> first answered "
            f"HttpClient query (/readyz 200 at {ready_s:.2f} s; segments folded {settle_s:.0f} s "
            f"after start, {self.info['cold']['cpu_to_settled_s']:.0f} CPU-s); peer: cp -r of "
            f"the exported directory ({cp_s:.2f} s) + chroma run start + first query",
            extra=self.info["cold"])

    # -- steady ---------------------------------------------------------------------------

    def steady(self) -> dict[str, Any]:
        """Settled latency per side (the slow-query threshold) and the reader's CPU per query."""
        from benchmarks.servers import collection, query_latency

        assert self.reader is not None and self.peer is not None
        cols = {"ours": collection(self.reader.port), "peer": collection(self.peer.port)}
        pid = self.reader.proc.pid
        c0 = cpu_seconds(pid)
        lat = query_latency(cols, self.queries[:1050])
        per_query = (cpu_seconds(pid) - c0) / 1050  # 50 warm-up + 1,000 timed
        c0 = cpu_seconds(pid)
        time.sleep(5.0)
        idle = (cpu_seconds(pid) - c0) / 5.0
        out = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
               for k, v in lat.items()}
        out["reader_cpu_per_query_s"] = per_query
        out["reader_idle_cpu_per_s"] = idle
        log(f"readpath: steady ours {out['ours']}, peer {out['peer']}; reader CPU "
            f"{per_query * 1000:.2f} ms/query, idle {idle * 100:.1f}%")
        self.info["steady"] = out
        return out

    # -- 3. refresh -------------------------------------------------------------------------

    def refresh(self) -> list[Result]:
        """A published 10k-write segment version: queries for refresh_seconds, both sides."""
        from benchmarks.servers import collection

        assert self.reader and self.peer and self.watcher and self.spawned
        p = self.params
        w = self.live.writes(p.segment_writes, 200)
        sender, go, out = self.spawned.sender(self.peer.port, w, 0.0, "refresh-peer")
        cols = {"ours": collection(self.reader.port), "peer": collection(self.peer.port)}
        upload(self.store, w)
        res = compact(self.store, self.work / "compactor")
        assert res.kind == "segment", res.kind
        seq = current_seq(self.store)
        self.spawned.wait_ready()
        pid = self.reader.proc.pid
        c0 = cpu_seconds(pid)
        t0 = time.time()
        go.set()
        log(f"readpath: segment version {seq} published; {p.refresh_seconds:g} s of queries")
        win = query_loop(cols, self.queries, t0, lambda t: t >= p.refresh_seconds)
        t_settled = self.watcher.wait_settled(seq, p.settle_timeout)
        cpu = cpu_seconds(pid) - c0
        sender.join(600)
        peer_w = json.loads(out.read_text()) if out.exists() else {}
        o, pe = win.pct("ours"), win.pct("peer")
        self.info["refresh"] = {
            "ours": o, "peer": pe, "settled_after_s": round(t_settled - t0, 1),
            "reader_cpu_s": round(cpu, 2),
            "peer_writes_s": round(peer_w.get("seconds", 0.0), 1),
            "errors": {"ours": win.errors("ours"), "peer": win.errors("peer")},
            "per_10s": {f"{a}-{a + 10}": {"ours": win.pct("ours", a, a + 10),
                                          "peer": win.pct("peer", a, a + 10)}
                        for a in range(0, int(p.refresh_seconds), 10)}}
        log(f"readpath: refresh ours {o}, peer {pe}; settled after {t_settled - t0:.0f} s, "
            f"reader CPU {cpu:.1f} s")
        common = (f"one HttpClient per side (a thread each, both at once), single-vector "
                  f"query(n_results=10), from the moment a {p.segment_writes:,}-write segment "
                  f"version (80/10/10 add/update/delete) is published until "
                  f"{p.refresh_seconds:g} s later, on a reader settled on the "
                  f"{p.segments}-segment layout; peer: chroma run taking the same writes "
                  f"through HttpClient from that moment (done in "
                  f"{self.info['refresh']['peer_writes_s']} s); reader polls every "
                  f"{p.poll_seconds:g} s; it served the segment "
                  f"{t_settled - t0:.0f} s after publication")
        return [
            Result("reader_query_p50_during_refresh", o["p50"], pe["p50"], "ms", "≤ 1.3×",
                   o["n"], higher_is_better=False, notes=common, extra=self.info["refresh"]),
            Result("reader_query_p99_during_refresh", o["p99"], pe["p99"], "ms", "≤ 1.5×",
                   o["n"], higher_is_better=False,
                   notes="same run as reader_query_p50_during_refresh"),
        ]

    # -- 3b. taking in a segment, with no queries -------------------------------------------

    def take_in(self) -> Result:
        """Reader CPU to take in a published 10k-write segment version, per write.

        Measured with no queries running: beside queries, the queries' own CPU
        (which varies with the layout and the machine) had to be estimated and
        subtracted, and the estimate's error was larger than what was measured.
        """
        assert self.reader and self.watcher
        p = self.params
        upload(self.store, self.live.writes(p.segment_writes, 300))
        res = compact(self.store, self.work / "compactor")
        assert res.kind == "segment", res.kind
        seq = current_seq(self.store)
        pid = self.reader.proc.pid
        idle = self.info["steady"]["reader_idle_cpu_per_s"]
        c0, t0 = cpu_seconds(pid), time.time()
        t_settled = self.watcher.wait_settled(seq, p.settle_timeout)
        cpu = cpu_seconds(pid) - c0
        taken = max(0.0, cpu - (t_settled - t0) * idle)
        peer_cpu = self.info["chroma_add_cpu_per_record_s"]
        log(f"readpath: took in a {p.segment_writes:,}-write segment in {t_settled - t0:.1f} s, "
            f"{cpu:.2f} CPU-s ({taken:.2f} s above idle)")
        return Result(
            "reader_cpu_per_write", taken / p.segment_writes * 1000, peer_cpu * 1000,
            "ms CPU/write", "≤ 0.25×", p.segment_writes, higher_is_better=False,
            notes=f"reader process CPU (/proc/<pid>/stat utime+stime) from the publication "
            f"of a {p.segment_writes:,}-write segment version (80/10/10) until it serves it "
            f"({t_settled - t0:.1f} s, including up to one {p.poll_seconds:g} s poll; "
            f"{cpu:.2f} CPU-s), with no queries running, less its idle CPU rate "
            f"({idle * 100:.1f}%: the probes and the gauge scrapes), per write; peer: "
            f"in-process chromadb add CPU (time.process_time) per record of "
            f"{p.segment_writes:,} new records into an open copy of the exported collection",
            extra={"seconds": round(t_settled - t0, 2), "cpu_s": round(cpu, 3),
                   "taken_s": round(taken, 3)})

    def compactor_process(self) -> subprocess.Popen[bytes]:
        """``chromasnap compactor`` with an empty cache, like a CronJob pod."""
        cache = self.work / "compactor-proc"
        shutil.rmtree(cache, ignore_errors=True)
        env = self.env(CHROMASNAP_CACHE_DIR=str(cache), CHROMASNAP_IDENTITY="bench-compactor",
                       CHROMASNAP_RESULT_FILE=str(self.work / "compaction.json"),
                       CHROMASNAP_MERGE_FULL_RATIO=str(POLICY.full_merge_ratio),
                       CHROMASNAP_MERGE_SHADOWED_RATIO=str(POLICY.shadowed_ratio))
        with (self.work / "compactor.log").open("ab") as fh:
            return subprocess.Popen([sys.executable, "-m", "chromasnap", "compactor"], env=env,
                                    stdout=fh, stderr=subprocess.STDOUT)

    def arriving(self, n: int, seconds: float, name: str, seed: int) -> Window:
        """``n`` writes over ``seconds`` to the writer and chroma run, then a compaction;
        queries from the first write until the reader serves it folded."""
        from benchmarks.servers import collection

        assert self.reader and self.peer and self.writer and self.watcher and self.spawned
        w = self.live.writes(n, seed)
        ours, go_o, out_o = self.spawned.sender(self.writer.port, w, seconds, f"{name}-ours")
        peer, go_p, out_p = self.spawned.sender(self.peer.port, w, seconds, f"{name}-peer")
        cols = {"ours": collection(self.reader.port), "peer": collection(self.peer.port)}
        self.spawned.wait_ready()  # the senders import chromadb and connect first
        st: dict[str, Any] = {"phase": "writes", "proc": None, "seq": None}
        t0 = time.time()
        go_o.set()
        go_p.set()
        tail_max = [0.0]

        def done(t: float) -> bool:
            tail_max[0] = max(tail_max[0], self.watcher.state.get("tail_records", 0.0))
            if st["phase"] == "writes" and not ours.is_alive():
                win.marks["writes_done"] = t
                st["proc"] = self.compactor_process()
                st["phase"] = "compacting"
            elif st["phase"] == "compacting" and st["proc"].poll() is not None:
                if st["proc"].returncode != 0:
                    raise RuntimeError(f"compactor exited {st['proc'].returncode}: see "
                                       f"{self.work / 'compactor.log'}")
                win.marks["pointer_moved"] = t
                st["seq"] = current_seq(self.store)
                st["phase"] = "serving"
            elif st["phase"] == "serving" and self.watcher.settled(st["seq"]) \
                    and not peer.is_alive():
                win.marks["served"] = t
                return True
            if t > self.params.settle_timeout:
                raise TimeoutError(f"{name}: not served after {t:.0f} s ({st['phase']})")
            return False

        win = Window(t0)
        got = query_loop(cols, self.queries, t0, done)
        win.rows = got.rows
        win.marks["sent_s"] = {k: round(json.loads(o.read_text())["seconds"], 1)
                               for k, o in (("ours", out_o), ("peer", out_p)) if o.exists()}
        result = json.loads((self.work / "compaction.json").read_text())
        win.marks["tail_max"] = tail_max[0]
        win.marks["compaction"] = {k: result.get(k) for k in ("result", "kind", "duration_seconds",
                                                             "records_folded")}
        assert result.get("kind") == "segment", result
        return win

    def ingest(self) -> list[Result]:
        """10k writes over 30 s and until the compaction folding them is served."""
        p = self.params
        log(f"readpath: {p.ingest_writes:,} writes over {p.ingest_seconds:g} s")
        win = self.arriving(p.ingest_writes, p.ingest_seconds, "ingest", 300)
        m = win.marks
        o, pe = win.pct("ours"), win.pct("peer")
        sub = {"writes arriving": (0.0, m["writes_done"]),
               "last write -> pointer moves": (m["writes_done"], m["pointer_moved"]),
               "pointer moves -> folded and served": (m["pointer_moved"], m["served"])}
        self.info["ingest"] = {"ours": o, "peer": pe, "marks": m,
                               "errors": {"ours": win.errors("ours"), "peer": win.errors("peer")},
                               "windows": {k: {"ours": win.pct("ours", a, b),
                                               "peer": win.pct("peer", a, b), "s": round(b - a, 1)}
                                           for k, (a, b) in sub.items()}}
        log(f"readpath: ingest ours {o}, peer {pe}; {json.dumps(self.info['ingest']['windows'])}")
        common = (f"{p.ingest_writes:,} writes (80/10/10 add/update/delete) over "
                  f"{p.ingest_seconds:g} s through a chromasnap writer pushing to the reader "
                  f"(read level fresh; tail up to {m['tail_max']:.0f} writes), then a "
                  f"chromasnap compactor process ({m['compaction']['kind']} run); queries from "
                  f"the first write until the reader serves that version folded "
                  f"({m['served']:.0f} s; the writes took {m['writes_done']:.0f} s to be "
                  f"acknowledged); peer: chroma run taking the same writes, paced alike; one "
                  f"HttpClient per side, both at once")
        return [
            Result("reader_query_p50_during_ingest", o["p50"], pe["p50"], "ms", "≤ 1.3×",
                   o["n"], higher_is_better=False, notes=common, extra=self.info["ingest"]),
            Result("reader_query_p99_during_ingest", o["p99"], pe["p99"], "ms", "≤ 1.5×",
                   o["n"], higher_is_better=False,
                   notes="same run as reader_query_p50_during_ingest"),
        ]

    def cycle(self) -> Result:
        """One compaction cycle with writes spread over it: share of slow query time."""
        p = self.params
        n = int(p.cycle_rate * p.cycle_seconds)
        log(f"readpath: a {p.cycle_seconds:g} s compaction cycle, {n:,} writes")
        win = self.arriving(n, p.cycle_seconds, "cycle", 400)
        st = self.info["steady"]
        share = {s: slow_share(win.side(s), SLOW_FACTOR * st[s]["p50"]) for s in ("ours", "peer")}
        m = win.marks
        self.info["cycle"] = {"share": share, "marks": m, "ours": win.pct("ours"),
                              "peer": win.pct("peer"),
                              "errors": {"ours": win.errors("ours"), "peer": win.errors("peer")}}
        log(f"readpath: cycle slow share ours {share['ours']:.2%}, peer {share['peer']:.2%}")
        return Result(
            "reader_slow_query_share", share["ours"] * 100, share["peer"] * 100, "%", "≤ 1.5×",
            len(win.side("ours")), higher_is_better=False,
            notes=f"share of query time (sum of latencies) spent in queries over "
            f"{SLOW_FACTOR:g}x the side's steady p50 (ours {st['ours']['p50']:.2f} ms, peer "
            f"{st['peer']['p50']:.2f} ms), over one compaction cycle: {n:,} writes at "
            f"{p.cycle_rate:g}/s for {p.cycle_seconds:g} s (the issue names 300 s) through the "
            f"writer (tail up to {m['tail_max']:.0f}), a compactor process at its end, until "
            f"the reader serves that version folded ({m['served']:.0f} s in all); peer: chroma "
            f"run taking the same writes; one HttpClient per side, both at once",
            extra=self.info["cycle"])

    # -- figures over the whole run ---------------------------------------------------------

    def rss(self) -> Result:
        """Peak RSS (VmHWM) of both servers so far: cold start and refresh."""
        assert self.reader and self.peer and self.watcher
        ours = status_mb(self.reader.proc.pid, "VmHWM")
        peer = status_mb(self.peer.proc.pid, "VmHWM")
        sampled = max((r.get("reader_rss_mb", 0) for r in self.watcher.rows), default=0)
        self.info["rss"] = {"ours_hwm_mb": ours, "peer_hwm_mb": peer,
                            "ours_sampled_max_mb": sampled}
        log(f"readpath: RSS peak ours {ours:.0f} MB, peer {peer:.0f} MB")
        return Result("reader_rss_segmented", ours, peer, "MB", "≤ 1.3×", self.info["records"],
                      higher_is_better=False,
                      notes="peak resident set (VmHWM) of the reader process over its cold start "
                      "on the segmented layout, its background folding and the refresh; peer: "
                      "chroma run's over its start on the exported directory and taking the "
                      "refresh's writes")

    def probes(self) -> Result:
        """p99 of /readyz and /metrics (the worse), polled every 50 ms during everything."""
        assert self.probe_out is not None
        self.probe_stop.set()
        time.sleep(0.5)
        rows = [json.loads(x) for x in self.probe_out.read_text().splitlines() if x.strip()]
        by: dict[str, list[float]] = {}
        for r in rows:
            by.setdefault(r["p"], []).append(r["ms"])
        pct = {k: {"p50": round(float(np.percentile(v, 50)), 2),
                   "p99": round(float(np.percentile(v, 99)), 2),
                   "max": round(max(v), 1), "n": len(v),
                   "over_100ms": sum(1 for x in v if x > 100)} for k, v in by.items()}
        worst = max(pct["readyz"]["p99"], pct["metrics"]["p99"])
        failed = sum(1 for r in rows if r["p"] != "peer_heartbeat" and r["s"] == -1)
        self.info["probes"] = pct
        log(f"readpath: probes {pct}")
        n = pct["readyz"]["n"] + pct["metrics"]["n"]
        return Result(
            "reader_probe_p99", worst, None, "ms", "≤ 100 ms", n, higher_is_better=False,
            notes=f"/readyz p99 {pct['readyz']['p99']:.1f} ms (max {pct['readyz']['max']:.0f}), "
            f"/metrics p99 {pct['metrics']['p99']:.1f} ms (max {pct['metrics']['max']:.0f}), "
            f"each polled every {self.params.probe_every * 1000:.0f} ms from a separate process "
            f"from the reader's start to the end of the run ({failed} timeouts of "
            f"{PROBE_TIMEOUT_S:g} s); the value is the worse p99; chroma run's "
            f"/api/v2/heartbeat polled alike: p99 {pct['peer_heartbeat']['p99']:.1f} ms",
            extra=pct)

    def stop(self) -> None:
        """Stop every process this run started."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.probe_stop is not None:
            self.probe_stop.set()
        if self.spawned is not None:
            self.spawned.stop()
        if self.stack is not None:
            self.stack.stop()
        if self.peer is not None:
            self.peer.stop()


def load_note() -> str:
    """The machine's load now (other work shares it)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def run(endpoint: str, new_bucket_url: Any, params: Params | None = None) -> list[Result]:
    """Every read-path figure; the processes it starts are stopped before it returns."""
    params = params or Params()
    work = Path(tempfile.mkdtemp(prefix="chromasnap-bench-readpath-"))
    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    rp = ReadPath(endpoint, store, params, work)
    start_load = load_note()
    log(f"readpath: {start_load}; {params}")
    t0 = time.perf_counter()
    try:
        rp.build()
        results = [rp.cold_start()]
        rp.steady()
        results += rp.refresh()
        results.append(rp.rss())
        # Before ingest and cycle add segments: the 10th at one tier merges them all,
        # and this figure is about taking in one segment, not a merge.
        results.append(rp.take_in())
        results += rp.ingest()
        results.append(rp.cycle())
        results.append(rp.probes())
    finally:
        rp.stop()
        shutil.rmtree(work, ignore_errors=True)
    load = f"at start {start_load}; at end {load_note()}"
    for r in results:
        r.notes = f"{r.notes}; {load}"
    results[0].extra["run"] = {"params": params.__dict__, "seconds": time.perf_counter() - t0,
                               "load": load, "info": {k: v for k, v in rp.info.items()
                                                      if not isinstance(v, dict)}}
    return results


# ------------------------------------------------------------------------- markdown


def write_markdown(results: list[Result], command: str) -> None:
    """The read-path table (with date, commit, command, load) between its markers."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    run_info = results[0].extra.get("run", {})
    by = {r.name: r for r in results}
    rows = ["| benchmark | value | peer | ratio | unit | target | n |",
            "| --- | ---: | ---: | ---: | --- | --- | ---: |"]
    fmt = report._fmt  # the main table's number format
    for r in results:
        rows.append(f"| `{r.name}` | {fmt(r.value)} | {fmt(r.peer)} | {fmt(r.ratio)} | "
                    f"{r.unit} | {r.target} | {r.n:,} |")
    m = report.machine()
    lines = [f"`{command}` on {datetime.now(UTC):%Y-%m-%d}, commit `{commit}`, "
             f"{run_info.get('seconds', 0) / 60:.1f} minutes; machine: {m['cores']} cores, "
             f"{m['memory_gib']} GiB, {m['cpu_model']}; {run_info.get('load', '')}.", "",
             *rows]
    ing = by.get("reader_query_p50_during_ingest")
    if ing is not None:
        lines += ["", "Latency by window while writes arrive (`reader_query_*_during_ingest`; "
                  "p50 / p99 / max ms, queries):", "",
                  "| window | s | chromasnap | `chroma run` |", "| --- | ---: | --- | --- |"]
        for name, w in ing.extra["windows"].items():
            lines.append(f"| {name} | {w['s']} | {_pp(w['ours'])} | {_pp(w['peer'])} |")
    ref = by.get("reader_query_p50_during_refresh")
    if ref is not None:
        lines += ["", "Latency by 10 s after a segment version is published "
                  "(`reader_query_*_during_refresh`; p50 / p99 / max ms, queries):", "",
                  "| seconds after publication | chromasnap | `chroma run` |",
                  "| --- | --- | --- |"]
        for span, w in ref.extra["per_10s"].items():
            lines.append(f"| {span} | {_pp(w['ours'])} | {_pp(w['peer'])} |")
    text = report.MD_PATH.read_text()
    if READPATH_START not in text:
        text = text.rstrip("\n") + f"\n\n## Read path\n\n{READPATH_START}\n{READPATH_END}\n"
        report.MD_PATH.write_text(text)
    report.replace_block(READPATH_START, READPATH_END, lines)


def _pp(p: dict[str, Any]) -> str:
    if not p.get("n"):
        return "—"
    return f"{p['p50']:,.1f} / {p['p99']:,.1f} / {p['max']:,.0f} ({p['n']})"


def main() -> int:
    """``python -m benchmarks.readpath``: MinIO, the run, docs/benchmarks.{md,json}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Params()
    for name, value in d.__dict__.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--no-save", action="store_true", help="do not write docs/benchmarks.*")
    args = ap.parse_args()
    params = Params(**{k: getattr(args, k) for k in d.__dict__})
    from minio_server import MinioServer, minio_binary, s3_env

    os.environ.update(s3_env())
    os.environ.setdefault("CHROMASNAP_NO_PROGRESS", "1")
    command = "python -m benchmarks.readpath " + " ".join(sys.argv[1:])
    with MinioServer(minio_binary()) as minio:
        results = run(minio.endpoint, minio.new_bucket_url, params)
    for r in results:
        log(f"{r.name}: {r.value:,.3f} {r.unit} (peer {r.peer}, ratio {r.ratio}) "
            f"target {r.target}")
    if not args.no_save:
        report.save(results, command.strip())
        write_markdown(results, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
