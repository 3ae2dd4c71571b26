"""SIGTERM drains a server instead of resetting its clients' connections.

A real reader process on MinIO: after SIGTERM it keeps answering for
``CHROMASNAP_DRAIN_SECONDS``, reports not ready, and closes each connection
after its response (so clients reconnect to another pod); then it exits.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from chromasnap.config import CollectionSettings, Space
from chromasnap.storage.store import open_store
from dataplane import compactor
from minio_server import MinioServer
from servers import Stack, stack_env

pytestmark = pytest.mark.minio
SETTINGS = CollectionSettings(name="docs", dimension=4, space=Space.L2)


def test_sigterm_drains_then_exits(minio: MinioServer, tmp_path: Path) -> None:
    url = minio.new_bucket_url()
    assert compactor(open_store(url, minio.endpoint), tmp_path / "c",
                     settings=SETTINGS).run().result == "succeeded"
    stack = Stack(stack_env(url, minio.endpoint, SETTINGS.name, 4, "l2"), tmp_path / "procs")
    try:
        reader = stack.start("reader", CHROMASNAP_DRAIN_SECONDS="3")
        stack.wait(reader, "/readyz")
        with httpx.Client(base_url=reader.url) as client:
            before = client.get("/api/v2/heartbeat")
            assert before.status_code == 200
            assert before.headers.get("connection", "").lower() != "close"
            t0 = time.monotonic()
            reader.proc.send_signal(signal.SIGTERM)
            # Still answering (a kept-alive connection, then new ones), but closing each
            # connection after the response, and not ready.
            deadline = time.monotonic() + 10
            while True:
                r = client.get("/api/v2/heartbeat")
                assert r.status_code == 200
                if r.headers.get("connection", "").lower() == "close":
                    break
                assert time.monotonic() < deadline, "the server never started draining"
            assert client.get("/readyz").status_code == 503
            q = client.get(
                "/api/v2/tenants/default_tenant/databases/default_database/collections/docs")
            assert q.status_code == 200 and q.json()["name"] == "docs", q.text
        # uvicorn re-raises the signal it handled once shut down, so the exit says SIGTERM.
        assert reader.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Traceback" not in reader.log.read_text()
        assert time.monotonic() - t0 >= 2.5, "exited before the drain window ended"
    finally:
        stack.stop()
