"""A pool process follows the batches other processes of the same pool store.

Each poll LISTs the batches once, reads the ones it does not hold, hands their
parts to the collections it has loaded, and forgets held batches that are gone —
but never one it stored, or read, after the LIST began.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from chromasnap.pool.batcher import gone_batches
from chromasnap.pool.compactproc import CompactionWorker
from chromasnap.pool.member import LoadedReader, PoolOptions
from chromasnap.pool.members import Members
from chromasnap.storage import batches
from chromasnap.storage.local import LocalStore
from chromasnap.storage.store import ObjectInfo


def test_gone_batches_are_those_held_before_the_list_and_not_listed() -> None:
    assert gone_batches({"a", "b", "c"}, {"b", "c", "d"}) == {"a"}
    assert gone_batches(set(), {"x"}) == set()
    assert gone_batches({"a"}, set()) == {"a"}  # every batch folded and deleted


def test_a_batch_held_after_the_list_began_is_not_in_held_before() -> None:
    # The rule only sees what the caller snapshotted: a batch PUT during the LIST is
    # missing from both, so it is never forgotten.
    held_before = frozenset({"old"})
    assert gone_batches(held_before, {"old"}) == set()


class _FakeReader:
    """A loaded reader's tail, as far as pushes go."""

    def __init__(self) -> None:
        self.took: list[tuple[str, str]] = []

    def take(self, name: str, data: bytes) -> None:
        self.took.append((name, data.decode()))


class _ListHook(LocalStore):
    """A store whose LIST of the batches lets a test act while it runs."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.on_list: Callable[[], object] = lambda: None

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        # The LIST's answer is fixed here; ``on_list`` happens after it began.
        out = list(super().list(prefix, start_after=start_after))
        self.on_list()
        return iter(out)


def _put(store: LocalStore, ts: int, writer: str, *parts: batches.Part) -> str:
    key = batches.key_for(ts, writer)
    store.put(key, batches.encode(parts))
    return key


def test_follow_adopts_pushes_and_forgets(tmp_path: Path) -> None:
    store = _ListHook(f"file://{tmp_path / 'bucket'}")
    members = Members(store, PoolOptions(cache_dir=tmp_path / "cache"),
                      CompactionWorker(f"file://{tmp_path / 'bucket'}", None,
                                       PoolOptions(cache_dir=tmp_path / "cache")))
    members.adopted.set()
    loaded, loading = _FakeReader(), _FakeReader()
    members._readers["c-loaded"] = cast(LoadedReader, loaded)
    members._loading["c-loading"] = cast(LoadedReader, loading)

    own = _put(store, 1, members.writer_id, batches.Part("c-loaded", "own", b"mine"))
    members.batcher.adopt(own, batches.decode(store.get(own).data))  # as its PUT holds it
    folded = batches.key_for(2, "other-aaaaaa")  # held, then folded and deleted elsewhere
    members.batcher.adopt(folded, [batches.Part("c-idle", "gone", b"x")])
    foreign = _put(store, 3, "other-aaaaaa",
                   batches.Part("c-loaded", "d1", b"one"), batches.Part("c-loading", "d2", b"two"),
                   batches.Part("c-idle", "d3", b"three"))
    late = batches.key_for(4, members.writer_id)  # PUT while the LIST runs: not listed
    store.on_list = lambda: members.batcher.adopt(late, [batches.Part("c-idle", "late", b"y")])

    assert members.follow_batches() == 1
    assert loaded.took == [("d1", "one")]  # its own batch is not pushed again
    assert loading.took == [("d2", "two")]
    assert members.batcher.held_keys() == {own, foreign, late}
    assert members.batcher.held("c-idle") == {"d3": foreign, "late": late}  # a load reads them

    store.on_list = lambda: None
    assert members.follow_batches() == 0  # held: not read again
    assert loaded.took == [("d1", "one")]
    assert members.batcher.held_keys() == {own, foreign}  # ``late`` was never stored
