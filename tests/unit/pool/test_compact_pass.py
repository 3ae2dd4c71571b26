"""A compaction pass decides from a catalog as new as the batches it LISTed.

Another process of the pool creates a collection (or fixes its dimension on the
first write), then stores a batch with the write. A pass here that LISTs that
batch must not judge the collection by a catalog read before the LIST: there it
does not exist yet, it looks deleted, and the acknowledged write would be dropped
with the batch. The pass catches the catalog up after the LIST.
"""

from __future__ import annotations

from pathlib import Path

from chromasnap.compactor.result import CompactionResult
from chromasnap.config import CollectionSettings
from chromasnap.pool.compactproc import CompactionWorker, Job
from chromasnap.pool.configurations import settings_of
from chromasnap.pool.member import PoolOptions
from chromasnap.pool.members import Members
from chromasnap.storage import batches
from chromasnap.storage.local import LocalStore


class _Worker(CompactionWorker):
    """Records the jobs of a pass instead of running them; each one fails, so the
    batch must stay (a failed part is kept until a pass folds it)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def run(self, jobs: list[Job]) -> tuple[dict[str, CompactionResult], set[str]]:
        self.jobs.extend(jobs)
        return {}, {job.cid for job in jobs}


class _Catalog:
    """A catalog that learns of the other process's collection only when caught up."""

    def __init__(self) -> None:
        self.known: dict[str, CollectionSettings] = {}
        self.caught_up = 0

    def catch_up(self) -> None:
        self.caught_up += 1
        self.known["c-new"] = settings_of("c-new", {}, 2)

    def settings(self, cid: str) -> CollectionSettings | None:
        return self.known.get(cid)


def test_a_batch_of_a_collection_created_elsewhere_is_folded_not_dropped(
        tmp_path: Path) -> None:
    store = LocalStore(f"file://{tmp_path / 'bucket'}")
    worker = _Worker()
    members = Members(store, PoolOptions(cache_dir=tmp_path / "cache"), worker)
    members.adopted.set()
    key = batches.key_for(1, "other-aaaaaa")
    store.put(key, batches.encode([batches.Part("c-new", "d1", b"write")]))
    catalog = _Catalog()

    members.compact_dirty(catalog.settings, catalog.catch_up)

    assert catalog.caught_up == 1
    assert [(j.cid, j.parts) for j in worker.jobs] == [("c-new", {"d1": key})]
    assert [i.key for i in store.list(batches.BATCH_PREFIX)] == [key]  # kept until folded


def test_a_batch_of_a_deleted_collection_is_dropped(tmp_path: Path) -> None:
    store = LocalStore(f"file://{tmp_path / 'bucket'}")
    worker = _Worker()
    members = Members(store, PoolOptions(cache_dir=tmp_path / "cache"), worker)
    members.adopted.set()
    store.put(batches.key_for(1, "other-aaaaaa"),
              batches.encode([batches.Part("c-deleted", "d1", b"write")]))
    catalog = _Catalog()

    members.compact_dirty(catalog.settings, catalog.catch_up)

    assert worker.jobs == []
    assert list(store.list(batches.BATCH_PREFIX)) == []
