"""Which deltas a loaded version already contains, as far as a reader's tail must know. Pure.

A manifest's applied set names the deltas its lineage folded *that still
exist*: clean-up deletes a folded delta once the live version lists it, and
the next version no longer names it. So "not in the applied set" does not
mean "not folded". A reader's tail may hold such a delta — pushed, fetched or
LISTed before a compaction folded it — and must never merge it again: its
writes would land on top of newer ones, and once a later delete's tombstone
is pruned they bring the record back.

Two facts decide it exactly:

1. A delta the reader read from the bucket *after* loading version ``V`` is
   folded by ``V``'s lineage iff ``V``'s applied set names it: it existed
   when ``V``'s compaction listed the bucket (deleted keys never come back),
   so every version from the one that folded it to ``V`` kept it in the set.
2. A delta read while the reader was on ``P`` and not folded by ``P``'s
   lineage is folded by ``V``'s iff one of the versions after ``P`` up to
   ``V`` folded it, and a version always names the deltas it folds itself.
   So the union of those versions' applied sets decides it — when the reader
   can still read them all (retention may have deleted the manifests of
   versions it skipped). When it cannot, the delta is *undecided* for ``V``:
   it is kept away from ``V``'s reads, and the next LIST reads it again
   under ``V`` (fact 1) if it is still pending.

Every tail entry therefore carries the lineage it was verified against (its
*stamp*), and :func:`pending_on` applies the two facts per loaded version, so
reads that borrowed an older version keep seeing what it lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chromasnap.storage import manifest as mf


@dataclass(frozen=True)
class Lineage:
    """What a loaded version contains, for deciding which tail deltas it already folded.

    ``contained`` is the version's applied set plus the applied sets of the
    versions between ``since`` (the version loaded before it, exclusive) and
    it; ``since`` is None when that chain is unknown (the first version a
    reader loads, or ancestors retention already deleted).
    """

    version: str
    seq: int
    since: str | None
    contained: frozenset[str]


def of_chain(chain: Iterable[mf.Manifest], previous: str | None) -> Lineage:
    """The lineage of the first manifest of ``chain`` (a version, then its ancestors).

    ``chain`` is consumed only up to the manifest whose parent is
    ``previous``, so when the new version descends directly from the
    previous one no ancestor is read at all. A chain that ends before
    reaching it (retention, or the caller's bound) leaves ``since`` unknown.
    """
    it = iter(chain)
    head = next(it)
    names: set[str] = set(head.deltas)
    since: str | None = None
    m = head
    while previous is not None and m.version != previous and m.parent is not None:
        if m.parent == previous:
            since = previous
            break
        nxt = next(it, None)
        if nxt is None:
            break
        m = nxt
        names.update(m.deltas)
    return Lineage(head.version, head.seq, since, frozenset(names))


def pending_on(name: str, stamp: Lineage | None, on: Lineage) -> bool:
    """Whether a tail delta verified against ``stamp`` is one version ``on`` has not folded.

    Decidable when it was verified against ``on`` itself or a later version
    of the same lineage (fact 1: checked against that version's set, and a
    later version contains everything ``on`` does), or against the version
    loaded right before ``on`` (fact 2). Otherwise undecided: not pending.
    """
    if stamp is None or name in on.contained:
        return False
    return stamp.seq >= on.seq or stamp.version == on.since
