"""Two ``chromasnap pool`` processes on one bucket root (two replicas of a Deployment).

A write acknowledged by one process lives in a write batch until a compaction
pass folds it; the other process reads that batch on its next poll (every
second), so it answers with the write well before any pass. Passes are an hour
apart here: none runs during the test, which checks that too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings

from chromasnap.cli.localstack import Proc
from chromasnap.storage import batches, pointer
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from minio_server import MinioServer
from pool_server import Pool

pytestmark = pytest.mark.minio

#: Generous: a poll interval is 1 s; this only bounds a failing test.
VISIBLE_WITHIN_S = 15.0


@pytest.fixture
def two(minio: MinioServer, tmp_path: Path) -> Iterator[tuple[Pool, Proc]]:
    """Process A (``Pool.proc``) and process B on the same root; no pass for an hour."""
    p = Pool(minio, tmp_path, CHROMASNAP_COMPACT_EVERY_SECONDS="3600")
    try:
        b = p.stack.start("pool")
        p.stack.wait(b, "/readyz")
        yield p, b
    finally:
        p.stop()


def _client(proc: Proc) -> chromadb.ClientAPI:
    return chromadb.HttpClient(host="127.0.0.1", port=proc.port,
                               settings=Settings(anonymized_telemetry=False))


def _seconds_until(what: str, ok: Callable[[], bool]) -> float:
    """Seconds until ``ok()`` holds (checked every 20 ms); fails after ``VISIBLE_WITHIN_S``."""
    t0 = time.monotonic()
    while not ok():
        assert time.monotonic() - t0 < VISIBLE_WITHIN_S, f"{what}: not within {VISIBLE_WITHIN_S} s"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_write_to_one_process_is_visible_in_the_other_before_any_pass(
        two: tuple[Pool, Proc]) -> None:
    p, b_proc = two
    col_a = _client(p.proc).create_collection("shared", embedding_function=None)
    col_a.add(ids=["seed"], embeddings=[[0.0, 0.0, 1.0]])  # fixes the dimension
    col_b = _client(b_proc).get_collection("shared", embedding_function=None)
    _seconds_until("the seed on B", lambda: col_b.count() == 1)  # B has it loaded now
    sub = PrefixedStore(p.store, collection_root(str(col_a.id)))
    first = pointer.read(sub).pointer
    assert first is not None  # B's load made the collection's first version

    col_a.add(ids=["x"], embeddings=[[1.0, 0.0, 0.0]], documents=["ex"],
              metadatas=[{"k": 1}])

    def b_has_x() -> bool:
        got = col_b.get(ids=["x"], include=["documents", "metadatas"])
        hit = col_b.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)
        return bool(got["ids"] == ["x"] and got["documents"] == ["ex"]
                    and got["metadatas"] == [{"k": 1}] and hit["ids"] == [["x"]]
                    and col_b.count() == 2)

    add_s = _seconds_until("A's add on B", b_has_x)

    col_a.delete(ids=["x"])

    def b_lost_x() -> bool:
        hit = col_b.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)
        return bool(col_b.get(ids=["x"])["ids"] == [] and hit["ids"] == [["seed"]]
                    and col_b.count() == 1)

    delete_s = _seconds_until("A's delete on B", b_lost_x)

    # And the other way: B's write, read on A (whose first read loads the collection).
    col_b.add(ids=["y"], embeddings=[[0.0, 1.0, 0.0]])
    back_s = _seconds_until("B's add on A",
                            lambda: col_a.get(ids=["y"])["ids"] == ["y"] and col_a.count() == 2)
    print(f"cross-process visibility: add {add_s:.3f} s, delete {delete_s:.3f} s, "
          f"back {back_s:.3f} s")

    # No pass ran: the pointer is still on the first version, and the batches are all
    # still there, with every write (the seed, x, its delete, y), from both processes.
    assert pointer.read(sub).pointer == first
    keys = [o.key for o in p.store.list(batches.BATCH_PREFIX)]
    parts = [part for key in keys for part in batches.decode(p.store.get(key).data)
             if part.collection == str(col_a.id)]
    assert len(parts) == 4, keys
    assert len({key.rsplit("-", 1)[1] for key in keys}) == 2, keys  # both writers
