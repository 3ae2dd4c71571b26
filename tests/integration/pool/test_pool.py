"""A pool (``chromasnap pool`` on MinIO) driven by the real ``chromadb.HttpClient`` (issue 18).

The model test runs seeded random sequences of what applications do — create
(with and without ``get_or_create``), rename, new metadata, delete collections,
and add, upsert, delete, get, query and count records in whichever collection —
on the pool and on a ``chromadb.PersistentClient`` side by side: every call
must succeed or fail alike and answer the same, while compactions run
underneath (every 0.3 s) and after a restart of the pool process, which then
loads each collection from the bucket on its first use, with at most two
loaded at a time.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from chromasnap.pool import passreport
from chromasnap.storage import batches, pointer, snapshots
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from minio_server import MinioServer
from pool_server import Pool

pytestmark = pytest.mark.minio
NAMES = ["alpha", "beta", "gamma", "langchain"]
DIM = 4


@pytest.fixture
def pool(minio: MinioServer, tmp_path: Path) -> Iterator[Pool]:
    p = Pool(minio, tmp_path, CHROMASNAP_MAX_LOADED="2")
    yield p
    p.stop()


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)`` or ``("error", the chromadb exception's class name)``."""
    try:
        return "ok", call()
    except Exception as e:  # the class is what is compared
        text = str(e)
        if "already exists" in text or "UNIQUE constraint" in text:
            # A taken name: chromadb's local client raises InternalError, ``chroma run``
            # answers a create with a 409 (ChromaError) and a rename with a 500 (measured);
            # the pool answers both with the 409.
            return "error", "AlreadyExists"
        return "error", type(e).__name__


def same(ours: Any, ref: Any, what: str) -> None:
    if isinstance(ref, float):
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-5), what
    elif isinstance(ref, list | tuple):
        assert isinstance(ours, list | tuple), f"{what}: {ours!r} != {ref!r}"
        assert len(ours) == len(ref), f"{what}: {ours!r} != {ref!r}"
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            same(a, b, f"{what}[{i}]")
    elif isinstance(ref, dict):
        assert isinstance(ours, dict), f"{what}: {ours!r} != {ref!r}"
        assert sorted(ours) == sorted(ref), f"{what}: {ours!r} != {ref!r}"
        for k in ref:
            same(ours[k], ref[k], f"{what}.{k}")
    else:
        assert ours == ref, f"{what}: {ours!r} != {ref!r}"


def _collection_view(col: Any) -> tuple[str, list[Any] | None]:
    return col.name, None if col.metadata is None else sorted(col.metadata.items())


class Model:
    """The same random calls on both clients."""

    def __init__(self, ours: chromadb.ClientAPI, ref: chromadb.ClientAPI, seed: int) -> None:
        self.clients = (ours, ref)
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.step = 0
        self.history: list[str] = []

    def both(self, what: str, call: Callable[[chromadb.ClientAPI], Any]) -> Any:
        got, want = (outcome(lambda c=c: call(c)) for c in self.clients)
        self.step += 1
        self.history.append(f"{self.step} {what}: {want[0]}")
        where = f"step {self.step} {what} (after: {'; '.join(self.history[-12:-1])})"
        assert got[0] == want[0], f"{where}: {got} vs chromadb {want}"
        if got[0] == "error":
            assert got[1] == want[1], f"{where}: {got[1]} vs chromadb {want[1]}"
        else:
            same(got[1], want[1], where)
        return want[1]

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.one()

    def one(self) -> None:
        r, name = self.rng, self.rng.choice(NAMES)
        roll = r.random()
        if roll < 0.12:
            meta = r.choice([None, {"owner": r.choice(["a", "b"]), "n": r.randint(0, 3)}])
            goc = r.random() < 0.5
            self.both(f"create {name} goc={goc}", lambda c: _collection_view(
                c.get_or_create_collection(name, metadata=meta, embedding_function=None) if goc
                else c.create_collection(name, metadata=meta, embedding_function=None)))
        elif roll < 0.17:
            self.both(f"delete {name}", lambda c: c.delete_collection(name))
        elif roll < 0.22:
            new = r.choice(NAMES)
            meta = r.choice([None, {"tag": r.randint(0, 9)}])
            self.both(f"modify {name} -> {new} {meta}", lambda c: c.get_collection(
                name, embedding_function=None).modify(name=new, metadata=meta))
        elif roll < 0.27:
            # Chroma lists in id order, and ids are random: the same set, and pages of
            # the same sizes that cut the server's own full list.
            limit, offset = r.choice([1, 2, 100]), r.choice([0, 1, 3])
            self.both("list", lambda c: sorted(_collection_view(x) for x in c.list_collections()))

            def page(c: chromadb.ClientAPI) -> int:
                full = [x.id for x in c.list_collections()]
                got = [x.id for x in c.list_collections(limit=limit, offset=offset)]
                assert got == full[offset:offset + limit]
                return len(got)

            self.both(f"list limit={limit} offset={offset}", page)
            self.both("count_collections", lambda c: c.count_collections())
        else:
            self.records(name)

    def records(self, name: str) -> None:
        r = self.rng
        ids = [f"r{r.randint(0, 40)}" for _ in range(r.randint(1, 6))]
        ids = list(dict.fromkeys(ids))
        emb = self.np.standard_normal((len(ids), DIM)).astype(np.float32).tolist()
        docs = [f"doc {i} {r.choice(['red', 'blue'])}" for i in ids]
        metas = [{"k": r.randint(0, 2)} for _ in ids]
        roll = r.random()

        def col(c: chromadb.ClientAPI) -> Any:
            return c.get_collection(name, embedding_function=None)

        if roll < 0.3:
            self.both(f"add {name} {ids}", lambda c: col(c).add(
                ids=ids, embeddings=emb, documents=docs, metadatas=metas))
        elif roll < 0.5:
            self.both(f"upsert {name} {ids}", lambda c: col(c).upsert(
                ids=ids, embeddings=emb, documents=docs, metadatas=metas))
        elif roll < 0.6:
            where = r.choice([None, {"k": r.randint(0, 2)}])
            # What was deleted is compared by the reads that follow: the count a
            # delete answers is a documented difference (docs/design.md, issue 17).
            self.both(f"delete records {name} {where}", lambda c: bool(col(c).delete(
                ids=None if where else ids, where=where)) and None)
        elif roll < 0.7:
            self.both(f"count {name}", lambda c: col(c).count())
        elif roll < 0.85:
            where = r.choice([None, {"k": 1}])
            self.both(f"get {name} {where}", lambda c: _sorted_get(col(c).get(
                where=where, include=["documents", "metadatas"])))
        else:
            q = self.np.standard_normal((2, DIM)).astype(np.float32).tolist()
            self.both(f"query {name}", lambda c: _query_view(col(c).query(
                query_embeddings=q, n_results=3, include=["documents", "distances"])))


