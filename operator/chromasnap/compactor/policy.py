"""The merge policy: what one compaction run writes. Pure, no I/O.

Each run either writes a **segment** (a minor compaction: the pending
deltas, possibly together with the newest existing segments) on top of the
current base, or a **full** version (a major compaction: base and every
segment folded into a new base). Lucene's ``TieredMergePolicy`` is the
model: segments of similar size merge in tiers of ``segments_per_tier``, so
the count stays logarithmic in the data; a full merge happens once the
segments hold more writes than ``full_merge_ratio`` times the base, or
shadow more than ``shadowed_ratio`` of it. Both thresholds grow with the
base, so bytes uploaded over an ingest stay a small multiple of the data
(docs/benchmarks.md, ``write_amplification``).

A full run also decides whether the new base is *rebuilt* from its live
records (``rebuild_base``): chromadb never drops deleted or replaced vectors
from its index, so a base carried forward under churn grows with the history
of writes, not with the data (``engine.rebuild``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chromasnap.storage import manifest as mf


@dataclass(frozen=True)
class MergePolicy:
    """Thresholds (see the module docstring)."""

    segments_per_tier: int = 10
    full_merge_ratio: float = 1.0
    shadowed_ratio: float = 0.2
    floor_ops: int = 1000  # segments below this count as this big
    max_segments: int = 30  # hard cap: a full merge beyond it
    dead_ratio: float = 0.1  # a full run builds its base afresh past dead = ratio x records


@dataclass(frozen=True)
class Decision:
    """``full``, or a segment that also absorbs the newest ``merge`` existing segments."""

    full: bool
    merge: int = 0
    why: str = ""


def _tier(ops: int, policy: MergePolicy) -> int:
    return int(math.log(max(ops, policy.floor_ops) / policy.floor_ops,
                        policy.segments_per_tier))


def decide(man: mf.Manifest | None, pending_ops: int, policy: MergePolicy) -> Decision:
    """Choose what a run folding ``pending_ops`` writes onto version ``man``."""
    if man is None:
        return Decision(True, why="first version")
    segs = man.segments
    base = max(man.base_record_count, policy.floor_ops)
    ops = sum(s.ops for s in segs) + pending_ops
    if ops > policy.full_merge_ratio * base:
        return Decision(True, why=f"segments would hold {ops} writes, over "
                                  f"{policy.full_merge_ratio:g}x the base's {base} records")
    shadowed = sum(s.shadowing for s in segs)
    if shadowed > policy.shadowed_ratio * base:
        return Decision(True, why=f"segments shadow {shadowed} base records, over "
                                  f"{policy.shadowed_ratio:g}x the base's {base}")
    merge = merge_count([s.ops for s in segs], pending_ops, policy)
    if len(segs) - merge + 1 > policy.max_segments:
        return Decision(True, why=f"over {policy.max_segments} segments")
    return Decision(False, merge, f"new segment, merging the newest {merge}" if merge else
                    "new segment")


def merge_count(sizes: Sequence[int], new_ops: int, policy: MergePolicy) -> int:
    """How many of the newest segments (``sizes``, oldest first) the new one absorbs.

    Once ``segments_per_tier`` segments (the new one included) sit at or below
    the new one's tier at the end of the list, they become one; the result
    may complete the next tier up, which merges too.
    """
    merged, end = new_ops, len(sizes)
    while True:
        tier = _tier(merged, policy)
        start = end
        while start > 0 and _tier(sizes[start - 1], policy) <= tier:
            start -= 1
        if end - start + 1 < policy.segments_per_tier:
            return len(sizes) - end
        merged += sum(sizes[start:end])
        end = start


def rebuild_base(elements: int, live: int, policy: MergePolicy) -> bool:
    """Whether a full run builds its base afresh from the live records.

    ``elements`` is what the base's HNSW index would hold after the run
    (deleted and replaced vectors included; an upper bound will do), ``live``
    its records. Building afresh costs one add per live record instead of
    one chromadb call per write folded, so it is done once the dead elements
    exceed ``dead_ratio`` times the records: a published index then never
    holds more than ``1 + dead_ratio`` times what a fresh collection of the
    same records holds (1.1x at the default), while a run that only adds
    records (an ingest) never rebuilds.
    """
    dead = elements - live
    return dead > 0 and dead > policy.dead_ratio * live
