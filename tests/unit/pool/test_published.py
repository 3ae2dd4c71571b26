"""What the pool's passes record of each collection's newest version (pool/published.py):
newer versions win whatever order passes land in, deleted collections go, and two
processes changing one shard at once both land."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chromasnap.compactor.result import CompactionResult
from chromasnap.pool import published as pub
from chromasnap.pool.published import Published, PublishedIndex
from chromasnap.storage.local import LocalStore

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
A, B = "a1111111-0000-4000-8000-000000000000", "a2222222-0000-4000-8000-000000000000"


def entry(seq: int, records: int = 1, at: str = "2026-12-07T12:00:00Z") -> Published:
    return Published(version=f"{seq:010d}-abcdef12", records=records, bytes=10,
                     created_at=at, compacted_at=at, result="succeeded", reason="Compacted")


def keep_all(cid: str, p: Published) -> bool:
    return True


@given(st.permutations(list(range(1, 8))))
def test_the_newest_version_wins_in_any_order(order: list[int]) -> None:
    shard: dict[str, Published] = {}
    for seq in order:
        shard = pub.merge(shard, {A: entry(seq, records=seq)}, keep_all)
    assert shard[A] == entry(7, records=7)


def test_the_same_version_takes_the_later_run() -> None:
    early, late = entry(3, at="2026-12-07T12:00:00Z"), entry(3, at="2026-12-07T12:05:00Z")
    assert pub.merge({A: late}, {A: early}, keep_all)[A] == late
    assert pub.merge({A: early}, {A: late}, keep_all)[A] == late


def test_deleted_collections_go_and_unknown_ones_stay_for_an_hour() -> None:
    keep = pub.keeper(live={A}, deleted={B}, now=NOW)
    assert keep(A, entry(1, at="2020-01-01T00:00:00Z"))  # live: however old
    assert not keep(B, entry(1))  # deleted
    recent = pub.iso(NOW - timedelta(minutes=5))
    assert keep("c-unknown", entry(1, at=recent))  # created after this catalog caught up
    assert not keep("c-unknown", entry(1, at=pub.iso(NOW - timedelta(hours=2))))
    assert pub.merge({A: entry(1), B: entry(1)}, {}, keep) == {A: entry(1)}


def test_a_result_gives_an_entry_only_with_a_version() -> None:
    assert pub.from_result(CompactionResult(result="failed", reason="StorageError"), NOW) is None
    p = pub.from_result(CompactionResult(
        result="succeeded", reason="Compacted", version="0000000004-abcdef12", record_count=9,
        snapshot_bytes=123, snapshot_created_at="2026-12-07T11:59:58.123456+00:00"), NOW)
    assert p == Published(version="0000000004-abcdef12", records=9, bytes=123,
                          created_at="2026-12-07T11:59:58Z", compacted_at="2026-12-07T12:00:00Z",
                          result="succeeded", reason="Compacted")
    assert pub.as_last_compaction(p) == {"time": "2026-12-07T12:00:00Z", "result": "Succeeded",
                                         "reason": "Compacted",
                                         "snapshotVersion": "0000000004-abcdef12"}


def test_totals_count_live_collections_only() -> None:
    recorded = {A: entry(1, records=5), B: entry(1, records=7)}
    assert pub.total_records(recorded, {A}) == 5
    assert pub.missing(recorded, [A, "c1", B, "c2", "c3"], limit=2) == ["c1", "c2"]


class _Racing(LocalStore):
    """A store where another process changes a shard between this one's GET and PUT."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.before_put: list[object] = []

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        while self.before_put:
            hook = self.before_put.pop()
            assert callable(hook)
            hook()
        return super().put_if_match(key, data, etag)


def test_two_processes_changing_one_shard_both_land(tmp_path: Path) -> None:
    store = _Racing(f"file://{tmp_path / 'bucket'}")
    mine, other = PublishedIndex(store), PublishedIndex(LocalStore(f"file://{tmp_path / 'bucket'}"))
    assert pub.shard_key(A) == pub.shard_key(B)  # same shard on purpose
    mine.record({A: entry(1)}, keep_all)
    store.before_put.append(lambda: other.record({B: entry(2, records=4)}, keep_all))
    mine.record({A: entry(3, records=6)}, keep_all)  # loses the first PUT, merges, lands
    assert mine.read() == other.read() == {A: entry(3, records=6), B: entry(2, records=4)}


def test_after_a_pass_its_versions_are_recorded(tmp_path: Path) -> None:
    store = LocalStore(f"file://{tmp_path / 'bucket'}")
    index = PublishedIndex(store)
    results = {A: CompactionResult(result="succeeded", reason="Compacted",
                                   version="0000000001-abcdef12", record_count=2),
               B: CompactionResult(result="failed", reason="StorageError")}
    # B was written but has no version yet: the backfill finds no pointer, records nothing
    used = {A: "2026-12-07T11:59:00Z", B: "2026-12-07T11:58:00Z"}
    recorded, unrecorded = pub.after_pass(index, results, live={A, B}, deleted=set(),
                                          written=[A, B], now=NOW, used=used)
    assert set(recorded) == {A} and recorded[A].records == 2
    assert recorded[A].used_at == "2026-12-07T11:59:00Z"
    assert unrecorded == {B: "2026-12-07T11:58:00Z"}  # no entry yet: the caller keeps it
    assert PublishedIndex(store).read() == recorded  # another process reads the same


def test_the_last_use_is_the_latest_any_process_recorded() -> None:
    t1, t2 = "2026-12-07T11:00:00Z", "2026-12-07T11:30:00Z"
    shard = pub.merge({}, {A: entry(1)}, keep_all, {A: t2, B: t1})
    assert shard == {A: replace(entry(1), used_at=t2)}  # B has no version: nothing to touch
    shard = pub.merge(shard, {}, keep_all, {A: t1})  # an older use recorded later
    assert shard[A].used_at == t2
    shard = pub.merge(shard, {A: entry(2)}, keep_all)  # a new version keeps the last use
    assert shard[A] == replace(entry(2), used_at=t2)
