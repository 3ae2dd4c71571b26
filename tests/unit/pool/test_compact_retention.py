"""A pool's retention: each collection's compaction keeps what the pool's settings say.

A pool's writes reach the bucket in write batches, which go once folded. Point-in-
time recovery replays the deltas each version folded from the collection's own
prefix, so with a recovery window a pass stores each batched delta there before it
folds it, and the collection's compactor keeps them for the window.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from chromasnap.engine.ops import Op, OpKey, OpKind
from chromasnap.pool import compactproc
from chromasnap.pool.compactproc import Job
from chromasnap.pool.configurations import settings_of
from chromasnap.pool.member import PoolOptions, compactor_for
from chromasnap.storage import batches, deltas, pointer, snapshots
from chromasnap.storage.catalog import collection_root
from chromasnap.storage.prefixed import PrefixedStore
from chromasnap.storage.store import ObjectStore, open_store

DIM = 2


def test_the_pool_s_retention_reaches_each_collection_s_compactor(tmp_path: Path) -> None:
    opts = PoolOptions(cache_dir=tmp_path, delta_grace_seconds=5, retain_snapshots=7,
                       recovery_window_seconds=3600)
    c = compactor_for(open_store(tmp_path.as_uri()), settings_of(str(uuid.uuid4()), {}, DIM),
                      opts)
    assert (c.opt.retain_snapshots, c.opt.recovery_window_seconds,
            c.opt.delta_grace_seconds) == (7, 3600, 5)
    defaults = compactor_for(open_store(tmp_path.as_uri()),
                             settings_of(str(uuid.uuid4()), {}, DIM),
                             PoolOptions(cache_dir=tmp_path)).opt
    assert (defaults.retain_snapshots, defaults.recovery_window_seconds) == (3, 0)


def _batched_write(store: ObjectStore, cid: str, rid: str, seq: int) -> tuple[str, str]:
    """One write in a batch, as a pool process stores it: (delta name, batch key)."""
    now = int(time.time() * 1e6) + seq
    name = deltas.DeltaName(now, "pool-1").name
    op = Op(OpKind.UPSERT, rid, OpKey(now, "pool-1", seq), embedding=[1.0, float(seq)])
    key = batches.key_for(now, f"pool-1-{seq}")
    store.put(key, batches.encode([batches.Part(cid, name, deltas.encode([op], DIM,
                                                                         "pool-1"))]))
    return name, key


@pytest.mark.parametrize("window", [0, 3600])
def test_a_pass_keeps_the_deltas_a_restore_needs_only_with_a_window(
        tmp_path: Path, window: int) -> None:
    url = (tmp_path / "bucket").as_uri()
    store = open_store(url)
    cid = str(uuid.uuid4())
    opts = PoolOptions(cache_dir=tmp_path / "cache", delta_grace_seconds=0,
                       recovery_window_seconds=window)
    where = compactproc._Where(url, None, "INFO", "text")
    sub = PrefixedStore(store, collection_root(cid))
    folded: list[str] = []
    for seq in range(1, 4):  # three passes, one write each
        name, key = _batched_write(store, cid, f"r{seq}", seq)
        results, unsafe = compactproc._run(where, opts, [Job(cid, settings_of(cid, {}, DIM),
                                                             {name: key})])
        assert results[cid].result == "succeeded", results[cid].message
        assert unsafe == set()  # the batch may go: every part is folded (and kept)
        folded.append(name)
    kept = sorted(o.key.removeprefix(deltas.DELTA_PREFIX) for o in sub.list(deltas.DELTA_PREFIX))
    cur = pointer.read(sub).pointer
    assert cur is not None
    live = snapshots.load_manifest(sub, cur.manifest)
    assert live.record_count == 3
    if window:
        # every delta folded is there, and the live version names each as applied
        assert kept == folded and set(folded) <= set(live.deltas)
    else:
        assert kept == []
