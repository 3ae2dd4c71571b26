"""Which tail deltas a loaded version already folded (pure), against a model of the bucket.

The model is a lineage of compactions whose applied sets are trimmed the way
the compactor trims them (a folded delta drops out once clean-up deleted
it), with retention deleting old manifests. A reader loads some of the
versions (skipping others) and reads deltas that exist at the time it reads
them. For every delta it holds and every version it loaded, ``pending_on``
must never call a folded delta pending (that re-applies old writes), and must
call a delta pending whenever the reader can know it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from chromasnap.config import CollectionSettings
from chromasnap.reader.lineage import Lineage, of_chain, pending_on
from chromasnap.storage import manifest as mf

COLLECTION = mf.CollectionInfo(id="c", settings=CollectionSettings(name="docs", dimension=4))


def manifest(seq: int, parent: str | None, applied: set[str]) -> mf.Manifest:
    return mf.Manifest(
        version=f"{seq:010d}-v", seq=seq, parent=parent, chromadb_version="1.5.9",
        collection=COLLECTION, record_count=0, byte_size=0, files=[],
        deltas=sorted(applied), created_at=datetime.now(UTC), compactor="t")


@dataclass
class Bucket:
    """Deltas, manifests and the pointer, changed the way writers and compactors change them."""

    retain: int
    existing: set[str] = field(default_factory=set)
    manifests: dict[str, mf.Manifest] = field(default_factory=dict)
    folded_by: dict[str, frozenset[str]] = field(default_factory=dict)  # version -> lineage
    live: mf.Manifest | None = None
    written: int = 0

    def write(self) -> None:
        self.written += 1
        self.existing.add(f"{self.written:017d}-w.arrow")

    def compact(self, collect: set[int]) -> None:
        """Fold everything pending; then delete the applied deltas ``collect`` picks."""
        before = self.folded_by[self.live.version] if self.live else frozenset()
        pending = self.existing - before
        applied = ((set(self.live.deltas) & self.existing) if self.live else set()) | pending
        seq = self.live.seq + 1 if self.live else 1
        m = manifest(seq, self.live.version if self.live else None, applied)
        self.manifests[m.version] = m
        self.folded_by[m.version] = before | pending
        self.live = m
        self.existing -= {n for i, n in enumerate(sorted(applied)) if i in collect}
        for old in [v for v in self.manifests if mf.version_seq(v) <= seq - self.retain]:
            del self.manifests[old]

    def chain(self, version: str) -> list[mf.Manifest]:
        out = []
        m: mf.Manifest | None = self.manifests.get(version)
        while m is not None:
            out.append(m)
            m = self.manifests.get(m.parent) if m.parent else None
        return out


@settings(max_examples=300, deadline=None)
@given(retain=st.integers(1, 4),
       steps=st.lists(st.tuples(st.sampled_from(["write", "compact", "load", "read"]),
                                st.sets(st.integers(0, 6), max_size=4)), max_size=60))
def test_pending_on_never_calls_a_folded_delta_pending(
    retain: int, steps: list[tuple[str, set[int]]]
) -> None:
    bucket = Bucket(retain)
    bucket.write()
    bucket.compact(set())
    assert bucket.live is not None
    at = of_chain(bucket.chain(bucket.live.version), None)
    loaded: list[Lineage] = [at]
    held: dict[str, Lineage] = {}  # delta -> the lineage it was read under
    for kind, pick in steps:
        if kind == "write":
            bucket.write()
        elif kind == "compact":
            bucket.compact(pick)
        elif kind == "load" and bucket.live.version != at.version:
            at = of_chain(bucket.chain(bucket.live.version), at.version)
            loaded.append(at)
            # What rebase does: deltas still pending are as good as read under the new one.
            held = {n: at if pending_on(n, s, at) else s for n, s in held.items()}
        elif kind == "read":
            for i, name in enumerate(sorted(bucket.existing)):
                if i in pick and name not in at.contained:
                    held.setdefault(name, at)
        for on in loaded[-2:]:  # reads run on the loaded version and the previous one
            folded = bucket.folded_by[on.version]
            for name, stamp in held.items():
                if pending_on(name, stamp, on):
                    assert name not in folded, (name, on)
                elif name not in folded and stamp.version in (on.version, on.since):
                    raise AssertionError(f"{name} is pending on {on.version} but not merged")


def test_a_skipped_version_that_folded_a_collected_delta_is_recognised() -> None:
    v1 = manifest(1, None, set())
    v2 = manifest(2, v1.version, {"d"})  # folds d; clean-up deletes it
    v3 = manifest(3, v2.version, set())  # no longer names d
    on_v1 = of_chain([v1], None)
    on_v3 = of_chain([v3, v2, v1], v1.version)
    assert on_v3.since == v1.version and "d" in on_v3.contained
    assert not pending_on("d", on_v1, on_v3)
    assert pending_on("e", on_v1, on_v3)
    # Retention took v2: the chain stops, so what the tail read under v1 is undecided and
    # kept out of v3's reads; a delta still pending is read again under v3 (whose set
    # would name it if v3 folded it).
    gap = of_chain([v3], v1.version)
    assert gap.since is None
    assert not pending_on("d", on_v1, gap) and not pending_on("e", on_v1, gap)
    assert pending_on("e", gap, gap)


def test_a_direct_child_needs_no_ancestor_read() -> None:
    v1 = manifest(1, None, {"a"})
    v2 = manifest(2, v1.version, {"b"})

    def chain() -> Iterator[mf.Manifest]:
        yield v2
        raise AssertionError("read an ancestor")

    assert of_chain(chain(), v1.version).since == v1.version
