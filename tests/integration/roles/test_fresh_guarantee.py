"""A write acknowledged to one client is in every fresh read that starts afterwards.

Real processes on MinIO: two writers, two readers (read level ``fresh``) and
three client processes with their own ``chromadb.HttpClient``s. One client
writes through either writer and, after each acknowledgement, hands the id
to the second client through a pipe; the second reads it from the *other*
reader. A third keeps both readers busy with queries meanwhile, and a
compactor folds the deltas every 8 s (so reads also cross version
swaps, and the tail stays as short as the schedule keeps it). Then the
failure cases: a reader that stops answering (SIGSTOP) delays
acknowledgements only until its lease ends and serves nothing stale once it
runs again; a writer that dies leaves the readers answering, and correct.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import chromadb
import numpy as np
import pytest

from chromasnap.config import CollectionSettings, Space
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import compactor
from minio_server import MinioServer
from servers import Proc, Stack, stack_env

pytestmark = pytest.mark.minio
DIM = 8
SETTINGS = CollectionSettings(name="docs", dimension=DIM, space=Space.L2)
PAIRS = int(os.environ.get("CHROMASNAP_FRESH_PAIRS", "10000"))

_WRITE_CLIENT = textwrap.dedent('''
    import json, sys, threading, time
    import chromadb
    ports, n, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    lock, took = threading.Lock(), []
    def run(i):
        cols = [chromadb.HttpClient(host="127.0.0.1", port=p).get_collection("docs")
                for p in ports]
        for k in range(i, n, threads):
            t0 = time.perf_counter()
            cols[k % 2].upsert(ids=[f"p{k}"], embeddings=[[float(k % 97)] * 8],
                               documents=[f"doc {k}"])
            with lock:
                took.append(time.perf_counter() - t0)
                print(k, flush=True)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    took.sort()
    print(json.dumps({"writes": len(took), "p50_ms": 1000 * took[len(took) // 2],
                      "p99_ms": 1000 * took[int(len(took) * 0.99)]}), file=sys.stderr)
''')

_READ_CLIENT = textwrap.dedent('''
    import json, sys, threading, time
    import chromadb
    ports, threads = json.loads(sys.argv[1]), int(sys.argv[2])
    lock, took, misses = threading.Lock(), [], []
    def run():
        cols = [chromadb.HttpClient(host="127.0.0.1", port=p).get_collection("docs")
                for p in ports]
        while True:
            with lock:
                line = sys.stdin.readline()
            if not line:
                return
            k = int(line)
            t0 = time.perf_counter()
            got = cols[(k + 1) % 2].get(ids=[f"p{k}"])  # the reader the writer did not front
            dt = time.perf_counter() - t0
            with lock:
                took.append(dt)
                if got["ids"] != [f"p{k}"] or got["documents"] != [f"doc {k}"]:
                    misses.append(k)
    ts = [threading.Thread(target=run) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    took.sort()
    print(json.dumps({"pairs": len(took), "misses": misses[:20], "missed": len(misses),
                      "p50_ms": 1000 * took[len(took) // 2],
                      "p99_ms": 1000 * took[int(len(took) * 0.99)]}))
''')

_LOAD_CLIENT = textwrap.dedent('''
    import json, os, sys, time
    import chromadb
    ports, stop, limit = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    cols = [chromadb.HttpClient(host="127.0.0.1", port=p).get_collection("docs") for p in ports]
    done, deadline = [0, 0], time.monotonic() + limit
    while not os.path.exists(stop) and time.monotonic() < deadline:
        for i, c in enumerate(cols):
            c.query(query_embeddings=[[1.0] * 8], n_results=5)
            done[i] += 1
    print(json.dumps({"queries": done}))
''')


def _py(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, **kw)  # type: ignore[call-overload]


Servers = tuple[list[Proc], list[Proc], ObjectStore]


@pytest.fixture
def stack(minio: MinioServer, tmp_path: Path) -> Iterator[Servers]:
    url = minio.new_bucket_url()
    store = open_store(url, minio.endpoint)
    assert compactor(store, tmp_path / "c", settings=SETTINGS).run().result == "succeeded"
    st = Stack(stack_env(url, minio.endpoint, SETTINGS.name, DIM, "l2",
                         CHROMASNAP_READ_LEVEL="fresh", CHROMASNAP_FLUSH_MAX_DELAY_MS="0",
                         CHROMASNAP_LOG_LEVEL="WARNING"), tmp_path / "procs")
    try:
        writers = [st.start("writer") for _ in range(2)]
        readers = [st.start("reader") for _ in range(2)]
        for p in writers + readers:
            st.wait(p, "/readyz")
        yield writers, readers, store
    finally:
        st.stop()


@pytest.mark.timeout(1800)
def test_no_acknowledged_write_is_missed_by_another_client_on_another_reader(
    stack: Servers, tmp_path: Path
) -> None:
    writers, readers, store = stack
    done = threading.Event()
    runs: list[str] = []

    def compact() -> None:
        c = compactor(store, tmp_path / "c", settings=SETTINGS, grace=5.0)
        while not done.wait(8.0):
            runs.append(c.run().result)

    folding = threading.Thread(target=compact, daemon=True)
    folding.start()
    wports = json.dumps([p.port for p in writers])
    rports = json.dumps([p.port for p in readers])
    stop = tmp_path / "stop-load"
    load = _py(_LOAD_CLIENT, rports, str(stop), "900", stdout=subprocess.PIPE)
    write = _py(_WRITE_CLIENT, wports, str(PAIRS), "32", stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    read = _py(_READ_CLIENT, rports, "16", stdin=write.stdout, stdout=subprocess.PIPE)
    assert write.stdout is not None
    write.stdout.close()  # the read client owns the pipe now
    try:
        out, _ = read.communicate(timeout=900)
        _, werr = write.communicate(timeout=60)
    finally:
        stop.touch()
        done.set()
        loaded, _ = load.communicate(timeout=120)
        folding.join(120)
    assert write.returncode == 0, werr[-3000:]
    assert read.returncode == 0
    got = json.loads(out)
    wrote = json.loads(werr.strip().splitlines()[-1])
    print(f"\nfresh guarantee: {got['pairs']} pairs, {got['missed']} missed; write p50/p99 "
          f"{wrote['p50_ms']:.1f}/{wrote['p99_ms']:.1f} ms, read p50/p99 "
          f"{got['p50_ms']:.1f}/{got['p99_ms']:.1f} ms; load {json.loads(loaded)['queries']}; "
          f"compactions {runs.count('succeeded')}")
    assert got["pairs"] == PAIRS == wrote["writes"]
    assert got["missed"] == 0, f"acknowledged writes missed: {got['misses']}"
    assert min(json.loads(loaded)["queries"]) > 0, "the readers were not under query load"
    assert "succeeded" in runs, f"no compaction folded anything meanwhile: {runs}"


def _col(p: Proc) -> chromadb.api.models.Collection.Collection:
    return chromadb.HttpClient(host="127.0.0.1", port=p.port).get_collection(SETTINGS.name)


def test_a_stopped_reader_delays_acknowledgements_only_until_its_lease_ends(
    stack: Servers,
) -> None:
    writers, readers, _ = stack
    vec = np.ones(DIM, dtype=np.float32).tolist()
    _col(writers[0]).upsert(ids=["before"], embeddings=[vec])
    assert _col(readers[1]).get(ids=["before"])["ids"] == ["before"]
    readers[1].proc.send_signal(signal.SIGSTOP)
    try:
        # Acknowledged although a lease holder cannot confirm (its lease ends first) ...
        _col(writers[0]).upsert(ids=["while-stopped"], embeddings=[vec])
        assert _col(readers[0]).get(ids=["while-stopped"])["ids"] == ["while-stopped"]
    finally:
        readers[1].proc.send_signal(signal.SIGCONT)
    # ... and the stopped reader, running again, does not answer without it.
    assert _col(readers[1]).get(ids=["while-stopped"])["ids"] == ["while-stopped"]


def test_a_dead_writer_leaves_readers_answering_with_its_writes(
    stack: Servers,
) -> None:
    writers, readers, _ = stack
    vec = np.ones(DIM, dtype=np.float32).tolist()
    _col(writers[1]).upsert(ids=["last-words"], embeddings=[vec])
    writers[1].proc.kill()
    writers[1].proc.wait()
    for r in readers:  # no lease from the dead writer: answered after a LIST, not refused
        assert _col(r).get(ids=["last-words"])["ids"] == ["last-words"]
    _col(writers[0]).upsert(ids=["after"], embeddings=[vec])
    for r in readers:
        assert sorted(_col(r).get(ids=["after", "last-words"])["ids"]) == ["after", "last-words"]
