"""Point-in-time recovery of a pool's collections (a ChromaDatabase's ``retention``).

A real ``chromasnap pool`` on MinIO, written through ``chromadb.HttpClient`` in three
rounds, each folded by the pool's passes (grace period 0: nothing but the window
keeps a delta). Then what ``kubectl chromasnap export DB --collection X --at T`` and
``restore DB --collection X --at T`` run: ``chromasnap export <collection root> --at
T`` and a new collection's compactor bootstrapped from that root at ``T``. With
``CHROMASNAP_RECOVERY_WINDOW_SECONDS`` (what the operator renders from
``spec.retention.recoveryWindow``) every time between the rounds restores exactly
the records written by then; without, only the latest does, and an earlier time is
refused with the earliest time that can be restored.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings

from chromasnap.storage import batches, pointer, snapshots
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.store import open_store
from dataplane import compactor_env, current_records, run_compactor_process
from kubeops import wait_for
from minio_server import MinioServer
from pool_server import Pool

pytestmark = pytest.mark.minio
NAME = "docs"  # the name tests/dataplane.py's compactor_env gives a restored collection
DIM = 4
def _records(path: Path) -> dict[str, str]:
    client = chromadb.PersistentClient(path=str(path),
                                       settings=Settings(anonymized_telemetry=False))
    got = client.get_collection(NAME).get(include=["documents"])
    return dict(zip(got["ids"], [str(d) for d in got["documents"] or []], strict=True))


def _export(url: str, dest: Path, at: datetime,
            endpoint: str) -> subprocess.CompletedProcess[str]:
    """``chromasnap export`` as ``kubectl chromasnap export DB --collection X`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "chromasnap", "export", url, str(dest), "--at", at.isoformat(),
         "--name", NAME, "--s3-endpoint-url", endpoint],
        capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("window", [86_400, 0])
def test_a_pool_with_a_recovery_window_restores_its_collections_at_any_time_in_it(
        minio: MinioServer, tmp_path: Path, window: int) -> None:
    p = Pool(minio, tmp_path / "pool", CHROMASNAP_RECOVERY_WINDOW_SECONDS=str(window))
    try:
        col = p.client().create_collection(NAME, embedding_function=None)
        root = collection_root(str(col.id))
        url = f"{p.url.rstrip('/')}/{root.rstrip('/')}"
        sub = PrefixedStore(p.store, root)
        state: dict[str, str] = {}
        marks: list[tuple[datetime, dict[str, str]]] = []
        for r in range(3):
            new = {f"r{r}-{i}": f"round {r} text {i}" for i in range(5)}
            col.add(ids=list(new), documents=list(new.values()),
                    embeddings=[[float(r), float(i), 1.0, 0.0] for i in range(5)])
            state |= new
            if r:  # an update and a delete of the round before's records
                col.update(ids=[f"r{r - 1}-0"], documents=[f"updated in round {r}"],
                           embeddings=[[float(r), 9.0, 9.0, 9.0]])
                col.delete(ids=[f"r{r - 1}-1"])
                state[f"r{r - 1}-0"] = f"updated in round {r}"
                del state[f"r{r - 1}-1"]

            def folded(expected: int = len(state)) -> bool:
                cur = pointer.read(sub).pointer
                return bool(cur) and not list(p.store.list(batches.BATCH_PREFIX)) and (
                    snapshots.load_manifest(sub, cur.manifest).record_count == expected)

            wait_for(f"round {r} folded", folded, timeout=60)
            marks.append((datetime.now(UTC), dict(state)))
            time.sleep(0.05)  # the next round's writes are after the mark

        for i, (at, want) in enumerate(marks):
            dest = tmp_path / f"export-{i}"
            done = _export(url, dest, at, minio.endpoint)
            if window or i == len(marks) - 1:  # the latest time needs no delta
                assert done.returncode == 0, done.stderr[-3000:]
                assert _records(dest) == want, f"the state at round {i}"
            else:
                assert done.returncode != 0
                assert "outside the recovery window" in done.stderr
                assert "earliest time that can be restored" in done.stderr

        # restore --at: a new standalone collection (named as the catalog names the
        # pool's) bootstrapped from the pool collection's root at the first mark
        at, want = marks[0]
        target = minio.new_bucket_url("restored")
        run = run_compactor_process(compactor_env(
            target, minio.endpoint, tmp_path / "restore-cache", CHROMASNAP_BOOTSTRAP_URL=url,
            CHROMASNAP_BOOTSTRAP_S3_ENDPOINT_URL=minio.endpoint,
            CHROMASNAP_BOOTSTRAP_AT=at.isoformat()))
        if not window:
            assert run.returncode != 0 and "outside the recovery window" in run.stderr
            return
        assert run.returncode == 0, run.stderr[-3000:]
        man, got = current_records(open_store(target, minio.endpoint), tmp_path / "check")
        assert {rid: rec.document for rid, rec in got.items()} == want
        assert man.collection.settings.name == NAME
        assert list(open_store(target, minio.endpoint).list("")) != []
    finally:
        p.stop()
