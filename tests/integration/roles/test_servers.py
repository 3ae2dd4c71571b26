"""Real writer and reader processes on MinIO, driven by the real chromadb.HttpClient."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import numpy as np
import pytest
from chromadb.errors import ChromaError, InvalidArgumentError, NotFoundError

from chromasnap.cli.localstack import free_port
from chromasnap.config import CollectionSettings, Space
from chromasnap.storage.store import open_store
from dataplane import compactor
from minio_server import MinioServer
from servers import Proc, Stack, stack_env

pytestmark = pytest.mark.minio
DIM = 8
SETTINGS = CollectionSettings(name="docs", dimension=DIM, space=Space.COSINE)


class Env:
    """One collection root with two writers and two readers (readers get pushed deltas)."""

    def __init__(self, minio: MinioServer, tmp: Path, **reader_env: str) -> None:
        self.url = minio.new_bucket_url()
        self.endpoint = minio.endpoint
        self.store = open_store(self.url, self.endpoint)
        self.tmp = tmp
        assert self.compact().result == "succeeded"
        self.stack = Stack(stack_env(self.url, self.endpoint, SETTINGS.name, DIM, "cosine"), tmp)
        reader_ports = [free_port(), free_port()]
        notify = ",".join(f"http://127.0.0.1:{p}" for p in reader_ports)
        self.writers = [self.stack.start("writer", CHROMASNAP_NOTIFY_URLS=notify) for _ in range(2)]
        # Readers forward writes to the first writer (in a cluster: the writer Service).
        # The first folds every version's segments into its copy; the second never does:
        # it serves them as an overlay.
        self.readers: list[Proc] = [
            self.stack.start(
                "reader", port, CHROMASNAP_WRITER_URL=self.writers[0].url,
                CHROMASNAP_FOLD_MIN_ROWS="0",
                **({"CHROMASNAP_FOLD_SEGMENTS": "false"} if i else {}), **reader_env
            )
            for i, port in enumerate(reader_ports)
        ]
        for r in self.readers:
            self.stack.wait(r, "/readyz")

    def compact(self) -> Any:
        # Every segment gets an index: the second reader searches its overlay through them.
        return compactor(self.store, self.tmp / "compactor", settings=SETTINGS,
                         index_min_rows=1).run()

    def client(self, p: Proc, **settings: Any) -> Any:
        return chromadb.HttpClient(
            host="127.0.0.1",
            port=p.port,
            settings=chromadb.Settings(**settings) if settings else None,
        )

    def close(self) -> None:
        self.stack.stop()


@pytest.fixture
def env(minio: MinioServer, tmp_path: Path) -> Iterator[Env]:
    e = Env(minio, tmp_path)
    yield e
    e.close()


def vec(rng: np.random.Generator) -> list[float]:
    return [float(x) for x in rng.standard_normal(DIM)]


def wait_until(cond: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_every_route_through_httpclient(env: Env) -> None:
    c = env.client(env.readers[0])
    assert c.heartbeat() > 0 and isinstance(c.get_version(), str)
    col = c.get_collection("docs")
    same = env.client(env.readers[1]).get_collection("docs")
    wcol = env.client(env.writers[0]).get_collection("docs")
    assert col.id == same.id == wcol.id  # one stable id everywhere
    assert c.get_or_create_collection("docs").id == col.id
    with pytest.raises(NotFoundError):
        c.get_collection("nope")
    rng = np.random.default_rng(0)
    # Writes sent to a reader are forwarded to the writers; the cookie gives read-your-writes.
    col.add(
        ids=["a", "b", "c"],
        embeddings=[vec(rng) for _ in range(3)],
        documents=["alpha", "beta", "gamma"],
        metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
    )
    assert col.count() == 3
    col.upsert(
        ids=["c", "d"],
        embeddings=[vec(rng), vec(rng)],
        documents=["gamma2", "delta"],
        metadatas=[{"n": 30}, {"n": 4}],
    )
    col.update(ids=["a"], metadatas=[{"n": 10, "tag": "x"}])
    col.delete(ids=["b"])
    got = col.get(include=["documents", "metadatas"])
    assert dict(zip(got["ids"], got["documents"], strict=True)) == {
        "a": "alpha",
        "c": "gamma2",
        "d": "delta",
    }
    assert col.get(ids=["a"])["metadatas"] == [{"n": 10, "tag": "x"}]
    assert col.get(where={"n": {"$gte": 10}})["ids"] in (["a", "c"], ["c", "a"])
    assert col.get(where_document={"$contains": "delta"})["ids"] == ["d"]
    assert col.peek(limit=2)["ids"] == col.get(limit=2)["ids"]
    q = col.query(
        query_embeddings=[got_emb(col, "d")], n_results=2, include=["distances", "documents"]
    )
    assert q["ids"][0][0] == "d" and abs(q["distances"][0][0]) < 1e-5
    # After a compaction the same answers come from the snapshot.
    assert env.compact().result == "succeeded"
    wait_until(
        lambda: col.get(include=["documents"])["documents"] is not None and col.count() == 3,
        what="post-compaction reads",
    )
    assert col.get(ids=["c"], include=["documents"])["documents"] == ["gamma2"]


def got_emb(col: Any, rid: str) -> list[float]:
    return [float(x) for x in col.get(ids=[rid], include=["embeddings"])["embeddings"][0]]


def test_writes_reach_every_reader_without_a_token(env: Env) -> None:
    rng = np.random.default_rng(1)
    w = env.client(env.writers[1]).get_collection("docs")
    w.add(ids=["pushed"], embeddings=[vec(rng)], documents=["via notify"])
    for r in env.readers:
        rc = env.client(r).get_collection("docs")
        wait_until(
            lambda rc=rc: rc.get(ids=["pushed"])["ids"] == ["pushed"], what="pushed delta on reader"
        )


def test_bad_requests_get_clear_errors_and_write_nothing(env: Env) -> None:
    col = env.client(env.readers[0]).get_collection("docs")
    with pytest.raises(InvalidArgumentError, match="dimension"):
        col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    base = f"{env.readers[0].url}/api/v2/tenants/default_tenant/databases/default_database"
    add_url = (
        f"{env.writers[0].url}/api/v2/tenants/default_tenant/databases/default_database"
        f"/collections/{col.id}/add"
    )
    # The client checks some things itself; the server must check them too (raw HTTP).
    for body, message in (
        (
            {
                "ids": ["x"],
                "embeddings": [
                    base64.b64encode(np.full(DIM, np.nan, dtype="<f4").tobytes()).decode()
                ],
            },
            "NaN",
        ),
        ({"ids": ["x", "x"], "embeddings": [[0.1] * DIM] * 2}, "duplicate id"),
        ({"ids": [""], "embeddings": [[0.1] * DIM]}, "non-empty string"),
    ):
        r = httpx.post(
            add_url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert message in r.json()["message"]
    # A metadata value Chroma's type does not take: its 422, not the writer's 400.
    r = httpx.post(add_url, json={"ids": ["x"], "embeddings": [[0.1] * DIM],
                                  "metadatas": [{"k": {"a": 1}}]})
    assert (r.status_code, r.json()["error"]) == (422, "ChromaError"), r.text
    assert "untagged enum MetadataValue" in r.json()["message"]
    r = httpx.post(add_url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    huge = b'{"ids": ["' + b"x" * (80 << 20) + b'"]}'
    r = httpx.post(add_url, content=huge, timeout=60)
    assert r.status_code == 413
    r = httpx.get(f"{base}/collections/missing")
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
    assert col.count() == 0
    assert not list(env.store.list("deltas/"))


def test_auth_token(minio: MinioServer, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("s3cret-token\n")
    e = Env(minio, tmp_path, CHROMASNAP_AUTH_TOKEN_FILE=str(token_file))
    try:
        good = e.client(
            e.readers[0],
            chroma_client_auth_provider=("chromadb.auth.token_authn.TokenAuthClientProvider"),
            chroma_client_auth_credentials="s3cret-token",
        )
        assert good.get_collection("docs").count() == 0
        # The client checks its identity on construction, so that is where refusal shows.
        with pytest.raises(ChromaError):
            e.client(e.readers[0]).get_collection("docs")
        with pytest.raises(ChromaError, match="Forbidden"):
            e.client(
                e.readers[0],
                chroma_client_auth_provider=("chromadb.auth.token_authn.TokenAuthClientProvider"),
                chroma_client_auth_credentials="wrong",
            ).get_collection("docs")
    finally:
        e.close()


def test_snapshot_read_level_waits_for_compaction_with_token(
    minio: MinioServer, tmp_path: Path
) -> None:
    e = Env(
        minio, tmp_path, CHROMASNAP_READ_LEVEL="snapshot", CHROMASNAP_READ_AFTER_TIMEOUT_SECONDS="1"
    )
    try:
        col = e.client(e.readers[0]).get_collection("docs")
        col.add(ids=["a"], embeddings=[[0.5] * DIM])
        # The write is durable but not compacted: the reader says so after its bound.
        with pytest.raises(ChromaError, match="not visible"):
            col.count()
        assert e.compact().result == "succeeded"
        assert col.count() == 1
    finally:
        e.close()


def test_queries_never_fail_across_many_swaps(env: Env) -> None:
    rng = np.random.default_rng(2)
    writer = env.client(env.writers[0]).get_collection("docs")
    writer.add(ids=["anchor"], embeddings=[[1.0] + [0.0] * (DIM - 1)])
    readers = [env.client(r).get_collection("docs") for r in env.readers]
    stop = threading.Event()
    failures: list[BaseException] = []
    answered = [0]

    def load(col: Any) -> None:
        while not stop.is_set():
            try:
                res = col.query(query_embeddings=[[1.0] + [0.0] * (DIM - 1)], n_results=1)
                assert res["ids"][0] in ([], ["anchor"])
                answered[0] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=load, args=(c,)) for c in readers]
    for t in threads:
        t.start()
    try:
        for i in range(22):
            writer.upsert(ids=[f"r{i}"], embeddings=[vec(rng)])
            assert env.compact().result == "succeeded"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    assert answered[0] > 22
    wait_until(lambda: all(c.count() == 23 for c in readers), what="readers caught up")


def test_randomized_differential_against_persistent_client(env: Env, tmp_path: Path) -> None:
    """Same random writes to chromasnap (2 writers, compactions interleaved) and to Chroma.

    Every comparison includes record order (full ``get``, ``offset``/``limit``
    pages, ``peek``, filtered gets) and ``query(ids=…)`` with absent ids, and
    runs both while recent writes are in the reader's fresh tail and right
    after a compaction folded everything into the version it serves: on a
    reader that has folded the version's segments into its copy, and on one
    that serves them as an overlay.
    """
    ref_client = chromadb.PersistentClient(path=str(tmp_path / "reference"))
    ref = ref_client.create_collection(
        "docs", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    writers = [env.client(w).get_collection("docs") for w in env.writers]
    readers = [env.client(r).get_collection("docs") for r in env.readers]
    rng = random.Random(7)
    nrng = np.random.default_rng(7)
    ids = [f"id{i}" for i in range(25)]
    for step in range(120):
        w = writers[rng.randrange(2)]
        kind = rng.choice(["add", "upsert", "update", "delete", "meta", "bare", "uri"])
        batch = rng.sample(ids, rng.randint(1, 4))
        embs = [vec(nrng) for _ in batch]
        docs = [f"doc {b} {step}" for b in batch]
        metas = [{"step": step, "even": step % 2 == 0} for _ in batch]
        uris = [f"s3://bucket/{b}/{step}" for b in batch]
        bare_uris = uris if rng.random() < 0.5 else None
        for target in (w, ref):
            if kind == "add":
                target.add(ids=batch, embeddings=embs, documents=docs, metadatas=metas)
            elif kind == "bare":  # no metadata: Chroma reads {} with a URI, None without
                target.add(ids=batch, embeddings=embs, uris=bare_uris)
            elif kind == "uri":
                target.update(ids=batch, uris=uris)
            elif kind == "upsert":
                target.upsert(ids=batch, embeddings=embs, documents=docs, metadatas=metas)
            elif kind == "update":
                target.update(ids=batch, embeddings=embs, documents=docs)
            elif kind == "meta":
                target.update(ids=batch, metadatas=metas)
            else:
                target.delete(ids=batch)
        if rng.random() < 0.1:
            assert env.compact().result == "succeeded"
        if step % 10 == 9:
            for reader in readers:
                compare(reader, ref, nrng, ids)  # recent writes are in the fresh tail
            if step % 20 == 19:
                compact_and_wait(env)  # everything is in the version
                for reader in readers:
                    compare(reader, ref, nrng, ids)
    compact_and_wait(env)
    for reader in readers:
        compare(reader, ref, nrng, ids)


def _gauge(reader: Proc, name: str) -> float | None:
    text = httpx.get(f"{reader.url}/metrics").text
    line = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line[0].split()[1]) if line else None


def compact_and_wait(env: Env) -> None:
    """Compact, then wait until every reader serves the new version (its metrics say which).

    The first reader must also have folded the version's segments into its
    copy; the second never does.
    """
    res = env.compact()
    assert res.result == "succeeded" or res.reason == "NothingToDo", res.message
    seq = int(res.version.split("-", 1)[0])
    for i, reader in enumerate(env.readers):
        wait_until(lambda r=reader: _gauge(r, "chromasnap_reader_snapshot_seq") == seq,
                   what=f"reader serving snapshot seq {seq}")
        want = 0 if i == 0 else float(res.segments or 0)
        wait_until(lambda r=reader, w=want: _gauge(r, "chromasnap_reader_segments_pending") == w,
                   what=f"reader with {want} segments pending")


def compare(reader: Any, ref: Any, nrng: np.random.Generator, universe: list[str]) -> None:
    inc = ["documents", "metadatas", "embeddings", "uris"]

    def rows(r: Any) -> dict[str, Any]:
        return {
            i: (d, m, u)
            for i, d, m, u in zip(r["ids"], r["documents"], r["metadatas"], r["uris"], strict=True)
        }

    # The reader may not have the other writer's writes yet: wait until it holds every
    # record as the reference does. Then the order, which is not part of that, must agree.
    wanted = rows(ref.get(include=inc[:2] + inc[3:]))
    with contextlib.suppress(TimeoutError):  # then the assertions below show the difference
        wait_until(
            lambda: rows(reader.get(include=inc[:2] + inc[3:])) == wanted,
            what="reader records == reference records",
        )
    a, b = reader.get(include=inc), ref.get(include=inc)
    assert rows(a) == rows(b)
    assert a["ids"] == b["ids"]  # Chroma's order: insertion order, kept through updates
    # Exact in float32: the tail's vectors read back as the cosine index returns them.
    ea = dict(zip(a["ids"], a["embeddings"], strict=True))
    eb = dict(zip(b["ids"], b["embeddings"], strict=True))
    assert all(np.array_equal(np.asarray(ea[k], dtype=np.float32),
                              np.asarray(eb[k], dtype=np.float32)) for k in eb)
    n = len(b["ids"])
    for offset, limit in ((0, 4), (3, 5), (n // 2, 3), (max(0, n - 2), 5), (n, 2)):
        page = reader.get(offset=offset, limit=limit, include=["metadatas", "uris"])
        want = ref.get(offset=offset, limit=limit, include=["metadatas", "uris"])
        assert (page["ids"], page["metadatas"], page["uris"]) == (
            want["ids"], want["metadatas"], want["uris"]
        ), (offset, limit)
    assert reader.peek(3)["ids"] == ref.peek(3)["ids"]
    for where in ({"even": True}, {"step": {"$gte": 50}}):
        assert reader.get(where=where)["ids"] == ref.get(where=where)["ids"]
        assert (reader.get(where=where, offset=1, limit=3)["ids"]
                == ref.get(where=where, offset=1, limit=3)["ids"])
    # query(ids=…) naming an absent id (deleted, or never written) fails as in Chroma.
    absent = [*[i for i in universe if i not in eb][:1], "never-written"]
    for probe in ([*b["ids"][:1], absent[0]], [absent[-1]]):
        outcomes = []
        probe_q = [vec(nrng)]
        for target in (reader, ref):
            try:
                got = target.query(query_embeddings=probe_q, ids=probe, n_results=1)
                outcomes.append(("answer", got["ids"]))
            except ChromaError as e:
                outcomes.append((type(e).__name__, str(e)))
        assert outcomes[0] == outcomes[1], probe
    q = [vec(nrng)]
    n = min(5, ref.count())
    if n:
        qa = reader.query(query_embeddings=q, n_results=n, include=["distances"])
        qb = ref.query(query_embeddings=q, n_results=n, include=["distances"])
        assert qa["ids"] == qb["ids"]
        assert np.allclose(qa["distances"], qb["distances"], atol=1e-4)
