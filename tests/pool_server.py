"""A ``chromasnap pool`` process on a fresh MinIO bucket, for the pool's tests (issue 18)."""

from __future__ import annotations

import os
from pathlib import Path

import chromadb
from chromadb.config import Settings

from chromasnap.cli.localstack import LocalStack, Proc
from chromasnap.storage.store import open_store
from minio_server import MinioServer


class Pool:
    """One ``chromasnap pool`` process on a fresh MinIO bucket (compactions every 0.3 s, deleted
    collections reclaimed at once); restartable, and stopped by ``stop``."""

    def __init__(self, minio: MinioServer, tmp: Path, **env: str) -> None:
        self.url = minio.new_bucket_url("pool")
        self.store = open_store(self.url, minio.endpoint)
        self.stack = LocalStack({
            **os.environ, "CHROMASNAP_BUCKET_URL": self.url,
            "CHROMASNAP_S3_ENDPOINT_URL": minio.endpoint, "CHROMASNAP_LOG_FORMAT": "text",
            "CHROMASNAP_COMPACT_EVERY_SECONDS": "0.3", "CHROMASNAP_DELTA_GRACE_SECONDS": "0",
            "CHROMASNAP_FLUSH_MAX_DELAY_MS": "5", **env}, tmp)
        self.proc = self.start()

    def start(self) -> Proc:
        p = self.stack.start("pool")
        self.stack.wait(p, "/readyz")
        return p

    def restart(self) -> None:
        self.stack.stop()
        self.proc = self.start()

    def client(self) -> chromadb.ClientAPI:
        return chromadb.HttpClient(host="127.0.0.1", port=self.proc.port,
                                   settings=Settings(anonymized_telemetry=False))

    def stop(self) -> None:
        self.stack.stop()
