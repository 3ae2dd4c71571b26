"""Request size limits are Chroma's (issue #17, item 5).

Measured on ``chroma run`` 1.5.9: its pre-flight check reports
``max_batch_size`` 5461, which only the client enforces (the server takes a
body of 6,000 small records); the server refuses any request body over 40 MiB
(41,943,040 bytes) with a 413, however it is sent. So a batch of 5,461
records of 1,536 dimensions, 45 MB as the client sends it, is refused by
Chroma. chromasnap's writer and reader (real processes, real
``chromadb.HttpClient``) now refuse the same bodies and take the same ones,
with an error that says what was wrong and what to do.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import httpx
import numpy as np
import pytest
from chromadb.config import Settings
from chromadb.errors import BatchSizeExceededError

from chromasnap.config import CollectionSettings
from chromasnap.storage import deltas
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import compactor
from servers import ChromaRun, Stack, stack_env

DIM = 1536
LIMIT = 40 << 20
SETTINGS = CollectionSettings(name="docs", dimension=DIM)


@dataclass
class Servers:
    """``chroma run`` and a chromasnap writer and reader, each holding an empty ``docs``."""

    store: ObjectStore
    urls: dict[str, str]  # "chroma run", "writer", "reader" -> base URL

    def client(self, who: str) -> Any:
        port = int(self.urls[who].rsplit(":", 1)[1])
        return chromadb.HttpClient(host="127.0.0.1", port=port,
                                   settings=Settings(anonymized_telemetry=False))

    def add_url(self, who: str) -> str:
        cid = self.client(who).get_collection(SETTINGS.name, embedding_function=None).id
        return (f"{self.urls[who]}/api/v2/tenants/default_tenant/databases/default_database"
                f"/collections/{cid}/add")

    def delta_count(self) -> int:
        return sum(1 for o in self.store.list(deltas.DELTA_PREFIX))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    work: Path = tmp_path_factory.mktemp("limits")
    url = (work / "bucket").as_uri()
    store = open_store(url)
    assert compactor(store, work / "compactor", settings=SETTINGS).run().result == "succeeded"
    stack = Stack(stack_env(url, None, SETTINGS.name, DIM), work / "procs")
    try:
        writer = stack.start("writer")
        reader = stack.start("reader", CHROMASNAP_WRITER_URL=writer.url)
        stack.wait(reader, "/readyz")
        with ChromaRun(work / "peer", work) as peer:
            chromadb.HttpClient(host="127.0.0.1", port=peer.port).create_collection(
                SETTINGS.name, embedding_function=None)
            yield Servers(store, {"chroma run": peer.url, "writer": writer.url,
                                  "reader": reader.url})
    finally:
        stack.stop()


WHO = ["chroma run", "writer", "reader"]


def add_body(size: int, records: int = 6) -> bytes:
    """An add of ``records`` records whose JSON body is exactly ``size`` bytes (documents pad
    it; each stays under the writer's per-document limit)."""
    emb = base64.b64encode(np.ones(DIM, dtype="<f4").tobytes()).decode()
    body: dict[str, Any] = {"ids": [f"pad{size}-{i}" for i in range(records)],
                            "embeddings": [emb] * records, "documents": [""] * records}
    pad = size - len(json.dumps(body))
    body["documents"] = ["x" * (pad // records + (i < pad % records)) for i in range(records)]
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("who", WHO)
def test_a_body_of_40_mib_is_taken_and_one_byte_more_refused(servers: Servers, who: str) -> None:
    url = servers.add_url(who)
    headers = {"content-type": "application/json"}
    r = httpx.post(url, content=add_body(LIMIT), headers=headers, timeout=120)
    assert r.status_code == 201, r.text
    over = add_body(LIMIT + 1)
    r = httpx.post(url, content=over, headers=headers, timeout=120)
    assert r.status_code == 413, r.text

    def chunks() -> Iterator[bytes]:  # no content-length: refused while it streams
        for i in range(0, len(over), 1 << 20):
            yield over[i:i + (1 << 20)]

    r = httpx.post(url, content=chunks(), headers=headers, timeout=120)
    assert r.status_code == 413, r.text
    if who != "chroma run":
        err = r.json()
        assert err["error"] == "BatchSizeExceededError"
        assert f"over this server's limit of {LIMIT} bytes" in err["message"]
        assert "send fewer records per request" in err["message"]


@pytest.mark.parametrize("who", WHO)
def test_5461_records_of_1536_dimensions_are_refused_as_by_chroma(
        servers: Servers, who: str) -> None:
    """The issue's batch: within the batch size the client checks, over the body limit."""
    col = servers.client(who).get_collection(SETTINGS.name, embedding_function=None)
    n = 5461
    assert servers.client(who).get_max_batch_size() == n
    reads_from = "reader" if who == "writer" else who  # writers serve no reads
    counted = servers.client(reads_from).get_collection(SETTINGS.name, embedding_function=None)
    before, deltas_before = counted.count(), servers.delta_count()
    vectors = np.random.default_rng(5).standard_normal((n, DIM)).astype(np.float32)
    with pytest.raises(Exception, match=r"Payload too large|over this server's limit") as e:
        col.add(ids=[f"big{i}" for i in range(n)], embeddings=vectors)
    if who != "chroma run":
        # The client raises Chroma's batch-size error, with what to do in its message.
        assert isinstance(e.value, BatchSizeExceededError)
        assert "split the batch" in str(e.value)
        assert servers.delta_count() == deltas_before  # nothing written
    assert counted.count() == before
    # The client's own check comes first for one record more, alike everywhere.
    with pytest.raises(ValueError, match="Batch size 5462 exceeds maximum batch size 5461"):
        col.add(ids=[f"one-more{i}" for i in range(n + 1)], embeddings=vectors[:1].repeat(n + 1, 0))
