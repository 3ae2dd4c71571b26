"""The demo's second part: a pool, where the client creates and deletes its own collections.

One ``chromasnap pool`` process over a local-directory bucket answers Chroma's
whole API, as ``chroma run`` does: the client makes a collection per customer
with ``get_or_create_collection``, writes and queries each, renames one and
deletes another; each collection is kept under its own prefix of the bucket.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import chromadb

from chromasnap.cli.demo_corpus import QUERIES, corpus
from chromasnap.cli.embedding import HashingEmbedding
from chromasnap.cli.localstack import LocalStack, collection_env

CUSTOMERS = ("customer-a", "customer-b", "customer-c")


def run_pool_part(root: Path, embed: HashingEmbedding) -> bool:
    """Run the pool part; True when every check passed."""
    bucket = (root / "pool").resolve()
    bucket.mkdir(parents=True, exist_ok=True)
    env = collection_env(bucket.as_uri(), None, "unused", 1,
                         CHROMASNAP_COMPACT_EVERY_SECONDS="1")
    stack = LocalStack(env, root / "pool-procs")
    print("\na pool: one `chromasnap pool` process serves Chroma's whole API; the client "
          "creates its own collections")
    try:
        proc = stack.start("pool")
        stack.wait(proc, "/readyz")
        client = chromadb.HttpClient(host="127.0.0.1", port=proc.port)
        return _customers(client, embed, bucket)
    finally:
        stack.stop()


def _customers(client: Any, embed: HashingEmbedding, bucket: Path) -> bool:
    rows = corpus(n_per_topic=20)
    ok = True
    for i, name in enumerate(CUSTOMERS):
        t0 = time.perf_counter()
        col = client.get_or_create_collection(name, metadata={"customer": name},
                                              configuration={"hnsw": {"space": "cosine"}})
        created_ms = (time.perf_counter() - t0) * 1000
        mine = rows[i::len(CUSTOMERS)]
        col.upsert(ids=[r[0] for r in mine], embeddings=embed([r[2] for r in mine]),
                   documents=[r[2] for r in mine], metadatas=[{"topic": r[1]} for r in mine])
        topic, text = QUERIES[i % len(QUERIES)]
        hit = col.query(query_embeddings=embed([text]), n_results=1,
                        include=["metadatas"])["metadatas"][0][0]
        count = col.count()
        ok = ok and count == len(mine) and hit["topic"] == topic
        print(f"  {name}: created in {created_ms:.0f} ms, {count} records, nearest to "
              f"{text!r} is [{hit['topic']}]")
    client.get_collection(CUSTOMERS[0]).modify(name="customer-a-renamed")
    client.delete_collection(CUSTOMERS[2])
    names = sorted(c.name for c in client.list_collections())
    want = sorted(["customer-a-renamed", CUSTOMERS[1]])
    ok = ok and names == want and client.count_collections() == 2
    prefixes = sorted(p.name for p in (bucket / "collections").iterdir())
    print(f"  renamed {CUSTOMERS[0]!r}, deleted {CUSTOMERS[2]!r}: list_collections() -> {names}")
    print(f"  in the bucket: catalog/ and collections/<id>/ for {len(prefixes)} collections "
          "(a deleted one's bytes go after the delta grace)")
    print(f"pool: {'ok' if ok else 'FAILED'}")
    return ok