def _sorted_get(res: Any) -> list[Any]:
    return sorted(zip(res["ids"], res["documents"], res["metadatas"], strict=True))


def _query_view(res: Any) -> list[Any]:
    return [list(zip(i, d, s, strict=True)) for i, d, s in
            zip(res["ids"], res["documents"], res["distances"], strict=True)]


@pytest.mark.parametrize("seed", [1, 2])
def test_pool_answers_as_chromadb(pool: Pool, tmp_path: Path, seed: int) -> None:
    ref = chromadb.PersistentClient(str(tmp_path / f"reference-{seed}"),
                                    settings=Settings(anonymized_telemetry=False))
    model = Model(pool.client(), ref, seed)
    model.run(120)
    # Everything the pool acknowledged is in the bucket: a new process, which loads
    # each collection on its first use, answers the same.
    pool.restart()
    model.clients = (pool.client(), ref)
    for name in NAMES:
        model.both(f"after restart: count {name}", lambda c, n=name: c.get_collection(
            n, embedding_function=None).count())
    model.run(60)


def test_deleted_collection_bytes_are_reclaimed_and_its_name_is_free(pool: Pool) -> None:
    client = pool.client()
    old = client.create_collection("docs", embedding_function=None)
    old.add(ids=["a", "b"], embeddings=[[1, 0, 0, 0], [0, 1, 0, 0]])
    assert old.count() == 2
    client.delete_collection("docs")
    new = client.create_collection("docs", embedding_function=None)
    assert new.id != old.id and new.count() == 0  # a new collection, not the old one's data
    new.add(ids=["c"], embeddings=[[0, 0, 1]])  # and its own dimension
    root = collection_root(str(old.id))
    deadline = time.monotonic() + 60
    while any(True for _ in pool.store.list(root)):
        assert time.monotonic() < deadline, "deleted collection not reclaimed"
        time.sleep(0.2)
    assert new.get(ids=["c"], include=["embeddings"])["embeddings"][0].tolist() == [0, 0, 1]


@pytest.mark.parametrize("budget", ["CHROMASNAP_MAX_LOADED_BYTES",
                                    "CHROMASNAP_MEMORY_BUDGET_BYTES"])
def test_a_budget_keeps_only_the_collection_just_read(minio: MinioServer, tmp_path: Path,
                                                      budget: str) -> None:
    """With a budget (of loaded bytes, or of the process's memory) smaller than any
    version, each read closes the others: every answer is still complete, loaded from
    the bucket again when needed."""
    small = Pool(minio, tmp_path, **{budget: "1"})
    try:
        client = small.client()
        cols = [client.create_collection(f"budget-{i}", embedding_function=None)
                for i in range(3)]
        for i, col in enumerate(cols):
            col.add(ids=[f"{i}-{j}" for j in range(20)],
                    embeddings=[[float(i), float(j), 1.0] for j in range(20)])
        for _ in range(2):
            for i, col in enumerate(cols):
                assert col.count() == 20
                assert col.get(ids=[f"{i}-7"], include=["embeddings"])["embeddings"][0].tolist() \
                    == [float(i), 7.0, 1.0]
                assert _metric(small.proc.url, "chromasnap_pool_loaded_collections") == 1
        assert _metric(small.proc.url, "chromasnap_pool_unloads_total") >= 5
    finally:
        small.stop()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _batches(p: Pool) -> list[batches.Part]:
    return [part for o in p.store.list(batches.BATCH_PREFIX)
            for part in batches.decode(p.store.get(o.key).data)]


