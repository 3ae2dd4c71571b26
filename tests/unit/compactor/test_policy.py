"""The merge policy (pure): when a run writes a segment, merges tiers, or writes a full version."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from chromasnap.compactor.policy import MergePolicy, decide, merge_count, rebuild_base
from chromasnap.config import CollectionSettings
from chromasnap.storage import manifest as mf

POLICY = MergePolicy()
SHA = "0" * 64


def version(base_records: int, segments: list[int], shadowing: int = 0) -> mf.Manifest:
    segs = [mf.Segment(name=f"{i + 2:010d}-s", ops=n, shadowing=shadowing,
                       files=[mf.FileEntry(path=mf.OPS_FILE, size=n, sha256=SHA)])
            for i, n in enumerate(segments)]
    return mf.Manifest(
        version=f"{len(segments) + 1:010d}-v", seq=len(segments) + 1, parent=None,
        chromadb_version="1.5.9",
        collection=mf.CollectionInfo(id="c", settings=CollectionSettings(name="docs", dimension=4)),
        record_count=base_records + sum(segments), byte_size=1,
        files=[], base="0000000001-v" if segments else None, base_records=base_records,
        segments=segs, deltas=[], created_at=datetime.now(UTC), compactor="t")


def test_the_first_version_is_full_and_small_deltas_become_segments() -> None:
    assert decide(None, 10, POLICY).full
    assert decide(version(300_000, []), 9_000, POLICY).full is False
    assert decide(version(300_000, [9_000] * 5), 9_000, POLICY).full is False


def test_a_full_version_once_segments_outgrow_the_base_or_shadow_too_much_of_it() -> None:
    assert decide(version(100_000, [50_000]), 60_000, POLICY).full
    assert not decide(version(100_000, [50_000]), 40_000, POLICY).full
    assert decide(version(100_000, [1_000] * 3, shadowing=7_000), 1_000, POLICY).full
    assert not decide(version(100_000, [1_000] * 3, shadowing=6_000), 1_000, POLICY).full
    # Small bases count as floor_ops: no full rebuild for every few writes.
    assert not decide(version(10, [300]), 300, POLICY).full


def test_a_full_run_rebuilds_the_base_once_its_index_is_mostly_history() -> None:
    # Nothing dead, or no more than dead_ratio x the records: applied in place.
    assert not rebuild_base(1_000, 1_000, POLICY)
    assert not rebuild_base(1_100, 1_000, POLICY)
    assert not rebuild_base(0, 0, POLICY)
    # Over it: built afresh (the churn soak's bases held 6x their records).
    assert rebuild_base(1_101, 1_000, POLICY)
    assert rebuild_base(18_000, 2_863, POLICY)
    # An index that lost every record is all dead.
    assert rebuild_base(500, 0, POLICY)
    # dead_ratio 0: any dead element.
    assert rebuild_base(1_001, 1_000, MergePolicy(dead_ratio=0.0))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=10**7),
       st.floats(min_value=0.0, max_value=10.0))
def test_a_base_that_is_not_rebuilt_is_within_the_ratio_of_a_fresh_one(
        live: int, dead: int, ratio: float) -> None:
    """What a full run carries forward holds at most (1 + dead_ratio) x its records."""
    if not rebuild_base(live + dead, live, MergePolicy(dead_ratio=ratio)):
        assert live + dead <= (1 + ratio) * live or dead == 0


def test_tiers_of_ten_merge_and_cascade() -> None:
    assert merge_count([1_000] * 8, 1_000, POLICY) == 0
    assert merge_count([1_000] * 9, 1_000, POLICY) == 9
    # A big segment of the next tier stays; the nine small ones merge with the new one.
    assert merge_count([50_000, *[1_000] * 9], 1_000, POLICY) == 9
    # Nine tier-1 segments and nine tier-0 ones: the tier-0 merge completes tier 1 too.
    assert merge_count([*[10_000] * 9, *[1_000] * 9], 1_000, POLICY) == 18


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20_000), min_size=1, max_size=200),
       st.integers(min_value=2, max_value=12))
def test_segment_count_stays_logarithmic_over_any_ingest(rounds: list[int], tier: int) -> None:
    """Simulate an ingest with segments only: the count is bounded by tiers x levels."""
    policy = MergePolicy(segments_per_tier=tier, full_merge_ratio=1e12, shadowed_ratio=1e12,
                         max_segments=10_000)
    sizes: list[int] = []
    for n in rounds:
        k = merge_count(sizes, n, policy)
        sizes = [*sizes[: len(sizes) - k], n + sum(sizes[len(sizes) - k:])]
        total = sum(sizes)
        levels = 1
        while policy.floor_ops * tier ** levels <= total:
            levels += 1
        assert len(sizes) <= (tier - 1) * (levels + 1)
    assert sum(sizes) == sum(rounds)
