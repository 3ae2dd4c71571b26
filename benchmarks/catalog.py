"""The pool's catalog on MinIO at 10,000 collections (issue 18; the catalog layer only).

No role serves a pool yet, so these figures are ``storage/cataloglog.py``'s own
calls, in-process, not requests through ``chromadb.HttpClient``: they say what
the catalog adds to a create or a list, not what a user will see. Names say so
(``catalog_*``), so that the issue's ``create_collection_p99`` and
``list_collections_p99`` stay for the end-to-end figures.

- ``catalog_create_p99``: one client creating collections 1..N (Chroma's default
  configuration and schema JSON in each entry, as a pool will store them);
  p99 of the last 1,000 creates (the catalog at its largest).
- ``catalog_create_contended_p99``: two clients (separate ``CatalogLog``s, as
  two servers) creating 500 collections each at once at N: every lost append
  is re-decided on the refreshed state.
- ``catalog_list_p99``: ``list_collections(limit=100)`` at random offsets at N,
  each after a refresh (one LIST ``StartAfter`` its last change), as a server
  answers it.
- ``catalog_open_s``: a new process's first view at N (newest checkpoint and
  the changes after it).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.dataplane import log
from benchmarks.report import Result
from chromasnap.storage.catalog import (
    CollectionEntry,
    DatabaseEntry,
    PoolCatalog,
    decide_create_collection,
    decide_create_database,
    page,
)
from chromasnap.storage.cataloglog import CatalogLog
from chromasnap.storage.manifest import now
from chromasnap.storage.s3 import S3Store

TENANT, DB = "default_tenant", "default_database"


def _chroma_defaults() -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The configuration and schema JSON chromadb gives a collection created with defaults."""
    import tempfile

    import chromadb

    client = chromadb.PersistentClient(path=tempfile.mkdtemp(prefix="chromasnap-bench-cat-"))
    model = client.create_collection("defaults")._model
    return dict(model.configuration_json), model.serialized_schema


def _create(cat: CatalogLog, name: str, config: dict[str, Any],
            schema: dict[str, Any] | None) -> None:
    entry = CollectionEntry(id=str(uuid.uuid4()), name=name, tenant=TENANT, database=DB,
                            configuration_json=config, schema=schema, created_at=now())
    cat.change(lambda s: decide_create_collection(s, entry, get_or_create=False))


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "n": len(ms)}


def _timed(f: Callable[[], Any]) -> float:
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def run(endpoint: str, new_bucket_url: Callable[[], str], n: int = 10_000) -> list[Result]:
    """Every catalog figure at ``n`` collections."""
    store = S3Store(new_bucket_url(), endpoint_url=endpoint)
    config, schema = _chroma_defaults()
    cat = CatalogLog(store, identity="bench-a")
    db = DatabaseEntry(id=str(uuid.uuid4()), name=DB, tenant=TENANT, created_at=now())
    cat.change(lambda s: (decide_create_database(s, db), None))
    t0 = time.perf_counter()
    create_ms = []
    for i in range(n):
        create_ms.append(_timed(lambda i=i: _create(cat, f"collection-{i:05d}", config, schema)))
        if (i + 1) % 2000 == 0:
            log(f"catalog: {i + 1:,} collections, last 1,000 creates "
                f"{_pct(create_ms[-1000:])} ms")
    build_s = time.perf_counter() - t0
    last = _pct(create_ms[-1000:])
    first = _pct(create_ms[:1000])

    b = CatalogLog(store, identity="bench-b")
    b.view(lambda s: None)
    contended: list[list[float]] = [[], []]

    def creator(k: int, c: CatalogLog) -> None:
        for j in range(500):
            contended[k].append(_timed(
                lambda j=j: _create(c, f"contended-{k}-{j:04d}", config, schema)))

    threads = [threading.Thread(target=creator, args=(k, c)) for k, c in enumerate((cat, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = _pct(contended[0] + contended[1])

    rng = random.Random(5)
    total = n + 1000

    def listed() -> list[CollectionEntry]:
        off = rng.randrange(0, total - 100)
        return cat.view(lambda s: page(s.database(TENANT, DB), limit=100, offset=off),
                        refresh=True)

    list_ms = [_timed(listed) for _ in range(300)]
    lists = _pct(list_ms)

    t = time.perf_counter()
    fresh: PoolCatalog = CatalogLog(store, identity="bench-new").view(lambda s: s)
    open_s = time.perf_counter() - t
    assert len(fresh.database(TENANT, DB).by_id) == total, "a create is missing"
    checkpoint_bytes = max(i.size for i in store.list("catalog/checkpoints/"))
    log(f"catalog: create {first} -> {last} ms; contended {both}; list {lists}; open "
        f"{open_s:.2f} s; checkpoint {checkpoint_bytes / 1e6:.1f} MB")
    common = ("storage/cataloglog.py in-process on MinIO (loopback), the catalog layer only "
              "(no HTTP, no role serves a pool yet); each entry carries chromadb's default "
              "configuration and schema JSON")
    extra = {"create_first_1000": first, "create_last_1000": last, "build_s": round(build_s, 1),
             "contended": both, "list": lists, "open_s": round(open_s, 2),
             "checkpoint_bytes": checkpoint_bytes}
    return [
        Result("catalog_create_p99", last["p99"], None, "ms", "≤ 50 ms", n,
               higher_is_better=False,
               notes=f"{common}; one client creating collections 1..{n:,}: p99 of the last "
               f"1,000 (first 1,000: p99 {first['p99']} ms); {build_s:.0f} s in all",
               extra=extra),
        Result("catalog_create_contended_p99", both["p99"], None, "ms", "≤ 50 ms", 1000,
               higher_is_better=False,
               notes=f"{common}; two clients (separate CatalogLogs) creating 500 each at once "
               f"at {n:,} collections; p50 {both['p50']} ms"),
        Result("catalog_list_p99", lists["p99"], None, "ms", "≤ 50 ms", 300,
               higher_is_better=False,
               notes=f"{common}; a page of 100 at a random offset of {total:,}, each after a "
               f"refresh (one LIST StartAfter the last change); p50 {lists['p50']} ms"),
        Result("catalog_open_s", open_s, None, "s", "≤ 10 s (pool_reader_ready)", total,
               higher_is_better=False,
               notes=f"{common}; a new process's first view: the newest checkpoint "
               f"({checkpoint_bytes / 1e6:.1f} MB) and the changes after it"),
    ]
