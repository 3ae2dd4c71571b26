"""chromasnap and a chromadb reference written alike: the ``Pair`` of the parity tests.

One writer and one fresh-read reader on MinIO, driven by ``chromadb.HttpClient``
through the reader, next to a ``chromadb.PersistentClient`` that gets the same
writes (tests/integration/roles/test_chroma_parity.py, test_frameworks.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chromadb
import httpx

from chromasnap.cli.localstack import free_port
from chromasnap.config import CollectionSettings, Space
from chromasnap.storage import manifest as mf
from chromasnap.storage.store import open_store
from dataplane import compactor
from minio_server import MinioServer
from servers import Proc, Stack, stack_env

DIM = 4
SETTINGS = CollectionSettings(name="docs", dimension=DIM, space=Space.L2)


class Pair:
    """chromasnap (one writer, one reader) and a chromadb reference, written alike.

    With ``fold`` the reader folds every version's segments into its copy;
    without, it serves them as an overlay, through their indexes when
    ``indexed`` (the compactor then indexes every segment, however small).
    """

    def __init__(self, minio: MinioServer, tmp: Path, fold: bool = True,
                 settings: CollectionSettings = SETTINGS, indexed: bool = False) -> None:
        self.tmp = tmp
        self.fold = fold
        self.indexed = indexed
        self.settings = settings
        url = minio.new_bucket_url()
        self.store = open_store(url, minio.endpoint)
        self.compact()  # the empty first version: a snapshot without an index
        self.stack = Stack(stack_env(url, minio.endpoint, settings.name, settings.dimension,
                                     settings.space.value), tmp)
        reader_port = free_port()
        writer = self.stack.start("writer", CHROMASNAP_NOTIFY_URLS=f"http://127.0.0.1:{reader_port}")
        self.reader: Proc = self.stack.start(
            "reader", reader_port, CHROMASNAP_WRITER_URL=writer.url,
            CHROMASNAP_FOLD_SEGMENTS=str(fold).lower(), CHROMASNAP_FOLD_MIN_ROWS="0",
        )
        self.stack.wait(self.reader, "/readyz")
        self.col = chromadb.HttpClient(host="127.0.0.1", port=self.reader.port).get_collection(
            settings.name
        )
        self.ref_client = chromadb.PersistentClient(path=str(tmp / "reference"))
        self.ref = self.ref_client.create_collection(
            settings.name, configuration={"hnsw": {"space": settings.space.value}},
            embedding_function=None,
        )

    def compact(self) -> int:
        res = compactor(self.store, self.tmp / "compactor", settings=self.settings,
                        index_min_rows=1 if self.indexed else None).run()
        assert res.result == "succeeded", res.message
        return mf.version_seq(res.version)

    def write(self, verb: str, **kw: Any) -> None:
        """The same write to chromasnap (through the reader) and to the reference."""
        for target in (self.col, self.ref):
            getattr(target, verb)(**kw)

    def compact_and_wait(self) -> None:
        """Fold the tail into a new version and wait until the reader serves it."""
        seq = self.compact()
        deadline = time.monotonic() + 30
        # Folding: until the segments are in the reader's copy; else served as an overlay.
        while self.loaded_seq() != seq or (self.fold and self.gauge("segments_pending")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reader did not load snapshot seq {seq}")
            time.sleep(0.05)

    def gauge(self, name: str) -> float | None:
        text = httpx.get(f"{self.reader.url}/metrics").text
        m = re.search(rf"^chromasnap_reader_{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def loaded_seq(self) -> int | None:
        seq = self.gauge("snapshot_seq")
        return None if seq is None else int(seq)

    def in_both_states(self, check: Callable[[], None]) -> None:
        """``check`` on the fresh tail, then again once the snapshot holds everything."""
        check()
        self.compact_and_wait()
        check()

    def close(self) -> None:
        self.stack.stop()
