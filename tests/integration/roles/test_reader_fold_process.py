"""A reader folds segments into its copy in a child process, never in the serving one.

chromadb's write calls hold the GIL for their whole duration; folded in the
serving process they stalled ``/readyz``, ``/healthz`` and ``/metrics`` for
seconds (issue #16). So the serving process must make no chromadb write
call while it folds, and must answer while the fold is in progress.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chromasnap.api.app import ChromaAPI
from chromasnap.engine import replay
from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.reader import snapshot
from chromasnap.reader.replica import open_replica
from chromasnap.storage import deltas
from chromasnap.storage.store import ObjectStore, open_store
from dataplane import SEGMENTS, SETTINGS, compactor


def _publish(store: ObjectStore, cache: Path, run: int, ids: list[str]) -> None:
    dim = SETTINGS.dimension
    ops = [Op(OpKind.UPSERT, rid, OpKey(1_000_000 * (run + 1) + i, "w", i),
              np.full(dim, float(i + run), dtype=np.float32), f"{rid} run {run}")
           for i, rid in enumerate(ids)]
    store.put(deltas.DeltaName(1_000_000 * (run + 1), "w").key, deltas.encode(ops, dim, "w"))
    res = compactor(store, cache / str(run), grace=0, policy=SEGMENTS).run()
    assert res.result == "succeeded", res.message


async def _probe(app: ChromaAPI, path: str) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_fold_runs_in_a_child_and_probes_answer_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    store = open_store(f"file://{tmp_path / 'bucket'}")
    _publish(store, tmp_path / "c", 0, ["a", "b", "c"])
    _publish(store, tmp_path / "c", 1, ["b", "d"])
    replica = open_replica(store, tmp_path / "reader", SETTINGS.dimension, fresh=True)
    reader = replica.reader
    assert reader.refresh()
    cur = reader.current
    assert cur is not None and not cur.pending.empty

    def no_write_here(*a: object, **kw: object) -> int:
        raise AssertionError("a chromadb write call in the serving process")

    monkeypatch.setattr(replay, "apply_ops", no_write_here)
    in_fold, probed = threading.Event(), threading.Event()
    real = snapshot.fold_in_child

    def fold(*args: Any) -> None:
        in_fold.set()
        assert probed.wait(60), "probes were not answered while the fold ran"
        real(*args)

    monkeypatch.setattr(snapshot, "fold_in_child", fold)
    app = ChromaAPI(read=replica.backend, ready=reader.ready, role="reader")
    result: list[bool] = []
    folder = threading.Thread(target=lambda: result.append(reader.fold_pending()))
    folder.start()
    assert in_fold.wait(60)
    for path in ("/readyz", "/healthz", "/metrics"):
        assert asyncio.run(_probe(app, path)) == 200
    probed.set()
    folder.join(120)
    assert result == [True]
    with reader.use() as snap:
        assert snap.pending.empty
        got = snap.collection.get(ids=["a", "b", "c", "d"])
        assert dict(zip(got["ids"], got["documents"], strict=True)) == {
            "a": "a run 0", "b": "b run 1", "c": "c run 0", "d": "d run 1"}
    reader.close()