def test_writes_to_many_collections_share_a_put_and_survive_a_crash(minio: MinioServer,
                                                                   tmp_path: Path) -> None:
    p = Pool(minio, tmp_path, CHROMASNAP_COMPACT_EVERY_SECONDS="3600",
             CHROMASNAP_FLUSH_MAX_DELAY_MS="300")
    try:
        cols = [p.client().create_collection(f"col{i}", embedding_function=None)
                for i in range(12)]
        for col in cols:  # fixes each dimension (a catalog change, one at a time)
            col.add(ids=["a"], embeddings=[[0.0, 1.0]])
        before = _metric(p.proc.url, "chromasnap_pool_batches_total")
        start = threading.Barrier(len(cols))

        def second_write(col: Any) -> None:
            start.wait()
            col.add(ids=["b"], embeddings=[[1.0, 0.0]])

        with ThreadPoolExecutor(len(cols)) as ex:
            list(ex.map(second_write, cols))
        puts = _metric(p.proc.url, "chromasnap_pool_batches_total") - before
        assert 1 <= puts <= len(cols) // 2, f"{puts} PUTs for {len(cols)} collections at once"
        parts = _batches(p)
        assert sorted(part.collection for part in parts) == sorted(
            str(c.id) for c in cols for _ in range(2))
        assert not [o.key for o in p.store.list("collections/") if "/deltas/" in o.key], \
            "a collection's write was PUT on its own"

        p.proc.proc.kill()  # a crash: nothing folded, the batches are all there is
        p.proc.proc.wait()
        p.stack.procs.clear()
        p.stack.env["CHROMASNAP_COMPACT_EVERY_SECONDS"] = "0.3"
        p.proc = p.start()
        client = p.client()
        for col in cols:  # served at once, from the left batches...
            assert sorted(client.get_collection(col.name).get()["ids"]) == ["a", "b"]
        deadline = time.monotonic() + 60
        while True:  # ...folded by the next pass, which then deletes them
            counts = []
            for col in cols:
                sub = PrefixedStore(p.store, collection_root(str(col.id)))
                cur = pointer.read(sub).pointer
                counts.append(cur and snapshots.load_manifest(sub, cur.manifest).record_count)
            if counts == [2] * len(cols) and not _batches(p):
                break
            assert time.monotonic() < deadline, f"batches never folded: {counts}"
            time.sleep(0.2)
        status = json.loads(p.store.get(passreport.STATUS_KEY).data)  # the last pass's
        assert status["failingCollections"] == 0 and status["failing"] == []
    finally:
        p.stop()


def test_tokens_scoped_to_a_tenant_reach_only_its_collections(minio: MinioServer,
                                                              tmp_path: Path) -> None:
    tokens = "tok-admin,tok-acme acme/main,tok-beta beta"  # an admin, and two customers
    p = Pool(minio, tmp_path, CHROMASNAP_AUTH_TOKEN=tokens)
    try:
        def client(token: str, tenant: str = "default_tenant",
                   database: str = "default_database") -> chromadb.ClientAPI:
            return chromadb.HttpClient(
                host="127.0.0.1", port=p.proc.port, tenant=tenant, database=database,
                settings=Settings(
                    anonymized_telemetry=False,
                    chroma_client_auth_provider="chromadb.auth.token_authn."
                                                "TokenAuthClientProvider",
                    chroma_client_auth_credentials=token))

        admin = chromadb.AdminClient(client("tok-admin").get_settings())
        for tenant in ("acme", "beta"):
            admin.create_tenant(tenant)
            admin.create_database("main", tenant=tenant)
        acme, beta = client("tok-acme", "acme", "main"), client("tok-beta", "beta", "main")
        acme.create_collection("docs", embedding_function=None).add(
            ids=["a"], embeddings=[[1.0, 2.0]])
        beta.create_collection("docs", embedding_function=None).add(
            ids=["b1", "b2"], embeddings=[[1.0, 2.0], [3.0, 4.0]])
        assert acme.get_collection("docs").count() == 1  # same name, its own collection
        assert beta.get_collection("docs").count() == 2
        with pytest.raises(Exception, match="Forbidden"):
            client("tok-acme", "beta", "main")  # another tenant: refused at start
        with pytest.raises(Exception, match="Forbidden"):
            chromadb.AdminClient(client("tok-beta", "beta", "main").get_settings()
                                 ).create_tenant("gamma")
        with pytest.raises(Exception, match="Forbidden"):
            chromadb.AdminClient(client("tok-acme", "acme", "main").get_settings()
                                 ).create_database("second", tenant="acme")
        # A token for all of a tenant's databases may make more of them.
        chromadb.AdminClient(client("tok-beta", "beta", "main").get_settings()
                             ).create_database("second", tenant="beta")
    finally:
        p.stop()
